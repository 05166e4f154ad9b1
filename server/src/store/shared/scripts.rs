//! Registered scripts and their versions, on both backends. Finding or creating a script's row
//! for a registration (an insert or an upsert, then a row lock on PostgreSQL) stays in the
//! backends.

use sqlx::{
    AssertSqlSafe, ColumnIndex, Decode, Encode, Executor, FromRow, Pool, QueryBuilder, Row,
    Transaction, Type,
};

use super::{Db, Sql, unavailable};
use crate::domain::service::name_key;
use crate::domain::{OwnerId, ScriptId, Timestamp};
use crate::store::sql::escape_like;
use crate::store::*;

pub(crate) const VERSION_COLUMNS: &str = "id, script_id, version, interpreter, content, sha256, \
    description, status, created_by, created_by_key, created_at, decided_by, decided_by_key, \
    decided_at, decision_reason, created_by_owner, decided_by_owner";

/// [`VERSION_COLUMNS`] qualified with the alias `v`, for joins.
fn qualified() -> String {
    VERSION_COLUMNS
        .split(", ")
        .map(|c| format!("v.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn push_filter<DB: Db>(qb: &mut QueryBuilder<DB>, filter: &ScriptFilter)
where
    for<'a> String: Encode<'a, DB> + Type<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
{
    qb.push(
        " FROM scripts s JOIN script_versions v ON v.script_id = s.id AND v.version = \
         (SELECT max(version) FROM script_versions WHERE script_id = s.id) WHERE 1 = 1",
    );
    if let Some(st) = filter.status {
        qb.push(" AND v.status = ").push_bind(st.as_str());
    }
    if let Some(n) = &filter.name_contains {
        qb.push(" AND s.name_key LIKE ")
            .push_bind(format!("%{}%", escape_like(&name_key(n))))
            .push(" ESCAPE '\\'");
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
    /// Adds `new` as the next version of script `script_id` (unless it is the latest one
    /// already) and commits `tx`, which holds the script's row.
    pub(crate) async fn add_script_version(
        mut tx: Transaction<'static, DB>,
        script_id: i64,
        name: String,
        new: &NewScriptVersion,
    ) -> StoreResult<RegisterOutcome> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM script_versions WHERE script_id = $1 \
             ORDER BY version DESC LIMIT 1"
        );
        let latest = sqlx::query(AssertSqlSafe(sql))
            .bind(script_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
            .map(|r| ScriptVersion::from_row(&r))
            .transpose()
            .map_err(unavailable)?;
        if let Some(v) = latest.as_ref().filter(|v| v.sha256 == new.sha256) {
            return Ok(RegisterOutcome::Unchanged {
                name,
                version: v.clone(),
            });
        }
        let next = latest.map_or(1, |v| v.version + 1);
        let sql = format!(
            "INSERT INTO script_versions (script_id, version, interpreter, content, sha256, \
             description, created_by, created_by_key, created_at, created_by_owner) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {VERSION_COLUMNS}"
        );
        let r = sqlx::query(AssertSqlSafe(sql))
            .bind(script_id)
            .bind(next)
            .bind(new.interpreter.as_str())
            .bind(&new.content)
            .bind(&new.sha256)
            .bind(&new.description)
            .bind(&new.created_by)
            .bind(new.created_by_key.as_ref().map(|k| k.0.as_str()))
            .bind(new.at)
            .bind(&new.created_by_owner.0)
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let version = ScriptVersion::from_row(&r).map_err(unavailable)?;
        if let Some(e) = new.audit_for(&version) {
            Self::insert_audit(&mut tx, &e).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(RegisterOutcome::Created { name, version })
    }

    pub(crate) async fn get_script(pool: &Pool<DB>, id: ScriptId) -> StoreResult<Option<Script>> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let Some((name, created_at)) = sqlx::query_as::<_, (String, Timestamp)>(
            "SELECT name, created_at FROM scripts WHERE id = $1",
        )
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM script_versions WHERE script_id = $1 \
             ORDER BY version"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        let versions = rows
            .iter()
            .map(ScriptVersion::from_row)
            .collect::<Result<_, _>>()
            .map_err(unavailable)?;
        Ok(Some(Script {
            id,
            name,
            created_at,
            versions,
        }))
    }

    pub(crate) async fn script_id_by_name(
        pool: &Pool<DB>,
        name: &str,
    ) -> StoreResult<Option<ScriptId>> {
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM scripts WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await
            .map_err(unavailable)?;
        Ok(id.map(ScriptId))
    }

    pub(crate) async fn list_scripts(
        pool: &Pool<DB>,
        filter: &ScriptFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Script>> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let mut count = QueryBuilder::<DB>::new("SELECT count(*)");
        push_filter(&mut count, filter);
        let total: i64 = count
            .build_query_scalar()
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let mut qb = QueryBuilder::<DB>::new(format!(
            "SELECT s.name AS script_name, s.created_at AS script_created_at, {}",
            qualified()
        ));
        push_filter(&mut qb, filter);
        qb.push(" ORDER BY s.id LIMIT ")
            .push_bind(i64::from(page.limit))
            .push(" OFFSET ")
            .push_bind(i64::from(page.offset));
        let rows = qb.build().fetch_all(&mut *tx).await.map_err(unavailable)?;
        let entries = rows
            .iter()
            .map(|r| {
                let v = ScriptVersion::from_row(r)?;
                Ok(Script {
                    id: v.script_id,
                    name: r.try_get("script_name")?,
                    created_at: r.try_get("script_created_at")?,
                    versions: vec![v],
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(unavailable)?;
        Ok(Page {
            entries,
            total_count: total,
        })
    }

    pub(crate) async fn get_script_version(
        pool: &Pool<DB>,
        id: ScriptId,
        version: i32,
    ) -> StoreResult<Option<ScriptVersion>> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM script_versions WHERE script_id = $1 \
             AND version = $2"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.0)
            .bind(version)
            .fetch_optional(pool)
            .await
            .map_err(unavailable)?
            .map(|r| ScriptVersion::from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    pub(crate) async fn decide_script_version(
        pool: &Pool<DB>,
        version_id: i64,
        d: &ScriptDecision,
    ) -> StoreResult<DecideOutcome> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM script_versions WHERE id = $1{}",
            DB::FOR_UPDATE
        );
        let Some(current) = sqlx::query(AssertSqlSafe(sql))
            .bind(version_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
            .map(|r| ScriptVersion::from_row(&r))
            .transpose()
            .map_err(unavailable)?
        else {
            return Ok(DecideOutcome::NotFound);
        };
        if current.status != ScriptStatus::Pending {
            return Ok(DecideOutcome::AlreadyDecided(current));
        }
        let registrant = current
            .created_by_owner
            .clone()
            .unwrap_or_else(OwnerId::bootstrap);
        if !crate::domain::apikey::second_pair_of_eyes(&registrant, &d.owner_id) {
            return Ok(DecideOutcome::SameOwner);
        }
        let sql = format!(
            "UPDATE script_versions SET status = $1, decided_by = $2, decided_by_key = $3, \
             decided_at = $4, decision_reason = $5, decided_by_owner = $7 WHERE id = $6 RETURNING {VERSION_COLUMNS}"
        );
        let r = sqlx::query(AssertSqlSafe(sql))
            .bind(d.decision.status().as_str())
            .bind(&d.actor)
            .bind(d.key_id.as_ref().map(|k| k.0.as_str()))
            .bind(d.at)
            .bind(&d.reason)
            .bind(version_id)
            .bind(&d.owner_id.0)
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let v = ScriptVersion::from_row(&r).map_err(unavailable)?;
        if let Some(e) = &d.audit {
            Self::insert_audit(&mut tx, e).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(DecideOutcome::Decided(v))
    }
}
