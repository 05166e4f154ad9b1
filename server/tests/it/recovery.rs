//! The database going away and coming back, through a real TCP proxy in front of PostgreSQL:
//! readiness turns 503, routes answer 503 envelopes (never a fake success), and everything
//! recovers without restarting the server.

use std::net::SocketAddr;
use std::time::Duration;

use medic_server::config::Config;
use medic_server::server;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::db;

/// Forwards every connection on `listener` to `upstream` until aborted; aborting also drops
/// every open connection.
fn proxy(listener: TcpListener, upstream: SocketAddr) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            conns.spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

async fn json_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn database_outage_gives_503_ready_and_503_envelopes_then_recovers() {
    let Some(test_db) = db::postgres().await else {
        return;
    };
    let url: reqwest::Url = test_db.url.parse().expect("database url");
    let upstream: SocketAddr =
        tokio::net::lookup_host((url.host_str().expect("host"), url.port().unwrap_or(5432)))
            .await
            .expect("resolve")
            .next()
            .expect("address");

    let proxy_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy_listener.local_addr().unwrap();
    let mut proxied = url.clone();
    proxied.set_host(Some("127.0.0.1")).unwrap();
    proxied.set_port(Some(proxy_addr.port())).unwrap();
    let mut running_proxy = proxy(proxy_listener, upstream);

    let mut cfg = Config::for_database(proxied.as_str());
    cfg.allow_anonymous_heartbeats = true;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = server::start(cfg, listener).await.expect("server starts");
    let base = format!("http://{}", app.addr);
    let http = reqwest::Client::new();

    let (status, _) = json_of(
        http.post(format!("{base}/service"))
            .json(&json!({"heartbeat_name": "db-outage", "service_name": "x", "alert_interval": 1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);

    // Cut the database off.
    running_proxy.abort();
    let _ = running_proxy.await;

    let ready = http
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let (status, body) = json_of(
        http.post(format!("{base}/heartbeat"))
            .json(&json!({"heartbeat_name": "db-outage", "status": "UP"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["success"], json!(false));
    assert_eq!(body["results"], json!(""));
    let (status, body) = json_of(http.get(format!("{base}/service")).send().await.unwrap()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["success"], json!(false));

    // Bring it back on the same address: the server recovers on its own.
    let proxy_listener = TcpListener::bind(proxy_addr).await.unwrap();
    running_proxy = proxy(proxy_listener, upstream);
    let mut recovered = false;
    for _ in 0..50 {
        let r = http
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "readiness did not recover");
    let (status, body) = json_of(
        http.post(format!("{base}/heartbeat"))
            .json(&json!({"heartbeat_name": "db-outage", "status": "UP"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // The failed heartbeat was not recorded; the successful one was.
    let (_, body) = json_of(
        http.get(format!("{base}/heartbeat?heartbeat_name=db-outage"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["results"].as_array().map(Vec::len), Some(1));

    app.shutdown().await;
    running_proxy.abort();
}
