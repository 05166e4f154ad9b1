//! `/openapi.json` and `/docs`: the API description and a small, self-contained page that
//! renders it. The page carries its own script and styles, so it works offline (no CDN).
//!
//! Each handler's annotation states what is its own: its operation id, parameters with their
//! limits, request body, success body and the errors only it answers. [`complete`] adds what
//! follows from the gate and the extractors for every route alike (401/403 where a key is
//! checked, 413 where a body is read, 429 everywhere) and gives every error answer the
//! envelope's schema, so the two cannot drift apart route by route.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, OpenApi, Ref, RefOr, ResponseBuilder, Responses,
};
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
#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "OpenAPI document", content_type = "application/json",
               body = Object)))]
async fn openapi_json() -> Response {
    let spec = SPEC.get_or_init(|| {
        super::openapi()
            .to_json()
            .unwrap_or_else(|_| "{}".to_owned())
    });
    ([(header::CONTENT_TYPE, "application/json")], spec.clone()).into_response()
}

/// A browsable page describing every route.
#[utoipa::path(get, path = "/docs", tag = "operations", security(()),
    responses((status = 200, description = "HTML page", content_type = "text/html", body = String)))]
async fn docs_page() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}

/// The name of the bearer security scheme.
pub const BEARER: &str = "bearer";

/// Adds the answers every route shares and the envelope schema of every error answer.
pub fn complete(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            complete_operation(op);
        }
    }
}

fn complete_operation(op: &mut Operation) {
    let checks_key = op.security.as_ref().is_some_and(|reqs| {
        reqs.iter().any(|r| {
            serde_json::to_value(r)
                .ok()
                .and_then(|v| v.get(BEARER).cloned())
                .is_some()
        })
    });
    let reads_body = op.request_body.is_some();
    let Responses { responses, .. } = &mut op.responses;
    if checks_key {
        responses.entry("401".to_owned()).or_insert_with(|| {
            error_response(
                "No API key, or one that is malformed, unknown, expired or revoked \
                 (`WWW-Authenticate: Bearer`)",
            )
        });
        responses
            .entry("403".to_owned())
            .or_insert_with(|| error_response("The API key lacks the scope this route needs"));
    }
    if reads_body {
        responses.entry("413".to_owned()).or_insert_with(|| {
            error_response(
                "The request body is larger than the server accepts (MEDIC_MAX_BODY_BYTES)",
            )
        });
    }
    responses
        .entry("429".to_owned())
        .or_insert_with(rate_limited_response);
    for (status, answer) in responses.iter_mut() {
        let is_error = status.starts_with('4') || status.starts_with('5');
        if let (true, RefOr::T(answer)) = (is_error, answer)
            && answer.content.is_empty()
        {
            answer.content.insert(
                "application/json".to_owned(),
                RefOr::T(envelope("ErrorEnvelope")),
            );
        }
    }
}

fn envelope(schema: &str) -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(schema)))
        .build()
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", envelope("ErrorEnvelope"))
        .into()
}

fn rate_limited_response() -> RefOr<utoipa::openapi::Response> {
    let seconds = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1));
    ResponseBuilder::new()
        .description("Rate limit exceeded for this key (or client address) and route class")
        .header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(seconds))
                .description(Some("Seconds to wait before retrying"))
                .build(),
        )
        .content("application/json", envelope("RateLimitedEnvelope"))
        .into()
}
