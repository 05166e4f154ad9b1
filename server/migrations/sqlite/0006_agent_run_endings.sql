-- Runs that end without a report from the agent: `expired` (still queued when its expiry
-- passed; never sent) and `lost` (sent or running, and the agent never reported within its
-- deadline). `lost_after` is that deadline, set when the run is sent or started and shortened
-- when the agent reconnects without the run. SQLite cannot alter a CHECK constraint, so the
-- table is rebuilt (nothing references it).
CREATE TABLE agent_runs_new (
    id               TEXT    PRIMARY KEY,
    agent_id         TEXT    NOT NULL REFERENCES agents (id),
    script_id        INTEGER NOT NULL REFERENCES scripts (id),
    script_version   INTEGER NOT NULL,
    -- JSON object of string parameters.
    parameters       TEXT    NOT NULL DEFAULT '{}',
    timeout_seconds  INTEGER NOT NULL CHECK (timeout_seconds > 0),
    status           TEXT    NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'sent', 'running', 'succeeded', 'failed',
                                       'timed_out', 'skipped', 'expired', 'lost')),
    requested_by     TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,
    sent_at          INTEGER,
    started_at       INTEGER,
    finished_at      INTEGER,
    exit_code        INTEGER,
    signal           INTEGER,
    stdout           TEXT,
    stderr           TEXT,
    stdout_truncated INTEGER,
    stderr_truncated INTEGER,
    duration_ms      INTEGER,
    skip_reason      TEXT,
    skip_detail      TEXT,
    expires_at       INTEGER,
    lost_after       INTEGER
);

INSERT INTO agent_runs_new (id, agent_id, script_id, script_version, parameters,
    timeout_seconds, status, requested_by, created_at, sent_at, started_at, finished_at,
    exit_code, signal, stdout, stderr, stdout_truncated, stderr_truncated, duration_ms,
    skip_reason, skip_detail)
SELECT id, agent_id, script_id, script_version, parameters, timeout_seconds, status,
    requested_by, created_at, sent_at, started_at, finished_at, exit_code, signal, stdout,
    stderr, stdout_truncated, stderr_truncated, duration_ms, skip_reason, skip_detail
FROM agent_runs;

DROP TABLE agent_runs;
ALTER TABLE agent_runs_new RENAME TO agent_runs;

CREATE INDEX agent_runs_by_agent ON agent_runs (agent_id, status);
-- The sweep and the gateway's queue poll read only runs that have not ended.
CREATE INDEX agent_runs_open ON agent_runs (status, agent_id)
    WHERE status IN ('queued', 'sent', 'running');
