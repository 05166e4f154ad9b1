//! `/openapi.json` and `/docs`: the API description and a small, self-contained page that
//! renders it. The page carries its own script and styles, so it works offline (no CDN).

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(docs_page))
}

static SPEC: OnceLock<String> = OnceLock::new();

/// The OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI document")))]
async fn openapi_json() -> Response {
    let spec = SPEC.get_or_init(|| {
        super::openapi()
            .to_json()
            .unwrap_or_else(|_| "{}".to_owned())
    });
    ([(header::CONTENT_TYPE, "application/json")], spec.clone()).into_response()
}

/// A browsable page describing every route.
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "HTML page")))]
async fn docs_page() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}
