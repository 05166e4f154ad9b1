//! The v2 API over HTTP(S): one blocking client, the envelope, errors and their exit codes.

use std::fmt;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::Method;
use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The longest `Retry-After` a command waits out by itself before failing.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);

/// Why a command failed; each kind has its exit code.
#[derive(Debug)]
pub enum Failure {
    /// 2: the command line or a file given to it is wrong.
    Usage(String),
    /// 3: the server has no such object.
    NotFound(String),
    /// 4: the key is missing, invalid, or lacks the scope.
    Auth(String),
    /// 5: the server refused the request (invalid, conflicting, rate limited).
    Refused(String),
    /// 1: anything else (unreachable server, TLS, a server error).
    Other(String),
}

impl Failure {
    pub fn code(&self) -> u8 {
        match self {
            Self::Other(_) => 1,
            Self::Usage(_) => 2,
            Self::NotFound(_) => 3,
            Self::Auth(_) => 4,
            Self::Refused(_) => 5,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(m)
            | Self::NotFound(m)
            | Self::Auth(m)
            | Self::Refused(m)
            | Self::Other(m) => f.write_str(m),
        }
    }
}

/// A successful answer: the envelope's message and results.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub message: String,
    pub results: Value,
}

impl Answer {
    /// The results read into one of the API's types.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Failure> {
        serde_json::from_value(self.results.clone())
            .map_err(|e| Failure::Other(format!("unexpected answer from the server: {e}")))
    }
}

/// Certificates every client of this process trusts besides the built-in (Mozilla) roots:
/// `--ca-cert` / `MEDIC_CA_CERT`, read once by [`trust_ca_file`].
static EXTRA_ROOTS: OnceLock<Vec<reqwest::Certificate>> = OnceLock::new();

/// Reads a PEM file of CA certificates that every client trusts from then on (a server with a
/// private CA, or a self-signed certificate). A missing file or one without a certificate is a
/// usage error.
pub fn trust_ca_file(path: &Path) -> Result<(), Failure> {
    let pem = std::fs::read(path)
        .map_err(|e| Failure::Usage(format!("--ca-cert {}: {e}", path.display())))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| Failure::Usage(format!("--ca-cert {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Failure::Usage(format!(
            "--ca-cert {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in the file",
            path.display()
        )));
    }
    let _ = EXTRA_ROOTS.set(certs);
    Ok(())
}

pub struct Client {
    http: Http,
    base: String,
    key: Option<String>,
}

impl Client {
    /// `timeout` bounds each request; a run's long poll asks for more itself.
    pub fn new(base: &str, key: Option<String>, timeout: Duration) -> Result<Self, Failure> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Failure::Usage(format!(
                "the server URL must start with http:// or https:// (got {base:?})"
            )));
        }
        let mut builder = Http::builder()
            .user_agent(concat!("medic-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout);
        for cert in EXTRA_ROOTS.get().into_iter().flatten() {
            builder = builder.add_root_certificate(cert.clone());
        }
        let http = builder
            .build()
            .map_err(|e| Failure::Other(format!("cannot set up HTTP: {e}")))?;
        Ok(Self { http, base, key })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut rb = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(k) = &self.key {
            rb = rb.bearer_auth(k);
        }
        rb
    }

    pub fn get(&self, path: &str) -> Result<Answer, Failure> {
        self.send(Method::GET, path, None)
    }

    /// A text answer (CSV) with the given `Accept`.
    pub fn get_text(&self, path: &str, accept: &str) -> Result<String, Failure> {
        let resp = self
            .request(Method::GET, path)
            .header(reqwest::header::ACCEPT, accept)
            .send()
            .map_err(|e| self.transport(&e))?;
        if resp.status().is_success() {
            return resp
                .text()
                .map_err(|e| Failure::Other(format!("the answer could not be read: {e}")));
        }
        read(resp).map(|a| a.results.to_string())
    }

    pub fn post(&self, path: &str, body: Option<&Value>) -> Result<Answer, Failure> {
        self.send(Method::POST, path, body)
    }

    pub fn patch(&self, path: &str, body: &Value) -> Result<Answer, Failure> {
        self.send(Method::PATCH, path, Some(body))
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<Answer, Failure> {
        self.send(Method::PUT, path, Some(body))
    }

    pub fn delete(&self, path: &str) -> Result<Answer, Failure> {
        self.send(Method::DELETE, path, None)
    }

    /// Sends a request; a 429 with a short `Retry-After` is waited out (at most three times).
    pub fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, Failure> {
        let mut waits = 0;
        loop {
            let mut rb = self.request(method.clone(), path);
            if let Some(b) = body {
                rb = rb.json(b);
            }
            let resp = rb.send().map_err(|e| self.transport(&e))?;
            if resp.status().as_u16() == 429 && waits < 3 {
                let wait = retry_after(&resp);
                if wait <= MAX_RETRY_WAIT {
                    eprintln!(
                        "medic: rate limited by the server; retrying in {} s",
                        wait.as_secs().max(1)
                    );
                    std::thread::sleep(wait.max(Duration::from_millis(200)));
                    waits += 1;
                    continue;
                }
            }
            return read(resp);
        }
    }

    /// A request that did not get an answer.
    pub fn transport(&self, e: &reqwest::Error) -> Failure {
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            detail = format!("{detail}: {s}");
            source = s.source();
        }
        if e.is_timeout() {
            Failure::Other(format!("{} did not answer in time ({detail})", self.base))
        } else if detail.contains("certificate") {
            Failure::Other(format!(
                "cannot reach {}: {detail} (a server whose certificate comes from a private CA \
                 needs --ca-cert FILE or MEDIC_CA_CERT)",
                self.base
            ))
        } else {
            Failure::Other(format!("cannot reach {}: {detail}", self.base))
        }
    }
}

/// `Retry-After` in seconds (the header, else the body's `retry_after`; 1 s if neither).
fn retry_after(resp: &Response) -> Duration {
    let secs = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(secs)
}

/// Reads an answer: its envelope on success, a [`Failure`] with the server's message and the
/// request id otherwise.
fn read(resp: Response) -> Result<Answer, Failure> {
    let status = resp.status().as_u16();
    let request_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let retry = (status == 429).then(|| retry_after(&resp));
    let text = resp
        .text()
        .map_err(|e| Failure::Other(format!("the answer could not be read: {e}")))?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if (200..300).contains(&status) {
        return Ok(Answer {
            status,
            message,
            results: body.get("results").cloned().unwrap_or(body),
        });
    }
    Err(failure(
        status,
        &message,
        &text,
        &body,
        request_id.as_deref(),
        retry,
    ))
}

pub fn failure(
    status: u16,
    message: &str,
    text: &str,
    body: &Value,
    request_id: Option<&str>,
    retry: Option<Duration>,
) -> Failure {
    let mut msg = if message.is_empty() {
        let t = text.trim();
        if t.is_empty() || t.len() > 300 {
            format!("the server answered HTTP {status}")
        } else {
            t.to_owned()
        }
    } else {
        message.to_owned()
    };
    if let Some(problems) = body.get("problems").and_then(Value::as_array) {
        for p in problems {
            let line = p.get("line").and_then(Value::as_u64);
            let field = p.get("field").and_then(Value::as_str).unwrap_or_default();
            let m = p.get("message").and_then(Value::as_str).unwrap_or_default();
            match line {
                Some(l) => msg.push_str(&format!("\n  line {l}: {field}: {m}")),
                None => msg.push_str(&format!("\n  {field}: {m}")),
            }
        }
    }
    if let Some(wait) = retry {
        msg.push_str(&format!(" (rate limited; retry in {} s)", wait.as_secs()));
    }
    msg.push_str(&format!(" [HTTP {status}"));
    if let Some(id) = request_id {
        msg.push_str(&format!(", request id {id}"));
    }
    msg.push(']');
    match status {
        401 | 403 => Failure::Auth(msg),
        404 => Failure::NotFound(msg),
        400..=499 => Failure::Refused(msg),
        _ => Failure::Other(msg),
    }
}

/// Percent-encodes a query value or a path segment.
pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Percent-encodes a path segment (everything but unreserved characters).
pub fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A query string from the pairs that have a value.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{}={}", enc(k), enc(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_exit_codes() {
        let f = |s| failure(s, "m", "", &Value::Null, Some("abc"), None).code();
        assert_eq!(f(401), 4);
        assert_eq!(f(403), 4);
        assert_eq!(f(404), 3);
        assert_eq!(f(400), 5);
        assert_eq!(f(409), 5);
        assert_eq!(f(429), 5);
        assert_eq!(f(500), 1);
        assert_eq!(f(503), 1);
    }

    #[test]
    fn errors_carry_the_message_request_id_and_problems() {
        let body =
            serde_json::json!({"problems": [{"line": 3, "field": "steps", "message": "bad"}]});
        let m = failure(400, "Invalid.", "", &body, Some("req-1"), None).to_string();
        assert_eq!(
            m,
            "Invalid.\n  line 3: steps: bad [HTTP 400, request id req-1]"
        );
        let m = failure(
            429,
            "Slow down.",
            "",
            &Value::Null,
            None,
            Some(Duration::from_secs(30)),
        );
        assert!(m.to_string().contains("retry in 30 s"), "{m}");
    }

    #[test]
    fn queries_skip_absent_values_and_encode() {
        assert_eq!(
            query(&[("a", None), ("b", Some("x y&".into()))]),
            "?b=x+y%26"
        );
        assert_eq!(query(&[("a", None)]), "");
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
    }
}
