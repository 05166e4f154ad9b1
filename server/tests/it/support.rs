//! The HTTP test harness: a real server on a random local port over a fresh SQLite database,
//! a client, and assertions for the JSON envelope every API route answers with.
//!
//! ```ignore
//! let app = TestApp::builder().anonymous(true).spawn().await;
//! let id = app.register("nightly-backup", 60).await;
//! let r = app.post_json("/heartbeat", &json!({"heartbeat_name": "nightly-backup", "status": "UP"})).await;
//! assert_error(&r, 404, "...");
//! ```
//!
//! Requests go through [`Caller`]: [`TestApp::anon`] sends no `Authorization` header (what
//! legacy clients do), [`TestApp::admin`] sends the bootstrap admin key, [`TestApp::with_key`]
//! any other key. Responses are read whole into a [`Reply`] so the `#[track_caller]` assertions
//! can be plain functions and report the caller's line.

use std::sync::Arc;
use std::time::Duration;

use medic_server::clock::Clock;
use medic_server::config::{Config, RateLimiterType, RateLimits, Secret};
use medic_server::domain::Timestamp;
use medic_server::server::{self, Running};
use medic_server::store::Store;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpListener;

/// The bootstrap admin credential every test server accepts.
pub const ADMIN_KEY: &str = "it-bootstrap-admin-key-0123456789abcdef";

/// Limits high enough that no test meets them unless it asks for smaller ones.
pub const GENEROUS: RateLimits = RateLimits {
    heartbeat: 100_000,
    management: 100_000,
    health: 100_000,
    metrics: 100_000,
    docs: 100_000,
};

type Tweak = Box<dyn FnOnce(&mut Config) + Send>;

/// Options for [`TestApp`]; [`Builder::spawn`] starts the server.
pub struct Builder {
    anonymous: bool,
    clock: Clock,
    tweaks: Vec<Tweak>,
}

impl Builder {
    /// Accept heartbeats and v1 routes without an API key (`MEDIC_ALLOW_ANONYMOUS_HEARTBEATS`).
    pub fn anonymous(mut self, on: bool) -> Self {
        self.anonymous = on;
        self
    }

    pub fn limits(self, limits: RateLimits) -> Self {
        self.configure(move |c| c.limits = limits)
    }

    pub fn max_body_bytes(self, bytes: usize) -> Self {
        self.configure(move |c| c.max_body_bytes = bytes)
    }

    pub fn trusted_proxies(self, cidrs: &[&str]) -> Self {
        let nets = cidrs
            .iter()
            .map(|c| c.parse().expect("CIDR"))
            .collect::<Vec<_>>();
        self.configure(move |c| c.trusted_proxies = nets)
    }

    /// The server reads a manual clock, starting at the current time, that only
    /// [`TestApp::advance`] moves: time passes for the monitor, the dispatcher, the gateway and
    /// the handlers without the test waiting.
    pub fn manual_clock(mut self) -> Self {
        self.clock = Clock::manual(Timestamp::now());
        self
    }

    /// A manual clock (see [`Builder::manual_clock`]) that starts at `start`.
    pub fn manual_clock_at(mut self, start: Timestamp) -> Self {
        self.clock = Clock::manual(start);
        self
    }

    pub fn api_key_cache(self, ttl: Duration) -> Self {
        self.configure(move |c| c.api_key_cache = ttl)
    }

    /// Any other change to the configuration.
    pub fn configure(mut self, f: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        self.tweaks.push(Box::new(f));
        self
    }

    pub async fn spawn(self) -> TestApp {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("medic.db").display());
        let mut config = Config::for_database(&url);
        // Pin everything a test depends on, whatever the environment says.
        config.admin_api_key = Some(ADMIN_KEY.parse::<Secret>().expect("secret"));
        config.allow_anonymous_heartbeats = self.anonymous;
        config.redis_url = None;
        config.rate_limiter_type = RateLimiterType::Memory;
        config.trusted_proxies = Vec::new();
        config.max_body_bytes = 1_048_576;
        config.limits = GENEROUS;
        config.db_max_connections = 4;
        config.api_key_cache = Duration::from_secs(5);
        config.request_timeout = Duration::from_secs(30);
        config.shutdown_grace = Duration::from_secs(10);
        // Tests open hundreds of connections from one address.
        config.max_connections_per_ip = 0;
        for tweak in self.tweaks {
            tweak(&mut config);
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let running = server::start_with_clock(config.clone(), listener, self.clock.clone())
            .await
            .expect("server starts");
        let base = format!("http://{}", running.addr);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        TestApp {
            base,
            client,
            config,
            clock: self.clock,
            running: Some(running),
            _dir: dir,
        }
    }
}

/// Creates an API key for `owner` (a person, created if new) on the database, as `medic-server
/// api-key create --owner` does.
pub async fn key_for_owner(store: &dyn Store, owner: &str, scopes: &[&str]) -> String {
    use medic_server::domain::{OwnerId, OwnerKind, Scopes, apikey};
    use medic_server::store::{NewApiKey, NewKeyOwner};
    let (owner_id, new_owner) = match store.find_key_owner(owner).await.expect("owner") {
        Some(o) => (o.id, None),
        None => {
            let id = OwnerId::generate();
            let new = NewKeyOwner {
                id: id.clone(),
                name: owner.to_owned(),
                kind: OwnerKind::Person,
                created_by: "it".into(),
                created_at: Timestamp::now(),
                audit: None,
            };
            (id, Some(new))
        }
    };
    let generated = apikey::generate();
    store
        .create_api_key(&NewApiKey {
            id: generated.id.clone(),
            name: format!("{owner}-{}", scopes.join("-")),
            digest: generated.digest,
            scopes: Scopes::parse_list(&scopes.join(",")).expect("scopes"),
            expires_at: None,
            rate_limit_per_minute: None,
            created_by: Some("it".into()),
            created_at: Timestamp::now(),
            owner_id,
            new_owner,
            labels: Default::default(),
            audit: None,
        })
        .await
        .expect("key created");
    generated.plaintext
}

/// A running server on its own database. Dropping it stops the server; [`TestApp::shutdown`]
/// stops it and waits until it has drained.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub config: Config,
    /// The server's clock (the system clock unless [`Builder::manual_clock`]).
    pub clock: Clock,
    running: Option<Running>,
    _dir: TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.trigger().cancel();
        }
    }
}

impl TestApp {
    pub fn builder() -> Builder {
        Builder {
            anonymous: false,
            clock: Clock::system(),
            tweaks: Vec::new(),
        }
    }

    /// A server with the defaults: anonymous heartbeats off.
    pub async fn spawn() -> Self {
        Self::builder().spawn().await
    }

    /// Moves the server's manual clock forward (see [`Builder::manual_clock`]); the monitor,
    /// the dispatcher and the run sweep look again at once.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// The server's playbook engine, to start executions as its routes do.
    pub fn engine(&self) -> medic_server::engine::Engine {
        self.running
            .as_ref()
            .expect("the server is running")
            .engine
            .clone()
    }

    /// The server's current time.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn admin_key(&self) -> &'static str {
        ADMIN_KEY
    }

    /// Requests without an `Authorization` header.
    pub fn anon(&self) -> Caller<'_> {
        Caller {
            app: self,
            key: None,
        }
    }

    /// Requests with the bootstrap admin key.
    pub fn admin(&self) -> Caller<'_> {
        self.with_key(ADMIN_KEY)
    }

    /// Requests with `key` as the Bearer token.
    pub fn with_key(&self, key: &str) -> Caller<'_> {
        Caller {
            app: self,
            key: Some(key.to_owned()),
        }
    }

    /// Anonymous GET.
    pub async fn get(&self, path: &str) -> Reply {
        self.anon().get(path).await
    }

    /// Anonymous POST of a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.anon().post_json(path, body).await
    }

    /// Creates an API key through the API and returns its plaintext.
    pub async fn create_key(&self, scopes: &[&str]) -> String {
        let results = self
            .create_key_with(
                &json!({ "name": format!("it-{}", scopes.join("-")), "scopes": scopes }),
            )
            .await;
        results["key"].as_str().expect("key in results").to_owned()
    }

    /// Creates an API key for `owner` (a person, created if new) the way `medic-server api-key
    /// create --owner` does, on the database: keys made through the API belong to their
    /// creator's owner, so this is how a test gets a second person.
    pub async fn create_key_for(&self, owner: &str, scopes: &[&str]) -> String {
        let store = self.store().await;
        let key = key_for_owner(&*store, owner, scopes).await;
        store.close().await;
        key
    }

    /// Creates an API key from a full request body and returns the `results` object.
    pub async fn create_key_with(&self, body: &Value) -> Value {
        let r = self.admin().post_json("/v2/api-keys", body).await;
        assert_ok(&r, 201)
    }

    /// Registers a service through the legacy `POST /service` (as admin) and returns its id.
    pub async fn register(&self, name: &str, minutes: i64) -> i64 {
        let r = self
            .admin()
            .post_json(
                "/service",
                &json!({ "heartbeat_name": name, "service_name": "it", "alert_interval": minutes }),
            )
            .await;
        assert_ok(&r, 201);
        let r = self
            .admin()
            .get(&format!("/service/{}", encode(name)))
            .await;
        let list = assert_ok(&r, 200);
        list[0]["service_id"].as_i64().expect("service_id")
    }

    /// Creates a service through `POST /v2/services` and returns its v2 representation.
    pub async fn create_service(&self, body: &Value) -> Value {
        let r = self.admin().post_json("/v2/services", body).await;
        assert_ok(&r, 201)
    }

    /// A second connection to the server's database (for setup the API cannot do, and for
    /// checking what was persisted).
    pub async fn store(&self) -> Arc<dyn Store> {
        server::open_store(&self.config).await.expect("open store")
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let r = self.get("/metrics").await;
        assert_eq!(r.status, StatusCode::OK, "/metrics: {}", r.body);
        r.body
    }

    /// Stops accepting requests and waits until in-flight ones are done and the pool is closed.
    /// The database stays on disk until the returned [`Stopped`] is dropped.
    pub async fn shutdown(mut self) -> Stopped {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().expect("tempdir"));
        Stopped {
            config: self.config.clone(),
            clock: self.clock.clone(),
            _dir: dir,
        }
    }
}

/// What is left of a [`TestApp`] after [`TestApp::shutdown`]: its database.
pub struct Stopped {
    pub config: Config,
    /// The clock the server read, to start the next one on.
    pub clock: Clock,
    _dir: TempDir,
}

impl Stopped {
    /// Reopens the database the server used.
    pub async fn store(&self) -> Arc<dyn Store> {
        server::open_store(&self.config)
            .await
            .expect("reopen store")
    }
}

/// Percent-encodes a path segment.
pub fn encode(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sends requests as one identity (anonymous or a key).
pub struct Caller<'a> {
    app: &'a TestApp,
    key: Option<String>,
}

impl Caller<'_> {
    /// A request to adjust before sending with [`send`].
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.app.client.request(method, self.app.url(path));
        match &self.key {
            Some(k) => rb.bearer_auth(k),
            None => rb,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        send(self.request(Method::GET, path)).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        send(self.request(Method::POST, path).json(body)).await
    }

    /// POST without a body.
    pub async fn post(&self, path: &str) -> Reply {
        send(self.request(Method::POST, path)).await
    }

    pub async fn patch_json(&self, path: &str, body: &Value) -> Reply {
        send(self.request(Method::PATCH, path).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        send(self.request(Method::DELETE, path)).await
    }
}

/// A response read to the end.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

pub async fn send(rb: RequestBuilder) -> Reply {
    let resp = rb.send().await.expect("request sent");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.text().await.expect("response body");
    Reply {
        status,
        headers,
        body,
    }
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A header that must be present and numeric.
    #[track_caller]
    pub fn header_u64(&self, name: &str) -> u64 {
        let v = self
            .header(name)
            .unwrap_or_else(|| panic!("missing header {name}: {:?}", self.headers));
        v.parse()
            .unwrap_or_else(|_| panic!("header {name} is not a number: {v:?}"))
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

/// Checks status, `Content-Type: application/json` and the `{success, message, results}`
/// shape (`results == ""` on errors); returns the whole body.
#[track_caller]
pub fn assert_envelope(r: &Reply, status: u16, success: bool) -> Value {
    assert_eq!(
        r.status.as_u16(),
        status,
        "unexpected status; body: {}",
        r.body
    );
    let ct = r.header(CONTENT_TYPE.as_str()).unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "Content-Type is {ct:?}, body: {}",
        r.body
    );
    let v = r.json();
    assert_eq!(v["success"], json!(success), "success flag in {v}");
    assert!(v["message"].is_string(), "message must be a string: {v}");
    assert!(v.get("results").is_some(), "results missing: {v}");
    if !success {
        assert_eq!(v["results"], json!(""), "error results must be \"\": {v}");
    }
    v
}

/// A successful envelope with `status`; returns `results`.
#[track_caller]
pub fn assert_ok(r: &Reply, status: u16) -> Value {
    assert_envelope(r, status, true)["results"].clone()
}

/// An error envelope with exactly this status and message.
#[track_caller]
pub fn assert_error(r: &Reply, status: u16, message: &str) {
    let v = assert_envelope(r, status, false);
    assert_eq!(v["message"], json!(message), "message of {v}");
}

/// An error envelope with this status whose message contains `fragment`.
#[track_caller]
pub fn assert_error_contains(r: &Reply, status: u16, fragment: &str) {
    let v = assert_envelope(r, status, false);
    let m = v["message"].as_str().unwrap_or_default();
    assert!(m.contains(fragment), "message {m:?} lacks {fragment:?}");
}

/// The sum of every sample of `name` whose labels include all of `labels`, or `None` when no
/// sample matches.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}').unwrap_or(rest))),
            None => (series, Vec::new()),
        };
        if series_name != name {
            continue;
        }
        let matches = labels
            .iter()
            .all(|(k, v)| series_labels.iter().any(|(sk, sv)| sk == k && sv == v));
        if matches {
            let v: f64 = value.parse().unwrap_or(f64::NAN);
            total = Some(total.unwrap_or(0.0) + v);
        }
    }
    total
}

/// Parses `a="x",b="y \"q\""` into pairs.
fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                other => value.push(other),
            }
        }
        out.push((key.trim_start_matches(',').trim().to_owned(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    out
}
