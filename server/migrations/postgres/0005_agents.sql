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
    -- The service the agent's heartbeats are recorded on (`agent:<id>`).
    service_id      bigint      REFERENCES services (id)
);

CREATE INDEX agents_connected ON agents (connected);
