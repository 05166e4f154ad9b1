//! Sealed secrets on PostgreSQL. A rotation locks every secret row (`FOR UPDATE`) for its one
//! transaction, so a value written meanwhile waits and is never overwritten by an older one.

use sqlx::{AssertSqlSafe, PgConnection};

use super::*;
use crate::store::*;

async fn info_of(conn: &mut PgConnection, name: &str) -> Result<Option<SecretInfo>, sqlx::Error> {
    let sql = format!("SELECT {SECRET_INFO_COLUMNS} FROM secrets WHERE name = $1");
    sqlx::query(AssertSqlSafe(sql))
        .bind(name)
        .fetch_optional(conn)
        .await?
        .map(|r| SecretInfo::from_row(&r))
        .transpose()
}

#[async_trait::async_trait]
impl SecretStore for PgStore {
    async fn put_secret(
        &self,
        new: &NewSecret,
        audit: AuditWith<'_, SecretInfo>,
    ) -> StoreResult<PutSecretOutcome> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // `xmax = 0` only for a row this statement inserted.
        let inserted: bool = sqlx::query_scalar(
            "INSERT INTO secrets (name, sealed, key_id, created_at, created_by, updated_at, \
             updated_by) VALUES ($1, $2, $3, $4, $5, $4, $5) ON CONFLICT (name) DO UPDATE SET \
             sealed = excluded.sealed, key_id = excluded.key_id, \
             updated_at = excluded.updated_at, updated_by = excluded.updated_by \
             RETURNING (xmax = 0)",
        )
        .bind(&new.name)
        .bind(&new.sealed)
        .bind(&new.key_id)
        .bind(new.at)
        .bind(&new.actor)
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
        let info = info_of(&mut tx, &new.name)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| StoreError::Unavailable("the secret vanished".into()))?;
        insert_audit(&mut tx, &audit(&info)).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(if inserted {
            PutSecretOutcome::Created(info)
        } else {
            PutSecretOutcome::Updated(info)
        })
    }

    async fn delete_secret(
        &self,
        name: &str,
        audit: AuditWith<'_, SecretInfo>,
    ) -> StoreResult<Option<SecretInfo>> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
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
        insert_audit(&mut tx, &audit(&info)).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(info))
    }

    async fn list_secrets(&self) -> StoreResult<Vec<SecretInfo>> {
        let sql = format!("SELECT {SECRET_INFO_COLUMNS} FROM secrets ORDER BY name");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        collect(&rows, |r| SecretInfo::from_row(r))
    }

    async fn sealed_secrets(&self, names: &[String]) -> StoreResult<Vec<SealedSecret>> {
        let rows = sqlx::query(
            "SELECT name, sealed, key_id FROM secrets WHERE name = ANY($1) ORDER BY name",
        )
        .bind(names)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        collect(&rows, |r| SealedSecret::from_row(r))
    }

    async fn all_sealed_secrets(&self) -> StoreResult<Vec<SealedSecret>> {
        let rows = sqlx::query("SELECT name, sealed, key_id FROM secrets ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        collect(&rows, |r| SealedSecret::from_row(r))
    }

    async fn rotate_secrets(
        &self,
        reseal: Reseal<'_>,
        audit: AuditWith<'_, RotateSummary>,
    ) -> StoreResult<RotateOutcome> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let rows = sqlx::query("SELECT name, sealed, key_id FROM secrets ORDER BY name FOR UPDATE")
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        let stored = collect(&rows, |r| SealedSecret::from_row(r))?;
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
        insert_audit(&mut tx, &audit(&summary)).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(RotateOutcome::Done(summary))
    }
}
