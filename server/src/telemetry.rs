//! Logs and metrics.
//!
//! Logs are `tracing` events, JSON by default (`MEDIC_LOG_FORMAT=text` for humans), carrying the
//! request id. Nothing here logs keys, secrets or request bodies. Metrics go through the
//! `metrics` facade into one process-wide Prometheus recorder; [`metrics_handle`] renders them for
//! `/metrics`. Every metric is described here, and each one is recorded somewhere in the server.
//!
//! A histogram sample is kept by the recorder, 8 bytes each, until an *upkeep* folds it into
//! the histogram's fixed buckets. [`run_upkeep`] does that every [`UPKEEP_INTERVAL`] on a
//! tracked task, so the recorder holds at most one interval's samples whether or not anybody
//! scrapes `/metrics` (before, only a scrape did it: an unscraped server kept every sample, ~30
//! bytes per request). [`Upkeep::pending`] counts the samples waiting for the next upkeep.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub mod otel;

/// Installs the global tracing subscriber. Safe to call more than once (later calls are no-ops).
pub fn init_logging(level: &str, format: LogFormat) {
    init(level, format, false);
}

/// [`init_logging`], plus span export when `traces` and the environment asks for it
/// ([`otel`]; inside the Tokio runtime). The returned handle flushes the exporter at the end.
pub fn init(level: &str, format: LogFormat, traces: bool) -> otel::Traces {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let (exporter, handle, problem) = if traces {
        otel::layer()
    } else {
        (None, otel::Traces::default(), None)
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(exporter)
        .try_init();
    if let Some(problem) = problem {
        tracing::error!(error = problem, "OpenTelemetry traces are off");
    } else if handle.enabled() {
        tracing::info!("exporting OpenTelemetry traces over OTLP/HTTP");
    }
    handle
}

/// Most distinct `team` label values one process exports; later teams share `other`.
pub const MAX_TEAM_LABELS: usize = 50;
/// Longest `team` label value, in characters.
const MAX_TEAM_LABEL_CHARS: usize = 64;

/// The `team` label for `team`: its lowercase name (teams are case-insensitive), cut to 64
/// characters, while fewer than [`MAX_TEAM_LABELS`] teams have been seen; `other` after that.
/// Team names come from anyone who may write a service, so the label set must not grow with
/// what they send.
pub fn team_label(team: &str) -> String {
    static SEEN: OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> = OnceLock::new();
    let name: String = team
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_TEAM_LABEL_CHARS)
        .collect();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if seen.contains(&name) || seen.len() < MAX_TEAM_LABELS {
        seen.insert(name.clone());
        name
    } else {
        "other".to_owned()
    }
}

/// Distinct `playbook` label values before new playbooks are counted as `other`.
pub const MAX_PLAYBOOK_LABELS: usize = 100;

/// The `playbook` label for a playbook's name: the name (cut to 64 characters) while fewer than
/// [`MAX_PLAYBOOK_LABELS`] playbooks have been seen, `other` after that, so the label set stays
/// bounded however many playbooks are created.
pub fn playbook_label(name: &str) -> String {
    static SEEN: OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> = OnceLock::new();
    let name: String = name
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_TEAM_LABEL_CHARS)
        .collect();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if seen.contains(&name) || seen.len() < MAX_PLAYBOOK_LABELS {
        seen.insert(name.clone());
        name
    } else {
        "other".to_owned()
    }
}

/// Playbook executions and steps last seconds to hours.
const PLAYBOOK_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// How often the recorder's pending histogram samples are folded into their buckets.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The recorder's handle and the number of histogram samples it holds until the next upkeep.
#[derive(Clone, Debug)]
pub struct Upkeep {
    handle: PrometheusHandle,
    pending: Arc<AtomicU64>,
}

impl Upkeep {
    /// Folds every pending histogram sample into its buckets.
    pub fn run(&self) {
        // Reset first: a sample recorded meanwhile is counted again, never lost from the count.
        self.pending.store(0, Ordering::Relaxed);
        self.handle.run_upkeep();
    }

    /// Histogram samples recorded since the last upkeep (an upper bound of what the recorder
    /// holds unfolded).
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    pub fn handle(&self) -> &PrometheusHandle {
        &self.handle
    }
}

/// Runs [`Upkeep::run`] every `every` until `shutdown` is cancelled.
pub async fn run_upkeep(upkeep: Upkeep, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => upkeep.run(),
        }
    }
}

/// The Prometheus recorder, counting the histogram samples it is handed (one relaxed atomic
/// add per sample) so the upkeep's effect can be observed.
#[derive(Debug)]
pub struct CountingRecorder {
    inner: PrometheusRecorder,
    pending: Arc<AtomicU64>,
}

struct CountedHistogram {
    inner: Histogram,
    pending: Arc<AtomicU64>,
}

impl HistogramFn for CountedHistogram {
    fn record(&self, value: f64) {
        self.inner.record(value);
        self.pending.fetch_add(1, Ordering::Relaxed);
    }
}

impl Recorder for CountingRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.inner.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.inner.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(CountedHistogram {
            inner: self.inner.register_histogram(key, metadata),
            pending: self.pending.clone(),
        }))
    }
}

/// Seconds from an execution's start to its end, by final status.
pub const PLAYBOOK_EXECUTION_SECONDS: &str = "medic_playbook_execution_duration_seconds";
/// Seconds from a step's start to its end, by step kind and status.
pub const PLAYBOOK_STEP_SECONDS: &str = "medic_playbook_step_duration_seconds";

/// A recorder with Medic's buckets, and its [`Upkeep`].
pub fn build_recorder() -> (CountingRecorder, Upkeep) {
    let inner = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("medic_heartbeat_batch_size".to_owned()),
                BATCH_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(PLAYBOOK_EXECUTION_SECONDS.to_owned()),
                PLAYBOOK_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(PLAYBOOK_STEP_SECONDS.to_owned()),
                PLAYBOOK_BUCKETS,
            )
        })
        .map(PrometheusBuilder::build_recorder)
        .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
    let pending = Arc::new(AtomicU64::new(0));
    let upkeep = Upkeep {
        handle: inner.handle(),
        pending: pending.clone(),
    };
    (CountingRecorder { inner, pending }, upkeep)
}

static UPKEEP: OnceLock<Upkeep> = OnceLock::new();

/// The process-wide recorder's [`Upkeep`] (the recorder is installed on first use).
pub fn upkeep() -> Upkeep {
    UPKEEP
        .get_or_init(|| {
            let (recorder, upkeep) = build_recorder();
            // Fails only if another recorder is already installed (then ours stays unused).
            let _ = metrics::set_global_recorder(recorder);
            describe();
            metrics::gauge!("medic_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            upkeep
        })
        .clone()
}

/// The process-wide Prometheus recorder's handle (installed on first use).
pub fn metrics_handle() -> PrometheusHandle {
    upkeep().handle
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "medic_http_requests_total",
        "HTTP requests by method, route template and status"
    );
    describe_histogram!(
        "medic_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by method and route template"
    );
    describe_counter!(
        "medic_heartbeats_received_total",
        "Heartbeats received, by outcome (accepted, unknown_service, inactive, invalid)"
    );
    describe_histogram!(
        "medic_heartbeat_batch_size",
        "Heartbeats written per group commit"
    );
    describe_counter!(
        "medic_rate_limit_rejections_total",
        "Requests refused with 429, by route class"
    );
    describe_counter!(
        "medic_auth_failures_total",
        "Rejected credentials, by reason"
    );
    describe_gauge!(
        "medic_db_pool_connections",
        "Database connections by state (idle, in_use)"
    );
    describe_gauge!(
        "medic_db_pool_max_connections",
        "Configured maximum database connections"
    );
    describe_gauge!("medic_build_info", "Build information; always 1");
    describe_gauge!(
        "medic_api_key_cache_entries",
        "API keys (and unknown key ids) in this replica's key cache"
    );
    describe_gauge!(
        "medic_rate_limiter_buckets",
        "Client buckets held by the in-memory rate limiter (bounded by MEDIC_RATE_LIMIT_MAX_BUCKETS)"
    );
    describe_gauge!(
        "medic_api_key_cache_entries",
        "API keys and unknown key ids cached (bounded by MEDIC_API_KEY_CACHE_MAX_ENTRIES)"
    );
    describe_counter!(
        "medic_rate_limiter_fallback_total",
        "Rate-limit checks answered by the in-memory limiter because Redis failed"
    );
    describe_gauge!(
        "medic_rate_limiter_backend",
        "1 for the rate-limit backend in use (redis or memory)"
    );
    describe_counter!(
        "medic_notification_attempts_total",
        "Notification delivery attempts, by channel (slack, pagerduty, webhook) and outcome \
         (delivered, retry, failed)"
    );
    describe_histogram!(
        "medic_notification_duration_seconds",
        Unit::Seconds,
        "Time one notification delivery attempt took, by channel"
    );
    // Every channel and outcome from the start, so rates and alerts see a zero, not a gap.
    for channel in ["slack", "pagerduty", "webhook"] {
        for outcome in ["delivered", "retry", "failed"] {
            metrics::counter!(
                "medic_notification_attempts_total",
                "channel" => channel,
                "outcome" => outcome,
            )
            .absolute(0);
        }
        let _ = metrics::histogram!("medic_notification_duration_seconds", "channel" => channel);
        for outcome in ["delivered", "failed"] {
            metrics::counter!("medic_notifications_total", "channel" => channel, "outcome" => outcome)
                .absolute(0);
        }
        let _ = metrics::histogram!("medic_notification_delivery_seconds", "channel" => channel);
    }
    describe_counter!(
        "medic_notifications_total",
        "Notifications that reached a final outcome, by channel and outcome (delivered, or failed \
         after a permanent error or the last retry)"
    );
    describe_histogram!(
        "medic_notification_delivery_seconds",
        Unit::Seconds,
        "Time from an alert event to its delivery, retries included, by channel"
    );
    describe_gauge!(
        "medic_alerts_open",
        "Open and acknowledged alerts by priority, counted by the database at scrape time"
    );
    describe_counter!(
        "medic_alerts_suppressed_total",
        "Alerts held back, by reason (muted, maintenance, parent)"
    );
    describe_histogram!(
        "medic_monitor_detection_lag_seconds",
        Unit::Seconds,
        "Time from a service's deadline (down since) to its alert being opened"
    );
    describe_histogram!(
        "medic_monitor_pass_seconds",
        Unit::Seconds,
        "Duration of one monitor pass over the due services"
    );
    describe_counter!(
        "medic_monitor_pass_errors_total",
        "Monitor passes that failed (the database did not answer)"
    );
    describe_counter!(
        "medic_housekeeping_deleted_total",
        "Rows deleted by retention housekeeping, by table"
    );
    // Not described (its team label, bounded by `team_label`, has no zero series to start from):
    // medic_alerts_opened_total{kind, priority, team}, medic_monitor_services_judged_total.
    for reason in ["muted", "maintenance", "parent"] {
        metrics::counter!("medic_alerts_suppressed_total", "reason" => reason).absolute(0);
    }
    for table in crate::store::PurgeTable::ALL {
        metrics::counter!("medic_housekeeping_deleted_total", "table" => table.as_str())
            .absolute(0);
    }
    metrics::counter!("medic_monitor_pass_errors_total").absolute(0);
    describe_counter!(
        crate::gateway::RUNS_METRIC,
        "Agent runs that reached each status (queued, sent, running, succeeded, failed, \
         timed_out, skipped, expired, lost), counted by the replica that stored the change"
    );
    describe_histogram!(
        crate::gateway::LATENCY_METRIC,
        Unit::Seconds,
        "Time from sending a run to an agent to storing its result or refusal"
    );
    for status in crate::store::AgentRunStatus::ALL {
        metrics::counter!(crate::gateway::RUNS_METRIC, "status" => status.as_str()).absolute(0);
    }
    let _ = metrics::histogram!(crate::gateway::LATENCY_METRIC);
    describe_counter!(
        crate::gateway::REFUSED_METRIC,
        "Agent runs the agent refused, by the protocol's reason (not_in_allowlist, \
         not_approved, hash_mismatch, invalid_name, …)"
    );
    describe_counter!(
        crate::gateway::SESSIONS_REFUSED_METRIC,
        "Agent connections refused at the handshake, by the protocol error code sent"
    );
    for code in medic_protocol::ErrorCode::ALL {
        metrics::counter!(crate::gateway::SESSIONS_REFUSED_METRIC, "reason" => code.as_str())
            .absolute(0);
    }
    for reason in medic_protocol::SkipReason::ALL {
        metrics::counter!(crate::gateway::REFUSED_METRIC, "reason" => reason.as_str()).absolute(0);
    }
    let _ = metrics::histogram!("medic_monitor_detection_lag_seconds");
    let _ = metrics::histogram!("medic_monitor_pass_seconds");
    describe_playbooks();
}

/// The playbook engine's metrics, with zero series for the fixed label sets.
fn describe_playbooks() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "medic_playbook_executions_total",
        "Playbook executions that ended, by playbook (bounded; `other` past 100 playbooks) and \
         status (completed, failed, cancelled, expired, skipped)"
    );
    describe_counter!(
        "medic_playbook_executions_started_total",
        "Playbook executions recorded, by their first status"
    );
    describe_histogram!(
        PLAYBOOK_EXECUTION_SECONDS,
        Unit::Seconds,
        "Time from an execution's start to its end, by status"
    );
    describe_histogram!(
        PLAYBOOK_STEP_SECONDS,
        Unit::Seconds,
        "Time from a step's start to its end, by step kind and status"
    );
    describe_gauge!(
        "medic_playbook_executions_pending_approval",
        "Executions waiting for an approval decision (as last counted by this replica)"
    );
    describe_gauge!(
        "medic_circuit_breaker_open",
        "1 while the remediation circuit breaker of a scope (playbook, service, global) was \
         found open by the last start this replica saw, else 0"
    );
    describe_counter!(
        "medic_circuit_breaker_trips_total",
        "Circuit breaker openings (counted once per opening, when its first execution is skipped)"
    );
    describe_counter!(
        "medic_playbook_escalations_total",
        "Condition steps that escalated (paged through the service's routing)"
    );
    describe_counter!(
        "medic_playbook_notices_total",
        "Playbook notices that ended, by channel and outcome (delivered, failed)"
    );
    for scope in ["playbook", "service", "global"] {
        metrics::gauge!("medic_circuit_breaker_open", "scope" => scope).set(0.0);
    }
    // Zero series so rules and dashboards find the metrics on a quiet server: a series without
    // `playbook` per final status (sums over playbooks are unchanged), and the histograms
    // without labels.
    for status in ["completed", "failed", "cancelled", "expired", "skipped"] {
        metrics::counter!("medic_playbook_executions_total", "status" => status).absolute(0);
    }
    // An execution is recorded as pending approval, running, or skipped by the breaker.
    for status in ["pending_approval", "running", "skipped"] {
        metrics::counter!("medic_playbook_executions_started_total", "status" => status)
            .absolute(0);
    }
    for channel in ["slack", "pagerduty", "webhook"] {
        for outcome in ["delivered", "failed"] {
            metrics::counter!("medic_playbook_notices_total", "channel" => channel,
                "outcome" => outcome)
            .absolute(0);
        }
    }
    let _ = metrics::histogram!(PLAYBOOK_EXECUTION_SECONDS);
    let _ = metrics::histogram!(PLAYBOOK_STEP_SECONDS);
    metrics::counter!("medic_circuit_breaker_trips_total").absolute(0);
    metrics::counter!("medic_playbook_escalations_total").absolute(0);
    metrics::gauge!("medic_playbook_executions_pending_approval").set(0.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLES: u64 = 100_000;

    fn record_requests(recorder: &CountingRecorder, n: u64) {
        metrics::with_local_recorder(recorder, || {
            for _ in 0..n {
                metrics::histogram!("medic_http_request_duration_seconds", "route" => "/heartbeat")
                    .record(0.002);
            }
        });
    }

    #[tokio::test(start_paused = true)]
    async fn histogram_samples_are_folded_on_a_timer_without_any_scrape() {
        let (recorder, upkeep) = build_recorder();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_upkeep(upkeep.clone(), UPKEEP_INTERVAL, stop.clone()));
        // The first tick is immediate; let it pass.
        tokio::task::yield_now().await;
        for round in 1..=3 {
            record_requests(&recorder, SAMPLES);
            // Held by the recorder until the next upkeep...
            assert_eq!(upkeep.pending(), SAMPLES, "round {round}");
            // ...which comes within one interval (paused clock: no real waiting), with nobody
            // rendering the metrics.
            tokio::time::sleep(UPKEEP_INTERVAL + Duration::from_millis(1)).await;
            assert_eq!(upkeep.pending(), 0, "round {round}");
        }
        // Nothing was lost by folding: the buckets count every sample.
        let text = upkeep.handle().render();
        let count = format!(
            "medic_http_request_duration_seconds_count{{route=\"/heartbeat\"}} {}",
            3 * SAMPLES
        );
        assert!(text.contains(&count), "{text}");
        stop.cancel();
        task.await.expect("upkeep task stops on the token");
    }

    #[test]
    fn without_upkeep_every_sample_is_kept() {
        // What an unscraped server did before the timer: the count only grows.
        let (recorder, upkeep) = build_recorder();
        record_requests(&recorder, SAMPLES);
        record_requests(&recorder, SAMPLES);
        assert_eq!(upkeep.pending(), 2 * SAMPLES);
        upkeep.run();
        assert_eq!(upkeep.pending(), 0);
    }
}
