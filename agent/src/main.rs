//! `medic-agent`: reads the configuration sources and runs a subcommand.
//!
//! Exit codes: 0 on success, 64 (`EX_USAGE`) for a bad command line or configuration, so
//! `ExecStartPre=medic-agent check-config` stops a unit before it starts with a broken file.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::process::ExitCode;

use medic_agent::cli::{self, Command};
use medic_agent::config::{self, Config, Sources};
use medic_agent::exec::RunAs;

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
        Command::CheckConfig => check_config(&cli),
    }
}

/// Loads the configuration and checks everything a start would need; prints every problem.
fn check_config(cli: &cli::Cli) -> ExitCode {
    let env: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let (path, explicit) = config::config_path(cli.config.as_deref(), &env);
    let mut problems = Vec::new();
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
            let euid = rustix::process::geteuid().as_raw();
            let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            if let Err(e) = RunAs::resolve(config.run_as.as_deref(), euid, &passwd) {
                problems.push(e);
            }
            if problems.is_empty() {
                println!(
                    "{}: configuration OK (agent {}, server {}, {} allowed script(s))",
                    path.display(),
                    config.agent_id,
                    config.server_url.as_str(),
                    config.allowlist.len()
                );
                return ExitCode::SUCCESS;
            }
        }
        Err(found) => problems.extend(found.0),
    }
    eprintln!("medic-agent: {} configuration problem(s):", problems.len());
    for problem in &problems {
        eprintln!("  - {problem}");
    }
    ExitCode::from(EXIT_USAGE)
}

/// The host name as the kernel reports it.
fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}
