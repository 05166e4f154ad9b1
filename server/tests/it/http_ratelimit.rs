//! Rate limiting as clients see it: 429 envelopes with `Retry-After`, `X-RateLimit-*` headers on
//! every response, one bucket per API key or per client address (behind trusted proxies, the
//! `X-Forwarded-For` client), a separate limit per route class, and the rejection metric.

use medic_server::config::RateLimits;
use reqwest::Method;
use serde_json::json;

use crate::support::{GENEROUS, Reply, TestApp, assert_envelope, assert_ok, metric, send};

async fn rejections(app: &TestApp, class: &str) -> f64 {
    metric(
        &app.metrics().await,
        "medic_rate_limit_rejections_total",
        &[("class", class)],
    )
    .unwrap_or(0.0)
}

/// A 429 envelope with `retry_after` in the body and `Retry-After` agreeing with it.
#[track_caller]
fn assert_limited(r: &Reply) -> u64 {
    let v = assert_envelope(r, 429, false);
    let retry = v["retry_after"].as_u64().expect("retry_after");
    assert!(retry >= 1, "{v}");
    assert_eq!(r.header_u64("retry-after"), retry);
    assert_eq!(
        v["message"],
        format!("Rate limit exceeded. Retry after {retry} seconds.")
    );
    assert_eq!(r.header_u64("x-ratelimit-remaining"), 0);
    retry
}

#[track_caller]
fn assert_rate_headers(r: &Reply, limit: u64) {
    assert_eq!(
        r.header_u64("x-ratelimit-limit"),
        limit,
        "{} {:?}",
        r.status,
        r.headers
    );
    assert!(r.header_u64("x-ratelimit-remaining") < limit);
    assert!(r.header_u64("x-ratelimit-reset") <= 60);
}

#[tokio::test]
async fn the_fourth_heartbeat_in_a_minute_is_a_429_with_retry_after() {
    let app = TestApp::builder()
        .anonymous(true)
        .limits(RateLimits {
            heartbeat: 3,
            ..GENEROUS
        })
        .spawn()
        .await;
    let id = app.register("limited", 5).await;
    let before = rejections(&app, "heartbeat").await;
    let beat = json!({ "heartbeat_name": "limited", "status": "UP" });
    for remaining in [2, 1, 0] {
        let r = app.post_json("/heartbeat", &beat).await;
        assert_ok(&r, 201);
        assert_eq!(r.header_u64("x-ratelimit-limit"), 3);
        assert_eq!(r.header_u64("x-ratelimit-remaining"), remaining);
        assert!((1..=60).contains(&r.header_u64("x-ratelimit-reset")));
    }
    let r = app.post_json("/heartbeat", &beat).await;
    let retry = assert_limited(&r);
    // One request every 20 s at 3 per minute.
    assert!((19..=20).contains(&retry), "{retry}");
    // Job signals share the heartbeat class and bucket.
    assert_limited(
        &app.post_json(&format!("/v2/heartbeat/{id}/start"), &json!({}))
            .await,
    );
    // Other classes are unaffected.
    let r = app.get("/heartbeat").await;
    assert_eq!(assert_ok(&r, 200).as_array().map(Vec::len), Some(3));
    assert!(rejections(&app, "heartbeat").await >= before + 2.0);
}

#[tokio::test]
async fn rate_limit_headers_are_on_every_response_with_the_class_limit() {
    let app = TestApp::builder()
        .anonymous(true)
        .limits(RateLimits {
            heartbeat: 11,
            management: 12,
            health: 13,
            metrics: 14,
            docs: 15,
        })
        .spawn()
        .await;
    let cases: [(Method, &str, u16, u64); 15] = [
        (Method::POST, "/heartbeat", 400, 11),
        (Method::GET, "/heartbeat", 200, 12),
        (Method::POST, "/v2/heartbeat/9/start", 404, 11),
        (Method::GET, "/service", 200, 12),
        (Method::GET, "/v2/services", 401, 12),
        (Method::GET, "/no/such/route", 404, 12),
        (Method::DELETE, "/alerts", 405, 12),
        (Method::GET, "/health", 200, 13),
        (Method::GET, "/health/live", 200, 13),
        (Method::GET, "/health/ready", 200, 13),
        (Method::GET, "/v1/healthcheck/network", 204, 13),
        (Method::GET, "/metrics", 200, 14),
        (Method::GET, "/docs", 200, 15),
        (Method::GET, "/openapi.json", 200, 15),
        (Method::POST, "/heartbeat", 400, 11),
    ];
    for (method, path, status, limit) in cases {
        let r = send(app.anon().request(method.clone(), path)).await;
        assert_eq!(r.status.as_u16(), status, "{method} {path}: {}", r.body);
        assert_rate_headers(&r, limit);
    }
    // The second POST /heartbeat above drew from the same bucket as the first.
    let r = send(app.anon().request(Method::POST, "/heartbeat")).await;
    assert_eq!(r.header_u64("x-ratelimit-remaining"), 11 - 4);
}

#[tokio::test]
async fn each_api_key_has_its_own_bucket_apart_from_the_client_address() {
    let app = TestApp::builder()
        .anonymous(true)
        .limits(RateLimits {
            management: 3,
            ..GENEROUS
        })
        .spawn()
        .await;
    // The admin key spends two of its three management requests here.
    let mut keys = Vec::new();
    for name in ["a", "b"] {
        let k = app
            .create_key_with(
                &json!({ "name": name, "scopes": ["read"], "rate_limit_per_minute": 2 }),
            )
            .await;
        keys.push(k["key"].as_str().unwrap().to_owned());
    }
    // The address bucket: three, then refused.
    for _ in 0..3 {
        assert_ok(&app.get("/service").await, 200);
    }
    assert_limited(&app.get("/service").await);
    // Each key still has its own two (its per-key limit), whatever the address used.
    for key in &keys {
        for _ in 0..2 {
            let r = app.with_key(key).get("/v2/services").await;
            assert_ok(&r, 200);
            assert_eq!(r.header_u64("x-ratelimit-limit"), 2);
        }
        assert_limited(&app.with_key(key).get("/service").await);
    }
    let r = app.admin().get("/v2/services").await;
    assert_ok(&r, 200);
    assert_eq!(r.header_u64("x-ratelimit-limit"), 3);
    assert_limited(&app.admin().get("/v2/services").await);
}

async fn forwarded(app: &TestApp, client: &str) -> Reply {
    send(
        app.anon()
            .request(Method::GET, "/service")
            .header("X-Forwarded-For", client),
    )
    .await
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() {
    let limits = RateLimits {
        management: 2,
        ..GENEROUS
    };
    let trusted = TestApp::builder()
        .anonymous(true)
        .limits(limits)
        .trusted_proxies(&["127.0.0.1/32"])
        .spawn()
        .await;
    for _ in 0..2 {
        assert_ok(&forwarded(&trusted, "203.0.113.1").await, 200);
    }
    assert_limited(&forwarded(&trusted, "203.0.113.1").await);
    // A spoofed left-most entry does not escape: the right-most untrusted hop counts.
    assert_limited(&forwarded(&trusted, "198.51.100.99, 203.0.113.1").await);
    assert_ok(&forwarded(&trusted, "203.0.113.2").await, 200);
    assert_ok(&forwarded(&trusted, "2001:db8::7").await, 200);

    // Without trusted proxies the header is ignored: everyone shares the peer's bucket.
    let untrusted = TestApp::builder()
        .anonymous(true)
        .limits(limits)
        .spawn()
        .await;
    assert_ok(&forwarded(&untrusted, "203.0.113.1").await, 200);
    assert_ok(&forwarded(&untrusted, "203.0.113.2").await, 200);
    assert_limited(&forwarded(&untrusted, "203.0.113.3").await);
}

#[tokio::test]
async fn health_has_its_own_limit() {
    let app = TestApp::builder()
        .anonymous(true)
        .limits(RateLimits {
            health: 2,
            ..GENEROUS
        })
        .spawn()
        .await;
    let before = rejections(&app, "health").await;
    assert_eq!(app.get("/health").await.status.as_u16(), 200);
    assert_eq!(app.get("/health/live").await.status.as_u16(), 200);
    assert_limited(&app.get("/health/ready").await);
    assert_limited(&app.get("/health").await);
    assert_limited(&app.get("/v1/healthcheck/network").await);
    // Management and metrics are separate classes.
    assert_ok(&app.get("/service").await, 200);
    assert!(rejections(&app, "health").await >= before + 3.0);
}
