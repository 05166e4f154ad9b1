-- Playbook executions: the state machine's state as JSON next to the columns the engine and
-- the API query. `version` makes every change a conditional update; `due_at` is when a worker
-- should look at the execution next (a durable timer, or "now" for work to pick up);
-- `lease_owner`/`lease_until` say which worker holds it while it acts.
CREATE TABLE playbook_executions (
    id               INTEGER PRIMARY KEY,
    playbook_id      INTEGER NOT NULL,
    playbook_name    TEXT    NOT NULL,
    playbook_version INTEGER NOT NULL,
    playbook_sha256  TEXT    NOT NULL,
    -- The document the execution pinned when it started.
    playbook_source  TEXT    NOT NULL,
    service_id       INTEGER,
    alert_id         INTEGER,
    trigger          TEXT    NOT NULL CHECK (trigger IN ('manual', 'webhook', 'alert')),
    requested_by     TEXT,
    -- Execution context (service and heartbeat names) and the validated inputs, JSON.
    context          TEXT    NOT NULL DEFAULT '{}',
    status           TEXT    NOT NULL,
    version          INTEGER NOT NULL,
    state            TEXT    NOT NULL,
    due_at           INTEGER,
    lease_owner      TEXT,
    lease_until      INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER
);
CREATE INDEX playbook_executions_due ON playbook_executions (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX playbook_executions_created ON playbook_executions (created_at DESC);
CREATE INDEX playbook_executions_playbook ON playbook_executions (playbook_id, created_at DESC);
CREATE INDEX playbook_executions_service ON playbook_executions (service_id, created_at DESC);
CREATE INDEX playbook_executions_status ON playbook_executions (status, created_at DESC);
