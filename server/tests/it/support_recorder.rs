//! A recording HTTP server for tests of outbound requests (Slack, PagerDuty, webhooks, playbook
//! webhook steps): a real axum server on `127.0.0.1:0` that records every request and answers
//! as told.
//!
//! ```ignore
//! let rec = Recorder::start().await;
//! rec.answer(Answer::json(200, json!({"ok": true, "ts": "1.2"})));   // every request
//! rec.push(Answer::status(503));                                     // only the next one
//! rec.push(Answer::status(200).after(Duration::from_secs(5)));       // a slow one
//! let url = rec.url("/hook");
//! // … make the code under test call `url` …
//! let seen = rec.requests();
//! assert_eq!(seen[0].path, "/hook");
//! assert_eq!(seen[0].header("x-medic-event"), Some("triggered"));
//! ```
//!
//! A request is recorded as soon as its body has arrived, before the answer's delay, so a test
//! of a client-side timeout still sees what was sent. Queued answers ([`Recorder::push`]) are
//! used first, in order; then the standing answer ([`Recorder::answer`], default `200 {}`).
//! The server stops when the `Recorder` is dropped.

// A harness shared by several test modules; not every helper is used by each of them.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How the recorder answers one request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Answer {
    /// An empty body with this status.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    /// A JSON body with this status.
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            body: body.to_string(),
            ..Self::status(status)
        }
        .header("content-type", "application/json")
    }

    /// A raw body with this status.
    pub fn text(status: u16, body: &str) -> Self {
        Self {
            body: body.to_owned(),
            ..Self::status(status)
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Wait this long before answering.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// Path and query, e.g. `/api/chat.postMessage?x=1`.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    /// A header's value as text (names are case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON (panics with the body when it is not).
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body_text()))
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    queued: Mutex<VecDeque<Answer>>,
    standing: Mutex<Option<Answer>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The recording server; see the module documentation.
pub struct Recorder {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Recorder {
    /// Starts a recorder on a free loopback port, answering `200 {}` until told otherwise.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the recorder");
        let addr = listener.local_addr().expect("recorder address");
        let app = Router::new()
            .fallback(record)
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The answer for every request that finds no queued answer.
    pub fn answer(&self, answer: Answer) {
        *lock(&self.shared.standing) = Some(answer);
    }

    /// An answer for the next request only (queued answers are used in order).
    pub fn push(&self, answer: Answer) {
        lock(&self.shared.queued).push_back(answer);
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// The one request received so far (panics if there is not exactly one).
    #[track_caller]
    pub fn only_request(&self) -> Recorded {
        let mut all = self.requests();
        assert_eq!(all.len(), 1, "expected exactly one request: {all:#?}");
        all.remove(0)
    }

    /// Forgets the requests received so far.
    pub fn clear(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Waits until at least `n` requests have arrived (up to `timeout`) and returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let seen = self.requests();
            if seen.len() >= n || tokio::time::Instant::now() >= deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    lock(&shared.requests).push(Recorded {
        method,
        path,
        headers,
        body,
    });
    let answer = lock(&shared.queued).pop_front().unwrap_or_else(|| {
        lock(&shared.standing)
            .clone()
            .unwrap_or_else(|| Answer::json(200, serde_json::json!({})))
    });
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).expect("a valid status");
    for (name, value) in answer.headers {
        response.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(&value).expect("header value"),
        );
    }
    response
}
