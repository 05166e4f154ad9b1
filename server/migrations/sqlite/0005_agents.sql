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
    -- The service the agent's heartbeats are recorded on (`agent:<id>`).
    service_id      INTEGER REFERENCES services (id)
);

CREATE INDEX agents_connected ON agents (connected);
