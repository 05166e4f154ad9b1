//! The executor: decides whether a run request may run, and runs it.
//!
//! This is the agent's security core. [`Executor::admit`] applies every check of
//! `docs/protocol.md` ("Running a script") in order and answers the first failure with a
//! [`Refusal`] naming the [`SkipReason`]:
//!
//! 1. duplicate run id (running now, or among the recently admitted ones);
//! 2. the request's shape ([`RunRequest::validate`]: path-like names, reserved parameter
//!    names, sizes, timeout, cap);
//! 3. expiry (`expires_at` before `now`);
//! 4. policy: `approved` is true, the name is in the local [`Allowlist`], SHA-256 of the content
//!    equals the request's `sha256` **and** the allowlist's pin when there is one, and the
//!    interpreter is installed in a trusted directory;
//! 5. capacity (at most `max_concurrent_runs` at once).
//!
//! An admitted request becomes a [`Permit`]; [`Permit::run`] blocks until the script ends and
//! returns the [`RunResult`]. How a script runs:
//!
//! - its text goes to `script` in a fresh private directory under the work directory (created
//!   exclusively, mode 0700; the file with `O_EXCL`, mode 0600), and the interpreter is exec'd
//!   with exactly `[interpreter, <that path>]`: no shell ever sees a string built from the
//!   request;
//! - the environment is **cleared**, then holds only `PATH HOME USER LANG LC_ALL TZ` (from the
//!   agent's environment, which the executor receives as an explicit map), the configured
//!   `pass_env` names, `MEDIC_RUN_ID`, `MEDIC_SCRIPT`, `MEDIC_AGENT_ID`, and one
//!   `MEDIC_PARAM_<NAME>` per parameter, verbatim;
//! - the child leads a new process group; on timeout the whole group gets `SIGKILL`, and when the
//!   script ends on its own any process it left behind in the group is killed too;
//! - stdout and stderr are each kept up to the cap and read (and dropped) past it, so a chatty
//!   script never blocks on a full pipe; both pipes and the exit (a pidfd on Linux) are
//!   watched with one `poll` on the run's own thread, so a run starts no threads of its own;
//! - on Linux, `RLIMIT_CPU` and `RLIMIT_AS` are set on the child with `prlimit` right after it
//!   starts (no `pre_exec`, so no `unsafe`); the interpreter's start-up runs before the limits
//!   apply, which is acceptable for limits meant to stop runaway scripts, not hostile ones;
//! - when the agent runs as root, the script runs as the configured account ([`RunAs`], from
//!   `/etc/passwd`) through `CommandExt::uid/gid`, which also drops supplementary groups.
//!
//! The executor never holds a lock while a script runs; the only shared state is the set of
//! running run ids and the ring of recently admitted ones.
//!
//! # Layout
//!
//! The security surface a reviewer reads is apart from the process handling:
//!
//! - [`admit`] — the checks above, in order: the [`Allowlist`], the remembered run ids, the
//!   hash, the trusted interpreter directories, the [`Refusal`]s;
//! - [`env`] — what a script inherits: [`BASE_ENV`], `pass_env`, the `MEDIC_*` variables and
//!   the account it runs as ([`RunAs`]);
//! - `descriptors` (Linux) — descriptors inherited from the agent's parent are marked
//!   close-on-exec at start (the agent's one `unsafe` block);
//! - [`process`] — writing the script, starting the interpreter, limits, output, timeout and
//!   the process-group kill.

mod admit;
#[cfg(target_os = "linux")]
mod descriptors;
mod env;
mod process;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use medic_protocol::{AgentId, RunId, RunRequest};

pub use admit::{Allowlist, INTERPRETER_DIRS, RECENT_RUN_IDS, Refusal, sha256_hex};
pub use env::{BASE_ENV, RunAs, harden_process, switching_capabilities};
pub use process::{Stop, Stopper, stopper};

use admit::RecentRuns;

/// Per-script resource limits (applied on Linux only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceLimits {
    /// `RLIMIT_CPU`, in seconds of CPU time.
    pub cpu_seconds: Option<u64>,
    /// `RLIMIT_AS`, in bytes of address space.
    pub memory_bytes: Option<u64>,
}

/// Everything the executor needs to know about this host.
#[derive(Debug, Clone)]
pub struct ExecSettings {
    /// The agent's id, passed to scripts as `MEDIC_AGENT_ID`.
    pub agent_id: AgentId,
    /// The scripts this host allows.
    pub allowlist: Allowlist,
    /// Where private run directories are created; made (mode 0711) if missing.
    pub work_dir: PathBuf,
    /// The most output kept per stream; also the cap when a request names none.
    pub output_cap_bytes: u64,
    /// The most scripts running at once.
    pub max_concurrent_runs: usize,
    /// Extra variables passed through from the agent's environment.
    pub pass_env: Vec<String>,
    /// CPU and memory limits.
    pub limits: ResourceLimits,
    /// The account to switch to, if any (see [`RunAs::resolve`]).
    pub run_as: Option<RunAs>,
    /// Where interpreters are looked up; [`INTERPRETER_DIRS`] in production.
    pub interpreter_dirs: Vec<PathBuf>,
}
#[derive(Debug)]
struct State {
    running: HashSet<RunId>,
    recent: RecentRuns,
    /// Where admitted run ids are appended, so they survive a restart of the agent.
    journal: Option<std::fs::File>,
}

/// Decides and runs scripts. A cheap handle: clones share the same state, so a [`Permit`] can
/// move to another thread.
#[derive(Debug, Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Replaced as a whole on reload; each run keeps the settings it was admitted with.
    settings: RwLock<Arc<ExecSettings>>,
    parent_env: BTreeMap<String, String>,
    state: Mutex<State>,
    next_dir: AtomicU64,
}

/// An admitted run: it holds one of the concurrency slots until it is run or dropped.
#[derive(Debug)]
pub struct Permit {
    executor: Executor,
    settings: Arc<ExecSettings>,
    request: RunRequest,
    interpreter: PathBuf,
    output_cap: u64,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.executor.lock().running.remove(&self.request.run_id);
    }
}

impl Executor {
    /// An executor for `settings`. `parent_env` is the agent's own environment, from which only
    /// [`BASE_ENV`] and `pass_env` are ever read; taking it as a map keeps tests free of global
    /// state. Creates the work directory if it is missing.
    ///
    /// Refuses a work directory that other users may write to: they could swap a run directory
    /// between the script being written and being executed.
    pub fn new(settings: ExecSettings, parent_env: BTreeMap<String, String>) -> io::Result<Self> {
        if !settings.work_dir.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(&settings.work_dir)?;
        }
        let mode = std::fs::metadata(&settings.work_dir)?.permissions().mode();
        if mode & 0o022 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "work_dir {} is writable by group or others (mode {:o}); make it 0700 or 0711",
                    settings.work_dir.display(),
                    mode & 0o7777
                ),
            ));
        }
        // Run directories a previous process left behind (killed mid-run, or stopped before its
        // background clean-up finished).
        if let Ok(entries) = std::fs::read_dir(&settings.work_dir) {
            for entry in entries.flatten() {
                let stale = entry.file_name().to_string_lossy().starts_with("run-")
                    && entry.file_type().is_ok_and(|t| t.is_dir());
                if stale {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let state = State {
            running: HashSet::new(),
            recent: RecentRuns {
                order: VecDeque::new(),
                ids: HashSet::new(),
                capacity: RECENT_RUN_IDS,
            },
            journal: None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                settings: RwLock::new(Arc::new(settings)),
                parent_env,
                state: Mutex::new(state),
                next_dir: AtomicU64::new(0),
            }),
        })
    }

    /// Remembers admitted run ids in the file at `path` across restarts: loads the most recent
    /// [`RECENT_RUN_IDS`] recorded there, and appends (and syncs) every id admitted from now on.
    /// The file is compacted when it has grown to twice that many lines.
    pub fn with_journal(self, path: &Path) -> io::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        let keep = &lines[lines.len().saturating_sub(RECENT_RUN_IDS)..];
        if lines.len() >= 2 * RECENT_RUN_IDS {
            let compacted = path.with_extension("compact");
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&compacted)?;
            for id in keep {
                writeln!(file, "{id}")?;
            }
            file.sync_all()?;
            std::fs::rename(&compacted, path)?;
        }
        let journal = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        {
            let mut state = self.lock();
            for id in keep {
                state.recent.insert(RunId::new(*id));
            }
            state.journal = Some(journal);
        }
        Ok(self)
    }

    /// The settings in force now.
    pub fn settings(&self) -> Arc<ExecSettings> {
        Arc::clone(
            &self
                .inner
                .settings
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Replaces the settings (the allowlist, limits, caps, `pass_env`, `run_as`…) for every run
    /// admitted from now on; runs in flight keep theirs. The work directory holds the run-id
    /// journal and cannot move while the agent runs: a different one is ignored, and the
    /// returned line says so.
    pub fn reload(&self, mut settings: ExecSettings) -> Option<String> {
        let mut current = self
            .inner
            .settings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ignored = (settings.work_dir != current.work_dir).then(|| {
            format!(
                "work_dir {} takes effect at the next start; still using {}",
                settings.work_dir.display(),
                current.work_dir.display()
            )
        });
        settings.work_dir.clone_from(&current.work_dir);
        *current = Arc::new(settings);
        ignored
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the sets half-updated in a way that
        // matters more than refusing everything would, so a poisoned lock is used as is.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many scripts are running now.
    pub fn running(&self) -> usize {
        self.lock().running.len()
    }

    /// Whether `run_id` is running now.
    pub fn is_running(&self, run_id: &RunId) -> bool {
        self.lock().running.contains(run_id)
    }
}
