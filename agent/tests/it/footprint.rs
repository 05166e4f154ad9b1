//! The agent's dependency budget: heavy or forbidden crates must not enter its tree.

use std::process::Command;

/// Crates the agent must never link: server-side stacks, OpenSSL, clap, the full tokio, a
/// thread pool (rayon: the idle agent is one thread), regular expressions.
const FORBIDDEN: &[&str] = &[
    "sqlx",
    "axum",
    "hyper",
    "openssl",
    "openssl-sys",
    "native-tls",
    "clap",
    "reqwest",
    "redis",
    "rayon",
    "regex",
    "matchers",
    "nu-ansi-term",
];

/// Features that would grow the binary or start threads: `tracing-subscriber`'s ANSI colours
/// and env-filter, `sysinfo`'s rayon pool.
const FORBIDDEN_FEATURES: &[(&str, &str)] = &[
    ("tracing-subscriber", "ansi"),
    ("tracing-subscriber", "env-filter"),
    ("sysinfo", "multithread"),
];

#[test]
fn no_forbidden_dependency_enters_the_agent() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-p",
            "medic-agent",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p} {f}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    for line in tree.lines() {
        let name = line.split(' ').next().unwrap_or("");
        assert!(!FORBIDDEN.contains(&name), "forbidden dependency: {line}");
        for (krate, feature) in FORBIDDEN_FEATURES {
            let features = line.rsplit(' ').next().unwrap_or("");
            assert!(
                !(name == *krate && features.split(',').any(|f| f == *feature)),
                "{krate} with {feature}: {line}"
            );
        }
        if name == "tokio" {
            assert!(!line.contains("full"), "tokio with all features: {line}");
        }
    }
    assert!(
        tree.lines().any(|l| l.starts_with("medic-protocol ")),
        "{tree}"
    );
}
