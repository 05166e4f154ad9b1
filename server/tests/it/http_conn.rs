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

/// `MEDIC_MAX_CONNECTIONS` caps the connections served at once, whatever their addresses: at
/// the cap the next connection waits (in the listen backlog) and is served once held ones go
/// away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_above_the_global_limit_wait_for_a_free_slot() {
    let app = TestApp::builder()
        .configure(|c| {
            c.header_read_timeout = Duration::from_secs(60);
            c.max_connections = 3;
            c.max_connections_per_ip = 0;
        })
        .spawn()
        .await;
    let a = addr(&app);
    // Three held connections, from three addresses (no per-address limit applies anyway).
    let mut held = Vec::new();
    for host in 2..=4 {
        held.push(slow_client_from([127, 0, 0, host], &a).await);
    }
    // A fourth, complete request is not served while the three are held. (Waiting here can
    // only make a server without the cap look right, never a server with it look wrong.)
    let mut fourth = TcpStream::connect(&a).await.expect("connect");
    fourth
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: medic\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), fourth.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "answered above the connection limit: {early:?} {:?}",
        String::from_utf8_lossy(&buf)
    );
    // The held clients leave: the fourth is served.
    drop(held);
    let got = closed_by_server(&mut fourth).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
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

// ---- the real binary under a low descriptor limit -------------------------------------------

/// A `medic-server` process started under `ulimit -n <fds>`, killed when dropped.
struct Limited {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Limited {
    fn start(fds: u32, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let log = dir.path().join("server.log");
        let mut cmd = std::process::Command::new("sh");
        // The shell lowers its own limit (soft and hard), then becomes the server.
        cmd.arg("-c")
            .arg(format!("ulimit -n {fds} && exec \"$0\""))
            .arg(env!("CARGO_BIN_EXE_medic-server"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", "sqlite://medic.db")
            .env("PORT", port.to_string())
            .env("MEDIC_ADMIN_API_KEY", crate::support::ADMIN_KEY)
            .env("MEDIC_LOG_FORMAT", "text")
            .env("MEDIC_LOG_LEVEL", "warn")
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("medic-server starts");
        Self {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/health/live` answers 200 (from `from`).
    async fn wait_live(&mut self, from: [u8; 4]) {
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the server exited ({status}):\n{}", self.log());
            }
            if let Ok(Ok(mut s)) =
                tokio::time::timeout(Duration::from_secs(2), connect_from(from, &self.addr())).await
            {
                let request =
                    b"GET /health/live HTTP/1.1\r\nHost: medic\r\nConnection: close\r\n\r\n";
                if s.write_all(request).await.is_ok() {
                    let mut got = Vec::new();
                    let read =
                        tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut got));
                    if matches!(read.await, Ok(Ok(_))) && got.starts_with(b"HTTP/1.1 200 OK") {
                        return;
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/health/live never answered:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Connects from a given loopback address (all of 127.0.0.0/8 is local on Linux).
async fn connect_from(from: [u8; 4], to: &str) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from((from, 0)))?;
    socket.connect(to.parse().expect("address")).await
}

/// A client from `from` that sends a request line and one header and never ends them.
async fn slow_client_from(from: [u8; 4], to: &str) -> TcpStream {
    let mut s = connect_from(from, to).await.expect("connect");
    s.write_all(b"GET /health/live HTTP/1.1\r\nHost: medic\r\n")
        .await
        .expect("write");
    s
}

/// Under `ulimit -n 256`, 300 connections that never finish their headers neither stop the
/// server nor its health check: from one address, the per-address limit closes all but a few
/// at once and `/health/live` answers while they hang; from many addresses, the descriptors
/// run out (the server logs it and keeps going), the header-read timeout cuts the slow ones
/// off, and the server accepts and answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_under_a_low_descriptor_limit_do_not_stop_the_server() {
    let mut server = Limited::start(
        256,
        &[
            ("MEDIC_HEADER_READ_TIMEOUT_SECONDS", "2"),
            ("MEDIC_MAX_CONNECTIONS_PER_IP", "16"),
        ],
    );
    server.wait_live([127, 0, 0, 1]).await;
    let to = server.addr();

    // 300 slow connections from one address: at most 16 are kept.
    let mut slow = Vec::new();
    for _ in 0..300 {
        slow.push(slow_client_from([127, 0, 0, 1], &to).await);
    }
    // While they hang (well within the 2 s header timeout of the last ones), another address
    // is served at once.
    server.wait_live([127, 0, 0, 2]).await;
    for s in &mut slow {
        closed_by_server(s).await;
    }
    drop(slow);
    server.wait_live([127, 0, 0, 1]).await;
    assert!(
        !server.log().contains("Too many open files"),
        "descriptors ran out although one address held only 16:\n{}",
        server.log()
    );

    // 300 slow connections from 20 addresses, 15 each: more than the server has descriptors.
    let mut slow = Vec::new();
    for i in 0..300u32 {
        let host = 10 + u8::try_from(i % 20).unwrap();
        slow.push(slow_client_from([127, 0, 1, host], &to).await);
    }
    // Every one is answered by a close, sooner or later: those accepted first after their
    // header timeout, those left waiting for a descriptor once one is free.
    for s in &mut slow {
        closed_by_server(s).await;
    }
    drop(slow);
    server.wait_live([127, 0, 0, 3]).await;
    assert!(
        server.log().contains("Too many open files"),
        "the test never ran the server out of descriptors:\n{}",
        server.log()
    );
    // And it still accepts new clients, from anywhere.
    server.wait_live([127, 0, 0, 1]).await;
    assert!(
        server.child.try_wait().expect("status").is_none(),
        "the server exited"
    );
}
