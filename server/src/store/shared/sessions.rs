//! Web page sessions, on both backends.

use sqlx::{ColumnIndex, Decode, Encode, Executor, Pool, Type};

use super::{Db, Sql, unavailable};
use crate::domain::Timestamp;
use crate::store::{StoreResult, UiSession};

type Row = (
    String,
    Option<String>,
    String,
    Timestamp,
    Timestamp,
    Timestamp,
);

impl<DB: Db> Sql<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> String: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> Option<String>: Encode<'a, DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Timestamp: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    pub(crate) async fn create_ui_session(pool: &Pool<DB>, s: &UiSession) -> StoreResult<()> {
        let mut conn = pool.acquire().await.map_err(unavailable)?;
        sqlx::query("DELETE FROM ui_sessions WHERE expires_at < $1")
            .bind(s.created_at)
            .execute(&mut *conn)
            .await
            .map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO ui_sessions (id_hash, key_id, csrf_token, created_at, expires_at, \
             last_seen_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(s.id_hash.clone())
        .bind(s.key_id.clone())
        .bind(s.csrf_token.clone())
        .bind(s.created_at)
        .bind(s.expires_at)
        .bind(s.last_seen_at)
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn get_ui_session(
        pool: &Pool<DB>,
        id_hash: &str,
    ) -> StoreResult<Option<UiSession>> {
        let mut conn = pool.acquire().await.map_err(unavailable)?;
        let row: Option<Row> = sqlx::query_as(
            "SELECT id_hash, key_id, csrf_token, created_at, expires_at, last_seen_at \
             FROM ui_sessions WHERE id_hash = $1",
        )
        .bind(id_hash)
        .fetch_optional(&mut *conn)
        .await
        .map_err(unavailable)?;
        Ok(row.map(
            |(id_hash, key_id, csrf_token, created_at, expires_at, last_seen_at)| UiSession {
                id_hash,
                key_id,
                csrf_token,
                created_at,
                expires_at,
                last_seen_at,
            },
        ))
    }

    pub(crate) async fn touch_ui_session(
        pool: &Pool<DB>,
        id_hash: &str,
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut conn = pool.acquire().await.map_err(unavailable)?;
        sqlx::query("UPDATE ui_sessions SET last_seen_at = $1 WHERE id_hash = $2")
            .bind(now)
            .bind(id_hash)
            .execute(&mut *conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn delete_ui_session(pool: &Pool<DB>, id_hash: &str) -> StoreResult<bool> {
        let mut conn = pool.acquire().await.map_err(unavailable)?;
        let done = sqlx::query("DELETE FROM ui_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&mut *conn)
            .await
            .map_err(unavailable)?;
        Ok(DB::rows_affected(&done) > 0)
    }
}
