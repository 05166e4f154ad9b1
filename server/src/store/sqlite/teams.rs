//! Teams, notification targets and maintenance windows on SQLite.

use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Sqlite};

use super::*;
use crate::domain::Timestamp;
use crate::domain::service::name_key;
use crate::store::*;

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, sqlx::Error> {
    serde_json::to_string(v).map_err(|e| sqlx::Error::Encode(e.into()))
}

fn collect<T>(
    rows: &[SqliteRow],
    f: fn(&SqliteRow) -> Result<T, sqlx::Error>,
) -> StoreResult<Vec<T>> {
    rows.iter()
        .map(f)
        .collect::<Result<_, _>>()
        .map_err(unavailable)
}

fn owner_ids(o: TargetOwner) -> (Option<i64>, Option<i64>) {
    match o {
        TargetOwner::Team(t) => (Some(t.0), None),
        TargetOwner::Service(s) => (None, Some(s.0)),
    }
}

#[async_trait::async_trait]
impl TeamStore for SqliteStore {
    async fn create_team(
        &self,
        new: &NewTeam,
        audit: Option<AuditWith<'_, Team>>,
    ) -> StoreResult<Team> {
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let hours = new
            .working_hours
            .as_ref()
            .map(to_json)
            .transpose()
            .map_err(unavailable)?;
        let r = sqlx::query(
            "INSERT INTO teams (name, name_key, working_hours, slack_channel, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
        )
        .bind(&new.name)
        .bind(name_key(&new.name))
        .bind(hours)
        .bind(&new.slack_channel)
        .bind(new.at)
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
        sqlx::query("SELECT * FROM teams WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.read)
            .await
            .map_err(unavailable)?
            .map(|r| Team::from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    async fn find_team(&self, key: &str) -> StoreResult<Option<Team>> {
        sqlx::query("SELECT * FROM teams WHERE name_key = $1")
            .bind(key)
            .fetch_optional(&self.read)
            .await
            .map_err(unavailable)?
            .map(|r| Team::from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    async fn list_teams(&self) -> StoreResult<Vec<Team>> {
        let rows = sqlx::query("SELECT * FROM teams ORDER BY id")
            .fetch_all(&self.read)
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
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let Some(row) = sqlx::query("SELECT * FROM teams WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let mut team = Team::from_row(&row).map_err(unavailable)?;
        team = patch.apply(&team, at);
        let hours = team
            .working_hours
            .as_ref()
            .map(to_json)
            .transpose()
            .map_err(unavailable)?;
        sqlx::query(
            "UPDATE teams SET name = $1, name_key = $2, working_hours = $3, slack_channel = $4, \
             updated_at = $5 WHERE id = $6",
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
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        // Targets and team windows go with it (ON DELETE CASCADE; foreign keys are on).
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
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let (team, service) = owner_ids(new.owner);
        let r = sqlx::query(
            "INSERT INTO notification_targets (team_id, service_id, kind, priority, period, \
             enabled, config, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             RETURNING *",
        )
        .bind(team)
        .bind(service)
        .bind(new.config.kind())
        .bind(new.priority)
        .bind(new.period.as_str())
        .bind(i64::from(new.enabled))
        .bind(&new.config)
        .bind(new.at)
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
        sqlx::query("SELECT * FROM notification_targets WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.read)
            .await
            .map_err(unavailable)?
            .map(|r| NotificationTarget::from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    async fn list_targets(&self, f: &TargetFilter) -> StoreResult<Vec<NotificationTarget>> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM notification_targets WHERE 1 = 1");
        if let Some(t) = f.team {
            qb.push(" AND team_id = ").push_bind(t.0);
        }
        if let Some(s) = f.service {
            qb.push(" AND service_id = ").push_bind(s.0);
        }
        qb.push(" ORDER BY priority, id");
        let rows = qb
            .build()
            .fetch_all(&self.read)
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
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let Some(row) = sqlx::query("SELECT * FROM notification_targets WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let mut t = NotificationTarget::from_row(&row).map_err(unavailable)?;
        t = patch.apply(&t, at);
        sqlx::query(
            "UPDATE notification_targets SET kind = $1, priority = $2, period = $3, enabled = $4, \
             config = $5, updated_at = $6 WHERE id = $7",
        )
        .bind(t.config.kind())
        .bind(t.priority)
        .bind(t.period.as_str())
        .bind(i64::from(t.enabled))
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
        let mut tx = self.write.begin().await.map_err(unavailable)?;
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
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let (service, team) = match new.scope {
            WindowScope::Service(s) => (Some(s.0), None),
            WindowScope::Team(t) => (None, Some(t.0)),
            WindowScope::Global => (None, None),
        };
        let bounds = one_time_bounds(&new.window);
        let r = sqlx::query(
            "INSERT INTO maintenance_windows (scope, service_id, team_id, spec, starts_at, \
             ends_at, reason, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             RETURNING *",
        )
        .bind(new.scope.as_str())
        .bind(service)
        .bind(team)
        .bind(to_json(&new.window).map_err(unavailable)?)
        .bind(bounds.map(|b| b.0.millis()))
        .bind(bounds.map(|b| b.1.millis()))
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
        sqlx::query("SELECT * FROM maintenance_windows WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.read)
            .await
            .map_err(unavailable)?
            .map(|r| MaintenanceWindowRecord::from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    async fn list_windows(&self, f: &WindowFilter) -> StoreResult<Vec<MaintenanceWindowRecord>> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM maintenance_windows WHERE 1 = 1");
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
            qb.push(" AND (ends_at IS NULL OR (starts_at <= ")
                .push_bind(at)
                .push(" AND ends_at > ")
                .push_bind(at)
                .push("))");
        }
        qb.push(" ORDER BY id");
        let rows = qb
            .build()
            .fetch_all(&self.read)
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
        let mut tx = self.write.begin().await.map_err(unavailable)?;
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
