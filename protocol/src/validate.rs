//! Pure checks on names, parameters, labels and whole messages.
//!
//! Decoding only proves a frame has the right shape; these prove its contents are within the
//! rules. The agent runs [`RunRequest::validate`] before anything else and reports a failure
//! with [`ValidationError::skip_reason`]; the server runs [`Hello::validate`] before opening a
//! session and answers a failure with [`ErrorCode::Malformed`](crate::ErrorCode::Malformed).
//!
//! Errors never echo parameter values, which may hold secrets.

use std::collections::BTreeMap;
use std::fmt;

use crate::limits::*;
use crate::{Hello, HostFacts, RunRequest, SkipReason};

/// Which part of a message broke a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValidationSubject {
    /// [`Hello::protocol_version`] / [`Hello::min_protocol_version`].
    ProtocolVersion,
    /// [`Hello::agent_id`].
    AgentId,
    /// [`Hello::hostname`].
    Hostname,
    /// [`Hello::agent_version`].
    AgentVersion,
    /// [`Hello::os`].
    Os,
    /// [`Hello::arch`].
    Arch,
    /// The label map as a whole.
    Labels,
    /// [`Hello::running`]: the list as a whole.
    Running,
    /// One label key.
    LabelKey,
    /// One label value.
    LabelValue,
    /// [`RunRequest::run_id`].
    RunId,
    /// A script name.
    ScriptName,
    /// [`RunRequest::content`].
    ScriptContent,
    /// [`RunRequest::sha256`].
    Sha256,
    /// The parameter map as a whole.
    Parameters,
    /// One parameter name.
    ParameterName,
    /// One parameter value.
    ParameterValue,
    /// [`RunRequest::timeout_seconds`].
    Timeout,
    /// [`RunRequest::output_cap_bytes`].
    OutputCap,
    /// One text field of [`HostFacts`].
    HostFacts,
}

impl ValidationSubject {
    fn describe(self) -> &'static str {
        match self {
            Self::ProtocolVersion => "protocol version range",
            Self::AgentId => "agent id",
            Self::Hostname => "hostname",
            Self::AgentVersion => "agent version",
            Self::Os => "os",
            Self::Arch => "arch",
            Self::Labels => "labels",
            Self::Running => "running runs",
            Self::LabelKey => "label key",
            Self::LabelValue => "value of label",
            Self::RunId => "run id",
            Self::ScriptName => "script name",
            Self::ScriptContent => "script content",
            Self::Sha256 => "sha256",
            Self::Parameters => "parameters",
            Self::ParameterName => "parameter name",
            Self::ParameterValue => "value of parameter",
            Self::Timeout => "timeout_seconds",
            Self::OutputCap => "output_cap_bytes",
            Self::HostFacts => "host facts",
        }
    }
}

/// Which rule was broken.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ValidationProblem {
    /// The text is empty.
    Empty,
    /// The text is longer than `max` bytes.
    TooLong {
        /// The limit, in bytes.
        max: usize,
    },
    /// The map has more than `max` entries.
    TooMany {
        /// The limit, in entries.
        max: usize,
    },
    /// The text holds a character the rule does not allow (or allows only elsewhere).
    InvalidCharacter(char),
    /// The name is set by the agent itself or changes how interpreters behave.
    Reserved,
    /// The text is not 64 lowercase hexadecimal digits.
    NotSha256Hex,
    /// The number lies outside `min..=max`.
    OutOfRange {
        /// The smallest allowed value.
        min: u64,
        /// The largest allowed value.
        max: u64,
    },
}

/// A broken rule: what, where and (for named things) which one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ValidationError {
    /// The part of the message.
    pub subject: ValidationSubject,
    /// The rule.
    pub problem: ValidationProblem,
    /// The offending name (label key, parameter name, script name …), shortened to 64
    /// characters; never a parameter value.
    pub item: Option<String>,
}

impl ValidationError {
    fn new(subject: ValidationSubject, problem: ValidationProblem) -> Self {
        Self {
            subject,
            problem,
            item: None,
        }
    }

    fn about(mut self, item: &str) -> Self {
        self.item = Some(item.chars().take(64).collect());
        self
    }

    /// The reason the agent reports when a run request fails this check.
    pub fn skip_reason(&self) -> SkipReason {
        match self.subject {
            ValidationSubject::ScriptName => SkipReason::InvalidName,
            ValidationSubject::Parameters
            | ValidationSubject::ParameterName
            | ValidationSubject::ParameterValue => SkipReason::InvalidParameters,
            _ => SkipReason::InvalidRequest,
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.subject.describe())?;
        if let Some(item) = &self.item {
            write!(f, " {item:?}")?;
        }
        match &self.problem {
            ValidationProblem::Empty => f.write_str(" is empty"),
            ValidationProblem::TooLong { max } => write!(f, " is longer than {max} bytes"),
            ValidationProblem::TooMany { max } => write!(f, " has more than {max} entries"),
            ValidationProblem::InvalidCharacter(c) => write!(f, " contains {c:?}, not allowed"),
            ValidationProblem::Reserved => f.write_str(" is reserved"),
            ValidationProblem::NotSha256Hex => f.write_str(" is not 64 lowercase hex digits"),
            ValidationProblem::OutOfRange { min, max } => {
                write!(f, " is outside {min}..={max}")
            }
        }
    }
}

impl std::error::Error for ValidationError {}

type Result<T = ()> = std::result::Result<T, ValidationError>;

/// Checks a name made of ASCII characters accepted by `allowed`, starting with one accepted by
/// `first`, of 1 to `max` bytes.
fn check_name(
    subject: ValidationSubject,
    name: &str,
    max: usize,
    first: fn(char) -> bool,
    allowed: fn(char) -> bool,
) -> Result {
    let fail = |problem| Err(ValidationError::new(subject, problem).about(name));
    let Some(head) = name.chars().next() else {
        return Err(ValidationError::new(subject, ValidationProblem::Empty));
    };
    if name.len() > max {
        return fail(ValidationProblem::TooLong { max });
    }
    if !first(head) {
        return fail(ValidationProblem::InvalidCharacter(head));
    }
    if let Some(bad) = name.chars().find(|&c| !allowed(c)) {
        return fail(ValidationProblem::InvalidCharacter(bad));
    }
    Ok(())
}

/// Checks free text: 1 to `max` bytes (or 0 when `may_be_empty`), no control characters.
fn check_text(subject: ValidationSubject, text: &str, max: usize, may_be_empty: bool) -> Result {
    let fail = |problem| Err(ValidationError::new(subject, problem));
    if text.is_empty() && !may_be_empty {
        return fail(ValidationProblem::Empty);
    }
    if text.len() > max {
        return fail(ValidationProblem::TooLong { max });
    }
    if let Some(bad) = text.chars().find(|c| c.is_control()) {
        return fail(ValidationProblem::InvalidCharacter(bad));
    }
    Ok(())
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// An agent id: 1 to [`MAX_AGENT_ID_LEN`] bytes of `A-Z a-z 0-9 . _ -`, starting with a letter or
/// digit — every host name qualifies.
pub fn validate_agent_id(id: &str) -> Result {
    check_name(
        ValidationSubject::AgentId,
        id,
        MAX_AGENT_ID_LEN,
        |c| c.is_ascii_alphanumeric(),
        is_id_char,
    )
}

/// A run id: 1 to [`MAX_RUN_ID_LEN`] bytes, no control characters. Otherwise opaque.
pub fn validate_run_id(id: &str) -> Result {
    check_text(ValidationSubject::RunId, id, MAX_RUN_ID_LEN, false)
}

/// A script name: 1 to [`MAX_SCRIPT_NAME_LEN`] bytes of `A-Z a-z 0-9 . _ -`, starting with a
/// letter or digit. Nothing path-like passes: no `/`, `\`, NUL, `.` or `..`, and no leading `-`
/// that a command line could take for an option.
pub fn validate_script_name(name: &str) -> Result {
    check_name(
        ValidationSubject::ScriptName,
        name,
        MAX_SCRIPT_NAME_LEN,
        |c| c.is_ascii_alphanumeric(),
        is_id_char,
    )
}

/// Parameter names the agent never accepts: they are set by the agent itself or change how a
/// shell or interpreter behaves before the script's first line runs.
pub const RESERVED_PARAMETER_NAMES: &[&str] = &[
    "BASHOPTS",
    "BASH_ENV",
    "CDPATH",
    "ENV",
    "GLOBIGNORE",
    "HOME",
    "IFS",
    "LOGNAME",
    "OLDPWD",
    "PATH",
    "PROMPT_COMMAND",
    "PS4",
    "PWD",
    "SHELL",
    "SHELLOPTS",
    "TMPDIR",
    "USER",
];

/// Prefixes of parameter names the agent never accepts, for the same reasons as
/// [`RESERVED_PARAMETER_NAMES`]; `MEDIC_` is kept for variables the agent sets.
pub const RESERVED_PARAMETER_PREFIXES: &[&str] =
    &["BASH_FUNC_", "DYLD_", "LD_", "MEDIC_", "PYTHON"];

/// A parameter name, which becomes an environment variable name: 1 to
/// [`MAX_PARAMETER_NAME_LEN`] bytes of `A-Z 0-9 _`, not starting with a digit, and neither in
/// [`RESERVED_PARAMETER_NAMES`] nor starting with one of [`RESERVED_PARAMETER_PREFIXES`].
pub fn validate_parameter_name(name: &str) -> Result {
    check_name(
        ValidationSubject::ParameterName,
        name,
        MAX_PARAMETER_NAME_LEN,
        |c| c.is_ascii_uppercase() || c == '_',
        |c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_',
    )?;
    let reserved = RESERVED_PARAMETER_NAMES.contains(&name)
        || RESERVED_PARAMETER_PREFIXES
            .iter()
            .any(|prefix| name.starts_with(prefix));
    if reserved {
        return Err(ValidationError::new(
            ValidationSubject::ParameterName,
            ValidationProblem::Reserved,
        )
        .about(name));
    }
    Ok(())
}

/// A parameter value: anything up to [`MAX_PARAMETER_VALUE_BYTES`] bytes except NUL, which no
/// environment can carry. Quotes, `$`, `;`, backticks and newlines pass through verbatim — the
/// value reaches the script as data, never as code. `name` only labels the error.
pub fn validate_parameter_value(name: &str, value: &str) -> Result {
    let fail =
        |problem| Err(ValidationError::new(ValidationSubject::ParameterValue, problem).about(name));
    if value.len() > MAX_PARAMETER_VALUE_BYTES {
        return fail(ValidationProblem::TooLong {
            max: MAX_PARAMETER_VALUE_BYTES,
        });
    }
    if value.contains('\0') {
        return fail(ValidationProblem::InvalidCharacter('\0'));
    }
    Ok(())
}

/// A whole parameter map: at most [`MAX_PARAMETERS`] entries, each name and value valid.
pub fn validate_parameters(parameters: &BTreeMap<String, String>) -> Result {
    if parameters.len() > MAX_PARAMETERS {
        return Err(ValidationError::new(
            ValidationSubject::Parameters,
            ValidationProblem::TooMany {
                max: MAX_PARAMETERS,
            },
        ));
    }
    for (name, value) in parameters {
        validate_parameter_name(name)?;
        validate_parameter_value(name, value)?;
    }
    Ok(())
}

/// A label key: 1 to [`MAX_LABEL_KEY_LEN`] bytes of `A-Z a-z 0-9 . _ - /`, starting with a
/// letter or digit.
pub fn validate_label_key(key: &str) -> Result {
    check_name(
        ValidationSubject::LabelKey,
        key,
        MAX_LABEL_KEY_LEN,
        |c| c.is_ascii_alphanumeric(),
        |c| is_id_char(c) || c == '/',
    )
}

/// A label value: up to [`MAX_LABEL_VALUE_LEN`] bytes, possibly empty, no control characters.
/// `key` only labels the error.
pub fn validate_label_value(key: &str, value: &str) -> Result {
    check_text(
        ValidationSubject::LabelValue,
        value,
        MAX_LABEL_VALUE_LEN,
        true,
    )
    .map_err(|e| e.about(key))
}

/// A whole label map: at most [`MAX_LABELS`] entries, each key and value valid.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result {
    if labels.len() > MAX_LABELS {
        return Err(ValidationError::new(
            ValidationSubject::Labels,
            ValidationProblem::TooMany { max: MAX_LABELS },
        ));
    }
    for (key, value) in labels {
        validate_label_key(key)?;
        validate_label_value(key, value)?;
    }
    Ok(())
}

/// A SHA-256 digest as exactly 64 lowercase hexadecimal digits.
pub fn validate_sha256_hex(digest: &str) -> Result {
    let ok = digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            ValidationSubject::Sha256,
            ValidationProblem::NotSha256Hex,
        ))
    }
}

fn check_range(subject: ValidationSubject, value: u64, min: u64, max: u64) -> Result {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ValidationError::new(
            subject,
            ValidationProblem::OutOfRange { min, max },
        ))
    }
}

impl Hello {
    /// Checks every field against the rules and limits; the first broken rule is returned.
    pub fn validate(&self) -> Result {
        if self.min_protocol_version == 0 || self.min_protocol_version > self.protocol_version {
            return Err(ValidationError::new(
                ValidationSubject::ProtocolVersion,
                ValidationProblem::OutOfRange {
                    min: 1,
                    max: u64::from(self.protocol_version),
                },
            ));
        }
        validate_agent_id(self.agent_id.as_str())?;
        check_text(
            ValidationSubject::Hostname,
            &self.hostname,
            MAX_HELLO_TEXT_LEN,
            false,
        )?;
        check_text(
            ValidationSubject::AgentVersion,
            &self.agent_version,
            MAX_HELLO_TEXT_LEN,
            false,
        )?;
        check_text(ValidationSubject::Os, &self.os, MAX_HELLO_TEXT_LEN, false)?;
        check_text(
            ValidationSubject::Arch,
            &self.arch,
            MAX_HELLO_TEXT_LEN,
            false,
        )?;
        validate_labels(&self.labels)?;
        if self.running.len() > MAX_CONCURRENT_RUNS {
            return Err(ValidationError::new(
                ValidationSubject::Running,
                ValidationProblem::TooMany {
                    max: MAX_CONCURRENT_RUNS,
                },
            ));
        }
        for run_id in &self.running {
            validate_run_id(run_id.as_str())?;
        }
        if let Some(host) = &self.host {
            host.validate()?;
        }
        Ok(())
    }

    /// The versions the agent says it speaks.
    pub fn version_range(&self) -> VersionRange {
        VersionRange {
            min: self.min_protocol_version,
            max: self.protocol_version,
        }
    }
}

impl HostFacts {
    /// Checks the text fields: at most [`MAX_HELLO_TEXT_LEN`] bytes, no control characters.
    /// Numbers need no check: any value is a possible host.
    pub fn validate(&self) -> Result {
        for text in [
            &self.os_name,
            &self.os_version,
            &self.kernel_version,
            &self.arch,
        ]
        .into_iter()
        .flatten()
        {
            check_text(ValidationSubject::HostFacts, text, MAX_HELLO_TEXT_LEN, true)?;
        }
        if let Some(load) = self.load_average
            && load.iter().any(|l| !l.is_finite() || *l < 0.0)
        {
            return Err(ValidationError::new(
                ValidationSubject::HostFacts,
                ValidationProblem::OutOfRange {
                    min: 0,
                    max: u64::MAX,
                },
            ));
        }
        Ok(())
    }
}

impl RunRequest {
    /// Checks every field against the rules and limits; the first broken rule is returned.
    ///
    /// This does not hash the content (the agent does, with its own SHA-256) nor consult the
    /// allowlist or `approved`: those are the agent's policy, checked after this.
    pub fn validate(&self) -> Result {
        validate_run_id(self.run_id.as_str())?;
        validate_script_name(&self.script)?;
        if self.content.len() > MAX_SCRIPT_BYTES {
            return Err(ValidationError::new(
                ValidationSubject::ScriptContent,
                ValidationProblem::TooLong {
                    max: MAX_SCRIPT_BYTES,
                },
            ));
        }
        validate_sha256_hex(&self.sha256)?;
        validate_parameters(&self.parameters)?;
        check_range(
            ValidationSubject::Timeout,
            u64::from(self.timeout_seconds),
            1,
            u64::from(MAX_RUN_TIMEOUT_SECONDS),
        )?;
        if let Some(cap) = self.output_cap_bytes {
            check_range(ValidationSubject::OutputCap, cap, 1, MAX_OUTPUT_BYTES)?;
        }
        Ok(())
    }

    /// The per-stream output cap to apply: the request's, or [`DEFAULT_OUTPUT_CAP_BYTES`].
    pub fn effective_output_cap(&self) -> u64 {
        self.output_cap_bytes.unwrap_or(DEFAULT_OUTPUT_CAP_BYTES)
    }
}
