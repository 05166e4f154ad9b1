//! Sealed secrets, on both backends. A rotation locks every secret row (`FOR UPDATE` on
//! PostgreSQL) for its one transaction, so a value written meanwhile waits and is never
//! overwritten by an older one. How a write tells a new secret from a replaced one differs
//! ([`SecretSql`]).

use sqlx::{AssertSqlSafe, ColumnIndex, Decode, Encode, Executor, FromRow, Pool, QueryBuilder};
use sqlx::{Row, Type};

use super::{Db, Sql, collect, unavailable};
use crate::domain::Timestamp;
use crate::store::*;

/// What differs between the backends in this area.
pub(crate) trait SecretSql: Db {
    /// Appended to the upsert of a secret so that it returns whether it inserted the row
    /// (PostgreSQL: ` RETURNING (xmax = 0)`, true only for a row the statement inserted).
    /// Empty on SQLite: its single writer reads the row first instead.
    const UPSERT_INSERTED: &'static str;
}

impl<DB: SecretSql> Sql<DB>
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
    async fn secret_info(conn: &mut DB::Connection, name: &str) -> StoreResult<Option<SecretInfo>> {
        let sql = format!("SELECT {SECRET_INFO_COLUMNS} FROM secrets WHERE name = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(conn)
            .await
            .map_err(unavailable)?
            .map(|r| SecretInfo::from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    pub(crate) async fn put_secret(
        pool: &Pool<DB>,
        new: &NewSecret,
        audit: AuditWith<'_, SecretInfo>,
    ) -> StoreResult<PutSecretOutcome> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let existed = if DB::UPSERT_INSERTED.is_empty() {
            Some(Self::secret_info(&mut tx, &new.name).await?.is_some())
        } else {
            None
        };
        let sql = format!(
            "INSERT INTO secrets (name, sealed, key_id, created_at, created_by, updated_at, \
             updated_by) VALUES ($1, $2, $3, $4, $5, $4, $5) ON CONFLICT (name) DO UPDATE SET \
             sealed = excluded.sealed, key_id = excluded.key_id, \
             updated_at = excluded.updated_at, updated_by = excluded.updated_by{}",
            DB::UPSERT_INSERTED
        );
        let returned = sqlx::query(AssertSqlSafe(sql))
            .bind(&new.name)
            .bind(&new.sealed)
            .bind(&new.key_id)
            .bind(new.at)
            .bind(&new.actor)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
        let inserted = match (existed, returned) {
            (Some(existed), _) => !existed,
            (None, Some(row)) => row.try_get::<bool, _>(0).map_err(unavailable)?,
            (None, None) => {
                return Err(StoreError::Unavailable(
                    "the secret's upsert returned no row".into(),
                ));
            }
        };
        let info = Self::secret_info(&mut tx, &new.name)
            .await?
            .ok_or_else(|| StoreError::Unavailable("the secret vanished".into()))?;
        Self::insert_audit(&mut tx, &audit(&info)).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(if inserted {
            PutSecretOutcome::Created(info)
        } else {
            PutSecretOutcome::Updated(info)
        })
    }

    pub(crate) async fn delete_secret(
        pool: &Pool<DB>,
        name: &str,
        audit: AuditWith<'_, SecretInfo>,
    ) -> StoreResult<Option<SecretInfo>> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let sql = format!("DELETE FROM secrets WHERE name = $1 RETURNING {SECRET_INFO_COLUMNS}");
        let Some(info) = sqlx::query(AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
            .map(|r| SecretInfo::from_row(&r))
            .transpose()
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        Self::insert_audit(&mut tx, &audit(&info)).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(info))
    }

    pub(crate) async fn list_secrets(pool: &Pool<DB>) -> StoreResult<Vec<SecretInfo>> {
        let sql = format!("SELECT {SECRET_INFO_COLUMNS} FROM secrets ORDER BY name");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(pool)
            .await
            .map_err(unavailable)?;
        collect(&rows)
    }

    pub(crate) async fn sealed_secrets(
        pool: &Pool<DB>,
        names: &[String],
    ) -> StoreResult<Vec<SealedSecret>> {
        let mut out = Vec::new();
        let chunks = names.chunks(DB::MAX_IN_LIST);
        let several = chunks.len() > 1;
        for chunk in chunks {
            let mut qb =
                QueryBuilder::<DB>::new("SELECT name, sealed, key_id FROM secrets WHERE name");
            DB::push_in_texts(&mut qb, chunk);
            qb.push(" ORDER BY name");
            let rows = qb.build().fetch_all(pool).await.map_err(unavailable)?;
            out.extend(collect::<_, SealedSecret>(&rows)?);
        }
        if several {
            out.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(out)
    }

    pub(crate) async fn all_sealed_secrets(pool: &Pool<DB>) -> StoreResult<Vec<SealedSecret>> {
        let rows = sqlx::query("SELECT name, sealed, key_id FROM secrets ORDER BY name")
            .fetch_all(pool)
            .await
            .map_err(unavailable)?;
        collect(&rows)
    }

    pub(crate) async fn rotate_secrets(
        pool: &Pool<DB>,
        reseal: Reseal<'_>,
        audit: AuditWith<'_, RotateSummary>,
    ) -> StoreResult<RotateOutcome> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let sql = format!(
            "SELECT name, sealed, key_id FROM secrets ORDER BY name{}",
            DB::FOR_UPDATE
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        let stored: Vec<SealedSecret> = collect(&rows)?;
        let mut summary = RotateSummary {
            total: stored.len(),
            resealed: 0,
        };
        for s in &stored {
            match reseal(s) {
                Ok(None) => {}
                Ok(Some(new)) => {
                    sqlx::query("UPDATE secrets SET sealed = $1, key_id = $2 WHERE name = $3")
                        .bind(&new.sealed)
                        .bind(&new.key_id)
                        .bind(&s.name)
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                    summary.resealed += 1;
                }
                Err(reason) => {
                    return Ok(RotateOutcome::Failed {
                        name: s.name.clone(),
                        reason,
                    });
                }
            }
        }
        Self::insert_audit(&mut tx, &audit(&summary)).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(RotateOutcome::Done(summary))
    }
}
