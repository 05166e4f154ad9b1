//! The pages and their forms.

use std::collections::BTreeMap;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::session::{self, SignInError, Signed};
use super::{Reply, Ui};
use crate::domain::Timestamp;
use crate::ratelimit::RateClass;

// ---- views: the API's answers, read as much as the pages show ---------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PageOf<T> {
    pub entries: Vec<T>,
    pub total_count: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ServiceV {
    pub service_id: i64,
    pub heartbeat_name: String,
    pub service_name: String,
    pub environment: Option<String>,
    pub team: String,
    pub priority: String,
    pub state: String,
    pub muted: bool,
    pub last_heartbeat_at: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AlertV {
    pub alert_id: i64,
    pub service_id: i64,
    pub kind: String,
    pub name: String,
    pub state: String,
    pub priority: Option<String>,
    pub team: Option<String>,
    pub summary: Option<String>,
    pub down_since: Option<String>,
    pub created_at: String,
    pub acknowledged_at: Option<String>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<String>,
    pub resolved_by: Option<String>,
    pub resolve_reason: Option<String>,
    pub run_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AgentV {
    pub agent_id: String,
    pub hostname: String,
    pub agent_version: String,
    pub os: String,
    pub arch: String,
    pub labels: BTreeMap<String, String>,
    pub connected: bool,
    pub last_seen_at: String,
    pub revoked_at: Option<String>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(default)]
pub struct VersionV {
    pub version: i32,
    pub interpreter: String,
    pub sha256: String,
    pub description: Option<String>,
    pub status: String,
    pub created_by: String,
    pub created_at: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    pub decision_reason: Option<String>,
    pub content: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ScriptSummaryV {
    pub script_id: i64,
    pub name: String,
    pub latest_version: Option<VersionV>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ScriptV {
    pub script_id: i64,
    pub name: String,
    pub versions: Vec<VersionV>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RunV {
    pub run_id: String,
    pub agent_id: String,
    pub script_id: i64,
    pub script_version: i32,
    pub status: String,
    pub requested_by: String,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<i64>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub refusal_reason: Option<String>,
    pub refusal_detail: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AuditV {
    pub id: i64,
    pub action_type: String,
    pub actor: String,
    pub on_behalf_of: Option<String>,
    pub service_id: Option<i64>,
    pub details: Value,
    pub timestamp: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PlaybookV {
    pub playbook_id: i64,
    pub name: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub current_version: i32,
    pub updated_at: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StepV {
    pub index: usize,
    pub name: String,
    pub kind: String,
    pub status: String,
    pub attempt: u32,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub exit_code: Option<i32>,
    pub http_status: Option<u16>,
    pub output: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ApprovalV {
    pub outcome: String,
    pub by: Option<String>,
    pub at: String,
    pub reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ExecutionV {
    pub execution_id: i64,
    pub playbook_id: i64,
    pub playbook_name: String,
    pub playbook_version: i64,
    pub service_id: Option<i64>,
    pub alert_id: Option<i64>,
    pub trigger: String,
    pub status: String,
    pub requested_by: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    pub approval: Option<ApprovalV>,
    pub steps: Vec<StepV>,
}

impl ExecutionV {
    /// Whether it has not ended (so it can still be cancelled).
    pub fn live(&self) -> bool {
        matches!(
            self.status.as_str(),
            "pending_approval" | "running" | "waiting"
        )
    }
}

/// One line of a script diff.
pub struct DiffLine {
    /// `add`, `del` or `same`.
    pub class: &'static str,
    pub sign: &'static str,
    pub text: String,
}

// ---- the frame every page shares ---------------------------------------------------------------

/// The frame of every page: its title, who is signed in, the CSRF token for its forms.
pub struct Layout {
    pub title: String,
    pub who: String,
    pub csrf: String,
    pub nav: &'static str,
}

impl Layout {
    fn new(title: impl Into<String>, nav: &'static str, s: &Signed) -> Self {
        Self {
            title: title.into(),
            who: s.principal.name.clone(),
            csrf: s.session.csrf_token.clone(),
            nav,
        }
    }
}

#[derive(Template)]
#[template(path = "ui/login.html")]
struct LoginPage {
    l: Layout,
    error: String,
}

#[derive(Template)]
#[template(path = "ui/message.html")]
struct MessagePage {
    l: Layout,
    message: String,
    back: String,
}

#[derive(Template)]
#[template(path = "ui/overview.html")]
struct OverviewPage {
    l: Layout,
    down: Vec<ServiceV>,
    teams: Vec<(String, usize)>,
    alerts: Vec<AlertV>,
    pending: Vec<ScriptSummaryV>,
    approvals: Vec<ExecutionV>,
    agents: Vec<AgentV>,
    runs: Vec<RunV>,
}

#[derive(Template)]
#[template(path = "ui/services.html")]
struct ServicesPage {
    l: Layout,
    q: String,
    state: String,
    services: Vec<ServiceV>,
    total: i64,
}

#[derive(Template)]
#[template(path = "ui/service.html")]
struct ServicePage {
    l: Layout,
    s: ServiceV,
    timeline: Timeline,
}

/// A service's heartbeats of the last [`TIMELINE_HOURS`] as marks on a strip, drawn as inline
/// SVG by the template (no script, no image request).
#[derive(Debug, Default)]
pub struct Timeline {
    pub marks: Vec<Mark>,
    /// Heartbeats in the window (all of them are drawn).
    pub count: usize,
    /// The window's start and end, as the API writes times.
    pub from: String,
    pub to: String,
    /// More heartbeats than one page holds fell in the window: only the newest are drawn.
    pub clipped: bool,
}

/// One heartbeat on the strip: its position (0–1000) and its status.
#[derive(Debug)]
pub struct Mark {
    pub x: i64,
    pub status: String,
    pub time: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HeartbeatV {
    pub status: String,
    pub time: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HeartbeatsV {
    pub entries: Vec<HeartbeatV>,
    pub has_more: bool,
}

/// How far back the service page's timeline reaches.
pub const TIMELINE_HOURS: i64 = 24;

/// The most heartbeats the timeline reads (one API page).
const TIMELINE_MAX: u32 = 250;

impl Timeline {
    /// Places `beats` (newest first, as the API lists them) on a strip ending at `now`.
    pub fn new(beats: &HeartbeatsV, now: Timestamp) -> Self {
        let span = TIMELINE_HOURS * 3_600_000;
        let start = now.millis() - span;
        let mut marks = Vec::new();
        let mut older = false;
        for b in &beats.entries {
            let Ok(t) = chrono::DateTime::parse_from_rfc3339(&b.time) else {
                continue;
            };
            let at = t.timestamp_millis();
            if at < start {
                older = true;
                continue;
            }
            let x = ((at - start) * 1000 / span).clamp(0, 998);
            marks.push(Mark {
                x,
                status: b.status.clone(),
                time: b.time.clone(),
            });
        }
        Self {
            count: marks.len(),
            marks,
            from: Timestamp::from_millis(start).to_string(),
            to: now.to_string(),
            clipped: beats.has_more && !older,
        }
    }
}

#[derive(Template)]
#[template(path = "ui/alerts.html")]
struct AlertsPage {
    l: Layout,
    state: String,
    alerts: Vec<AlertV>,
    total: i64,
}

#[derive(Template)]
#[template(path = "ui/alert.html")]
struct AlertPage {
    l: Layout,
    a: AlertV,
    history: Vec<AlertV>,
}

#[derive(Template)]
#[template(path = "ui/agents.html")]
struct AgentsPage {
    l: Layout,
    agents: Vec<AgentV>,
}

#[derive(Template)]
#[template(path = "ui/scripts.html")]
struct ScriptsPage {
    l: Layout,
    scripts: Vec<ScriptSummaryV>,
}

#[derive(Template)]
#[template(path = "ui/script.html")]
struct ScriptPage {
    l: Layout,
    s: ScriptV,
    pending: Vec<VersionV>,
    approved: Option<VersionV>,
    diff: Vec<DiffLine>,
}

#[derive(Template)]
#[template(path = "ui/playbooks.html")]
struct PlaybooksPage {
    l: Layout,
    status: String,
    playbooks: Vec<PlaybookV>,
    executions: Vec<ExecutionV>,
}

#[derive(Template)]
#[template(path = "ui/execution.html")]
struct ExecutionPage {
    l: Layout,
    e: ExecutionV,
}

#[derive(Template)]
#[template(path = "ui/runs.html")]
struct RunsPage {
    l: Layout,
    runs: Vec<RunV>,
}

#[derive(Template)]
#[template(path = "ui/run.html")]
struct RunPage {
    l: Layout,
    r: RunV,
}

#[derive(Template)]
#[template(path = "ui/audit.html")]
struct AuditPage {
    l: Layout,
    action_type: String,
    actor: String,
    query: String,
    entries: Vec<AuditV>,
    total: i64,
}

fn render(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "web page template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "The page could not be drawn.",
            )
                .into_response()
        }
    }
}

fn plain(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.to_owned(),
    )
        .into_response()
}

/// A message page (an error, or an action the API refused), with the API's status.
fn message(status: StatusCode, s: &Signed, text: &str, back: &str) -> Response {
    let title = if status.is_success() {
        "Done"
    } else {
        "Not done"
    };
    render(
        status,
        &MessagePage {
            l: Layout::new(title, "", s),
            message: text.to_owned(),
            back: back.to_owned(),
        },
    )
}

/// The request's session, after the key's rate limit; else the response to send (sign-in page,
/// 429, 503).
async fn signed(ui: &Ui, headers: &HeaderMap) -> Result<Signed, Response> {
    let s = match session::resolve(&ui.app, ui.lifetimes, headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(Redirect::to("/ui/login").into_response()),
        Err(_) => {
            return Err(plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "The database is unavailable; try again shortly.",
            ));
        }
    };
    let p = &s.principal;
    let limit = p
        .rate_limit_per_minute
        .unwrap_or(ui.app.config.limits.management);
    let decision = ui
        .app
        .limiter
        .check(RateClass::Management, &p.rate_key(), limit)
        .await;
    if !decision.allowed {
        return Err(plain(
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit exceeded for this API key; try again in a minute.",
        ));
    }
    Ok(s)
}

/// A form post: the session, its CSRF token and the same-origin check; the form's fields.
async fn form_post(
    ui: &Ui,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Signed, BTreeMap<String, String>), Response> {
    if !session::same_origin(headers, ui.app.config.notify.public_url.as_deref()) {
        return Err(plain(
            StatusCode::FORBIDDEN,
            "Refused: the form was not sent from this server's page.",
        ));
    }
    let s = signed(ui, headers).await?;
    let fields: BTreeMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    if !session::csrf_ok(&s.session, fields.get("csrf").map(String::as_str)) {
        return Err(plain(
            StatusCode::FORBIDDEN,
            "Refused: the form's token is missing or stale. Reload the page and try again.",
        ));
    }
    Ok((s, fields))
}

/// A form's action: `POST uri` through the API as the signed-in key, then back to `back`, or
/// the API's refusal as the page's message.
async fn act(ui: &Ui, s: &Signed, uri: &str, body: Option<Value>, back: &str) -> Response {
    let r = ui
        .api
        .call(&s.principal, Method::POST, uri, body, "application/json")
        .await;
    if r.ok() {
        Redirect::to(back).into_response()
    } else {
        message(r.status, s, &r.message, back)
    }
}

fn query_map(q: Option<String>) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .into_owned()
        .filter(|(_, v)| !v.trim().is_empty())
        .collect()
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        s.append_pair(k, v);
    }
    s.finish()
}

fn enc(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

/// A read the page needs; a refusal becomes the page's answer.
// The error is the page's whole answer, built once per request: boxing it buys nothing.
#[allow(clippy::result_large_err)]
fn needed(s: &Signed, r: Reply) -> Result<Reply, Response> {
    if r.ok() {
        Ok(r)
    } else {
        Err(message(
            r.status,
            s,
            if r.message.is_empty() {
                "The request failed."
            } else {
                &r.message
            },
            "/ui",
        ))
    }
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(resp) => return resp,
        }
    };
}

// ---- sign-in ---------------------------------------------------------------------------------

pub async fn login_form() -> Response {
    render(
        StatusCode::OK,
        &LoginPage {
            l: Layout {
                title: "Sign in".into(),
                who: String::new(),
                csrf: String::new(),
                nav: "",
            },
            error: String::new(),
        },
    )
}

pub async fn login(State(ui): State<Ui>, headers: HeaderMap, body: Bytes) -> Response {
    let page = |status, error: &str| {
        render(
            status,
            &LoginPage {
                l: Layout {
                    title: "Sign in".into(),
                    who: String::new(),
                    csrf: String::new(),
                    nav: "",
                },
                error: error.to_owned(),
            },
        )
    };
    if !session::same_origin(&headers, ui.app.config.notify.public_url.as_deref()) {
        return page(
            StatusCode::FORBIDDEN,
            "Refused: the form was not sent from this page.",
        );
    }
    let fields: BTreeMap<String, String> =
        url::form_urlencoded::parse(&body).into_owned().collect();
    let key = fields.get("api_key").map(|k| k.trim()).unwrap_or_default();
    match session::sign_in(&ui.app, ui.lifetimes, key).await {
        Ok(id) => {
            let mut resp = Redirect::to("/ui").into_response();
            resp.headers_mut().insert(
                header::SET_COOKIE,
                session::set_cookie(&id, ui.lifetimes.absolute_ms),
            );
            resp
        }
        Err(SignInError::Refused(why)) => {
            metrics::counter!("medic_auth_failures_total", "reason" => "ui_sign_in").increment(1);
            page(StatusCode::UNAUTHORIZED, why)
        }
        Err(SignInError::Unavailable) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Signing in is unavailable right now; try again shortly.",
        ),
    }
}

pub async fn logout(State(ui): State<Ui>, headers: HeaderMap, body: Bytes) -> Response {
    let _ = tri!(form_post(&ui, &headers, &body).await);
    if session::sign_out(&ui.app, &headers).await.is_err() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "Try again shortly.");
    }
    let mut resp = Redirect::to("/ui/login").into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, session::clear_cookie());
    resp
}

// ---- overview --------------------------------------------------------------------------------

pub async fn overview(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    let s = tri!(signed(&ui, &headers).await);
    let p = &s.principal;
    let (down, alerts, pending, approvals, agents, runs) = tokio::join!(
        ui.api.get(p, "/v2/services?state=down&limit=100"),
        ui.api.get(p, "/v2/alerts?state=active&limit=250"),
        ui.api.get(p, "/v2/scripts?status=pending&limit=100"),
        ui.api
            .get(p, "/v2/executions?status=pending_approval&limit=100"),
        ui.api.get(p, "/v2/agents?connected=0&revoked=0&limit=100"),
        ui.api.get(p, "/v2/runs?limit=10"),
    );
    let alerts: PageOf<AlertV> = tri!(needed(&s, alerts)).read();
    let mut teams: BTreeMap<String, usize> = BTreeMap::new();
    for a in &alerts.entries {
        *teams
            .entry(a.team.clone().unwrap_or_else(|| "(no team)".into()))
            .or_default() += 1;
    }
    let page = OverviewPage {
        l: Layout::new("Overview", "overview", &s),
        down: tri!(needed(&s, down)).read::<PageOf<ServiceV>>().entries,
        teams: teams.into_iter().collect(),
        alerts: alerts.entries,
        pending: tri!(needed(&s, pending))
            .read::<PageOf<ScriptSummaryV>>()
            .entries,
        approvals: tri!(needed(&s, approvals))
            .read::<PageOf<ExecutionV>>()
            .entries,
        agents: tri!(needed(&s, agents)).read::<PageOf<AgentV>>().entries,
        runs: tri!(needed(&s, runs)).read::<PageOf<RunV>>().entries,
    };
    render(StatusCode::OK, &page)
}

// ---- services --------------------------------------------------------------------------------

pub async fn services(State(ui): State<Ui>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let s = tri!(signed(&ui, &headers).await);
    let q = query_map(q);
    let name = q.get("q").cloned().unwrap_or_default();
    let state = q.get("state").cloned().unwrap_or_default();
    let uri = format!(
        "/v2/services?{}",
        query(&[("name", &name), ("state", &state), ("limit", "250")])
    );
    let found: PageOf<ServiceV> = tri!(needed(&s, ui.api.get(&s.principal, &uri).await)).read();
    render(
        StatusCode::OK,
        &ServicesPage {
            l: Layout::new("Services", "services", &s),
            q: name,
            state,
            total: found.total_count,
            services: found.entries,
        },
    )
}

pub async fn service(State(ui): State<Ui>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let s = tri!(signed(&ui, &headers).await);
    let id = enc(&id);
    let svc: ServiceV = tri!(needed(
        &s,
        ui.api
            .get(&s.principal, &format!("/v2/services/{id}"))
            .await
    ))
    .read();
    let beats: HeartbeatsV = tri!(needed(
        &s,
        ui.api
            .get(
                &s.principal,
                &format!("/v2/services/{id}/heartbeats?limit={TIMELINE_MAX}"),
            )
            .await
    ))
    .read();
    let timeline = Timeline::new(&beats, ui.app.clock.now());
    render(
        StatusCode::OK,
        &ServicePage {
            l: Layout::new(svc.heartbeat_name.clone(), "services", &s),
            s: svc,
            timeline,
        },
    )
}

pub async fn service_action(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (s, f) = tri!(form_post(&ui, &headers, &body).await);
    let id = enc(&id);
    let reason = f.get("reason").filter(|r| !r.trim().is_empty());
    let (uri, body) = match action.as_str() {
        "mute" => (
            format!("/v2/services/{id}/mute"),
            json!({ "reason": reason }),
        ),
        "unmute" => (format!("/v2/services/{id}/unmute"), json!({})),
        "snooze" => {
            let minutes: u32 = f
                .get("minutes")
                .and_then(|m| m.trim().parse().ok())
                .unwrap_or(60);
            (
                format!("/v2/services/{id}/snooze"),
                json!({ "minutes": minutes, "reason": reason }),
            )
        }
        _ => return message(StatusCode::NOT_FOUND, &s, "No such action.", "/ui/services"),
    };
    let body = if action == "unmute" { None } else { Some(body) };
    act(&ui, &s, &uri, body, "/ui/services").await
}

// ---- alerts ----------------------------------------------------------------------------------

pub async fn alerts(State(ui): State<Ui>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let s = tri!(signed(&ui, &headers).await);
    let q = query_map(q);
    let state = q.get("state").cloned().unwrap_or_else(|| "active".into());
    let uri = format!(
        "/v2/alerts?{}",
        query(&[("state", &state), ("limit", "250")])
    );
    let found: PageOf<AlertV> = tri!(needed(&s, ui.api.get(&s.principal, &uri).await)).read();
    render(
        StatusCode::OK,
        &AlertsPage {
            l: Layout::new("Alerts", "alerts", &s),
            state,
            total: found.total_count,
            alerts: found.entries,
        },
    )
}

pub async fn alert(State(ui): State<Ui>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let s = tri!(signed(&ui, &headers).await);
    let r = ui
        .api
        .get(&s.principal, &format!("/v2/alerts/{}", enc(&id)))
        .await;
    let a: AlertV = tri!(needed(&s, r)).read();
    let history: PageOf<AlertV> = ui
        .api
        .get(
            &s.principal,
            &format!("/v2/services/{}/alerts?limit=20", a.service_id),
        )
        .await
        .read();
    render(
        StatusCode::OK,
        &AlertPage {
            l: Layout::new(format!("Alert {}", a.alert_id), "alerts", &s),
            a,
            history: history.entries,
        },
    )
}

pub async fn alert_action(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (s, _) = tri!(form_post(&ui, &headers, &body).await);
    let id = enc(&id);
    let back = format!("/ui/alerts/{id}");
    let verb = match action.as_str() {
        "ack" => "ack",
        "resolve" => "resolve",
        _ => return message(StatusCode::NOT_FOUND, &s, "No such action.", &back),
    };
    act(&ui, &s, &format!("/v2/alerts/{id}/{verb}"), None, &back).await
}

// ---- agents, scripts, runs -------------------------------------------------------------------

pub async fn agents(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    let s = tri!(signed(&ui, &headers).await);
    let found: PageOf<AgentV> = tri!(needed(
        &s,
        ui.api.get(&s.principal, "/v2/agents?limit=250").await
    ))
    .read();
    render(
        StatusCode::OK,
        &AgentsPage {
            l: Layout::new("Agents", "agents", &s),
            agents: found.entries,
        },
    )
}

pub async fn scripts(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    let s = tri!(signed(&ui, &headers).await);
    let found: PageOf<ScriptSummaryV> = tri!(needed(
        &s,
        ui.api.get(&s.principal, "/v2/scripts?limit=250").await
    ))
    .read();
    render(
        StatusCode::OK,
        &ScriptsPage {
            l: Layout::new("Scripts", "scripts", &s),
            scripts: found.entries,
        },
    )
}

/// The lines of `new` against `old`.
fn diff(old: &str, new: &str) -> Vec<DiffLine> {
    similar::TextDiff::from_lines(old, new)
        .iter_all_changes()
        .map(|c| {
            let (class, sign) = match c.tag() {
                similar::ChangeTag::Insert => ("add", "+"),
                similar::ChangeTag::Delete => ("del", "-"),
                similar::ChangeTag::Equal => ("same", " "),
            };
            DiffLine {
                class,
                sign,
                text: c.value().trim_end_matches('\n').to_owned(),
            }
        })
        .collect()
}

pub async fn script(State(ui): State<Ui>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let s = tri!(signed(&ui, &headers).await);
    let r = ui
        .api
        .get(&s.principal, &format!("/v2/scripts/{}", enc(&id)))
        .await;
    let script: ScriptV = tri!(needed(&s, r)).read();
    let approved = script
        .versions
        .iter()
        .rev()
        .find(|v| v.status == "approved")
        .cloned();
    let pending: Vec<VersionV> = script
        .versions
        .iter()
        .filter(|v| v.status == "pending")
        .cloned()
        .collect();
    let diff = pending
        .last()
        .map(|p| {
            diff(
                approved
                    .as_ref()
                    .and_then(|a| a.content.as_deref())
                    .unwrap_or_default(),
                p.content.as_deref().unwrap_or_default(),
            )
        })
        .unwrap_or_default();
    render(
        StatusCode::OK,
        &ScriptPage {
            l: Layout::new(format!("Script {}", script.name), "scripts", &s),
            s: script,
            pending,
            approved,
            diff,
        },
    )
}

pub async fn script_action(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path((id, version, action)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let (s, f) = tri!(form_post(&ui, &headers, &body).await);
    let (id, version) = (enc(&id), enc(&version));
    let back = format!("/ui/scripts/{id}");
    if action != "approve" && action != "reject" {
        return message(StatusCode::NOT_FOUND, &s, "No such action.", &back);
    }
    let reason = f.get("reason").filter(|r| !r.trim().is_empty());
    act(
        &ui,
        &s,
        &format!("/v2/scripts/{id}/versions/{version}/{action}"),
        Some(json!({ "reason": reason })),
        &back,
    )
    .await
}

pub async fn runs(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    let s = tri!(signed(&ui, &headers).await);
    let found: PageOf<RunV> = tri!(needed(
        &s,
        ui.api.get(&s.principal, "/v2/runs?limit=100").await
    ))
    .read();
    render(
        StatusCode::OK,
        &RunsPage {
            l: Layout::new("Runs", "runs", &s),
            runs: found.entries,
        },
    )
}

pub async fn run(State(ui): State<Ui>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let s = tri!(signed(&ui, &headers).await);
    let r = ui
        .api
        .get(&s.principal, &format!("/v2/runs/{}", enc(&id)))
        .await;
    let run: RunV = tri!(needed(&s, r)).read();
    render(
        StatusCode::OK,
        &RunPage {
            l: Layout::new(format!("Run {}", run.run_id), "runs", &s),
            r: run,
        },
    )
}

// ---- playbooks and executions ----------------------------------------------------------------

pub async fn playbooks(
    State(ui): State<Ui>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let s = tri!(signed(&ui, &headers).await);
    let status = query_map(q).get("status").cloned().unwrap_or_default();
    let uri = format!(
        "/v2/executions?{}",
        query(&[("status", &status), ("limit", "100")])
    );
    let (books, execs) = tokio::join!(
        ui.api.get(&s.principal, "/v2/playbooks?limit=250"),
        ui.api.get(&s.principal, &uri),
    );
    render(
        StatusCode::OK,
        &PlaybooksPage {
            l: Layout::new("Playbooks", "playbooks", &s),
            status,
            playbooks: tri!(needed(&s, books)).read::<PageOf<PlaybookV>>().entries,
            executions: tri!(needed(&s, execs)).read::<PageOf<ExecutionV>>().entries,
        },
    )
}

pub async fn execution(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let s = tri!(signed(&ui, &headers).await);
    let r = ui
        .api
        .get(&s.principal, &format!("/v2/executions/{}", enc(&id)))
        .await;
    let e: ExecutionV = tri!(needed(&s, r)).read();
    render(
        StatusCode::OK,
        &ExecutionPage {
            l: Layout::new(format!("Execution {}", e.execution_id), "playbooks", &s),
            e,
        },
    )
}

pub async fn execution_action(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (s, f) = tri!(form_post(&ui, &headers, &body).await);
    let id = enc(&id);
    let back = format!("/ui/executions/{id}");
    if !matches!(action.as_str(), "approve" | "reject" | "cancel") {
        return message(StatusCode::NOT_FOUND, &s, "No such action.", &back);
    }
    let reason = f.get("reason").filter(|r| !r.trim().is_empty());
    act(
        &ui,
        &s,
        &format!("/v2/executions/{id}/{action}"),
        Some(json!({ "reason": reason })),
        &back,
    )
    .await
}

// ---- audit -----------------------------------------------------------------------------------

fn audit_query(q: &BTreeMap<String, String>) -> (String, String, String) {
    let action_type = q.get("action_type").cloned().unwrap_or_default();
    let actor = q.get("actor").cloned().unwrap_or_default();
    let qs = query(&[("action_type", &action_type), ("actor", &actor)]);
    (action_type, actor, qs)
}

pub async fn audit(State(ui): State<Ui>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let s = tri!(signed(&ui, &headers).await);
    let (action_type, actor, qs) = audit_query(&query_map(q));
    let uri = format!("/v2/audit-logs?limit=100&{qs}");
    let found: PageOf<AuditV> = tri!(needed(&s, ui.api.get(&s.principal, &uri).await)).read();
    render(
        StatusCode::OK,
        &AuditPage {
            l: Layout::new("Audit log", "audit", &s),
            action_type,
            actor,
            query: qs,
            total: found.total_count,
            entries: found.entries,
        },
    )
}

/// Entries per API page while exporting the audit log (the API's maximum).
const CSV_PAGE: u32 = 250;

/// The whole filtered audit log as CSV, streamed page by page through the API: the export is not
/// cut at one page, and the server holds one page at a time.
pub async fn audit_csv(
    State(ui): State<Ui>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let s = tri!(signed(&ui, &headers).await);
    let (_, _, qs) = audit_query(&query_map(q));
    let page_uri =
        move |offset: u32| format!("/v2/audit-logs?limit={CSV_PAGE}&offset={offset}&{qs}");
    let first = ui
        .api
        .call(&s.principal, Method::GET, &page_uri(0), None, "text/csv")
        .await;
    if !first.ok() {
        return message(first.status, &s, &first.message, "/ui/audit");
    }
    let more = first.has_more();
    let principal = s.principal.clone();
    let api = ui.api.clone();
    // Each later page without its header line (the header never holds a newline).
    let rest = futures::stream::unfold((more, CSV_PAGE), move |(more, offset)| {
        let (api, principal, uri) = (api.clone(), principal.clone(), page_uri(offset));
        async move {
            if !more {
                return None;
            }
            let r = api
                .call(&principal, Method::GET, &uri, None, "text/csv")
                .await;
            if !r.ok() {
                tracing::warn!(status = %r.status, "audit export stopped: {}", r.message);
                return Some((Err(std::io::Error::other(r.message)), (false, offset)));
            }
            let body = match r.body.iter().position(|&b| b == b'\n') {
                Some(i) => r.body.slice(i + 1..),
                None => Bytes::new(),
            };
            Some((Ok(body), (r.has_more(), offset + CSV_PAGE)))
        }
    });
    let body =
        futures::stream::once(async move { Ok::<_, std::io::Error>(first.body) }).chain(rest);
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"medic-audit.csv\"",
            ),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}
