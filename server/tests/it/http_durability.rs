//! Durability under concurrency: every acknowledged heartbeat is stored, exactly once.

use std::collections::BTreeSet;

use serde_json::json;
use tokio::task::JoinSet;

use crate::support::{TestApp, assert_ok};

const CONCURRENT: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_heartbeats_are_all_acknowledged_and_all_stored() {
    let app = TestApp::builder().anonymous(true).spawn().await;
    let id = app.register("Fan-In", 1).await;

    let mut tasks = JoinSet::new();
    for i in 0..CONCURRENT {
        let client = app.client.clone();
        let url = app.url("/heartbeat");
        tasks.spawn(async move {
            let r = client
                .post(url)
                .json(&json!({ "heartbeat_name": "fan-in", "status": format!("beat-{i}") }))
                .send()
                .await
                .expect("request");
            r.status().as_u16()
        });
    }
    let mut statuses = Vec::new();
    while let Some(s) = tasks.join_next().await {
        statuses.push(s.expect("task"));
    }
    assert_eq!(statuses.len(), CONCURRENT);
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");

    // Page through the service's heartbeats: exactly the 500 sent, none twice.
    let mut seen = BTreeSet::new();
    let mut total = 0;
    let mut offset = 0;
    loop {
        let r = app
            .admin()
            .get(&format!(
                "/v2/services/{id}/heartbeats?limit=250&offset={offset}"
            ))
            .await;
        let page = assert_ok(&r, 200);
        let entries = page["entries"].as_array().expect("entries");
        total += entries.len();
        seen.extend(
            entries
                .iter()
                .map(|e| e["status"].as_str().unwrap().to_owned()),
        );
        offset += entries.len();
        if page["has_more"] == false {
            break;
        }
        assert!(offset <= CONCURRENT, "more rows than requests");
    }
    assert_eq!(total, CONCURRENT);
    assert_eq!(seen.len(), CONCURRENT);
    assert!((0..CONCURRENT).all(|i| seen.contains(&format!("beat-{i}"))));
}
