//! From a raw document to a typed, validated [`Plan`] — or every problem at once.
//!
//! Validation is one pass that collects problems instead of stopping at the first: names,
//! durations, approval, inputs, triggers, each step's fields, and every `${…}` reference
//! (context variables, declared inputs, earlier steps' results, and — through the caller's
//! [`Catalog`] — registered scripts and stored secrets).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use globset::{Glob, GlobBuilder, GlobMatcher};
use medic_protocol::limits::{MAX_PARAMETERS, MAX_RUN_TIMEOUT_SECONDS};
use medic_protocol::validate as wire;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::document::{
    self, AlertKind, ExpectedStatus, InputType, Lines, Method, OnFailure, RawCheck, RawPlaybook,
    RawRequire, RawStep, RawTarget, StepType,
};
use super::duration;
use super::vars::{self, ContextVar, Reference, StepField, Template};
use super::{DocumentError, Problem};

/// What validation needs to know about the world, supplied by the caller.
pub trait Catalog {
    /// A script of that name is registered (its approval is checked when a run starts).
    fn script_exists(&self, name: &str) -> bool;
    /// A secret of that name is stored.
    fn secret_exists(&self, name: &str) -> bool;
    /// The operator allowed scripts on the server itself (`MEDIC_SERVER_SCRIPTS`).
    fn server_scripts_enabled(&self) -> bool;
    /// The operator allowed this script on the server (it is in `MEDIC_SERVER_SCRIPTS`).
    fn server_script_allowed(&self, name: &str) -> bool {
        let _ = name;
        self.server_scripts_enabled()
    }
}

/// The most steps a playbook may have.
pub const MAX_STEPS: usize = 100;
/// Defaults and bounds of the step timeouts.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(30);
pub const MAX_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_CONDITION_WITHIN: Duration = Duration::from_secs(300);
pub const DEFAULT_CONDITION_EVERY: Duration = Duration::from_secs(30);
pub const MIN_CONDITION_EVERY: Duration = Duration::from_secs(5);
/// The longest `timeout:<N>m` approval.
pub const MAX_APPROVAL_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// `approval:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// Runs at once.
    None,
    /// Waits for a decision; expires after the server's configured maximum.
    Required,
    /// Proceeds on its own after this long unless rejected or cancelled first.
    Timeout(Duration),
}

impl Approval {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not an approval: use none, required or timeout:<N>m");
        match text {
            "none" => Ok(Self::None),
            "required" => Ok(Self::Required),
            _ => {
                let minutes = text
                    .strip_prefix("timeout:")
                    .and_then(|r| r.strip_suffix('m'))
                    .filter(|n| {
                        !n.is_empty() && n.len() <= 6 && n.bytes().all(|b| b.is_ascii_digit())
                    })
                    .and_then(|n| n.parse::<u64>().ok())
                    .ok_or_else(bad)?;
                let d = Duration::from_secs(minutes * 60);
                if minutes == 0 || d > MAX_APPROVAL_TIMEOUT {
                    return Err(format!(
                        "`{text}`: the approval timeout must be between 1 and {} minutes",
                        MAX_APPROVAL_TIMEOUT.as_secs() / 60
                    ));
                }
                Ok(Self::Timeout(d))
            }
        }
    }
}

/// A declared input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    pub name: String,
    pub kind: InputType,
    pub required: bool,
    /// The default, already rendered as the text substitution uses.
    pub default: Option<String>,
    pub description: Option<String>,
}

/// An alert trigger: every condition given must hold.
#[derive(Debug, Clone)]
pub struct AlertTrigger {
    pub service: Option<Pattern>,
    pub heartbeat: Option<Pattern>,
    pub team: Option<String>,
    /// Empty means every kind.
    pub kinds: Vec<AlertKind>,
    /// Real consecutive failures needed (1 = the first).
    pub consecutive_failures: u32,
    pub cooldown: Option<Duration>,
}

/// A case-insensitive glob over names (`*`, `?`, `[abc]`, `{a,b}`).
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    matcher: GlobMatcher,
}

impl Pattern {
    pub fn new(source: &str) -> Result<Self, String> {
        let glob: Glob = GlobBuilder::new(source)
            .case_insensitive(true)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("`{source}` is not a valid glob: {}", e.kind()))?;
        Ok(Self {
            source: source.to_owned(),
            matcher: glob.compile_matcher(),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, name: &str) -> bool {
        self.matcher.is_match(name)
    }
}

/// A step of the plan.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub on_failure: OnFailure,
    pub kind: StepKind,
}

#[derive(Debug, Clone)]
pub enum StepKind {
    Webhook(WebhookStep),
    Script(ScriptStep),
    Wait { duration: Duration },
    Condition(ConditionStep),
}

impl StepKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Webhook(_) => "webhook",
            Self::Script(_) => "script",
            Self::Wait { .. } => "wait",
            Self::Condition(_) => "condition",
        }
    }

    /// The result fields `${steps.<this>.<field>}` may read.
    pub fn readable_fields(&self) -> &'static [StepField] {
        match self {
            Self::Webhook(_) => &[StepField::Status, StepField::Output, StepField::HttpStatus],
            Self::Script(_) => &[StepField::Status, StepField::ExitCode, StepField::Output],
            Self::Wait { .. } | Self::Condition(_) => &[StepField::Status],
        }
    }
}

#[derive(Debug, Clone)]
pub struct WebhookStep {
    pub method: Method,
    pub url: Template,
    pub headers: Vec<(String, Template)>,
    pub body: Option<Body>,
    /// Empty means any 2xx.
    pub success_codes: Vec<u16>,
    pub timeout: Duration,
    pub idempotent: bool,
}

impl WebhookStep {
    pub fn is_success(&self, status: u16) -> bool {
        if self.success_codes.is_empty() {
            (200..300).contains(&status)
        } else {
            self.success_codes.contains(&status)
        }
    }
}

/// A webhook body: text sent as written, or a structure sent as JSON; every string in either
/// is a template.
#[derive(Debug, Clone)]
pub enum Body {
    Text(Template),
    Json(serde_json::Value),
}

impl Body {
    /// Renders every string (the JSON structure's keys are kept as written).
    pub fn render(&self, scope: &vars::Scope) -> Result<String, vars::Unresolved> {
        fn walk(
            v: &serde_json::Value,
            scope: &vars::Scope,
        ) -> Result<serde_json::Value, vars::Unresolved> {
            Ok(match v {
                serde_json::Value::String(s) => serde_json::Value::String(
                    Template::parse(s)
                        .map_err(|_| vars::Unresolved {
                            reference: Reference::Name(s.clone()),
                        })?
                        .render(scope)?,
                ),
                serde_json::Value::Array(a) => serde_json::Value::Array(
                    a.iter().map(|x| walk(x, scope)).collect::<Result<_, _>>()?,
                ),
                serde_json::Value::Object(o) => serde_json::Value::Object(
                    o.iter()
                        .map(|(k, x)| Ok((k.clone(), walk(x, scope)?)))
                        .collect::<Result<_, _>>()?,
                ),
                other => other.clone(),
            })
        }
        match self {
            Self::Text(t) => t.render(scope),
            Self::Json(v) => Ok(walk(v, scope)?.to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Server,
    Agents(Vec<String>),
    Labels(BTreeMap<String, String>),
}

/// How many targeted agents must succeed for the step to succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Require {
    All,
    Any,
    AtLeast(u32),
}

impl Require {
    /// The number of successes needed out of `targets`.
    pub fn needed(self, targets: usize) -> usize {
        match self {
            Self::All => targets,
            Self::Any => 1,
            Self::AtLeast(n) => n as usize,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ScriptStep {
    pub script: String,
    pub target: Target,
    pub require: Require,
    /// `None`: every target at once.
    pub max_parallel: Option<u32>,
    /// Parameter values; they reach the script as `MEDIC_PARAM_*` data, never as source.
    pub params: BTreeMap<String, Template>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ConditionStep {
    pub check: Check,
    /// Give up after this long.
    pub within: Duration,
    /// Check again this often until then.
    pub every: Duration,
}

#[derive(Debug, Clone)]
pub enum Check {
    /// At least `min_count` heartbeats (with `status`, when given) since the step started.
    HeartbeatReceived {
        service: Option<Template>,
        min_count: u32,
        status: Option<String>,
    },
    ServiceUp {
        service: Option<Template>,
    },
    AlertResolved,
    HttpOk {
        url: Template,
        headers: Vec<(String, Template)>,
        success_codes: Vec<u16>,
    },
    /// Decided by the state machine alone, from the earlier step's result.
    StepStatus {
        step: String,
        index: usize,
        status: ExpectedStatus,
    },
}

/// A validated playbook.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub description: Option<String>,
    pub approval: Approval,
    pub inputs: Vec<InputSpec>,
    pub triggers: Vec<AlertTrigger>,
    /// The playbook's own limit on executions per hour, if any.
    pub max_per_hour: Option<u32>,
    pub steps: Vec<Step>,
    /// Every secret the steps use (`${secrets.NAME}`), by name.
    pub secrets: BTreeSet<String>,
    /// Hex SHA-256 of the document's bytes: the version's content identity.
    pub sha256: String,
}

/// Hex SHA-256 of a document's bytes.
pub fn content_sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Parses and validates `text`: a [`Plan`], or every problem found.
pub fn validate(text: &str, catalog: &dyn Catalog) -> Result<Plan, DocumentError> {
    if text.len() > document::MAX_DOCUMENT_BYTES {
        return Err(DocumentError::TooLarge {
            bytes: text.len(),
            max: document::MAX_DOCUMENT_BYTES,
        });
    }
    let raw = document::parse(text).map_err(|p| DocumentError::Invalid(vec![p]))?;
    let mut v = Validator {
        catalog,
        secrets: BTreeSet::new(),
        problems: Vec::new(),
        step: None,
        lines: None,
        text,
    };
    let plan = v.plan(raw, content_sha256(text));
    if v.problems.is_empty() {
        Ok(plan)
    } else {
        let mut problems = v.problems;
        problems.sort_by_key(|p| p.line.unwrap_or(u32::MAX));
        Err(DocumentError::Invalid(problems))
    }
}

struct Validator<'a> {
    catalog: &'a dyn Catalog,
    /// The secrets referenced so far.
    secrets: BTreeSet<String>,
    problems: Vec<Problem>,
    /// (index, name) of the step being validated.
    step: Option<(usize, String)>,
    lines: Option<Lines>,
    text: &'a str,
}

/// What the references of a text may use.
#[derive(Clone, Copy)]
struct Allowed<'p> {
    inputs: &'p BTreeSet<String>,
    /// Earlier steps and the fields they expose.
    earlier: &'p [(String, &'static [StepField])],
    secrets: bool,
}

impl Validator<'_> {
    fn problem(&mut self, field: &str, message: impl Into<String>) {
        let lines = self.lines.get_or_insert_with(|| Lines::read(self.text));
        let top = field.split(['.', '[']).next().unwrap_or(field);
        let line = match &self.step {
            Some((i, _)) => lines.steps.get(*i).and_then(|s| {
                s.keys
                    .get(top)
                    .copied()
                    .or(Some(s.start))
                    .filter(|&l| l > 0)
            }),
            None => match field.strip_prefix("inputs.") {
                Some(rest) => lines
                    .inputs
                    .get(rest.split('.').next().unwrap_or(rest))
                    .copied(),
                None => match field.strip_prefix("triggers[") {
                    Some(rest) => rest
                        .split(']')
                        .next()
                        .and_then(|n| n.parse::<usize>().ok())
                        .and_then(|n| lines.triggers.get(n).copied()),
                    None => lines.top.get(top).copied(),
                },
            },
        };
        self.problems.push(Problem {
            step: self.step.as_ref().map(|(_, n)| n.clone()),
            field: field.to_owned(),
            line,
            column: None,
            message: message.into(),
        });
    }

    fn duration(
        &mut self,
        field: &str,
        text: Option<&str>,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Duration {
        let Some(text) = text else { return default };
        match duration::parse(text) {
            Ok(d) if d < min || d > max => {
                self.problem(
                    field,
                    format!(
                        "`{text}` is out of range: {field} must be between {} and {}",
                        duration::format(min),
                        duration::format(max)
                    ),
                );
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.problem(field, e);
                default
            }
        }
    }

    fn text(&mut self, field: &str, text: &str, max: usize, may_be_empty: bool) {
        if text.trim().is_empty() && !may_be_empty {
            self.problem(field, format!("{field} must not be empty"));
        } else if text.len() > max {
            self.problem(field, format!("{field} is longer than {max} bytes"));
        } else if text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            self.problem(field, format!("{field} contains a control character"));
        }
    }

    fn template(&mut self, field: &str, text: &str, allowed: Allowed<'_>) -> Template {
        match Template::parse(text) {
            Ok(t) => {
                for r in t.references() {
                    if let Reference::Secret(name) = r {
                        self.secrets.insert(name.clone());
                    }
                    if let Err(msg) = check_reference(r, allowed, self.catalog) {
                        self.problem(field, msg);
                    }
                }
                t
            }
            Err(e) => {
                self.problem(field, e.to_string());
                Template::empty()
            }
        }
    }

    fn url(&mut self, field: &str, text: &str, allowed: Allowed<'_>) -> Template {
        let t = self.template(field, text, allowed);
        let prefix = t.literal_prefix().to_ascii_lowercase();
        if !(prefix.starts_with("http://") || prefix.starts_with("https://") || text.is_empty()) {
            self.problem(
                field,
                format!("`{text}` must start with http:// or https:// (written out, not from a variable)"),
            );
        }
        t
    }

    fn headers(
        &mut self,
        field: &str,
        headers: &BTreeMap<String, String>,
        allowed: Allowed<'_>,
    ) -> Vec<(String, Template)> {
        headers
            .iter()
            .map(|(k, v)| {
                let path = format!("{field}.{k}");
                let token = !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                if !token {
                    self.problem(&path, format!("`{k}` is not a valid header name"));
                }
                if v.contains(['\r', '\n']) {
                    self.problem(&path, "a header value must be one line");
                }
                (k.clone(), self.template(&path, v, allowed))
            })
            .collect()
    }

    fn codes(&mut self, field: &str, codes: &[u16]) {
        for c in codes {
            if !(100..=599).contains(c) {
                self.problem(field, format!("{c} is not an HTTP status code"));
            }
        }
    }

    fn plan(&mut self, raw: RawPlaybook, sha256: String) -> Plan {
        self.text("name", &raw.name, 128, false);
        if let Some(d) = &raw.description {
            self.text("description", d, 4096, true);
        }
        let approval = match raw.approval.as_deref() {
            None => Approval::None,
            Some(a) => Approval::parse(a).unwrap_or_else(|e| {
                self.problem("approval", e);
                Approval::None
            }),
        };
        let inputs = self.inputs(&raw);
        let input_names: BTreeSet<String> = inputs.iter().map(|i| i.name.clone()).collect();
        let triggers = raw
            .triggers
            .iter()
            .enumerate()
            .map(|(i, t)| self.trigger(i, t))
            .collect();
        let max_per_hour = raw.circuit_breaker.as_ref().map(|b| {
            if b.max_per_hour == 0 {
                self.problem(
                    "circuit_breaker.max_per_hour",
                    "max_per_hour must be at least 1",
                );
            }
            b.max_per_hour
        });
        if raw.steps.is_empty() {
            self.problem("steps", "a playbook needs at least one step");
        }
        if raw.steps.len() > MAX_STEPS {
            self.problem("steps", format!("a playbook has at most {MAX_STEPS} steps"));
        }
        let mut steps = Vec::new();
        let mut earlier: Vec<(String, &'static [StepField])> = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, raw_step) in raw.steps.into_iter().enumerate() {
            let name = raw_step.name.clone();
            self.step = Some((i, name.clone()));
            if !vars::is_step_name(&name) {
                self.problem(
                    "name",
                    format!("`{name}` is not a step name: 1 to 64 of A-Z a-z 0-9 _ -"),
                );
            }
            if !seen.insert(name.clone()) {
                self.problem("name", format!("another step is already called `{name}`"));
            }
            let allowed = Allowed {
                inputs: &input_names,
                earlier: &earlier,
                secrets: true,
            };
            let step = self.step_of(raw_step, allowed, &steps);
            self.step = None;
            earlier.push((step.name.clone(), step.kind.readable_fields()));
            steps.push(step);
        }
        Plan {
            name: raw.name,
            description: raw.description,
            approval,
            inputs,
            triggers,
            max_per_hour,
            steps,
            secrets: std::mem::take(&mut self.secrets),
            sha256,
        }
    }

    fn inputs(&mut self, raw: &RawPlaybook) -> Vec<InputSpec> {
        let mut out = Vec::new();
        for (name, input) in &raw.inputs {
            let field = format!("inputs.{name}");
            if !vars::is_variable_name(name) {
                self.problem(
                    &field,
                    format!(
                        "`{name}` is not an input name: a letter or _, then letters, digits or _"
                    ),
                );
            }
            if ContextVar::parse(name).is_some() || name == "steps" || name == "secrets" {
                self.problem(
                    &field,
                    format!("`{name}` is reserved for the execution context"),
                );
            }
            let kind = input.kind.unwrap_or(InputType::String);
            if input.required && input.default.is_some() {
                self.problem(&field, "a required input cannot have a default");
            }
            let default = input
                .default
                .as_ref()
                .and_then(|v| match typed_value(kind, v) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        self.problem(&format!("{field}.default"), e);
                        None
                    }
                });
            if let Some(d) = &input.description {
                self.text(&format!("{field}.description"), d, 1024, true);
            }
            out.push(InputSpec {
                name: name.clone(),
                kind,
                required: input.required,
                default,
                description: input.description.clone(),
            });
        }
        out
    }

    fn trigger(&mut self, i: usize, t: &document::RawTrigger) -> AlertTrigger {
        let field = format!("triggers[{i}]");
        if t.service.is_none() && t.heartbeat.is_none() && t.team.is_none() {
            self.problem(
                &field,
                "a trigger needs at least one of service, heartbeat or team",
            );
        }
        let mut pattern = |key: &str, p: &Option<String>| {
            p.as_ref().and_then(|p| match Pattern::new(p) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.problem(&format!("{field}.{key}"), e);
                    None
                }
            })
        };
        let service = pattern("service", &t.service);
        let heartbeat = pattern("heartbeat", &t.heartbeat);
        if let Some(team) = &t.team {
            self.text(&format!("{field}.team"), team, 128, false);
        }
        let consecutive_failures = t.consecutive_failures.unwrap_or(1);
        if !(1..=1000).contains(&consecutive_failures) {
            self.problem(
                &format!("{field}.consecutive_failures"),
                "consecutive_failures must be between 1 and 1000",
            );
        }
        let cooldown = t.cooldown.as_deref().map(|c| {
            self.duration(
                &format!("{field}.cooldown"),
                Some(c),
                Duration::ZERO,
                Duration::from_secs(1),
                Duration::from_secs(7 * 86_400),
            )
        });
        AlertTrigger {
            service,
            heartbeat,
            team: t.team.clone(),
            kinds: t.kinds.clone(),
            consecutive_failures,
            cooldown,
        }
    }

    fn required<T>(&mut self, kind: StepType, key: &str, value: Option<T>) -> Option<T> {
        if value.is_none() {
            self.problem(key, format!("a {} step needs `{key}`", kind.as_str()));
        }
        value
    }

    fn step_of(&mut self, raw: RawStep, allowed: Allowed<'_>, earlier: &[Step]) -> Step {
        let kind = raw.kind;
        for key in raw.present_keys() {
            if !kind.keys().contains(&key) {
                self.problem(
                    key,
                    format!(
                        "`{key}` does not apply to a {} step (it takes {})",
                        kind.as_str(),
                        kind.keys().join(", ")
                    ),
                );
            }
        }
        let on_failure = raw.on_failure.unwrap_or_default();
        let step_kind = match kind {
            StepType::Webhook => {
                let url = self
                    .required(kind, "url", raw.url.as_deref())
                    .map_or_else(Template::empty, |u| self.url("url", u, allowed));
                let headers = self.headers("headers", &raw.headers.unwrap_or_default(), allowed);
                let body = raw.body.map(|b| match b {
                    serde_json::Value::String(s) => Body::Text(self.template("body", &s, allowed)),
                    other => {
                        self.json_templates("body", &other, allowed);
                        Body::Json(other)
                    }
                });
                let success_codes = raw.success_codes.unwrap_or_default();
                self.codes("success_codes", &success_codes);
                let timeout = self.duration(
                    "timeout",
                    raw.timeout.as_deref(),
                    DEFAULT_WEBHOOK_TIMEOUT,
                    Duration::from_secs(1),
                    MAX_WEBHOOK_TIMEOUT,
                );
                StepKind::Webhook(WebhookStep {
                    method: raw.method.unwrap_or_default(),
                    url,
                    headers,
                    body,
                    success_codes,
                    timeout,
                    idempotent: raw.idempotent.unwrap_or(false),
                })
            }
            StepType::Script => {
                let script = self.required(kind, "script", raw.script);
                if let Some(script) = &script {
                    if let Err(e) = wire::validate_script_name(script) {
                        self.problem("script", e.to_string());
                    } else if !self.catalog.script_exists(script) {
                        self.problem(
                            "script",
                            format!("no script called `{script}` is registered"),
                        );
                    }
                }
                let script = script.unwrap_or_default();
                let target = match self.required(kind, "on", raw.on) {
                    None => Target::Agents(Vec::new()),
                    Some(RawTarget::Server) => {
                        if !self.catalog.server_scripts_enabled() {
                            self.problem(
                                "on",
                                "scripts on the server are disabled (MEDIC_SERVER_SCRIPTS)",
                            );
                        } else if !script.is_empty() && !self.catalog.server_script_allowed(&script)
                        {
                            self.problem(
                                "on",
                                format!(
                                    "script `{script}` is not in MEDIC_SERVER_SCRIPTS, the \
                                     server's allowlist"
                                ),
                            );
                        }
                        if raw.require.is_some() || raw.max_parallel.is_some() {
                            self.problem(
                                "on",
                                "require and max_parallel apply to agents, not to `on: server`",
                            );
                        }
                        Target::Server
                    }
                    Some(RawTarget::Map(m)) => match (m.agent_ids, m.labels) {
                        (Some(ids), None) => {
                            if ids.is_empty() {
                                self.problem(
                                    "on.agent_ids",
                                    "agent_ids must list at least one agent",
                                );
                            }
                            let unique: BTreeSet<_> = ids.iter().collect();
                            if unique.len() != ids.len() {
                                self.problem("on.agent_ids", "agent_ids lists an agent twice");
                            }
                            for id in &ids {
                                if let Err(e) = wire::validate_agent_id(id) {
                                    self.problem("on.agent_ids", e.to_string());
                                }
                            }
                            Target::Agents(ids)
                        }
                        (None, Some(labels)) => {
                            if labels.is_empty() {
                                self.problem("on.labels", "labels must name at least one label");
                            }
                            for (k, v) in &labels {
                                if let Err(e) = wire::validate_label_key(k)
                                    .and_then(|()| wire::validate_label_value(k, v))
                                {
                                    self.problem(&format!("on.labels.{k}"), e.to_string());
                                }
                            }
                            Target::Labels(labels)
                        }
                        _ => {
                            self.problem(
                                "on",
                                "give exactly one of agent_ids or labels (or `on: server`)",
                            );
                            Target::Agents(Vec::new())
                        }
                    },
                };
                let require = match raw.require {
                    None | Some(RawRequire::All) => Require::All,
                    Some(RawRequire::Any) => Require::Any,
                    Some(RawRequire::AtLeast(n)) => {
                        let fixed = match &target {
                            Target::Agents(ids) => Some(ids.len() as u64),
                            _ => None,
                        };
                        if n == 0 || fixed.is_some_and(|len| n > len) || n > 10_000 {
                            self.problem("require", format!("require: {n} must be at least 1 and at most the number of targeted agents"));
                        }
                        Require::AtLeast(n.min(10_000) as u32)
                    }
                };
                if raw.max_parallel == Some(0) {
                    self.problem("max_parallel", "max_parallel must be at least 1");
                }
                let raw_params = raw.params.unwrap_or_default();
                if raw_params.len() > MAX_PARAMETERS {
                    self.problem("params", format!("at most {MAX_PARAMETERS} parameters"));
                }
                let params = raw_params
                    .iter()
                    .map(|(k, v)| {
                        let path = format!("params.{k}");
                        if let Err(e) = wire::validate_parameter_name(k) {
                            self.problem(&path, e.to_string());
                        }
                        (k.clone(), self.template(&path, v, allowed))
                    })
                    .collect();
                let timeout = self.duration(
                    "timeout",
                    raw.timeout.as_deref(),
                    DEFAULT_SCRIPT_TIMEOUT,
                    Duration::from_secs(1),
                    Duration::from_secs(u64::from(MAX_RUN_TIMEOUT_SECONDS)),
                );
                StepKind::Script(ScriptStep {
                    script,
                    target,
                    require,
                    max_parallel: raw.max_parallel,
                    params,
                    timeout,
                })
            }
            StepType::Wait => {
                let text = self.required(kind, "duration", raw.duration);
                let duration = match text {
                    Some(t) => self.duration(
                        "duration",
                        Some(&t),
                        Duration::from_secs(1),
                        Duration::from_secs(1),
                        MAX_WAIT,
                    ),
                    None => Duration::from_secs(1),
                };
                StepKind::Wait { duration }
            }
            StepType::Condition => {
                let within = self.duration(
                    "within",
                    raw.within.as_deref(),
                    DEFAULT_CONDITION_WITHIN,
                    Duration::from_secs(1),
                    MAX_WAIT,
                );
                let every = self.duration(
                    "every",
                    raw.every.as_deref(),
                    DEFAULT_CONDITION_EVERY.min(within),
                    MIN_CONDITION_EVERY,
                    MAX_WAIT,
                );
                if raw.every.is_some() && every > within {
                    self.problem("every", "every must not be longer than within");
                }
                let no_secrets = Allowed {
                    secrets: false,
                    ..allowed
                };
                let check = match self.required(kind, "check", raw.check) {
                    None => Check::AlertResolved,
                    Some(RawCheck::HeartbeatReceived {
                        service,
                        min_count,
                        status,
                    }) => {
                        let min_count = min_count.unwrap_or(1);
                        if min_count == 0 {
                            self.problem(
                                "check.heartbeat_received.min_count",
                                "min_count must be at least 1",
                            );
                        }
                        if let Some(s) = &status {
                            self.text("check.heartbeat_received.status", s, 64, false);
                        }
                        Check::HeartbeatReceived {
                            service: service.map(|s| {
                                self.template("check.heartbeat_received.service", &s, no_secrets)
                            }),
                            min_count,
                            status,
                        }
                    }
                    Some(RawCheck::ServiceUp { service }) => Check::ServiceUp {
                        service: service
                            .map(|s| self.template("check.service_up.service", &s, no_secrets)),
                    },
                    Some(RawCheck::AlertResolved) => Check::AlertResolved,
                    Some(RawCheck::HttpOk {
                        url,
                        headers,
                        success_codes,
                    }) => {
                        self.codes("check.http_ok.success_codes", &success_codes);
                        Check::HttpOk {
                            url: self.url("check.http_ok.url", &url, allowed),
                            headers: self.headers("check.http_ok.headers", &headers, allowed),
                            success_codes,
                        }
                    }
                    Some(RawCheck::StepStatus { step, status }) => {
                        let index = earlier.iter().position(|s| s.name == step);
                        if index.is_none() {
                            self.problem(
                                "check.step_status.step",
                                format!("`{step}` is not an earlier step"),
                            );
                        }
                        Check::StepStatus {
                            step,
                            index: index.unwrap_or(0),
                            status,
                        }
                    }
                };
                StepKind::Condition(ConditionStep {
                    check,
                    within,
                    every,
                })
            }
        };
        Step {
            name: raw.name,
            on_failure,
            kind: step_kind,
        }
    }

    fn json_templates(&mut self, field: &str, v: &serde_json::Value, allowed: Allowed<'_>) {
        match v {
            serde_json::Value::String(s) => {
                self.template(field, s, allowed);
            }
            serde_json::Value::Array(a) => a
                .iter()
                .for_each(|x| self.json_templates(field, x, allowed)),
            serde_json::Value::Object(o) => o
                .values()
                .for_each(|x| self.json_templates(field, x, allowed)),
            _ => {}
        }
    }
}

fn check_reference(
    r: &Reference,
    allowed: Allowed<'_>,
    catalog: &dyn Catalog,
) -> Result<(), String> {
    match r {
        Reference::Name(name) => {
            if ContextVar::parse(name).is_some() || allowed.inputs.contains(name) {
                Ok(())
            } else {
                Err(format!(
                    "unknown variable {r}: not a context variable ({}) nor a declared input",
                    ContextVar::ALL.map(ContextVar::as_str).join(", ")
                ))
            }
        }
        Reference::Step { step, field } => {
            let Some((_, fields)) = allowed.earlier.iter().find(|(n, _)| n == step) else {
                return Err(format!(
                    "{r} refers to `{step}`, which is not an earlier step"
                ));
            };
            match StepField::parse(field) {
                Some(f) if fields.contains(&f) => Ok(()),
                _ => Err(format!(
                    "{r}: step `{step}` has no field `{field}` (it has {})",
                    fields
                        .iter()
                        .map(|f| f.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
        Reference::Secret(name) => {
            if !allowed.secrets {
                Err(format!("{r}: secrets cannot be used here"))
            } else if catalog.secret_exists(name) {
                Ok(())
            } else {
                Err(format!("{r}: no secret called `{name}` is stored"))
            }
        }
    }
}

/// Checks a value against an input's type and renders it as substitution text.
pub fn typed_value(kind: InputType, v: &serde_json::Value) -> Result<String, String> {
    use serde_json::Value;
    match (kind, v) {
        (InputType::String, Value::String(s)) => Ok(s.clone()),
        (InputType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        (InputType::Boolean, Value::Bool(b)) => Ok(b.to_string()),
        (kind, other) => Err(format!(
            "expected a {}, got {}",
            kind.as_str(),
            match other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::String(_) => "a string",
                Value::Array(_) => "a list",
                Value::Object(_) => "a mapping",
            }
        )),
    }
}

/// Why the given inputs do not fit a plan: one problem per input, field `variables.<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputProblems(pub Vec<Problem>);

impl Plan {
    /// Checks the variables an execution was started with against the declared inputs, and
    /// fills in defaults: the inputs as substitution text, or every problem.
    pub fn resolve_inputs(
        &self,
        given: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<BTreeMap<String, String>, InputProblems> {
        let mut problems = Vec::new();
        let mut out = BTreeMap::new();
        let problem = |name: &str, message: String| Problem {
            step: None,
            field: format!("variables.{name}"),
            line: None,
            column: None,
            message,
        };
        for name in given.keys() {
            if !self.inputs.iter().any(|i| &i.name == name) {
                problems.push(problem(
                    name,
                    format!("`{name}` is not an input of this playbook"),
                ));
            }
        }
        for input in &self.inputs {
            match given.get(&input.name) {
                Some(v) => match typed_value(input.kind, v) {
                    Ok(s) => {
                        out.insert(input.name.clone(), s);
                    }
                    Err(e) => problems.push(problem(&input.name, e)),
                },
                None => match &input.default {
                    Some(d) => {
                        out.insert(input.name.clone(), d.clone());
                    }
                    None if input.required => {
                        problems.push(problem(
                            &input.name,
                            format!("`{}` is required", input.name),
                        ));
                    }
                    None => {}
                },
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(InputProblems(problems))
        }
    }

    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }
}
