//! Sealed secrets on SQLite: the statements are shared (`shared/secrets.rs`); a write reads the
//! row first to tell a new secret from a replaced one (the single writer makes that safe).

use sqlx::Sqlite;

use super::*;
use crate::store::shared::secrets::SecretSql;
use crate::store::*;

impl SecretSql for Sqlite {
    const UPSERT_INSERTED: &'static str = "";
}

#[async_trait::async_trait]
impl SecretStore for SqliteStore {
    async fn put_secret(
        &self,
        new: &NewSecret,
        audit: AuditWith<'_, SecretInfo>,
    ) -> StoreResult<PutSecretOutcome> {
        Sql::put_secret(&self.write, new, audit).await
    }

    async fn delete_secret(
        &self,
        name: &str,
        audit: AuditWith<'_, SecretInfo>,
    ) -> StoreResult<Option<SecretInfo>> {
        Sql::delete_secret(&self.write, name, audit).await
    }

    async fn list_secrets(&self) -> StoreResult<Vec<SecretInfo>> {
        Sql::list_secrets(&self.read).await
    }

    async fn sealed_secrets(&self, names: &[String]) -> StoreResult<Vec<SealedSecret>> {
        Sql::sealed_secrets(&self.read, names).await
    }

    async fn all_sealed_secrets(&self) -> StoreResult<Vec<SealedSecret>> {
        Sql::all_sealed_secrets(&self.read).await
    }

    async fn rotate_secrets(
        &self,
        reseal: Reseal<'_>,
        audit: AuditWith<'_, RotateSummary>,
    ) -> StoreResult<RotateOutcome> {
        Sql::rotate_secrets(&self.write, reseal, audit).await
    }
}
