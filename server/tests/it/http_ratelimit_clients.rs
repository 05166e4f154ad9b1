//! Which client a request is counted against: `X-Forwarded-For` entries with a port or a
//! bracketed IPv6 address behind a trusted proxy.

use medic_server::config::RateLimits;
use reqwest::Method;

use crate::support::{GENEROUS, Reply, TestApp, assert_ok, send};

async fn forwarded(app: &TestApp, client: &str) -> Reply {
    send(
        app.anon()
            .request(Method::GET, "/service")
            .header("X-Forwarded-For", client),
    )
    .await
}

#[tokio::test]
async fn forwarded_entries_with_ports_and_brackets_are_separate_clients() {
    let app = TestApp::builder()
        .anonymous(true)
        .limits(RateLimits {
            management: 1,
            ..GENEROUS
        })
        .trusted_proxies(&["127.0.0.1/32"])
        .spawn()
        .await;
    for client in [
        "192.0.2.1:5001",
        "192.0.2.2:5002",
        "[2001:db8::1]:443",
        "[2001:db8::2]",
    ] {
        assert_ok(&forwarded(&app, client).await, 200);
    }
    // The port is not part of the client: the same address on another port is the same bucket.
    assert_eq!(forwarded(&app, "192.0.2.1:6000").await.status, 429);
    assert_eq!(forwarded(&app, "[2001:db8::1]:8443").await.status, 429);
    assert_eq!(forwarded(&app, "2001:db8::1").await.status, 429);
}

/// A throttled client presenting made-up keys is refused by its address before any key is
/// looked up: 50 random keys cost at most the client's budget of failures (and the one that
/// found it spent) in lookups, and the key cache stays as small.
#[tokio::test]
async fn a_throttled_client_costs_no_key_lookups() {
    const LIMIT: u32 = 5;
    let app = TestApp::builder()
        .limits(RateLimits {
            management: LIMIT,
            ..GENEROUS
        })
        .spawn()
        .await;
    let unknown = |text: &str| {
        crate::support::metric(
            text,
            "medic_auth_failures_total",
            &[("reason", "unknown_key")],
        )
        .unwrap_or(0.0)
    };
    let before = unknown(&app.metrics().await);
    let mut refused = 0;
    for _ in 0..50 {
        let key = format!("mdk_{}_{}", &uuid_hex()[..12], uuid_hex() + &uuid_hex());
        let r = app.with_key(&key).get("/v2/services").await;
        match r.status.as_u16() {
            401 => {}
            429 => refused += 1,
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert!(refused >= 50 - LIMIT, "only {refused} of 50 were throttled");
    let text = app.metrics().await;
    let lookups = unknown(&text) - before;
    assert!(
        lookups <= f64::from(LIMIT + 1),
        "{lookups} unknown-key lookups for a client throttled at {LIMIT}"
    );
    let cached = crate::support::metric(&text, "medic_api_key_cache_entries", &[]).unwrap_or(0.0);
    assert!(
        cached <= f64::from(LIMIT + 1),
        "{cached} entries in the key cache"
    );
    // A known key keeps its own budget: the admin key is not refused for its address's debts.
    assert_ok(&app.admin().get("/v2/services").await, 200);
}

fn uuid_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Clients sharing one address (a NAT), each with its own valid key, are not limited by the
/// address: only failed authentications spend the address's budget.
#[tokio::test]
async fn valid_keys_behind_one_address_keep_their_own_limits() {
    let app = TestApp::builder()
        .limits(RateLimits {
            heartbeat: 2,
            ..GENEROUS
        })
        .spawn()
        .await;
    app.register("shared", 5).await;
    let mut keys = Vec::new();
    for _ in 0..5 {
        keys.push(app.create_key(&["write"]).await);
    }
    let body = serde_json::json!({"heartbeat_name": "shared", "status": "UP"});
    for key in &keys {
        let r = app.with_key(key).post_json("/heartbeat", &body).await;
        assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    }
}
