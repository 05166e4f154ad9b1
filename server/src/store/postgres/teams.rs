//! Teams, notification targets and maintenance windows on PostgreSQL. JSON columns are `jsonb`,
//! sent as text and cast in SQL, read back as text. Read-modify-write methods lock the row
//! (`FOR UPDATE`) so concurrent replicas do not lose each other's changes.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder, Row};

use super::*;
use crate::domain::monitor::PagingPeriod;
use crate::domain::service::name_key;
use crate::domain::{ServiceId, Timestamp};
use crate::store::*;

const TEAM_COLUMNS: &str = "id, name, working_hours::text AS working_hours, slack_channel, \
    created_at, updated_at";

const TARGET_COLUMNS: &str = "id, team_id, service_id, kind, priority, period, enabled, \
    config::text AS config, created_at, updated_at";

const WINDOW_COLUMNS: &str = "id, scope, service_id, team_id, spec::text AS spec, reason, \
    created_by, created_at";

fn json_col<T: serde::de::DeserializeOwned>(r: &PgRow, col: &str) -> Result<T, sqlx::Error> {
    let raw: String = r.try_get(col)?;
    serde_json::from_str(&raw).map_err(|e| sqlx::Error::Decode(e.into()))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, sqlx::Error> {
    serde_json::to_string(v).map_err(|e| sqlx::Error::Encode(e.into()))
}

fn team_from_row(r: &PgRow) -> Result<Team, sqlx::Error> {
    let hours: Option<String> = r.try_get("working_hours")?;
    Ok(Team {
        id: TeamId(r.try_get("id")?),
        name: r.try_get("name")?,
        working_hours: hours
            .map(|h| serde_json::from_str(&h))
            .transpose()
            .map_err(|e| sqlx::Error::Decode(e.into()))?,
        slack_channel: r.try_get("slack_channel")?,
        created_at: ts(r, "created_at")?,
        updated_at: ts(r, "updated_at")?,
    })
}

fn target_from_row(r: &PgRow) -> Result<NotificationTarget, sqlx::Error> {
    let team: Option<i64> = r.try_get("team_id")?;
    let service: Option<i64> = r.try_get("service_id")?;
    let owner = match (team, service) {
        (Some(t), None) => TargetOwner::Team(TeamId(t)),
        (None, Some(s)) => TargetOwner::Service(ServiceId(s)),
        _ => return Err(sqlx::Error::Decode("target owner in database".into())),
    };
    Ok(NotificationTarget {
        id: TargetId(r.try_get("id")?),
        owner,
        config: json_col(r, "config")?,
        priority: r.try_get("priority")?,
        period: decode("period", PagingPeriod::parse(r.try_get("period")?))?,
        enabled: r.try_get("enabled")?,
        created_at: ts(r, "created_at")?,
        updated_at: ts(r, "updated_at")?,
    })
}

fn window_from_row(r: &PgRow) -> Result<MaintenanceWindowRecord, sqlx::Error> {
    let scope: String = r.try_get("scope")?;
    let scope = match scope.as_str() {
        "service" => WindowScope::Service(ServiceId(r.try_get("service_id")?)),
        "team" => WindowScope::Team(TeamId(r.try_get("team_id")?)),
        "global" => WindowScope::Global,
        _ => return Err(sqlx::Error::Decode("window scope in database".into())),
    };
    Ok(MaintenanceWindowRecord {
        id: WindowId(r.try_get("id")?),
        scope,
        window: json_col(r, "spec")?,
        reason: r.try_get("reason")?,
        created_by: r.try_get("created_by")?,
        created_at: ts(r, "created_at")?,
    })
}

fn owner_ids(o: TargetOwner) -> (Option<i64>, Option<i64>) {
    match o {
        TargetOwner::Team(t) => (Some(t.0), None),
        TargetOwner::Service(s) => (None, Some(s.0)),
    }
}

impl PgStore {
    async fn team_where(&self, clause: &str, bind: TeamKey<'_>) -> StoreResult<Option<Team>> {
        let sql = format!("SELECT {TEAM_COLUMNS} FROM teams WHERE {clause}");
        let q = sqlx::query(AssertSqlSafe(sql));
        let q = match bind {
            TeamKey::Id(id) => q.bind(id.0),
            TeamKey::Name(k) => q.bind(k),
        };
        q.fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .map(|r| team_from_row(&r))
            .transpose()
            .map_err(unavailable)
    }
}

#[async_trait::async_trait]
impl TeamStore for PgStore {
    async fn create_team(
        &self,
        new: &NewTeam,
        audit: Option<AuditWith<'_, Team>>,
    ) -> StoreResult<Team> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let hours = new
            .working_hours
            .as_ref()
            .map(to_json)
            .transpose()
            .map_err(unavailable)?;
        let sql = format!(
            "INSERT INTO teams (name, name_key, working_hours, slack_channel, created_at, \
             updated_at) VALUES ($1, $2, $3::jsonb, $4, $5, $5) RETURNING {TEAM_COLUMNS}"
        );
        let r = sqlx::query(AssertSqlSafe(sql))
            .bind(&new.name)
            .bind(name_key(&new.name))
            .bind(hours)
            .bind(&new.slack_channel)
            .bind(dt(new.at))
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let created = team_from_row(&r).map_err(unavailable)?;
        if let Some(entry) = audit {
            insert_audit(&mut tx, &entry(&created)).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(created)
    }

    async fn get_team(&self, id: TeamId) -> StoreResult<Option<Team>> {
        self.team_where("id = $1", TeamKey::Id(id)).await
    }

    async fn find_team(&self, key: &str) -> StoreResult<Option<Team>> {
        self.team_where("name_key = $1", TeamKey::Name(key)).await
    }

    async fn list_teams(&self) -> StoreResult<Vec<Team>> {
        let sql = format!("SELECT {TEAM_COLUMNS} FROM teams ORDER BY id");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        collect(&rows, team_from_row)
    }

    async fn update_team(
        &self,
        id: TeamId,
        patch: &TeamPatch,
        at: Timestamp,
        audit: Option<AuditWith<'_, Team>>,
    ) -> StoreResult<Option<Team>> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let sql = format!("SELECT {TEAM_COLUMNS} FROM teams WHERE id = $1 FOR UPDATE");
        let Some(row) = sqlx::query(AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let team = patch.apply(&team_from_row(&row).map_err(unavailable)?, at);
        let hours = team
            .working_hours
            .as_ref()
            .map(to_json)
            .transpose()
            .map_err(unavailable)?;
        sqlx::query(
            "UPDATE teams SET name = $1, name_key = $2, working_hours = $3::jsonb, \
             slack_channel = $4, updated_at = $5 WHERE id = $6",
        )
        .bind(&team.name)
        .bind(name_key(&team.name))
        .bind(hours)
        .bind(&team.slack_channel)
        .bind(dt(at))
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        if let Some(entry) = audit {
            insert_audit(&mut tx, &entry(&team)).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(team))
    }

    async fn delete_team(&self, id: TeamId, audit: Option<&NewAuditEntry>) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // Targets and team windows go with it (ON DELETE CASCADE).
        let done = sqlx::query("DELETE FROM teams WHERE id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        let deleted = done.rows_affected() == 1;
        if deleted && let Some(e) = audit {
            insert_audit(&mut tx, e).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(deleted)
    }

    async fn create_target(
        &self,
        new: &NewTarget,
        audit: Option<AuditWith<'_, NotificationTarget>>,
    ) -> StoreResult<NotificationTarget> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let (team, service) = owner_ids(new.owner);
        let sql = format!(
            "INSERT INTO notification_targets (team_id, service_id, kind, priority, period, \
             enabled, config, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $8) RETURNING {TARGET_COLUMNS}"
        );
        let r = sqlx::query(AssertSqlSafe(sql))
            .bind(team)
            .bind(service)
            .bind(new.config.kind())
            .bind(new.priority)
            .bind(new.period.as_str())
            .bind(new.enabled)
            .bind(to_json(&new.config).map_err(unavailable)?)
            .bind(dt(new.at))
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let created = target_from_row(&r).map_err(unavailable)?;
        if let Some(entry) = audit {
            insert_audit(&mut tx, &entry(&created)).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(created)
    }

    async fn get_target(&self, id: TargetId) -> StoreResult<Option<NotificationTarget>> {
        let sql = format!("SELECT {TARGET_COLUMNS} FROM notification_targets WHERE id = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .map(|r| target_from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    async fn list_targets(&self, f: &TargetFilter) -> StoreResult<Vec<NotificationTarget>> {
        let mut qb = QueryBuilder::<Postgres>::new(format!(
            "SELECT {TARGET_COLUMNS} FROM notification_targets WHERE true"
        ));
        if let Some(t) = f.team {
            qb.push(" AND team_id = ").push_bind(t.0);
        }
        if let Some(s) = f.service {
            qb.push(" AND service_id = ").push_bind(s.0);
        }
        qb.push(" ORDER BY priority, id");
        let rows = qb
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        collect(&rows, target_from_row)
    }

    async fn update_target(
        &self,
        id: TargetId,
        patch: &TargetPatch,
        at: Timestamp,
        audit: Option<AuditWith<'_, NotificationTarget>>,
    ) -> StoreResult<Option<NotificationTarget>> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let sql =
            format!("SELECT {TARGET_COLUMNS} FROM notification_targets WHERE id = $1 FOR UPDATE");
        let Some(row) = sqlx::query(AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let t = patch.apply(&target_from_row(&row).map_err(unavailable)?, at);
        sqlx::query(
            "UPDATE notification_targets SET kind = $1, priority = $2, period = $3, \
             enabled = $4, config = $5::jsonb, updated_at = $6 WHERE id = $7",
        )
        .bind(t.config.kind())
        .bind(t.priority)
        .bind(t.period.as_str())
        .bind(t.enabled)
        .bind(to_json(&t.config).map_err(unavailable)?)
        .bind(dt(at))
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        if let Some(entry) = audit {
            insert_audit(&mut tx, &entry(&t)).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(t))
    }

    async fn delete_target(
        &self,
        id: TargetId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let done = sqlx::query("DELETE FROM notification_targets WHERE id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        let deleted = done.rows_affected() == 1;
        if deleted && let Some(e) = audit {
            insert_audit(&mut tx, e).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(deleted)
    }

    async fn create_window(
        &self,
        new: &NewWindow,
        audit: Option<AuditWith<'_, MaintenanceWindowRecord>>,
    ) -> StoreResult<MaintenanceWindowRecord> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let (service, team) = match new.scope {
            WindowScope::Service(s) => (Some(s.0), None),
            WindowScope::Team(t) => (None, Some(t.0)),
            WindowScope::Global => (None, None),
        };
        let bounds = one_time_bounds(&new.window);
        let sql = format!(
            "INSERT INTO maintenance_windows (scope, service_id, team_id, spec, starts_at, \
             ends_at, reason, created_by, created_at) \
             VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9) RETURNING {WINDOW_COLUMNS}"
        );
        let r = sqlx::query(AssertSqlSafe(sql))
            .bind(new.scope.as_str())
            .bind(service)
            .bind(team)
            .bind(to_json(&new.window).map_err(unavailable)?)
            .bind(bounds.map(|b| dt(b.0)))
            .bind(bounds.map(|b| dt(b.1)))
            .bind(&new.reason)
            .bind(&new.created_by)
            .bind(dt(new.at))
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let created = window_from_row(&r).map_err(unavailable)?;
        if let Some(entry) = audit {
            insert_audit(&mut tx, &entry(&created)).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(created)
    }

    async fn get_window(&self, id: WindowId) -> StoreResult<Option<MaintenanceWindowRecord>> {
        let sql = format!("SELECT {WINDOW_COLUMNS} FROM maintenance_windows WHERE id = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .map(|r| window_from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    async fn list_windows(&self, f: &WindowFilter) -> StoreResult<Vec<MaintenanceWindowRecord>> {
        let mut qb = QueryBuilder::<Postgres>::new(format!(
            "SELECT {WINDOW_COLUMNS} FROM maintenance_windows WHERE true"
        ));
        if let Some(k) = f.scope {
            qb.push(" AND scope = ").push_bind(k.as_str());
        }
        if let Some(s) = f.service {
            qb.push(" AND service_id = ").push_bind(s.0);
        }
        if let Some(t) = f.team {
            qb.push(" AND team_id = ").push_bind(t.0);
        }
        if let Some(at) = f.active_at {
            // One-time windows are narrowed here; recurring ones need their schedule.
            let at: DateTime<Utc> = dt(at);
            qb.push(" AND (ends_at IS NULL OR (starts_at <= ")
                .push_bind(at)
                .push(" AND ends_at > ")
                .push_bind(at)
                .push("))");
        }
        qb.push(" ORDER BY id");
        let rows = qb
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        let all = collect(&rows, window_from_row)?;
        Ok(all.into_iter().filter(|w| f.matches(w)).collect())
    }

    async fn delete_window(
        &self,
        id: WindowId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let done = sqlx::query("DELETE FROM maintenance_windows WHERE id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        let deleted = done.rows_affected() == 1;
        if deleted && let Some(e) = audit {
            insert_audit(&mut tx, e).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(deleted)
    }
}

enum TeamKey<'a> {
    Id(TeamId),
    Name(&'a str),
}
