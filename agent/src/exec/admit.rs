//! Admission: the checks a run request must pass, in order, before anything runs
//! ([`Executor::admit`]), and the local [`Allowlist`] they consult.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::SystemTime;

use medic_protocol::{Interpreter, RunId, RunRequest, RunResult, RunSkipped, SkipReason};
use sha2::{Digest, Sha256};

use super::{ExecSettings, Executor, Permit};

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

/// The scripts this host allows: name → optional pinned SHA-256 (64 lowercase hex digits) and,
/// with it, the pinned interpreter: the same text under another interpreter is another program.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    entries: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Entry {
    sha256: Option<String>,
    interpreter: Option<Interpreter>,
}

impl Allowlist {
    /// Allows `script`, pinned to `sha256` when given.
    pub fn insert(&mut self, script: String, sha256: Option<String>) {
        self.entries.insert(
            script,
            Entry {
                sha256,
                interpreter: None,
            },
        );
    }

    /// Allows `script` only with this exact content and interpreter.
    pub fn insert_pinned(&mut self, script: String, sha256: String, interpreter: Interpreter) {
        self.entries.insert(
            script,
            Entry {
                sha256: Some(sha256),
                interpreter: Some(interpreter),
            },
        );
    }

    /// Whether `script` is allowed.
    pub fn contains(&self, script: &str) -> bool {
        self.entries.contains_key(script)
    }

    /// `None` when `script` is not allowed; `Some(pin)` when it is.
    pub fn pin(&self, script: &str) -> Option<Option<&str>> {
        self.entries.get(script).map(|e| e.sha256.as_deref())
    }

    /// The interpreter `script` is pinned to, if any.
    pub fn interpreter(&self, script: &str) -> Option<Interpreter> {
        self.entries.get(script).and_then(|e| e.interpreter)
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
        let mut allowlist = Self::default();
        for (name, pin) in iter {
            allowlist.insert(name.into(), pin.map(Into::into));
        }
        allowlist
    }
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
pub(super) struct RecentRuns {
    pub(super) order: VecDeque<RunId>,
    pub(super) ids: HashSet<RunId>,
    pub(super) capacity: usize,
}

impl RecentRuns {
    pub(super) fn contains(&self, id: &RunId) -> bool {
        self.ids.contains(id)
    }

    pub(super) fn insert(&mut self, id: RunId) {
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

impl Executor {
    /// Applies every check to `request` at time `now`. On success the run id is recorded (it
    /// will never be admitted again) and a concurrency slot is taken.
    pub fn admit(&self, request: &RunRequest, now: SystemTime) -> Result<Permit, Refusal> {
        let settings = self.settings();
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
        let Some(pin) = settings.allowlist.pin(&request.script) else {
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
        if let Some(pinned) = settings.allowlist.interpreter(&request.script)
            && pinned != request.interpreter
        {
            return Err(Refusal::new(
                SkipReason::HashMismatch,
                format!(
                    "the request runs it with {}, the local allowlist pins the interpreter {}",
                    request.interpreter.as_str(),
                    pinned.as_str()
                ),
            ));
        }
        let interpreter = find_interpreter(&settings, request.interpreter).ok_or_else(|| {
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
        if state.running.len() >= settings.max_concurrent_runs {
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

        let local_cap = settings.output_cap_bytes;
        Ok(Permit {
            executor: self.clone(),
            settings,
            request: request.clone(),
            interpreter,
            output_cap: request.output_cap_bytes.unwrap_or(local_cap).min(local_cap),
        })
    }

    /// Admits and runs `request`, blocking until it ends.
    pub fn execute(&self, request: &RunRequest, now: SystemTime) -> Result<RunResult, Refusal> {
        Ok(self.admit(request, now)?.run())
    }

    /// Admits and runs `request`, blocking until it ends or `stop` fires
    /// ([`Permit::run_until`]).
    pub fn execute_until(
        &self,
        request: &RunRequest,
        now: SystemTime,
        stop: super::Stop,
    ) -> Result<RunResult, Refusal> {
        Ok(self.admit(request, now)?.run_until(Some(stop)))
    }
}

fn find_interpreter(settings: &ExecSettings, interpreter: Interpreter) -> Option<PathBuf> {
    settings
        .interpreter_dirs
        .iter()
        .map(|dir| dir.join(interpreter.as_str()))
        .find(|path| path.is_file())
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
