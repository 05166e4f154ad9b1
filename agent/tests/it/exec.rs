//! The executor against real interpreters.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use medic_agent::exec::{
    Allowlist, ExecSettings, Executor, INTERPRETER_DIRS, Refusal, ResourceLimits, RunAs, sha256_hex,
};
use medic_protocol::{
    AgentId, Interpreter, RunId, RunRequest, RunResult, RunStatus, SkipReason, Timestamp,
};

use crate::{TempDir, is_root};

/// A work directory, an executor over it, and a marker path scripts must never create.
struct Host {
    dir: TempDir,
    executor: Executor,
}

struct Options {
    allowlist: Allowlist,
    parent_env: BTreeMap<String, String>,
    pass_env: Vec<String>,
    output_cap_bytes: u64,
    max_concurrent_runs: usize,
    limits: ResourceLimits,
    run_as: Option<RunAs>,
    interpreter_dirs: Option<Vec<PathBuf>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            allowlist: [("job", None::<&str>)].into_iter().collect(),
            parent_env: env(&[("PATH", "/usr/bin:/bin"), ("LANG", "C.UTF-8")]),
            pass_env: Vec::new(),
            output_cap_bytes: 64 * 1024,
            max_concurrent_runs: 4,
            limits: ResourceLimits::default(),
            run_as: None,
            interpreter_dirs: None,
        }
    }
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Host {
    fn new(options: Options) -> Self {
        let dir = TempDir::create();
        let settings = ExecSettings {
            agent_id: AgentId::new("test-agent"),
            allowlist: options.allowlist,
            work_dir: dir.path().join("work"),
            output_cap_bytes: options.output_cap_bytes,
            max_concurrent_runs: options.max_concurrent_runs,
            pass_env: options.pass_env,
            limits: options.limits,
            run_as: options.run_as,
            interpreter_dirs: options
                .interpreter_dirs
                .unwrap_or_else(|| INTERPRETER_DIRS.iter().map(PathBuf::from).collect()),
        };
        let executor = Executor::new(settings, options.parent_env).unwrap();
        Self { dir, executor }
    }

    fn marker(&self) -> PathBuf {
        self.dir.path().join("pwned")
    }

    #[track_caller]
    fn run(&self, request: &RunRequest) -> RunResult {
        match self.executor.execute(request, SystemTime::now()) {
            Ok(result) => result,
            Err(refusal) => panic!("refused: {refusal:?}"),
        }
    }

    #[track_caller]
    fn refuse(&self, request: &RunRequest, reason: SkipReason) -> Refusal {
        match self.executor.execute(request, SystemTime::now()) {
            Ok(result) => panic!("ran, expected {reason:?}: {result:?}"),
            Err(refusal) => {
                assert_eq!(refusal.reason, reason, "{refusal:?}");
                refusal
            }
        }
    }

    /// Whether the work directory is (or, within 5 s, becomes) empty: a run's directory is
    /// removed in the background once its result is ready.
    fn work_dir_is_empty(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let empty = std::fs::read_dir(self.dir.path().join("work"))
                .unwrap()
                .next()
                .is_none();
            if empty || Instant::now() > deadline {
                return empty;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn request(run_id: &str, content: &str) -> RunRequest {
    RunRequest {
        run_id: RunId::new(run_id),
        script: "job".to_owned(),
        version: 1,
        interpreter: Interpreter::Sh,
        content: content.to_owned(),
        sha256: sha256_hex(content.as_bytes()),
        approved: true,
        parameters: BTreeMap::new(),
        timeout_seconds: 10,
        output_cap_bytes: None,
        stream_output: false,
        expires_at: None,
    }
}

#[test]
fn runs_sh_and_bash_scripts_and_reports_exit_codes() {
    let host = Host::new(Options::default());
    let result = host.run(&request("r1", "echo hello\necho oops >&2\nexit 3\n"));
    assert_eq!(result.run_id, RunId::new("r1"));
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(result.exit_code, Some(3));
    assert_eq!(result.signal, None);
    assert_eq!(result.stdout, "hello\n");
    assert_eq!(result.stderr, "oops\n");
    assert!(!result.stdout_truncated && !result.stderr_truncated);
    assert!(result.finished_at.unix_millis() >= result.started_at.unix_millis());

    let mut bash = request(
        "r2",
        "set -eu\narr=(a b)\necho \"${arr[1]} $MEDIC_RUN_ID $MEDIC_SCRIPT $MEDIC_AGENT_ID\"\n",
    );
    bash.interpreter = Interpreter::Bash;
    let result = host.run(&bash);
    assert_eq!(result.status, RunStatus::Succeeded, "{result:?}");
    assert_eq!(result.exit_code, Some(0));
    assert_eq!(result.stdout, "b r2 job test-agent\n");
    assert!(host.work_dir_is_empty(), "the run directory is removed");
}

#[test]
fn the_script_is_sealed_and_argv_is_exact() {
    let host = Host::new(Options::default());
    // `$0` is the script (argv[1] of the interpreter); nothing else is on the command line. On
    // Linux it is a sealed memfd the interpreter reads through its own descriptor; elsewhere a
    // private file.
    let (script, expected) = if cfg!(target_os = "linux") {
        (
            "echo \"$0\" | sed 's#[0-9]*$#N#'\nreadlink \"$0\"\necho \"$#\"\n",
            "/proc/self/fd/N\n/memfd:medic-script (deleted)\n0\n",
        )
    } else {
        (
            "stat -f '%Lp' \"$0\" \"$(dirname \"$0\")\"\necho \"$#\"\n",
            "600\n700\n0\n",
        )
    };
    let result = host.run(&request("r1", script));
    assert_eq!(result.stdout, expected, "{result:?}");
}

/// A shell reads its script as it goes: text appended to the script while it runs would run.
/// The script handed to the interpreter cannot be changed, not even by the script itself.
#[test]
fn a_script_cannot_change_its_own_text_once_checked() {
    let host = Host::new(Options::default());
    let result = host.run(&request(
        "r1",
        "printf 'echo PWNED\\n' >>\"$0\" 2>/dev/null\necho checked\n",
    ));
    assert_eq!(result.stdout, "checked\n", "{result:?}");
}

/// Another process of the scripts' user rewrites every script file it can find under the work
/// directory, as fast as it can, while a pinned script runs again and again: only the checked
/// text ever runs.
#[test]
fn another_process_cannot_rewrite_a_checked_script() {
    let content = "echo checked\n";
    let host = Host::new(Options {
        allowlist: [("job", Some(sha256_hex(content.as_bytes()).as_str()))]
            .into_iter()
            .collect(),
        ..Options::default()
    });
    let work = host.dir.path().join("work");
    let mut attacker = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(
            "while :; do for f in \"$1\"/run-*/script; do \
             [ -f \"$f\" ] && printf 'echo PWNED\\n' >\"$f\" 2>/dev/null; done; done",
        )
        .arg("attacker")
        .arg(&work)
        .spawn()
        .unwrap();
    let outputs: Vec<String> = (0..40)
        .map(|i| host.run(&request(&format!("r{i}"), content)).stdout)
        .collect();
    attacker.kill().unwrap();
    attacker.wait().unwrap();
    for out in outputs {
        assert_eq!(out, "checked\n");
    }
}

/// The local pin covers the interpreter too: the same text under another interpreter is a
/// different program.
#[test]
fn the_pin_covers_the_interpreter() {
    let content = "echo pinned\n";
    let mut allowlist = Allowlist::default();
    allowlist.insert_pinned(
        "job".to_owned(),
        sha256_hex(content.as_bytes()),
        Interpreter::Sh,
    );
    let host = Host::new(Options {
        allowlist,
        ..Options::default()
    });
    let mut r = request("r1", content);
    r.interpreter = Interpreter::Bash;
    let refusal = host.refuse(&r, SkipReason::HashMismatch);
    assert!(refusal.detail.contains("interpreter"), "{refusal:?}");
    assert_eq!(host.run(&request("r2", content)).stdout, "pinned\n");
}

#[test]
fn each_failed_check_refuses_with_its_reason_and_runs_nothing() {
    let mut allowlist: Allowlist = [("job", None::<&str>), ("pinned", Some(&"0".repeat(64)))]
        .into_iter()
        .collect();
    // Even an allowlist entry cannot make a path-like name runnable.
    allowlist.insert("../x".to_owned(), None);
    allowlist.insert("a/b".to_owned(), None);
    let host = Host::new(Options {
        allowlist,
        ..Options::default()
    });
    let touch = format!("touch '{}'\n", host.marker().display());

    let mut r = request("r1", &touch);
    r.script = "other".to_owned();
    let refusal = host.refuse(&r, SkipReason::NotInAllowlist);
    assert!(refusal.detail.contains("allowlist"));
    let skipped = refusal.to_skipped(&r);
    assert_eq!(
        (skipped.run_id, skipped.script),
        (RunId::new("r1"), "other".to_owned())
    );

    let mut r = request("r2", &touch);
    r.approved = false;
    host.refuse(&r, SkipReason::NotApproved);

    let mut r = request("r3", &touch);
    r.sha256 = sha256_hex(b"something else");
    host.refuse(&r, SkipReason::HashMismatch);

    let mut r = request("r4", &touch);
    r.script = "pinned".to_owned();
    let refusal = host.refuse(&r, SkipReason::HashMismatch);
    assert!(refusal.detail.contains("pins"), "{refusal:?}");

    for (i, name) in ["../x", "a/b", ".", "..", "-rf", ""]
        .into_iter()
        .enumerate()
    {
        let mut r = request(&format!("name{i}"), &touch);
        r.script = name.to_owned();
        host.refuse(&r, SkipReason::InvalidName);
    }

    for (i, name) in [
        "PATH",
        "LD_PRELOAD",
        "BASH_ENV",
        "MEDIC_RUN_ID",
        "PYTHONPATH",
        "IFS",
        "lower",
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = request(&format!("param{i}"), &touch);
        r.parameters.insert(name.to_owned(), "x".to_owned());
        host.refuse(&r, SkipReason::InvalidParameters);
    }

    let mut r = request("r5", &touch);
    r.expires_at = Some(Timestamp::from_unix_millis(1_000));
    host.refuse(&r, SkipReason::Expired);

    let mut r = request("r6", &touch);
    r.timeout_seconds = 0;
    host.refuse(&r, SkipReason::InvalidRequest);

    assert!(!host.marker().exists(), "a refused script ran");
    assert!(host.work_dir_is_empty());
    assert_eq!(host.executor.running(), 0);

    // A refusal does not burn the run id: the corrected request runs.
    let result = host.run(&request("r2", "true\n"));
    assert_eq!(result.status, RunStatus::Succeeded);
}

#[test]
fn a_missing_interpreter_is_unsupported() {
    let empty = TempDir::create();
    let host = Host::new(Options {
        interpreter_dirs: Some(vec![empty.path().to_owned()]),
        ..Options::default()
    });
    host.refuse(&request("r1", "true\n"), SkipReason::UnsupportedInterpreter);
}

#[test]
fn shell_metacharacters_in_parameters_reach_the_script_verbatim() {
    let host = Host::new(Options::default());
    let marker = host.marker();
    let values = [
        "$(touch /tmp/pwned); rm -rf /".to_owned(),
        format!(
            "$(touch {0}); `touch {0}`; touch {0} && echo \"'\\n",
            marker.display()
        ),
        format!("a\nb; touch {} #", marker.display()),
    ];
    for (i, value) in values.iter().enumerate() {
        for interpreter in [Interpreter::Sh, Interpreter::Bash] {
            let mut r = request(
                &format!("r{i}-{}", interpreter.as_str()),
                "printf '%s' \"$MEDIC_PARAM_TARGET\"\n",
            );
            r.interpreter = interpreter;
            r.parameters.insert("TARGET".to_owned(), value.clone());
            let result = host.run(&r);
            assert_eq!(result.status, RunStatus::Succeeded, "{result:?}");
            assert_eq!(result.stdout.as_bytes(), value.as_bytes());
        }
    }
    assert!(!marker.exists(), "a parameter was executed");
}

#[test]
fn the_agents_environment_does_not_reach_scripts() {
    let host = Host::new(Options {
        parent_env: env(&[
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/root"),
            ("TZ", "UTC"),
            ("LANG", "C.UTF-8"),
            ("AWS_SECRET_ACCESS_KEY", "aws-secret-value"),
            ("DATABASE_URL", "postgres://u:db-secret-value@h/db"),
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("HTTP_PROXY", "http://proxy:3128"),
        ]),
        pass_env: vec!["HTTP_PROXY".to_owned()],
        ..Options::default()
    });
    let mut r = request("r1", "env\n");
    r.parameters
        .insert("SERVICE".to_owned(), "nginx".to_owned());
    let result = host.run(&r);
    let names: Vec<&str> = result
        .stdout
        .lines()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .collect();
    for secret in ["AWS_SECRET_ACCESS_KEY", "DATABASE_URL", "LD_PRELOAD"] {
        assert!(
            !names.contains(&secret),
            "{secret} leaked: {}",
            result.stdout
        );
    }
    assert!(!result.stdout.contains("secret-value"), "{}", result.stdout);
    // The test process's own environment (cargo sets CARGO_* for tests) is not inherited either.
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    assert!(
        !names.iter().any(|n| n.starts_with("CARGO")),
        "{}",
        result.stdout
    );
    for expected in [
        "PATH=/usr/bin:/bin",
        "HOME=/root",
        "TZ=UTC",
        "LANG=C.UTF-8",
        "HTTP_PROXY=http://proxy:3128",
        "MEDIC_RUN_ID=r1",
        "MEDIC_SCRIPT=job",
        "MEDIC_AGENT_ID=test-agent",
        "MEDIC_PARAM_SERVICE=nginx",
    ] {
        assert!(
            result.stdout.lines().any(|l| l == expected),
            "no {expected}: {}",
            result.stdout
        );
    }
    // Whatever else is there was added by the shell itself.
    for name in names {
        assert!(
            name.starts_with("MEDIC_")
                || [
                    "PATH",
                    "HOME",
                    "TZ",
                    "LANG",
                    "HTTP_PROXY",
                    "PWD",
                    "SHLVL",
                    "_",
                    "OLDPWD"
                ]
                .contains(&name),
            "unexpected variable {name}"
        );
    }
}

/// Whether process `pid` is gone (or a zombie waiting for a reaper, which runs nothing).
fn is_dead(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        }
    } else {
        !std::process::Command::new("kill")
            .args(["-0", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    }
}

#[track_caller]
fn assert_dies(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !is_dead(pid) {
        assert!(Instant::now() < deadline, "process {pid} is still alive");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let host = Host::new(Options::default());
    let mut r = request("r1", "sleep 100 &\necho $!\nsleep 100\n");
    r.timeout_seconds = 1;
    let clock = Instant::now();
    let result = host.run(&r);
    assert!(
        clock.elapsed() < Duration::from_secs(5),
        "{:?}",
        clock.elapsed()
    );
    assert_eq!(result.status, RunStatus::TimedOut, "{result:?}");
    assert_eq!(result.exit_code, None);
    assert_eq!(result.signal, Some(9));
    assert!(result.duration_ms >= 1000, "{result:?}");
    let grandchild: u32 = result.stdout.trim().parse().unwrap();
    assert_dies(grandchild);
    assert!(host.work_dir_is_empty());
}

#[test]
fn processes_left_behind_die_with_the_script() {
    let host = Host::new(Options::default());
    let clock = Instant::now();
    let result = host.run(&request("r1", "sleep 100 &\necho $!\n"));
    assert!(
        clock.elapsed() < Duration::from_secs(5),
        "{:?}",
        clock.elapsed()
    );
    assert_eq!(result.status, RunStatus::Succeeded, "{result:?}");
    assert_dies(result.stdout.trim().parse().unwrap());
}

/// A process that leaves the script's group (`setsid`) and keeps its output open does not hold
/// the run: the result comes once the script has exited and a short grace has passed, with what
/// was written until then.
#[test]
fn a_process_that_escapes_the_group_does_not_hold_the_run() {
    let host = Host::new(Options::default());
    let script = "setsid sh -c 'echo \"$$\" >&2; exec sleep 30' &\nsleep 0.3\necho done\n";
    let mut r = request("r1", script);
    r.timeout_seconds = 60;
    let clock = Instant::now();
    let result = host.run(&r);
    let took = clock.elapsed();
    let escaped: u32 = result.stderr.trim().parse().expect("the escaped pid");
    let _ = std::process::Command::new("kill")
        .args(["-9", &escaped.to_string()])
        .status();
    assert!(
        took < Duration::from_secs(20),
        "waited for the escaped process: {took:?}"
    );
    assert_eq!(result.status, RunStatus::Succeeded, "{result:?}");
    assert_eq!(result.stdout, "done\n");
}

/// A script that closes its output early is still waited for, and its exit status is kept.
#[test]
fn a_script_that_closes_its_output_is_waited_for() {
    let host = Host::new(Options::default());
    let result = host.run(&request(
        "r1",
        "echo early\nexec >/dev/null 2>&1\nsleep 0.5\nexit 3\n",
    ));
    assert_eq!(result.status, RunStatus::Failed, "{result:?}");
    assert_eq!(result.exit_code, Some(3));
    assert_eq!(result.stdout, "early\n");
    assert!(result.duration_ms >= 500, "{result:?}");
}

#[test]
fn output_is_capped_per_stream_and_the_script_never_blocks() {
    let host = Host::new(Options {
        output_cap_bytes: 1000,
        ..Options::default()
    });
    // 1 MiB on stdout is far beyond a pipe buffer: the script only finishes if the agent keeps
    // reading past the cap.
    let script = "head -c 1048576 /dev/zero | tr '\\0' x\necho short >&2\n";
    let mut r = request("r1", script);
    r.output_cap_bytes = Some(10);
    let result = host.run(&r);
    assert_eq!(result.status, RunStatus::Succeeded, "{result:?}");
    assert_eq!(result.stdout, "xxxxxxxxxx");
    assert!(result.stdout_truncated);
    assert_eq!(result.stderr, "short\n");
    assert!(!result.stderr_truncated);

    // A request cannot raise the local cap.
    let mut r = request("r2", script);
    r.output_cap_bytes = Some(100_000);
    let result = host.run(&r);
    assert_eq!(result.stdout.len(), 1000);
    assert!(result.stdout_truncated);
}

#[test]
fn a_run_id_never_runs_twice() {
    let host = Host::new(Options::default());
    let counter = host.dir.path().join("count");
    let r = request("r1", &format!("echo x >> '{}'\n", counter.display()));
    host.run(&r);
    let refusal = host.refuse(&r, SkipReason::Duplicate);
    assert!(refusal.detail.contains("already ran"), "{refusal:?}");
    assert_eq!(std::fs::read_to_string(&counter).unwrap(), "x\n");

    // While it runs, a redelivery is a duplicate too.
    let permit = host
        .executor
        .admit(&request("r2", "true\n"), SystemTime::now())
        .unwrap();
    assert!(host.executor.is_running(&RunId::new("r2")));
    let refusal = host.refuse(&request("r2", "true\n"), SkipReason::Duplicate);
    assert!(refusal.detail.contains("running"), "{refusal:?}");
    assert_eq!(permit.run().status, RunStatus::Succeeded);
    assert!(!host.executor.is_running(&RunId::new("r2")));
    host.refuse(&request("r2", "true\n"), SkipReason::Duplicate);
}

#[test]
fn admitted_run_ids_survive_a_restart_through_the_journal() {
    let host = Host::new(Options::default());
    let journal = host.dir.path().join("recent-run-ids");
    let executor = host.executor.clone().with_journal(&journal).unwrap();
    let counter = host.dir.path().join("count");
    let r = request("r1", &format!("echo x >> '{}'\n", counter.display()));
    assert_eq!(
        executor.execute(&r, SystemTime::now()).unwrap().status,
        RunStatus::Succeeded
    );
    assert_eq!(std::fs::read_to_string(&journal).unwrap(), "r1\n");

    // A new executor (the agent restarted) over the same journal refuses the redelivery.
    let restarted = Host::new(Options::default())
        .executor
        .with_journal(&journal)
        .unwrap();
    let refusal = restarted.admit(&r, SystemTime::now()).unwrap_err();
    assert_eq!(refusal.reason, SkipReason::Duplicate);
    assert_eq!(std::fs::read_to_string(&counter).unwrap(), "x\n");
}

#[test]
fn concurrency_is_bounded() {
    let host = Host::new(Options {
        max_concurrent_runs: 2,
        ..Options::default()
    });
    let now = SystemTime::now();
    let a = host.executor.admit(&request("a", "true\n"), now).unwrap();
    let b = host.executor.admit(&request("b", "true\n"), now).unwrap();
    let refusal = host.refuse(&request("c", "true\n"), SkipReason::Busy);
    assert!(refusal.detail.contains('2'), "{refusal:?}");
    assert_eq!(host.executor.running(), 2);

    // Permits move to other threads; a finished run frees its slot.
    let handle = std::thread::spawn(move || a.run());
    assert_eq!(handle.join().unwrap().status, RunStatus::Succeeded);
    drop(b);
    assert_eq!(host.executor.running(), 0);
    host.run(&request("c", "true\n"));
}

#[cfg(target_os = "linux")]
#[test]
fn cpu_and_memory_limits_apply_on_linux() {
    let host = Host::new(Options {
        limits: ResourceLimits {
            cpu_seconds: Some(5),
            memory_bytes: Some(512 * 1024 * 1024),
        },
        ..Options::default()
    });
    // The limits are set right after the process starts; the pause keeps the check after it.
    let result = host.run(&request("r1", "sleep 0.3\nulimit -t\nulimit -v\n"));
    assert_eq!(result.stdout, "5\n524288\n", "{result:?}");

    // Without a configured CPU limit, the timeout bounds CPU time.
    let host = Host::new(Options::default());
    let mut r = request("r2", "sleep 0.3\nulimit -t\n");
    r.timeout_seconds = 7;
    assert_eq!(host.run(&r).stdout, "7\n");
}

#[test]
fn as_root_scripts_run_as_the_configured_user() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let nobody = RunAs::resolve(Some("nobody"), 0, false, &passwd)
        .unwrap()
        .unwrap();
    let uid = nobody.uid;
    let host = Host::new(Options {
        parent_env: env(&[
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/root"),
            ("USER", "root"),
        ]),
        run_as: Some(nobody),
        ..Options::default()
    });
    let result = host.run(&request(
        "r1",
        "id -u\nid -G\necho \"$USER $HOME\"\ncat \"$0\" >/dev/null && echo readable\n",
    ));
    let lines: Vec<&str> = result.stdout.lines().collect();
    assert_eq!(lines[0], uid.to_string(), "{result:?}");
    assert!(
        !lines[1].split(' ').any(|g| g == "0"),
        "kept root's groups: {result:?}"
    );
    assert!(lines[2].starts_with("nobody "), "{result:?}");
    assert_eq!(lines[3], "readable");
}

#[test]
fn a_work_dir_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::create();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let settings = ExecSettings {
        agent_id: AgentId::new("a"),
        allowlist: Allowlist::default(),
        work_dir: dir.path().to_owned(),
        output_cap_bytes: 1,
        max_concurrent_runs: 1,
        pass_env: Vec::new(),
        limits: ResourceLimits::default(),
        run_as: None,
        interpreter_dirs: Vec::new(),
    };
    let err = Executor::new(settings, BTreeMap::new()).unwrap_err();
    assert!(
        err.to_string().contains("writable by group or others"),
        "{err}"
    );
}

#[test]
fn runs_python3_scripts_when_installed() {
    let host = Host::new(Options::default());
    if !INTERPRETER_DIRS
        .iter()
        .any(|dir| std::path::Path::new(dir).join("python3").is_file())
    {
        eprintln!("skipped: no python3 in the trusted directories");
        return;
    }
    let mut r = request(
        "r1",
        "import os, sys\nprint(len(sys.argv), os.environ['MEDIC_PARAM_X'])\nsys.exit(4)\n",
    );
    r.interpreter = Interpreter::Python3;
    r.parameters.insert("X".to_owned(), "$(id)".to_owned());
    let result = host.run(&r);
    assert_eq!(result.stdout, "1 $(id)\n", "{result:?}");
    assert_eq!(result.exit_code, Some(4));
    assert_eq!(result.status, RunStatus::Failed);
}

#[test]
fn run_directories_left_by_an_earlier_process_are_swept_at_start() {
    let dir = TempDir::create();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::create_dir_all(work.join("run-999-0-00000000")).unwrap();
    std::fs::write(work.join("run-999-0-00000000/script"), "true\n").unwrap();
    std::fs::write(work.join("recent-run-ids"), "r1\n").unwrap();
    let settings = ExecSettings {
        agent_id: AgentId::new("test-agent"),
        allowlist: [("job", None::<&str>)].into_iter().collect(),
        work_dir: work.clone(),
        output_cap_bytes: 1024,
        max_concurrent_runs: 1,
        pass_env: Vec::new(),
        limits: ResourceLimits::default(),
        run_as: None,
        interpreter_dirs: INTERPRETER_DIRS.iter().map(PathBuf::from).collect(),
    };
    let _executor = Executor::new(settings, BTreeMap::new()).unwrap();
    assert!(
        !work.join("run-999-0-00000000").exists(),
        "stale run directory kept"
    );
    assert!(
        work.join("recent-run-ids").exists(),
        "other files are not touched"
    );
}
