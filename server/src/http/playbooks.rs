//! v2 playbooks: documents stored with immutable versions, and the dry-run validation.
//!
//! A document arrives either as the raw body with `Content-Type: application/yaml` (also
//! `application/x-yaml`, `text/yaml`, `text/x-yaml`) — YAML or JSON text, exactly as it will be
//! stored and hashed — or as JSON `{"document": "<text>"}` (any other content type, as the
//! other v2 routes read JSON). Every document passes `playbook::validate` before anything is
//! written; references to scripts and secrets are checked against the store ([`StoreCatalog`]).
//! An invalid document is a 400 whose message lists every problem and whose `problems` field
//! has each one as `{step, field, line, column, message}`; a document over 256 KiB is a 413.
//!
//! Scopes: `read` for the GETs; `write` to validate, create, add a version, disable and
//! restore — except that a document that uses `${secrets.…}` needs `admin`, because a playbook
//! can send a secret wherever its webhook points, and secrets are an admin's to hand out.
//!
//! `POST /v2/playbooks/{id}/execute` starts an execution of the current version (COMPAT: 201
//! at once, the run is not awaited); it needs the `run` scope (admin implies it), like any
//! other way of running something on hosts. [`start_execution`] is shared with the signed
//! webhook trigger (`http::webhook_trigger`).

use std::cell::RefCell;
use std::collections::BTreeSet;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::audit::entry;
use super::error::{ApiError, ApiResult, Envelope, NoResults, ok};
use super::extract::{
    Caller, Page, PageParams, Params, actor, paginated, parse_json, path_id, read_body,
};
use super::schema::{Time, time};
use crate::domain::{PlaybookId, Scope};
use crate::playbook::duration;
use crate::playbook::plan::{
    Approval, Body, Check, Plan, Require, StepKind, Target, content_sha256,
};
use crate::playbook::{Catalog, DocumentError, Problem, validate};
use crate::store::{
    AddVersionOutcome, CreatePlaybookOutcome, NewPlaybookVersion, Playbook, PlaybookFilter,
    PlaybookRecord, PlaybookVersion, PlaybookVersionInfo, ToggleOutcome,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_playbooks, create_playbook))
        .routes(routes!(validate_playbook))
        .routes(routes!(get_playbook, put_playbook, disable_playbook))
        .routes(routes!(get_version))
        .routes(routes!(restore_playbook))
        .routes(routes!(execute_playbook))
}

// ---- the document body ----------------------------------------------------------------------

/// The JSON form of a document upload.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentIn {
    /// The playbook document (YAML or JSON text), stored and hashed exactly as given.
    #[schema(max_length = 262144)]
    document: String,
}

/// The document text of a request: the raw body under a YAML content type, else the
/// `document` field of a JSON body.
pub struct DocumentText(pub String);

fn is_yaml(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|t| {
            matches!(
                t.as_str(),
                "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml"
            )
        })
}

impl<S: Send + Sync> FromRequest<S> for DocumentText {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let yaml = is_yaml(req.headers());
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(
                "Request body is empty; send the playbook as application/yaml or as JSON \
                 {\"document\": \"...\"}.",
            ));
        }
        let text = if yaml {
            String::from_utf8(bytes.to_vec())
                .map_err(|_| ApiError::bad_request("The playbook is not valid UTF-8."))?
        } else {
            parse_json::<DocumentIn>(&bytes)
                .map_err(|e| {
                    ApiError::bad_request(format!(
                        "{} Send the playbook as the raw body with Content-Type: \
                         application/yaml, or as JSON {{\"document\": \"<text>\"}}.",
                        e.message
                    ))
                })?
                .document
        };
        Ok(Self(text))
    }
}

// ---- the catalog ----------------------------------------------------------------------------

/// Records the names validation asks about and says yes to all, so the store is asked only
/// about the scripts and secrets a document names.
#[derive(Default)]
struct Recorder {
    scripts: RefCell<BTreeSet<String>>,
    secrets: RefCell<BTreeSet<String>>,
}

impl Catalog for Recorder {
    fn script_exists(&self, name: &str) -> bool {
        self.scripts.borrow_mut().insert(name.to_owned());
        true
    }
    fn secret_exists(&self, name: &str) -> bool {
        self.secrets.borrow_mut().insert(name.to_owned());
        true
    }
    fn server_scripts_enabled(&self) -> bool {
        true
    }
}

/// What the store holds, for the names a document uses.
pub struct StoreCatalog {
    scripts: BTreeSet<String>,
    secrets: BTreeSet<String>,
    /// The scripts the operator allowed on the server (`MEDIC_SERVER_SCRIPTS`).
    server_scripts: BTreeSet<String>,
}

impl Catalog for StoreCatalog {
    fn script_exists(&self, name: &str) -> bool {
        self.scripts.contains(name)
    }
    fn secret_exists(&self, name: &str) -> bool {
        self.secrets.contains(name)
    }
    fn server_scripts_enabled(&self) -> bool {
        !self.server_scripts.is_empty()
    }
    fn server_script_allowed(&self, name: &str) -> bool {
        self.server_scripts.contains(name)
    }
}

/// A document checked against the store: the plan or every problem, and the secrets it uses.
pub struct Checked {
    pub result: Result<Plan, DocumentError>,
    /// The secrets the document references (stored or not).
    pub secrets: BTreeSet<String>,
}

/// Validates `text` with every reference to a script or secret checked against the store.
/// Validation runs twice: once to learn which names the document uses, once with the store's
/// answers for exactly those names.
pub async fn check(app: &AppState, text: &str) -> Result<Checked, ApiError> {
    let recorder = Recorder::default();
    let first = validate(text, &recorder);
    let (scripts, secrets) = (recorder.scripts.into_inner(), recorder.secrets.into_inner());
    if matches!(first, Err(DocumentError::TooLarge { .. })) {
        return Ok(Checked {
            result: first,
            secrets,
        });
    }
    let mut known_scripts = BTreeSet::new();
    for name in &scripts {
        if app.store.script_id_by_name(name).await?.is_some() {
            known_scripts.insert(name.clone());
        }
    }
    let known_secrets = if secrets.is_empty() {
        BTreeSet::new()
    } else {
        let names: Vec<String> = secrets.iter().cloned().collect();
        app.store
            .sealed_secrets(&names)
            .await?
            .into_iter()
            .map(|s| s.name)
            .collect()
    };
    let catalog = StoreCatalog {
        scripts: known_scripts,
        secrets: known_secrets,
        server_scripts: app
            .engine
            .server_scripts()
            .map(|s| s.allow.clone())
            .unwrap_or_default(),
    };
    Ok(Checked {
        result: validate(text, &catalog),
        secrets,
    })
}

// ---- response types -------------------------------------------------------------------------

/// One problem with a document: where it is and what is wrong.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProblemOut {
    /// The step's name, when the problem is inside a step.
    pub step: Option<String>,
    /// The field, as a path inside the step or the document (`timeout`, `inputs.unit.default`).
    pub field: String,
    /// 1-based line in the document, where known.
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub message: String,
}

impl From<&Problem> for ProblemOut {
    fn from(p: &Problem) -> Self {
        Self {
            step: p.step.clone(),
            field: p.field.clone(),
            line: p.line,
            column: p.column,
            message: p.message.clone(),
        }
    }
}

/// The body of a 400 for an invalid document: the error envelope plus every problem.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InvalidPlaybookEnvelope {
    /// Always `false`.
    pub success: bool,
    /// Every problem, in one sentence each.
    pub message: String,
    pub results: NoResults,
    pub problems: Vec<ProblemOut>,
}

/// The answer for a document that is not valid: 413 when too large, else 400 with every
/// problem (as text in `message` and structured in `problems`).
fn refused(e: &DocumentError) -> ApiError {
    let text = e.to_string();
    let mut chars = text.chars();
    let message = match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => text,
    };
    match e {
        DocumentError::TooLarge { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message),
        DocumentError::Invalid(problems) => {
            let out: Vec<ProblemOut> = problems.iter().map(ProblemOut::from).collect();
            ApiError::bad_request(message).with_field("problems", json!(out))
        }
    }
}

/// A stored version; `source` (the document text) only where a route says so.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlaybookVersionOut {
    pub playbook_id: i64,
    /// The document's `name` in this version.
    pub name: String,
    #[schema(minimum = 1)]
    pub version: i32,
    /// Hex SHA-256 of the document's UTF-8 bytes.
    pub sha256: String,
    pub author: String,
    /// The API key that stored the version (none for the bootstrap admin key).
    pub author_key: Option<String>,
    pub created_at: Time,
    /// Whether the playbook is enabled now.
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl PlaybookVersionOut {
    fn new(v: &PlaybookVersion, with_source: bool) -> Self {
        Self {
            playbook_id: v.playbook_id.0,
            name: v.name.clone(),
            version: v.version,
            sha256: v.sha256.clone(),
            author: v.author.clone(),
            author_key: v.author_key.as_ref().map(|k| k.0.clone()),
            created_at: v.created_at.into(),
            enabled: v.enabled,
            source: with_source.then(|| v.source.clone()),
        }
    }
}

/// A version in a playbook's history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VersionSummaryOut {
    #[schema(minimum = 1)]
    pub version: i32,
    pub sha256: String,
    pub author: String,
    pub author_key: Option<String>,
    pub created_at: Time,
}

impl From<&PlaybookVersionInfo> for VersionSummaryOut {
    fn from(v: &PlaybookVersionInfo) -> Self {
        Self {
            version: v.version,
            sha256: v.sha256.clone(),
            author: v.author.clone(),
            author_key: v.author_key.as_ref().map(|k| k.0.clone()),
            created_at: v.created_at.into(),
        }
    }
}

/// A playbook in a list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlaybookSummaryOut {
    pub playbook_id: i64,
    pub name: String,
    pub description: Option<String>,
    pub enabled: bool,
    #[schema(minimum = 1)]
    pub current_version: i32,
    /// The current version's SHA-256.
    pub sha256: String,
    pub created_at: Time,
    pub updated_at: Time,
    pub disabled_at: Option<Time>,
    pub disabled_by: Option<String>,
}

impl From<&PlaybookRecord> for PlaybookSummaryOut {
    fn from(r: &PlaybookRecord) -> Self {
        Self {
            playbook_id: r.id.0,
            name: r.name.clone(),
            description: r.description.clone(),
            enabled: r.enabled,
            current_version: r.current_version,
            sha256: r.sha256.clone(),
            created_at: r.created_at.into(),
            updated_at: r.updated_at.into(),
            disabled_at: time(r.disabled_at),
            disabled_by: r.disabled_by.clone(),
        }
    }
}

/// A playbook: its row, its current version with the document, and its history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlaybookOut {
    #[serde(flatten)]
    pub summary: PlaybookSummaryOut,
    pub current: PlaybookVersionOut,
    /// Every version, oldest first.
    pub versions: Vec<VersionSummaryOut>,
}

impl From<&Playbook> for PlaybookOut {
    fn from(p: &Playbook) -> Self {
        Self {
            summary: PlaybookSummaryOut::from(&p.record),
            current: PlaybookVersionOut::new(&p.current, true),
            versions: p.versions.iter().map(VersionSummaryOut::from).collect(),
        }
    }
}

/// A declared input of a plan.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InputOut {
    pub name: String,
    /// `string`, `integer` or `boolean`.
    #[serde(rename = "type")]
    pub kind: String,
    pub required: bool,
    pub default: Option<String>,
    pub description: Option<String>,
}

/// An alert trigger of a plan.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TriggerOut {
    pub service: Option<String>,
    pub heartbeat: Option<String>,
    pub team: Option<String>,
    /// Alert kinds; empty means every kind.
    pub kinds: Vec<String>,
    pub consecutive_failures: u32,
    /// `30m`, `1h`, …
    pub cooldown: Option<String>,
}

/// A step of a plan: its kind's settings, with durations written as in documents (`5m`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StepOut {
    pub name: String,
    /// `webhook`, `script`, `wait` or `condition`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `fail`, `continue` or `escalate`.
    pub on_failure: String,
    /// webhook: method and URL (as written, before substitution).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// webhook header names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<String>>,
    /// webhook: `text`, `json` or absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_codes: Option<Vec<u16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    /// script: the script's name, where it runs (`server`, `agents:a,b`, `labels:k=v,…`), how
    /// many must succeed, the fan-out limit and the parameter names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<Vec<String>>,
    /// webhook and script.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// condition: the check's kind and its deadlines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
}

/// A validated playbook as the engine will run it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlanOut {
    pub name: String,
    pub description: Option<String>,
    /// `none`, `required` or `timeout:<N>m`.
    pub approval: String,
    pub inputs: Vec<InputOut>,
    pub triggers: Vec<TriggerOut>,
    /// The playbook's own executions-per-hour limit.
    pub max_per_hour: Option<u32>,
    pub steps: Vec<StepOut>,
    /// Hex SHA-256 of the document's UTF-8 bytes (what its version will record).
    pub sha256: String,
}

fn step_out(step: &crate::playbook::plan::Step) -> StepOut {
    let mut out = StepOut {
        name: step.name.clone(),
        kind: step.kind.as_str().to_owned(),
        on_failure: serde_json::to_value(step.on_failure)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        method: None,
        url: None,
        headers: None,
        body: None,
        success_codes: None,
        idempotent: None,
        script: None,
        on: None,
        require: None,
        max_parallel: None,
        params: None,
        timeout: None,
        duration: None,
        check: None,
        within: None,
        every: None,
    };
    match &step.kind {
        StepKind::Webhook(w) => {
            out.method = Some(w.method.as_str().to_owned());
            out.url = Some(w.url.source().to_owned());
            out.headers = Some(w.headers.iter().map(|(k, _)| k.clone()).collect());
            out.body = w.body.as_ref().map(|b| {
                match b {
                    Body::Text(_) => "text",
                    Body::Json(_) => "json",
                }
                .to_owned()
            });
            out.success_codes = Some(w.success_codes.clone());
            out.idempotent = Some(w.idempotent);
            out.timeout = Some(duration::format(w.timeout));
        }
        StepKind::Script(s) => {
            out.script = Some(s.script.clone());
            out.on = Some(match &s.target {
                Target::Server => "server".to_owned(),
                Target::Agents(ids) => format!("agents:{}", ids.join(",")),
                Target::Labels(l) => format!(
                    "labels:{}",
                    l.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            });
            out.require = Some(match s.require {
                Require::All => "all".to_owned(),
                Require::Any => "any".to_owned(),
                Require::AtLeast(n) => n.to_string(),
            });
            out.max_parallel = s.max_parallel;
            out.params = Some(s.params.keys().cloned().collect());
            out.timeout = Some(duration::format(s.timeout));
        }
        StepKind::Wait { duration: d } => out.duration = Some(duration::format(*d)),
        StepKind::Condition(c) => {
            out.check = Some(
                match c.check {
                    Check::HeartbeatReceived { .. } => "heartbeat_received",
                    Check::ServiceUp { .. } => "service_up",
                    Check::AlertResolved => "alert_resolved",
                    Check::HttpOk { .. } => "http_ok",
                    Check::StepStatus { .. } => "step_status",
                }
                .to_owned(),
            );
            out.within = Some(duration::format(c.within));
            out.every = Some(duration::format(c.every));
        }
    }
    out
}

impl From<&Plan> for PlanOut {
    fn from(p: &Plan) -> Self {
        let snake = |v: serde_json::Value| v.as_str().map(str::to_owned).unwrap_or_default();
        Self {
            name: p.name.clone(),
            description: p.description.clone(),
            approval: match p.approval {
                Approval::None => "none".to_owned(),
                Approval::Required => "required".to_owned(),
                Approval::Timeout(d) => format!("timeout:{}m", d.as_secs() / 60),
            },
            inputs: p
                .inputs
                .iter()
                .map(|i| InputOut {
                    name: i.name.clone(),
                    kind: i.kind.as_str().to_owned(),
                    required: i.required,
                    default: i.default.clone(),
                    description: i.description.clone(),
                })
                .collect(),
            triggers: p
                .triggers
                .iter()
                .map(|t| TriggerOut {
                    service: t.service.as_ref().map(|x| x.source().to_owned()),
                    heartbeat: t.heartbeat.as_ref().map(|x| x.source().to_owned()),
                    team: t.team.clone(),
                    kinds: t
                        .kinds
                        .iter()
                        .map(|k| snake(serde_json::to_value(k).unwrap_or_default()))
                        .collect(),
                    consecutive_failures: t.consecutive_failures,
                    cooldown: t.cooldown.map(duration::format),
                })
                .collect(),
            max_per_hour: p.max_per_hour,
            steps: p.steps.iter().map(step_out).collect(),
            sha256: p.sha256.clone(),
        }
    }
}

/// The dry run's answer: the plan when the document is valid, else every problem.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ValidateOut {
    pub valid: bool,
    pub plan: Option<PlanOut>,
    pub problems: Vec<ProblemOut>,
    /// Hex SHA-256 of the document's UTF-8 bytes.
    pub sha256: String,
    /// The secrets the document references.
    pub secrets: Vec<String>,
}

// ---- handlers -------------------------------------------------------------------------------

/// Checks the document and the caller's right to store it; the plan to store.
async fn accept(app: &AppState, caller: &Caller, text: &str) -> Result<Plan, ApiError> {
    let checked = check(app, text).await?;
    let plan = checked.result.map_err(|e| refused(&e))?;
    if !checked.secrets.is_empty() {
        caller.require(Scope::Admin).map_err(|_| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "This playbook uses secrets (${secrets.…}); storing it needs an API key with \
                 the admin scope, because a playbook can send a secret wherever its webhook \
                 points.",
            )
        })?;
    }
    Ok(plan)
}

fn new_version(
    plan: &Plan,
    text: String,
    who: &str,
    caller: &Caller,
    app: &AppState,
) -> NewPlaybookVersion {
    let key = match caller {
        Caller::Key(p) => p.key_id.clone(),
        _ => None,
    };
    NewPlaybookVersion {
        name: plan.name.clone(),
        description: plan.description.clone(),
        sha256: plan.sha256.clone(),
        source: text,
        author: who.to_owned(),
        author_key: key,
        at: app.clock.now(),
    }
}

fn version_details(v: &PlaybookVersion) -> serde_json::Value {
    json!({
        "playbook_id": v.playbook_id.0,
        "name": v.name,
        "version": v.version,
        "sha256": v.sha256,
    })
}

/// List playbooks.
#[utoipa::path(get, path = "/v2/playbooks", tag = "playbooks",
    params(("name" = Option<String>, Query, description = "Case-insensitive substring of the name"),
           ("enabled" = Option<u8>, Query, description = "1: only enabled playbooks; 0: only disabled ones"),
           PageParams),
    responses((status = 200, description = "A page of playbooks", body = Envelope<Page<PlaybookSummaryOut>>),
              (status = 400, description = "Bad filter")),
    security(("bearer" = [])))]
async fn list_playbooks(State(app): State<AppState>, caller: Caller, params: Params) -> ApiResult {
    caller.require(Scope::Read)?;
    let page = params.page(50, 250)?;
    let filter = PlaybookFilter {
        name_contains: params.text("name").map(str::to_owned),
        enabled: params.flag("enabled")?,
    };
    let found = app.store.list_playbooks(&filter, page).await?;
    let entries: Vec<PlaybookSummaryOut> =
        found.entries.iter().map(PlaybookSummaryOut::from).collect();
    Ok(ok(
        StatusCode::OK,
        "",
        paginated(entries, found.total_count, page),
    ))
}

/// Store a new playbook (its version 1).
///
/// The body is the document with `Content-Type: application/yaml`, or JSON
/// `{"document": "<text>"}`. Nothing is stored unless the whole document is valid.
#[utoipa::path(post, path = "/v2/playbooks", tag = "playbooks",
    request_body(content = DocumentIn, description = "Or the document itself as application/yaml"),
    responses((status = 201, description = "Stored as version 1", body = Envelope<PlaybookVersionOut>),
              (status = 400, description = "Invalid document: every problem", body = InvalidPlaybookEnvelope),
              (status = 409, description = "A playbook with this name exists"),
              (status = 413, description = "Document larger than 256 KiB")),
    security(("bearer" = [])))]
async fn create_playbook(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    DocumentText(text): DocumentText,
) -> ApiResult {
    caller.require(Scope::Write)?;
    let who = actor(&headers, &caller)?;
    let plan = accept(&app, &caller, &text).await?;
    let new = new_version(&plan, text, &who.name, &caller, &app);
    let audit = |v: &PlaybookVersion| entry("playbook_created", &who, None, version_details(v));
    match app.store.create_playbook(&new, &audit).await? {
        CreatePlaybookOutcome::Created(v) => Ok(ok(
            StatusCode::CREATED,
            "Playbook stored as version 1.",
            PlaybookVersionOut::new(&v, false),
        )),
        CreatePlaybookOutcome::NameTaken { id, enabled } => Err(ApiError::conflict(format!(
            "Playbook {id} is already called {:?}{}; send a new version with PUT \
             /v2/playbooks/{id} instead.",
            plan.name,
            if enabled {
                ""
            } else {
                " (disabled: restore it first)"
            }
        ))),
    }
}

/// Validate a document without storing anything (dry run).
///
/// Answers 200 whether or not the document is valid: `valid`, the parsed plan, and every
/// problem. References to scripts and secrets are checked against what is stored now.
#[utoipa::path(post, path = "/v2/playbooks/validate", tag = "playbooks",
    request_body(content = DocumentIn, description = "Or the document itself as application/yaml"),
    responses((status = 200, description = "The plan, or every problem", body = Envelope<ValidateOut>),
              (status = 400, description = "Unreadable body"),
              (status = 413, description = "Document larger than 256 KiB")),
    security(("bearer" = [])))]
async fn validate_playbook(
    State(app): State<AppState>,
    caller: Caller,
    DocumentText(text): DocumentText,
) -> ApiResult {
    caller.require(Scope::Write)?;
    let checked = check(&app, &text).await?;
    let secrets = checked.secrets.into_iter().collect();
    let sha256 = content_sha256(&text);
    let out = match checked.result {
        Ok(plan) => ValidateOut {
            valid: true,
            plan: Some(PlanOut::from(&plan)),
            problems: Vec::new(),
            sha256,
            secrets,
        },
        Err(e @ DocumentError::TooLarge { .. }) => return Err(refused(&e)),
        Err(DocumentError::Invalid(problems)) => ValidateOut {
            valid: false,
            plan: None,
            problems: problems.iter().map(ProblemOut::from).collect(),
            sha256,
            secrets,
        },
    };
    let message = if out.valid {
        "The playbook is valid; nothing was stored."
    } else {
        "The playbook is not valid; nothing was stored."
    };
    Ok(ok(StatusCode::OK, message, out))
}

async fn load(app: &AppState, raw: &str) -> Result<Playbook, ApiError> {
    let id = PlaybookId(path_id(raw, "playbook_id")?);
    app.store
        .get_playbook(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Playbook {id} was not found.")))
}

/// Fetch a playbook: its current version (with the document) and every version's summary.
#[utoipa::path(get, path = "/v2/playbooks/{playbook_id}", tag = "playbooks",
    params(("playbook_id" = i64, Path, minimum = 1)),
    responses((status = 200, description = "The playbook", body = Envelope<PlaybookOut>),
              (status = 400, description = "Bad playbook_id"),
              (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn get_playbook(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(Scope::Read)?;
    let p = load(&app, &id).await?;
    Ok(ok(StatusCode::OK, "", PlaybookOut::from(&p)))
}

/// Fetch one version of a playbook, with its document.
#[utoipa::path(get, path = "/v2/playbooks/{playbook_id}/versions/{version}", tag = "playbooks",
    params(("playbook_id" = i64, Path, minimum = 1), ("version" = i32, Path, minimum = 1)),
    responses((status = 200, description = "The version", body = Envelope<PlaybookVersionOut>),
              (status = 400, description = "Bad playbook_id or version"),
              (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn get_version(
    State(app): State<AppState>,
    caller: Caller,
    Path((id, version)): Path<(String, String)>,
) -> ApiResult {
    caller.require(Scope::Read)?;
    let id = PlaybookId(path_id(&id, "playbook_id")?);
    let n = i32::try_from(path_id(&version, "version")?)
        .map_err(|_| ApiError::bad_request("version is out of range."))?;
    let v = app
        .store
        .get_playbook_version(id, n)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Playbook {id} has no version {n}.")))?;
    Ok(ok(StatusCode::OK, "", PlaybookVersionOut::new(&v, true)))
}

/// Store a new version of a playbook (it becomes current).
///
/// A document whose text hashes like the current version's stores nothing (200). The document
/// may rename the playbook.
#[utoipa::path(put, path = "/v2/playbooks/{playbook_id}", tag = "playbooks",
    params(("playbook_id" = i64, Path, minimum = 1)),
    request_body(content = DocumentIn, description = "Or the document itself as application/yaml"),
    responses((status = 201, description = "New version stored", body = Envelope<PlaybookVersionOut>),
              (status = 200, description = "Same text as the current version; nothing stored",
               body = Envelope<PlaybookVersionOut>),
              (status = 400, description = "Invalid document: every problem", body = InvalidPlaybookEnvelope),
              (status = 404, description = "Not found"),
              (status = 409, description = "Disabled, or the new name is another playbook's"),
              (status = 413, description = "Document larger than 256 KiB")),
    security(("bearer" = [])))]
async fn put_playbook(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    DocumentText(text): DocumentText,
) -> ApiResult {
    caller.require(Scope::Write)?;
    let who = actor(&headers, &caller)?;
    let id = PlaybookId(path_id(&id, "playbook_id")?);
    let plan = accept(&app, &caller, &text).await?;
    let new = new_version(&plan, text, &who.name, &caller, &app);
    let audit =
        |v: &PlaybookVersion| entry("playbook_version_added", &who, None, version_details(v));
    match app.store.add_playbook_version(id, &new, &audit).await? {
        AddVersionOutcome::Created(v) => Ok(ok(
            StatusCode::CREATED,
            &format!("Version {} stored; it is now current.", v.version),
            PlaybookVersionOut::new(&v, false),
        )),
        AddVersionOutcome::Unchanged(v) => Ok(ok(
            StatusCode::OK,
            &format!(
                "The document is identical to the current version {}; no version was added.",
                v.version
            ),
            PlaybookVersionOut::new(&v, false),
        )),
        AddVersionOutcome::NotFound => {
            Err(ApiError::not_found(format!("Playbook {id} was not found.")))
        }
        AddVersionOutcome::Disabled => Err(ApiError::conflict(format!(
            "Playbook {id} is disabled; restore it (POST /v2/playbooks/{id}/restore) before \
             adding a version."
        ))),
        AddVersionOutcome::NameTaken { id: other } => Err(ApiError::conflict(format!(
            "Playbook {other} is already called {:?}.",
            plan.name
        ))),
    }
}

fn toggled(outcome: ToggleOutcome, id: PlaybookId, done: &str, already: &str) -> ApiResult {
    match outcome {
        ToggleOutcome::Done(r) => Ok(ok(StatusCode::OK, done, PlaybookSummaryOut::from(&r))),
        ToggleOutcome::Unchanged(r) => {
            Ok(ok(StatusCode::OK, already, PlaybookSummaryOut::from(&r)))
        }
        ToggleOutcome::NotFound => {
            Err(ApiError::not_found(format!("Playbook {id} was not found.")))
        }
    }
}

fn record_details(r: &PlaybookRecord) -> serde_json::Value {
    json!({ "playbook_id": r.id.0, "name": r.name, "version": r.current_version })
}

/// Disable a playbook: it starts no new execution and takes no new version until restored.
/// Its versions are kept.
#[utoipa::path(delete, path = "/v2/playbooks/{playbook_id}", tag = "playbooks",
    params(("playbook_id" = i64, Path, minimum = 1)),
    responses((status = 200, description = "Disabled (or already was)", body = Envelope<PlaybookSummaryOut>),
              (status = 400, description = "Bad playbook_id"),
              (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn disable_playbook(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(Scope::Write)?;
    let who = actor(&headers, &caller)?;
    let id = PlaybookId(path_id(&id, "playbook_id")?);
    let audit = |r: &PlaybookRecord| entry("playbook_disabled", &who, None, record_details(r));
    let outcome = app
        .store
        .disable_playbook(id, &who.name, app.clock.now(), &audit)
        .await?;
    toggled(
        outcome,
        id,
        &format!("Playbook disabled; restore it with POST /v2/playbooks/{id}/restore."),
        "Playbook was already disabled; nothing changed.",
    )
}

/// Restore (enable again) a disabled playbook.
#[utoipa::path(post, path = "/v2/playbooks/{playbook_id}/restore", tag = "playbooks",
    params(("playbook_id" = i64, Path, minimum = 1)),
    responses((status = 200, description = "Enabled (or already was)", body = Envelope<PlaybookSummaryOut>),
              (status = 400, description = "Bad playbook_id"),
              (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn restore_playbook(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(Scope::Write)?;
    let who = actor(&headers, &caller)?;
    let id = PlaybookId(path_id(&id, "playbook_id")?);
    let audit = |r: &PlaybookRecord| entry("playbook_restored", &who, None, record_details(r));
    let outcome = app
        .store
        .restore_playbook(id, app.clock.now(), &audit)
        .await?;
    toggled(
        outcome,
        id,
        "Playbook restored.",
        "Playbook was already enabled; nothing changed.",
    )
}

// ---- starting executions --------------------------------------------------------------------

/// The body of `POST /v2/playbooks/{id}/execute` and of the webhook trigger.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteIn {
    /// The service the execution is about (`${SERVICE_ID}`, `${SERVICE_NAME}`, breaker).
    #[serde(default)]
    service_id: Option<i64>,
    /// Values for the playbook's declared `inputs`: every required input, each of its type.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    variables: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What COMPAT promises a start answers with.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StartedOut {
    pub execution_id: i64,
    pub playbook_id: i64,
    pub playbook_name: String,
    pub playbook_version: i64,
    /// `running`, `pending_approval`, or `skipped` when the circuit breaker is open.
    pub status: String,
    pub service_id: Option<i64>,
    pub trigger: String,
}

/// Who starts an execution through HTTP.
pub(crate) struct Requester {
    /// The four-eyes identity (`owner:<id>`), if any.
    pub requested_by: Option<String>,
    pub key: Option<String>,
    pub actor: crate::store::Actor,
}

/// Parses a start body (empty means `{}`); bad JSON or unknown fields are a 400.
pub(crate) fn execute_body(bytes: &[u8]) -> Result<ExecuteIn, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(ExecuteIn::default());
    }
    parse_json(bytes)
}

/// Starts an execution of playbook `raw`'s current version: 201 with the execution, or the
/// 4xx that says why nothing started.
pub(crate) async fn start_execution(
    app: &AppState,
    raw: &str,
    body: ExecuteIn,
    trigger: crate::store::ExecutionTrigger,
    who: Requester,
) -> ApiResult {
    use crate::engine::{StartError, StartRequest};
    let id = PlaybookId(path_id(raw, "playbook_id")?);
    let service_id = match body.service_id {
        Some(s) if s < 1 => {
            return Err(ApiError::bad_request(
                "service_id must be a positive integer.",
            ));
        }
        s => s.map(crate::domain::ServiceId),
    };
    let version = app
        .store
        .current_playbook_version(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Playbook {id} was not found.")))?;
    if !version.enabled {
        return Err(ApiError::conflict(format!(
            "Playbook {id} is disabled; restore it to run it."
        )));
    }
    let pinned = crate::store::PinnedVersion {
        playbook_id: version.playbook_id.0,
        name: version.name.clone(),
        version: i64::from(version.version),
        sha256: version.sha256.clone(),
        source: version.source.clone(),
    };
    let req = StartRequest {
        pinned,
        service_id,
        alert_id: None,
        trigger,
        requested_by: who.requested_by,
        requester_key: who.key,
        actor: Some(who.actor),
        variables: body.variables.unwrap_or_default(),
    };
    match app.engine.start(req).await {
        Ok(r) => Ok(ok(
            StatusCode::CREATED,
            if r.status == "skipped" {
                "The circuit breaker is open: the execution was recorded as skipped."
            } else {
                "Execution started."
            },
            StartedOut {
                execution_id: r.id,
                playbook_id: r.playbook_id,
                playbook_name: r.playbook_name.clone(),
                playbook_version: r.playbook_version,
                status: r.status.clone(),
                service_id: r.service_id.map(|s| s.0),
                trigger: r.trigger.clone(),
            },
        )),
        Err(StartError::Inputs(problems)) => {
            let text: Vec<String> = problems
                .0
                .iter()
                .map(|p| format!("{}: {}", p.field, p.message))
                .collect();
            let out: Vec<ProblemOut> = problems.0.iter().map(ProblemOut::from).collect();
            Err(ApiError::bad_request(format!(
                "The variables do not fit the playbook's inputs; nothing was started: {}.",
                text.join("; ")
            ))
            .with_field("problems", json!(out)))
        }
        Err(StartError::UnknownService(s)) => {
            Err(ApiError::not_found(format!("Service {s} was not found.")))
        }
        Err(StartError::Script(m)) => Err(ApiError::conflict(format!("{m}; nothing was started."))),
        Err(StartError::Invalid(e)) => Err(ApiError::internal(&format!(
            "playbook {id} version {}: {e}",
            version.version
        ))),
        Err(StartError::Store(e)) => Err(e.into()),
    }
}

/// Start an execution of the playbook's current version (asynchronous: answers at once).
///
/// Needs the `run` scope (or admin). The requester (key id and owner) is recorded; that
/// owner cannot approve the execution.
#[utoipa::path(post, path = "/v2/playbooks/{playbook_id}/execute", tag = "playbooks",
    params(("playbook_id" = i64, Path, minimum = 1)),
    request_body(content = ExecuteIn, description = "Optional; `{}` when empty"),
    responses((status = 201, description = "Started (or skipped by the circuit breaker); not awaited", body = Envelope<StartedOut>),
              (status = 400, description = "Bad body, or variables that do not fit the inputs (each named)"),
              (status = 404, description = "Unknown playbook or service"),
              (status = 409, description = "Disabled playbook, or a script without an approved version"),
              (status = 429, description = "Rate limited")),
    security(("bearer" = [])))]
async fn execute_playbook(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(raw): Path<String>,
    super::extract::OptionalJsonBody(body): super::extract::OptionalJsonBody<ExecuteIn>,
) -> ApiResult {
    let p = caller.require(Scope::Run)?;
    let who = Requester {
        requested_by: Some(super::executions::owner_of(p)),
        key: Some(
            p.key_id
                .as_ref()
                .map_or_else(|| "bootstrap-admin".to_owned(), |k| k.to_string()),
        ),
        actor: actor(&headers, &caller)?,
    };
    start_execution(
        &app,
        &raw,
        body,
        crate::store::ExecutionTrigger::Manual,
        who,
    )
    .await
}
