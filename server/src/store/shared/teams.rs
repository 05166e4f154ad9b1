//! Teams, notification targets and maintenance windows, on both backends. JSON columns are
//! `jsonb` on PostgreSQL, sent as text and cast in SQL, read back as text. Read-modify-write
//! methods lock the row on PostgreSQL (`FOR UPDATE`) so concurrent replicas do not lose each
//! other's changes.

use sqlx::{
    AssertSqlSafe, ColumnIndex, Decode, Encode, Executor, FromRow, Pool, QueryBuilder, Type,
};

use super::{Db, Sql, collect, unavailable};
use crate::domain::service::name_key;
use crate::domain::{TargetId, TeamId, Timestamp, WindowId};
use crate::store::*;

fn team_columns<DB: Db>() -> String {
    format!(
        "id, name, working_hours{} AS working_hours, slack_channel, created_at, updated_at",
        DB::TEXT
    )
}

fn target_columns<DB: Db>() -> String {
    format!(
        "id, team_id, service_id, kind, priority, period, enabled, config{} AS config, \
         created_at, updated_at",
        DB::TEXT
    )
}

fn window_columns<DB: Db>() -> String {
    format!(
        "id, scope, service_id, team_id, spec{} AS spec, reason, created_by, created_at",
        DB::TEXT
    )
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, sqlx::Error> {
    serde_json::to_string(v).map_err(|e| sqlx::Error::Encode(e.into()))
}

fn owner_ids(o: TargetOwner) -> (Option<i64>, Option<i64>) {
    match o {
        TargetOwner::Team(t) => (Some(t.0), None),
        TargetOwner::Service(s) => (None, Some(s.0)),
    }
}

impl<DB: Db> Sql<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> i32: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> bool: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> String: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> &'a str: Encode<'a, DB> + Decode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'a> Timestamp: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> Option<i32>: Encode<'a, DB>,
    for<'a> Option<i64>: Encode<'a, DB>,
    for<'a> Option<bool>: Encode<'a, DB>,
    for<'a> Option<String>: Encode<'a, DB>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    for<'a> Option<Timestamp>: Encode<'a, DB>,
    usize: ColumnIndex<DB::Row>,
{
    async fn team_where(
        pool: &Pool<DB>,
        clause: &str,
        bind: TeamKey<'_>,
    ) -> StoreResult<Option<Team>> {
        let sql = format!("SELECT {} FROM teams WHERE {clause}", team_columns::<DB>());
        let q = sqlx::query(AssertSqlSafe(sql));
        let q = match bind {
            TeamKey::Id(id) => q.bind(id.0),
            TeamKey::Name(k) => q.bind(k),
        };
        q.fetch_optional(pool)
            .await
            .map_err(unavailable)?
            .map(|r| Team::from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    pub(crate) async fn create_team(
        pool: &Pool<DB>,
        new: &NewTeam,
        audit: Option<AuditWith<'_, Team>>,
    ) -> StoreResult<Team> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let hours = new
            .working_hours
            .as_ref()
            .map(to_json)
            .transpose()
            .map_err(unavailable)?;
        let sql = format!(
            "INSERT INTO teams (name, name_key, working_hours, slack_channel, created_at, \
             updated_at) VALUES ($1, $2, $3{}, $4, $5, $5) RETURNING {}",
            DB::JSONB,
            team_columns::<DB>()
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
            Self::insert_audit(&mut tx, &entry(&created)).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(created)
    }

    pub(crate) async fn get_team(pool: &Pool<DB>, id: TeamId) -> StoreResult<Option<Team>> {
        Self::team_where(pool, "id = $1", TeamKey::Id(id)).await
    }

    pub(crate) async fn find_team(pool: &Pool<DB>, key: &str) -> StoreResult<Option<Team>> {
        Self::team_where(pool, "name_key = $1", TeamKey::Name(key)).await
    }

    pub(crate) async fn list_teams(pool: &Pool<DB>) -> StoreResult<Vec<Team>> {
        let sql = format!("SELECT {} FROM teams ORDER BY id", team_columns::<DB>());
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(pool)
            .await
            .map_err(unavailable)?;
        collect(&rows)
    }

    pub(crate) async fn update_team(
        pool: &Pool<DB>,
        id: TeamId,
        patch: &TeamPatch,
        at: Timestamp,
        audit: Option<AuditWith<'_, Team>>,
    ) -> StoreResult<Option<Team>> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let sql = format!(
            "SELECT {} FROM teams WHERE id = $1{}",
            team_columns::<DB>(),
            DB::FOR_UPDATE
        );
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
        let sql = format!(
            "UPDATE teams SET name = $1, name_key = $2, working_hours = $3{}, \
             slack_channel = $4, updated_at = $5 WHERE id = $6",
            DB::JSONB
        );
        sqlx::query(AssertSqlSafe(sql))
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
            Self::insert_audit(&mut tx, &entry(&team)).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(team))
    }

    pub(crate) async fn delete_team(
        pool: &Pool<DB>,
        id: TeamId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        // Targets and team windows go with it (ON DELETE CASCADE).
        let done = sqlx::query("DELETE FROM teams WHERE id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        let deleted = DB::rows_affected(&done) == 1;
        if deleted && let Some(e) = audit {
            Self::insert_audit(&mut tx, e).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(deleted)
    }

    pub(crate) async fn create_target(
        pool: &Pool<DB>,
        new: &NewTarget,
        audit: Option<AuditWith<'_, NotificationTarget>>,
    ) -> StoreResult<NotificationTarget> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let (team, service) = owner_ids(new.owner);
        let sql = format!(
            "INSERT INTO notification_targets (team_id, service_id, kind, priority, period, \
             enabled, config, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7{}, $8, $8) RETURNING {}",
            DB::JSONB,
            target_columns::<DB>()
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
            Self::insert_audit(&mut tx, &entry(&created)).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(created)
    }

    pub(crate) async fn get_target(
        pool: &Pool<DB>,
        id: TargetId,
    ) -> StoreResult<Option<NotificationTarget>> {
        let sql = format!(
            "SELECT {} FROM notification_targets WHERE id = $1",
            target_columns::<DB>()
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(pool)
            .await
            .map_err(unavailable)?
            .map(|r| NotificationTarget::from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    pub(crate) async fn list_targets(
        pool: &Pool<DB>,
        f: &TargetFilter,
    ) -> StoreResult<Vec<NotificationTarget>> {
        let mut qb = QueryBuilder::<DB>::new(format!(
            "SELECT {} FROM notification_targets WHERE 1 = 1",
            target_columns::<DB>()
        ));
        if let Some(t) = f.team {
            qb.push(" AND team_id = ").push_bind(t.0);
        }
        if let Some(s) = f.service {
            qb.push(" AND service_id = ").push_bind(s.0);
        }
        qb.push(" ORDER BY priority, id");
        let rows = qb.build().fetch_all(pool).await.map_err(unavailable)?;
        collect(&rows)
    }

    pub(crate) async fn update_target(
        pool: &Pool<DB>,
        id: TargetId,
        patch: &TargetPatch,
        at: Timestamp,
        audit: Option<AuditWith<'_, NotificationTarget>>,
    ) -> StoreResult<Option<NotificationTarget>> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let sql = format!(
            "SELECT {} FROM notification_targets WHERE id = $1{}",
            target_columns::<DB>(),
            DB::FOR_UPDATE
        );
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
        let sql = format!(
            "UPDATE notification_targets SET kind = $1, priority = $2, period = $3, \
             enabled = $4, config = $5{}, updated_at = $6 WHERE id = $7",
            DB::JSONB
        );
        sqlx::query(AssertSqlSafe(sql))
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
            Self::insert_audit(&mut tx, &entry(&t)).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(t))
    }

    pub(crate) async fn delete_target(
        pool: &Pool<DB>,
        id: TargetId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let done = sqlx::query("DELETE FROM notification_targets WHERE id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        let deleted = DB::rows_affected(&done) == 1;
        if deleted && let Some(e) = audit {
            Self::insert_audit(&mut tx, e).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(deleted)
    }

    pub(crate) async fn create_window(
        pool: &Pool<DB>,
        new: &NewWindow,
        audit: Option<AuditWith<'_, MaintenanceWindowRecord>>,
    ) -> StoreResult<MaintenanceWindowRecord> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let (service, team) = match new.scope {
            WindowScope::Service(s) => (Some(s.0), None),
            WindowScope::Team(t) => (None, Some(t.0)),
            WindowScope::Global => (None, None),
        };
        let bounds = one_time_bounds(&new.window);
        let sql = format!(
            "INSERT INTO maintenance_windows (scope, service_id, team_id, spec, starts_at, \
             ends_at, reason, created_by, created_at) \
             VALUES ($1, $2, $3, $4{}, $5, $6, $7, $8, $9) RETURNING {}",
            DB::JSONB,
            window_columns::<DB>()
        );
        let r = sqlx::query(AssertSqlSafe(sql))
            .bind(new.scope.as_str())
            .bind(service)
            .bind(team)
            .bind(to_json(&new.window).map_err(unavailable)?)
            .bind(bounds.map(|b| b.0))
            .bind(bounds.map(|b| b.1))
            .bind(&new.reason)
            .bind(&new.created_by)
            .bind(new.at)
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let created = MaintenanceWindowRecord::from_row(&r).map_err(unavailable)?;
        if let Some(entry) = audit {
            Self::insert_audit(&mut tx, &entry(&created)).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(created)
    }

    pub(crate) async fn get_window(
        pool: &Pool<DB>,
        id: WindowId,
    ) -> StoreResult<Option<MaintenanceWindowRecord>> {
        let sql = format!(
            "SELECT {} FROM maintenance_windows WHERE id = $1",
            window_columns::<DB>()
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(pool)
            .await
            .map_err(unavailable)?
            .map(|r| MaintenanceWindowRecord::from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    pub(crate) async fn list_windows(
        pool: &Pool<DB>,
        f: &WindowFilter,
    ) -> StoreResult<Vec<MaintenanceWindowRecord>> {
        let mut qb = QueryBuilder::<DB>::new(format!(
            "SELECT {} FROM maintenance_windows WHERE 1 = 1",
            window_columns::<DB>()
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
            qb.push(" AND (ends_at IS NULL OR (starts_at <= ")
                .push_bind(at)
                .push(" AND ends_at > ")
                .push_bind(at)
                .push("))");
        }
        qb.push(" ORDER BY id");
        let rows = qb.build().fetch_all(pool).await.map_err(unavailable)?;
        let all = collect(&rows)?;
        Ok(all.into_iter().filter(|w| f.matches(w)).collect())
    }

    pub(crate) async fn delete_window(
        pool: &Pool<DB>,
        id: WindowId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let done = sqlx::query("DELETE FROM maintenance_windows WHERE id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        let deleted = DB::rows_affected(&done) == 1;
        if deleted && let Some(e) = audit {
            Self::insert_audit(&mut tx, e).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(deleted)
    }
}

enum TeamKey<'a> {
    Id(TeamId),
    Name(&'a str),
}
