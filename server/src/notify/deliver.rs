//! Delivery: one attempt to hand one [`AlertEvent`] to one [`Destination`].
//!
//! [`Notifiers::deliver`] never fails and never panics: it returns an [`Outcome`] that says
//! whether the receiver took the event, whether trying again may help, or why it never will.
//! It does not retry by itself — the dispatcher owns attempts and schedules the next one with
//! [`super::retry_delay`].
//!
//! Slack and PagerDuty URLs come from the operator's configuration and use one shared client.
//! Webhook URLs come from users, so each webhook attempt goes through the SSRF guard
//! ([`super::ssrf`]): the URL is checked, its host resolved once, and a client built for that
//! attempt connects to the checked address only (its resolver knows no other name), follows no
//! redirect and ignores proxy settings (a proxy would resolve the name again, out of the guard's
//! sight).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Client, redirect};

use super::event::{AlertEvent, Destination, Outcome};
use super::playbook::{self, PlaybookEvent};
use super::ssrf::{self, INVALID_WEBHOOK_URL, SsrfError, TargetHost};
use super::{pagerduty, slack, webhook};
use crate::clock::Clock;

/// Largest response body read from Slack or PagerDuty; their answers are a few hundred bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How Medic reaches the notification services. Built from the configuration
/// ([`crate::config::Config::notify`]); `Default` is the production endpoints with nothing
/// configured.
#[derive(Clone)]
pub struct NotifySettings {
    /// Slack Web API base, without the method (`https://slack.com/api`).
    pub slack_api_url: String,
    /// The bot token (`xoxb-…`) for `chat.postMessage`; without it Slack deliveries fail.
    pub slack_token: Option<String>,
    /// PagerDuty Events API v2 endpoint.
    pub pagerduty_events_url: String,
    /// Webhook host allowlist for [`ssrf::check_url`]; empty allows any public host.
    pub allowed_webhook_hosts: Vec<String>,
    /// Let webhooks reach private, loopback and internal addresses (receivers on a private
    /// network, local testing). Off by default: it disables the SSRF guard's network checks.
    pub allow_private_webhook_targets: bool,
    /// Limit on each request, connection included.
    pub timeout: Duration,
    /// The server's public base URL (`MEDIC_PUBLIC_URL`), for links back to Medic.
    pub public_url: Option<String>,
}

pub const DEFAULT_SLACK_API_URL: &str = "https://slack.com/api";
pub const DEFAULT_PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for NotifySettings {
    fn default() -> Self {
        Self {
            slack_api_url: DEFAULT_SLACK_API_URL.to_owned(),
            slack_token: None,
            pagerduty_events_url: DEFAULT_PAGERDUTY_EVENTS_URL.to_owned(),
            allowed_webhook_hosts: Vec::new(),
            allow_private_webhook_targets: false,
            timeout: DEFAULT_TIMEOUT,
            public_url: None,
        }
    }
}

impl std::fmt::Debug for NotifySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifySettings")
            .field("slack_api_url", &self.slack_api_url)
            .field(
                "slack_token",
                &self.slack_token.as_ref().map(|_| "<redacted>"),
            )
            .field("pagerduty_events_url", &self.pagerduty_events_url)
            .field("allowed_webhook_hosts", &self.allowed_webhook_hosts)
            .field(
                "allow_private_webhook_targets",
                &self.allow_private_webhook_targets,
            )
            .field("timeout", &self.timeout)
            .field("public_url", &self.public_url)
            .finish()
    }
}

/// The notification clients could not be set up (the TLS backend failed to initialise).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the notification HTTP client: {0}")]
pub struct NotifiersError(String);

/// Delivers alert events to Slack, PagerDuty and webhooks. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Notifiers {
    settings: Arc<NotifySettings>,
    /// For the operator-configured endpoints (Slack, PagerDuty).
    client: Client,
    /// Stamps webhook signatures.
    clock: Clock,
}

impl Notifiers {
    pub fn new(settings: NotifySettings) -> Result<Self, NotifiersError> {
        let client = base_builder(settings.timeout)
            .build()
            .map_err(|e| NotifiersError(error_text(&e)))?;
        Ok(Self {
            settings: Arc::new(settings),
            client,
            clock: Clock::system(),
        })
    }

    /// The same notifiers, reading the time for webhook signatures from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn settings(&self) -> &NotifySettings {
        &self.settings
    }

    /// One attempt to deliver `event` to `dest`.
    #[tracing::instrument(name = "notification_delivery", skip_all, fields(channel = dest.channel()))]
    pub async fn deliver(&self, dest: &Destination, event: &AlertEvent) -> Outcome {
        let started = std::time::Instant::now();
        let outcome = match dest {
            Destination::Slack { channel } => self.slack(channel, event).await,
            Destination::Pagerduty { routing_key } => self.pagerduty(routing_key, event).await,
            Destination::Webhook { url, secret } => self.webhook(url, secret, event).await,
        };
        let result = match outcome {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::Failed { .. } => "failed",
        };
        metrics::counter!(
            "medic_notification_attempts_total",
            "channel" => dest.channel(),
            "outcome" => result,
        )
        .increment(1);
        metrics::histogram!("medic_notification_duration_seconds", "channel" => dest.channel())
            .record(started.elapsed().as_secs_f64());
        match &outcome {
            Outcome::Delivered { status, .. } => tracing::debug!(
                channel = dest.channel(),
                event_id = %event.event_id,
                status,
                "notification delivered"
            ),
            Outcome::Retry { status, error } | Outcome::Failed { status, error } => {
                tracing::info!(
                    channel = dest.channel(),
                    event_id = %event.event_id,
                    status = status.map(i64::from),
                    retry = matches!(outcome, Outcome::Retry { .. }),
                    error = %error,
                    "notification not delivered"
                )
            }
        }
        outcome
    }

    /// `event` for Slack and PagerDuty, which link back to Medic: when the event has no link of
    /// its own, the server's public URL. (Webhooks get the event unchanged.)
    fn linked(&self, event: &AlertEvent) -> Option<AlertEvent> {
        match (&event.url, &self.settings.public_url) {
            (None, Some(base)) => Some(AlertEvent {
                url: Some(format!(
                    "{}/ui/alerts/{}",
                    base.trim_end_matches('/'),
                    event.alert.id
                )),
                ..event.clone()
            }),
            _ => None,
        }
    }

    async fn slack(&self, channel: &str, event: &AlertEvent) -> Outcome {
        let linked = self.linked(event);
        let event = linked.as_ref().unwrap_or(event);
        let Some(token) = self
            .settings
            .slack_token
            .as_deref()
            .filter(|t| !t.is_empty())
        else {
            return failed("Slack is not configured");
        };
        if channel.trim().is_empty() {
            return failed("no Slack channel given");
        }
        let url = format!(
            "{}/chat.postMessage",
            self.settings.slack_api_url.trim_end_matches('/')
        );
        let Ok(mut auth) = HeaderValue::from_str(&format!("Bearer {token}")) else {
            return failed("the Slack token is not a valid header value");
        };
        auth.set_sensitive(true);
        let body = slack::message(channel.trim(), event);
        let request = self
            .client
            .post(url)
            .header(AUTHORIZATION, auth)
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .body(body.to_string());
        match request.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match read_limited(resp).await {
                    Ok(answer) => slack::outcome(status, &answer),
                    Err(e) => transport(&e, self.settings.timeout),
                }
            }
            Err(e) => transport(&e, self.settings.timeout),
        }
    }

    async fn pagerduty(&self, routing_key: &str, event: &AlertEvent) -> Outcome {
        let linked = self.linked(event);
        let event = linked.as_ref().unwrap_or(event);
        if routing_key.trim().is_empty() {
            return failed("PagerDuty is not configured (no routing key)");
        }
        let body = pagerduty::event_body(routing_key.trim(), event);
        let request = self
            .client
            .post(&self.settings.pagerduty_events_url)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        match request.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match read_limited(resp).await {
                    Ok(answer) => pagerduty::outcome(status, &answer, &event.alert.dedup_key),
                    Err(e) => transport(&e, self.settings.timeout),
                }
            }
            Err(e) => transport(&e, self.settings.timeout),
        }
    }

    async fn webhook(&self, url: &str, secret: &str, event: &AlertEvent) -> Outcome {
        let body = match serde_json::to_vec(event) {
            Ok(b) => b,
            Err(e) => return failed(&format!("cannot serialize the event: {e}")),
        };
        self.signed_post(url, secret, event.event.as_str(), &event.event_id, body)
            .await
    }

    /// Posts a signed webhook body through the SSRF guard.
    async fn signed_post(
        &self,
        url: &str,
        secret: &str,
        event_name: &str,
        event_id: &str,
        body: Vec<u8>,
    ) -> Outcome {
        let private = self.settings.allow_private_webhook_targets;
        let allowlist = &self.settings.allowed_webhook_hosts;
        let checked = if private {
            ssrf::check_url_allowing_private(url, allowlist)
        } else {
            ssrf::check_url(url, allowlist)
        };
        let target = match checked {
            Ok(t) => t,
            Err(e) => return refused(e),
        };
        let resolved = if private {
            ssrf::resolve_unchecked(&target).await
        } else {
            ssrf::resolve_checked(&target).await
        };
        let addr = match resolved {
            Ok(a) => a,
            // A name that does not resolve now may resolve later (a DNS outage).
            Err(SsrfError::Unresolvable) => {
                return Outcome::Retry {
                    status: None,
                    error: "the webhook host does not resolve".to_owned(),
                };
            }
            Err(e) => return refused(e),
        };
        let mut builder = base_builder(self.settings.timeout).no_proxy();
        if let TargetHost::Domain(name) = target.host() {
            builder = builder
                .resolve(name, addr)
                .dns_resolver(Arc::new(PinnedResolver {
                    name: name.clone(),
                    addr,
                }));
        }
        let client = match builder.build() {
            Ok(c) => c,
            Err(e) => {
                return Outcome::Retry {
                    status: None,
                    error: format!("cannot build the webhook client: {}", error_text(&e)),
                };
            }
        };
        let timestamp = u64::try_from(self.clock.now().millis().div_euclid(1000)).unwrap_or(0);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match HeaderValue::from_str(event_name) {
            Ok(v) => headers.insert(webhook::HEADER_EVENT, v),
            Err(_) => return failed("the event name is not a valid header value"),
        };
        match HeaderValue::from_str(event_id) {
            Ok(v) => headers.insert(webhook::HEADER_DELIVERY, v),
            Err(_) => return failed("the event id is not a valid header value"),
        };
        headers.insert(webhook::HEADER_TIMESTAMP, HeaderValue::from(timestamp));
        let signature = webhook::signature(secret, timestamp, &body);
        match HeaderValue::from_str(&signature) {
            Ok(mut v) => {
                v.set_sensitive(true);
                headers.insert(webhook::HEADER_SIGNATURE, v)
            }
            Err(_) => return failed("cannot encode the signature"),
        };
        let request = client
            .post(target.url().clone())
            .headers(headers)
            .body(body);
        match request.send().await {
            // The body is not read: a receiver's answer means nothing but its status.
            Ok(resp) => webhook::outcome(resp.status().as_u16()),
            Err(e) => transport(&e, self.settings.timeout),
        }
    }
}

impl Notifiers {
    /// One attempt to deliver a playbook notice to `dest`. `approval_ref`: for a decision in
    /// Slack, the approval request's message (`"<channel id> <ts>"`) to update in place.
    pub async fn deliver_notice(
        &self,
        dest: &Destination,
        event: &PlaybookEvent,
        approval_ref: Option<&str>,
    ) -> Outcome {
        let started = std::time::Instant::now();
        let linked;
        let event = match (&event.url, &self.settings.public_url) {
            (None, Some(base)) => {
                linked = PlaybookEvent {
                    url: Some(format!(
                        "{}/ui/executions/{}",
                        base.trim_end_matches('/'),
                        event.execution.id
                    )),
                    ..event.clone()
                };
                &linked
            }
            _ => event,
        };
        let outcome = match dest {
            Destination::Slack { channel } => {
                let (method, body) =
                    match approval_ref.and_then(|r| playbook::slack_update(r, event)) {
                        Some(body) => ("chat.update", body),
                        None => (
                            "chat.postMessage",
                            playbook::slack_message(channel.trim(), event),
                        ),
                    };
                if channel.trim().is_empty() {
                    failed("no Slack channel given")
                } else {
                    self.slack_call(method, &body).await
                }
            }
            Destination::Pagerduty { routing_key } => {
                if routing_key.trim().is_empty() {
                    failed("PagerDuty is not configured (no routing key)")
                } else {
                    self.pagerduty_post(&playbook::pagerduty_body(routing_key.trim(), event))
                        .await
                }
            }
            Destination::Webhook { url, secret } => match serde_json::to_vec(event) {
                Ok(body) => {
                    self.signed_post(url, secret, &event.event, &event.event_id, body)
                        .await
                }
                Err(e) => failed(&format!("cannot serialize the event: {e}")),
            },
        };
        let result = match outcome {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::Failed { .. } => "failed",
        };
        metrics::counter!(
            "medic_notification_attempts_total",
            "channel" => dest.channel(),
            "outcome" => result,
        )
        .increment(1);
        metrics::histogram!("medic_notification_duration_seconds", "channel" => dest.channel())
            .record(started.elapsed().as_secs_f64());
        outcome
    }

    /// One Slack Web API call (`chat.postMessage`, `chat.update`) with the bot token.
    async fn slack_call(&self, method: &str, body: &serde_json::Value) -> Outcome {
        let Some(token) = self
            .settings
            .slack_token
            .as_deref()
            .filter(|t| !t.is_empty())
        else {
            return failed("Slack is not configured");
        };
        let url = format!(
            "{}/{method}",
            self.settings.slack_api_url.trim_end_matches('/')
        );
        let Ok(mut auth) = HeaderValue::from_str(&format!("Bearer {token}")) else {
            return failed("the Slack token is not a valid header value");
        };
        auth.set_sensitive(true);
        let request = self
            .client
            .post(url)
            .header(AUTHORIZATION, auth)
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .body(body.to_string());
        match request.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match read_limited(resp).await {
                    Ok(answer) => playbook::slack_outcome(status, &answer),
                    Err(e) => transport(&e, self.settings.timeout),
                }
            }
            Err(e) => transport(&e, self.settings.timeout),
        }
    }

    async fn pagerduty_post(&self, body: &serde_json::Value) -> Outcome {
        let dedup = body["dedup_key"].as_str().unwrap_or_default().to_owned();
        let request = self
            .client
            .post(&self.settings.pagerduty_events_url)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        match request.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match read_limited(resp).await {
                    Ok(answer) => pagerduty::outcome(status, &answer, &dedup),
                    Err(e) => transport(&e, self.settings.timeout),
                }
            }
            Err(e) => transport(&e, self.settings.timeout),
        }
    }
}

/// A request client for one user-set URL, through the SSRF guard: the URL is checked, its host
/// resolved once, and the client connects to that checked address only, follows no redirect
/// and uses no proxy. Playbook webhook steps and `http_ok` conditions use it.
///
/// # Errors
/// The guard's refusal.
pub async fn guarded_client(
    url: &str,
    allowlist: &[String],
    allow_private: bool,
    timeout: Duration,
) -> Result<(Client, url::Url), GuardRefusal> {
    let checked = if allow_private {
        ssrf::check_url_allowing_private(url, allowlist)
    } else {
        ssrf::check_url(url, allowlist)
    };
    let target = checked.map_err(GuardRefusal::Refused)?;
    let resolved = if allow_private {
        ssrf::resolve_unchecked(&target).await
    } else {
        ssrf::resolve_checked(&target).await
    };
    let addr = resolved.map_err(GuardRefusal::Refused)?;
    let mut builder = base_builder(timeout).no_proxy();
    if let TargetHost::Domain(name) = target.host() {
        builder = builder
            .resolve(name, addr)
            .dns_resolver(Arc::new(PinnedResolver {
                name: name.clone(),
                addr,
            }));
    }
    let client = builder
        .build()
        .map_err(|e| GuardRefusal::Client(error_text(&e)))?;
    Ok((client, target.url().clone()))
}

/// Why [`guarded_client`] gave no client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardRefusal {
    /// The SSRF guard refused the URL (the variant's `reason()` is for logs).
    #[error("{INVALID_WEBHOOK_URL}: refused by the outbound request guard")]
    Refused(SsrfError),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Reads at most `max` bytes of an answer's body.
///
/// # Errors
/// The transport's.
pub async fn read_capped(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut out = Vec::new();
    let mut cut = false;
    while let Some(chunk) = resp.chunk().await? {
        let room = max.saturating_sub(out.len());
        if chunk.len() > room {
            cut = true;
        }
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= max {
            break;
        }
    }
    Ok((out, cut))
}

/// A transport error and its causes on one line, without the URL.
pub fn transport_error_text(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("timed out after {} ms", timeout.as_millis())
    } else {
        error_text(e)
    }
}

fn base_builder(timeout: Duration) -> reqwest::ClientBuilder {
    Client::builder()
        .user_agent(webhook::USER_AGENT)
        .redirect(redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
}

fn failed(error: &str) -> Outcome {
    Outcome::Failed {
        status: None,
        error: error.to_owned(),
    }
}

fn refused(e: SsrfError) -> Outcome {
    tracing::warn!(reason = e.reason(), "webhook URL refused by the SSRF guard");
    failed(INVALID_WEBHOOK_URL)
}

/// A network-level failure: all of them (timeouts, refused connections, resets, TLS errors)
/// may pass, so all are worth a retry.
fn transport(e: &reqwest::Error, timeout: Duration) -> Outcome {
    let error = if e.is_timeout() {
        format!("timed out after {} ms", timeout.as_millis())
    } else if e.is_connect() {
        format!("cannot connect: {}", error_text(e))
    } else {
        format!("request failed: {}", error_text(e))
    };
    Outcome::Retry {
        status: None,
        error,
    }
}

/// An error and its causes on one line, without the URL (webhook URLs can hold tokens).
fn error_text(e: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut first = true;
    while let Some(err) = current {
        let part = if first {
            // reqwest's own message names the URL; print only its kind.
            first = false;
            if e.is_connect() {
                "connection error".to_owned()
            } else if e.is_request() {
                "error sending request".to_owned()
            } else if e.is_body() || e.is_decode() {
                "error reading the answer".to_owned()
            } else {
                "HTTP error".to_owned()
            }
        } else {
            err.to_string()
        };
        if !text.is_empty() {
            text.push_str(": ");
        }
        let _ = write!(text, "{part}");
        current = err.source();
    }
    slack::truncate(&text, 300)
}

async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = MAX_ANSWER_BYTES.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    Ok(out)
}

/// The only resolver a webhook client has: it knows the checked address of the checked name
/// and refuses every other lookup, so nothing can make the client connect elsewhere.
struct PinnedResolver {
    name: String,
    addr: SocketAddr,
}

impl reqwest::dns::Resolve for PinnedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let asked = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        let answer: Result<reqwest::dns::Addrs, Box<dyn std::error::Error + Send + Sync>> =
            if asked == self.name {
                Ok(Box::new(std::iter::once(self.addr)))
            } else {
                Err(format!("{asked} is not the checked webhook host").into())
            };
        Box::pin(std::future::ready(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_slack_token() {
        let s = NotifySettings {
            slack_token: Some("xoxb-very-secret".into()),
            ..NotifySettings::default()
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("<redacted>"));
        let n = Notifiers::new(s).unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{n:?}").contains("very-secret"));
    }

    #[test]
    fn defaults_are_the_public_endpoints() {
        let s = NotifySettings::default();
        assert_eq!(s.slack_api_url, "https://slack.com/api");
        assert_eq!(
            s.pagerduty_events_url,
            "https://events.pagerduty.com/v2/enqueue"
        );
        assert_eq!(s.timeout, Duration::from_secs(10));
        assert!(!s.allow_private_webhook_targets);
    }
}
