//! The command line, parsed by hand (see the crate documentation for why).
//!
//! ```text
//! medic-agent [--config PATH] [--<setting> VALUE ...] <run | check-config | version>
//! ```
//!
//! Every [`Setting`] except the credential has a flag named after its file key
//! (`server_url` → `--server-url`); `--flag=value` and `--flag value` both work.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use crate::config::Setting;

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Load and check the configuration; exit 0, or print every problem and exit 64.
    CheckConfig,
    /// Connect to the server and serve until SIGTERM or SIGINT.
    Run,
    /// Print the version.
    Version,
    /// Print the usage.
    Help,
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    /// The subcommand.
    pub command: Command,
    /// `--config`, if given.
    pub config: Option<PathBuf>,
    /// Settings given as flags.
    pub flags: BTreeMap<Setting, String>,
}

/// A command line that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The usage text.
pub fn usage() -> String {
    let mut text = String::from(
        "usage: medic-agent [--config PATH] [OPTIONS] <COMMAND>\n\n\
         commands:\n  \
         run           connect to the server and serve until SIGTERM\n  \
         check-config  check the configuration; exit 64 listing every problem\n  \
         version       print the version\n\n\
         options (each also MEDIC_AGENT_<KEY> or a key in the config file):\n  \
         --config PATH  the config file (env MEDIC_AGENT_CONFIG; default /etc/medic-agent/agent.toml)\n",
    );
    for setting in Setting::ALL {
        if let Some(flag) = setting.flag() {
            let value = if setting.is_switch() { "" } else { " VALUE" };
            text.push_str(&format!("  {flag}{value}\n"));
        }
    }
    text
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Cli, UsageError> {
    let mut args = args.into_iter();
    let mut command = None;
    let mut config = None;
    let mut flags = BTreeMap::new();
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| UsageError(format!("argument {a:?} is not UTF-8")))?;
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, UsageError> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args
                    .next()
                    .and_then(|v| v.into_string().ok())
                    .ok_or_else(|| UsageError(format!("{what} needs a value"))),
            }
        };
        match name.as_str() {
            "-h" | "--help" => command = Some(Command::Help),
            "-V" | "--version" => command = Some(Command::Version),
            "--config" | "-c" => config = Some(PathBuf::from(value("--config")?)),
            "run" | "check-config" | "version" | "help" if command.is_none() => {
                command = Some(match name.as_str() {
                    "run" => Command::Run,
                    "check-config" => Command::CheckConfig,
                    "version" => Command::Version,
                    _ => Command::Help,
                });
            }
            flag if flag.starts_with("--") => {
                let setting = Setting::from_flag(flag).ok_or_else(|| {
                    if flag == "--credential" {
                        UsageError(
                            "there is no --credential flag (command lines are visible to all \
                             users); use credential_file or MEDIC_AGENT_CREDENTIAL"
                                .to_owned(),
                        )
                    } else {
                        UsageError(format!("unknown option {flag}"))
                    }
                })?;
                let v = if setting.is_switch() {
                    inline.clone().unwrap_or_else(|| "true".to_owned())
                } else {
                    value(flag)?
                };
                flags.insert(setting, v);
            }
            other => return Err(UsageError(format!("unexpected argument {other:?}"))),
        }
    }
    let command = command
        .ok_or_else(|| UsageError("missing command (run, check-config or version)".to_owned()))?;
    Ok(Cli {
        command,
        config,
        flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Cli, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn flags_in_both_forms() {
        let cli = parse_strs(&[
            "--config",
            "/x.toml",
            "--agent-id=web-1",
            "--server-url",
            "wss://m",
            "--allow-insecure-ws",
            "check-config",
        ])
        .unwrap();
        assert_eq!(cli.command, Command::CheckConfig);
        assert_eq!(cli.config, Some(PathBuf::from("/x.toml")));
        assert_eq!(cli.flags[&Setting::AgentId], "web-1");
        assert_eq!(cli.flags[&Setting::ServerUrl], "wss://m");
        assert_eq!(cli.flags[&Setting::AllowInsecureWs], "true");
    }

    #[test]
    fn mistakes_are_usage_errors() {
        assert!(parse_strs(&[]).unwrap_err().0.contains("missing command"));
        assert!(
            parse_strs(&["--nope", "version"])
                .unwrap_err()
                .0
                .contains("--nope")
        );
        assert!(
            parse_strs(&["--credential", "k", "version"])
                .unwrap_err()
                .0
                .contains("visible")
        );
        assert!(
            parse_strs(&["check-config", "--work-dir"])
                .unwrap_err()
                .0
                .contains("needs a value")
        );
        assert_eq!(parse_strs(&["run"]).unwrap().command, Command::Run);
        assert!(
            parse_strs(&["run", "version"])
                .unwrap_err()
                .0
                .contains("unexpected")
        );
        assert_eq!(
            parse_strs(&["--version"]).unwrap().command,
            Command::Version
        );
    }
}
