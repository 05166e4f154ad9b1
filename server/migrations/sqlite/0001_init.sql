-- Medic schema, SQLite flavour. Timestamps are INTEGER milliseconds since the Unix epoch (UTC).
-- Names are unique case-insensitively through name_key (the Unicode-lowercased name, computed
-- by the server so both backends fold identically).

CREATE TABLE services (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    heartbeat_name    TEXT    NOT NULL,
    name_key          TEXT    NOT NULL,
    service_name      TEXT    NOT NULL DEFAULT '',
    environment       TEXT,
    active            INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    interval_seconds  INTEGER NOT NULL CHECK (interval_seconds > 0),
    threshold         INTEGER NOT NULL DEFAULT 1 CHECK (threshold >= 1),
    grace_seconds     INTEGER NOT NULL DEFAULT 0 CHECK (grace_seconds >= 0),
    team              TEXT    NOT NULL,
    priority          TEXT    NOT NULL CHECK (priority IN ('p1', 'p2', 'p3', 'p4', 'p5')),
    runbook           TEXT,
    state             TEXT    NOT NULL DEFAULT 'new' CHECK (state IN ('new', 'up', 'late', 'down')),
    muted_at          INTEGER,
    muted_until       INTEGER,
    mute_reason       TEXT,
    max_duration_ms   INTEGER CHECK (max_duration_ms IS NULL OR max_duration_ms > 0),
    last_heartbeat_at INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    deleted_at        INTEGER,
    CHECK (muted_until IS NULL OR muted_at IS NOT NULL)
);
CREATE UNIQUE INDEX services_name_key_live ON services (name_key) WHERE deleted_at IS NULL;
CREATE INDEX services_team ON services (lower(team)) WHERE deleted_at IS NULL;
CREATE INDEX services_service_name ON services (lower(service_name)) WHERE deleted_at IS NULL;

CREATE TABLE heartbeat_events (
    id          INTEGER PRIMARY KEY,
    service_id  INTEGER NOT NULL REFERENCES services (id),
    status      TEXT    NOT NULL,
    run_id      TEXT,
    received_at INTEGER NOT NULL
);
CREATE INDEX heartbeat_events_service_time ON heartbeat_events (service_id, received_at DESC);
CREATE INDEX heartbeat_events_time ON heartbeat_events (received_at);

CREATE TABLE job_runs (
    id             INTEGER PRIMARY KEY,
    service_id     INTEGER NOT NULL REFERENCES services (id),
    run_id         TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    started_at     INTEGER,
    finished_at    INTEGER,
    duration_ms    INTEGER CHECK (duration_ms IS NULL OR duration_ms >= 0),
    exit_code      INTEGER,
    body           TEXT,
    body_truncated INTEGER NOT NULL DEFAULT 0 CHECK (body_truncated IN (0, 1)),
    UNIQUE (service_id, run_id)
);
CREATE INDEX job_runs_service_finished ON job_runs (service_id, finished_at DESC);
CREATE INDEX job_runs_running ON job_runs (service_id, started_at DESC) WHERE status = 'running';

CREATE TABLE alerts (
    id                    INTEGER PRIMARY KEY,
    service_id            INTEGER NOT NULL REFERENCES services (id),
    kind                  TEXT    NOT NULL CHECK (kind IN ('heartbeat_missing', 'job_failed', 'job_overdue')),
    name                  TEXT    NOT NULL,
    state                 TEXT    NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'acknowledged', 'resolved')),
    dedup_key             TEXT    NOT NULL,
    external_reference_id TEXT,
    alert_cycle           INTEGER NOT NULL DEFAULT 1,
    created_at            INTEGER NOT NULL,
    acknowledged_at       INTEGER,
    acknowledged_by       TEXT,
    resolved_at           INTEGER
);
CREATE UNIQUE INDEX alerts_live_dedup ON alerts (dedup_key) WHERE state <> 'resolved';
CREATE INDEX alerts_created ON alerts (created_at DESC);
CREATE INDEX alerts_service ON alerts (service_id, created_at DESC);

CREATE TABLE snapshots (
    id            INTEGER PRIMARY KEY,
    service_id    INTEGER NOT NULL REFERENCES services (id),
    action_type   TEXT    NOT NULL CHECK (action_type IN ('deactivate', 'activate', 'mute', 'unmute',
                  'edit', 'bulk_edit', 'priority_change', 'team_change', 'delete')),
    snapshot_data TEXT    NOT NULL,
    actor         TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    restored_at   INTEGER,
    restored_by   TEXT
);
CREATE INDEX snapshots_service ON snapshots (service_id, created_at DESC);
CREATE INDEX snapshots_created ON snapshots (created_at DESC);

CREATE TABLE api_keys (
    id                    TEXT    PRIMARY KEY,
    name                  TEXT    NOT NULL,
    digest                BLOB    NOT NULL CHECK (length(digest) = 32),
    scopes                TEXT    NOT NULL,
    created_at            INTEGER NOT NULL,
    expires_at            INTEGER,
    revoked_at            INTEGER,
    rate_limit_per_minute INTEGER CHECK (rate_limit_per_minute IS NULL OR rate_limit_per_minute > 0),
    created_by            TEXT
);

CREATE TABLE audit_log (
    id           INTEGER PRIMARY KEY,
    action_type  TEXT    NOT NULL,
    actor        TEXT    NOT NULL,
    service_id   INTEGER,
    execution_id INTEGER,
    details      TEXT    NOT NULL DEFAULT '{}',
    created_at   INTEGER NOT NULL
);
CREATE INDEX audit_log_created ON audit_log (created_at DESC);
CREATE INDEX audit_log_service ON audit_log (service_id, created_at DESC);
CREATE INDEX audit_log_execution ON audit_log (execution_id);
CREATE INDEX audit_log_action ON audit_log (action_type, created_at DESC);
