//! The agent's one integration-test binary: real processes, no test doubles.

mod cli;
mod exec;
mod footprint;
mod hardening;
mod metrics;
mod reload;
mod session;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn create() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "medic-agent-it-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether the tests run as root (some behaviour only exists there).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

/// A real `medic-agent run` process with its own directory (credential, configuration, work
/// directory, log). Killed when dropped; its log is printed if the test failed.
pub struct Agent {
    pub child: Child,
    dir: TempDir,
}

/// The per-agent lines a test's configuration includes: `credential_file = …`, `work_dir = …`
/// and, when the tests run as root, `run_as = "nobody"` (each ending in a newline).
pub struct AgentFiles {
    pub lines: String,
}

impl Agent {
    /// Writes `key` as the credential and the configuration `config` builds around the
    /// [`AgentFiles`] lines, and starts the agent on it with a clean environment.
    pub fn start(key: &str, config: impl FnOnce(&AgentFiles) -> String) -> Self {
        let dir = TempDir::create();
        let credential = dir.path().join("credential");
        std::fs::write(&credential, format!("{key}\n")).unwrap();
        let run_as = if is_root() {
            "run_as = \"nobody\"\n"
        } else {
            ""
        };
        let files = AgentFiles {
            lines: format!(
                "credential_file = \"{}\"\nwork_dir = \"{}\"\n{run_as}",
                credential.display(),
                dir.path().join("work").display(),
            ),
        };
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, config(&files)).unwrap();
        let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_medic-agent"))
            .arg("--config")
            .arg(&path)
            .arg("run")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self { child, dir }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("agent.log"));
            eprintln!("--- medic-agent log ---\n{}", log.unwrap_or_default());
        }
    }
}
