-- Teams, notification targets and maintenance windows (SQLite flavour).
-- services.team stays free text (the legacy contract); a team applies to the services whose
-- team matches its name case-insensitively (both sides folded through name_key).
-- JSON payloads are TEXT holding the serialized spec types of the server's domain module.

CREATE TABLE teams (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL,
    name_key      TEXT    NOT NULL UNIQUE,
    -- WorkingHoursSpec: {"timezone": "...", "ranges": [{"days": [...], "start": "HH:MM", "end": "HH:MM"}]}
    working_hours TEXT,
    slack_channel TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE notification_targets (
    id         INTEGER PRIMARY KEY,
    -- Deleting a team deletes its targets; services are soft-deleted, so their targets stay
    -- and come back with a restored service.
    team_id    INTEGER REFERENCES teams (id) ON DELETE CASCADE,
    service_id INTEGER REFERENCES services (id),
    kind       TEXT    NOT NULL CHECK (kind IN ('slack', 'pagerduty', 'webhook')),
    priority   INTEGER NOT NULL DEFAULT 0,
    period     TEXT    NOT NULL DEFAULT 'always'
               CHECK (period IN ('always', 'during_hours', 'after_hours')),
    enabled    INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    -- slack: {"channel"}; pagerduty: {"routing_key"}; webhook: {"url", "secret"}
    config     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    CHECK ((team_id IS NULL) <> (service_id IS NULL))
);
CREATE INDEX notification_targets_team ON notification_targets (team_id, priority, id)
    WHERE team_id IS NOT NULL;
CREATE INDEX notification_targets_service ON notification_targets (service_id, priority, id)
    WHERE service_id IS NOT NULL;

CREATE TABLE maintenance_windows (
    id         INTEGER PRIMARY KEY,
    scope      TEXT    NOT NULL CHECK (scope IN ('service', 'team', 'global')),
    service_id INTEGER REFERENCES services (id),
    team_id    INTEGER REFERENCES teams (id) ON DELETE CASCADE,
    -- MaintenanceWindowSpec, tagged by "kind" (one_time | recurring).
    spec       TEXT    NOT NULL,
    -- Bounds of a one-time window (NULL for recurring ones), so expired windows and the
    -- windows open at an instant are found by index.
    starts_at  INTEGER,
    ends_at    INTEGER,
    reason     TEXT,
    created_by TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
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
