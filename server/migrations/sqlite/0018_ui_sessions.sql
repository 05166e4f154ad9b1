-- Web page sessions: one row per signed-in browser. `id_hash` is the hex SHA-256 of the random
-- session id in the cookie (the id itself is never stored); `key_id` is the API key signed in
-- with (NULL: the bootstrap admin key). Times are milliseconds since the epoch.
CREATE TABLE ui_sessions (
    id_hash       TEXT PRIMARY KEY,
    key_id        TEXT,
    csrf_token    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL
);
CREATE INDEX ui_sessions_expires ON ui_sessions (expires_at);
