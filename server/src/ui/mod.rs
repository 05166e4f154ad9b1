//! The web page under `/ui`: what is down, what waits for a decision, and the decisions.
//!
//! Server-rendered HTML (askama templates compiled into the binary, `server/templates/ui/`), one
//! embedded stylesheet, no JavaScript, nothing fetched from elsewhere. Signing in with an API key
//! opens a server-side session ([`session`]); every page and every action is then a call of the
//! API's own handlers, in process, as that key ([`Api`]): the same scope checks, validation,
//! four-eyes rule and audit entries as over HTTP, and one rate-limit token of the key per page.
//! Forms carry the session's CSRF token and must come from the page's own origin.

mod pages;
pub mod session;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tower::ServiceExt;

use crate::auth::Principal;
use crate::http::AppState;
use crate::http::extract::Caller;

/// The API's routes without their layers, called in process with the signed-in key.
#[derive(Clone)]
pub struct Api(Router);

/// What an API call answered.
pub struct Reply {
    pub status: StatusCode,
    pub message: String,
    pub results: Value,
    pub body: axum::body::Bytes,
    pub content_type: Option<HeaderValue>,
    /// The API's `X-Has-More` header: a later page exists.
    has_more: bool,
}

impl Reply {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// Whether the API said a later page exists (`X-Has-More: true`).
    pub fn has_more(&self) -> bool {
        self.has_more
    }

    /// `results` read as `T` (a missing or malformed field reads as its default).
    pub fn read<T: DeserializeOwned + Default>(&self) -> T {
        serde_json::from_value(self.results.clone()).unwrap_or_default()
    }
}

impl Api {
    /// Calls `method uri` as `who`; `body` is sent as JSON.
    pub async fn call(
        &self,
        who: &Principal,
        method: Method,
        uri: &str,
        body: Option<Value>,
        accept: &str,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::ACCEPT, accept);
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let mut req = req.body(body).expect("request");
        req.extensions_mut().insert(Caller::Key(who.clone()));
        let resp = match self.0.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = resp.status();
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        let has_more = resp
            .headers()
            .get("x-has-more")
            .is_some_and(|v| v.as_bytes() == b"true");
        let body = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .unwrap_or_default();
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Reply {
            status,
            message: json["message"].as_str().unwrap_or_default().to_owned(),
            results: json["results"].clone(),
            body,
            content_type,
            has_more,
        }
    }

    pub async fn get(&self, who: &Principal, uri: &str) -> Reply {
        self.call(who, Method::GET, uri, None, "application/json")
            .await
    }
}

/// What every `/ui` handler has.
#[derive(Clone)]
pub struct Ui {
    pub app: AppState,
    pub api: Api,
    pub lifetimes: session::Lifetimes,
}

/// The stylesheet, embedded.
const CSS: &str = include_str!("../../templates/ui/medic.css");

/// The `/ui` routes (and `/` → `/ui`).
pub fn router(app: AppState) -> Router<AppState> {
    let ui = Ui {
        api: Api(crate::http::api(app.clone())),
        lifetimes: session::Lifetimes::new(&app.config),
        app,
    };
    let routes = Router::new()
        .route("/ui", get(pages::overview))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/login", get(pages::login_form).post(pages::login))
        .route("/ui/logout", post(pages::logout))
        .route("/ui/services", get(pages::services))
        .route("/ui/services/{id}", get(pages::service))
        .route("/ui/services/{id}/{action}", post(pages::service_action))
        .route("/ui/alerts", get(pages::alerts))
        .route("/ui/alerts/{id}", get(pages::alert))
        .route("/ui/alerts/{id}/{action}", post(pages::alert_action))
        .route("/ui/agents", get(pages::agents))
        .route("/ui/scripts", get(pages::scripts))
        .route("/ui/scripts/{id}", get(pages::script))
        .route(
            "/ui/scripts/{id}/versions/{version}/{action}",
            post(pages::script_action),
        )
        .route("/ui/playbooks", get(pages::playbooks))
        .route("/ui/executions/{id}", get(pages::execution))
        .route(
            "/ui/executions/{id}/{action}",
            post(pages::execution_action),
        )
        .route("/ui/runs", get(pages::runs))
        .route("/ui/runs/{id}", get(pages::run))
        .route("/ui/audit", get(pages::audit))
        .route("/ui/audit.csv", get(pages::audit_csv))
        .route("/ui/static/medic.css", get(stylesheet))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(ui);
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .merge(routes)
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

/// The page's security headers: no script, no framing, nothing from other origins.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
