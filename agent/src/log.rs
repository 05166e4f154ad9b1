//! Log lines through `tracing`: one JSON object per line (`timestamp`, `level`, `message` and the
//! event's fields), formatted by `tracing-subscriber`.
//!
//! - By default the lines go to standard error, which journald (systemd) and launchd keep.
//! - With `log_file` set, they go to that file through `tracing-appender`, rotated daily: the
//!   file `agent.log` in `/var/log/medic-agent/` is written as `agent.2026-12-05.log` (the day in
//!   UTC), and only the newest `log_keep_files` files are kept (older ones are deleted at start
//!   and at each rotation). `agent.log` itself is never written nor deleted.
//!
//! Writes are synchronous, on the thread that logs: no background writer thread, so the idle
//! agent stays one thread. Nothing logged is secret: the credential is a
//! [`Secret`](crate::config::Secret) and cannot be formatted.

use std::path::Path;

use tracing_appender::rolling::{RollingFileAppender, Rotation};

/// Installs the global subscriber: JSON lines to standard error, or to `file` rotated daily
/// keeping `keep` files. Fails when the file cannot be opened, or when called twice.
pub fn init(file: Option<&Path>, keep: usize) -> Result<(), String> {
    let format = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_max_level(tracing::Level::INFO);
    let installed = match file {
        None => format.with_writer(std::io::stderr).try_init(),
        Some(path) => format.with_writer(rolling(path, keep)?).try_init(),
    };
    installed.map_err(|e| format!("cannot install the logger: {e}"))
}

/// The daily-rotated appender for `path`: `dir/stem.YYYY-MM-DD.ext`.
fn rolling(path: &Path, keep: usize) -> Result<RollingFileAppender, String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("log_file {} names no file", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let (prefix, suffix) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && !ext.is_empty() => {
            (stem.to_owned(), Some(ext.to_owned()))
        }
        _ => (name, None),
    };
    let mut builder = RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix(prefix)
        .max_log_files(keep);
    if let Some(suffix) = suffix {
        builder = builder.filename_suffix(suffix);
    }
    builder
        .build(dir)
        .map_err(|e| format!("log_file {}: {e}", path.display()))
}
