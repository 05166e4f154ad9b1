//! Secrets at run time: the values a step's `${secrets.NAME}` references need, opened from
//! the store with the configured [`Keyring`] when the step runs, held in memory only for as
//! long as the step needs them, and never written anywhere — every text that leaves an
//! execution is masked with them first.

use std::collections::BTreeMap;

use crate::playbook::secrets::{Keyring, Sealed, SecretValue};
use crate::store::{Store, StoreError};

/// Opens the stored secrets among `names`. A secret that is not stored, or that does not open
/// with the configured keys (or no key is configured), is left out: a step that uses it fails
/// with an error that names it.
///
/// # Errors
/// The store could not be read (the caller tries again later).
pub async fn open<'a>(
    store: &dyn Store,
    keyring: Option<&Keyring>,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeMap<String, SecretValue>, StoreError> {
    let mut names: Vec<String> = names.into_iter().map(str::to_owned).collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }
    let sealed = store.sealed_secrets(&names).await?;
    let mut out = BTreeMap::new();
    for s in sealed {
        let Some(keyring) = keyring else {
            tracing::error!(
                secret = %s.name,
                "a secret is needed but MEDIC_SECRETS_KEY is not set"
            );
            continue;
        };
        match Sealed::from_text(&s.sealed).and_then(|x| keyring.open(&s.name, &x)) {
            Ok(v) => {
                out.insert(s.name, v);
            }
            Err(e) => tracing::error!(secret = %s.name, error = %e, "a secret does not open"),
        }
    }
    Ok(out)
}
