//! Registered scripts and their versions on SQLite. Writes go through the single writer
//! connection, so a transaction's read-then-write cannot interleave with another writer.

use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite};

use super::*;
use crate::domain::service::name_key;
use crate::domain::{OwnerId, Timestamp};
use crate::store::sql::escape_like;
use crate::store::*;

const VERSION_COLUMNS: &str = "id, script_id, version, interpreter, content, sha256, \
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

fn push_filter(qb: &mut QueryBuilder<Sqlite>, filter: &ScriptFilter) {
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

#[async_trait::async_trait]
impl ScriptStore for SqliteStore {
    async fn register_script_version(
        &self,
        new: &NewScriptVersion,
    ) -> StoreResult<RegisterOutcome> {
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let existing: Option<(i64, String)> =
            sqlx::query_as("SELECT id, name FROM scripts WHERE name_key = $1")
                .bind(name_key(&new.name))
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
        let (script_id, name) = match existing {
            Some(found) => found,
            None => sqlx::query_as(
                "INSERT INTO scripts (name, name_key, created_at) VALUES ($1, $2, $3) \
                 RETURNING id, name",
            )
            .bind(&new.name)
            .bind(name_key(&new.name))
            .bind(new.at)
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?,
        };
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
            insert_audit(&mut tx, &e).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(RegisterOutcome::Created { name, version })
    }

    async fn get_script(&self, id: ScriptId) -> StoreResult<Option<Script>> {
        let mut tx = self.read.begin().await.map_err(unavailable)?;
        let Some((name, created_at)) = sqlx::query_as::<_, (String, i64)>(
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
            created_at: Timestamp::from_millis(created_at),
            versions,
        }))
    }

    async fn script_id_by_name(&self, name: &str) -> StoreResult<Option<ScriptId>> {
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM scripts WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.read)
            .await
            .map_err(unavailable)?;
        Ok(id.map(ScriptId))
    }

    async fn list_scripts(
        &self,
        filter: &ScriptFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Script>> {
        let mut tx = self.read.begin().await.map_err(unavailable)?;
        let mut count = QueryBuilder::<Sqlite>::new("SELECT count(*)");
        push_filter(&mut count, filter);
        let total: i64 = count
            .build_query_scalar()
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let mut qb = QueryBuilder::<Sqlite>::new(format!(
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
                    created_at: Timestamp::from_millis(r.try_get("script_created_at")?),
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

    async fn get_script_version(
        &self,
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
            .fetch_optional(&self.read)
            .await
            .map_err(unavailable)?
            .map(|r| ScriptVersion::from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    async fn decide_script_version(
        &self,
        version_id: i64,
        d: &ScriptDecision,
    ) -> StoreResult<DecideOutcome> {
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let sql = format!("SELECT {VERSION_COLUMNS} FROM script_versions WHERE id = $1");
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
            insert_audit(&mut tx, e).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(DecideOutcome::Decided(v))
    }
}
