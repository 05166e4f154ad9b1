-- The agent registry (PostgreSQL flavour). Same table, columns and constraints as the SQLite
-- migration with the same version number.
-- One row per agent id, created on the agent's first accepted hello and updated on every
-- connection. `session_id` names the connection that last marked the agent connected, so an
-- older connection that ends late cannot mark a newer one disconnected. A revoked agent is
-- refused on every later connection until the row is removed.

CREATE TABLE agents (
    id              text        PRIMARY KEY,
    hostname        text        NOT NULL,
    agent_version   text        NOT NULL,
    os              text        NOT NULL,
    arch            text        NOT NULL,
    -- JSON object of string labels, as announced in the hello.
    labels          jsonb       NOT NULL DEFAULT '{}',
    connected       boolean     NOT NULL DEFAULT false,
    session_id      text,
    remote_addr     text,
    first_seen_at   timestamptz NOT NULL,
    connected_at    timestamptz,
    disconnected_at timestamptz,
    last_seen_at    timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoked_by      text,
    -- The API key the agent last connected with; another key may take the id over only once
    -- that key is revoked or expired.
    key_id          text,
    -- The service the agent's heartbeats are recorded on (`agent:<id>`).
    service_id      bigint      REFERENCES services (id)
);

CREATE INDEX agents_connected ON agents (connected);

-- Script runs dispatched to agents. `id` is the protocol's run_id. A run is `queued` until a
-- session sends it (`sent`), `running` once the agent accepts it, and ends `succeeded`,
-- `failed`, `timed_out` or `skipped` (the agent refused it; `skip_reason` says why). The first
-- report of an ending is kept; a resent report changes nothing.
CREATE TABLE agent_runs (
    id               text        PRIMARY KEY,
    agent_id         text        NOT NULL REFERENCES agents (id),
    script_id        bigint      NOT NULL REFERENCES scripts (id),
    script_version   integer     NOT NULL,
    -- JSON object of string parameters.
    parameters       jsonb       NOT NULL DEFAULT '{}',
    timeout_seconds  integer     NOT NULL CHECK (timeout_seconds > 0),
    status           text        NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'sent', 'running', 'succeeded', 'failed',
                                       'timed_out', 'skipped')),
    requested_by     text        NOT NULL,
    created_at       timestamptz NOT NULL,
    sent_at          timestamptz,
    started_at       timestamptz,
    finished_at      timestamptz,
    exit_code        integer,
    signal           integer,
    stdout           text,
    stderr           text,
    stdout_truncated boolean,
    stderr_truncated boolean,
    duration_ms      bigint,
    skip_reason      text,
    skip_detail      text
);

CREATE INDEX agent_runs_by_agent ON agent_runs (agent_id, status);
