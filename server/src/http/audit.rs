//! The audit log: `GET /v2/audit-logs`, as JSON or CSV.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiResult, Envelope, ok};
use super::extract::{Caller, Page, PageParams, Params, paginated};
use super::schema::Time;
use crate::domain::{Scope, ServiceId};
use crate::store::{Actor, AuditEntry, AuditFilter};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit_logs))
}

/// One entry for a change made through the API, stamped now, for the store to write in the
/// change's own transaction. `details` (usually the changed resource as the API shows it) must
/// never hold a secret.
pub fn entry(
    action: &str,
    actor: &Actor,
    service_id: Option<ServiceId>,
    details: impl Serialize,
) -> crate::store::NewAuditEntry {
    crate::store::NewAuditEntry {
        action_type: action.to_owned(),
        actor: actor.name.clone(),
        on_behalf_of: actor.on_behalf_of.clone(),
        service_id,
        execution_id: None,
        // The response types serialize infallibly (no maps with non-string keys).
        details: serde_json::to_value(details).unwrap_or_default(),
        at: crate::domain::Timestamp::now(),
    }
}

/// One entry of the audit log.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryOut {
    pub id: i64,
    pub action_type: String,
    /// The API key that made the change, as `name (id)` (`bootstrap-admin` for the bootstrap
    /// key), or the component that did.
    pub actor: String,
    /// Whom the caller said it acted for (the `X-Actor` header), as told: not verified.
    pub on_behalf_of: Option<String>,
    pub service_id: Option<i64>,
    pub execution_id: Option<i64>,
    /// What changed; its shape depends on `action_type`.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub timestamp: Time,
}

impl From<&AuditEntry> for AuditEntryOut {
    fn from(e: &AuditEntry) -> Self {
        Self {
            id: e.id,
            action_type: e.action_type.clone(),
            actor: e.actor.clone(),
            on_behalf_of: e.on_behalf_of.clone(),
            service_id: e.service_id.map(|s| s.0),
            execution_id: e.execution_id,
            details: e.details.clone(),
            timestamp: e.timestamp.into(),
        }
    }
}

/// Query the audit log (CSV when `Accept` contains `text/csv`).
#[utoipa::path(get, path = "/v2/audit-logs", tag = "audit",
    params(("execution_id" = Option<i64>, Query, minimum = 1),
           ("service_id" = Option<i64>, Query, minimum = 1),
           ("action_type" = Option<String>, Query), ("actor" = Option<String>, Query),
           ("start_date" = Option<String>, Query, format = DateTime, description = "RFC 3339, or a date (its midnight UTC)"),
           ("end_date" = Option<String>, Query, format = DateTime, description = "RFC 3339, or a date (its midnight UTC)"),
           PageParams),
    responses((status = 200, description = "A page of entries, newest first; CSV (with X-Total-Count, X-Limit, \
                X-Offset and X-Has-More headers) when `Accept` contains `text/csv`",
               content((Envelope<Page<AuditEntryOut>> = "application/json"),
                       (String = "text/csv"))),
              (status = 400, description = "Bad filter")),
    security(("bearer" = [])))]
async fn list_audit_logs(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    params: Params,
) -> ApiResult {
    caller.require(Scope::Read)?;
    let page = params.page(50, 250)?;
    let filter = AuditFilter {
        execution_id: params.int("execution_id", 1, i64::MAX)?,
        service_id: params.int("service_id", 1, i64::MAX)?.map(ServiceId),
        action_type: params.text("action_type").map(str::to_owned),
        actor: params.text("actor").map(str::to_owned),
        start: params.time("start_date")?,
        end: params.time("end_date")?,
    };
    let found = app.store.list_audit(&filter, page).await?;
    let wants_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/csv"));
    if !wants_csv {
        return Ok(ok(
            StatusCode::OK,
            "",
            paginated(
                found.entries.iter().map(AuditEntryOut::from).collect(),
                found.total_count,
                page,
            ),
        ));
    }
    let has_more = i64::from(page.offset) + (found.entries.len() as i64) < found.total_count;
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        to_csv(&found.entries),
    )
        .into_response();
    let h = resp.headers_mut();
    let num = |v: String| HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("0"));
    h.insert("x-total-count", num(found.total_count.to_string()));
    h.insert("x-limit", num(page.limit.to_string()));
    h.insert("x-offset", num(page.offset.to_string()));
    h.insert("x-has-more", num(has_more.to_string()));
    Ok(resp)
}

/// RFC 4180 quoting; cells starting with `= + - @` are prefixed with `'` so spreadsheets do not
/// evaluate them as formulas.
fn cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn to_csv(entries: &[AuditEntry]) -> String {
    let mut out = String::from(
        "id,timestamp,action_type,actor,service_id,execution_id,details,on_behalf_of\r\n",
    );
    for e in entries {
        let row = [
            e.id.to_string(),
            e.timestamp.rfc3339(),
            cell(&e.action_type),
            cell(&e.actor),
            e.service_id.map(|s| s.0.to_string()).unwrap_or_default(),
            e.execution_id.map(|x| x.to_string()).unwrap_or_default(),
            cell(&e.details.to_string()),
            cell(e.on_behalf_of.as_deref().unwrap_or_default()),
        ];
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_defused() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=cmd()"), "'=cmd()");
    }
}
