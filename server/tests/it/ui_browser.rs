//! The web page in a real browser: Debian's Chromium driven through chromedriver (W3C
//! WebDriver over plain HTTP). Signs in, sees a down service on the overview, acknowledges its
//! alert, is refused approving its own script version and approves it as a second owner, reads
//! a run's output, downloads the audit CSV, checks that no request left the server's origin, and
//! keeps screenshots of the main pages at 1280 and 320 px wide under
//! `<target>/tmp/ui-screenshots/`.
//!
//! Skips when `chromium` or `chromedriver` is missing, unless `MEDIC_TEST_REQUIRE_BROWSER=1`
//! (as `.ci/run` sets).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::support::{TestApp, assert_ok};
use crate::ui::seed;

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebDriver session.
struct Session<'a> {
    d: &'a Driver,
    id: String,
}

impl Driver {
    async fn start(driver: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let d = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = d.http.get(format!("{}/status", d.base)).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                return d;
            }
            assert!(Instant::now() < deadline, "chromedriver never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn session(&self, chromium: &Path, downloads: &Path) -> Session<'_> {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync"],
                "prefs": {"download.default_directory": downloads, "download.prompt_for_download": false}
            },
            "goog:loggingPrefs": {"performance": "ALL"}
        }}});
        let r: Value = self
            .http
            .post(format!("{}/session", self.base))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("json");
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_owned();
        Session { d: self, id }
    }
}

impl Session<'_> {
    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.d.base, self.id);
        let mut rb = self.d.http.request(method, url);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let v: Value = rb
            .send()
            .await
            .expect("webdriver")
            .json()
            .await
            .expect("json");
        assert!(v["value"].get("error").is_none(), "{path}: {v}");
        v["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.cmd(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.cmd(reqwest::Method::GET, path, None).await
    }

    async fn go(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    async fn source(&self) -> String {
        self.get("/source")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn current_url(&self) -> String {
        self.get("/url")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await;
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_owned()
    }

    async fn click(&self, css: &str) {
        let e = self.element(css).await;
        self.post(&format!("/element/{e}/click"), json!({})).await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css).await;
        self.post(&format!("/element/{e}/value"), json!({ "text": text }))
            .await;
    }

    /// Presses `key` (a WebDriver key code such as TAB or ENTER) on whatever has the focus.
    async fn press(&self, key: &str) {
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]}]});
        self.post("/actions", actions).await;
    }

    /// Moves the focus with Tab until it is on the element `css` (at most 100 presses), then
    /// presses Enter: what someone without a mouse does.
    async fn tab_to_and_enter(&self, css: &str) {
        const TAB: &str = "\u{E004}";
        const ENTER: &str = "\u{E007}";
        let target = self.element(css).await;
        for _ in 0..100 {
            self.press(TAB).await;
            let active = self.get("/element/active").await;
            let focused = active
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(Value::as_str);
            if focused == Some(target.as_str()) {
                self.press(ENTER).await;
                return;
            }
        }
        panic!("the keyboard never reached {css}");
    }

    async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.post("/goog/cdp/execute", json!({"cmd": cmd, "params": params}))
            .await
    }

    /// Polls the page until `cond` holds for its URL and source (a form's answer may still be
    /// loading when a click returns); returns the source.
    async fn wait_for(&self, what: &str, cond: impl Fn(&str, &str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (url, html) = (self.current_url().await, self.source().await);
            if cond(&url, &html) {
                return html;
            }
            assert!(Instant::now() < deadline, "never {what}: {url}\n{html}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn sign_in(&self, base: &str, key: &str) {
        self.go(&format!("{base}/ui/login")).await;
        self.type_into("#api_key", key).await;
        self.click("form button[type=submit]").await;
        let home = format!("{base}/ui");
        self.wait_for("signed in", |url, _| url == home).await;
    }

    async fn sign_out(&self) {
        self.click("form.who button").await;
        self.wait_for("signed out", |url, _| url.ends_with("/ui/login"))
            .await;
    }

    /// A full-page screenshot at `width` CSS pixels.
    async fn screenshot(&self, dir: &Path, name: &str, width: u32) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": width < 600}),
        )
        .await;
        let shot = self
            .cdp(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("png"))
            .expect("base64");
        std::fs::write(dir.join(format!("{name}-{width}.png")), png).expect("screenshot saved");
        if width < 600 {
            // The page fits: nothing is wider than the screen.
            let layout = self.cdp("Page.getLayoutMetrics", json!({})).await;
            let content = layout["cssContentSize"]["width"].as_f64().unwrap_or(0.0);
            assert!(
                content <= f64::from(width) + 1.0,
                "{name} is {content} px wide at {width} px"
            );
        }
        self.cdp("Emulation.clearDeviceMetricsOverride", json!({}))
            .await;
    }

    /// Every URL the page requested so far (the performance log's `Network.requestWillBeSent`).
    async fn requested_urls(&self) -> Vec<String> {
        let entries = self.post("/se/log", json!({"type": "performance"})).await;
        entries
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| serde_json::from_str::<Value>(e["message"].as_str()?).ok())
            .filter(|m| m["message"]["method"] == "Network.requestWillBeSent")
            .filter_map(|m| {
                m["message"]["params"]["request"]["url"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    }

    async fn quit(&self) {
        let _ = self
            .d
            .http
            .delete(format!("{}/session/{}", self.d.base, self.id))
            .send()
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_works_through_the_page_in_chromium() {
    let required = std::env::var("MEDIC_TEST_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let (Some(chromium), Some(chromedriver)) = (
        find(&["chromium", "chromium-browser", "google-chrome"]),
        find(&["chromedriver"]),
    ) else {
        assert!(
            !required,
            "MEDIC_TEST_REQUIRE_BROWSER=1 but chromium or chromedriver is missing"
        );
        eprintln!("skipping: chromium or chromedriver is not installed");
        return;
    };
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot directory");
    let downloads = tempfile::tempdir().expect("download directory");

    let app = TestApp::builder().manual_clock().spawn().await;
    let s = seed(&app).await;
    // `localhost`: a secure context over plain HTTP, where browsers keep `Secure` cookies.
    let base = app
        .url("")
        .trim_end_matches('/')
        .replace("127.0.0.1", "localhost");
    let driver = Driver::start(&chromedriver).await;
    let b = driver.session(&chromium, downloads.path()).await;
    b.cdp(
        "Browser.setDownloadBehavior",
        json!({"behavior": "allow", "downloadPath": downloads.path()}),
    )
    .await;

    // Sign in; the down service and its alert are on the overview.
    b.sign_in(&base, &s.approver_key).await;
    let html = b.source().await;
    assert!(html.contains(&s.down_service), "{html}");
    assert!(html.contains("payments: 1"), "{html}");
    b.screenshot(&shots, "overview", 1280).await;
    b.screenshot(&shots, "overview", 320).await;

    // Acknowledge the alert from its page with the keyboard only: Tab to the link, Enter,
    // Tab to the button, Enter.
    b.tab_to_and_enter(&format!("a[href='/ui/alerts/{}']", s.alert_id))
        .await;
    let page = format!("/ui/alerts/{}", s.alert_id);
    b.wait_for("on the alert's page", |url, _| url.ends_with(&page))
        .await;
    b.screenshot(&shots, "alert", 1280).await;
    b.tab_to_and_enter(&format!(
        "form[action='/ui/alerts/{}/ack'] button",
        s.alert_id
    ))
    .await;
    b.wait_for("acknowledged", |_, html| {
        html.contains("<dt>Acknowledged</dt>")
    })
    .await;
    let alert = assert_ok(
        &app.admin().get(&format!("/v2/alerts/{}", s.alert_id)).await,
        200,
    );
    assert_eq!(alert["state"], "acknowledged");

    b.go(&format!("{base}/ui/services")).await;
    b.screenshot(&shots, "services", 1280).await;
    b.screenshot(&shots, "services", 320).await;

    // The author of version 2 is refused; a second owner approves it.
    b.sign_out().await;
    b.sign_in(&base, &s.author_key).await;
    b.go(&format!("{base}/ui/scripts/{}", s.script_id)).await;
    assert!(b.source().await.contains("--no-block"), "the diff is shown");
    b.screenshot(&shots, "script", 1280).await;
    b.screenshot(&shots, "script", 320).await;
    b.click(&format!(
        "form[action='/ui/scripts/{}/versions/2/approve'] button",
        s.script_id
    ))
    .await;
    b.wait_for("refused", |_, html| html.contains("another person"))
        .await;
    b.sign_out().await;
    b.sign_in(&base, &s.approver_key).await;
    b.go(&format!("{base}/ui/scripts/{}", s.script_id)).await;
    b.click(&format!(
        "form[action='/ui/scripts/{}/versions/2/approve'] button",
        s.script_id
    ))
    .await;
    b.wait_for("approved", |_, html| {
        html.contains("Approved version: <strong>2</strong>")
    })
    .await;
    let script = assert_ok(
        &app.admin()
            .get(&format!("/v2/scripts/{}", s.script_id))
            .await,
        200,
    );
    assert_eq!(script["versions"][1]["status"], "approved");

    // A run's output.
    b.go(&format!("{base}/ui/runs")).await;
    b.click(&format!("a[href='/ui/runs/{}']", s.run_id)).await;
    b.wait_for("on the run's page", |url, _| url.ends_with(&s.run_id))
        .await;
    let out = b.element("pre.output").await;
    let text = b.get(&format!("/element/{out}/text")).await;
    assert_eq!(text.as_str().unwrap_or_default(), s.run_output);
    b.screenshot(&shots, "run", 1280).await;

    // The audit log, and its CSV downloaded by the browser.
    b.go(&format!("{base}/ui/audit")).await;
    b.screenshot(&shots, "audit", 1280).await;
    b.screenshot(&shots, "audit", 320).await;
    b.click("a[download]").await;
    let csv = downloads.path().join("medic-audit.csv");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !csv.is_file() {
        assert!(Instant::now() < deadline, "the CSV never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = std::fs::read_to_string(&csv).expect("csv");
    assert!(body.starts_with("id,timestamp,action_type,actor"), "{body}");
    assert!(
        body.contains("script_approved") && body.contains("alert_acknowledged"),
        "{body}"
    );

    // Every request stayed on the server's origin.
    let urls = b.requested_urls().await;
    assert!(urls.len() > 10, "{urls:?}");
    let foreign: Vec<&String> = urls
        .iter()
        .filter(|u| !u.starts_with(&format!("{base}/")) && !u.starts_with("data:"))
        .collect();
    assert!(foreign.is_empty(), "requests left the origin: {foreign:?}");
    b.quit().await;
}
