//! The `medic-agent` binary's commands.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use crate::hardening::account;
use crate::{TempDir, is_root};

const KEY: &str =
    "mdk_0123456789ab_fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

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
    std::fs::write(&credential, format!("{KEY}\n")).unwrap();
    std::fs::set_permissions(&credential, std::fs::Permissions::from_mode(0o600)).unwrap();
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
    assert!(!stdout.contains(&KEY[17..]));

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

/// What a host administrator gets wrong, each reported with its line where it has one: every
/// unknown key (one inside `[[allow]]`) and no false "server_url is not set"; then, with the
/// keys fixed, a credential every user can read that is not an API key, and a work directory
/// the agent could not create.
#[test]
fn check_config_reports_every_mistake_of_a_host_admin() {
    let dir = TempDir::create();
    let credential = dir.path().join("credential");
    std::fs::write(&credential, "paste-the-key-here\n").unwrap();
    std::fs::set_permissions(&credential, std::fs::Permissions::from_mode(0o644)).unwrap();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("agent.toml");
    let write = |heartbeat: &str, pin: &str| {
        let text = format!(
            "server_url = \"wss://medic.example.com\"\n\
             credential_file = \"{}\"\n\
             work_dir = \"{}\"\n\
             {heartbeat} = 5\n\
             [[allow]]\n\
             script = \"disk-report\"\n\
             {pin}",
            credential.display(),
            locked.join("work").display()
        );
        std::fs::write(&config, text).unwrap();
    };
    // As root every directory is writable: check as an ordinary user, as the service runs.
    let bin = dir.path().join("medic-agent");
    std::fs::copy(env!("CARGO_BIN_EXE_medic-agent"), &bin).unwrap();
    let user = if is_root() {
        let Some(user) = account("daemon") else {
            eprintln!("skipped: no user daemon");
            return;
        };
        Some(user)
    } else {
        None
    };
    let check = || {
        let mut command = match &user {
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={}", user.uid))
                    .arg(format!("--regid={}", user.gid))
                    .arg("--clear-groups")
                    .arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let out = command
            .args(["--config", config.to_str().unwrap(), "check-config"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    write("heartbeat_intervall", "sha = \"abc\"\n");
    let stderr = check();
    for needle in [
        "2 configuration problem(s)",
        "(line 4): unknown key `heartbeat_intervall`",
        "(line 7): unknown key `sha` in [[allow]]",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    assert!(!stderr.contains("is not set"), "{stderr}");

    write("heartbeat_interval_seconds", "");
    let stderr = check();
    for needle in [
        "3 configuration problem(s)",
        "is readable by every user (mode 644)",
        "does not hold a Medic API key",
        "does not exist and this user cannot create it",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    assert!(!stderr.contains("paste-the-key-here"), "{stderr}");
}

/// A file that is not TOML at all is one problem, on its line, and does not make up others.
#[test]
fn check_config_on_a_broken_file_names_the_line_and_nothing_false() {
    let dir = TempDir::create();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "server_url = \"wss://medic.example.com\"\ncredential_file = \"/c\"\nrun_as = medic-run\n",
    )
    .unwrap();
    let out = agent(&["--config", config.to_str().unwrap(), "check-config"], &[]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 configuration problem(s)"), "{stderr}");
    assert!(stderr.contains("(line 3)"), "{stderr}");
    assert!(!stderr.contains("is not set"), "{stderr}");
    assert!(!stderr.contains("no credential"), "{stderr}");
}

/// A syntax error no longer hides the rest: each broken line is reported, and the keys after
/// it are still checked (an unknown key, a value out of range), without a false "not set".
#[test]
fn check_config_reports_the_problems_after_a_syntax_error() {
    let dir = TempDir::create();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "server_url = \"wss://medic.example.com\"\n\
         credential_file = \"/c\"\n\
         run_as = medic-run\n\
         heartbeat_intervall = 5\n\
         max_concurrent_runs = 0\n\
         labels = { env = }\n\
         [[allow]]\n\
         script = \"disk-report\"\n\
         sha = \"abc\"\n",
    )
    .unwrap();
    let out = agent(&["--config", config.to_str().unwrap(), "check-config"], &[]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "5 configuration problem(s)",
        "(line 3): ",
        "(line 6): ",
        "(line 4): unknown key `heartbeat_intervall`",
        "(line 9): unknown key `sha` in [[allow]]",
        "max_concurrent_runs = 0 is outside 1..=",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    assert!(!stderr.contains("is not set"), "{stderr}");
    assert!(!stderr.contains("no credential"), "{stderr}");
}
