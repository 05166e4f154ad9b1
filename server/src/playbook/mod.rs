//! Playbooks: the pure core of the auto-remediation engine.
//!
//! This module owns the playbook **document** (parsing with size, depth and alias limits,
//! strict keys), its validation into a typed [`Plan`] (every problem at once), **variables**
//! and secret **masking**, the **secrets** cipher and keyring, the **execution state machine**
//! (what to persist and what to do next, as a function of `(now, state, event)`), alert
//! **trigger** matching and the **circuit breaker**.
//!
//! It must not do I/O: no store, no HTTP, no clock, no spawned task. Time is a parameter;
//! the world (scripts, secrets) is reached through the caller's [`Catalog`]. The driver that
//! loads executions, applies decisions in store transactions, sends webhooks and dispatches
//! runs lives elsewhere and stands on these functions.
//!
//! Layout:
//! - [`document`] — the raw YAML/JSON types and the limited parser, with line placement.
//! - [`plan`] — validation into a [`Plan`]; inputs against declared types.
//! - [`duration`] — `30s`, `5m`, `1h30m`.
//! - [`vars`] — `${…}` templates, the substitution [`vars::Scope`], [`vars::Masker`].
//! - [`secrets`] — AES-256-GCM sealing with the name as associated data, key ids, rotation.
//! - [`machine`] — execution states, step results, approvals, recovery after a crash.
//! - [`trigger`] — which alert fires which playbook, cooldowns.
//! - [`breaker`] — the circuit breaker over recent execution starts.

pub mod breaker;
pub mod document;
pub mod duration;
pub mod machine;
pub mod plan;
pub mod secrets;
pub mod trigger;
pub mod vars;

use std::fmt;

use serde::Serialize;

pub use plan::{Catalog, Plan, validate};

/// One problem with a document or its inputs: where (step, field, line) and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The step's name, when the problem is inside a step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The field, as a path inside the step (or the document): `timeout`, `headers.X-Token`,
    /// `inputs.unit.default`, `triggers[0].service`.
    pub field: String,
    /// 1-based line in the document, where the parser knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(step) = &self.step {
            write!(f, "step `{step}`: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// Larger than [`document::MAX_DOCUMENT_BYTES`]; refused before parsing (HTTP 413).
    #[error("the playbook is {bytes} bytes, more than the {max} accepted")]
    TooLarge { bytes: usize, max: usize },
    /// Not a valid playbook (HTTP 400): every problem found.
    #[error("the playbook is not valid: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
}

impl DocumentError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::TooLarge { .. } => &[],
            Self::Invalid(p) => p,
        }
    }
}

#[cfg(test)]
mod tests;
