//! The JSON envelope and the one error type every handler returns.
//!
//! Every v1/v2 response body is `{"success": bool, "message": string, "results": value}`; on
//! errors `results` is `""`. [`ApiError`] carries a status and a client-safe message; internal
//! detail is logged once where the error is created and never returned.
//!
//! A database that cannot be reached ([`StoreError::Unavailable`], a failed heartbeat batch, a
//! timed-out request) is never the caller's fault and never final: it is a 503 with
//! `Retry-After` ([`ApiError::unavailable`], [`ApiError::retry_later`]), so clients and load
//! balancers back off and try again instead of treating it as a server bug. A statement the
//! database refused for another reason ([`StoreError::Failed`]) is a 500.

use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::StoreError;

/// The body of every v1/v2 answer: `{"success", "message", "results"}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Envelope<T> {
    /// `true` on every 2xx answer.
    pub success: bool,
    /// A sentence for people (often empty on reads).
    pub message: String,
    pub results: T,
}

/// The `results` of an answer that carries none: the empty string, as the legacy API has it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub enum NoResults {
    #[serde(rename = "")]
    Empty,
}

/// The body of every error answer: `success` is `false`, `message` says what went wrong and
/// `results` is `""`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorEnvelope {
    /// Always `false`.
    pub success: bool,
    pub message: String,
    pub results: NoResults,
}

/// The body of a 429: the error envelope plus the seconds to wait (also in `Retry-After`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RateLimitedEnvelope {
    /// Always `false`.
    pub success: bool,
    pub message: String,
    pub results: NoResults,
    #[schema(minimum = 1)]
    pub retry_after: u64,
}

/// Writes `body` through a [`serde_json::Value`], whose object keys come out sorted: the order
/// the API has always answered with, whatever the order of a struct's fields.
pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_value(body) {
        Ok(v) => (status, Json(v)).into_response(),
        Err(e) => ApiError::internal(&e).into_response(),
    }
}

/// `Retry-After` (seconds) on every 503: about one pool acquire timeout, so a client that
/// honours it does not pile onto a database that is still coming back.
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// A successful envelope.
pub fn ok<T: Serialize>(status: StatusCode, message: &str, results: T) -> Response {
    json_response(
        status,
        &Envelope {
            success: true,
            message: message.to_owned(),
            results,
        },
    )
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Extra top-level fields of the error envelope (`problems` of an invalid playbook).
    pub fields: Vec<(&'static str, serde_json::Value)>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            headers: Vec::new(),
            fields: Vec::new(),
        }
    }

    /// Adds a top-level field to the error envelope, beside `success`, `message`, `results`.
    pub fn with_field(mut self, name: &'static str, value: serde_json::Value) -> Self {
        self.fields.push((name, value));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// A failure outside the caller's control. Logs `detail` once; the client sees only a
    /// generic message.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal server error. The request was not completed.",
        )
    }

    /// The database is unreachable right now: 503 with `Retry-After`. Logs `detail` once.
    pub fn unavailable(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "database unavailable");
        Self::retry_later(
            "The database is unavailable. The request was not completed; retry later.",
        )
    }

    /// A temporary refusal (the server is shutting down, a request ran out of time): 503 with
    /// `Retry-After: RETRY_AFTER_SECONDS`.
    pub fn retry_later(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
            .with_header(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(_) => Self::conflict("A conflicting record already exists."),
            StoreError::Unavailable(_) => Self::unavailable(&e),
            StoreError::Failed(_) | StoreError::Config(_) | StoreError::Migration(_) => {
                Self::internal(&e)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let envelope = ErrorEnvelope {
            success: false,
            message: self.message,
            results: NoResults::Empty,
        };
        let mut resp = if self.fields.is_empty() {
            json_response(self.status, &envelope)
        } else {
            let mut body = serde_json::to_value(&envelope).unwrap_or_default();
            if let Some(map) = body.as_object_mut() {
                for (k, v) in self.fields {
                    map.insert(k.to_owned(), v);
                }
            }
            json_response(self.status, &body)
        };
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}

pub type ApiResult = Result<Response, ApiError>;
