-- Registered remediation scripts and their versions (PostgreSQL flavour). Same tables, columns
-- and constraints as the SQLite migration with the same version number.
-- A script's name follows the agent protocol's rule (A-Z a-z 0-9 . _ -) and is unique
-- case-insensitively through name_key. Every registration of new content adds the next version,
-- pending until an admin key other than the registering one approves or rejects it.

CREATE TABLE scripts (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text        NOT NULL,
    name_key   text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL
);

CREATE TABLE script_versions (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    script_id       bigint      NOT NULL REFERENCES scripts (id),
    version         integer     NOT NULL CHECK (version > 0),
    interpreter     text        NOT NULL CHECK (interpreter IN ('bash', 'sh', 'python3')),
    content         text        NOT NULL,
    -- SHA-256 of content's UTF-8 bytes, 64 lowercase hex digits.
    sha256          text        NOT NULL CHECK (length(sha256) = 64),
    description     text,
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'approved', 'rejected')),
    created_by      text        NOT NULL,
    -- The API key that registered the version; NULL for the bootstrap admin key.
    created_by_key  text,
    created_at      timestamptz NOT NULL,
    decided_by      text,
    decided_by_key  text,
    decided_at      timestamptz,
    decision_reason text,
    UNIQUE (script_id, version),
    CHECK ((status = 'pending') = (decided_at IS NULL))
);
