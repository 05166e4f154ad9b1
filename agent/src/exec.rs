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

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use medic_protocol::{
    AgentId, Interpreter, RunId, RunRequest, RunResult, RunSkipped, RunStatus, SkipReason,
    Timestamp,
};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};
use sha2::{Digest, Sha256};

/// The variables a script inherits from the agent's environment when they are set there.
pub const BASE_ENV: [&str; 6] = ["PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ"];

/// Where interpreters are looked up, in order. The agent's own `PATH` is not used, so a writable
/// directory early in it cannot substitute an interpreter.
pub const INTERPRETER_DIRS: [&str; 5] = [
    "/usr/bin",
    "/bin",
    "/usr/local/bin",
    "/opt/homebrew/bin",
    "/usr/sbin",
];

/// How many admitted run ids are remembered to refuse redeliveries.
pub const RECENT_RUN_IDS: usize = 4096;

/// How long to wait for the output pipes to close after the script's process group is gone.
/// Only a process that left the group (with `setsid`) can hold them open longer.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// The scripts this host allows: name → optional pinned SHA-256 (64 lowercase hex digits).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    entries: BTreeMap<String, Option<String>>,
}

impl Allowlist {
    /// Allows `script`, pinned to `sha256` when given.
    pub fn insert(&mut self, script: String, sha256: Option<String>) {
        self.entries.insert(script, sha256);
    }

    /// Whether `script` is allowed.
    pub fn contains(&self, script: &str) -> bool {
        self.entries.contains_key(script)
    }

    /// `None` when `script` is not allowed; `Some(pin)` when it is.
    pub fn pin(&self, script: &str) -> Option<Option<&str>> {
        self.entries.get(script).map(Option::as_deref)
    }

    /// How many scripts are allowed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no script is allowed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<S: Into<String>> FromIterator<(S, Option<S>)> for Allowlist {
    fn from_iter<I: IntoIterator<Item = (S, Option<S>)>>(iter: I) -> Self {
        Self {
            entries: iter
                .into_iter()
                .map(|(name, pin)| (name.into(), pin.map(Into::into)))
                .collect(),
        }
    }
}

/// Per-script resource limits (applied on Linux only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceLimits {
    /// `RLIMIT_CPU`, in seconds of CPU time.
    pub cpu_seconds: Option<u64>,
    /// `RLIMIT_AS`, in bytes of address space.
    pub memory_bytes: Option<u64>,
}

/// The account scripts run as, resolved from `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user name.
    pub name: String,
    /// The numeric user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// The home directory.
    pub home: PathBuf,
}

impl RunAs {
    /// Finds `name` in the text of an `/etc/passwd` file.
    pub fn from_passwd(name: &str, passwd: &str) -> Option<Self> {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 7 || fields[0] != name {
                return None;
            }
            Some(Self {
                name: name.to_owned(),
                uid: fields[2].parse().ok()?,
                gid: fields[3].parse().ok()?,
                home: PathBuf::from(fields[5]),
            })
        })
    }

    /// Decides whose account scripts run as. As root, `run_as` is required and must not be root
    /// itself; otherwise scripts run as the agent's own user, and `run_as`, if set, must name it.
    /// `Ok(None)` means "do not switch".
    pub fn resolve(run_as: Option<&str>, euid: u32, passwd: &str) -> Result<Option<Self>, String> {
        let account = match run_as {
            None if euid == 0 => {
                return Err(
                    "the agent runs as root and run_as is not set; refusing to run scripts as root"
                        .to_owned(),
                );
            }
            None => return Ok(None),
            Some(name) => Self::from_passwd(name, passwd)
                .ok_or_else(|| format!("run_as user {name:?} does not exist"))?,
        };
        match (euid, account.uid) {
            (0, 0) => Err(format!(
                "run_as user {:?} is root; scripts must run unprivileged",
                account.name
            )),
            (0, _) => Ok(Some(account)),
            (me, them) if me == them => Ok(None),
            _ => Err(format!(
                "run_as user {:?} needs the agent to start as root",
                account.name
            )),
        }
    }
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

/// Why a request was not run: the protocol's reason and a line for humans (never a parameter
/// value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The machine-readable reason.
    pub reason: SkipReason,
    /// Which check failed and on what.
    pub detail: String,
}

impl Refusal {
    fn new(reason: SkipReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }

    /// The message reporting this refusal of `request`.
    pub fn to_skipped(&self, request: &RunRequest) -> RunSkipped {
        RunSkipped {
            run_id: request.run_id.clone(),
            script: request.script.clone(),
            reason: self.reason,
            detail: self.detail.clone(),
        }
    }
}

/// Run ids seen recently: a set with a ring that evicts the oldest past the capacity.
#[derive(Debug)]
struct RecentRuns {
    order: VecDeque<RunId>,
    ids: HashSet<RunId>,
    capacity: usize,
}

impl RecentRuns {
    fn contains(&self, id: &RunId) -> bool {
        self.ids.contains(id)
    }

    fn insert(&mut self, id: RunId) {
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
        }
    }
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
    settings: ExecSettings,
    parent_env: BTreeMap<String, String>,
    state: Mutex<State>,
    next_dir: AtomicU64,
}

/// An admitted run: it holds one of the concurrency slots until it is run or dropped.
#[derive(Debug)]
pub struct Permit {
    executor: Executor,
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
                settings,
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

    /// Applies every check to `request` at time `now`. On success the run id is recorded (it
    /// will never be admitted again) and a concurrency slot is taken.
    pub fn admit(&self, request: &RunRequest, now: SystemTime) -> Result<Permit, Refusal> {
        {
            let state = self.lock();
            if state.running.contains(&request.run_id) {
                return Err(Refusal::new(
                    SkipReason::Duplicate,
                    "this run is already running",
                ));
            }
            if state.recent.contains(&request.run_id) {
                return Err(Refusal::new(
                    SkipReason::Duplicate,
                    "this run id already ran here",
                ));
            }
        }
        request
            .validate()
            .map_err(|e| Refusal::new(e.skip_reason(), e.to_string()))?;
        if let Some(expires) = &request.expires_at
            && expires.to_system_time() < now
        {
            return Err(Refusal::new(
                SkipReason::Expired,
                format!("the request expired at {}", expires.as_str()),
            ));
        }
        if !request.approved {
            return Err(Refusal::new(
                SkipReason::NotApproved,
                format!("version {} is not approved", request.version),
            ));
        }
        let Some(pin) = self.inner.settings.allowlist.pin(&request.script) else {
            return Err(Refusal::new(
                SkipReason::NotInAllowlist,
                format!("{:?} is not in this host's allowlist", request.script),
            ));
        };
        let actual = sha256_hex(request.content.as_bytes());
        if actual != request.sha256 {
            return Err(Refusal::new(
                SkipReason::HashMismatch,
                format!(
                    "content hashes to {actual}, the request says {}",
                    request.sha256
                ),
            ));
        }
        if let Some(pin) = pin
            && pin != actual
        {
            return Err(Refusal::new(
                SkipReason::HashMismatch,
                format!("content hashes to {actual}, the local allowlist pins {pin}"),
            ));
        }
        let interpreter = self.find_interpreter(request.interpreter).ok_or_else(|| {
            Refusal::new(
                SkipReason::UnsupportedInterpreter,
                format!("{} is not installed", request.interpreter.as_str()),
            )
        })?;

        let mut state = self.lock();
        // Checked again under the same lock as the insert, so two deliveries racing each other
        // cannot both pass.
        if state.running.contains(&request.run_id) || state.recent.contains(&request.run_id) {
            return Err(Refusal::new(
                SkipReason::Duplicate,
                "this run id already ran here",
            ));
        }
        if state.running.len() >= self.inner.settings.max_concurrent_runs {
            return Err(Refusal::new(
                SkipReason::Busy,
                format!(
                    "already running {} scripts, the most allowed",
                    state.running.len()
                ),
            ));
        }
        state.running.insert(request.run_id.clone());
        state.recent.insert(request.run_id.clone());
        if let Some(journal) = &mut state.journal {
            // Best effort: the in-memory record above already refuses redeliveries to this
            // process; the journal extends that across restarts. Run ids hold no newline.
            let _ = writeln!(journal, "{}", request.run_id).and_then(|()| journal.sync_data());
        }
        drop(state);

        let local_cap = self.inner.settings.output_cap_bytes;
        Ok(Permit {
            executor: self.clone(),
            request: request.clone(),
            interpreter,
            output_cap: request.output_cap_bytes.unwrap_or(local_cap).min(local_cap),
        })
    }

    /// Admits and runs `request`, blocking until it ends.
    pub fn execute(&self, request: &RunRequest, now: SystemTime) -> Result<RunResult, Refusal> {
        Ok(self.admit(request, now)?.run())
    }

    fn find_interpreter(&self, interpreter: Interpreter) -> Option<PathBuf> {
        self.inner
            .settings
            .interpreter_dirs
            .iter()
            .map(|dir| dir.join(interpreter.as_str()))
            .find(|path| path.is_file())
    }

    /// The script's whole environment.
    fn script_env(&self, request: &RunRequest) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let passed = BASE_ENV
            .iter()
            .copied()
            .chain(self.inner.settings.pass_env.iter().map(String::as_str));
        for name in passed {
            if let Some(value) = self.inner.parent_env.get(name) {
                env.insert(name.to_owned(), value.clone());
            }
        }
        if let Some(account) = &self.inner.settings.run_as {
            env.insert(
                "HOME".to_owned(),
                account.home.to_string_lossy().into_owned(),
            );
            env.insert("USER".to_owned(), account.name.clone());
        }
        env.insert("MEDIC_RUN_ID".to_owned(), request.run_id.to_string());
        env.insert("MEDIC_SCRIPT".to_owned(), request.script.clone());
        env.insert(
            "MEDIC_AGENT_ID".to_owned(),
            self.inner.settings.agent_id.to_string(),
        );
        for (name, value) in &request.parameters {
            env.insert(format!("MEDIC_PARAM_{name}"), value.clone());
        }
        env
    }

    /// Creates the run's private directory and writes the script into it.
    fn write_script(&self, content: &str) -> io::Result<(PathBuf, PathBuf)> {
        let dir = loop {
            let n = self.inner.next_dir.fetch_add(1, Ordering::Relaxed);
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let dir = self
                .inner
                .settings
                .work_dir
                .join(format!("run-{}-{n}-{nanos:08x}", std::process::id()));
            match DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        };
        let script = dir.join("script");
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&script)?;
            file.write_all(content.as_bytes())?;
            if let Some(account) = &self.inner.settings.run_as {
                std::os::unix::fs::chown(&dir, Some(account.uid), Some(account.gid))?;
                std::os::unix::fs::chown(&script, Some(account.uid), Some(account.gid))?;
            }
            Ok(())
        })();
        match written {
            Ok(()) => Ok((dir, script)),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }
}

impl Permit {
    /// The request this permit admits.
    pub fn request(&self) -> &RunRequest {
        &self.request
    }

    /// Runs the script to its end (or its timeout) and reports how it went. Never panics on a
    /// failure to start: that is a `failed` result with the reason on stderr.
    pub fn run(self) -> RunResult {
        let started_at = SystemTime::now();
        let clock = Instant::now();
        let outcome = self.spawn_and_wait();
        let finished_at = SystemTime::now();
        let duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status, exit_code, signal, stdout, stderr) = match outcome {
            Ok(outcome) => {
                let status = if outcome.timed_out {
                    RunStatus::TimedOut
                } else if outcome.exit_code == Some(0) {
                    RunStatus::Succeeded
                } else {
                    RunStatus::Failed
                };
                (
                    status,
                    outcome.exit_code,
                    outcome.signal,
                    outcome.stdout,
                    outcome.stderr,
                )
            }
            Err(e) => (
                RunStatus::Failed,
                None,
                None,
                Captured::default(),
                Captured {
                    bytes: format!("medic-agent: could not start the script: {e}").into_bytes(),
                    truncated: false,
                },
            ),
        };
        RunResult {
            run_id: self.request.run_id.clone(),
            status,
            exit_code,
            signal,
            stdout: String::from_utf8_lossy(&stdout.bytes).into_owned(),
            stderr: String::from_utf8_lossy(&stderr.bytes).into_owned(),
            stdout_truncated: stdout.truncated,
            stderr_truncated: stderr.truncated,
            started_at: Timestamp::from_system_time(started_at),
            finished_at: Timestamp::from_system_time(finished_at),
            duration_ms,
        }
    }

    fn spawn_and_wait(&self) -> io::Result<Outcome> {
        let (dir, script) = self.executor.write_script(&self.request.content)?;
        let result = self.run_in(&dir, &script);
        // Off the result's path (removing the directory costs about as much as starting a
        // shell); whatever a crash leaves is swept when the next process starts.
        let cleanup = dir.clone();
        if thread::Builder::new()
            .name("medic-run-cleanup".to_owned())
            .spawn(move || std::fs::remove_dir_all(cleanup))
            .is_err()
        {
            let _ = std::fs::remove_dir_all(&dir);
        }
        result
    }

    fn run_in(&self, dir: &Path, script: &Path) -> io::Result<Outcome> {
        let settings = &self.executor.inner.settings;
        let mut command = Command::new(&self.interpreter);
        command
            .arg(script)
            .env_clear()
            .envs(self.executor.script_env(&self.request))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(account) = &settings.run_as {
            command.uid(account.uid).gid(account.gid);
        }
        let mut child = command.spawn()?;
        let pid = Pid::from_child(&child);
        apply_limits(pid, settings.limits, self.request.timeout_seconds);

        let cap = usize::try_from(self.output_cap).unwrap_or(usize::MAX);
        let timeout = Duration::from_secs(u64::from(self.request.timeout_seconds));
        let pipes = [
            child.stdout.take().map(OwnedFd::from),
            child.stderr.take().map(OwnedFd::from),
        ];
        let deadline = Instant::now() + timeout;
        let collected = collect(pid, pipes, cap, deadline, exit_notifier(pid));
        // The script is over: whatever it left running in its group goes with it.
        kill_group(pid);
        let status = reap(&mut child)?;
        let (timed_out, [stdout, stderr]) = collected?;
        Ok(Outcome {
            timed_out,
            exit_code: status.code(),
            signal: status.signal(),
            stdout,
            stderr,
        })
    }
}

/// How often the exit is looked for where no pidfd can wake the loop at once (old kernels,
/// macOS), while an output pipe stays open or after both have closed.
const EXIT_CHECK: Duration = Duration::from_millis(5);

/// Reads both pipes of the script `pid` on this one thread (woken by `exit_fd` when it exits,
/// if there is one) until it has exited and both pipes are closed, keeping the first `cap`
/// bytes of each (and reading the rest to keep the script from blocking on a full pipe). At `deadline` the group is killed (`true`: timed out).
/// Once the script has exited, its group is killed and open pipes (held by a process that left
/// the group) are read for at most [`OUTPUT_GRACE`] more. The process is not reaped.
fn collect(
    pid: Pid,
    mut pipes: [Option<OwnedFd>; 2],
    cap: usize,
    deadline: Instant,
    exit_fd: Option<OwnedFd>,
) -> io::Result<(bool, [Captured; 2])> {
    let mut captured = [Captured::default(), Captured::default()];
    let mut buf = [0u8; 8192];
    let mut timed_out = false;
    let mut grace_until: Option<Instant> = None;
    loop {
        if grace_until.is_none() && has_exited(pid)? {
            kill_group(pid);
            grace_until = Some(Instant::now() + OUTPUT_GRACE);
        }
        if grace_until.is_some() && pipes.iter().all(Option::is_none) {
            break;
        }
        let now = Instant::now();
        let until = grace_until.unwrap_or(deadline);
        if now >= until {
            if grace_until.is_some() {
                break;
            }
            timed_out = true;
            kill_group(pid);
            wait_without_reaping(pid)?;
            continue;
        }
        let mut wait = until - now;
        let watch_exit = grace_until.is_none() && exit_fd.is_some();
        if grace_until.is_none() && exit_fd.is_none() {
            wait = wait.min(EXIT_CHECK);
        }
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(3);
        let mut slots = Vec::with_capacity(2);
        for (slot, pipe) in pipes.iter().enumerate() {
            if let Some(fd) = pipe {
                fds.push(PollFd::new(fd, PollFlags::IN));
                slots.push(slot);
            }
        }
        if watch_exit && let Some(fd) = &exit_fd {
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        let timeout = Timespec::try_from(wait).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<usize> = slots
            .iter()
            .zip(&fds)
            .filter(|(_, fd)| !fd.revents().is_empty())
            .map(|(slot, _)| *slot)
            .collect();
        drop(fds);
        for slot in ready {
            let Some(fd) = &pipes[slot] else { continue };
            match rustix::io::read(fd, &mut buf) {
                Ok(0) => pipes[slot] = None,
                Ok(n) => {
                    let kept = &mut captured[slot];
                    let room = cap.saturating_sub(kept.bytes.len());
                    kept.bytes.extend_from_slice(&buf[..n.min(room)]);
                    if n > room {
                        kept.truncated = true;
                    }
                }
                Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
                Err(_) => pipes[slot] = None,
            }
        }
    }
    Ok((timed_out, captured))
}

/// A descriptor that becomes readable when `pid` exits (Linux 5.3+), if the system has one.
#[cfg(target_os = "linux")]
fn exit_notifier(pid: Pid) -> Option<OwnedFd> {
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
}

#[cfg(not(target_os = "linux"))]
fn exit_notifier(_pid: Pid) -> Option<OwnedFd> {
    None
}

/// Whether `pid` has exited (without reaping it).
fn has_exited(pid: Pid) -> io::Result<bool> {
    loop {
        match rustix::process::waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
        ) {
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
            Ok(status) => return Ok(status.is_some()),
        }
    }
}

fn reap(child: &mut Child) -> io::Result<std::process::ExitStatus> {
    loop {
        match child.wait() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

fn wait_without_reaping(pid: Pid) -> io::Result<()> {
    loop {
        match rustix::process::waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
            Ok(_) => return Ok(()),
        }
    }
}

fn kill_group(pid: Pid) {
    // ESRCH (nobody left) is the common, expected answer.
    let _ = rustix::process::kill_process_group(pid, Signal::KILL);
}

#[cfg(target_os = "linux")]
fn apply_limits(pid: Pid, limits: ResourceLimits, timeout_seconds: u32) {
    use rustix::process::{Resource, Rlimit, prlimit};
    // CPU time can never usefully exceed the wall-clock timeout; the limit backs it up for
    // processes that escape the group.
    let cpu = limits
        .cpu_seconds
        .unwrap_or(u64::from(timeout_seconds))
        .min(u64::from(timeout_seconds).saturating_add(1));
    let _ = prlimit(
        Some(pid),
        Resource::Cpu,
        Rlimit {
            current: Some(cpu),
            maximum: Some(cpu.saturating_add(1)),
        },
    );
    if let Some(bytes) = limits.memory_bytes {
        let _ = prlimit(
            Some(pid),
            Resource::As,
            Rlimit {
                current: Some(bytes),
                maximum: Some(bytes),
            },
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn apply_limits(_pid: Pid, _limits: ResourceLimits, _timeout_seconds: u32) {
    // macOS has no prlimit; the timeout and the process-group kill still apply.
}

struct Outcome {
    timed_out: bool,
    exit_code: Option<i32>,
    signal: Option<i32>,
    stdout: Captured,
    stderr: Captured,
}

/// The start of one output stream, and whether there was more.
#[derive(Debug, Default, Clone)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

/// SHA-256 of `bytes` as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest.iter() {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loop without a pidfd (macOS, Linux before 5.3): it finds the exit by looking.
    #[test]
    fn output_and_exit_are_collected_without_an_exit_notifier() {
        for (script, out, code, timed_out) in [
            ("echo hi; echo err >&2; exit 2", "hi\n", Some(2), false),
            (
                "echo early; exec >/dev/null 2>&1; sleep 0.2; exit 4",
                "early\n",
                Some(4),
                false,
            ),
            ("echo slow; sleep 30", "slow\n", None, true),
        ] {
            let mut child = Command::new("/bin/sh")
                .args(["-c", script])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .spawn()
                .unwrap();
            let pid = Pid::from_child(&child);
            let pipes = [
                child.stdout.take().map(OwnedFd::from),
                child.stderr.take().map(OwnedFd::from),
            ];
            let deadline = Instant::now() + Duration::from_secs(1);
            let (late, [stdout, _]) = collect(pid, pipes, 100, deadline, None).unwrap();
            kill_group(pid);
            let status = reap(&mut child).unwrap();
            assert_eq!(String::from_utf8_lossy(&stdout.bytes), out, "{script}");
            assert_eq!(status.code(), code, "{script}");
            assert_eq!(late, timed_out, "{script}");
        }
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
        medic:x:998:997::/var/lib/medic-agent:/usr/sbin/nologin\n\
        broken:x:notanumber:1::/:/bin/sh\n";

    #[test]
    fn passwd_lookup() {
        let medic = RunAs::from_passwd("medic", PASSWD).unwrap();
        assert_eq!((medic.uid, medic.gid), (998, 997));
        assert_eq!(medic.home, PathBuf::from("/var/lib/medic-agent"));
        assert_eq!(RunAs::from_passwd("med", PASSWD), None);
        assert_eq!(RunAs::from_passwd("broken", PASSWD), None);
    }

    #[test]
    fn who_scripts_run_as() {
        assert!(
            RunAs::resolve(None, 0, PASSWD)
                .unwrap_err()
                .contains("root")
        );
        assert!(RunAs::resolve(Some("root"), 0, PASSWD).is_err());
        assert!(RunAs::resolve(Some("ghost"), 0, PASSWD).is_err());
        assert_eq!(
            RunAs::resolve(Some("medic"), 0, PASSWD)
                .unwrap()
                .unwrap()
                .uid,
            998
        );
        assert_eq!(RunAs::resolve(None, 998, PASSWD), Ok(None));
        assert_eq!(RunAs::resolve(Some("medic"), 998, PASSWD), Ok(None));
        assert!(RunAs::resolve(Some("nobody"), 998, PASSWD).is_err());
    }

    #[test]
    fn recent_runs_forget_the_oldest() {
        let mut recent = RecentRuns {
            order: VecDeque::new(),
            ids: HashSet::new(),
            capacity: 2,
        };
        for id in ["a", "b", "a", "c"] {
            recent.insert(RunId::new(id));
        }
        assert!(!recent.contains(&RunId::new("a")));
        assert!(recent.contains(&RunId::new("b")));
        assert!(recent.contains(&RunId::new("c")));
    }

    #[test]
    fn sha256_of_foo() {
        assert_eq!(
            sha256_hex(b"foo"),
            "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
        );
    }
}
