-- Run statuses and columns take the names the API documents: a run handed to its agent is
-- `dispatched` (was `sent`), one the agent declined is `refused` (was `skipped`), with its
-- `refusal_reason` / `refusal_detail`. SQLite cannot alter a CHECK constraint, so the table is
-- rebuilt (nothing references it).
CREATE TABLE agent_runs_new (
    id               TEXT    PRIMARY KEY,
    agent_id         TEXT    NOT NULL REFERENCES agents (id),
    script_id        INTEGER NOT NULL REFERENCES scripts (id),
    script_version   INTEGER NOT NULL,
    -- JSON object of string parameters.
    parameters       TEXT    NOT NULL DEFAULT '{}',
    timeout_seconds  INTEGER NOT NULL CHECK (timeout_seconds > 0),
    status           TEXT    NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'dispatched', 'running', 'succeeded', 'failed',
                                       'timed_out', 'refused', 'expired', 'lost')),
    requested_by     TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,
    dispatched_at    INTEGER,
    started_at       INTEGER,
    finished_at      INTEGER,
    exit_code        INTEGER,
    signal           INTEGER,
    stdout           TEXT,
    stderr           TEXT,
    stdout_truncated INTEGER,
    stderr_truncated INTEGER,
    duration_ms      INTEGER,
    refusal_reason   TEXT,
    refusal_detail   TEXT,
    expires_at       INTEGER,
    lost_after       INTEGER
);

INSERT INTO agent_runs_new (id, agent_id, script_id, script_version, parameters,
    timeout_seconds, status, requested_by, created_at, dispatched_at, started_at, finished_at,
    exit_code, signal, stdout, stderr, stdout_truncated, stderr_truncated, duration_ms,
    refusal_reason, refusal_detail, expires_at, lost_after)
SELECT id, agent_id, script_id, script_version, parameters, timeout_seconds,
    CASE status WHEN 'sent' THEN 'dispatched' WHEN 'skipped' THEN 'refused' ELSE status END,
    requested_by, created_at, sent_at, started_at, finished_at, exit_code, signal, stdout,
    stderr, stdout_truncated, stderr_truncated, duration_ms, skip_reason, skip_detail,
    expires_at, lost_after
FROM agent_runs;

DROP TABLE agent_runs;
ALTER TABLE agent_runs_new RENAME TO agent_runs;

CREATE INDEX agent_runs_by_agent ON agent_runs (agent_id, status);
-- The sweep and the gateway's queue poll read only runs that have not ended.
CREATE INDEX agent_runs_open ON agent_runs (status, agent_id)
    WHERE status IN ('queued', 'dispatched', 'running');
