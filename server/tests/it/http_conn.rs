//! Connection limits: slow clients that never finish their headers are closed after the
//! header-read timeout, idle connections after the idle timeout, and one address cannot hold
//! more than its share of connections.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::TestApp;

/// An upper bound for waits that must end on their own; a fixed server that works needs
/// only a fraction of it.
const BOUND: Duration = Duration::from_secs(20);

/// Opens a connection and sends a request line and one header, never the blank line that
/// ends the headers.
async fn slow_client(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /health/live HTTP/1.1\r\nHost: medic\r\n")
        .await
        .expect("write");
    s
}

/// Waits until the server closes `s` (end of stream or reset), reading whatever it sends.
async fn closed_by_server(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(BOUND, read)
        .await
        .expect("the server closes the connection");
    got
}

/// `GET /health/live` on a new connection (a pooled one may be the one the server just
/// closed for idling): the status line.
async fn live(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /health/live HTTP/1.1\r\nHost: medic\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let got = closed_by_server(&mut s).await;
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_and_the_server_keeps_answering() {
    let app = TestApp::builder()
        .configure(|c| {
            c.header_read_timeout = Duration::from_secs(1);
            c.max_connections_per_ip = 0;
        })
        .spawn()
        .await;
    let a = addr(&app);
    let mut slow = Vec::new();
    for _ in 0..50 {
        slow.push(slow_client(&a).await);
    }
    // While they hang, other clients are served.
    assert_eq!(live(&a).await, "HTTP/1.1 200 OK");
    for s in &mut slow {
        closed_by_server(s).await;
    }
    assert_eq!(live(&a).await, "HTTP/1.1 200 OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_above_the_per_address_limit_are_closed() {
    let app = TestApp::builder()
        .configure(|c| {
            c.header_read_timeout = Duration::from_secs(1);
            c.max_connections_per_ip = 3;
        })
        .spawn()
        .await;
    let a = addr(&app);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(slow_client(&a).await);
    }
    // The fourth from the same address is closed without an answer.
    let mut extra = slow_client(&a).await;
    assert!(closed_by_server(&mut extra).await.is_empty());
    // Once the slow ones are cut off, the address is served again.
    for s in &mut held {
        closed_by_server(s).await;
    }
    assert_eq!(live(&a).await, "HTTP/1.1 200 OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_kept_alive_connections_are_closed() {
    let app = TestApp::builder()
        .configure(|c| {
            c.header_read_timeout = Duration::from_secs(30);
            c.idle_timeout = Duration::from_secs(1);
        })
        .spawn()
        .await;
    let mut s = TcpStream::connect(addr(&app)).await.expect("connect");
    s.write_all(b"GET /health/live HTTP/1.1\r\nHost: medic\r\n\r\n")
        .await
        .expect("write");
    let got = closed_by_server(&mut s).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}
