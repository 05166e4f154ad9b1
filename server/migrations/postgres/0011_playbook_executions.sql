-- Playbook executions: the state machine's state as JSON next to the columns the engine and
-- the API query. `version` makes every change a conditional update; `due_at` is when a worker
-- should look at the execution next (a durable timer, or "now" for work to pick up);
-- `lease_owner`/`lease_until` say which worker holds it while it acts.
CREATE TABLE playbook_executions (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    playbook_id      bigint      NOT NULL,
    playbook_name    text        NOT NULL,
    playbook_version bigint      NOT NULL,
    playbook_sha256  text        NOT NULL,
    -- The document the execution pinned when it started.
    playbook_source  text        NOT NULL,
    service_id       bigint,
    alert_id         bigint,
    trigger          text        NOT NULL CHECK (trigger IN ('manual', 'webhook', 'alert')),
    requested_by     text,
    -- Execution context (service and heartbeat names) and the validated inputs.
    context          jsonb       NOT NULL DEFAULT '{}',
    status           text        NOT NULL,
    version          bigint      NOT NULL,
    state            jsonb       NOT NULL,
    due_at           timestamptz,
    lease_owner      text,
    lease_until      timestamptz,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    finished_at      timestamptz
);
CREATE INDEX playbook_executions_due ON playbook_executions (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX playbook_executions_created ON playbook_executions (created_at DESC);
CREATE INDEX playbook_executions_playbook ON playbook_executions (playbook_id, created_at DESC);
CREATE INDEX playbook_executions_service ON playbook_executions (service_id, created_at DESC);
CREATE INDEX playbook_executions_status ON playbook_executions (status, created_at DESC);
