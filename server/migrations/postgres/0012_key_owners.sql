-- Key owners: the person or service account an API key belongs to. Four-eyes compares owners,
-- so one person's second key is no second pair of eyes.
CREATE TABLE key_owners (
    id         text        PRIMARY KEY,
    name       text        NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('person', 'service')),
    created_at timestamptz NOT NULL,
    created_by text        NOT NULL
);
CREATE UNIQUE INDEX key_owners_name ON key_owners (lower(name));

-- The owner of the bootstrap admin key (and of every key it creates).
INSERT INTO key_owners (id, name, kind, created_at, created_by)
VALUES ('bootstrap', 'bootstrap-admin', 'person', now(), 'migration');

-- Keys made before owners existed each become their own owner, as four-eyes treated them.
INSERT INTO key_owners (id, name, kind, created_at, created_by)
SELECT id, name || ' (' || id || ')', 'person', created_at, 'migration' FROM api_keys;

ALTER TABLE api_keys ADD COLUMN owner_id text REFERENCES key_owners (id);
UPDATE api_keys SET owner_id = id;

ALTER TABLE script_versions ADD COLUMN created_by_owner text;
ALTER TABLE script_versions ADD COLUMN decided_by_owner text;
UPDATE script_versions SET created_by_owner = COALESCE(created_by_key, 'bootstrap');
UPDATE script_versions SET decided_by_owner = COALESCE(decided_by_key, 'bootstrap')
WHERE decided_at IS NOT NULL;

-- The authenticated key is the actor; X-Actor (or a restore's "actor") is recorded apart.
ALTER TABLE audit_log ADD COLUMN on_behalf_of text;
ALTER TABLE snapshots ADD COLUMN restored_on_behalf_of text;
ALTER TABLE snapshots ADD COLUMN on_behalf_of text;

-- The labels an agent key grants: an agent carries a label it declares only when its key
-- grants it (a JSON object of names to values; NULL grants none).
ALTER TABLE api_keys ADD COLUMN labels text;
