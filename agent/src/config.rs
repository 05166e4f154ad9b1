//! The agent's configuration: where it comes from, what it may hold, and every way it can be
//! wrong.
//!
//! Three layers, later ones winning: the TOML file (`/etc/medic-agent/agent.toml` unless
//! `--config` or `MEDIC_AGENT_CONFIG` names another), environment variables `MEDIC_AGENT_*`, and
//! command-line flags. Scalars can be set in every layer; the maps and lists (`labels`, `allow`,
//! `pass_env`) only in the file, where they stay reviewable.
//!
//! [`Config::from_sources`] is a pure function of the file text, the environment map, the flags
//! and the host name: it reads nothing and returns **every** problem at once, so
//! `medic-agent check-config` can print them all. Checks that need the file system (is the
//! credential file readable?) live in [`Config::check_files`].
//!
//! The credential is a [`Secret`]: its `Debug` prints `<redacted>` and it has no `Display`, so it
//! cannot reach a log line by accident. There is deliberately no `--credential` flag (a command
//! line is visible to every user in `ps`); use the file, `credential_file` or
//! `MEDIC_AGENT_CREDENTIAL`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use medic_protocol::validate::{
    RESERVED_PARAMETER_NAMES, RESERVED_PARAMETER_PREFIXES, validate_agent_id, validate_label_key,
    validate_label_value, validate_script_name, validate_sha256_hex,
};
use medic_protocol::{
    AgentId, DEFAULT_OUTPUT_CAP_BYTES, Interpreter, MAX_CONCURRENT_RUNS, MAX_LABELS,
    MAX_OUTPUT_BYTES,
};
use serde::Deserialize;

use crate::exec::{Allowlist, ResourceLimits};

/// Where the configuration file is read from unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/medic-agent/agent.toml";

/// Where run directories are created unless told otherwise.
pub const DEFAULT_WORK_DIR: &str = "/var/lib/medic-agent";

/// Seconds between heartbeats unless told otherwise.
pub const DEFAULT_HEARTBEAT_SECONDS: u64 = 20;

/// Scripts run at once unless told otherwise.
pub const DEFAULT_MAX_CONCURRENT_RUNS: usize = 4;

/// Address space a script may map unless told otherwise (`RLIMIT_AS`, Linux only).
pub const DEFAULT_MEMORY_LIMIT_BYTES: u64 = 1024 * 1024 * 1024;

/// Rotated log files kept (today's included) unless told otherwise.
pub const DEFAULT_LOG_KEEP_FILES: u64 = 7;

/// Seconds between host-fact reports unless told otherwise.
pub const DEFAULT_HOST_FACTS_SECONDS: u64 = 300;

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "MEDIC_AGENT_CONFIG";

/// A value that must never be printed: `Debug` shows `<redacted>`, and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends it (the `Authorization` header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The agent's API key, given inline or as a file to read at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// The key itself.
    Inline(Secret),
    /// A file holding the key (surrounding whitespace is ignored).
    File(PathBuf),
}

impl Credential {
    /// The key: the inline value, or the trimmed content of the file.
    pub fn load(&self) -> Result<Secret, String> {
        let (secret, source) = match self {
            Self::Inline(secret) => (secret.clone(), "credential".to_owned()),
            Self::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("credential_file {}: {e}", path.display()))?;
                let key = text.trim();
                if key.is_empty() {
                    return Err(format!("credential_file {} is empty", path.display()));
                }
                (
                    Secret::new(key),
                    format!("credential_file {}", path.display()),
                )
            }
        };
        if !is_api_key(secret.expose()) {
            return Err(format!(
                "{source} does not hold a Medic API key (mdk_<12 hex digits>_<64 hex digits>, \
                 as `POST /v2/api-keys` prints it)"
            ));
        }
        Ok(secret)
    }
}

/// Whether `key` has the shape of a Medic API key: `mdk_`, 12 lowercase hex digits (the key's
/// id), `_`, 64 lowercase hex digits (the secret).
pub fn is_api_key(key: &str) -> bool {
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    key.strip_prefix("mdk_")
        .and_then(|rest| rest.split_once('_'))
        .is_some_and(|(id, secret)| hex(id, 12) && hex(secret, 64))
}

/// A client certificate and its private key, both PEM files, for mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// The server to dial: a `wss://` (or, when allowed, `ws://`) URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    url: String,
}

impl ServerUrl {
    /// The URL as configured.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// Whether the connection is encrypted (`wss://`).
    pub fn is_tls(&self) -> bool {
        self.url.starts_with("wss://")
    }

    fn parse(url: &str, allow_insecure: bool) -> Result<Self, String> {
        let rest = if let Some(rest) = url.strip_prefix("wss://") {
            rest
        } else if let Some(rest) = url.strip_prefix("ws://") {
            if !allow_insecure {
                return Err(format!(
                    "server_url {url:?} is not encrypted; use wss:// or set allow_insecure_ws = true"
                ));
            }
            rest
        } else {
            return Err(format!("server_url {url:?} must start with wss://"));
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.is_empty() || authority.contains('@') {
            return Err(format!(
                "server_url {url:?} must name a host (and no user information)"
            ));
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "server_url {url:?} contains whitespace or control characters"
            ));
        }
        Ok(Self {
            url: url.to_owned(),
        })
    }
}

/// The whole, validated configuration of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The server to dial.
    pub server_url: ServerUrl,
    /// The API key with the agent scope.
    pub credential: Credential,
    /// A PEM bundle of CAs to trust instead of the built-in Mozilla roots (`webpki-roots`).
    pub ca_file: Option<PathBuf>,
    /// A client certificate for mutual TLS.
    pub client_identity: Option<ClientIdentity>,
    /// The agent's id (the host name unless configured).
    pub agent_id: AgentId,
    /// Labels announced in the hello.
    pub labels: BTreeMap<String, String>,
    /// Time between heartbeats.
    pub heartbeat_interval: Duration,
    /// The scripts this host allows, with optional pinned hashes.
    pub allowlist: Allowlist,
    /// The account scripts run as when the agent runs as root.
    pub run_as: Option<String>,
    /// Where private run directories are created.
    pub work_dir: PathBuf,
    /// The most output kept per stream of one run; also the default when a request names none.
    pub output_cap_bytes: u64,
    /// The most scripts running at once.
    pub max_concurrent_runs: usize,
    /// Extra variables passed from the agent's environment to scripts.
    pub pass_env: Vec<String>,
    /// CPU and memory limits applied to each script.
    pub limits: ResourceLimits,
    /// Where to serve Prometheus metrics (loopback only), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Where to write the log, rotated daily, instead of standard error.
    pub log_file: Option<PathBuf>,
    /// How many daily log files to keep (today's included).
    pub log_keep_files: usize,
    /// Time between host-fact reports (sent in a heartbeat; also in every hello).
    pub host_facts_interval: Duration,
}

/// The configuration file's shape. Unknown keys are problems, so a typo is not silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server_url: Option<String>,
    allow_insecure_ws: Option<bool>,
    credential: Option<String>,
    credential_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    agent_id: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    heartbeat_interval_seconds: Option<u64>,
    #[serde(default)]
    allow: Vec<AllowEntry>,
    run_as: Option<String>,
    work_dir: Option<PathBuf>,
    output_cap_bytes: Option<u64>,
    max_concurrent_runs: Option<u64>,
    #[serde(default)]
    pass_env: Vec<String>,
    cpu_limit_seconds: Option<u64>,
    memory_limit_bytes: Option<u64>,
    metrics_listen: Option<String>,
    log_file: Option<PathBuf>,
    log_keep_files: Option<u64>,
    host_facts_interval_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowEntry {
    script: String,
    sha256: Option<String>,
    interpreter: Option<Interpreter>,
}

/// A setting that the environment and the command line can override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Setting {
    /// `server_url`.
    ServerUrl,
    /// `allow_insecure_ws`.
    AllowInsecureWs,
    /// `credential` (environment only).
    Credential,
    /// `credential_file`.
    CredentialFile,
    /// `ca_file`.
    CaFile,
    /// `client_cert`.
    ClientCert,
    /// `client_key`.
    ClientKey,
    /// `agent_id`.
    AgentId,
    /// `heartbeat_interval_seconds`.
    HeartbeatInterval,
    /// `run_as`.
    RunAs,
    /// `work_dir`.
    WorkDir,
    /// `output_cap_bytes`.
    OutputCap,
    /// `max_concurrent_runs`.
    MaxConcurrentRuns,
    /// `cpu_limit_seconds`.
    CpuLimit,
    /// `memory_limit_bytes`.
    MemoryLimit,
    /// `metrics_listen`.
    MetricsListen,
    /// `log_file`.
    LogFile,
    /// `log_keep_files`.
    LogKeepFiles,
    /// `host_facts_interval_seconds`.
    HostFactsInterval,
}

impl Setting {
    /// Every setting, in documentation order.
    pub const ALL: [Self; 19] = [
        Self::ServerUrl,
        Self::AllowInsecureWs,
        Self::Credential,
        Self::CredentialFile,
        Self::CaFile,
        Self::ClientCert,
        Self::ClientKey,
        Self::AgentId,
        Self::HeartbeatInterval,
        Self::RunAs,
        Self::WorkDir,
        Self::OutputCap,
        Self::MaxConcurrentRuns,
        Self::CpuLimit,
        Self::MemoryLimit,
        Self::MetricsListen,
        Self::LogFile,
        Self::LogKeepFiles,
        Self::HostFactsInterval,
    ];

    /// The key in the file.
    pub fn key(self) -> &'static str {
        match self {
            Self::ServerUrl => "server_url",
            Self::AllowInsecureWs => "allow_insecure_ws",
            Self::Credential => "credential",
            Self::CredentialFile => "credential_file",
            Self::CaFile => "ca_file",
            Self::ClientCert => "client_cert",
            Self::ClientKey => "client_key",
            Self::AgentId => "agent_id",
            Self::HeartbeatInterval => "heartbeat_interval_seconds",
            Self::RunAs => "run_as",
            Self::WorkDir => "work_dir",
            Self::OutputCap => "output_cap_bytes",
            Self::MaxConcurrentRuns => "max_concurrent_runs",
            Self::CpuLimit => "cpu_limit_seconds",
            Self::MemoryLimit => "memory_limit_bytes",
            Self::MetricsListen => "metrics_listen",
            Self::LogFile => "log_file",
            Self::LogKeepFiles => "log_keep_files",
            Self::HostFactsInterval => "host_facts_interval_seconds",
        }
    }

    /// The environment variable: `MEDIC_AGENT_` and the key in capitals (`agent_id` is
    /// `MEDIC_AGENT_ID`).
    pub fn env_var(self) -> String {
        match self {
            Self::AgentId => "MEDIC_AGENT_ID".to_owned(),
            other => format!("MEDIC_AGENT_{}", other.key().to_ascii_uppercase()),
        }
    }

    /// The command-line flag, if there is one: `--` and the key with dashes. The credential
    /// has none, since command lines are visible to every local user.
    pub fn flag(self) -> Option<String> {
        (self != Self::Credential).then(|| format!("--{}", self.key().replace('_', "-")))
    }

    /// The setting a flag names, if any.
    pub fn from_flag(flag: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.flag().as_deref() == Some(flag))
    }

    /// Whether the flag takes no value (`--allow-insecure-ws` alone means `true`).
    pub fn is_switch(self) -> bool {
        self == Self::AllowInsecureWs
    }
}

/// Everything the configuration is made from. Building one is the only I/O; turning it into a
/// [`Config`] is pure.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The configuration file's path and text; `None` when there is no file.
    pub file: Option<(PathBuf, String)>,
    /// The process environment (only `MEDIC_AGENT_*` entries are read).
    pub env: BTreeMap<String, String>,
    /// Settings given as flags, already split from their names.
    pub flags: BTreeMap<Setting, String>,
    /// The host name, the default agent id.
    pub hostname: String,
}

/// Every problem found in a configuration, in the order found. Each is one line of text for a
/// human; none holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<String>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(problem)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// The layered value of one scalar setting, and where it came from (for messages).
struct Layers<'a> {
    sources: &'a Sources,
    problems: Vec<String>,
}

impl Layers<'_> {
    /// The override from flags or environment, with a description of its origin.
    fn override_of(&self, setting: Setting) -> Option<(String, String)> {
        if let Some(value) = self.sources.flags.get(&setting) {
            let flag = setting.flag().unwrap_or_default();
            return Some((value.clone(), flag));
        }
        let var = setting.env_var();
        self.sources.env.get(&var).map(|v| (v.clone(), var))
    }

    fn string(&self, setting: Setting, file: Option<String>) -> Option<String> {
        self.override_of(setting)
            .map(|(v, _)| v)
            .or(file)
            .filter(|v| !v.is_empty())
    }

    fn path(&self, setting: Setting, file: Option<PathBuf>) -> Option<PathBuf> {
        self.string(setting, file.map(|p| p.to_string_lossy().into_owned()))
            .map(PathBuf::from)
    }

    fn number(&mut self, setting: Setting, file: Option<u64>) -> Option<u64> {
        match self.override_of(setting) {
            Some((text, origin)) => match text.trim().parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    self.problems
                        .push(format!("{origin}: {text:?} is not a whole number"));
                    file
                }
            },
            None => file,
        }
    }

    fn boolean(&mut self, setting: Setting, file: Option<bool>) -> Option<bool> {
        match self.override_of(setting) {
            Some((text, _)) if text.trim().is_empty() => file,
            Some((text, origin)) => match text.trim() {
                "1" | "true" | "yes" | "on" => Some(true),
                "0" | "false" | "no" | "off" => Some(false),
                _ => {
                    self.problems
                        .push(format!("{origin}: {text:?} is not true or false"));
                    file
                }
            },
            None => file,
        }
    }
}

fn in_range(problems: &mut Vec<String>, key: &str, value: u64, min: u64, max: u64) -> Option<u64> {
    if (min..=max).contains(&value) {
        Some(value)
    } else {
        problems.push(format!("{key} = {value} is outside {min}..={max}"));
        None
    }
}

/// Whether `name` has the shape of an environment variable name.
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The keys the file may hold at the top level, and in each `[[allow]]` table.
const FILE_KEYS: [&str; 22] = [
    "server_url",
    "allow_insecure_ws",
    "credential",
    "credential_file",
    "ca_file",
    "client_cert",
    "client_key",
    "agent_id",
    "labels",
    "heartbeat_interval_seconds",
    "allow",
    "run_as",
    "work_dir",
    "output_cap_bytes",
    "max_concurrent_runs",
    "pass_env",
    "cpu_limit_seconds",
    "memory_limit_bytes",
    "metrics_listen",
    "log_file",
    "log_keep_files",
    "host_facts_interval_seconds",
];
const ALLOW_KEYS: [&str; 3] = ["script", "sha256", "interpreter"];

/// At most this many syntax errors are reported from one file (each is skipped to find the next).
const MAX_SYNTAX_ERRORS: usize = 10;

/// Reads the file's text, reporting **every** problem with its line: each syntax error (the
/// line is skipped and the rest read again, so one typo does not hide the others), then every
/// unknown key, then what the rest holds. The flag says whether the file was read whole; when
/// it was not, keys it may have set are unknown, and "not set" would be false.
fn read_file(path: &Path, text: &str, problems: &mut Vec<String>) -> (FileConfig, bool) {
    let line_at =
        |text: &str, offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let mut whole = true;
    let mut syntax_errors = 0;
    let mut current = text.to_owned();
    let mut table: toml::Table = loop {
        match toml::from_str(&current) {
            Ok(table) => break table,
            Err(e) => {
                whole = false;
                syntax_errors += 1;
                let line = e.span().map(|span| line_at(&current, span.start));
                let at = line.map(|n| format!(" (line {n})")).unwrap_or_default();
                problems.push(format!(
                    "{}{at}: {}",
                    path.display(),
                    e.message().trim_end()
                ));
                // Skip the line and read the rest, unless skipping could move keys into
                // another table (a broken header) or nothing more can be learnt.
                let mut lines: Vec<&str> = current.split('\n').collect();
                let Some(index) = line.map(|n| n - 1).filter(|&i| i < lines.len()) else {
                    return (FileConfig::default(), false);
                };
                let skipped = syntax_errors >= MAX_SYNTAX_ERRORS
                    || lines[index].trim_start().starts_with('[')
                    || lines[index].trim().is_empty();
                if skipped {
                    return (FileConfig::default(), false);
                }
                lines[index] = "";
                current = lines.join("\n");
            }
        }
    };
    let mut unknown = |key: &str, within: &str| {
        let line = key_line(text, key)
            .map(|n| format!(" (line {n})"))
            .unwrap_or_default();
        problems.push(format!(
            "{}{line}: unknown key `{key}`{within}",
            path.display()
        ));
    };
    let top: Vec<String> = table
        .keys()
        .filter(|k| !FILE_KEYS.contains(&k.as_str()))
        .cloned()
        .collect();
    for key in top {
        unknown(&key, "");
        table.remove(&key);
    }
    if let Some(toml::Value::Array(entries)) = table.get_mut("allow") {
        for entry in entries {
            if let toml::Value::Table(entry) = entry {
                let keys: Vec<String> = entry
                    .keys()
                    .filter(|k| !ALLOW_KEYS.contains(&k.as_str()))
                    .cloned()
                    .collect();
                for key in keys {
                    unknown(&key, " in [[allow]]");
                    entry.remove(&key);
                }
            }
        }
    }
    match toml::Value::Table(table).try_into::<FileConfig>() {
        Ok(file) => (file, whole),
        Err(e) => {
            problems.push(format!("{}: {}", path.display(), e.message().trim_end()));
            (FileConfig::default(), false)
        }
    }
}

/// The 1-based line where `key` is first set (`key = …` or `"key" = …`), if it can be found.
fn key_line(text: &str, key: &str) -> Option<usize> {
    let quoted = format!("\"{key}\"");
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            line.strip_prefix(key)
                .or_else(|| line.strip_prefix(quoted.as_str()))
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

impl Config {
    /// Builds and checks the configuration from its sources, returning every problem found.
    pub fn from_sources(sources: &Sources) -> Result<Self, Problems> {
        let mut problems = Vec::new();
        // A file that cannot be read whole leaves its keys unknown: "not set" would be false.
        let (file, whole) = match &sources.file {
            None => (FileConfig::default(), true),
            Some((path, text)) => read_file(path, text, &mut problems),
        };
        let file_failed = !whole;
        let mut layers = Layers {
            sources,
            problems: Vec::new(),
        };

        let allow_insecure = layers
            .boolean(Setting::AllowInsecureWs, file.allow_insecure_ws)
            .unwrap_or(false);
        let server_url = match layers.string(Setting::ServerUrl, file.server_url) {
            None if file_failed => None,
            None => {
                problems.push(format!(
                    "server_url is not set (file key server_url, env {}, flag --server-url)",
                    Setting::ServerUrl.env_var()
                ));
                None
            }
            Some(url) => ServerUrl::parse(&url, allow_insecure)
                .map_err(|e| problems.push(e))
                .ok(),
        };

        let inline = layers.string(Setting::Credential, file.credential);
        let credential_file = layers.path(Setting::CredentialFile, file.credential_file);
        let credential = match (inline, credential_file) {
            (Some(_), Some(_)) => {
                problems.push("set either credential or credential_file, not both".to_owned());
                None
            }
            (Some(key), None) => Some(Credential::Inline(Secret::new(key.trim()))),
            (None, Some(path)) => {
                if path.is_relative() {
                    problems.push(format!(
                        "credential_file {} must be an absolute path",
                        path.display()
                    ));
                }
                Some(Credential::File(path))
            }
            (None, None) if file_failed => None,
            (None, None) => {
                problems.push(format!(
                    "no credential: set credential_file (or credential, or env {})",
                    Setting::Credential.env_var()
                ));
                None
            }
        };

        let ca_file = layers.path(Setting::CaFile, file.ca_file);
        let cert = layers.path(Setting::ClientCert, file.client_cert);
        let key = layers.path(Setting::ClientKey, file.client_key);
        let client_identity = match (cert, key) {
            (Some(cert), Some(key)) => Some(ClientIdentity { cert, key }),
            (None, None) => None,
            _ => {
                problems.push("client_cert and client_key must be set together".to_owned());
                None
            }
        };

        let agent_id = layers
            .string(Setting::AgentId, file.agent_id)
            .unwrap_or_else(|| sources.hostname.clone());
        let agent_id = match validate_agent_id(&agent_id) {
            Ok(()) => Some(AgentId::new(agent_id)),
            Err(e) => {
                problems.push(format!("{e} (set agent_id to override the host name)"));
                None
            }
        };

        if file.labels.len() > MAX_LABELS {
            problems.push(format!("labels: more than {MAX_LABELS}"));
        }
        for (key, value) in &file.labels {
            if let Err(e) = validate_label_key(key).and_then(|()| validate_label_value(key, value))
            {
                problems.push(format!("labels: {e}"));
            }
        }

        let heartbeat = layers
            .number(Setting::HeartbeatInterval, file.heartbeat_interval_seconds)
            .unwrap_or(DEFAULT_HEARTBEAT_SECONDS);
        let heartbeat = in_range(
            &mut problems,
            "heartbeat_interval_seconds",
            heartbeat,
            1,
            3600,
        )
        .unwrap_or(DEFAULT_HEARTBEAT_SECONDS);

        let mut allowlist = Allowlist::default();
        for entry in &file.allow {
            let mut ok = true;
            if let Err(e) = validate_script_name(&entry.script) {
                problems.push(format!("allow: {e}"));
                ok = false;
            }
            if let Some(pin) = &entry.sha256
                && validate_sha256_hex(pin).is_err()
            {
                problems.push(format!(
                    "allow: sha256 of {:?} is not 64 lowercase hex digits",
                    entry.script
                ));
                ok = false;
            }
            if allowlist.contains(&entry.script) {
                problems.push(format!("allow: {:?} is listed twice", entry.script));
                ok = false;
            }
            match (&entry.sha256, entry.interpreter) {
                (Some(_), None) => {
                    problems.push(format!(
                        "allow: {:?} pins sha256 but not its interpreter; add interpreter = \
                         \"sh\", \"bash\" or \"python3\" (the pin covers both)",
                        entry.script
                    ));
                    ok = false;
                }
                (None, Some(_)) => {
                    problems.push(format!(
                        "allow: {:?} pins an interpreter without sha256; pin both or neither",
                        entry.script
                    ));
                    ok = false;
                }
                _ => {}
            }
            if ok {
                match (&entry.sha256, entry.interpreter) {
                    (Some(pin), Some(interpreter)) => {
                        allowlist.insert_pinned(entry.script.clone(), pin.clone(), interpreter);
                    }
                    _ => allowlist.insert(entry.script.clone(), None),
                }
            }
        }

        let run_as = layers.string(Setting::RunAs, file.run_as);
        if let Some(user) = &run_as
            && (user.contains([':', '/', '\n']) || user.len() > 32)
        {
            problems.push(format!("run_as {user:?} is not a user name"));
        }

        let work_dir = layers
            .path(Setting::WorkDir, file.work_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_WORK_DIR));
        if work_dir.is_relative() {
            problems.push(format!(
                "work_dir {} must be an absolute path",
                work_dir.display()
            ));
        }

        let cap = layers
            .number(Setting::OutputCap, file.output_cap_bytes)
            .unwrap_or(DEFAULT_OUTPUT_CAP_BYTES);
        let output_cap_bytes =
            in_range(&mut problems, "output_cap_bytes", cap, 1, MAX_OUTPUT_BYTES).unwrap_or(1);

        let max_runs = layers
            .number(Setting::MaxConcurrentRuns, file.max_concurrent_runs)
            .unwrap_or(DEFAULT_MAX_CONCURRENT_RUNS as u64);
        let max_concurrent_runs = in_range(
            &mut problems,
            "max_concurrent_runs",
            max_runs,
            1,
            MAX_CONCURRENT_RUNS as u64,
        )
        .map_or(1, |n| n as usize);

        let mut seen = BTreeSet::new();
        for name in &file.pass_env {
            let upper = name.to_ascii_uppercase();
            let reserved = RESERVED_PARAMETER_NAMES.contains(&upper.as_str())
                || RESERVED_PARAMETER_PREFIXES
                    .iter()
                    .any(|prefix| upper.starts_with(prefix));
            if !is_env_name(name) {
                problems.push(format!("pass_env: {name:?} is not a variable name"));
            } else if reserved || matches!(upper.as_str(), "LANG" | "LC_ALL" | "TZ") {
                problems.push(format!("pass_env: {name:?} is reserved or always passed"));
            } else if !seen.insert(name.as_str()) {
                problems.push(format!("pass_env: {name:?} is listed twice"));
            }
        }

        let cpu = layers.number(Setting::CpuLimit, file.cpu_limit_seconds);
        let memory = layers
            .number(Setting::MemoryLimit, file.memory_limit_bytes)
            .unwrap_or(DEFAULT_MEMORY_LIMIT_BYTES);
        let limits = ResourceLimits {
            cpu_seconds: cpu.filter(|&s| s > 0),
            memory_bytes: (memory > 0).then_some(memory),
        };
        if let Some(memory) = limits.memory_bytes
            && memory < 16 * 1024 * 1024
        {
            problems.push(format!(
                "memory_limit_bytes = {memory} is below 16 MiB; no interpreter starts with that (0 turns the limit off)"
            ));
        }

        let metrics_listen = match layers.string(Setting::MetricsListen, file.metrics_listen) {
            None => None,
            Some(text) => match text.parse::<SocketAddr>() {
                Ok(addr) if addr.ip().is_loopback() => Some(addr),
                Ok(addr) => {
                    problems.push(format!(
                        "metrics_listen {addr} must be a loopback address (127.0.0.1 or [::1])"
                    ));
                    None
                }
                Err(_) => {
                    problems.push(format!(
                        "metrics_listen {text:?} is not an address with a port"
                    ));
                    None
                }
            },
        };

        let log_file = layers.path(Setting::LogFile, file.log_file);
        if let Some(path) = &log_file
            && (path.is_relative() || path.file_name().is_none())
        {
            problems.push(format!(
                "log_file {} must be an absolute path to a file",
                path.display()
            ));
        }
        let keep = layers
            .number(Setting::LogKeepFiles, file.log_keep_files)
            .unwrap_or(DEFAULT_LOG_KEEP_FILES);
        let log_keep_files =
            in_range(&mut problems, "log_keep_files", keep, 1, 366).map_or(1, |n| n as usize);
        let facts = layers
            .number(Setting::HostFactsInterval, file.host_facts_interval_seconds)
            .unwrap_or(DEFAULT_HOST_FACTS_SECONDS);
        let facts = in_range(
            &mut problems,
            "host_facts_interval_seconds",
            facts,
            1,
            86_400,
        )
        .unwrap_or(DEFAULT_HOST_FACTS_SECONDS);

        problems.append(&mut layers.problems);
        match (server_url, credential, agent_id) {
            (Some(server_url), Some(credential), Some(agent_id)) if problems.is_empty() => {
                Ok(Self {
                    server_url,
                    credential,
                    ca_file,
                    client_identity,
                    agent_id,
                    labels: file.labels,
                    heartbeat_interval: Duration::from_secs(heartbeat),
                    allowlist,
                    run_as,
                    work_dir,
                    output_cap_bytes,
                    max_concurrent_runs,
                    pass_env: file.pass_env,
                    limits,
                    metrics_listen,
                    log_file,
                    log_keep_files,
                    host_facts_interval: Duration::from_secs(facts),
                })
            }
            _ => Err(Problems(problems)),
        }
    }

    /// A `credential_file` every user may read: a problem for `check-config` (and so for the
    /// packaged unit, whose `ExecStartPre=` runs it), a warning for `run` started by hand.
    pub fn credential_exposure(&self) -> Option<String> {
        use std::os::unix::fs::PermissionsExt;
        let Credential::File(path) = &self.credential else {
            return None;
        };
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        (mode & 0o004 != 0).then(|| {
            format!(
                "credential_file {} is readable by every user (mode {:o}); \
                 chmod 0640 (owner root, group medic-agent) or 0600",
                path.display(),
                mode & 0o7777
            )
        })
    }

    /// Checks what the file system must provide: the credential, CA and client identity files
    /// are readable, and the work directory, if it exists, is a directory. Returns every
    /// problem.
    pub fn check_files(&self) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        let mut problems = Vec::new();
        if let Err(e) = self.credential.load() {
            problems.push(e);
        }
        let mut readable = |key: &str, path: &Path| {
            if let Err(e) = std::fs::File::open(path) {
                problems.push(format!("{key} {}: {e}", path.display()));
            }
        };
        if let Some(ca) = &self.ca_file {
            readable("ca_file", ca);
        }
        if let Some(identity) = &self.client_identity {
            readable("client_cert", &identity.cert);
            readable("client_key", &identity.key);
        }
        match std::fs::metadata(&self.work_dir) {
            Ok(meta) if !meta.is_dir() => problems.push(format!(
                "work_dir {} is not a directory",
                self.work_dir.display()
            )),
            Ok(meta) if meta.permissions().mode() & 0o022 != 0 => problems.push(format!(
                "work_dir {} is writable by group or others; make it 0700 or 0711",
                self.work_dir.display()
            )),
            Ok(_) => {}
            // The agent creates a missing work directory at start, if it can: it needs to be
            // able to write in the nearest directory that exists.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let existing = self.work_dir.ancestors().skip(1).find(|p| p.exists());
                let creatable = existing.is_some_and(|dir| {
                    dir.is_dir()
                        && rustix::fs::access(
                            dir,
                            rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
                        )
                        .is_ok()
                });
                if !creatable {
                    problems.push(format!(
                        "work_dir {} does not exist and this user cannot create it{}; create it \
                         (mode 0711, owned by the agent's user) or choose another",
                        self.work_dir.display(),
                        existing
                            .map(|dir| format!(" ({} is not writable)", dir.display()))
                            .unwrap_or_default()
                    ));
                }
            }
            Err(e) => problems.push(format!("work_dir {}: {e}", self.work_dir.display())),
        }
        if let Some(dir) = self.log_file.as_deref().and_then(Path::parent) {
            let writable = dir.is_dir()
                && rustix::fs::access(
                    dir,
                    rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
                )
                .is_ok();
            if !writable {
                problems.push(format!(
                    "log_file: the directory {} does not exist or this user cannot write in it; \
                     create it (owned by the agent's user, mode 0750) or choose another",
                    dir.display()
                ));
            }
        }
        problems
    }
}

/// The configuration file to read: `--config`, else `MEDIC_AGENT_CONFIG`, else
/// [`DEFAULT_CONFIG_PATH`]. The second value says whether it was named explicitly (a missing
/// explicit file is an error; a missing default file is not).
pub fn config_path(flag: Option<&Path>, env: &BTreeMap<String, String>) -> (PathBuf, bool) {
    if let Some(path) = flag {
        return (path.to_owned(), true);
    }
    match env.get(CONFIG_ENV).filter(|p| !p.is_empty()) {
        Some(path) => (PathBuf::from(path), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    fn sources(file: &str) -> Sources {
        Sources {
            file: Some((
                PathBuf::from("/etc/medic-agent/agent.toml"),
                file.to_owned(),
            )),
            env: BTreeMap::new(),
            flags: BTreeMap::new(),
            hostname: "web-1.example.com".to_owned(),
        }
    }

    const GOOD: &str = r#"
server_url = "wss://medic.example.com"
credential_file = "/etc/medic-agent/credential"
run_as = "medic-run"

[labels]
env = "prod"

[[allow]]
script = "restart-nginx"
sha256 = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
interpreter = "sh"

[[allow]]
script = "disk-report"
"#;

    #[test]
    fn a_good_file_gives_defaults_for_the_rest() {
        let config = Config::from_sources(&sources(GOOD)).unwrap();
        assert_eq!(config.server_url.as_str(), "wss://medic.example.com");
        assert!(config.server_url.is_tls());
        assert_eq!(config.agent_id.as_str(), "web-1.example.com");
        assert_eq!(config.heartbeat_interval, Duration::from_secs(20));
        assert_eq!(config.work_dir, PathBuf::from(DEFAULT_WORK_DIR));
        assert_eq!(config.max_concurrent_runs, DEFAULT_MAX_CONCURRENT_RUNS);
        assert_eq!(config.output_cap_bytes, 64 * 1024);
        assert_eq!(config.allowlist.pin("restart-nginx"), Some(Some(PIN)));
        assert_eq!(config.allowlist.pin("disk-report"), Some(None));
        assert_eq!(config.allowlist.pin("other"), None);
        assert_eq!(config.labels["env"], "prod");
        assert_eq!(config.limits.memory_bytes, Some(DEFAULT_MEMORY_LIMIT_BYTES));
        assert_eq!(config.metrics_listen, None);
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let mut s = sources(GOOD);
        s.env.insert("MEDIC_AGENT_ID".into(), "from-env".into());
        s.env
            .insert("MEDIC_AGENT_HEARTBEAT_INTERVAL_SECONDS".into(), "5".into());
        s.flags.insert(Setting::AgentId, "from-flag".into());
        let config = Config::from_sources(&s).unwrap();
        assert_eq!(config.agent_id.as_str(), "from-flag");
        assert_eq!(config.heartbeat_interval, Duration::from_secs(5));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let file = r#"
server_url = "ws://medic.example.com"
credential = "k"
credential_file = "/k"
client_cert = "/c.pem"
agent_id = "-bad"
heartbeat_interval_seconds = 0
work_dir = "relative"
output_cap_bytes = 999999999
max_concurrent_runs = 1000
pass_env = ["LD_PRELOAD", "http_proxy", "1X"]
metrics_listen = "0.0.0.0:9464"

[labels]
"bad key!" = "v"

[[allow]]
script = "../etc/passwd"

[[allow]]
script = "ok"
sha256 = "XYZ"
interpreter = "sh"

[[allow]]
script = "half-pinned"
sha256 = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
"#;
        let problems = Config::from_sources(&sources(file)).unwrap_err().0;
        let expect = [
            "not encrypted",
            "either credential or credential_file",
            "client_cert and client_key",
            "agent id",
            "label key",
            "heartbeat_interval_seconds = 0",
            "script name",
            "sha256 of \"ok\"",
            "\"half-pinned\" pins sha256 but not its interpreter",
            "work_dir",
            "output_cap_bytes",
            "max_concurrent_runs",
            "\"LD_PRELOAD\" is reserved",
            "\"1X\" is not a variable name",
            "loopback",
        ];
        for needle in expect {
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "no problem mentions {needle:?}: {problems:#?}"
            );
        }
        assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    }

    #[test]
    fn insecure_ws_needs_the_switch() {
        let file = "server_url = \"ws://localhost:8080\"\ncredential = \"k\"\n";
        assert!(Config::from_sources(&sources(file)).is_err());
        let mut s = sources(file);
        s.env
            .insert("MEDIC_AGENT_ALLOW_INSECURE_WS".into(), String::new());
        assert!(
            Config::from_sources(&s).is_err(),
            "empty is unset, not true"
        );
        s.flags.insert(Setting::AllowInsecureWs, "true".into());
        let config = Config::from_sources(&s).unwrap();
        assert!(!config.server_url.is_tls());
    }

    #[test]
    fn unknown_keys_and_bad_numbers_are_problems() {
        let problems = Config::from_sources(&sources("sever_url = \"wss://x\"\n"))
            .unwrap_err()
            .0;
        assert!(problems[0].contains("sever_url"), "{problems:?}");
        assert!(problems[0].contains("line 1"), "{problems:?}");

        let mut s = sources(GOOD);
        s.env
            .insert("MEDIC_AGENT_MAX_CONCURRENT_RUNS".into(), "many".into());
        let problems = Config::from_sources(&s).unwrap_err().0;
        assert_eq!(
            problems,
            ["MEDIC_AGENT_MAX_CONCURRENT_RUNS: \"many\" is not a whole number"]
        );
    }

    #[test]
    fn missing_essentials_are_named() {
        let problems = Config::from_sources(&Sources {
            hostname: "h".into(),
            ..Sources::default()
        })
        .unwrap_err()
        .0;
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("server_url is not set"));
        assert!(problems[1].contains("no credential"));
    }

    #[test]
    fn the_credential_never_shows_in_debug_output() {
        let mut s = sources(
            GOOD.replace("credential_file = \"/etc/medic-agent/credential\"", "")
                .as_str(),
        );
        s.env
            .insert("MEDIC_AGENT_CREDENTIAL".into(), "mdk_supersecret".into());
        let config = Config::from_sources(&s).unwrap();
        assert_eq!(
            config.credential,
            Credential::Inline(Secret::new("mdk_supersecret"))
        );
        let debug = format!("{config:?}");
        assert!(!debug.contains("supersecret"), "{debug}");
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn config_path_precedence() {
        let mut env = BTreeMap::new();
        assert_eq!(
            config_path(None, &env),
            (PathBuf::from(DEFAULT_CONFIG_PATH), false)
        );
        env.insert(CONFIG_ENV.to_owned(), "/e.toml".to_owned());
        assert_eq!(config_path(None, &env), (PathBuf::from("/e.toml"), true));
        assert_eq!(
            config_path(Some(Path::new("/f.toml")), &env),
            (PathBuf::from("/f.toml"), true)
        );
    }

    #[test]
    fn flags_and_env_names_follow_the_keys() {
        assert_eq!(Setting::ServerUrl.env_var(), "MEDIC_AGENT_SERVER_URL");
        assert_eq!(Setting::ServerUrl.flag().as_deref(), Some("--server-url"));
        assert_eq!(Setting::Credential.flag(), None);
        assert_eq!(
            Setting::from_flag("--metrics-listen"),
            Some(Setting::MetricsListen)
        );
        assert_eq!(Setting::from_flag("--credential"), None);
    }
}
