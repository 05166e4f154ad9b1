//! The PostgreSQL store (placeholder until the implementation lands).

use std::sync::Arc;

use super::*;

/// Opens a PostgreSQL store.
pub async fn connect(_url: &str, _opts: &PoolOptions) -> StoreResult<Arc<dyn Store>> {
    Err(StoreError::Config(
        "PostgreSQL support is not built yet".into(),
    ))
}
