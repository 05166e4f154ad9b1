//! Cross-cutting request handling: request ids, tracing spans, panics, metrics, the per-request
//! timeout, and the gate (authentication + rate limiting) every route passes through.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

use super::AppState;
use super::error::{ApiError, NoResults, RateLimitedEnvelope, json_response};
use super::extract::{Caller, unauthorized};
use crate::auth::AuthError;
use crate::ratelimit::{Decision, RateClass};

const REQUEST_ID: &str = "x-request-id";

/// Keeps a well-formed incoming `X-Request-Id` (≤ 128 of `[A-Za-z0-9._:-]`), otherwise makes a
/// UUID; puts it on the request (for logs) and on the response.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let incoming = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 128
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        })
        .map(str::to_owned);
    let id = incoming.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    req.headers_mut().insert(REQUEST_ID, value.clone());
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(REQUEST_ID, value);
    resp
}

/// The tracing span of one request: method, route template (never the raw query, which may
/// carry names but not secrets) and request id.
pub fn make_span(req: &Request) -> tracing::Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str());
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!("request", method = %req.method(), route, request_id = id)
}

/// A panic in a handler becomes a 500 envelope (and is logged), never a dropped connection.
pub fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("panic");
    ApiError::internal(&detail).into_response()
}

/// `medic_http_requests_total` and `medic_http_request_duration_seconds`, by route template.
pub async fn record_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    // A client may send any method token; only the standard ones become label values, so the
    // label sets stay bounded.
    let method = match *req.method() {
        Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE => {
            req.method().as_str()
        }
        Method::HEAD | Method::OPTIONS => req.method().as_str(),
        _ => "other",
    }
    .to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("medic_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("medic_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    resp
}

/// Ends a request that takes longer than `MEDIC_REQUEST_TIMEOUT_SECONDS` with a 503 envelope.
pub async fn timeout(State(app): State<AppState>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(app.config.request_timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            ApiError::retry_later("The request took too long and was abandoned.").into_response()
        }
    }
}

/// Refuses control characters (NUL and the like) and malformed UTF-8 in the path and the query
/// string with a 400 that names the parameter, before a handler or a database sees them
/// (PostgreSQL cannot store NUL in text).
pub async fn reject_control_characters(req: Request, next: Next) -> Response {
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    match unprintable_in_uri(req.uri(), template) {
        Some(message) => ApiError::bad_request(message).into_response(),
        None => next.run(req).await,
    }
}

/// What is wrong with the path or the query of `uri`, if anything: `template` (the matched
/// route, `/service/{name}`) names the path parameters.
pub fn unprintable_in_uri(uri: &axum::http::Uri, template: Option<&str>) -> Option<String> {
    let names: Vec<&str> = template.map_or_else(Vec::new, |t| t.split('/').collect());
    for (i, segment) in uri.path().split('/').enumerate() {
        if !segment.contains('%') {
            // Only percent-escapes can carry control characters into a URI.
            continue;
        }
        let printable = String::from_utf8(percent_decode(segment))
            .is_ok_and(|s| !s.chars().any(char::is_control));
        if !printable {
            let name = names
                .get(i)
                .and_then(|t| t.strip_prefix('{'))
                .and_then(|t| t.strip_suffix('}'))
                .map(|t| t.trim_start_matches('*'));
            return Some(match name {
                Some(n) => {
                    format!("Path parameter {n} must be UTF-8 text without control characters.")
                }
                None => "The request path must be UTF-8 text without control characters.".into(),
            });
        }
    }
    let query = uri.query()?;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| String::from_utf8(percent_decode(&s.replace('+', " ")));
        let Ok(key) = decode(key) else {
            return Some("Query parameter names must be UTF-8 text.".into());
        };
        if key.chars().any(char::is_control) {
            return Some("Query parameter names must not contain control characters.".into());
        }
        let printable = decode(value).is_ok_and(|v| !v.chars().any(char::is_control));
        if !printable {
            return Some(format!(
                "Query parameter {key} must be UTF-8 text without control characters."
            ));
        }
    }
    None
}

/// `%XX` escapes decoded to bytes (a malformed escape is kept as written).
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Which limit a path falls under.
pub fn classify(path: &str) -> RateClass {
    if path == "/heartbeat" || path.starts_with("/v2/heartbeat/") {
        RateClass::Heartbeat
    } else if path == "/health" || path.starts_with("/health/") || path == "/v1/healthcheck/network"
    {
        RateClass::Health
    } else if path == "/metrics" {
        RateClass::Metrics
    } else if path == "/docs" || path.starts_with("/docs/") || path == "/openapi.json" {
        RateClass::Docs
    } else {
        RateClass::Management
    }
}

/// The client address: the peer, or — when the peer is a trusted proxy — the right-most
/// `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) if is_trusted(&ip) => client = ip,
            Some(ip) => return ip,
            None => return client,
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`192.0.2.1:5001`), an IPv6
/// address optionally in brackets (`[2001:db8::1]` or `[2001:db8::1]:443`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = hop.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<std::net::Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

fn set_rate_headers(headers: &mut HeaderMap, d: &Decision) {
    let num =
        |n: u64| HeaderValue::from_str(&n.to_string()).unwrap_or(HeaderValue::from_static("0"));
    headers.insert("x-ratelimit-limit", num(u64::from(d.limit)));
    headers.insert("x-ratelimit-remaining", num(u64::from(d.remaining)));
    headers.insert(
        "x-ratelimit-reset",
        num(d.reset_after.as_secs_f64().ceil() as u64),
    );
}

/// Authenticates the caller (if a key is presented) and applies the rate limit: per API key when
/// one is valid, else per client IP. Rate-limit headers go on every response.
pub async fn gate(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let class = match classify(req.uri().path()) {
        // Only ingestion counts against the heartbeat limit; reading `GET /heartbeat` is a
        // management request.
        RateClass::Heartbeat if req.method() == Method::GET => RateClass::Management,
        class => class,
    };
    let open_route = matches!(
        class,
        RateClass::Health | RateClass::Metrics | RateClass::Docs
    );
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
    let ip = client_ip(peer, req.headers(), &app.config.trusted_proxies);

    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| {
                    s.strip_prefix("Bearer ")
                        .or_else(|| s.strip_prefix("bearer "))
                })
                .map(str::to_owned)
        });
    let limits = &app.config.limits;
    let class_limit = match class {
        RateClass::Heartbeat => limits.heartbeat,
        RateClass::Management => limits.management,
        RateClass::Health => limits.health,
        RateClass::Metrics => limits.metrics,
        RateClass::Docs => limits.docs,
    };
    let ip_key = format!("ip:{ip}");
    // Failed authentications are counted per client address, in a budget of their own; once a
    // client has spent it, any key it presents that this replica has not verified recently is
    // refused before it is looked up, so made-up keys cost a throttled client no lookup and
    // fill no cache. Keys that verify never spend it, so clients sharing an address (a NAT)
    // each keep their key's own limit.
    let failures_key = format!("auth-failures:{ip}");
    if let Some(Some(t)) = &token
        && !app.auth.recognises(t)
        && let Some(refusal) = app.limiter.refusing(class, &failures_key)
    {
        return too_many_requests(class, &refusal);
    }
    let caller = match token {
        None => Caller::Anonymous,
        Some(None) => Caller::Invalid(AuthError::Malformed),
        Some(Some(t)) => match app.auth.authenticate(&t, app.clock.now()).await {
            Ok(p) => Caller::Key(p),
            Err(e) => Caller::Invalid(e),
        },
    };
    if let Caller::Invalid(e) = &caller {
        metrics::counter!("medic_auth_failures_total", "reason" => e.reason()).increment(1);
    }

    let decision = match &caller {
        Caller::Key(p) => {
            let tier = p
                .rate_limit_per_minute
                .filter(|_| matches!(class, RateClass::Heartbeat | RateClass::Management));
            app.limiter
                .check(class, &p.rate_key(), tier.unwrap_or(class_limit))
                .await
        }
        Caller::Invalid(AuthError::Unavailable) | Caller::Anonymous => {
            app.limiter.check(class, &ip_key, class_limit).await
        }
        Caller::Invalid(_) => {
            app.limiter
                .check_refusing(class, &failures_key, class_limit)
                .await
        }
    };
    if !decision.allowed {
        return too_many_requests(class, &decision);
    }

    let mut resp = match &caller {
        Caller::Invalid(AuthError::Unavailable) if !open_route => {
            ApiError::unavailable(&"API key lookup failed").into_response()
        }
        Caller::Invalid(e) if !open_route => unauthorized(e.message()).into_response(),
        _ => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
    };
    set_rate_headers(resp.headers_mut(), &decision);
    resp
}

/// The 429 answer: the envelope with `retry_after`, `Retry-After` and the rate-limit headers.
fn too_many_requests(class: RateClass, decision: &Decision) -> Response {
    metrics::counter!("medic_rate_limit_rejections_total", "class" => class.as_str()).increment(1);
    let retry = decision
        .retry_after
        .map_or(1, |d| d.as_secs_f64().ceil().max(1.0) as u64);
    let body = RateLimitedEnvelope {
        success: false,
        message: format!("Rate limit exceeded. Retry after {retry} seconds."),
        results: NoResults::Empty,
        retry_after: retry,
    };
    let mut resp = json_response(StatusCode::TOO_MANY_REQUESTS, &body);
    set_rate_headers(resp.headers_mut(), decision);
    resp.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        HeaderValue::from_str(&retry.to_string()).unwrap_or(HeaderValue::from_static("1")),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.1.1.1".parse().unwrap());
        let proxy: IpAddr = "10.2.2.2".parse().unwrap();
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(stranger, &h, &trusted), stranger);
        // A spoofed left-most entry does not win over the first untrusted hop.
        h.insert(
            "x-forwarded-for",
            "1.2.3.4, 203.0.113.9, 10.1.1.1".parse().unwrap(),
        );
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn paths_map_to_classes() {
        assert_eq!(classify("/heartbeat"), RateClass::Heartbeat);
        assert_eq!(classify("/v2/heartbeat/4/start"), RateClass::Heartbeat);
        assert_eq!(classify("/health/ready"), RateClass::Health);
        assert_eq!(classify("/metrics"), RateClass::Metrics);
        assert_eq!(classify("/openapi.json"), RateClass::Docs);
        assert_eq!(classify("/v2/services"), RateClass::Management);
    }
}
