//! The playbook document as written: YAML (or JSON, which is YAML) read into strict raw types.
//!
//! # Why `serde-saphyr`
//! `serde_yaml` is archived. Its forks `serde_yaml_ng` and `serde_norway` keep its design — the
//! `unsafe-libyaml` C-to-Rust translation underneath, alias expansion without budgets — and
//! `serde_yml` is deprecated (its last release is a shim onto another crate). `serde-saphyr`
//! is actively released, `#![forbid(unsafe_code)]`, fuzzed and designed not to panic, runs the
//! YAML test suite, deserializes straight into our types (no intermediate value tree), rejects
//! duplicate keys by default, reports line and column for every error, and — the deciding
//! point for a document that arrives over HTTP — enforces **budgets** while parsing: depth,
//! nodes, anchors, aliases and replayed alias events. A billion-laughs document is refused
//! after a few thousand replayed events instead of expanding. We enable only its `deserialize`
//! feature.
//!
//! # Limits
//! The size limit ([`MAX_DOCUMENT_BYTES`]) is checked before the parser sees a byte; the
//! parser's budget ([`options`]) bounds depth, nodes, anchors and alias replay.
//!
//! Every struct here denies unknown fields, so `timout:` is an error, not a silently ignored
//! key. Shape errors name the line and column the parser reports, and [`locate`] adds the step
//! and field they belong to.

use std::collections::BTreeMap;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

use super::Problem;

/// The largest document accepted, checked before parsing (HTTP answers 413 above it).
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// The deepest nesting accepted.
pub const MAX_DEPTH: usize = 32;
/// The most anchors, and the most aliases, a document may use.
pub const MAX_ALIASES: usize = 64;
/// The most events alias replay may inject in total.
pub const MAX_REPLAYED_EVENTS: usize = 10_000;
/// The most YAML nodes a document may have.
pub const MAX_NODES: usize = 50_000;

/// The parser options: strict booleans (`yes` is not `true`), one document, the budgets above.
pub fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.max_anchors = MAX_ALIASES;
    budget.max_aliases = MAX_ALIASES;
    budget.max_nodes = MAX_NODES;
    budget.max_documents = 1;
    budget.max_events = 4 * MAX_NODES;
    budget.max_total_scalar_bytes = MAX_DOCUMENT_BYTES;
    budget.max_merge_keys = MAX_ALIASES;
    // Copies of events kept for anchors grow with nesting even before any alias is replayed.
    budget.max_recorded_anchor_events = MAX_REPLAYED_EVENTS;
    budget.max_recorded_anchor_bytes = MAX_DOCUMENT_BYTES;
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = MAX_REPLAYED_EVENTS;
    alias_limits.max_replay_stack_depth = 8;
    alias_limits.max_alias_expansions_per_anchor = MAX_ALIASES;
    serde_saphyr::options! {
        budget: Some(budget),
        alias_limits: alias_limits,
        strict_booleans: true,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlaybook {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub approval: Option<String>,
    #[serde(default)]
    pub inputs: BTreeMap<String, RawInput>,
    #[serde(default)]
    pub triggers: Vec<RawTrigger>,
    #[serde(default)]
    pub circuit_breaker: Option<RawBreaker>,
    pub steps: Vec<RawStep>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputType {
    String,
    Integer,
    Boolean,
}

impl InputType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Integer => "integer",
            Self::Boolean => "boolean",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInput {
    #[serde(rename = "type", default)]
    pub kind: Option<InputType>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    #[serde(default)]
    pub description: Option<String>,
}

/// The alert kinds a trigger can match.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    HeartbeatMissing,
    JobFailed,
    JobOverdue,
    RunRefused,
    AgentDown,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrigger {
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub heartbeat: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub kinds: Vec<AlertKind>,
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    #[serde(default)]
    pub cooldown: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub max_per_hour: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    #[default]
    Fail,
    Continue,
    Escalate,
}

/// The kinds of step (`type:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepType {
    Webhook,
    Script,
    Wait,
    Condition,
}

impl StepType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Script => "script",
            Self::Wait => "wait",
            Self::Condition => "condition",
        }
    }

    /// The keys a step of this kind may have besides `name` and `type`.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            Self::Webhook => &[
                "method",
                "url",
                "headers",
                "body",
                "success_codes",
                "timeout",
                "idempotent",
                "on_failure",
            ],
            Self::Script => &[
                "script",
                "on",
                "require",
                "max_parallel",
                "params",
                "timeout",
                "on_failure",
            ],
            Self::Wait => &["duration"],
            Self::Condition => &["check", "within", "every", "on_failure"],
        }
    }
}

/// A step as written: one strict struct for every kind (so the parser reads it directly and
/// reports the exact line of any error, which an internally tagged enum cannot), with the
/// kind's own keys checked by validation ([`StepType::keys`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: StepType,
    // webhook
    #[serde(default)]
    pub method: Option<Method>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    #[serde(default)]
    pub success_codes: Option<Vec<u16>>,
    #[serde(default)]
    pub idempotent: Option<bool>,
    // script
    #[serde(default)]
    pub script: Option<String>,
    #[serde(default)]
    pub on: Option<RawTarget>,
    #[serde(default)]
    pub require: Option<RawRequire>,
    #[serde(default)]
    pub max_parallel: Option<u32>,
    #[serde(default)]
    pub params: Option<BTreeMap<String, String>>,
    // wait
    #[serde(default)]
    pub duration: Option<String>,
    // condition
    #[serde(default)]
    pub check: Option<RawCheck>,
    #[serde(default)]
    pub within: Option<String>,
    #[serde(default)]
    pub every: Option<String>,
    // shared
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub on_failure: Option<OnFailure>,
}

impl RawStep {
    /// The keys present besides `name` and `type`.
    pub fn present_keys(&self) -> Vec<&'static str> {
        let flags = [
            ("method", self.method.is_some()),
            ("url", self.url.is_some()),
            ("headers", self.headers.is_some()),
            ("body", self.body.is_some()),
            ("success_codes", self.success_codes.is_some()),
            ("idempotent", self.idempotent.is_some()),
            ("script", self.script.is_some()),
            ("on", self.on.is_some()),
            ("require", self.require.is_some()),
            ("max_parallel", self.max_parallel.is_some()),
            ("params", self.params.is_some()),
            ("duration", self.duration.is_some()),
            ("check", self.check.is_some()),
            ("within", self.within.is_some()),
            ("every", self.every.is_some()),
            ("timeout", self.timeout.is_some()),
            ("on_failure", self.on_failure.is_some()),
        ];
        flags
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(k, _)| k)
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
pub enum Method {
    #[serde(rename = "GET")]
    Get,
    #[default]
    #[serde(rename = "POST")]
    Post,
    #[serde(rename = "PUT")]
    Put,
    #[serde(rename = "PATCH")]
    Patch,
    #[serde(rename = "DELETE")]
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }
}

/// `on: server`, `on: {agent_ids: [...]}` or `on: {labels: {k: v}}`.
#[derive(Debug)]
pub enum RawTarget {
    Server,
    Map(RawTargetMap),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTargetMap {
    #[serde(default)]
    pub agent_ids: Option<Vec<String>>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

impl<'de> Deserialize<'de> for RawTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawTarget;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`server`, {agent_ids: [...]} or {labels: {key: value}}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawTarget, E> {
                if v == "server" {
                    Ok(RawTarget::Server)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawTarget, A::Error> {
                RawTargetMap::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawTarget::Map)
            }
        }
        d.deserialize_any(V)
    }
}

/// `require: all | any | <n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawRequire {
    All,
    Any,
    AtLeast(u64),
}

impl<'de> Deserialize<'de> for RawRequire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawRequire;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`all`, `any` or a number of agents")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawRequire, E> {
                match v {
                    "all" => Ok(RawRequire::All),
                    "any" => Ok(RawRequire::Any),
                    n => n
                        .parse()
                        .map(RawRequire::AtLeast)
                        .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawRequire, E> {
                Ok(RawRequire::AtLeast(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawRequire, E> {
                u64::try_from(v)
                    .map(RawRequire::AtLeast)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// The step states a `step_status` check can expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedStatus {
    Completed,
    Failed,
    Interrupted,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RawCheck {
    HeartbeatReceived {
        #[serde(default)]
        service: Option<String>,
        #[serde(default)]
        min_count: Option<u32>,
        #[serde(default)]
        status: Option<String>,
    },
    ServiceUp {
        #[serde(default)]
        service: Option<String>,
    },
    AlertResolved,
    HttpOk {
        url: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        success_codes: Vec<u16>,
    },
    StepStatus {
        step: String,
        status: ExpectedStatus,
    },
}

/// Where the keys of a document are: the line of each top-level key's value, and of each
/// step's keys. Read only when there is a problem to place; best effort (`None` when the
/// document's shape is too broken to map).
#[derive(Debug, Default)]
pub struct Lines {
    pub top: BTreeMap<String, u32>,
    pub steps: Vec<StepLines>,
    pub inputs: BTreeMap<String, u32>,
    pub triggers: Vec<u32>,
}

#[derive(Debug, Default)]
pub struct StepLines {
    pub start: u32,
    pub name: Option<String>,
    pub keys: BTreeMap<String, u32>,
}

#[derive(Deserialize)]
struct Skeleton {
    #[serde(default)]
    steps: Vec<Spanned<BTreeMap<String, Spanned<IgnoredAny>>>>,
    #[serde(default)]
    inputs: BTreeMap<String, Spanned<IgnoredAny>>,
    #[serde(default)]
    triggers: Vec<Spanned<IgnoredAny>>,
}

#[derive(Deserialize)]
struct StepNames {
    #[serde(default)]
    steps: Vec<StepName>,
}

#[derive(Deserialize)]
struct StepName {
    #[serde(default)]
    name: Option<String>,
}

impl Lines {
    pub fn read(text: &str) -> Self {
        let mut lines = Self::default();
        let top: Result<BTreeMap<String, Spanned<IgnoredAny>>, _> =
            serde_saphyr::from_str_with_options(text, options());
        if let Ok(top) = top {
            lines.top = top
                .into_iter()
                .map(|(k, v)| (k, v.referenced.line() as u32))
                .collect();
        }
        let skeleton: Result<Skeleton, _> = serde_saphyr::from_str_with_options(text, options());
        if let Ok(s) = skeleton {
            lines.steps = s
                .steps
                .into_iter()
                .map(|step| StepLines {
                    start: step.referenced.line() as u32,
                    name: None,
                    keys: step
                        .value
                        .into_iter()
                        .map(|(k, v)| (k, v.referenced.line() as u32))
                        .collect(),
                })
                .collect();
            lines.inputs = s
                .inputs
                .into_iter()
                .map(|(k, v)| (k, v.referenced.line() as u32))
                .collect();
            lines.triggers = s
                .triggers
                .into_iter()
                .map(|t| t.referenced.line() as u32)
                .collect();
        }
        let names: Result<StepNames, _> = serde_saphyr::from_str_with_options(text, options());
        if let Ok(names) = names {
            for (lines, named) in lines.steps.iter_mut().zip(names.steps) {
                lines.name = named.name;
            }
        }
        lines
    }

    /// The step (index) whose text contains `line`.
    pub fn step_at(&self, line: u32) -> Option<usize> {
        self.steps
            .iter()
            .rposition(|s| s.start != 0 && s.start <= line)
            .filter(|_| {
                // Before the first step's start, or outside `steps:` entirely, is no step.
                self.top.get("steps").is_some_and(|&l| l <= line)
            })
    }
}

/// Reads `text` into a [`RawPlaybook`], or the one problem that stopped the parser, placed on
/// its step and field where they can be found.
pub fn parse(text: &str) -> Result<RawPlaybook, Problem> {
    serde_saphyr::from_str_with_options(text, options()).map_err(|e| locate(text, &e))
}

/// Turns a parser error into a problem with its line, column, and — when the line falls inside
/// a step — that step's name and the offending field.
fn locate(text: &str, err: &serde_saphyr::Error) -> Problem {
    let rendered = err.render_with_options(serde_saphyr::render_options! {
        snippets: serde_saphyr::SnippetMode::Off,
    });
    // The plain rendering ends with " at line L, column C"; the location is reported apart.
    let message = match rendered.rfind(" at line ") {
        Some(i) => rendered[..i].to_owned(),
        None => rendered,
    };
    let message = message.trim_start_matches("error: ").to_owned();
    let (mut line, mut column) = match err.location() {
        Some(l) if l.line() > 0 => (Some(l.line() as u32), Some(l.column() as u32)),
        _ => (None, None),
    };
    let quoted = |prefix: &str| {
        message
            .find(prefix)
            .map(|i| &message[i + prefix.len()..])
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned)
    };
    let named = quoted("unknown field `")
        .or_else(|| quoted("missing field `"))
        .or_else(|| quoted("duplicate field `"));
    // A document that broke a budget is not read again to place the problem: that would spend
    // the budget three more times.
    let over_budget = ["budget breached", "alias replay limit", "limit exceeded"]
        .iter()
        .any(|m| message.contains(m));
    let lines = if over_budget {
        Lines::default()
    } else {
        Lines::read(text)
    };
    // The parser's own words for a broken budget name internal counters; say what was refused.
    let message = if over_budget {
        format!(
            "the document exceeds the parser's limits (nesting depth {MAX_DEPTH}, {MAX_NODES} \
             nodes, {MAX_ALIASES} anchors and {MAX_ALIASES} aliases, {MAX_REPLAYED_EVENTS} \
             events replayed through aliases): an alias bomb or an over-nested document is \
             refused unread"
        )
    } else {
        message
    };
    let step = line.and_then(|l| lines.step_at(l));
    let mut field = named.clone();
    let mut step_name = None;
    if let Some(i) = step {
        let s = &lines.steps[i];
        step_name = Some(s.name.clone().unwrap_or_else(|| format!("#{}", i + 1)));
        // An unknown field's own line is more useful than the step's first line.
        if let Some(&l) = named.as_ref().and_then(|f| s.keys.get(f))
            && line != Some(l)
        {
            line = Some(l);
            column = None;
        }
        if field.is_none() {
            field = line.and_then(|l| {
                s.keys
                    .iter()
                    .filter(|&(_, &kl)| kl <= l)
                    .max_by_key(|&(_, &kl)| kl)
                    .map(|(k, _)| k.clone())
            });
        }
    } else if field.is_none() {
        field = line.and_then(|l| {
            lines
                .top
                .iter()
                .filter(|&(_, &kl)| kl <= l)
                .max_by_key(|&(_, &kl)| kl)
                .map(|(k, _)| k.clone())
        });
    }
    Problem {
        step: step_name,
        field: field.unwrap_or_default(),
        line,
        column: if line.is_some() { column } else { None },
        message,
    }
}
