//! Teams, notification targets and maintenance windows on PostgreSQL. JSON columns are `jsonb`,
//! sent as text and cast in SQL, read back as text. Read-modify-write methods lock the row
//! (`FOR UPDATE`) so concurrent replicas do not lose each other's changes.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder};

use super::*;
use crate::domain::Timestamp;
use crate::domain::service::name_key;
use crate::store::*;

const TEAM_COLUMNS: &str = "id, name, working_hours::text AS working_hours, slack_channel, \
    created_at, updated_at";

const TARGET_COLUMNS: &str = "id, team_id, service_id, kind, priority, period, enabled, \
    config::text AS config, created_at, updated_at";

const WINDOW_COLUMNS: &str = "id, scope, service_id, team_id, spec::text AS spec, reason, \
    created_by, created_at";

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, sqlx::Error> {
    serde_json::to_string(v).map_err(|e| sqlx::Error::Encode(e.into()))
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
            .map(|r| Team::from_row(&r))
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
            .bind(new.at)
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let created = Team::from_row(&r).map_err(unavailable)?;
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
        collect(&rows, |r| Team::from_row(r))
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
        let team = patch.apply(&Team::from_row(&row).map_err(unavailable)?, at);
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
        .bind(at)
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
            .bind(&new.config)
            .bind(new.at)
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let created = NotificationTarget::from_row(&r).map_err(unavailable)?;
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
            .map(|r| NotificationTarget::from_row(&r))
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
        collect(&rows, |r| NotificationTarget::from_row(r))
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
        let t = patch.apply(
            &NotificationTarget::from_row(&row).map_err(unavailable)?,
            at,
        );
        sqlx::query(
            "UPDATE notification_targets SET kind = $1, priority = $2, period = $3, \
             enabled = $4, config = $5::jsonb, updated_at = $6 WHERE id = $7",
        )
        .bind(t.config.kind())
        .bind(t.priority)
        .bind(t.period.as_str())
        .bind(t.enabled)
        .bind(&t.config)
        .bind(at)
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
            .bind(new.at)
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let created = MaintenanceWindowRecord::from_row(&r).map_err(unavailable)?;
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
            .map(|r| MaintenanceWindowRecord::from_row(&r))
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
        let all = collect(&rows, |r| MaintenanceWindowRecord::from_row(r))?;
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
