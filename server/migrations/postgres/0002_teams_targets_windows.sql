-- Teams, notification targets and maintenance windows (PostgreSQL flavour). Same tables,
-- columns, constraints and indexes as the SQLite migration with the same version number.
-- services.team stays free text (the legacy contract); a team applies to the services whose
-- team matches its name case-insensitively (both sides folded through name_key).
-- JSON payloads are jsonb holding the serialized spec types of the server's domain module.

CREATE TABLE teams (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text        NOT NULL,
    name_key      text        NOT NULL UNIQUE,
    -- WorkingHoursSpec: {"timezone": "...", "ranges": [{"days": [...], "start": "HH:MM", "end": "HH:MM"}]}
    working_hours jsonb,
    slack_channel text,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);

CREATE TABLE notification_targets (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Deleting a team deletes its targets; services are soft-deleted, so their targets stay
    -- and come back with a restored service.
    team_id    bigint      REFERENCES teams (id) ON DELETE CASCADE,
    service_id bigint      REFERENCES services (id),
    kind       text        NOT NULL CHECK (kind IN ('slack', 'pagerduty', 'webhook')),
    priority   integer     NOT NULL DEFAULT 0,
    period     text        NOT NULL DEFAULT 'always'
               CHECK (period IN ('always', 'during_hours', 'after_hours')),
    enabled    boolean     NOT NULL DEFAULT true,
    -- slack: {"channel"}; pagerduty: {"routing_key"}; webhook: {"url", "secret"}
    config     jsonb       NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CHECK ((team_id IS NULL) <> (service_id IS NULL))
);
CREATE INDEX notification_targets_team ON notification_targets (team_id, priority, id)
    WHERE team_id IS NOT NULL;
CREATE INDEX notification_targets_service ON notification_targets (service_id, priority, id)
    WHERE service_id IS NOT NULL;

CREATE TABLE maintenance_windows (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope      text        NOT NULL CHECK (scope IN ('service', 'team', 'global')),
    service_id bigint      REFERENCES services (id),
    team_id    bigint      REFERENCES teams (id) ON DELETE CASCADE,
    -- MaintenanceWindowSpec, tagged by "kind" (one_time | recurring).
    spec       jsonb       NOT NULL,
    -- Bounds of a one-time window (NULL for recurring ones), so expired windows and the
    -- windows open at an instant are found by index.
    starts_at  timestamptz,
    ends_at    timestamptz,
    reason     text,
    created_by text        NOT NULL,
    created_at timestamptz NOT NULL,
    CHECK (
        (scope = 'service' AND service_id IS NOT NULL AND team_id IS NULL)
        OR (scope = 'team' AND team_id IS NOT NULL AND service_id IS NULL)
        OR (scope = 'global' AND service_id IS NULL AND team_id IS NULL)
    ),
    CHECK ((starts_at IS NULL) = (ends_at IS NULL)),
    CHECK (ends_at IS NULL OR ends_at > starts_at)
);
CREATE INDEX maintenance_windows_service ON maintenance_windows (service_id)
    WHERE service_id IS NOT NULL;
CREATE INDEX maintenance_windows_team ON maintenance_windows (team_id) WHERE team_id IS NOT NULL;
CREATE INDEX maintenance_windows_ends ON maintenance_windows (ends_at);
