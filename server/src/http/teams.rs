//! v2 teams and notification targets: who is told about a service's alerts, how, and when.
//!
//! A team applies to the services whose `team` matches its name case-insensitively. Targets
//! belong to one team or one service; secrets in their configuration (PagerDuty routing keys,
//! webhook signing secrets) are stored as given and never returned in full — responses show
//! only their last four characters. Webhook URLs pass the SSRF guard
//! ([`crate::notify::ssrf::check_url`]) with the `MEDIC_ALLOWED_WEBHOOK_HOSTS` allowlist. This
//! module only records configuration; it sends nothing.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::audit::entry;
use super::error::{ApiError, ApiResult, Envelope, ok};
use super::extract::{Caller, JsonBody, actor, path_id};
use super::legacy::clean_text;
use super::schema::{self, Time};
use super::services::{load as load_service, some};
use crate::domain::Scope;
use crate::domain::monitor::PagingPeriod;
use crate::domain::schedule::{WorkingHours, WorkingHoursSpec};
use crate::notify::ssrf;
use crate::store::{
    NewTarget, NewTeam, NotificationTarget, StoreError, TargetConfig, TargetFilter, TargetId,
    TargetOwner, TargetPatch, Team, TeamId, TeamPatch,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_teams, create_team))
        .routes(routes!(get_team, patch_team, delete_team))
        .routes(routes!(list_team_targets, create_team_target))
        .routes(routes!(list_service_targets, create_service_target))
        .routes(routes!(patch_target, delete_target))
}

/// Longest team name.
const MAX_TEAM_NAME: usize = 255;
/// Longest Slack channel (id or `#name`).
const MAX_CHANNEL: usize = 80;
/// Longest PagerDuty routing key (they are 32 characters).
const MAX_ROUTING_KEY: usize = 64;
/// Webhook signing secret bounds.
const MIN_SECRET: usize = 16;
const MAX_SECRET: usize = 256;
/// Target priorities (lower first).
const MAX_TARGET_PRIORITY: i32 = 10_000;

/// Shows only the last four characters of a secret.
pub fn mask(secret: &str) -> String {
    let n = secret.chars().count();
    if n <= 4 {
        return "****".to_owned();
    }
    let tail: String = secret.chars().skip(n - 4).collect();
    format!("****{tail}")
}

/// Working hours as the API reads and writes them:
/// `{"timezone": "Europe/Berlin", "ranges": [{"days": ["mon","tue"], "start": "09:00", "end": "17:00"}]}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct WorkingHoursDoc {
    /// An IANA time zone.
    timezone: String,
    ranges: Vec<RangeDoc>,
}

/// A range of local time on some weekdays; it may cross midnight (`"start": "22:00",
/// `"end": "06:00"`), and `end` may be `24:00`, but must not equal `start`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RangeDoc {
    #[schema(min_items = 1)]
    days: Vec<DayDoc>,
    /// `HH:MM`.
    #[schema(pattern = "^\\d{2}:\\d{2}$")]
    start: String,
    /// `HH:MM` (up to `24:00`).
    #[schema(pattern = "^\\d{2}:\\d{2}$")]
    end: String,
}

/// A day of the week.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum DayDoc {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// The v2 representation of a team.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TeamOut {
    pub team_id: i64,
    pub name: String,
    /// Absent: every moment counts as inside working hours.
    #[schema(value_type = Option<WorkingHoursDoc>)]
    pub working_hours: Option<WorkingHoursSpec>,
    pub slack_channel: Option<String>,
    pub created_at: Time,
    pub updated_at: Time,
}

impl From<&Team> for TeamOut {
    fn from(t: &Team) -> Self {
        Self {
            team_id: t.id.0,
            name: t.name.clone(),
            working_hours: t.working_hours.as_ref().map(WorkingHours::spec).cloned(),
            slack_channel: t.slack_channel.clone(),
            created_at: t.created_at.into(),
            updated_at: t.updated_at.into(),
        }
    }
}

/// A deleted team.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeletedTeamOut {
    pub team_id: i64,
}

/// A deleted notification target.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeletedTargetOut {
    pub target_id: i64,
}

/// How a target is notified.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Slack,
    Pagerduty,
    Webhook,
}

/// A target's configuration for its kind, secrets masked (only their last four characters).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TargetConfigOut {
    Slack { channel: String },
    Pagerduty { routing_key: String },
    Webhook { url: String, secret: String },
}

/// The v2 representation of a notification target, secrets masked.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TargetOut {
    pub target_id: i64,
    /// Set on a team's target.
    pub team_id: Option<i64>,
    /// Set on a service's own target.
    pub service_id: Option<i64>,
    pub kind: TargetKind,
    /// Lower is notified first.
    pub priority: i32,
    pub period: schema::PagingPeriod,
    pub enabled: bool,
    pub config: TargetConfigOut,
    pub created_at: Time,
    pub updated_at: Time,
}

impl From<&NotificationTarget> for TargetOut {
    fn from(t: &NotificationTarget) -> Self {
        let (team_id, service_id) = match t.owner {
            TargetOwner::Team(id) => (Some(id.0), None),
            TargetOwner::Service(id) => (None, Some(id.0)),
        };
        let (kind, config) = match &t.config {
            TargetConfig::Slack { channel } => (
                TargetKind::Slack,
                TargetConfigOut::Slack {
                    channel: channel.clone(),
                },
            ),
            TargetConfig::Pagerduty { routing_key } => (
                TargetKind::Pagerduty,
                TargetConfigOut::Pagerduty {
                    routing_key: mask(routing_key),
                },
            ),
            TargetConfig::Webhook { url, secret } => (
                TargetKind::Webhook,
                TargetConfigOut::Webhook {
                    url: url.clone(),
                    secret: mask(secret),
                },
            ),
        };
        Self {
            target_id: t.id.0,
            team_id,
            service_id,
            kind,
            priority: t.priority,
            period: t.period.into(),
            enabled: t.enabled,
            config,
            created_at: t.created_at.into(),
            updated_at: t.updated_at.into(),
        }
    }
}

fn service_of(t: &NotificationTarget) -> Option<crate::domain::ServiceId> {
    match t.owner {
        TargetOwner::Service(s) => Some(s),
        TargetOwner::Team(_) => None,
    }
}

fn team_name(raw: &str) -> Result<String, ApiError> {
    let n = clean_text(raw, "name", MAX_TEAM_NAME)?;
    if n.is_empty() {
        return Err(ApiError::bad_request("name must not be empty."));
    }
    Ok(n)
}

fn working_hours(spec: WorkingHoursSpec) -> Result<WorkingHours, ApiError> {
    WorkingHours::parse(spec).map_err(|e| ApiError::bad_request(format!("working_hours: {e}.")))
}

fn channel(raw: &str, field: &str) -> Result<String, ApiError> {
    let c = clean_text(raw, field, MAX_CHANNEL)?;
    if c.is_empty() || c.chars().any(char::is_whitespace) {
        return Err(ApiError::bad_request(format!(
            "{field} must be 1 to {MAX_CHANNEL} characters without spaces."
        )));
    }
    Ok(c)
}

fn conflict_name(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(_) => ApiError::conflict("A team with that name already exists."),
        other => other.into(),
    }
}

async fn load_team(app: &AppState, raw: &str) -> Result<Team, ApiError> {
    let id = TeamId(path_id(raw, "team_id")?);
    app.store
        .get_team(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Team {id} was not found.")))
}

/// List teams.
#[utoipa::path(get, path = "/v2/teams", tag = "teams",
    responses((status = 200, description = "Every team, by id", body = Envelope<Vec<TeamOut>>)),
    security(("bearer" = [])))]
async fn list_teams(State(app): State<AppState>, caller: Caller) -> ApiResult {
    caller.require(Scope::Read)?;
    let teams = app.store.list_teams().await?;
    let entries: Vec<TeamOut> = teams.iter().map(TeamOut::from).collect();
    Ok(ok(StatusCode::OK, "", entries))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTeamIn {
    /// Unique case-insensitively; matches services' `team`.
    #[schema(min_length = 1, max_length = 255)]
    name: String,
    #[serde(default)]
    #[schema(value_type = Option<WorkingHoursDoc>)]
    working_hours: Option<WorkingHoursSpec>,
    /// A channel id or `#name`, without spaces.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 80, pattern = "^\\S+$")]
    slack_channel: Option<String>,
}

/// Create a team (409 if the name is taken, case-insensitively).
#[utoipa::path(post, path = "/v2/teams", tag = "teams", request_body = CreateTeamIn,
    responses((status = 201, description = "Created", body = Envelope<TeamOut>),
              (status = 400, description = "Invalid"),
              (status = 409, description = "Name taken")),
    security(("bearer" = [])))]
async fn create_team(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateTeamIn>,
) -> ApiResult {
    caller.require(Scope::Write)?;
    let who = actor(&headers, &caller)?;
    let new = NewTeam {
        name: team_name(&body.name)?,
        working_hours: body.working_hours.map(working_hours).transpose()?,
        slack_channel: body
            .slack_channel
            .as_deref()
            .map(|c| channel(c, "slack_channel"))
            .transpose()?,
        at: app.clock.now(),
    };
    let audit = |t: &Team| entry("team_created", &who, None, TeamOut::from(t));
    let team = app
        .store
        .create_team(&new, Some(&audit))
        .await
        .map_err(conflict_name)?;
    Ok(ok(
        StatusCode::CREATED,
        "Team created.",
        TeamOut::from(&team),
    ))
}

/// Fetch one team.
#[utoipa::path(get, path = "/v2/teams/{team_id}", tag = "teams",
    params(("team_id" = i64, Path, minimum = 1)),
    responses((status = 200, description = "The team", body = Envelope<TeamOut>),
              (status = 400, description = "Bad team_id"),
              (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn get_team(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(Scope::Read)?;
    let t = load_team(&app, &id).await?;
    Ok(ok(StatusCode::OK, "", TeamOut::from(&t)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTeamIn {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 255)]
    name: Option<String>,
    /// `null` removes the working hours.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<WorkingHoursDoc>)]
    working_hours: Option<Option<WorkingHoursSpec>>,
    /// `null` removes the channel.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 80, pattern = "^\\S+$")]
    slack_channel: Option<Option<String>>,
}

/// Change a team.
#[utoipa::path(patch, path = "/v2/teams/{team_id}", tag = "teams",
    params(("team_id" = i64, Path, minimum = 1)), request_body = PatchTeamIn,
    responses((status = 200, description = "Updated", body = Envelope<TeamOut>),
              (status = 400, description = "Invalid"),
              (status = 404, description = "Not found"), (status = 409, description = "Name taken")),
    security(("bearer" = [])))]
async fn patch_team(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PatchTeamIn>,
) -> ApiResult {
    caller.require(Scope::Write)?;
    let who = actor(&headers, &caller)?;
    let id = TeamId(path_id(&id, "team_id")?);
    let patch = TeamPatch {
        name: body.name.as_deref().map(team_name).transpose()?,
        working_hours: body
            .working_hours
            .map(|h| h.map(working_hours).transpose())
            .transpose()?,
        slack_channel: body
            .slack_channel
            .map(|c| {
                c.as_deref()
                    .map(|c| channel(c, "slack_channel"))
                    .transpose()
            })
            .transpose()?,
    };
    if patch == TeamPatch::default() {
        return Err(ApiError::bad_request("No updatable fields were supplied."));
    }
    let team = app
        .store
        .update_team(
            id,
            &patch,
            app.clock.now(),
            Some(&|t: &Team| entry("team_updated", &who, None, TeamOut::from(t))),
        )
        .await
        .map_err(conflict_name)?
        .ok_or_else(|| ApiError::not_found(format!("Team {id} was not found.")))?;
    Ok(ok(StatusCode::OK, "Team updated.", TeamOut::from(&team)))
}

/// Delete a team, with its notification targets and team maintenance windows.
#[utoipa::path(delete, path = "/v2/teams/{team_id}", tag = "teams",
    params(("team_id" = i64, Path, minimum = 1)),
    responses((status = 200, description = "Deleted", body = Envelope<DeletedTeamOut>),
              (status = 400, description = "Bad team_id or X-Actor"),
              (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn delete_team(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(Scope::Write)?;
    let who = actor(&headers, &caller)?;
    let id = TeamId(path_id(&id, "team_id")?);
    let audit = entry("team_deleted", &who, None, json!({ "team_id": id.0 }));
    if !app.store.delete_team(id, Some(&audit)).await? {
        return Err(ApiError::not_found(format!("Team {id} was not found.")));
    }
    Ok(ok(
        StatusCode::OK,
        "Team deleted, with its notification targets and maintenance windows.",
        DeletedTeamOut { team_id: id.0 },
    ))
}

// ---- targets ------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTargetIn {
    #[schema(value_type = TargetKind)]
    kind: String,
    /// slack: `{"channel"}` (1 to 80 characters, no spaces); pagerduty: `{"routing_key"}` (1 to
    /// 64 printable characters); webhook: `{"url", "secret"}` (a public http(s) URL allowed by
    /// `MEDIC_ALLOWED_WEBHOOK_HOSTS`; a secret of 16 to 256 characters).
    #[schema(value_type = Object)]
    config: Value,
    /// Lower is notified first (default 0).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 10000)]
    priority: Option<i32>,
    /// Of the team's working hours (default `always`).
    #[serde(default)]
    #[schema(value_type = Option<schema::PagingPeriod>)]
    period: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTargetIn {
    /// The whole configuration, for the target's kind (secrets included).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    config: Option<Value>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 10000)]
    priority: Option<i32>,
    #[serde(default)]
    #[schema(value_type = Option<schema::PagingPeriod>)]
    period: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
}

fn period(raw: &str) -> Result<PagingPeriod, ApiError> {
    PagingPeriod::parse(raw.trim()).ok_or_else(|| {
        ApiError::bad_request("period must be one of always, during_hours, after_hours.")
    })
}

fn priority(v: i32) -> Result<i32, ApiError> {
    if (0..=MAX_TARGET_PRIORITY).contains(&v) {
        Ok(v)
    } else {
        Err(ApiError::bad_request(format!(
            "priority must be between 0 and {MAX_TARGET_PRIORITY}."
        )))
    }
}

/// The string field `name` of a target configuration.
fn config_str<'a>(config: &'a Map<String, Value>, name: &str) -> Result<&'a str, ApiError> {
    match config.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::bad_request(format!(
            "config.{name} must be a string."
        ))),
        None => Err(ApiError::bad_request(format!("config.{name} is required."))),
    }
}

/// Validates a target configuration of `kind`.
fn target_config(
    kind: &str,
    raw: &Value,
    allowlist: &[String],
    allow_private: bool,
) -> Result<TargetConfig, ApiError> {
    let Value::Object(config) = raw else {
        return Err(ApiError::bad_request("config must be a JSON object."));
    };
    let allowed: &[&str] = match kind {
        "slack" => &["channel"],
        "pagerduty" => &["routing_key"],
        "webhook" => &["url", "secret"],
        _ => {
            return Err(ApiError::bad_request(
                "kind must be one of slack, pagerduty, webhook.",
            ));
        }
    };
    if let Some(extra) = config.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "config.{extra} is not a setting of a {kind} target."
        )));
    }
    match kind {
        "slack" => Ok(TargetConfig::Slack {
            channel: channel(config_str(config, "channel")?, "config.channel")?,
        }),
        "pagerduty" => {
            let key = config_str(config, "routing_key")?.trim();
            if key.is_empty()
                || key.len() > MAX_ROUTING_KEY
                || !key.chars().all(|c| c.is_ascii_graphic())
            {
                return Err(ApiError::bad_request(format!(
                    "config.routing_key must be 1 to {MAX_ROUTING_KEY} printable characters."
                )));
            }
            Ok(TargetConfig::Pagerduty {
                routing_key: key.to_owned(),
            })
        }
        _ => {
            let url = config_str(config, "url")?.trim();
            let checked = if allow_private {
                ssrf::check_url_allowing_private(url, allowlist)
            } else {
                ssrf::check_url(url, allowlist)
            };
            let checked = match checked {
                Ok(t) => t,
                Err(e) => {
                    tracing::info!(reason = e.reason(), "webhook URL refused");
                    return Err(ApiError::bad_request(format!(
                        "config.url: {}.",
                        ssrf::INVALID_WEBHOOK_URL
                    )));
                }
            };
            let secret = config_str(config, "secret")?;
            let n = secret.chars().count();
            if !(MIN_SECRET..=MAX_SECRET).contains(&n) || secret.chars().any(char::is_control) {
                return Err(ApiError::bad_request(format!(
                    "config.secret must be {MIN_SECRET} to {MAX_SECRET} printable characters."
                )));
            }
            Ok(TargetConfig::Webhook {
                // Stored as it will be requested, not as typed.
                url: checked.url().as_str().to_owned(),
                secret: secret.to_owned(),
            })
        }
    }
}

async fn create_target(
    app: &AppState,
    owner: TargetOwner,
    body: CreateTargetIn,
    who: &crate::store::Actor,
) -> ApiResult {
    let new = NewTarget {
        owner,
        config: target_config(
            body.kind.trim(),
            &body.config,
            &app.config.allowed_webhook_hosts,
            app.config.notify.allow_private_webhook_targets,
        )?,
        priority: priority(body.priority.unwrap_or(0))?,
        period: body
            .period
            .as_deref()
            .map(period)
            .transpose()?
            .unwrap_or(PagingPeriod::Always),
        enabled: body.enabled.unwrap_or(true),
        at: app.clock.now(),
    };
    let audit =
        |t: &NotificationTarget| entry("target_created", who, service_of(t), TargetOut::from(t));
    let t = app.store.create_target(&new, Some(&audit)).await?;
    Ok(ok(
        StatusCode::CREATED,
        "Notification target created.",
        TargetOut::from(&t),
    ))
}

async fn list_targets(app: &AppState, filter: TargetFilter) -> ApiResult {
    let targets = app.store.list_targets(&filter).await?;
    let entries: Vec<TargetOut> = targets.iter().map(TargetOut::from).collect();
    Ok(ok(StatusCode::OK, "", entries))
}

/// A team's notification targets, in notification order.
#[utoipa::path(get, path = "/v2/teams/{team_id}/targets", tag = "teams",
    params(("team_id" = i64, Path, minimum = 1)),
    responses((status = 200, description = "Targets (secrets masked)", body = Envelope<Vec<TargetOut>>),
              (status = 400, description = "Bad team_id"),
              (status = 404, description = "No such team")),
    security(("bearer" = [])))]
async fn list_team_targets(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(Scope::Read)?;
    let team = load_team(&app, &id).await?;
    list_targets(
        &app,
        TargetFilter {
            team: Some(team.id),
            service: None,
        },
    )
    .await
}

/// Add a notification target to a team.
#[utoipa::path(post, path = "/v2/teams/{team_id}/targets", tag = "teams",
    params(("team_id" = i64, Path, minimum = 1)), request_body = CreateTargetIn,
    responses((status = 201, description = "Created (secrets masked)", body = Envelope<TargetOut>),
              (status = 400, description = "Invalid"),
              (status = 404, description = "No such team")),
    security(("bearer" = [])))]
async fn create_team_target(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CreateTargetIn>,
) -> ApiResult {
    caller.require(Scope::Write)?;
    let who = actor(&headers, &caller)?;
    let team = load_team(&app, &id).await?;
    create_target(&app, TargetOwner::Team(team.id), body, &who).await
}

/// A service's own notification targets, in notification order.
#[utoipa::path(get, path = "/v2/services/{service_id}/targets", tag = "teams",
    params(("service_id" = i64, Path, minimum = 1)),
    responses((status = 200, description = "Targets (secrets masked)", body = Envelope<Vec<TargetOut>>),
              (status = 400, description = "Bad service_id"),
              (status = 404, description = "No such service")),
    security(("bearer" = [])))]
async fn list_service_targets(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(Scope::Read)?;
    let s = load_service(&app, &id).await?;
    list_targets(
        &app,
        TargetFilter {
            team: None,
            service: Some(s.id),
        },
    )
    .await
}

/// Add a notification target to one service.
#[utoipa::path(post, path = "/v2/services/{service_id}/targets", tag = "teams",
    params(("service_id" = i64, Path, minimum = 1)), request_body = CreateTargetIn,
    responses((status = 201, description = "Created (secrets masked)", body = Envelope<TargetOut>),
              (status = 400, description = "Invalid"),
              (status = 404, description = "No such service")),
    security(("bearer" = [])))]
async fn create_service_target(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CreateTargetIn>,
) -> ApiResult {
    caller.require(Scope::Write)?;
    let who = actor(&headers, &caller)?;
    let s = load_service(&app, &id).await?;
    create_target(&app, TargetOwner::Service(s.id), body, &who).await
}

/// Change a notification target (its kind and owner stay).
#[utoipa::path(patch, path = "/v2/targets/{target_id}", tag = "teams",
    params(("target_id" = i64, Path, minimum = 1)), request_body = PatchTargetIn,
    responses((status = 200, description = "Updated (secrets masked)", body = Envelope<TargetOut>),
              (status = 400, description = "Invalid"),
              (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn patch_target(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PatchTargetIn>,
) -> ApiResult {
    caller.require(Scope::Write)?;
    let who = actor(&headers, &caller)?;
    let id = TargetId(path_id(&id, "target_id")?);
    let before =
        app.store.get_target(id).await?.ok_or_else(|| {
            ApiError::not_found(format!("Notification target {id} was not found."))
        })?;
    let patch = TargetPatch {
        config: body
            .config
            .as_ref()
            .map(|c| {
                target_config(
                    before.config.kind(),
                    c,
                    &app.config.allowed_webhook_hosts,
                    app.config.notify.allow_private_webhook_targets,
                )
            })
            .transpose()?,
        priority: body.priority.map(priority).transpose()?,
        period: body.period.as_deref().map(period).transpose()?,
        enabled: body.enabled,
    };
    if patch == TargetPatch::default() {
        return Err(ApiError::bad_request("No updatable fields were supplied."));
    }
    let after = app
        .store
        .update_target(
            id,
            &patch,
            app.clock.now(),
            Some(&|t: &NotificationTarget| {
                entry("target_updated", &who, service_of(t), TargetOut::from(t))
            }),
        )
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Notification target {id} was not found.")))?;
    Ok(ok(
        StatusCode::OK,
        "Notification target updated.",
        TargetOut::from(&after),
    ))
}

/// Delete a notification target.
#[utoipa::path(delete, path = "/v2/targets/{target_id}", tag = "teams",
    params(("target_id" = i64, Path, minimum = 1)),
    responses((status = 200, description = "Deleted", body = Envelope<DeletedTargetOut>),
              (status = 400, description = "Bad target_id or X-Actor"),
              (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn delete_target(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(Scope::Write)?;
    let who = actor(&headers, &caller)?;
    let id = TargetId(path_id(&id, "target_id")?);
    let audit = entry("target_deleted", &who, None, json!({ "target_id": id.0 }));
    if !app.store.delete_target(id, Some(&audit)).await? {
        return Err(ApiError::not_found(format!(
            "Notification target {id} was not found."
        )));
    }
    Ok(ok(
        StatusCode::OK,
        "Notification target deleted.",
        DeletedTargetOut { target_id: id.0 },
    ))
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn mask_keeps_only_the_last_four_characters() {
        assert_eq!(mask("0123456789abcdef"), "****cdef");
        assert_eq!(mask("abcde"), "****bcde");
        // Too short to show anything.
        assert_eq!(mask("abcd"), "****");
        assert_eq!(mask(""), "****");
        // Characters, not bytes.
        assert_eq!(mask("ключ-секрет"), "****крет");
    }
}
