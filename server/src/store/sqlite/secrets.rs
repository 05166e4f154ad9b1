//! Sealed secrets on SQLite.

use sqlx::{AssertSqlSafe, QueryBuilder, Sqlite, SqliteConnection};

use super::*;
use crate::store::*;

async fn info_of(
    conn: &mut SqliteConnection,
    name: &str,
) -> Result<Option<SecretInfo>, sqlx::Error> {
    let sql = format!("SELECT {SECRET_INFO_COLUMNS} FROM secrets WHERE name = $1");
    sqlx::query(AssertSqlSafe(sql))
        .bind(name)
        .fetch_optional(conn)
        .await?
        .map(|r| SecretInfo::from_row(&r))
        .transpose()
}

#[async_trait::async_trait]
impl SecretStore for SqliteStore {
    async fn put_secret(
        &self,
        new: &NewSecret,
        audit: AuditWith<'_, SecretInfo>,
    ) -> StoreResult<PutSecretOutcome> {
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let existed = info_of(&mut tx, &new.name)
            .await
            .map_err(unavailable)?
            .is_some();
        sqlx::query(
            "INSERT INTO secrets (name, sealed, key_id, created_at, created_by, updated_at, \
             updated_by) VALUES ($1, $2, $3, $4, $5, $4, $5) ON CONFLICT (name) DO UPDATE SET \
             sealed = excluded.sealed, key_id = excluded.key_id, \
             updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        )
        .bind(&new.name)
        .bind(&new.sealed)
        .bind(&new.key_id)
        .bind(new.at)
        .bind(&new.actor)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let info = info_of(&mut tx, &new.name)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| StoreError::Unavailable("the secret vanished".into()))?;
        insert_audit(&mut tx, &audit(&info)).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(if existed {
            PutSecretOutcome::Updated(info)
        } else {
            PutSecretOutcome::Created(info)
        })
    }

    async fn delete_secret(
        &self,
        name: &str,
        audit: AuditWith<'_, SecretInfo>,
    ) -> StoreResult<Option<SecretInfo>> {
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let Some(info) = info_of(&mut tx, name).await.map_err(unavailable)? else {
            return Ok(None);
        };
        sqlx::query("DELETE FROM secrets WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        insert_audit(&mut tx, &audit(&info)).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(info))
    }

    async fn list_secrets(&self) -> StoreResult<Vec<SecretInfo>> {
        let sql = format!("SELECT {SECRET_INFO_COLUMNS} FROM secrets ORDER BY name");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.read)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(SecretInfo::from_row)
            .collect::<Result<_, _>>()
            .map_err(unavailable)
    }

    async fn sealed_secrets(&self, names: &[String]) -> StoreResult<Vec<SealedSecret>> {
        let mut out = Vec::new();
        for chunk in names.chunks(SQLITE_CHUNK) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "SELECT name, sealed, key_id FROM secrets WHERE name IN (",
            );
            let mut list = qb.separated(", ");
            for n in chunk {
                list.push_bind(n.clone());
            }
            qb.push(") ORDER BY name");
            let rows = qb
                .build()
                .fetch_all(&self.read)
                .await
                .map_err(unavailable)?;
            for r in &rows {
                out.push(SealedSecret::from_row(r).map_err(unavailable)?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn all_sealed_secrets(&self) -> StoreResult<Vec<SealedSecret>> {
        let rows = sqlx::query("SELECT name, sealed, key_id FROM secrets ORDER BY name")
            .fetch_all(&self.read)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(SealedSecret::from_row)
            .collect::<Result<_, _>>()
            .map_err(unavailable)
    }

    async fn rotate_secrets(
        &self,
        reseal: Reseal<'_>,
        audit: AuditWith<'_, RotateSummary>,
    ) -> StoreResult<RotateOutcome> {
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let rows = sqlx::query("SELECT name, sealed, key_id FROM secrets ORDER BY name")
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        let stored = rows
            .iter()
            .map(SealedSecret::from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
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
