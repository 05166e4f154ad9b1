//! The web page (`/ui`) over HTTP: signing in, the session cookie's flags, CSRF and origin
//! refusals, session expiry (idle and absolute) and sign-out, the security headers, and each
//! action reaching the API's own rules (scopes, four-eyes, audit).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use medic_server::domain::{ScriptId, Timestamp};
use medic_server::store::{AgentConnection, AgentRunEnd, AgentRunStatus, NewAgentRun};
use reqwest::header;
use serde_json::json;

use crate::support::{TestApp, assert_ok};

/// What [`seed`] created.
pub struct Seeded {
    pub down_service: String,
    pub alert_id: i64,
    pub script_id: i64,
    /// The key of the owner who registered the pending version (the author).
    pub author_key: String,
    /// The key of a second owner (admin).
    pub approver_key: String,
    pub run_id: String,
    /// What the run printed (with characters HTML must escape).
    pub run_output: String,
}

/// A down service with an open alert; a script whose version 1 is approved and version 2,
/// registered by `alice`, waits for approval; a run that printed a line.
pub async fn seed(app: &TestApp) -> Seeded {
    let author_key = app.create_key_for("alice", &["admin"]).await;
    let approver_key = app.create_key_for("bob", &["admin"]).await;
    let svc = app
        .create_service(
            &json!({"heartbeat_name": "nightly-ledger", "interval_seconds": 1, "team": "payments"}),
        )
        .await;
    let service_id = svc["service_id"].as_i64().expect("service id");
    app.advance(Duration::from_millis(1_500));
    let deadline = Instant::now() + Duration::from_secs(20);
    let alert_id = loop {
        let r = app
            .admin()
            .get(&format!("/v2/services/{service_id}/alerts?state=open"))
            .await;
        let page = assert_ok(&r, 200);
        if let Some(id) = page["entries"][0]["alert_id"].as_i64() {
            break id;
        }
        assert!(Instant::now() < deadline, "the service never went down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Version 1, approved by bob; version 2 by alice, pending.
    let v1 = "#!/bin/sh\necho restarting\nsystemctl restart ledger\n";
    let v2 = "#!/bin/sh\necho restarting\nsystemctl restart ledger --no-block\necho done\n";
    let r = app
        .with_key(&author_key)
        .post_json(
            "/v2/scripts",
            &json!({"name": "restart-ledger", "interpreter": "sh", "content": v1}),
        )
        .await;
    let script_id = assert_ok(&r, 201)["script_id"].as_i64().expect("script id");
    let r = app
        .with_key(&approver_key)
        .post_json(&format!("/v2/scripts/{script_id}/approve"), &json!({}))
        .await;
    assert_ok(&r, 200);
    let r = app
        .with_key(&author_key)
        .post_json(
            "/v2/scripts",
            &json!({"name": "restart-ledger", "interpreter": "sh", "content": v2}),
        )
        .await;
    assert_ok(&r, 201);

    // A run of version 1 that ended, as the gateway stores it.
    let store = app.store().await;
    let now = app.now();
    store
        .agent_connected(&AgentConnection {
            id: "web-1".into(),
            hostname: "web-1.example.com".into(),
            agent_version: "0.1.0".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            declared_labels: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
            key_labels: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
            session_id: "s1".into(),
            remote_addr: None,
            key_id: None,
            service_id: None,
            at: now,
        })
        .await
        .expect("agent");
    let run_id = "7d1c3f0e-ui00-4000-8000-000000000001".to_owned();
    let run_output = "restarting\nledger restarted <ok> & done".to_owned();
    store
        .create_agent_run(&NewAgentRun {
            id: run_id.clone(),
            agent_id: "web-1".into(),
            script_id: ScriptId(script_id),
            script_version: 1,
            parameters: BTreeMap::new(),
            secret_parameters: BTreeMap::new(),
            timeout_seconds: 30,
            requested_by: "bob".into(),
            at: now,
            expires_at: now.plus_millis(3_600_000),
            audit: None,
        })
        .await
        .expect("run");
    assert!(store.agent_run_sent(&run_id, now, now).await.expect("sent"));
    assert!(
        store
            .agent_run_started("web-1", &run_id, now, now)
            .await
            .expect("started")
    );
    store
        .finish_agent_run(
            "web-1",
            &run_id,
            &AgentRunEnd::Finished {
                status: AgentRunStatus::Succeeded,
                exit_code: Some(0),
                signal: None,
                stdout: run_output.clone(),
                stderr: String::new(),
                stdout_truncated: false,
                stderr_truncated: false,
                started_at: now,
                finished_at: now,
                duration_ms: 12,
            },
        )
        .await
        .expect("finished");
    store.close().await;
    Seeded {
        down_service: "nightly-ledger".into(),
        alert_id,
        script_id,
        author_key,
        approver_key,
        run_id,
        run_output,
    }
}

/// A browser-like client: no redirects followed, the page's own `Origin` on posts.
struct Browser<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    cookie: Option<String>,
}

impl<'a> Browser<'a> {
    fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookie: None,
        }
    }

    fn origin(&self) -> String {
        self.app.url("").trim_end_matches('/').to_owned()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        let mut rb = self.client.get(self.app.url(path));
        if let Some(c) = &self.cookie {
            rb = rb.header(header::COOKIE, c);
        }
        rb.send().await.expect("GET")
    }

    async fn post_from(
        &self,
        path: &str,
        form: &[(&str, &str)],
        origin: &str,
    ) -> reqwest::Response {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut rb = self
            .client
            .post(self.app.url(path))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ORIGIN, origin)
            .body(body);
        if let Some(c) = &self.cookie {
            rb = rb.header(header::COOKIE, c);
        }
        rb.send().await.expect("POST")
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.post_from(path, form, &self.origin()).await
    }

    /// Signs in; returns the `Set-Cookie` header.
    async fn sign_in(&mut self, key: &str) -> String {
        let r = self.post("/ui/login", &[("api_key", key)]).await;
        assert_eq!(r.status(), 303, "sign-in answers a redirect");
        assert_eq!(r.headers()[header::LOCATION], "/ui");
        let set = r.headers()[header::SET_COOKIE]
            .to_str()
            .expect("cookie")
            .to_owned();
        self.cookie = Some(set.split(';').next().expect("pair").to_owned());
        set
    }

    async fn page(&self, path: &str) -> String {
        let r = self.get(path).await;
        assert_eq!(r.status(), 200, "GET {path}");
        r.text().await.expect("body")
    }

    /// The CSRF token of the page at `path`.
    async fn csrf(&self, path: &str) -> String {
        let html = self.page(path).await;
        let at = html
            .find("name=\"csrf\" value=\"")
            .expect("a form with a token")
            + 19;
        html[at..at + 64].to_owned()
    }
}

async fn audit_actions(app: &TestApp) -> Vec<(String, String)> {
    let r = app.admin().get("/v2/audit-logs?limit=250").await;
    assert_ok(&r, 200)["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["action_type"].as_str().unwrap_or_default().to_owned(),
                e["actor"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_redirects_and_pages_need_a_session() {
    let app = TestApp::spawn().await;
    let b = Browser::new(&app);
    let r = b.get("/").await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[header::LOCATION], "/ui");
    for path in ["/ui", "/ui/services", "/ui/alerts/1", "/ui/audit.csv"] {
        let r = b.get(path).await;
        assert_eq!(r.status(), 303, "{path}");
        assert_eq!(r.headers()[header::LOCATION], "/ui/login", "{path}");
    }
    let r = b.get("/ui/login").await;
    assert_eq!(r.status(), 200);
    let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("script-src"), "no script is allowed: {csp}");
    assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
    let html = r.text().await.unwrap();
    assert!(!html.contains("<script"), "the page has no script");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no absolute links: {html}"
    );
    let css = b.get("/ui/static/medic.css").await;
    assert_eq!(css.status(), 200);
    assert!(
        css.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_sets_a_strict_cookie_and_bad_keys_are_refused() {
    let app = TestApp::spawn().await;
    let mut b = Browser::new(&app);
    let r = b
        .post("/ui/login", &[("api_key", "mdk_000000000000_nope")])
        .await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().get(header::SET_COOKIE).is_none());
    assert!(r.text().await.unwrap().contains("Invalid API key."));
    // A key that cannot read (an agent key) cannot sign in.
    let agent = app.create_key(&["agent"]).await;
    let r = b.post("/ui/login", &[("api_key", &agent)]).await;
    assert_eq!(r.status(), 401);

    let key = app.create_key(&["read"]).await;
    let set = b.sign_in(&key).await;
    assert!(set.starts_with("__Host-medic_session="), "{set}");
    for flag in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=43200",
    ] {
        assert!(set.contains(flag), "{flag} in {set}");
    }
    assert!(!set.contains("Domain"), "{set}");
    let html = b.page("/ui").await;
    assert!(html.contains("Services down"), "{html}");
    // The session id itself is not in the database: only its digest.
    let id = b
        .cookie
        .as_ref()
        .unwrap()
        .split('=')
        .nth(1)
        .unwrap()
        .to_owned();
    let store = app.store().await;
    assert!(store.get_ui_session(&id).await.unwrap().is_none());
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(id.as_bytes()));
    assert!(store.get_ui_session(&digest).await.unwrap().is_some());
    store.close().await;
    // A made-up session id is not a session.
    b.cookie = Some(format!("__Host-medic_session={}", "ab".repeat(32)));
    assert_eq!(b.get("/ui").await.status(), 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_need_the_session_token_and_the_page_origin() {
    let app = TestApp::builder().manual_clock().spawn().await;
    let s = seed(&app).await;
    let mut b = Browser::new(&app);
    b.sign_in(&s.approver_key).await;
    let token = b.csrf(&format!("/ui/alerts/{}", s.alert_id)).await;
    let ack = format!("/ui/alerts/{}/ack", s.alert_id);
    // No token, a wrong token, a foreign origin: refused, and nothing changed.
    let r = b.post(&ack, &[]).await;
    assert_eq!(r.status(), 403);
    let r = b.post(&ack, &[("csrf", &"0".repeat(64))]).await;
    assert_eq!(r.status(), 403);
    let r = b
        .post_from(&ack, &[("csrf", &token)], "https://evil.example")
        .await;
    assert_eq!(r.status(), 403);
    let r = b
        .post_from(
            "/ui/login",
            &[("api_key", &s.approver_key)],
            "https://evil.example",
        )
        .await;
    assert_eq!(r.status(), 403);
    let alert = assert_ok(
        &app.admin().get(&format!("/v2/alerts/{}", s.alert_id)).await,
        200,
    );
    assert_eq!(alert["state"], "open");
    // Another session's token is not this session's.
    let mut other = Browser::new(&app);
    other.sign_in(&s.author_key).await;
    let theirs = other.csrf("/ui").await;
    assert_ne!(theirs, token);
    assert_eq!(b.post(&ack, &[("csrf", &theirs)]).await.status(), 403);
    // With the token, from the page: acknowledged, by the signed-in key, audited as the API does.
    let r = b.post(&ack, &[("csrf", &token)]).await;
    assert_eq!(r.status(), 303);
    let alert = assert_ok(
        &app.admin().get(&format!("/v2/alerts/{}", s.alert_id)).await,
        200,
    );
    assert_eq!(alert["state"], "acknowledged");
    assert!(
        alert["acknowledged_by"]
            .as_str()
            .unwrap()
            .starts_with("bob-admin"),
        "{alert}"
    );
    assert!(
        audit_actions(&app)
            .await
            .iter()
            .any(|(a, who)| a == "alert_acknowledged" && who.starts_with("bob-admin")),
    );
    let html = b.page(&format!("/ui/alerts/{}", s.alert_id)).await;
    assert!(html.contains("acknowledged"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_when_idle_and_absolutely_and_end_at_sign_out() {
    let app = TestApp::builder().manual_clock().spawn().await;
    let key = app.create_key(&["read"]).await;
    let mut b = Browser::new(&app);
    b.sign_in(&key).await;
    // Use within the idle limit keeps it alive…
    for _ in 0..3 {
        app.advance(Duration::from_secs(50 * 60));
        assert_eq!(b.get("/ui").await.status(), 200);
    }
    // …an hour without a request ends it.
    app.advance(Duration::from_secs(60 * 60));
    assert_eq!(b.get("/ui").await.status(), 303);

    // The absolute limit ends a session in use.
    b.sign_in(&key).await;
    for _ in 0..13 {
        app.advance(Duration::from_secs(55 * 60));
        assert_eq!(b.get("/ui/services").await.status(), 200);
    }
    app.advance(Duration::from_secs(55 * 60));
    assert_eq!(b.get("/ui/services").await.status(), 303, "past 12 hours");

    // Sign-out deletes the session: the old cookie is worth nothing.
    b.sign_in(&key).await;
    let token = b.csrf("/ui").await;
    let r = b.post("/ui/logout", &[("csrf", &token)]).await;
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(b.get("/ui").await.status(), 303);

    // Revoking the key ends its sessions.
    let created = app
        .create_key_with(&json!({"name": "short", "scopes": ["read"]}))
        .await;
    let (kid, secret) = (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    );
    b.sign_in(&secret).await;
    assert_eq!(b.get("/ui").await.status(), 200);
    assert_ok(
        &app.admin().delete(&format!("/v2/api-keys/{kid}")).await,
        200,
    );
    assert_eq!(b.get("/ui").await.status(), 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_lifetimes_follow_the_configuration() {
    let app = TestApp::builder()
        .manual_clock()
        .configure(|c| {
            c.ui_session = Duration::from_secs(2 * 3_600);
            c.ui_session_idle = Duration::from_secs(5 * 60);
        })
        .spawn()
        .await;
    let key = app.create_key(&["read"]).await;
    let mut b = Browser::new(&app);
    let set = b.sign_in(&key).await;
    assert!(set.contains("Max-Age=7200"), "{set}");
    app.advance(Duration::from_secs(4 * 60));
    assert_eq!(b.get("/ui").await.status(), 200);
    app.advance(Duration::from_secs(5 * 60));
    assert_eq!(b.get("/ui").await.status(), 303);
}

/// Every action, each through the API's rules.
async fn actions(app: &TestApp) {
    let s = seed(app).await;
    let mut b = Browser::new(app);
    b.sign_in(&s.approver_key).await;

    // Overview: the down service, its open alert by team, the pending script, the run.
    let html = b.page("/ui").await;
    assert!(html.contains(&s.down_service), "{html}");
    assert!(html.contains("payments: 1"), "{html}");
    assert!(html.contains("restart-ledger"), "{html}");
    assert!(html.contains(&s.run_id), "{html}");

    // Services: filter, mute, unmute, snooze.
    let html = b.page("/ui/services?q=ledger&state=down").await;
    assert!(html.contains(&s.down_service), "{html}");
    let html = b.page("/ui/services?state=up").await;
    assert!(!html.contains(&s.down_service), "{html}");
    let token = b.csrf("/ui/services").await;
    let sid = assert_ok(
        &app.admin().get("/v2/services?name=nightly-ledger").await,
        200,
    )["entries"][0]["service_id"]
        .as_i64()
        .unwrap();
    let r = b
        .post(
            &format!("/ui/services/{sid}/mute"),
            &[("csrf", &token), ("reason", "deploy")],
        )
        .await;
    assert_eq!(r.status(), 303);
    let svc = assert_ok(&app.admin().get(&format!("/v2/services/{sid}")).await, 200);
    assert_eq!(svc["muted"], true);
    let r = b
        .post(&format!("/ui/services/{sid}/unmute"), &[("csrf", &token)])
        .await;
    assert_eq!(r.status(), 303);
    let svc = assert_ok(&app.admin().get(&format!("/v2/services/{sid}")).await, 200);
    assert_eq!(svc["muted"], false);
    let r = b
        .post(
            &format!("/ui/services/{sid}/snooze"),
            &[("csrf", &token), ("minutes", "30")],
        )
        .await;
    assert_eq!(r.status(), 303);
    let windows = assert_ok(&app.admin().get("/v2/maintenance-windows").await, 200);
    assert_eq!(windows.as_array().map(Vec::len), Some(1), "{windows}");
    // The API's validation answers through the page.
    let r = b
        .post(
            &format!("/ui/services/{sid}/snooze"),
            &[("csrf", &token), ("minutes", "999999")],
        )
        .await;
    assert_eq!(r.status(), 400);

    // Resolve the alert.
    let r = b
        .post(
            &format!("/ui/alerts/{}/resolve", s.alert_id),
            &[("csrf", &token)],
        )
        .await;
    assert_eq!(r.status(), 303);
    let alert = assert_ok(
        &app.admin().get(&format!("/v2/alerts/{}", s.alert_id)).await,
        200,
    );
    assert_eq!(alert["state"], "resolved");
    let html = b.page(&format!("/ui/alerts/{}", s.alert_id)).await;
    assert!(html.contains("History of this service"), "{html}");

    // Scripts: the diff against the approved version; the author is refused, bob approves.
    let html = b.page(&format!("/ui/scripts/{}", s.script_id)).await;
    assert!(html.contains("Version 2 waits for approval"), "{html}");
    assert!(
        html.contains("<span class=\"add\">+ systemctl restart ledger --no-block</span>"),
        "{html}"
    );
    assert!(
        html.contains("<span class=\"del\">- systemctl restart ledger</span>"),
        "{html}"
    );
    let mut author = Browser::new(app);
    author.sign_in(&s.author_key).await;
    let atoken = author.csrf(&format!("/ui/scripts/{}", s.script_id)).await;
    let approve = format!("/ui/scripts/{}/versions/2/approve", s.script_id);
    let r = author.post(&approve, &[("csrf", &atoken)]).await;
    assert_eq!(r.status(), 403);
    assert!(
        r.text().await.unwrap().contains("another person"),
        "the four-eyes rule is named"
    );
    let r = b.post(&approve, &[("csrf", &token)]).await;
    assert_eq!(r.status(), 303);
    let script = assert_ok(
        &app.admin()
            .get(&format!("/v2/scripts/{}", s.script_id))
            .await,
        200,
    );
    assert_eq!(script["versions"][1]["status"], "approved");
    assert!(
        script["versions"][1]["decided_by"]
            .as_str()
            .unwrap()
            .starts_with("bob-admin")
    );

    // A read-only key sees the pages but its actions are refused by the API's scope check.
    let reader_key = app.create_key(&["read"]).await;
    let mut reader = Browser::new(app);
    reader.sign_in(&reader_key).await;
    let rtoken = reader.csrf("/ui/services").await;
    let r = reader
        .post(&format!("/ui/services/{sid}/mute"), &[("csrf", &rtoken)])
        .await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("lacks the write scope"));

    // Agents and runs: the output, escaped.
    let html = b.page("/ui/agents").await;
    assert!(
        html.contains("web-1.example.com") && html.contains("env=prod"),
        "{html}"
    );
    let html = b.page(&format!("/ui/runs/{}", s.run_id)).await;
    assert!(!html.contains(&s.run_output), "the output is escaped");
    assert!(
        html.contains("ledger restarted &#60;ok&#62; &#38; done")
            || html.contains("ledger restarted &lt;ok&gt; &amp; done"),
        "{html}"
    );
    assert!(b.page("/ui/runs").await.contains(&s.run_id));

    // Audit: filter and CSV.
    let html = b.page("/ui/audit?action_type=script_approved").await;
    assert!(html.contains("script_approved"), "{html}");
    let r = b.get("/ui/audit.csv?action_type=alert_resolved").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    let csv = r.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("id,timestamp,action_type,actor"),
        "{csv}"
    );
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[1].contains("alert_resolved"), "{csv}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_goes_through_the_api_rules_on_sqlite() {
    let app = TestApp::builder().manual_clock().spawn().await;
    actions(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_goes_through_the_api_rules_on_postgres() {
    let Some(db) = crate::db::postgres().await else {
        return;
    };
    let url = db.url.clone();
    let app = TestApp::builder()
        .manual_clock()
        .configure(move |c| {
            c.database_url = url.parse().expect("url");
        })
        .spawn()
        .await;
    actions(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_spends_the_keys_rate_limit() {
    let app = TestApp::spawn().await;
    let limited = app
        .create_key_with(&json!({"name": "slow", "scopes": ["read"], "rate_limit_per_minute": 2}))
        .await;
    let mut b = Browser::new(&app);
    b.sign_in(limited["key"].as_str().unwrap()).await;
    assert_eq!(b.get("/ui/agents").await.status(), 200);
    assert_eq!(b.get("/ui/agents").await.status(), 200);
    assert_eq!(b.get("/ui/agents").await.status(), 429);
    let _ = Timestamp::now();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playbook_executions_are_decided_and_cancelled_from_their_page() {
    let app = TestApp::spawn().await;
    let alice = app.create_key_for("alice", &["admin"]).await;
    let bob = app.create_key_for("bob", &["admin"]).await;
    let yaml = "name: guarded\napproval: required\nsteps:\n  - name: pause\n    type: wait\n    duration: 10m\n";
    let r = crate::support::send(
        app.with_key(&alice)
            .request(reqwest::Method::POST, "/v2/playbooks")
            .header(header::CONTENT_TYPE, "application/yaml")
            .body(yaml),
    )
    .await;
    let playbook = assert_ok(&r, 201)["playbook_id"].as_i64().expect("id");
    let r = app
        .with_key(&alice)
        .post_json(&format!("/v2/playbooks/{playbook}/execute"), &json!({}))
        .await;
    let id = assert_ok(&r, 201)["execution_id"]
        .as_i64()
        .expect("execution id");
    let page = format!("/ui/executions/{id}");

    let mut b = Browser::new(&app);
    b.sign_in(&bob).await;
    let html = b.page("/ui").await;
    assert!(html.contains(&format!("guarded #{id}")), "{html}");
    assert!(b.page("/ui/playbooks").await.contains("guarded"));

    // The requester may not approve their own execution; bob may.
    let mut a = Browser::new(&app);
    a.sign_in(&alice).await;
    let atoken = a.csrf(&page).await;
    let r = a
        .post(&format!("{page}/approve"), &[("csrf", &atoken)])
        .await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("cannot approve"));
    let token = b.csrf(&page).await;
    let r = b
        .post(&format!("{page}/approve"), &[("csrf", &token)])
        .await;
    assert_eq!(r.status(), 303);
    let e = assert_ok(&app.admin().get(&format!("/v2/executions/{id}")).await, 200);
    assert_ne!(e["status"], "pending_approval", "{e}");
    assert_eq!(e["approval"]["outcome"], "approved", "{e}");
    let bob_owner = app
        .store()
        .await
        .find_key_owner("bob")
        .await
        .expect("owner")
        .expect("bob");
    assert_eq!(
        e["approval"]["by"],
        format!("owner:{}", bob_owner.id.0),
        "{e}"
    );

    // The step timeline, then cancel.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !b.page(&page).await.contains("pause") {
        assert!(Instant::now() < deadline, "the step never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = b.post(&format!("{page}/cancel"), &[("csrf", &token)]).await;
    assert_eq!(r.status(), 303);
    let e = assert_ok(&app.admin().get(&format!("/v2/executions/{id}")).await, 200);
    assert_eq!(e["status"], "cancelled", "{e}");
    assert!(
        !b.page(&page).await.contains("/cancel\""),
        "no cancel button once ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_page_draws_the_last_days_heartbeats_on_a_timeline() {
    let app = TestApp::builder().manual_clock().spawn().await;
    let svc = app
        .create_service(
            &json!({"heartbeat_name": "nightly-export", "interval_seconds": 3600,
                                "team": "data"}),
        )
        .await;
    let id = svc["service_id"].as_i64().expect("id");
    let beat = |status: &str| json!({"heartbeat_name": "nightly-export", "status": status});
    // One beat a day and a half ago (outside the window), then three in the last day.
    assert_ok(&app.admin().post_json("/heartbeat", &beat("UP")).await, 201);
    app.advance(Duration::from_secs(36 * 3600));
    assert_ok(&app.admin().post_json("/heartbeat", &beat("UP")).await, 201);
    app.advance(Duration::from_secs(6 * 3600));
    assert_ok(
        &app.admin().post_json("/heartbeat", &beat("DOWN")).await,
        201,
    );
    app.advance(Duration::from_secs(6 * 3600));
    assert_ok(&app.admin().post_json("/heartbeat", &beat("UP")).await, 201);

    let key = app.create_key_for("carol", &["read"]).await;
    let mut b = Browser::new(&app);
    b.sign_in(&key).await;
    // The list links to the page.
    let list = b.page("/ui/services").await;
    assert!(
        list.contains(&format!("href=\"/ui/services/{id}\"")),
        "{list}"
    );
    let html = b.page(&format!("/ui/services/{id}")).await;
    assert!(html.contains("<svg"), "{html}");
    assert!(!html.contains("<script"), "the page has no script");
    let marks: Vec<&str> = html
        .split("<rect class=\"hb ")
        .skip(1)
        .map(|m| m.split('"').next().unwrap_or_default())
        .collect();
    // Oldest beat left out; the three in the window, newest first, statuses as sent.
    assert_eq!(marks, ["up", "down", "up"].map(str::to_uppercase), "{html}");
    let xs: Vec<i64> = html
        .split("<rect class=\"hb ")
        .skip(1)
        .map(|m| {
            let at = m.find("x=\"").expect("x") + 3;
            m[at..]
                .split('"')
                .next()
                .unwrap_or_default()
                .parse()
                .expect("x")
        })
        .collect();
    // 0, 6 and 12 hours ago on a 24-hour strip of 1000 units.
    assert_eq!(xs, [998, 750, 500], "{html}");
    assert!(html.contains("3 heartbeats"), "{html}");
    // An unknown service is the page's 404, not a crash.
    let r = b.get("/ui/services/999999").await;
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_export_holds_every_matching_entry_not_one_page() {
    let app = TestApp::spawn().await;
    let key = app.create_key_for("alice", &["admin"]).await;
    // More entries than one API page (250) holds.
    let teams = 260;
    for i in 0..teams {
        let r = app
            .admin()
            .post_json("/v2/teams", &json!({ "name": format!("team-{i:03}") }))
            .await;
        assert_ok(&r, 201);
    }
    let mut b = Browser::new(&app);
    b.sign_in(&key).await;
    let r = b.get("/ui/audit.csv?action_type=team_created").await;
    assert_eq!(r.status(), 200);
    let csv = r.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("id,timestamp,action_type"), "{csv}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("id,")).count(),
        1,
        "one header line"
    );
    assert_eq!(lines.len(), 1 + teams, "every entry, once");
    for i in 0..teams {
        let name = format!("team-{i:03}");
        assert_eq!(
            lines.iter().filter(|l| l.contains(&name)).count(),
            1,
            "{name} appears once"
        );
    }
}
