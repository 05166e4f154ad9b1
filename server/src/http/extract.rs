//! Request extractors that answer with the JSON envelope instead of axum's plain-text
//! rejections: bodies, query parameters, path ids, the caller's identity and the actor name.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::auth::{AuthError, Principal};
use crate::domain::{Scope, Timestamp};

/// A JSON request body. The `Content-Type` is not checked (legacy clients send none or
/// `text/plain`); a body that is not valid JSON for `T` is a 400, an oversized one a 413.
pub struct JsonBody<T>(pub T);

/// Like [`JsonBody`], but an empty body gives `T::default()`.
pub struct OptionalJsonBody<T>(pub T);

pub(super) async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large.")
        } else {
            ApiError::bad_request("Could not read the request body.")
        }
    })
}

pub(super) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every body is an object; serde would otherwise fill a struct from an array by position.
    if bytes.trim_ascii_start().first() == Some(&b'[') {
        return Err(ApiError::bad_request(
            "Invalid request body: expected a JSON object, not an array.",
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "Request body is not valid JSON: {}",
            in_api_words(&e.to_string())
        ))
    })?;
    if let Some(field) = control_field(&value) {
        return Err(ApiError::bad_request(field));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let detail = in_api_words(&e.inner().to_string());
        ApiError::bad_request(if path == "." {
            format!("Invalid request body: {detail}.")
        } else {
            format!("Invalid request body: {path}: {detail}.")
        })
    })
}

/// Whether `c` may appear in a string of a request body: no control character but tab,
/// line feed and carriage return (script texts and descriptions have lines).
fn allowed_in_body(c: char) -> bool {
    !c.is_control() || matches!(c, '\t' | '\n' | '\r')
}

/// The message for the first string (or object key) of a body that holds a control character,
/// naming its field (`labels.role`, `agent_ids[2]`).
fn control_field(value: &serde_json::Value) -> Option<String> {
    fn walk(v: &serde_json::Value, path: &mut String) -> Option<String> {
        match v {
            serde_json::Value::String(s) if !s.chars().all(allowed_in_body) => Some(format!(
                "Invalid request body: {} must not contain control characters.",
                if path.is_empty() { "the body" } else { path }
            )),
            serde_json::Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = walk(item, path);
                path.truncate(len);
                found
            }),
            serde_json::Value::Object(map) => map.iter().find_map(|(k, item)| {
                if !k.chars().all(allowed_in_body) {
                    return Some(
                        "Invalid request body: field names must not contain control characters."
                            .to_owned(),
                    );
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                let found = walk(item, path);
                path.truncate(len);
                found
            }),
            _ => None,
        }
    }
    walk(value, &mut String::new())
}

/// Rewrites serde's wording, which names Rust types (`expected struct CreateServiceIn`,
/// `expected u32`, `untagged enum RunIdValue`), into the API's JSON vocabulary.
fn in_api_words(message: &str) -> String {
    // serde_json appends the position; bodies are short and the field path says more.
    let message = match message.rfind(" at line ") {
        Some(i) if message[i..].contains(" column ") => &message[..i],
        _ => message,
    };
    let mut out = message.to_owned();
    // Phrases followed by a Rust type name.
    for (phrase, replace) in [
        ("data did not match any variant of untagged enum ", None),
        ("expected struct ", Some("expected a JSON object")),
        ("expected tuple struct ", Some("expected a JSON array")),
        (
            "expected enum ",
            Some("expected one of the documented values"),
        ),
    ] {
        while let Some(i) = out.find(phrase) {
            let rest = &out[i + phrase.len()..];
            let name_len = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..name_len];
            let with = match replace {
                Some(w) => w.to_owned(),
                None => format!("expected {}", untagged_expectation(name)),
            };
            out = format!("{}{with}{}", &out[..i], &rest[name_len..]);
        }
    }
    for (from, to) in [
        ("invalid type: map", "invalid type: JSON object"),
        ("invalid type: sequence", "invalid type: array"),
        ("invalid type: unit value", "invalid type: null"),
        ("expected a map", "expected a JSON object"),
        ("expected a sequence", "expected an array"),
        ("expected unit", "expected null"),
        ("expected a borrowed string", "expected a string"),
    ] {
        out = out.replace(from, to);
    }
    // Primitive expectations: `expected u32` and the like end the message or a clause.
    for (types, words) in [
        (
            &["u8", "u16", "u32", "u64", "u128", "usize"][..],
            "a whole number of 0 or more",
        ),
        (
            &["i8", "i16", "i32", "i64", "i128", "isize"][..],
            "a whole number",
        ),
        (&["f32", "f64"][..], "a number"),
    ] {
        for t in types {
            let from = format!("expected {t}");
            let mut search = 0;
            while let Some(found) = out[search..].find(&from) {
                let i = search + found;
                let end = i + from.len();
                let at_boundary = out[end..]
                    .chars()
                    .next()
                    .is_none_or(|c| !c.is_alphanumeric());
                if at_boundary {
                    out.replace_range(i..end, &format!("expected {words}"));
                    search = i + "expected ".len() + words.len();
                } else {
                    search = end;
                }
            }
        }
    }
    out
}

/// What each of the API's "one of several shapes" fields accepts.
fn untagged_expectation(name: &str) -> &'static str {
    match name {
        "RunIdValue" => "a string or a number",
        "Flag" => "0, 1, true or false",
        "ScopesIn" => "a list of scopes or a comma-separated string",
        _ => "a value of the documented shape",
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(
                "Request body is empty; a JSON object is required.",
            ));
        }
        parse_json(&bytes).map(Self)
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        parse_json(&bytes).map(Self)
    }
}

/// Query parameters, validated by the handler through typed accessors.
pub struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(map) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::bad_request("Malformed query string."))?;
        Ok(Self(map))
    }
}

impl Params {
    /// Every parameter named `<prefix><key>`, by key (`label.role=web` → `role: web`).
    pub fn prefixed(&self, prefix: &str) -> std::collections::BTreeMap<String, String> {
        self.0
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_owned(), v.clone())))
            .collect()
    }

    /// A non-empty string parameter.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
    }

    /// An integer within `range`; absent gives `None`.
    pub fn int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        match self.text(name) {
            None => Ok(None),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(ApiError::bad_request(format!(
                    "Query parameter {name} must be an integer between {min} and {max}."
                ))),
            },
        }
    }

    /// A 0/1 flag (also `true`/`false`).
    pub fn flag(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.text(name) {
            None => Ok(None),
            Some("1" | "true") => Ok(Some(true)),
            Some("0" | "false") => Ok(Some(false)),
            Some(_) => Err(ApiError::bad_request(format!(
                "Query parameter {name} must be 0 or 1."
            ))),
        }
    }

    /// An RFC 3339 timestamp (a plain date `YYYY-MM-DD` means its midnight UTC).
    pub fn time(&self, name: &str) -> Result<Option<Timestamp>, ApiError> {
        match self.text(name) {
            None => Ok(None),
            Some(v) => Timestamp::parse(v)
                .or_else(|| Timestamp::parse(&format!("{v}T00:00:00Z")))
                .map(Some)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "Query parameter {name} must be an RFC 3339 timestamp."
                    ))
                }),
        }
    }

    /// `limit` (1..=max, default `default`) and `offset` (≥ 0).
    pub fn page(&self, default: u32, max: u32) -> Result<crate::store::PageRequest, ApiError> {
        let limit = self
            .int("limit", 1, i64::from(max))?
            .unwrap_or(i64::from(default));
        let offset = self.int("offset", 0, i64::from(i32::MAX))?.unwrap_or(0);
        Ok(crate::store::PageRequest {
            limit: limit as u32,
            offset: offset as u32,
        })
    }
}

/// Parses a numeric path id.
pub fn path_id(raw: &str, what: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::bad_request(format!("{what} must be a positive integer.")))
}

/// The caller, as established by the gate middleware.
#[derive(Debug, Clone)]
pub enum Caller {
    Anonymous,
    Key(Principal),
    /// A credential was presented and refused (only reaches open routes).
    Invalid(AuthError),
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller::Anonymous))
    }
}

pub fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message).with_header(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    )
}

impl Caller {
    /// The principal, if it holds `scope`; 401 without a key, 403 with too little scope.
    pub fn require(&self, scope: Scope) -> Result<&Principal, ApiError> {
        match self {
            Self::Key(p) if p.scopes.allows(scope) => Ok(p),
            Self::Key(_) => {
                metrics::counter!("medic_auth_failures_total", "reason" => "insufficient_scope")
                    .increment(1);
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("This API key lacks the {} scope.", scope.as_str()),
                ))
            }
            Self::Anonymous => {
                metrics::counter!("medic_auth_failures_total", "reason" => "missing").increment(1);
                Err(unauthorized(
                    "Authentication required: send Authorization: Bearer <api key>.",
                ))
            }
            Self::Invalid(e) => Err(unauthorized(e.message())),
        }
    }

    /// Like [`Self::require`], but anonymous callers pass when `anonymous_ok`.
    pub fn require_or_anonymous(
        &self,
        scope: Scope,
        anonymous_ok: bool,
    ) -> Result<Option<&Principal>, ApiError> {
        match self {
            Self::Anonymous if anonymous_ok => Ok(None),
            other => other.require(scope).map(Some),
        }
    }
}

/// Longest accepted `X-Actor` header.
pub const MAX_ACTOR_LEN: usize = 255;

/// Who is acting: always the authenticated key (else "anonymous"); a valid `X-Actor` header is
/// kept apart as whom the key says it acted for.
pub fn actor(
    parts_headers: &axum::http::HeaderMap,
    caller: &Caller,
) -> Result<crate::store::Actor, ApiError> {
    let on_behalf_of = match parts_headers.get("x-actor") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .map(str::trim)
                .filter(|s| {
                    !s.is_empty() && s.len() <= MAX_ACTOR_LEN && s.chars().all(|c| !c.is_control())
                })
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "X-Actor must be 1 to {MAX_ACTOR_LEN} printable characters."
                    ))
                })?
                .to_owned(),
        ),
    };
    let name = match caller {
        Caller::Key(p) => p.actor(),
        _ => "anonymous".to_owned(),
    };
    Ok(crate::store::Actor { name, on_behalf_of })
}

/// A page of a v2 list: `{entries, total_count, limit, offset, has_more}`.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub entries: Vec<T>,
    /// Entries matching the filter, on every page.
    pub total_count: i64,
    pub limit: u32,
    pub offset: u32,
    /// Whether entries follow this page.
    pub has_more: bool,
}

/// The pagination envelope of v2 lists.
pub fn paginated<T>(entries: Vec<T>, total_count: i64, page: crate::store::PageRequest) -> Page<T> {
    let shown = i64::from(page.offset) + entries.len() as i64;
    Page {
        has_more: shown < total_count,
        entries,
        total_count,
        limit: page.limit,
        offset: page.offset,
    }
}

/// The `limit` and `offset` query parameters of v2 lists, as [`Params::page`] checks them with
/// the default page of 50 and the largest of 250.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageParams {
    /// Entries per page (default 50).
    #[param(minimum = 1, maximum = 250)]
    limit: Option<u32>,
    /// Entries to skip (default 0).
    #[param(minimum = 0, maximum = 2147483647)]
    offset: Option<u32>,
}
