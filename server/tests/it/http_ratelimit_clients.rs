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
