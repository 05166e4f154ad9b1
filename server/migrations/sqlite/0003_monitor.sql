-- The deadline-driven monitor, alert lifecycle and the notification outbox (SQLite flavour).

-- The next moment the monitor must look at a service (NULL: nothing can change without a
-- heartbeat or an operator). Kept by every heartbeat batch and by every monitor pass.
ALTER TABLE services ADD COLUMN deadline_at INTEGER;
-- Optional expected schedule (cron expression and IANA time zone) instead of the interval.
ALTER TABLE services ADD COLUMN schedule TEXT;
ALTER TABLE services ADD COLUMN schedule_tz TEXT;
-- Re-notify an open, unacknowledged alert this often (NULL: the service's interval; 0: never).
ALTER TABLE services ADD COLUMN renotify_seconds INTEGER
    CHECK (renotify_seconds IS NULL OR renotify_seconds >= 0);
-- While the parent is down, this service's alerts fold into the parent's.
ALTER TABLE services ADD COLUMN parent_id INTEGER REFERENCES services (id);
-- Alert when a job run fails (fail signal or non-zero exit code).
ALTER TABLE services ADD COLUMN alert_on_failure INTEGER NOT NULL DEFAULT 1
    CHECK (alert_on_failure IN (0, 1));
UPDATE services SET deadline_at = coalesce(last_heartbeat_at, created_at) + interval_seconds * 1000
    WHERE deleted_at IS NULL AND active = 1;
CREATE INDEX services_deadline ON services (deadline_at)
    WHERE deleted_at IS NULL AND deadline_at IS NOT NULL;
CREATE INDEX services_parent ON services (parent_id) WHERE parent_id IS NOT NULL;

ALTER TABLE alerts ADD COLUMN priority TEXT;
ALTER TABLE alerts ADD COLUMN team TEXT;
-- When the service became down (the deadline the alert answers; detection lag counts from it).
ALTER TABLE alerts ADD COLUMN down_since INTEGER;
ALTER TABLE alerts ADD COLUMN last_notified_at INTEGER;
ALTER TABLE alerts ADD COLUMN resolved_by TEXT;
ALTER TABLE alerts ADD COLUMN resolve_reason TEXT;
ALTER TABLE alerts ADD COLUMN run_id TEXT;
ALTER TABLE alerts ADD COLUMN summary TEXT;
CREATE INDEX alerts_state ON alerts (state, created_at DESC);
CREATE INDEX alerts_resolved ON alerts (resolved_at) WHERE state = 'resolved';

-- Alerts that would have opened but were held back, one row per incident and reason.
CREATE TABLE alert_suppressions (
    id              INTEGER PRIMARY KEY,
    service_id      INTEGER NOT NULL REFERENCES services (id),
    kind            TEXT    NOT NULL CHECK (kind IN ('heartbeat_missing', 'job_failed', 'job_overdue')),
    reason          TEXT    NOT NULL CHECK (reason IN ('maintenance', 'muted', 'parent')),
    incident_key    TEXT    NOT NULL,
    parent_alert_id INTEGER,
    created_at      INTEGER NOT NULL,
    UNIQUE (incident_key, reason)
);
CREATE INDEX alert_suppressions_service ON alert_suppressions (service_id, created_at DESC);
CREATE INDEX alert_suppressions_created ON alert_suppressions (created_at);

-- The outbox: one row per (alert event, destination), written in the transaction that changes
-- the alert; the dispatcher delivers, retries and records the outcome here (the delivery log).
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    alert_id        INTEGER NOT NULL REFERENCES alerts (id),
    -- The notification target, or NULL for the deployment-wide defaults. No foreign key: the
    -- log outlives a deleted target.
    target_id       INTEGER,
    event           TEXT    NOT NULL CHECK (event IN ('triggered', 'renotified', 'acknowledged', 'resolved')),
    channel         TEXT    NOT NULL CHECK (channel IN ('slack', 'pagerduty', 'webhook')),
    -- The Destination (JSON), fixed when the event happened.
    destination     TEXT    NOT NULL,
    actor           TEXT,
    state           TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    -- A dispatcher holds the row until then; a crashed one's rows are taken over after it.
    lease_until     INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    external_ref    TEXT,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_target ON deliveries (target_id, id DESC) WHERE target_id IS NOT NULL;
CREATE INDEX deliveries_alert ON deliveries (alert_id, event);
CREATE INDEX deliveries_created ON deliveries (created_at);
