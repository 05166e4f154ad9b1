-- Registered remediation scripts and their versions (SQLite flavour).
-- A script's name follows the agent protocol's rule (A-Z a-z 0-9 . _ -) and is unique
-- case-insensitively through name_key. Every registration of new content adds the next version,
-- pending until an admin key other than the registering one approves or rejects it.

CREATE TABLE scripts (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    name_key   TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE script_versions (
    id              INTEGER PRIMARY KEY,
    script_id       INTEGER NOT NULL REFERENCES scripts (id),
    version         INTEGER NOT NULL CHECK (version > 0),
    interpreter     TEXT    NOT NULL CHECK (interpreter IN ('bash', 'sh', 'python3')),
    content         TEXT    NOT NULL,
    -- SHA-256 of content's UTF-8 bytes, 64 lowercase hex digits.
    sha256          TEXT    NOT NULL CHECK (length(sha256) = 64),
    description     TEXT,
    status          TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'approved', 'rejected')),
    created_by      TEXT    NOT NULL,
    -- The API key that registered the version; NULL for the bootstrap admin key.
    created_by_key  TEXT,
    created_at      INTEGER NOT NULL,
    decided_by      TEXT,
    decided_by_key  TEXT,
    decided_at      INTEGER,
    decision_reason TEXT,
    UNIQUE (script_id, version),
    CHECK ((status = 'pending') = (decided_at IS NULL))
);
