//! Process handling: the script written to a private directory, the interpreter started in
//! its own process group with the cleared environment, limits applied, output collected with
//! one `poll`, the timeout and the group kill.

use std::fs::DirBuilder;
#[cfg(not(target_os = "linux"))]
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
#[cfg(not(target_os = "linux"))]
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use medic_protocol::{RunRequest, RunResult, RunStatus, Timestamp};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

use super::{ExecSettings, Executor, Permit, ResourceLimits};

/// How long to wait for the output pipes to close after the script's process group is gone.
/// Only a process that left the group (with `setsid`) can hold them open longer.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// What a run needs before its interpreter starts.
struct Prepared {
    /// The run's private directory, removed when the run is over.
    dir: Option<PathBuf>,
    /// The working directory.
    cwd: PathBuf,
    /// The checked text.
    script: Script,
}

enum Script {
    /// A sealed memfd (Linux): nothing can change it, and the interpreter reads it through its
    /// own copy of the descriptor.
    #[cfg(target_os = "linux")]
    Sealed(OwnedFd),
    /// A private file in the run directory (elsewhere).
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    File(PathBuf),
}

impl Executor {
    /// Creates a fresh private directory (mode 0700) under the work directory.
    fn run_dir(&self, settings: &ExecSettings) -> io::Result<PathBuf> {
        loop {
            let n = self.inner.next_dir.fetch_add(1, Ordering::Relaxed);
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let dir = settings
                .work_dir
                .join(format!("run-{}-{n}-{nanos:08x}", std::process::id()));
            match DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// On Linux the script goes into a sealed memfd. A script that runs as the agent's own user
    /// works in a private run directory; one that runs as `run_as` works in that account's home
    /// directory (or `/`), since the agent may not be able to give it a directory.
    #[cfg(target_os = "linux")]
    fn prepare(&self, settings: &ExecSettings, content: &str) -> io::Result<Prepared> {
        let script = Script::Sealed(sealed(content)?);
        match &settings.run_as {
            Some(account) => Ok(Prepared {
                dir: None,
                cwd: if account.home.is_dir() {
                    account.home.clone()
                } else {
                    PathBuf::from("/")
                },
                script,
            }),
            None => {
                let dir = self.run_dir(settings)?;
                Ok(Prepared {
                    cwd: dir.clone(),
                    dir: Some(dir),
                    script,
                })
            }
        }
    }

    /// Elsewhere the script is written to `script` in a private run directory (the file with
    /// `O_EXCL`, mode 0600), both given to `run_as` when switching (the agent is root then).
    #[cfg(not(target_os = "linux"))]
    fn prepare(&self, settings: &ExecSettings, content: &str) -> io::Result<Prepared> {
        let dir = self.run_dir(settings)?;
        let script = dir.join("script");
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&script)?;
            file.write_all(content.as_bytes())?;
            if let Some(account) = &settings.run_as {
                std::os::unix::fs::chown(&dir, Some(account.uid), Some(account.gid))?;
                std::os::unix::fs::chown(&script, Some(account.uid), Some(account.gid))?;
            }
            Ok(())
        })();
        match written {
            Ok(()) => Ok(Prepared {
                cwd: dir.clone(),
                dir: Some(dir),
                script: Script::File(script),
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }
}

/// `content` in a memfd sealed against every write, resize and further seal change: from here
/// on no process, whatever its user, can change the text that was checked.
#[cfg(target_os = "linux")]
fn sealed(content: &str) -> io::Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags, fcntl_add_seals, memfd_create};
    let fd = memfd_create(
        "medic-script",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(content.as_bytes())?;
    let fd = OwnedFd::from(file);
    fcntl_add_seals(
        &fd,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )?;
    Ok(fd)
}

/// Starts `command` with the sealed script as `/proc/self/fd/<n>`, its only argument.
///
/// Every descriptor the agent opens is close-on-exec; the one copy made here is not, so the
/// interpreter inherits it. The lock keeps a script started at the same moment on another
/// thread from inheriting it too.
#[cfg(target_os = "linux")]
fn spawn_sealed(command: &mut Command, script: &OwnedFd) -> io::Result<Child> {
    use std::os::fd::AsRawFd;
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _spawning = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let inherited = rustix::io::dup(script)?;
    command.arg(format!("/proc/self/fd/{}", inherited.as_raw_fd()));
    command.spawn()
}

impl Permit {
    /// The request this permit admits.
    pub fn request(&self) -> &RunRequest {
        &self.request
    }

    /// Runs the script to its end (or its timeout) and reports how it went. Never panics on a
    /// failure to start: that is a `failed` result with the reason on stderr.
    pub fn run(self) -> RunResult {
        self.run_until(None)
    }

    /// [`Permit::run`], and when `stop`'s [`Stopper`] is dropped first, the script's whole
    /// process group is killed then, as at its timeout (the result is `failed`, signal 9).
    pub fn run_until(self, stop: Option<Stop>) -> RunResult {
        let started_at = SystemTime::now();
        let clock = Instant::now();
        let outcome = self.spawn_and_wait(stop.as_ref().map(|s| &s.0));
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

    fn spawn_and_wait(&self, stop: Option<&OwnedFd>) -> io::Result<Outcome> {
        let prepared = self
            .executor
            .prepare(&self.settings, &self.request.content)?;
        let result = self.run_in(&prepared, stop);
        drop(prepared.script);
        if let Some(dir) = prepared.dir {
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
        }
        result
    }

    fn run_in(&self, prepared: &Prepared, stop: Option<&OwnedFd>) -> io::Result<Outcome> {
        let settings = &*self.settings;
        let mut command = Command::new(&self.interpreter);
        command
            .env_clear()
            .envs(self.executor.script_env(settings, &self.request))
            .current_dir(&prepared.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(account) = &settings.run_as {
            command.uid(account.uid).gid(account.gid);
        }
        let mut child = match &prepared.script {
            #[cfg(target_os = "linux")]
            Script::Sealed(fd) => spawn_sealed(&mut command, fd)?,
            Script::File(path) => command.arg(path).spawn()?,
        };
        let pid = Pid::from_child(&child);
        apply_limits(pid, settings.limits, self.request.timeout_seconds);

        let cap = usize::try_from(self.output_cap).unwrap_or(usize::MAX);
        let timeout = Duration::from_secs(u64::from(self.request.timeout_seconds));
        let pipes = [
            child.stdout.take().map(OwnedFd::from),
            child.stderr.take().map(OwnedFd::from),
        ];
        let deadline = Instant::now() + timeout;
        let watched = Watched {
            exit: exit_notifier(pid),
            stop,
        };
        let collected = collect(pid, pipes, cap, deadline, &watched);
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

/// A way to stop one run from another thread: made with [`stopper`]; the [`Stop`] end goes to
/// [`Permit::run_until`], and dropping the [`Stopper`] kills the run's process group.
#[derive(Debug)]
pub struct Stopper(#[allow(dead_code)] OwnedFd);

/// The end of a [`stopper`] a run watches.
#[derive(Debug)]
pub struct Stop(OwnedFd);

/// A [`Stopper`] and the [`Stop`] it triggers (the two ends of a pipe: the run's `poll` sees
/// the write end close).
///
/// # Errors
/// The pipe cannot be made (out of descriptors).
pub fn stopper() -> io::Result<(Stopper, Stop)> {
    let (read, write) = io::pipe()?;
    Ok((Stopper(write.into()), Stop(read.into())))
}

/// What [`collect`] watches besides the pipes: the exit, where the system can tell it (a
/// pidfd), and a [`Stop`].
struct Watched<'a> {
    exit: Option<OwnedFd>,
    stop: Option<&'a OwnedFd>,
}

/// How often the exit is looked for where no pidfd can wake the loop at once (old kernels,
/// macOS), while an output pipe stays open or after both have closed.
const EXIT_CHECK: Duration = Duration::from_millis(5);

/// Reads both pipes of the script `pid` on this one thread (woken by `watched.exit` when it
/// exits, if there is one) until it has exited and both pipes are closed, keeping the first
/// `cap` bytes of each (and reading the rest to keep the script from blocking on a full pipe).
/// At `deadline` the group is killed (`true`: timed out); so it is when `watched.stop` fires.
/// Once the script has exited, its group is killed and open pipes (held by a process that left
/// the group) are read for at most [`OUTPUT_GRACE`] more. The process is not reaped.
fn collect(
    pid: Pid,
    mut pipes: [Option<OwnedFd>; 2],
    cap: usize,
    deadline: Instant,
    watched: &Watched<'_>,
) -> io::Result<(bool, [Captured; 2])> {
    let exit_fd = &watched.exit;
    let mut captured = [Captured::default(), Captured::default()];
    let mut buf = [0u8; 8192];
    let mut timed_out = false;
    let mut stopped = false;
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
        if watch_exit && let Some(fd) = exit_fd {
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        let watch_stop = grace_until.is_none() && !stopped && !timed_out;
        let stop_at = fds.len();
        if watch_stop && let Some(fd) = watched.stop {
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
        let stop_fired = fds.get(stop_at).is_some_and(|fd| !fd.revents().is_empty())
            && watch_stop
            && watched.stop.is_some();
        drop(fds);
        if stop_fired {
            stopped = true;
            kill_group(pid);
            wait_without_reaping(pid)?;
            continue;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `sh -c script` in a process group of its own, its output piped.
    fn spawn_sh(script: &str) -> (Child, Pid) {
        let child = Command::new("/bin/sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = Pid::from_child(&child);
        (child, pid)
    }

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
            let (mut child, pid) = spawn_sh(script);
            let pipes = [
                child.stdout.take().map(OwnedFd::from),
                child.stderr.take().map(OwnedFd::from),
            ];
            let deadline = Instant::now() + Duration::from_secs(1);
            let watched = Watched {
                exit: None,
                stop: None,
            };
            let (late, [stdout, _]) = collect(pid, pipes, 100, deadline, &watched).unwrap();
            kill_group(pid);
            let status = reap(&mut child).unwrap();
            assert_eq!(String::from_utf8_lossy(&stdout.bytes), out, "{script}");
            assert_eq!(status.code(), code, "{script}");
            assert_eq!(late, timed_out, "{script}");
        }
    }

    #[test]
    fn a_dropped_stopper_kills_the_whole_group_before_the_timeout() {
        // The script and a child of its own, both far past the deadline unless stopped.
        let (mut child, pid) = spawn_sh("echo started; sleep 600 & wait");
        let mut stdout = child.stdout.take().map(OwnedFd::from);
        let stderr = child.stderr.take().map(OwnedFd::from);
        // Stopped once the script has started.
        let mut first = [0u8; 8];
        let n = rustix::io::read(stdout.as_ref().unwrap(), &mut first).unwrap();
        assert_eq!(&first[..n], b"started\n");
        let (stopper, stop) = stopper().unwrap();
        let dropper = thread::spawn(move || drop(stopper));
        let watched = Watched {
            exit: exit_notifier(pid),
            stop: Some(&stop.0),
        };
        let deadline = Instant::now() + Duration::from_secs(3600);
        let (late, _) = collect(pid, [stdout.take(), stderr], 100, deadline, &watched).unwrap();
        dropper.join().unwrap();
        let status = reap(&mut child).unwrap();
        assert!(!late);
        assert_eq!(status.signal(), Some(9));
    }
}
