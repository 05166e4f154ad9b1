//! API keys and key owners, on both backends.

use sqlx::{AssertSqlSafe, ColumnIndex, Decode, Encode, Executor, FromRow, Pool, Type};

use super::{Db, Sql, collect, unavailable};
use crate::domain::{ApiKeyId, OwnerId, Timestamp};
use crate::store::keys::{KEY_OWNER_COLUMNS, labels_text};
use crate::store::*;

/// The columns an [`ApiKeyRecord`] is read from.
const API_KEY_COLUMNS: &str = "id, name, digest, scopes, created_at, expires_at, revoked_at, \
    rate_limit_per_minute, created_by, owner_id, labels";

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
    for<'a> &'a [u8]: Encode<'a, DB> + Type<DB>,
    for<'a> Vec<u8>: Decode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    pub(crate) async fn create_api_key(
        pool: &Pool<DB>,
        key: &NewApiKey,
    ) -> StoreResult<ApiKeyRecord> {
        let sql = format!(
            "INSERT INTO api_keys (id, name, digest, scopes, created_at, expires_at, \
             rate_limit_per_minute, created_by, owner_id, labels) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             RETURNING {API_KEY_COLUMNS}"
        );
        let mut tx = pool.begin().await.map_err(unavailable)?;
        if let Some(o) = &key.new_owner {
            sqlx::query(
                "INSERT INTO key_owners (id, name, kind, created_at, created_by) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&o.id.0)
            .bind(&o.name)
            .bind(o.kind.as_str())
            .bind(o.created_at)
            .bind(&o.created_by)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            if let Some(e) = &o.audit {
                Self::insert_audit(&mut tx, e).await?;
            }
        }
        let r = sqlx::query(AssertSqlSafe(sql))
            .bind(&key.id.0)
            .bind(&key.name)
            .bind(key.digest.as_slice())
            .bind(key.scopes.to_list_string())
            .bind(key.created_at)
            .bind(key.expires_at)
            .bind(key.rate_limit_per_minute.map(i64::from))
            .bind(&key.created_by)
            .bind(&key.owner_id.0)
            .bind(labels_text(&key.labels))
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        if let Some(e) = &key.audit {
            Self::insert_audit(&mut tx, e).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        ApiKeyRecord::from_row(&r).map_err(unavailable)
    }

    pub(crate) async fn get_api_key(
        pool: &Pool<DB>,
        id: &ApiKeyId,
    ) -> StoreResult<Option<ApiKeyRecord>> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(&id.0)
            .fetch_optional(pool)
            .await
            .map_err(unavailable)?
            .map(|r| ApiKeyRecord::from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    pub(crate) async fn list_api_keys(pool: &Pool<DB>) -> StoreResult<Vec<ApiKeyRecord>> {
        // Byte order, as SQLite compares text.
        let sql = format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id{}",
            DB::COLLATE_C
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(pool)
            .await
            .map_err(unavailable)?;
        collect(&rows)
    }

    pub(crate) async fn revoke_api_key(
        pool: &Pool<DB>,
        id: &ApiKeyId,
        at: Timestamp,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(at)
                .bind(&id.0)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        let revoked = DB::rows_affected(&done) == 1;
        if revoked && let Some(e) = audit {
            Self::insert_audit(&mut tx, e).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(revoked)
    }

    pub(crate) async fn get_key_owner(
        pool: &Pool<DB>,
        id: &OwnerId,
    ) -> StoreResult<Option<KeyOwner>> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {KEY_OWNER_COLUMNS} FROM key_owners WHERE id = $1"
        )))
        .bind(&id.0)
        .fetch_optional(pool)
        .await
        .map_err(unavailable)?
        .map(|r| KeyOwner::from_row(&r))
        .transpose()
        .map_err(unavailable)
    }

    pub(crate) async fn find_key_owner(
        pool: &Pool<DB>,
        name: &str,
    ) -> StoreResult<Option<KeyOwner>> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {KEY_OWNER_COLUMNS} FROM key_owners WHERE lower(name) = lower($1)"
        )))
        .bind(name)
        .fetch_optional(pool)
        .await
        .map_err(unavailable)?
        .map(|r| KeyOwner::from_row(&r))
        .transpose()
        .map_err(unavailable)
    }

    pub(crate) async fn list_key_owners(pool: &Pool<DB>) -> StoreResult<Vec<KeyOwner>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {KEY_OWNER_COLUMNS} FROM key_owners ORDER BY created_at, id{}",
            DB::COLLATE_C
        )))
        .fetch_all(pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(KeyOwner::from_row)
            .collect::<Result<_, _>>()
            .map_err(unavailable)
    }

    pub(crate) async fn find_key_owner_by_slack_user(
        pool: &Pool<DB>,
        slack_user_id: &str,
    ) -> StoreResult<Option<KeyOwner>> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {KEY_OWNER_COLUMNS} FROM key_owners WHERE slack_user_id = $1"
        )))
        .bind(slack_user_id)
        .fetch_optional(pool)
        .await
        .map_err(unavailable)?
        .map(|r| KeyOwner::from_row(&r))
        .transpose()
        .map_err(unavailable)
    }

    pub(crate) async fn set_key_owner_slack_user(
        pool: &Pool<DB>,
        id: &OwnerId,
        slack_user_id: Option<&str>,
        audit: &NewAuditEntry,
    ) -> StoreResult<bool> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let done = sqlx::query("UPDATE key_owners SET slack_user_id = $1 WHERE id = $2")
            .bind(slack_user_id)
            .bind(&id.0)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        let changed = DB::rows_affected(&done) == 1;
        if changed {
            Self::insert_audit(&mut tx, audit).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(changed)
    }
}
