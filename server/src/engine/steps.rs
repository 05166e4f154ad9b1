//! Step drivers: what a webhook step and a condition step do in the world. Each returns what
//! the state machine takes as the step's result; secrets are masked in everything returned.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};

use super::EngineSettings;
use crate::domain::{ServiceId, ServiceState, Timestamp};
use crate::notify::{guarded_client, read_capped, transport_error_text};
use crate::playbook::machine::{MAX_STEP_OUTPUT_BYTES, Outcome, cap_output};
use crate::playbook::plan::{Body, Check, Plan, StepKind};
use crate::playbook::vars::{Masker, Scope, Template};
use crate::store::{AlertState, HeartbeatQuery, Store};

/// The header that makes a repeated webhook recognisable to its receiver.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// Which attempt of the step this request is (1 unless re-sent after a restart).
pub const ATTEMPT_HEADER: &str = "X-Medic-Attempt";

fn failed(masker: &Masker, error: String) -> Outcome {
    Outcome {
        ok: false,
        error: Some(masker.mask(&error)),
        ..Outcome::default()
    }
}

fn headers(
    list: &[(String, Template)],
    scope: &Scope,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut out = Vec::with_capacity(list.len());
    for (name, value) in list {
        let text = value
            .render(scope)
            .map_err(|e| format!("header `{name}`: {e}"))?;
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a valid header name"))?;
        let mut value = HeaderValue::from_str(&text)
            .map_err(|_| format!("header `{name}`: the value is not a valid header value"))?;
        value.set_sensitive(true);
        out.push((name, value));
    }
    Ok(out)
}

/// Sends webhook step `step` once, through the SSRF guard, with `Idempotency-Key`.
pub async fn send_webhook(
    plan: &Plan,
    step: usize,
    scope: &Scope,
    idempotency_key: &str,
    attempt: u32,
    settings: &EngineSettings,
) -> Outcome {
    let masker = scope.masker();
    let StepKind::Webhook(w) = &plan.steps[step].kind else {
        return failed(&masker, "not a webhook step".into());
    };
    let url = match w.url.render(scope) {
        Ok(u) => u,
        Err(e) => return failed(&masker, format!("url: {e}")),
    };
    let headers = match headers(&w.headers, scope) {
        Ok(h) => h,
        Err(e) => return failed(&masker, e),
    };
    let body = match w.body.as_ref().map(|b| b.render(scope)).transpose() {
        Ok(b) => b,
        Err(e) => return failed(&masker, format!("body: {e}")),
    };
    let (client, url) = match guarded_client(
        &url,
        &settings.allowed_hosts,
        settings.allow_private_targets,
        w.timeout,
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            if let crate::notify::GuardRefusal::Refused(r) = &e {
                tracing::warn!(
                    reason = r.reason(),
                    "webhook step refused by the SSRF guard"
                );
            }
            return failed(&masker, e.to_string());
        }
    };
    let method =
        reqwest::Method::from_bytes(w.method.as_str().as_bytes()).unwrap_or(reqwest::Method::POST);
    let mut request = client
        .request(method, url)
        .header(IDEMPOTENCY_KEY, idempotency_key)
        .header(ATTEMPT_HEADER, attempt.to_string());
    if let Some(body) = body {
        let json = matches!(w.body, Some(Body::Json(_)));
        if json && !headers.iter().any(|(n, _)| n == CONTENT_TYPE) {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        request = request.body(body);
    }
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => return failed(&masker, transport_error_text(&e, w.timeout)),
    };
    let status = response.status().as_u16();
    // Read past the cap by the longest a secret can be, and mask before cutting: a secret
    // that straddles the cap is masked whole, never left half in the output.
    let read_cap = MAX_STEP_OUTPUT_BYTES + crate::http::secrets::MAX_SECRET_BYTES;
    let (output, read_error) = match read_capped(response, read_cap).await {
        Ok((bytes, cut)) => {
            let mut text = cap_output(&masker.mask(&String::from_utf8_lossy(&bytes)));
            if cut {
                text.push_str("\n[… cut]");
            }
            (Some(text), None)
        }
        Err(e) => (None, Some(transport_error_text(&e, w.timeout))),
    };
    let ok = w.is_success(status) && read_error.is_none();
    let error =
        if ok {
            None
        } else {
            Some(masker.mask(&read_error.unwrap_or_else(|| {
                format!("HTTP {status} is not one of the step's success codes")
            })))
        };
    Outcome {
        ok,
        http_status: Some(status),
        output,
        error,
        ..Outcome::default()
    }
}

/// Evaluates condition step `step` now: whether it is met, and what was seen.
#[allow(clippy::too_many_arguments)]
pub async fn check_condition(
    store: &dyn Store,
    plan: &Plan,
    step: usize,
    scope: &Scope,
    service_id: Option<ServiceId>,
    alert_id: Option<i64>,
    started: Option<Timestamp>,
    settings: &EngineSettings,
) -> (bool, String) {
    let masker = scope.masker();
    let StepKind::Condition(c) = &plan.steps[step].kind else {
        return (false, "not a condition step".into());
    };
    let result = match &c.check {
        Check::HeartbeatReceived {
            service,
            min_count,
            status,
        } => match service_of(store, service.as_ref(), scope, service_id).await {
            Ok(sid) => heartbeats_since(store, sid, *min_count, status.as_deref(), started).await,
            Err(e) => Err(e),
        },
        Check::ServiceUp { service } => {
            match service_of(store, service.as_ref(), scope, service_id).await {
                Ok(sid) => match store.get_service(sid).await {
                    Ok(Some(s)) => Ok((
                        s.state == ServiceState::Up,
                        format!("service `{}` is {}", s.heartbeat_name, s.state.as_str()),
                    )),
                    Ok(None) => Err("the service no longer exists".to_owned()),
                    Err(e) => Err(format!("cannot read the service: {e}")),
                },
                Err(e) => Err(e),
            }
        }
        Check::AlertResolved => match alert_id {
            None => Err("the execution was not started by an alert".to_owned()),
            Some(a) => match store.get_alert(a).await {
                Ok(Some(alert)) => Ok((
                    alert.state == AlertState::Resolved,
                    format!("alert {a} is {}", alert.state.as_str()),
                )),
                Ok(None) => Err(format!("alert {a} does not exist")),
                Err(e) => Err(format!("cannot read the alert: {e}")),
            },
        },
        Check::HttpOk {
            url,
            headers: list,
            success_codes,
        } => http_ok(url, list, success_codes, scope, settings).await,
        Check::StepStatus { step, .. } => Err(format!(
            "the status of step `{step}` is decided by the state machine"
        )),
    };
    match result {
        Ok((met, detail)) => (met, masker.mask(&detail)),
        Err(e) => (false, masker.mask(&e)),
    }
}

async fn service_of(
    store: &dyn Store,
    name: Option<&Template>,
    scope: &Scope,
    own: Option<ServiceId>,
) -> Result<ServiceId, String> {
    match name {
        None => own.ok_or_else(|| "the execution has no service".to_owned()),
        Some(t) => {
            let name = t.render(scope).map_err(|e| format!("service: {e}"))?;
            match store
                .find_service(&crate::domain::service::name_key(&name))
                .await
            {
                Ok(Some(s)) => Ok(s.id),
                Ok(None) => Err(format!("no service has the heartbeat name `{name}`")),
                Err(e) => Err(format!("cannot read the service: {e}")),
            }
        }
    }
}

async fn heartbeats_since(
    store: &dyn Store,
    service: ServiceId,
    min_count: u32,
    status: Option<&str>,
    since: Option<Timestamp>,
) -> Result<(bool, String), String> {
    let query = HeartbeatQuery {
        service_id: Some(service),
        name_key: None,
        service_name: None,
        limit: min_count.saturating_add(100).min(1000),
        offset: 0,
    };
    let rows = store
        .list_heartbeats(&query)
        .await
        .map_err(|e| format!("cannot read heartbeats: {e}"))?;
    let seen = rows
        .iter()
        .filter(|h| since.is_none_or(|s| h.time >= s))
        .filter(|h| status.is_none_or(|want| h.status.eq_ignore_ascii_case(want)))
        .count();
    let want = min_count.max(1) as usize;
    let which = status.map_or_else(String::new, |s| format!(" `{s}`"));
    Ok((
        seen >= want,
        format!("{seen} of {want}{which} heartbeats received since the step started"),
    ))
}

async fn http_ok(
    url: &Template,
    list: &[(String, Template)],
    success_codes: &[u16],
    scope: &Scope,
    settings: &EngineSettings,
) -> Result<(bool, String), String> {
    let timeout = Duration::from_secs(10);
    let url = url.render(scope).map_err(|e| format!("url: {e}"))?;
    let headers = headers(list, scope)?;
    let (client, url) = guarded_client(
        &url,
        &settings.allowed_hosts,
        settings.allow_private_targets,
        timeout,
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut request = client.get(url);
    for (n, v) in headers {
        request = request.header(n, v);
    }
    match request.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let ok = if success_codes.is_empty() {
                (200..300).contains(&status)
            } else {
                success_codes.contains(&status)
            };
            Ok((ok, format!("HTTP {status}")))
        }
        Err(e) => Ok((false, transport_error_text(&e, timeout))),
    }
}
