//! Printing answers: tables for people, the API's objects as JSON or YAML for programs.

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use serde_json::Value;

use crate::client::{Answer, Failure};

/// Writes to standard output; a closed pipe ends the process (exit 141, as SIGPIPE would),
/// any other write error ends it with 1.
pub fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args).and_then(|()| o.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("medic: cannot write the output: {e}");
        std::process::exit(1);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// A cell: strings bare, `null` as `-`, anything else as compact JSON.
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.to_owned(),
        Some(other) => other.to_string(),
    }
}

/// Looks up a dotted path (`mute.until`) in an object.
pub fn field<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().map(|h| h.to_uppercase()));
    t
}

/// Prints the results as JSON or YAML; returns false for the table format.
pub fn machine(format: Format, v: &Value) -> Result<bool, Failure> {
    match format {
        Format::Table => Ok(false),
        Format::Json => {
            outln!(
                "{}",
                serde_json::to_string_pretty(v).map_err(|e| Failure::Other(e.to_string()))?
            );
            Ok(true)
        }
        Format::Yaml => {
            let text = serde_saphyr::to_string(v).map_err(|e| Failure::Other(e.to_string()))?;
            out!("{text}");
            if !text.ends_with('\n') {
                outln!();
            }
            Ok(true)
        }
    }
}

/// A list (a page's `entries`, or an array) with the given columns (dotted paths).
pub fn list(format: Format, answer: &Answer, columns: &[&str]) -> Result<(), Failure> {
    if machine(format, &answer.results)? {
        return Ok(());
    }
    let entries = answer
        .results
        .get("entries")
        .or(Some(&answer.results))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    rows(&entries, columns);
    if let (Some(total), Some(offset)) = (
        answer.results.get("total_count").and_then(Value::as_i64),
        answer.results.get("offset").and_then(Value::as_i64),
    ) {
        if answer.results.get("has_more") == Some(&Value::Bool(true)) {
            outln!(
                "{} to {} of {total}; more with --offset {}",
                offset + 1,
                offset + entries.len() as i64,
                offset + entries.len() as i64
            );
        }
    } else if answer.results.get("has_more") == Some(&Value::Bool(true)) {
        outln!("more with --offset");
    }
    Ok(())
}

/// Rows of objects as a table.
pub fn rows(entries: &[Value], columns: &[&str]) {
    if entries.is_empty() {
        outln!("(none)");
        return;
    }
    let mut t = table(columns);
    for e in entries {
        t.add_row(columns.iter().map(|c| cell(field(e, c))));
    }
    outln!("{t}");
}

/// One object as a two-column table (nested objects as compact JSON), after the message.
pub fn object(format: Format, answer: &Answer) -> Result<(), Failure> {
    if machine(format, &answer.results)? {
        return Ok(());
    }
    if !answer.message.is_empty() {
        outln!("{}", answer.message);
    }
    show(&answer.results);
    Ok(())
}

/// An object's fields as a two-column table.
pub fn show(v: &Value) {
    match v.as_object() {
        Some(map) => {
            let mut t = Table::new();
            t.load_preset(UTF8_BORDERS_ONLY)
                .set_content_arrangement(ContentArrangement::Dynamic);
            for (k, v) in map {
                t.add_row(vec![k.clone(), cell(Some(v))]);
            }
            outln!("{t}");
        }
        None => outln!("{}", cell(Some(v))),
    }
}

/// Only the message (or "Done.") in the table format; the results otherwise.
pub fn done(format: Format, answer: &Answer) -> Result<(), Failure> {
    if machine(format, &answer.results)? {
        return Ok(());
    }
    outln!(
        "{}",
        if answer.message.is_empty() {
            "Done."
        } else {
            &answer.message
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cells_and_paths() {
        let v = json!({"a": {"b": "x"}, "n": null, "t": true, "k": 3});
        assert_eq!(cell(field(&v, "a.b")), "x");
        assert_eq!(cell(field(&v, "n")), "-");
        assert_eq!(cell(field(&v, "missing.x")), "-");
        assert_eq!(cell(field(&v, "t")), "yes");
        assert_eq!(cell(field(&v, "k")), "3");
    }
}
