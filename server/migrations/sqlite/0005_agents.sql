-- The agent registry (SQLite flavour). One row per agent id, created on the agent's first
-- accepted hello and updated on every connection. `session_id` names the connection that last
-- marked the agent connected, so an older connection that ends late cannot mark a newer one
-- disconnected. A revoked agent is refused on every later connection until the row is removed.

CREATE TABLE agents (
    id              TEXT    PRIMARY KEY,
    hostname        TEXT    NOT NULL,
    agent_version   TEXT    NOT NULL,
    os              TEXT    NOT NULL,
    arch            TEXT    NOT NULL,
    -- JSON object of string labels, as announced in the hello.
    labels          TEXT    NOT NULL DEFAULT '{}',
    connected       INTEGER NOT NULL DEFAULT 0 CHECK (connected IN (0, 1)),
    session_id      TEXT,
    remote_addr     TEXT,
    first_seen_at   INTEGER NOT NULL,
    connected_at    INTEGER,
    disconnected_at INTEGER,
    last_seen_at    INTEGER NOT NULL,
    revoked_at      INTEGER,
    revoked_by      TEXT,
    -- The API key the agent last connected with; another key may take the id over only once
    -- that key is revoked or expired.
    key_id          TEXT,
    -- The service the agent's heartbeats are recorded on (`agent:<id>`).
    service_id      INTEGER REFERENCES services (id)
);

CREATE INDEX agents_connected ON agents (connected);

-- Script runs dispatched to agents. `id` is the protocol's run_id. A run is `queued` until a
-- session sends it (`sent`), `running` once the agent accepts it, and ends `succeeded`,
-- `failed`, `timed_out` or `skipped` (the agent refused it; `skip_reason` says why). The first
-- report of an ending is kept; a resent report changes nothing.
CREATE TABLE agent_runs (
    id               TEXT    PRIMARY KEY,
    agent_id         TEXT    NOT NULL REFERENCES agents (id),
    script_id        INTEGER NOT NULL REFERENCES scripts (id),
    script_version   INTEGER NOT NULL,
    -- JSON object of string parameters.
    parameters       TEXT    NOT NULL DEFAULT '{}',
    timeout_seconds  INTEGER NOT NULL CHECK (timeout_seconds > 0),
    status           TEXT    NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'sent', 'running', 'succeeded', 'failed',
                                       'timed_out', 'skipped')),
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
    skip_detail      TEXT
);

CREATE INDEX agent_runs_by_agent ON agent_runs (agent_id, status);
