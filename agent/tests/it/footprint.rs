//! The agent's dependency budget: heavy or forbidden crates must not enter its tree.

use std::process::Command;

/// Crates the agent must never link: server-side stacks, OpenSSL, clap, the full tokio.
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
    "tracing-subscriber",
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
        if name == "tokio" {
            assert!(!line.contains("full"), "tokio with all features: {line}");
        }
    }
    assert!(
        tree.lines().any(|l| l.starts_with("medic-protocol ")),
        "{tree}"
    );
}
