//! Variables: `${NAME}`, `${steps.<step>.<field>}` and `${secrets.NAME}` in the text of a
//! playbook, and the masking of secret values in everything that leaves an execution.
//!
//! A [`Template`] is parsed once, when the document is validated, so a malformed reference is a
//! validation problem; rendering resolves every reference through a [`Scope`] and fails on the
//! first one it cannot resolve — a reference is never left in the text. `$${` writes a literal
//! `${`; a `$` not followed by `{` is just a dollar sign.
//!
//! Script parameters are rendered with the same templates, but their values travel to the
//! script as data (environment variables); nothing here ever builds script source.

use std::collections::BTreeMap;
use std::fmt;

use aho_corasick::{AhoCorasick, MatchKind};

use super::secrets::SecretValue;

/// The names the execution context provides, spelled as they are written in `${…}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ContextVar {
    ServiceId,
    ServiceName,
    HeartbeatName,
    AlertId,
    ExecutionId,
    PlaybookName,
    PlaybookVersion,
    Trigger,
}

impl ContextVar {
    pub const ALL: [Self; 8] = [
        Self::ServiceId,
        Self::ServiceName,
        Self::HeartbeatName,
        Self::AlertId,
        Self::ExecutionId,
        Self::PlaybookName,
        Self::PlaybookVersion,
        Self::Trigger,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ServiceId => "SERVICE_ID",
            Self::ServiceName => "SERVICE_NAME",
            Self::HeartbeatName => "HEARTBEAT_NAME",
            Self::AlertId => "ALERT_ID",
            Self::ExecutionId => "EXECUTION_ID",
            Self::PlaybookName => "PLAYBOOK_NAME",
            Self::PlaybookVersion => "PLAYBOOK_VERSION",
            Self::Trigger => "TRIGGER",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == name)
    }
}

/// The fields of an earlier step's result that `${steps.<step>.<field>}` may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StepField {
    /// `completed`, `failed`, `interrupted`, … (every step kind).
    Status,
    /// The script's exit code (script steps; the first failing run's, else the last run's).
    ExitCode,
    /// The captured, capped and masked output (script and webhook steps).
    Output,
    /// The HTTP status code of the response (webhook steps).
    HttpStatus,
}

impl StepField {
    pub const ALL: [Self; 4] = [Self::Status, Self::ExitCode, Self::Output, Self::HttpStatus];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::ExitCode => "exit_code",
            Self::Output => "output",
            Self::HttpStatus => "http_status",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == name)
    }
}

/// One `${…}` reference as written; whether a plain name is a context variable or an input is
/// decided by validation, which knows the declared inputs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reference {
    /// `${NAME}`: a context variable or a declared input.
    Name(String),
    /// `${steps.<step>.<field>}`; `field` is kept as written so validation can name a bad one.
    Step { step: String, field: String },
    /// `${secrets.NAME}`.
    Secret(String),
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => write!(f, "${{{name}}}"),
            Self::Step { step, field } => write!(f, "${{steps.{step}.{field}}}"),
            Self::Secret(name) => write!(f, "${{secrets.{name}}}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Ref(Reference),
}

/// A parsed text with references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// Why a text is not a valid template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("`${{` at byte {at} is never closed with `}}` (write `$${{` for a literal `${{`)")]
    Unclosed { at: usize },
    #[error(
        "`${{{inner}}}` is not a variable: use ${{NAME}}, ${{steps.<step>.<field>}} or ${{secrets.NAME}}"
    )]
    Malformed { inner: String },
}

/// A reference that could not be resolved when rendering. A secret is named (never shown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub reference: Reference,
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reference {
            Reference::Secret(name) => write!(
                f,
                "unknown secret {}: no secret called `{name}` is stored",
                self.reference
            ),
            r => write!(f, "unknown variable {r}"),
        }
    }
}

impl std::error::Error for Unresolved {}

/// One piece of a rendered text whose secrets are kept as references: what a script
/// parameter that uses `${secrets.NAME}` is stored as, so that the run record holds the
/// secret's name and never its value (the value is put in when the run is sent to its agent).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamPart {
    /// Text as rendered (every other reference resolved).
    Text(String),
    /// The value of the secret of that name.
    Secret(String),
}

/// The secret names `parts` refers to.
pub fn secret_names(parts: &[ParamPart]) -> impl Iterator<Item = &str> {
    parts.iter().filter_map(|p| match p {
        ParamPart::Secret(n) => Some(n.as_str()),
        ParamPart::Text(_) => None,
    })
}

/// Puts `parts` together, each secret's value from `secret`; the first secret it does not
/// have is the error (its name).
pub fn join_parts<'a>(
    parts: &[ParamPart],
    secret: impl Fn(&str) -> Option<&'a str>,
) -> Result<String, String> {
    let mut out = String::new();
    for p in parts {
        match p {
            ParamPart::Text(t) => out.push_str(t),
            ParamPart::Secret(n) => out.push_str(secret(n).ok_or_else(|| n.clone())?),
        }
    }
    Ok(out)
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A step name: 1 to 64 characters of `A-Z a-z 0-9 _ -`.
pub fn is_step_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A variable, input or secret name: a letter or `_`, then letters, digits or `_`.
pub fn is_variable_name(s: &str) -> bool {
    s.len() <= 64 && is_name(s)
}

fn parse_reference(inner: &str) -> Option<Reference> {
    if let Some(rest) = inner.strip_prefix("secrets.") {
        return is_variable_name(rest).then(|| Reference::Secret(rest.to_owned()));
    }
    if let Some(rest) = inner.strip_prefix("steps.") {
        let (step, field) = rest.rsplit_once('.')?;
        return (is_step_name(step) && is_name(field)).then(|| Reference::Step {
            step: step.to_owned(),
            field: field.to_owned(),
        });
    }
    is_variable_name(inner).then(|| Reference::Name(inner.to_owned()))
}

impl Template {
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = source;
        let mut offset = 0;
        while let Some(i) = rest.find('$') {
            text.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(escaped) = after.strip_prefix("${") {
                text.push_str("${");
                offset += i + 3;
                rest = escaped;
            } else if let Some(open) = after.strip_prefix('{') {
                let close = open
                    .find('}')
                    .ok_or(TemplateError::Unclosed { at: offset + i })?;
                let inner = &open[..close];
                let reference = parse_reference(inner).ok_or_else(|| TemplateError::Malformed {
                    inner: inner.to_owned(),
                })?;
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(Part::Ref(reference));
                offset += i + 2 + close + 1;
                rest = &open[close + 1..];
            } else {
                text.push('$');
                offset += i + 1;
                rest = after;
            }
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// The empty text.
    pub fn empty() -> Self {
        Self {
            source: String::new(),
            parts: Vec::new(),
        }
    }

    /// The text as written in the playbook.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every reference, in order of appearance.
    pub fn references(&self) -> impl Iterator<Item = &Reference> {
        self.parts.iter().filter_map(|p| match p {
            Part::Ref(r) => Some(r),
            Part::Text(_) => None,
        })
    }

    /// The text before the first reference (what validation can check statically, e.g. a URL's
    /// scheme).
    pub fn literal_prefix(&self) -> &str {
        match self.parts.first() {
            Some(Part::Text(t)) => t,
            _ => "",
        }
    }

    /// Whether the text uses a secret.
    pub fn uses_secrets(&self) -> bool {
        self.references().any(|r| matches!(r, Reference::Secret(_)))
    }

    /// Resolves every reference but keeps secrets as [`ParamPart::Secret`]; the first
    /// reference `scope` cannot resolve (a secret it does not hold included) is an error.
    pub fn render_parts(&self, scope: &Scope) -> Result<Vec<ParamPart>, Unresolved> {
        let mut out: Vec<ParamPart> = Vec::new();
        let mut text = String::new();
        for part in &self.parts {
            let value = match part {
                Part::Text(t) => t.as_str(),
                Part::Ref(r) => scope.resolve(r).ok_or_else(|| Unresolved {
                    reference: r.clone(),
                })?,
            };
            match part {
                Part::Ref(Reference::Secret(name)) => {
                    if !text.is_empty() {
                        out.push(ParamPart::Text(std::mem::take(&mut text)));
                    }
                    out.push(ParamPart::Secret(name.clone()));
                }
                _ => text.push_str(value),
            }
        }
        if !text.is_empty() {
            out.push(ParamPart::Text(text));
        }
        Ok(out)
    }

    /// Resolves every reference; the first unresolvable one is an error.
    pub fn render(&self, scope: &Scope) -> Result<String, Unresolved> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Ref(r) => out.push_str(scope.resolve(r).ok_or_else(|| Unresolved {
                    reference: r.clone(),
                })?),
            }
        }
        Ok(out)
    }
}

/// What a running execution can substitute: its context, its inputs, its earlier steps'
/// results and the secrets it references.
#[derive(Default)]
pub struct Scope {
    context: BTreeMap<ContextVar, String>,
    inputs: BTreeMap<String, String>,
    steps: BTreeMap<(String, StepField), String>,
    secrets: BTreeMap<String, SecretValue>,
}

impl Scope {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn context(mut self, var: ContextVar, value: impl Into<String>) -> Self {
        self.context.insert(var, value.into());
        self
    }

    pub fn inputs(mut self, inputs: BTreeMap<String, String>) -> Self {
        self.inputs = inputs;
        self
    }

    pub fn step(mut self, step: &str, field: StepField, value: impl Into<String>) -> Self {
        self.steps.insert((step.to_owned(), field), value.into());
        self
    }

    pub fn secret(mut self, name: &str, value: SecretValue) -> Self {
        self.secrets.insert(name.to_owned(), value);
        self
    }

    /// A context variable wins over an input of the same name; validation refuses such inputs.
    pub fn resolve(&self, reference: &Reference) -> Option<&str> {
        match reference {
            Reference::Name(name) => ContextVar::parse(name)
                .and_then(|v| self.context.get(&v))
                .or_else(|| self.inputs.get(name))
                .map(String::as_str),
            Reference::Step { step, field } => StepField::parse(field)
                .and_then(|f| self.steps.get(&(step.clone(), f)))
                .map(String::as_str),
            Reference::Secret(name) => self.secrets.get(name).map(SecretValue::expose),
        }
    }

    /// The secrets this scope holds, by name.
    pub fn secrets(mut self, secrets: BTreeMap<String, SecretValue>) -> Self {
        self.secrets.extend(secrets);
        self
    }

    /// A masker for every secret this scope holds.
    pub fn masker(&self) -> Masker {
        Masker::new(self.secrets.values().map(SecretValue::expose))
    }
}

/// What replaces a secret value in masked text.
pub const MASK: &str = "********";

/// Replaces every occurrence of any secret value in a text with [`MASK`]. Longest values win
/// where two overlap, so a secret that contains another is masked whole.
#[derive(Clone)]
pub struct Masker {
    matcher: Option<AhoCorasick>,
    /// The values, for [`Masker::mask_cut`]'s look at the end of a cut text.
    values: std::sync::Arc<[Box<str>]>,
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Masker(..)")
    }
}

impl Masker {
    /// Empty values are ignored (they would match everywhere).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let patterns: Vec<&str> = values.into_iter().filter(|v| !v.is_empty()).collect();
        let matcher = if patterns.is_empty() {
            None
        } else {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .ok()
        };
        let values = patterns.iter().map(|v| Box::<str>::from(*v)).collect();
        Self { matcher, values }
    }

    /// Masks a text that was cut short (an output cap): every whole value, and also a
    /// trailing part that is the beginning of a value — a secret cut in half by the cap, whose
    /// first half would otherwise be left in the text. (Text that merely ends like the start of
    /// a secret is masked too: at a cut, the engine cannot tell the two apart.)
    pub fn mask_cut(&self, text: &str) -> String {
        let mut out = self.mask(text);
        let longest = self
            .values
            .iter()
            .filter_map(|v| {
                (1..v.len())
                    .rev()
                    .filter(|&k| v.is_char_boundary(k))
                    .find(|&k| out.ends_with(&v[..k]))
            })
            .max();
        if let Some(k) = longest {
            out.truncate(out.len() - k);
            out.push_str(MASK);
        }
        out
    }

    /// [`Masker::mask_cut`] when `cut`, else [`Masker::mask`].
    pub fn mask_maybe_cut(&self, text: &str, cut: bool) -> String {
        if cut {
            self.mask_cut(text)
        } else {
            self.mask(text)
        }
    }

    pub fn mask(&self, text: &str) -> String {
        match &self.matcher {
            Some(m) => {
                let replacements = vec![MASK; m.patterns_len()];
                m.replace_all(text, &replacements)
            }
            None => text.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope::new()
            .context(ContextVar::ServiceName, "api")
            .context(ContextVar::ExecutionId, "42")
            .inputs(BTreeMap::from([(
                "unit".to_owned(),
                "api.service".to_owned(),
            )]))
            .step("restart", StepField::Status, "completed")
            .secret("TOKEN", SecretValue::new("s3cr3t-value"))
    }

    #[test]
    fn parses_and_renders_every_reference_kind() {
        let t = Template::parse(
            "svc=${SERVICE_NAME} unit=${unit} st=${steps.restart.status} auth=${secrets.TOKEN}",
        )
        .unwrap();
        assert_eq!(
            t.references().cloned().collect::<Vec<_>>(),
            vec![
                Reference::Name("SERVICE_NAME".into()),
                Reference::Name("unit".into()),
                Reference::Step {
                    step: "restart".into(),
                    field: "status".into()
                },
                Reference::Secret("TOKEN".into()),
            ]
        );
        assert_eq!(
            t.render(&scope()).unwrap(),
            "svc=api unit=api.service st=completed auth=s3cr3t-value"
        );
    }

    #[test]
    fn escapes_and_lone_dollars_stay_literal() {
        let t = Template::parse("cost $5, literal $${HOME} and ${EXECUTION_ID}$").unwrap();
        assert_eq!(
            t.render(&scope()).unwrap(),
            "cost $5, literal ${HOME} and 42$"
        );
        assert_eq!(t.references().count(), 1);
    }

    #[test]
    fn an_unknown_variable_is_an_error_never_left_in_the_text() {
        let t = Template::parse("id=${ALERT_ID}").unwrap();
        let err = t.render(&scope()).unwrap_err();
        assert_eq!(err.reference, Reference::Name("ALERT_ID".into()));
        assert_eq!(err.to_string(), "unknown variable ${ALERT_ID}");
        let t = Template::parse("${secrets.OTHER}").unwrap();
        assert!(t.render(&scope()).is_err());
        let t = Template::parse("${steps.restart.exit_code}").unwrap();
        assert!(t.render(&scope()).is_err());
    }

    #[test]
    fn a_missing_secret_is_named_in_the_error_never_shown() {
        let t = Template::parse("Bearer ${secrets.OTHER}").unwrap();
        let err = t.render(&scope()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown secret ${secrets.OTHER}: no secret called `OTHER` is stored"
        );
        assert!(t.render_parts(&scope()).is_err());
    }

    #[test]
    fn parts_keep_secrets_as_references_and_join_back() {
        let t =
            Template::parse("Bearer ${secrets.TOKEN} for ${SERVICE_NAME}${secrets.TOKEN}").unwrap();
        assert!(t.uses_secrets());
        assert!(!Template::parse("${SERVICE_NAME}").unwrap().uses_secrets());
        let parts = t.render_parts(&scope()).unwrap();
        assert_eq!(
            parts,
            vec![
                ParamPart::Text("Bearer ".into()),
                ParamPart::Secret("TOKEN".into()),
                ParamPart::Text(" for api".into()),
                ParamPart::Secret("TOKEN".into()),
            ]
        );
        // Stored as JSON without the value.
        let stored = serde_json::to_string(&parts).unwrap();
        assert!(!stored.contains("s3cr3t-value"), "{stored}");
        let back: Vec<ParamPart> = serde_json::from_str(&stored).unwrap();
        assert_eq!(secret_names(&back).collect::<Vec<_>>(), ["TOKEN", "TOKEN"]);
        let joined = join_parts(&back, |n| (n == "TOKEN").then_some("s3cr3t-value")).unwrap();
        assert_eq!(joined, t.render(&scope()).unwrap());
        assert_eq!(join_parts(&back, |_| None), Err("TOKEN".to_owned()));
        // Text that looks like a reference stays text.
        let s = Scope::new()
            .inputs(BTreeMap::from([(
                "x".to_owned(),
                "${secrets.TOKEN}".to_owned(),
            )]))
            .secret("TOKEN", SecretValue::new("v"));
        let parts = Template::parse("${x}").unwrap().render_parts(&s).unwrap();
        assert_eq!(parts, vec![ParamPart::Text("${secrets.TOKEN}".into())]);
    }

    #[test]
    fn malformed_references_are_refused() {
        assert_eq!(
            Template::parse("a ${unclosed"),
            Err(TemplateError::Unclosed { at: 2 })
        );
        for bad in [
            "${}",
            "${1abc}",
            "${a b}",
            "${secrets.}",
            "${steps.x}",
            "${steps..status}",
            "${$x}",
        ] {
            assert!(
                matches!(Template::parse(bad), Err(TemplateError::Malformed { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn masks_every_secret_value_longest_first() {
        let m = Masker::new(["abc", "abcdef", ""]);
        assert_eq!(m.mask("x abcdef y abc z"), format!("x {MASK} y {MASK} z"));
        assert_eq!(m.mask("nothing here"), "nothing here");
        let m = scope().masker();
        assert_eq!(
            m.mask("curl -H 'Authorization: s3cr3t-value' failed: s3cr3t-value"),
            format!("curl -H 'Authorization: {MASK}' failed: {MASK}")
        );
        assert_eq!(Masker::new([]).mask("as is"), "as is");
    }

    #[test]
    fn a_cut_text_is_masked_where_a_secret_was_cut_in_half() {
        let m = Masker::new(["s3cr3t-value", "other"]);
        // The cap cut the value after `s3cr3`: that half is masked too.
        assert_eq!(m.mask_cut("token=s3cr3"), format!("token={MASK}"));
        assert_eq!(
            m.mask_cut("a s3cr3t-value b s3cr3t-v"),
            format!("a {MASK} b {MASK}")
        );
        // The longest beginning wins; a whole value at the end is masked once.
        assert_eq!(m.mask_cut("x oth"), format!("x {MASK}"));
        assert_eq!(m.mask_cut("x s3cr3t-value"), format!("x {MASK}"));
        // Nothing like a secret at the end: as `mask`.
        assert_eq!(m.mask_cut("plain end"), "plain end");
        // A text that was not cut keeps a tail that only looks like a beginning.
        assert_eq!(m.mask_maybe_cut("token=s3cr3", false), "token=s3cr3");
        assert_eq!(Masker::new([]).mask_cut("as is"), "as is");
        // Multibyte values are cut at character boundaries.
        let m = Masker::new(["pässwörd"]);
        assert_eq!(m.mask_cut("p=pässw"), format!("p={MASK}"));
    }
}
