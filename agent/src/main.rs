//! `medic-agent`: reads the configuration sources and runs a subcommand.
//!
//! Exit codes: 0 on success, 64 (`EX_USAGE`) for a bad command line or configuration, so
//! `ExecStartPre=medic-agent check-config` stops a unit before it starts with a broken file.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::ExitCode;

use medic_agent::cli::{self, Command};
use medic_agent::config::{self, Config, Sources};
use medic_agent::exec::{
    ExecSettings, Executor, INTERPRETER_DIRS, RunAs, harden_process, switching_capabilities,
};
use medic_agent::session::{Agent, SessionSettings};
use medic_agent::{log, metrics};
use tokio::signal::unix::{SignalKind, signal};

const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args_os().skip(1)) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("medic-agent: {e}\n\n{}", cli::usage());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match cli.command {
        Command::Help => {
            print!("{}", cli::usage());
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("medic-agent {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::CheckConfig => match load(&cli, true) {
            Ok(loaded) => {
                if loaded.run_as.is_some() && !loaded.can_switch {
                    println!(
                        "note: this process cannot switch to run_as {:?}; `run` needs root or \
                         CAP_SETUID and CAP_SETGID (the packaged systemd unit grants them)",
                        loaded.config.run_as.as_deref().unwrap_or_default()
                    );
                }
                println!(
                    "{}: configuration OK (agent {}, server {}, {} allowed script(s))",
                    loaded.path.display(),
                    loaded.config.agent_id,
                    loaded.config.server_url.as_str(),
                    loaded.config.allowlist.len()
                );
                ExitCode::SUCCESS
            }
            Err(problems) => report(&problems),
        },
        Command::Run => match load(&cli, false) {
            Ok(loaded) => run(&cli, loaded),
            Err(problems) => report(&problems),
        },
    }
}

/// A configuration that passed every check.
struct Loaded {
    path: PathBuf,
    config: Config,
    env: BTreeMap<String, String>,
    run_as: Option<RunAs>,
    /// Whether this process can switch users now (root, or the switching capabilities).
    can_switch: bool,
    /// What `run` logs once the logger is up (an insecure credential file).
    warnings: Vec<String>,
}

/// Loads the configuration and checks everything a start would need; returns every problem.
/// `checking` (check-config) takes the capabilities to switch to `run_as` as given: an
/// administrator runs it as the agent's user without the unit's capabilities.
fn load(cli: &cli::Cli, checking: bool) -> Result<Loaded, Vec<String>> {
    let env: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let (path, explicit) = config::config_path(cli.config.as_deref(), &env);
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let file = match std::fs::read_to_string(&path) {
        Ok(text) => Some((path.clone(), text)),
        Err(e) if e.kind() == ErrorKind::NotFound && !explicit => None,
        Err(e) => {
            problems.push(format!("{}: {e}", path.display()));
            None
        }
    };
    let sources = Sources {
        file,
        env,
        flags: cli.flags.clone(),
        hostname: hostname(),
    };
    match Config::from_sources(&sources) {
        Ok(config) => {
            problems.extend(config.check_files());
            if let Some(exposed) = config.credential_exposure() {
                if checking {
                    problems.push(exposed);
                } else {
                    warnings.push(exposed);
                }
            }
            let euid = rustix::process::geteuid().as_raw();
            let can_switch = euid == 0 || switching_capabilities();
            let assume = checking && config.run_as.is_some();
            let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            let resolved = RunAs::resolve(
                config.run_as.as_deref(),
                euid,
                can_switch || assume,
                &passwd,
            );
            let run_as = match resolved {
                Ok(run_as) => run_as,
                Err(e) => {
                    problems.push(e);
                    None
                }
            };
            if problems.is_empty() {
                return Ok(Loaded {
                    path,
                    config,
                    env: sources.env,
                    run_as,
                    can_switch,
                    warnings,
                });
            }
        }
        Err(found) => problems.extend(found.0),
    }
    Err(problems)
}

/// Prints every configuration problem; exit 64.
fn report(problems: &[String]) -> ExitCode {
    eprintln!("medic-agent: {} configuration problem(s):", problems.len());
    for problem in problems {
        eprintln!("  - {problem}");
    }
    ExitCode::from(EXIT_USAGE)
}

/// Builds the executor and the session and serves until SIGTERM or SIGINT; SIGHUP reloads.
fn run(cli: &cli::Cli, loaded: Loaded) -> ExitCode {
    // First, before any thread starts: threads inherit what this changes.
    if let Err(e) = harden_process() {
        eprintln!("medic-agent: cannot harden the process: {e}");
        return ExitCode::FAILURE;
    }
    let Loaded {
        config,
        env,
        run_as,
        warnings,
        ..
    } = loaded;
    // The logger next, so that everything after this is in the log.
    if let Err(e) = log::init(config.log_file.as_deref(), config.log_keep_files) {
        return report(&[e]);
    }
    for warning in warnings {
        tracing::warn!(problem = %warning, "insecure credential file");
    }
    let settings = match SessionSettings::from_config(&config, hostname()) {
        Ok(settings) => settings,
        Err(e) => return report(&[e]),
    };
    let exec = exec_settings(&config, run_as);
    let journal = config.work_dir.join("recent-run-ids");
    let executor = match Executor::new(exec, env).and_then(|e| e.with_journal(&journal)) {
        Ok(executor) => executor,
        Err(e) => return report(&[format!("work_dir {}: {e}", config.work_dir.display())]),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("medic-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        agent_id = config.agent_id.as_str(),
        server = config.server_url.as_str(),
        version = env!("CARGO_PKG_VERSION"),
        "starting"
    );
    let metrics_listen = config.metrics_listen;
    runtime.block_on(async move {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        if let Some(addr) = metrics_listen {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => {
                    tracing::info!(listen = %addr, "serving metrics");
                    tokio::spawn(metrics::serve(listener, stopped.clone()));
                }
                Err(e) => {
                    tracing::warn!(listen = %addr, error = %e, "cannot serve metrics");
                    return ExitCode::FAILURE;
                }
            }
        }
        // Registered before anything else can take time: SIGHUP's default would end the agent.
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => hangup,
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGHUP");
                return ExitCode::FAILURE;
            }
        };
        let (updates, updated) = tokio::sync::watch::channel(settings.clone());
        let agent = Agent::new(settings.clone(), executor.clone()).with_updates(updated);
        let agent = tokio::spawn(agent.run(stopped));
        let mut running = (config, settings);
        let terminated = termination_signal();
        tokio::pin!(terminated);
        loop {
            tokio::select! {
                () = &mut terminated => break,
                Some(()) = hangup.recv() => {
                    if let Some(next) = reload(cli, &running, &executor, &updates) {
                        running = next;
                    }
                }
            }
        }
        tracing::info!("stopping");
        let _ = stop.send(true);
        let _ = agent.await;
        ExitCode::SUCCESS
    })
}

/// The executor's settings for `config`.
fn exec_settings(config: &Config, run_as: Option<RunAs>) -> ExecSettings {
    ExecSettings {
        agent_id: config.agent_id.clone(),
        allowlist: config.allowlist.clone(),
        work_dir: config.work_dir.clone(),
        output_cap_bytes: config.output_cap_bytes,
        max_concurrent_runs: config.max_concurrent_runs,
        pass_env: config.pass_env.clone(),
        limits: config.limits,
        run_as,
        interpreter_dirs: INTERPRETER_DIRS.iter().map(PathBuf::from).collect(),
    }
}

/// SIGHUP: reads the configuration again with every `check-config` check. A configuration with
/// problems is refused (logged) and the running one kept. Otherwise the executor takes the new
/// allowlist, limits, caps, `pass_env` and `run_as` for every run admitted from now on, and if
/// anything the session uses changed (server, credential, TLS files, id, labels, heartbeat),
/// the agent reconnects with it. `work_dir` and `metrics_listen` need a restart.
fn reload(
    cli: &cli::Cli,
    (config, session): &(Config, SessionSettings),
    executor: &Executor,
    updates: &tokio::sync::watch::Sender<SessionSettings>,
) -> Option<(Config, SessionSettings)> {
    let refused = |problems: &[String]| {
        tracing::warn!(
            problems = %problems.join("; "),
            "reload refused; the running configuration is kept"
        );
    };
    let loaded = match load(cli, false) {
        Ok(loaded) => loaded,
        Err(problems) => {
            refused(&problems);
            return None;
        }
    };
    let next = match SessionSettings::from_config(&loaded.config, hostname()) {
        Ok(next) => next,
        Err(e) => {
            refused(&[e]);
            return None;
        }
    };
    if let Some(ignored) = executor.reload(exec_settings(&loaded.config, loaded.run_as)) {
        tracing::warn!(ignored = %ignored, "reload");
    }
    if loaded.config.metrics_listen != config.metrics_listen {
        tracing::warn!(
            ignored = "metrics_listen takes effect at the next start",
            "reload"
        );
    }
    let reconnect = next.endpoint != session.endpoint
        || next.credential != session.credential
        || next.agent_id != session.agent_id
        || next.labels != session.labels
        || next.heartbeat_interval != session.heartbeat_interval
        || next.host_facts_interval != session.host_facts_interval
        || loaded.config.ca_file != config.ca_file
        || loaded.config.client_identity != config.client_identity;
    if reconnect {
        let _ = updates.send(next.clone());
    }
    for warning in &loaded.warnings {
        tracing::warn!(problem = %warning, "insecure credential file");
    }
    if loaded.config.log_file != config.log_file
        || loaded.config.log_keep_files != config.log_keep_files
    {
        tracing::warn!(
            ignored = "log_file and log_keep_files take effect at the next start",
            "reload"
        );
    }
    tracing::info!(
        allowed_scripts = loaded.config.allowlist.len(),
        reconnect,
        "configuration reloaded"
    );
    Some((loaded.config, next))
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn termination_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The host name as the kernel reports it.
fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}
