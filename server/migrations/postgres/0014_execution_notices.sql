-- The playbook outbox: one row per (execution event, destination), written in the transaction
-- that commits the execution's change; the notice dispatcher delivers, retries and records the
-- outcome here. `payload` is the event as sent (JSON, secrets already masked); `external_ref`
-- is what the receiver calls the message (for Slack, "<channel id> <ts>", so a later decision
-- can update the approval message in place).
CREATE TABLE execution_notices (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id    bigint NOT NULL,
    target_id       bigint,
    event           TEXT NOT NULL,
    channel         TEXT NOT NULL CHECK (channel IN ('slack', 'pagerduty', 'webhook')),
    destination     TEXT NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    lease_until     timestamptz,
    last_status     INTEGER,
    last_error      TEXT,
    external_ref    TEXT,
    created_at      timestamptz NOT NULL,
    finished_at     timestamptz
);
CREATE INDEX execution_notices_due ON execution_notices (next_attempt_at) WHERE state = 'pending';
CREATE INDEX execution_notices_execution ON execution_notices (execution_id, event);
CREATE INDEX execution_notices_created ON execution_notices (created_at);

-- Admins' circuit breaker resets: executions recorded in a scope before its last reset (ids up
-- to `last_execution_id`) no longer count. `scope_key` is the playbook or service id (0 for
-- global).
CREATE TABLE circuit_breaker_resets (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope     TEXT NOT NULL CHECK (scope IN ('playbook', 'service', 'global')),
    scope_key bigint NOT NULL,
    reset_at  timestamptz NOT NULL,
    actor     TEXT NOT NULL,
    last_execution_id bigint NOT NULL
);
CREATE INDEX circuit_breaker_resets_scope ON circuit_breaker_resets (scope, scope_key, last_execution_id);
