//! Sealed secrets on PostgreSQL: the statements are shared (`shared/secrets.rs`); a write's
//! upsert itself tells a new secret from a replaced one (`xmax = 0` only for a row it inserted).

use sqlx::Postgres;

use super::*;
use crate::store::shared::secrets::SecretSql;
use crate::store::*;

impl SecretSql for Postgres {
    const UPSERT_INSERTED: &'static str = " RETURNING (xmax = 0)";
}

#[async_trait::async_trait]
impl SecretStore for PgStore {
    async fn put_secret(
        &self,
        new: &NewSecret,
        audit: AuditWith<'_, SecretInfo>,
    ) -> StoreResult<PutSecretOutcome> {
        Sql::put_secret(&self.pool, new, audit).await
    }

    async fn delete_secret(
        &self,
        name: &str,
        audit: AuditWith<'_, SecretInfo>,
    ) -> StoreResult<Option<SecretInfo>> {
        Sql::delete_secret(&self.pool, name, audit).await
    }

    async fn list_secrets(&self) -> StoreResult<Vec<SecretInfo>> {
        Sql::list_secrets(&self.pool).await
    }

    async fn sealed_secrets(&self, names: &[String]) -> StoreResult<Vec<SealedSecret>> {
        Sql::sealed_secrets(&self.pool, names).await
    }

    async fn all_sealed_secrets(&self) -> StoreResult<Vec<SealedSecret>> {
        Sql::all_sealed_secrets(&self.pool).await
    }

    async fn rotate_secrets(
        &self,
        reseal: Reseal<'_>,
        audit: AuditWith<'_, RotateSummary>,
    ) -> StoreResult<RotateOutcome> {
        Sql::rotate_secrets(&self.pool, reseal, audit).await
    }
}
