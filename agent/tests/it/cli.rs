//! The `medic-agent` binary's commands.

use std::process::{Command, Output};

use crate::{TempDir, is_root};

fn agent(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medic-agent"))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn version_prints_the_version() {
    let out = agent(&["version"], &[]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("medic-agent {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_config_accepts_a_good_file() {
    let dir = TempDir::create();
    let credential = dir.path().join("credential");
    std::fs::write(&credential, "mdk_topsecret\n").unwrap();
    let run_as = if is_root() {
        "run_as = \"nobody\"\n"
    } else {
        ""
    };
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "server_url = \"wss://medic.example.com\"\ncredential_file = \"{}\"\n{run_as}\
             work_dir = \"{}\"\n[[allow]]\nscript = \"restart-nginx\"\n",
            credential.display(),
            dir.path().join("work").display()
        ),
    )
    .unwrap();
    let out = agent(&["--config", config.to_str().unwrap(), "check-config"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("configuration OK"), "{stdout}");
    assert!(stdout.contains("1 allowed script"), "{stdout}");
    assert!(!stdout.contains("topsecret"));

    // The same file through MEDIC_AGENT_CONFIG, with a flag overriding the agent id.
    let out = agent(
        &["check-config", "--agent-id", "db-7"],
        &[("MEDIC_AGENT_CONFIG", config.to_str().unwrap())],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("agent db-7"));
}

#[test]
fn check_config_lists_every_problem_and_exits_64() {
    let dir = TempDir::create();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "server_url = \"http://medic\"\ncredential_file = \"/nonexistent/credential\"\n\
         metrics_listen = \"0.0.0.0:9000\"\n[[allow]]\nscript = \"../x\"\n",
    )
    .unwrap();
    let out = agent(&["--config", config.to_str().unwrap(), "check-config"], &[]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("3 configuration problem(s)"), "{stderr}");
    for needle in ["wss://", "loopback", "script name"] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }

    let out = agent(
        &["--config", "/nonexistent/agent.toml", "check-config"],
        &[],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/agent.toml"));
}

#[test]
fn usage_errors_exit_64() {
    for args in [
        &[][..],
        &["run", "version"],
        &["--bogus", "version"],
        &["--credential", "x", "check-config"],
    ] {
        let out = agent(args, &[]);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
    }
}
