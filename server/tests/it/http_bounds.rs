//! Memory a stranger can drive stays bounded: metric label sets do not grow with made-up HTTP
//! methods, and a flood of new client addresses neither grows the rate limiter past its bound
//! nor gets past the limit. (The API key cache's bound is checked in `auth.rs`'s unit tests;
//! the recorder's histogram upkeep in `telemetry.rs`'s.)

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{GENEROUS, TestApp, metric, send};

#[tokio::test]
async fn made_up_http_methods_share_one_metrics_label() {
    let app = TestApp::builder().anonymous(true).spawn().await;
    for i in 0..20 {
        let method = Method::from_bytes(format!("BOUND{i}").as_bytes()).expect("method token");
        let r = send(app.anon().request(method, "/heartbeat")).await;
        assert!(r.status.is_client_error(), "{}", r.status);
    }
    let text = app.metrics().await;
    assert!(
        !text.contains("method=\"BOUND"),
        "a made-up method became a label value"
    );
    assert!(
        metric(&text, "medic_http_requests_total", &[("method", "other")]).unwrap_or(0.0) >= 20.0,
        "made-up methods are counted as method=\"other\""
    );
}

#[tokio::test]
async fn a_flood_of_new_client_addresses_neither_grows_the_limiter_nor_gets_past_it() {
    const MAX_BUCKETS: usize = 10;
    const LIMIT: u32 = 3;
    let app = TestApp::builder()
        .anonymous(true)
        .trusted_proxies(&["127.0.0.1/32"])
        .limits(medic_server::config::RateLimits {
            heartbeat: LIMIT,
            ..GENEROUS
        })
        .configure(|c| c.rate_limit_max_buckets = MAX_BUCKETS)
        .spawn()
        .await;
    let beat = |ip: String| {
        let rb = app
            .anon()
            .request(Method::POST, "/heartbeat")
            .header("x-forwarded-for", ip)
            .json(&json!({"heartbeat_name": "nobody", "status": "UP"}));
        send(rb)
    };
    let mut allowed = 0;
    let mut denied = 0;
    for i in 0..100 {
        let r = beat(format!("203.0.113.{i}")).await;
        match r.status {
            StatusCode::TOO_MANY_REQUESTS => denied += 1,
            // Unknown service: the request passed the limiter.
            StatusCode::NOT_FOUND => allowed += 1,
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    // The first MAX_BUCKETS addresses got a bucket each; the other 90 shared one bucket of
    // LIMIT requests.
    assert_eq!(allowed, MAX_BUCKETS + LIMIT as usize, "denied {denied}");
    // An address that had a bucket keeps it (its second of three requests).
    assert_eq!(
        beat("203.0.113.0".into()).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_names_from_writers_do_not_grow_the_metric_labels() {
    use medic_server::telemetry::MAX_TEAM_LABELS;
    let app = TestApp::builder().manual_clock().spawn().await;
    let teams = MAX_TEAM_LABELS + 10;
    for i in 0..teams {
        app.create_service(
            &json!({"heartbeat_name": format!("svc-{i}"), "interval_seconds": 1,
                                   "team": format!("Team-{i}-{}", "x".repeat(200))}),
        )
        .await;
    }
    app.advance(std::time::Duration::from_millis(1_500));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = app.admin().get("/v2/alerts?state=open&limit=1").await;
        let open = crate::support::assert_ok(&r, 200)["total_count"]
            .as_u64()
            .unwrap_or(0);
        if open as usize >= teams {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{open} alerts opened");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let text = app.metrics().await;
    let labels: std::collections::HashSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("medic_alerts_opened_total{"))
        .filter_map(|l| l.split("team=\"").nth(1)?.split('"').next())
        .collect();
    assert!(
        labels.len() <= MAX_TEAM_LABELS + 1,
        "{} team label values",
        labels.len()
    );
    assert!(labels.contains("other"), "{labels:?}");
    assert!(labels.iter().all(|l| l.chars().count() <= 64), "{labels:?}");
    assert!(
        !labels.iter().any(|l| l.contains('T')),
        "not folded: {labels:?}"
    );
}
