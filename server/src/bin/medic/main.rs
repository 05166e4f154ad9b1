//! `medic`: the operator CLI of the Medic server.
//!
//! Every command is one or a few calls to the v2 API. Answers are read into the API's own
//! response types (`medic_server::http::…`), printed as tables by default, or as the API's JSON
//! objects with `-o json` / `-o yaml`. Exit codes: 0 ok, 1 failure, 2 usage, 3 not found,
//! 4 authentication or permission, 5 refused by the server.

/// `print!` that ends the process quietly when standard output is closed (`medic … | head`).
macro_rules! out {
    ($($t:tt)*) => { $crate::output::write_out(format_args!($($t)*)) };
}

/// `println!` that ends the process quietly when standard output is closed.
macro_rules! outln {
    () => { $crate::output::write_out(format_args!("\n")) };
    ($($t:tt)*) => { $crate::output::write_out(format_args!("{}\n", format_args!($($t)*))) };
}

mod client;
mod commands;
mod config;
mod duration;
mod output;
mod wrap;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use client::Failure;
use output::Format;

/// Medic's operator CLI: services, alerts, scripts, runs, playbooks and more, over the v2 API.
#[derive(Debug, Parser)]
#[command(
    name = "medic",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// The server's base URL, e.g. https://medic.example.com.
    #[arg(long, global = true, env = "MEDIC_URL", value_name = "URL")]
    server: Option<String>,
    /// An API key (`mdk_…`). Prefer `medic login` or the environment to the command line.
    #[arg(long, global = true, env = "MEDIC_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// A profile of the configuration file (default: `default_profile` there, else "default").
    #[arg(long, global = true, env = "MEDIC_PROFILE")]
    profile: Option<String>,
    /// A PEM file of CA certificates to trust besides the built-in roots (a server with a
    /// private CA or a self-signed certificate).
    #[arg(long, global = true, env = "MEDIC_CA_CERT", value_name = "FILE")]
    ca_cert: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Store an API key for a server in the configuration file (the key is not echoed).
    Login(config::LoginArgs),
    /// Registered services.
    #[command(subcommand, visible_alias = "svc")]
    Services(commands::services::Cmd),
    /// Send heartbeats and list a service's heartbeats.
    #[command(subcommand)]
    Heartbeats(commands::services::HeartbeatCmd),
    /// Alerts.
    #[command(subcommand)]
    Alerts(commands::alerts::Cmd),
    /// Maintenance windows.
    #[command(subcommand)]
    Maintenance(commands::ops::MaintenanceCmd),
    /// Teams.
    #[command(subcommand)]
    Teams(commands::ops::TeamCmd),
    /// Notification targets of teams and services.
    #[command(subcommand)]
    Targets(commands::ops::TargetCmd),
    /// API keys (admin).
    #[command(subcommand, name = "api-keys")]
    ApiKeys(commands::ops::KeyCmd),
    /// Host agents.
    #[command(subcommand)]
    Agents(commands::ops::AgentCmd),
    /// Remediation scripts and their approval.
    #[command(subcommand)]
    Scripts(commands::scripts::Cmd),
    /// Script runs on agents.
    #[command(subcommand)]
    Runs(commands::scripts::RunCmd),
    /// The audit log.
    #[command(subcommand)]
    Audit(commands::ops::AuditCmd),
    /// Snapshots of service changes (undo).
    #[command(subcommand)]
    Snapshots(commands::ops::SnapshotCmd),
    /// Remediation playbooks.
    #[command(subcommand)]
    Playbooks(commands::playbooks::Cmd),
    /// Playbook executions.
    #[command(subcommand)]
    Executions(commands::playbooks::ExecCmd),
    /// The server's health.
    Health,
    /// Run a command and report it as a job run of a service (start, then complete or fail).
    Run(wrap::RunArgs),
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into a directory.
    Man {
        /// Write medic.1 and a page per subcommand (medic-agents-label.1, …) into DIR.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = e.exit_code();
            let _ = e.print();
            return ExitCode::from(u8::try_from(code).unwrap_or(2));
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("medic: {f}");
            ExitCode::from(f.code())
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let format = cli.output;
    if let Some(path) = &cli.ca_cert {
        match client::trust_ca_file(path) {
            // A wrapped job runs whatever medic's configuration (docs/cli.md).
            Err(e) if matches!(cli.command, Command::Run(_)) => eprintln!("medic: warning: {e}"),
            r => r?,
        }
    }
    let ctx = || config::Context::resolve(&cli);
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            let mut buf = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "medic", &mut buf);
            out!("{}", String::from_utf8_lossy(&buf));
        }
        Command::Man { dir: Some(dir) } => {
            std::fs::create_dir_all(dir)
                .and_then(|()| clap_mangen::generate_to(Cli::command(), dir))
                .map_err(|e| {
                    Failure::Other(format!(
                        "cannot write the man pages to {}: {e}",
                        dir.display()
                    ))
                })?;
        }
        Command::Man { dir: None } => {
            let man = clap_mangen::Man::new(Cli::command());
            let mut buf = Vec::new();
            man.render(&mut buf)
                .map_err(|e| Failure::Other(format!("cannot write the man page: {e}")))?;
            out!("{}", String::from_utf8_lossy(&buf));
        }
        Command::Login(args) => config::login(&cli, args)?,
        Command::Run(args) => return Ok(wrap::run(ctx(), args)),
        Command::Health => commands::ops::health(&ctx()?.client_any()?, format)?,
        Command::Services(c) => commands::services::run(&ctx()?.client()?, format, c)?,
        Command::Heartbeats(c) => commands::services::heartbeats(&ctx()?.client()?, format, c)?,
        Command::Alerts(c) => commands::alerts::run(&ctx()?.client()?, format, c)?,
        Command::Maintenance(c) => commands::ops::maintenance(&ctx()?.client()?, format, c)?,
        Command::Teams(c) => commands::ops::teams(&ctx()?.client()?, format, c)?,
        Command::Targets(c) => commands::ops::targets(&ctx()?.client()?, format, c)?,
        Command::ApiKeys(c) => commands::ops::keys(&ctx()?.client()?, format, c)?,
        Command::Agents(c) => commands::ops::agents(&ctx()?.client()?, format, c)?,
        Command::Audit(c) => commands::ops::audit(&ctx()?.client()?, format, c)?,
        Command::Snapshots(c) => commands::ops::snapshots(&ctx()?.client()?, format, c)?,
        Command::Scripts(c) => commands::scripts::run(&ctx()?.client()?, format, c)?,
        Command::Runs(c) => commands::scripts::runs(&ctx()?.client()?, format, c)?,
        Command::Playbooks(c) => commands::playbooks::run(&ctx()?.client()?, format, c)?,
        Command::Executions(c) => commands::playbooks::executions(&ctx()?.client()?, format, c)?,
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unknown_flags_are_usage_errors() {
        let e = Cli::try_parse_from(["medic", "services", "list", "--nope"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
