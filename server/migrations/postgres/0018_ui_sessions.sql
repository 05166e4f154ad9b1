-- Web page sessions: one row per signed-in browser. `id_hash` is the hex SHA-256 of the random
-- session id in the cookie (the id itself is never stored); `key_id` is the API key signed in
-- with (NULL: the bootstrap admin key).
CREATE TABLE ui_sessions (
    id_hash       text PRIMARY KEY,
    key_id        text,
    csrf_token    text NOT NULL,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL
);
CREATE INDEX ui_sessions_expires ON ui_sessions (expires_at);
