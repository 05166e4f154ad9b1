-- Playbook documents with immutable versions, and sealed secrets (PostgreSQL flavour). Same
-- tables, columns and constraints as the SQLite migration with the same version number.
-- A playbook's name comes from its current document and is unique case-insensitively through
-- name_key (disabled playbooks keep their name, so a restore never collides). Every new document
-- text adds the next version; versions are never changed (a trigger refuses updates).
-- Secrets hold only the AES-256-GCM sealed value (`v1:<key id>:<nonce>:<ciphertext>`), never
-- the plaintext; key_id repeats the sealed value's key id so rotation can find what to reseal.

CREATE TABLE playbooks (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text        NOT NULL,
    name_key        text        NOT NULL UNIQUE,
    description     text,
    current_version integer     NOT NULL CHECK (current_version > 0),
    enabled         boolean     NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    disabled_at     timestamptz,
    disabled_by     text,
    CHECK (enabled = (disabled_at IS NULL))
);

CREATE TABLE playbook_versions (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    playbook_id bigint      NOT NULL REFERENCES playbooks (id),
    version     integer     NOT NULL CHECK (version > 0),
    -- The document's `name` as this version wrote it.
    name        text        NOT NULL,
    -- SHA-256 of source's UTF-8 bytes, 64 lowercase hex digits.
    sha256      text        NOT NULL CHECK (length(sha256) = 64),
    source      text        NOT NULL,
    author      text        NOT NULL,
    -- The API key that wrote the version; NULL for the bootstrap admin key.
    author_key  text,
    created_at  timestamptz NOT NULL,
    UNIQUE (playbook_id, version)
);

CREATE FUNCTION playbook_versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'playbook versions are immutable';
END;
$$;

CREATE TRIGGER playbook_versions_immutable BEFORE UPDATE ON playbook_versions
    FOR EACH ROW EXECUTE FUNCTION playbook_versions_immutable();

CREATE TABLE secrets (
    name       text        PRIMARY KEY,
    sealed     text        NOT NULL,
    key_id     text        NOT NULL,
    created_at timestamptz NOT NULL,
    created_by text        NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text        NOT NULL
);
