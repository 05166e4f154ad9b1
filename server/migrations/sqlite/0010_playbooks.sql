-- Playbook documents with immutable versions, and sealed secrets (SQLite flavour).
-- A playbook's name comes from its current document and is unique case-insensitively through
-- name_key (disabled playbooks keep their name, so a restore never collides). Every new document
-- text adds the next version; versions are never changed (a trigger refuses updates).
-- Secrets hold only the AES-256-GCM sealed value (`v1:<key id>:<nonce>:<ciphertext>`), never
-- the plaintext; key_id repeats the sealed value's key id so rotation can find what to reseal.

CREATE TABLE playbooks (
    id              INTEGER PRIMARY KEY,
    name            TEXT    NOT NULL,
    name_key        TEXT    NOT NULL UNIQUE,
    description     TEXT,
    current_version INTEGER NOT NULL CHECK (current_version > 0),
    enabled         INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    disabled_at     INTEGER,
    disabled_by     TEXT,
    CHECK ((enabled = 1) = (disabled_at IS NULL))
);

CREATE TABLE playbook_versions (
    id          INTEGER PRIMARY KEY,
    playbook_id INTEGER NOT NULL REFERENCES playbooks (id),
    version     INTEGER NOT NULL CHECK (version > 0),
    -- The document's `name` as this version wrote it.
    name        TEXT    NOT NULL,
    -- SHA-256 of source's UTF-8 bytes, 64 lowercase hex digits.
    sha256      TEXT    NOT NULL CHECK (length(sha256) = 64),
    source      TEXT    NOT NULL,
    author      TEXT    NOT NULL,
    -- The API key that wrote the version; NULL for the bootstrap admin key.
    author_key  TEXT,
    created_at  INTEGER NOT NULL,
    UNIQUE (playbook_id, version)
);

CREATE TRIGGER playbook_versions_immutable BEFORE UPDATE ON playbook_versions
BEGIN
    SELECT RAISE(ABORT, 'playbook versions are immutable');
END;

CREATE TABLE secrets (
    name       TEXT    PRIMARY KEY,
    sealed     TEXT    NOT NULL,
    key_id     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT    NOT NULL
);
