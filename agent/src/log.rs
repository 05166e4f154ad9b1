//! Log lines: one JSON object per line on standard error (journald and launchd keep it), with
//! the time, the level, the message and a few string fields. Nothing logged is secret: the
//! credential is a [`Secret`](crate::config::Secret) and cannot be formatted.

use std::io::Write;
use std::time::SystemTime;

use medic_protocol::Timestamp;

fn line(level: &str, message: &str, fields: &[(&str, &str)]) {
    let mut object = serde_json::Map::new();
    let now = Timestamp::from_system_time(SystemTime::now());
    object.insert("ts".into(), now.as_str().into());
    object.insert("level".into(), level.into());
    object.insert("msg".into(), message.into());
    for (key, value) in fields {
        object.insert((*key).into(), (*value).into());
    }
    let text = serde_json::Value::Object(object).to_string();
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Something worth knowing.
pub fn info(message: &str, fields: &[(&str, &str)]) {
    line("info", message, fields);
}

/// Something went wrong and the agent carries on.
pub fn warn(message: &str, fields: &[(&str, &str)]) {
    line("warn", message, fields);
}
