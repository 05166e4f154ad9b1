//! v2 agents: the WebSocket endpoint agents dial, and the registry of agents.
//!
//! `GET /v2/agents/connect` upgrades to the agent protocol for a key with the `agent` scope;
//! everything after the upgrade is the [`gateway`](crate::gateway)'s. The registry routes read
//! what the gateway recorded; `DELETE /v2/agents/{id}` revokes an agent: its session closes and
//! every later connection with its id is refused. `PUT /v2/agents/{id}/labels` sets the labels
//! an operator grants to one agent (on top of its key's), which a connected agent carries at
//! once.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::net::SocketAddr;

use medic_protocol::MAX_FRAME_BYTES;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::audit::entry;
use super::error::{ApiError, ApiResult, Envelope, ok};
use super::extract::{Caller, JsonBody, Page, PageParams, Params, actor, paginated};
use super::middleware::client_ip;
use super::schema::{Time, time};
use crate::domain::{Scope, Timestamp};
use crate::gateway::{IDLE_TIMEOUT, SessionContext};
use crate::store::{AgentFilter, AgentRecord};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(connect_agent))
        .routes(routes!(list_agents))
        .routes(routes!(get_agent, revoke_agent))
        .routes(routes!(set_agent_labels))
}

/// Whether the agent is connected: its session is open here, or the registry says connected
/// and another replica heard from it recently (a replica that died leaves `connected` set).
fn is_connected(app: &AppState, a: &AgentRecord, now: Timestamp) -> bool {
    app.gateway.is_connected(&a.id)
        || (a.connected
            && a.revoked_at.is_none()
            && a.last_seen_at.millis() + IDLE_TIMEOUT.as_millis() as i64 >= now.millis())
}

/// Whether an agent may connect and whether it is connected.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    Connected,
    Disconnected,
    Revoked,
}

/// The v2 representation of an agent.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AgentOut {
    /// The agent's own id.
    pub agent_id: String,
    pub hostname: String,
    pub agent_version: String,
    pub os: String,
    pub arch: String,
    /// The labels it carries, which run label selectors match: those of `declared_labels` that
    /// `label_grants` or else `key_labels` grant with the same value.
    pub labels: BTreeMap<String, String>,
    /// The labels its configuration declares (its last hello).
    #[serde(default)]
    pub declared_labels: BTreeMap<String, String>,
    /// The labels the API key it last connected with grants.
    #[serde(default)]
    pub key_labels: BTreeMap<String, String>,
    /// The labels an operator granted to this agent (`PUT /v2/agents/{agent_id}/labels`).
    #[serde(default)]
    pub label_grants: BTreeMap<String, String>,
    pub status: AgentStatus,
    /// Its session is open here, or another replica heard from it recently.
    pub connected: bool,
    pub session_id: Option<String>,
    pub remote_addr: Option<String>,
    pub first_seen_at: Time,
    pub connected_at: Option<Time>,
    pub disconnected_at: Option<Time>,
    pub last_seen_at: Time,
    pub revoked_at: Option<Time>,
    pub revoked_by: Option<String>,
    /// The API key the agent last connected with.
    pub key_id: Option<String>,
    /// The service the agent's heartbeats are recorded on (`agent:<id>`).
    pub service_id: Option<i64>,
    /// What the agent last reported about its host (in its hello, then every few minutes);
    /// `null` for an agent that reports none (older than this field).
    pub host: Option<HostFactsOut>,
}

/// Facts about an agent's host, as the agent read them (`sysinfo`). A fact the host's platform
/// cannot tell is `null`.
#[derive(Debug, Default, Serialize, serde::Deserialize, ToSchema)]
pub struct HostFactsOut {
    /// The operating system's name, e.g. `Debian GNU/Linux`.
    os_name: Option<String>,
    /// The operating system's version, e.g. `12`.
    os_version: Option<String>,
    /// The kernel's release, e.g. `6.1.0-18-amd64`.
    kernel_version: Option<String>,
    /// The CPU architecture as the kernel names it, e.g. `x86_64`.
    arch: Option<String>,
    /// Logical CPUs.
    cpus: Option<u32>,
    memory_total_bytes: Option<u64>,
    /// Memory available without swapping.
    memory_available_bytes: Option<u64>,
    /// The 1, 5 and 15 minute load averages.
    load_average: Option<[f64; 3]>,
    /// Size of the file system mounted at `/`.
    root_disk_total_bytes: Option<u64>,
    /// Space on `/` available to unprivileged users.
    root_disk_available_bytes: Option<u64>,
    /// Seconds since the host booted.
    uptime_seconds: Option<u64>,
    /// When the server received this report.
    #[serde(skip_deserializing)]
    reported_at: Option<Time>,
}

impl AgentOut {
    fn new(app: &AppState, a: &AgentRecord, now: Timestamp) -> Self {
        let connected = is_connected(app, a, now);
        let status = if a.revoked_at.is_some() {
            AgentStatus::Revoked
        } else if connected {
            AgentStatus::Connected
        } else {
            AgentStatus::Disconnected
        };
        Self {
            agent_id: a.id.clone(),
            hostname: a.hostname.clone(),
            agent_version: a.agent_version.clone(),
            os: a.os.clone(),
            arch: a.arch.clone(),
            labels: a.labels.clone(),
            declared_labels: a.declared_labels.clone(),
            key_labels: a.key_labels.clone(),
            label_grants: a.label_grants.clone(),
            status,
            connected,
            session_id: a.session_id.clone(),
            remote_addr: a.remote_addr.clone(),
            first_seen_at: a.first_seen_at.into(),
            connected_at: time(a.connected_at),
            disconnected_at: time(a.disconnected_at),
            last_seen_at: a.last_seen_at.into(),
            revoked_at: time(a.revoked_at),
            revoked_by: a.revoked_by.clone(),
            key_id: a.key_id.clone(),
            service_id: a.service_id.map(|s| s.0),
            host: a.host_facts.as_deref().and_then(|json| {
                let mut host: HostFactsOut = serde_json::from_str(json).ok()?;
                host.reported_at = time(a.host_facts_at);
                Some(host)
            }),
        }
    }
}

/// The initial read buffer of an agent's WebSocket (agent frames are mostly well under 1 KiB).
const SESSION_READ_BUFFER_BYTES: usize = 4 * 1024;

/// Open an agent session (WebSocket, `docs/protocol.md`).
#[utoipa::path(get, path = "/v2/agents/connect", tag = "agents",
    responses((status = 101, description = "Switching to the agent protocol"),
              (status = 400, description = "Not a WebSocket upgrade"),
              (status = 401, description = "Missing or invalid API key"),
              (status = 403, description = "The key lacks the agent scope")),
    security(("bearer" = [])))]
async fn connect_agent(
    State(app): State<AppState>,
    caller: Caller,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let principal = caller.require(Scope::Agent)?;
    let key_id = principal.key_id.as_ref().map(|k| k.0.clone());
    let upgrade = upgrade.map_err(|e| {
        ApiError::bad_request(format!(
            "This route expects a WebSocket upgrade ({}).",
            e.body_text()
        ))
    })?;
    let remote = SocketAddr::new(
        client_ip(peer.ip(), &headers, &app.config.trusted_proxies),
        peer.port(),
    );
    let ctx = SessionContext {
        store: app.store.clone(),
        writer: app.writer.clone(),
        remote: Some(remote),
        key_id,
        granted_labels: principal.labels.clone(),
    };
    let gateway = app.gateway.clone();
    // Frames up to twice the protocol's limit are read and answered with `frame_too_large`;
    // beyond that the WebSocket layer drops the connection before buffering more.
    // The read buffer starts small and grows for a large frame: tungstenite zero-fills the
    // whole buffer on every read, so its 128 KiB default costs 128 KiB of RSS per session
    // (1.4 GB at 10,000 agents; see docs/benchmarks.md, "Agent").
    Ok(upgrade
        .read_buffer_size(SESSION_READ_BUFFER_BYTES)
        .max_message_size(2 * MAX_FRAME_BYTES)
        .max_frame_size(2 * MAX_FRAME_BYTES)
        .on_upgrade(move |socket| async move { gateway.serve(ctx, socket).await })
        .into_response())
}

/// List agents.
#[utoipa::path(get, path = "/v2/agents", tag = "agents",
    params(("connected" = Option<bool>, Query, description = "0/1 or true/false: only agents whose registry entry is (dis)connected"),
           ("revoked" = Option<bool>, Query, description = "only revoked (1) or unrevoked (0) agents"),
           ("label.<key>" = Option<String>, Query, description = "only agents with this label value; repeatable with other keys"),
           PageParams),
    responses((status = 200, description = "A page of agents", body = Envelope<Page<AgentOut>>),
              (status = 400, description = "Bad filter")),
    security(("bearer" = [])))]
async fn list_agents(State(app): State<AppState>, caller: Caller, params: Params) -> ApiResult {
    caller.require(Scope::Read)?;
    let page = params.page(50, 250)?;
    let labels = params.prefixed("label.");
    medic_protocol::validate::validate_labels(&labels)
        .map_err(|e| ApiError::bad_request(format!("label.<key>: {e}.")))?;
    let filter = AgentFilter {
        connected: params.flag("connected")?,
        revoked: params.flag("revoked")?,
        labels,
    };
    let found = app.store.list_agents(&filter, page).await?;
    let now = app.clock.now();
    let entries: Vec<AgentOut> = found
        .entries
        .iter()
        .map(|a| AgentOut::new(&app, a, now))
        .collect();
    Ok(ok(
        StatusCode::OK,
        "",
        paginated(entries, found.total_count, page),
    ))
}

/// One agent.
#[utoipa::path(get, path = "/v2/agents/{agent_id}", tag = "agents",
    params(("agent_id" = String, Path)),
    responses((status = 200, description = "The agent", body = Envelope<AgentOut>),
              (status = 404, description = "Unknown agent")),
    security(("bearer" = [])))]
async fn get_agent(
    State(app): State<AppState>,
    caller: Caller,
    Path(agent_id): Path<String>,
) -> ApiResult {
    caller.require(Scope::Read)?;
    let agent = app
        .store
        .get_agent(&agent_id)
        .await?
        .ok_or_else(|| unknown(&agent_id))?;
    Ok(ok(
        StatusCode::OK,
        "",
        AgentOut::new(&app, &agent, app.clock.now()),
    ))
}

/// Revoke an agent: its session closes and it may not connect again.
#[utoipa::path(delete, path = "/v2/agents/{agent_id}", tag = "agents",
    params(("agent_id" = String, Path)),
    responses((status = 200, description = "Revoked (or already revoked): the agent", body = Envelope<AgentOut>),
              (status = 400, description = "Bad X-Actor"),
              (status = 404, description = "Unknown agent")),
    security(("bearer" = [])))]
async fn revoke_agent(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(agent_id): Path<String>,
) -> ApiResult {
    caller.require(Scope::Admin)?;
    let who = actor(&headers, &caller)?;
    let known = app
        .store
        .get_agent(&agent_id)
        .await?
        .ok_or_else(|| unknown(&agent_id))?;
    let now = app.clock.now();
    let audit = entry(
        "agent_revoked",
        &who,
        known.service_id,
        json!({ "agent_id": agent_id }),
    );
    let revoked = app
        .store
        .revoke_agent(&agent_id, &who.label(), now, Some(&audit))
        .await?;
    let agent = app
        .store
        .get_agent(&agent_id)
        .await?
        .ok_or_else(|| unknown(&agent_id))?;
    app.gateway.kick(&agent_id, "this agent was revoked");
    if !revoked {
        return Ok(ok(
            StatusCode::OK,
            "Agent was already revoked.",
            AgentOut::new(&app, &agent, app.clock.now()),
        ));
    }
    Ok(ok(
        StatusCode::OK,
        "Agent revoked.",
        AgentOut::new(&app, &agent, app.clock.now()),
    ))
}

/// The labels an operator grants to one agent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentLabelsIn {
    /// Every label granted to this agent, replacing the previous grants (`{}` revokes them
    /// all). Keys and values as for an API key's labels.
    pub labels: BTreeMap<String, String>,
}

/// Set the labels an operator grants to an agent, on top of those its API key grants. The
/// agent carries those of its declared labels that are granted, with the same value (a grant
/// here wins over the key's); a connected agent carries them at once, and runs by label reach
/// it from then on. The grants replace the previous ones.
#[utoipa::path(put, path = "/v2/agents/{agent_id}/labels", tag = "agents",
    params(("agent_id" = String, Path)),
    request_body = AgentLabelsIn,
    responses((status = 200, description = "Set: the agent with the labels it now carries", body = Envelope<AgentOut>),
              (status = 400, description = "Invalid labels (nothing changed)"),
              (status = 403, description = "Not an admin key"),
              (status = 404, description = "Unknown agent"),
              (status = 409, description = "The agent is revoked")),
    security(("bearer" = [])))]
async fn set_agent_labels(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(agent_id): Path<String>,
    JsonBody(body): JsonBody<AgentLabelsIn>,
) -> ApiResult {
    caller.require(Scope::Admin)?;
    let who = actor(&headers, &caller)?;
    medic_protocol::validate::validate_labels(&body.labels)
        .map_err(|e| ApiError::bad_request(format!("labels: {e}.")))?;
    let known = app
        .store
        .get_agent(&agent_id)
        .await?
        .ok_or_else(|| unknown(&agent_id))?;
    if known.revoked_at.is_some() {
        return Err(ApiError::conflict(format!(
            "Agent {agent_id:?} is revoked; its labels cannot change."
        )));
    }
    let audit = entry(
        "agent_labels_changed",
        &who,
        known.service_id,
        json!({
            "agent_id": agent_id,
            "label_grants": body.labels,
            "previous_label_grants": known.label_grants,
        }),
    );
    let agent = app
        .store
        .set_agent_label_grants(&agent_id, &body.labels, Some(&audit))
        .await?
        .ok_or_else(|| unknown(&agent_id))?;
    let not_declared: Vec<String> = body
        .labels
        .iter()
        .filter(|(k, v)| agent.declared_labels.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let message = if not_declared.is_empty() {
        "Agent labels set.".to_owned()
    } else {
        format!(
            "Agent labels set. The agent does not declare {}: it carries them once its \
             configuration does.",
            not_declared.join(", ")
        )
    };
    Ok(ok(
        StatusCode::OK,
        &message,
        AgentOut::new(&app, &agent, app.clock.now()),
    ))
}

fn unknown(agent_id: &str) -> ApiError {
    ApiError::not_found(format!("No agent {agent_id:?} is registered."))
}
