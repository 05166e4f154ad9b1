//! One module per group of commands.

pub mod alerts;
pub mod ops;
pub mod playbooks;
pub mod scripts;
pub mod services;

use serde_json::Value;

use crate::client::{Client, Failure, enc};
use medic_server::http::extract::Page;
use medic_server::http::services::ServiceOut;

/// `--limit` and `--offset` of list commands.
#[derive(Debug, Clone, clap::Args)]
pub struct Paging {
    /// Entries per page.
    #[arg(long)]
    pub limit: Option<u32>,
    /// Entries to skip.
    #[arg(long)]
    pub offset: Option<u32>,
}

impl Paging {
    pub fn pairs(&self) -> [(&'static str, Option<String>); 2] {
        [
            ("limit", self.limit.map(|v| v.to_string())),
            ("offset", self.offset.map(|v| v.to_string())),
        ]
    }
}

/// A service given by id or by heartbeat name (exact, case-insensitive).
pub fn service_id(client: &Client, given: &str) -> Result<i64, Failure> {
    if let Ok(id) = given.trim().parse::<i64>() {
        return Ok(id);
    }
    let page: Page<ServiceOut> = client
        .get(&format!(
            "/v2/services?limit=250&name={}",
            enc(given.trim())
        ))?
        .decode()?;
    page.entries
        .iter()
        .find(|s| s.heartbeat_name.eq_ignore_ascii_case(given.trim()))
        .map(|s| s.service_id)
        .ok_or_else(|| Failure::NotFound(format!("no service named {given:?}")))
}

/// A JSON or YAML file as a JSON value (`-` reads standard input).
pub fn read_document(path: &str) -> Result<Value, Failure> {
    let text = read_text(path)?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        serde_json::from_str(&text).map_err(|e| Failure::Usage(format!("{path}: {e}")))
    } else {
        serde_saphyr::from_str(&text).map_err(|e| Failure::Usage(format!("{path}: {e}")))
    }
}

/// A file's text (`-` reads standard input).
pub fn read_text(path: &str) -> Result<String, Failure> {
    if path == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| Failure::Other(format!("cannot read standard input: {e}")))?;
        return Ok(s);
    }
    std::fs::read_to_string(path).map_err(|e| Failure::Usage(format!("cannot read {path}: {e}")))
}

/// `key=value` for clap.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.trim().is_empty())
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

/// RFC 3339 of now + `d`.
pub fn from_now(d: std::time::Duration) -> Result<String, Failure> {
    let d = chrono::Duration::from_std(d).map_err(|e| Failure::Usage(e.to_string()))?;
    Ok((chrono::Utc::now() + d).to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}
