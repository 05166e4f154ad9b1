-- no-transaction
-- A run an agent refused for a reason an operator must look at (not in its allowlist, hash
-- mismatch, …) opens an alert of kind `run_refused` on the agent's service. SQLite cannot alter
-- a CHECK constraint, so `alerts` and `alert_suppressions` are rebuilt. `deliveries` refers to
-- `alerts`, so foreign keys are off while the table is swapped (which SQLite allows only
-- outside a transaction: hence no-transaction and an explicit one), and checked before commit.
PRAGMA foreign_keys = OFF;
BEGIN;

CREATE TABLE alerts_new (
    id                    INTEGER PRIMARY KEY,
    service_id            INTEGER NOT NULL REFERENCES services (id),
    kind                  TEXT    NOT NULL CHECK (kind IN ('heartbeat_missing', 'job_failed',
                                                           'job_overdue', 'run_refused')),
    name                  TEXT    NOT NULL,
    state                 TEXT    NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'acknowledged', 'resolved')),
    dedup_key             TEXT    NOT NULL,
    external_reference_id TEXT,
    alert_cycle           INTEGER NOT NULL DEFAULT 1,
    created_at            INTEGER NOT NULL,
    acknowledged_at       INTEGER,
    acknowledged_by       TEXT,
    resolved_at           INTEGER,
    priority              TEXT,
    team                  TEXT,
    down_since            INTEGER,
    last_notified_at      INTEGER,
    resolved_by           TEXT,
    resolve_reason        TEXT,
    run_id                TEXT,
    summary               TEXT
);
INSERT INTO alerts_new (id, service_id, kind, name, state, dedup_key, external_reference_id,
    alert_cycle, created_at, acknowledged_at, acknowledged_by, resolved_at, priority, team,
    down_since, last_notified_at, resolved_by, resolve_reason, run_id, summary)
SELECT id, service_id, kind, name, state, dedup_key, external_reference_id, alert_cycle,
    created_at, acknowledged_at, acknowledged_by, resolved_at, priority, team, down_since,
    last_notified_at, resolved_by, resolve_reason, run_id, summary
FROM alerts;
DROP TABLE alerts;
ALTER TABLE alerts_new RENAME TO alerts;
CREATE UNIQUE INDEX alerts_live_dedup ON alerts (dedup_key) WHERE state <> 'resolved';
CREATE INDEX alerts_created ON alerts (created_at DESC);
CREATE INDEX alerts_service ON alerts (service_id, created_at DESC);
CREATE INDEX alerts_state ON alerts (state, created_at DESC);
CREATE INDEX alerts_resolved ON alerts (resolved_at) WHERE state = 'resolved';

CREATE TABLE alert_suppressions_new (
    id              INTEGER PRIMARY KEY,
    service_id      INTEGER NOT NULL REFERENCES services (id),
    kind            TEXT    NOT NULL CHECK (kind IN ('heartbeat_missing', 'job_failed',
                                                     'job_overdue', 'run_refused')),
    reason          TEXT    NOT NULL CHECK (reason IN ('maintenance', 'muted', 'parent')),
    incident_key    TEXT    NOT NULL,
    parent_alert_id INTEGER,
    created_at      INTEGER NOT NULL,
    UNIQUE (incident_key, reason)
);
INSERT INTO alert_suppressions_new (id, service_id, kind, reason, incident_key, parent_alert_id,
    created_at)
SELECT id, service_id, kind, reason, incident_key, parent_alert_id, created_at
FROM alert_suppressions;
DROP TABLE alert_suppressions;
ALTER TABLE alert_suppressions_new RENAME TO alert_suppressions;
CREATE INDEX alert_suppressions_service ON alert_suppressions (service_id, created_at DESC);
CREATE INDEX alert_suppressions_created ON alert_suppressions (created_at);

-- The monitor finds an agent's runs from the agent's service.
CREATE INDEX agents_service ON agents (service_id);

COMMIT;
PRAGMA foreign_keys = ON;
