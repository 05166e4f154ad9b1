-- Medic schema, PostgreSQL flavour. Same tables, columns, constraints and indexes as the SQLite
-- migration with the same version number; timestamps are timestamptz (the server writes whole
-- milliseconds, UTC), flags are boolean, JSON payloads are jsonb.
-- Names are unique case-insensitively through name_key (the Unicode-lowercased name, computed
-- by the server so both backends fold identically).

CREATE TABLE services (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    heartbeat_name    text        NOT NULL,
    name_key          text        NOT NULL,
    service_name      text        NOT NULL DEFAULT '',
    environment       text,
    active            boolean     NOT NULL DEFAULT true,
    interval_seconds  bigint      NOT NULL CHECK (interval_seconds > 0),
    threshold         integer     NOT NULL DEFAULT 1 CHECK (threshold >= 1),
    grace_seconds     bigint      NOT NULL DEFAULT 0 CHECK (grace_seconds >= 0),
    team              text        NOT NULL,
    priority          text        NOT NULL CHECK (priority IN ('p1', 'p2', 'p3', 'p4', 'p5')),
    runbook           text,
    state             text        NOT NULL DEFAULT 'new' CHECK (state IN ('new', 'up', 'late', 'down')),
    muted_at          timestamptz,
    muted_until       timestamptz,
    mute_reason       text,
    max_duration_ms   bigint      CHECK (max_duration_ms IS NULL OR max_duration_ms > 0),
    last_heartbeat_at timestamptz,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    deleted_at        timestamptz,
    CHECK (muted_until IS NULL OR muted_at IS NOT NULL)
);
CREATE UNIQUE INDEX services_name_key_live ON services (name_key) WHERE deleted_at IS NULL;
-- lower(... COLLATE "C") folds ASCII only, like SQLite's lower(), whatever the cluster's locale.
CREATE INDEX services_team ON services (lower(team COLLATE "C")) WHERE deleted_at IS NULL;
CREATE INDEX services_service_name ON services (lower(service_name COLLATE "C"))
    WHERE deleted_at IS NULL;

CREATE TABLE heartbeat_events (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service_id  bigint      NOT NULL REFERENCES services (id),
    status      text        NOT NULL,
    run_id      text,
    received_at timestamptz NOT NULL
);
CREATE INDEX heartbeat_events_service_time ON heartbeat_events (service_id, received_at DESC);
CREATE INDEX heartbeat_events_time ON heartbeat_events (received_at);

CREATE TABLE job_runs (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service_id     bigint      NOT NULL REFERENCES services (id),
    run_id         text        NOT NULL,
    status         text        NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    started_at     timestamptz,
    finished_at    timestamptz,
    duration_ms    bigint      CHECK (duration_ms IS NULL OR duration_ms >= 0),
    exit_code      integer,
    body           text,
    body_truncated boolean     NOT NULL DEFAULT false,
    UNIQUE (service_id, run_id)
);
CREATE INDEX job_runs_service_finished ON job_runs (service_id, finished_at DESC);
CREATE INDEX job_runs_running ON job_runs (service_id, started_at DESC) WHERE status = 'running';

CREATE TABLE alerts (
    id                    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service_id            bigint      NOT NULL REFERENCES services (id),
    kind                  text        NOT NULL CHECK (kind IN ('heartbeat_missing', 'job_failed', 'job_overdue')),
    name                  text        NOT NULL,
    state                 text        NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'acknowledged', 'resolved')),
    dedup_key             text        NOT NULL,
    external_reference_id text,
    alert_cycle           integer     NOT NULL DEFAULT 1,
    created_at            timestamptz NOT NULL,
    acknowledged_at       timestamptz,
    acknowledged_by       text,
    resolved_at           timestamptz
);
CREATE UNIQUE INDEX alerts_live_dedup ON alerts (dedup_key) WHERE state <> 'resolved';
CREATE INDEX alerts_created ON alerts (created_at DESC);
CREATE INDEX alerts_service ON alerts (service_id, created_at DESC);

CREATE TABLE snapshots (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service_id    bigint      NOT NULL REFERENCES services (id),
    action_type   text        NOT NULL CHECK (action_type IN ('deactivate', 'activate', 'mute', 'unmute',
                  'edit', 'bulk_edit', 'priority_change', 'team_change', 'delete')),
    snapshot_data jsonb       NOT NULL,
    actor         text        NOT NULL,
    created_at    timestamptz NOT NULL,
    restored_at   timestamptz,
    restored_by   text
);
CREATE INDEX snapshots_service ON snapshots (service_id, created_at DESC);
CREATE INDEX snapshots_created ON snapshots (created_at DESC);

CREATE TABLE api_keys (
    id                    text        PRIMARY KEY,
    name                  text        NOT NULL,
    digest                bytea       NOT NULL CHECK (octet_length(digest) = 32),
    scopes                text        NOT NULL,
    created_at            timestamptz NOT NULL,
    expires_at            timestamptz,
    revoked_at            timestamptz,
    rate_limit_per_minute bigint      CHECK (rate_limit_per_minute IS NULL OR rate_limit_per_minute > 0),
    created_by            text
);

CREATE TABLE audit_log (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action_type  text        NOT NULL,
    actor        text        NOT NULL,
    service_id   bigint,
    execution_id bigint,
    details      jsonb       NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL
);
CREATE INDEX audit_log_created ON audit_log (created_at DESC);
CREATE INDEX audit_log_service ON audit_log (service_id, created_at DESC);
CREATE INDEX audit_log_execution ON audit_log (execution_id);
CREATE INDEX audit_log_action ON audit_log (action_type, created_at DESC);
