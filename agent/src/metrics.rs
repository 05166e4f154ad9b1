//! The agent's own Prometheus metrics, and the optional loopback listener that serves them.
//!
//! Counters and the run-duration histogram live in one process-wide [`Metrics`]
//! ([`global`]); the session and the executor's callers record into it with one call each
//! ([`Metrics::session_opened`], [`Metrics::session_closed`], [`Metrics::run_finished`],
//! [`Metrics::run_skipped`]). [`serve`] answers `GET /metrics` with the text exposition format
//! (version 0.0.4) from a tiny HTTP/1.1 responder on the agent's own runtime: one request per
//! connection, `Connection: close`, a few connections at a time, a short deadline for each.
//!
//! Written by hand rather than with the `prometheus`/`metrics` crates or a hyper server: the
//! whole module is a few kilobytes of the binary, and the agent's size budget (2.5 MB stripped)
//! forbids a server stack. The listener binds only a loopback address (the configuration refuses
//! anything else), so only local users can read it; nothing secret is exposed (script names,
//! statuses, skip reasons, counts).
//!
//! Series:
//!
//! - `medic_agent_script_executions_total{script,status}` — runs that finished, by status
//!   (`succeeded`, `failed`, `timed_out`);
//! - `medic_agent_script_skipped_total{script,reason}` — requests refused, by the protocol's
//!   skip reason;
//! - `medic_agent_script_duration_seconds{script}` — histogram of finished runs' durations;
//! - `medic_agent_connected` — 1 while a session with the server is open (after `welcome`);
//! - `medic_agent_reconnects_total` — sessions opened after the first one.
//!
//! The number of distinct `script` labels is capped ([`MAX_SCRIPTS`]); beyond it, new names are
//! counted under `script="_other"`, so a server sending many names cannot grow the agent's memory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use medic_protocol::{RunStatus, SkipReason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// Upper bounds (seconds) of the run-duration histogram's buckets (plus `+Inf`).
pub const DURATION_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 3600.0,
];

/// Distinct script names kept as labels; later names count as `_other`.
pub const MAX_SCRIPTS: usize = 256;

/// The label used for script names past [`MAX_SCRIPTS`].
pub const OTHER_SCRIPT: &str = "_other";

/// Connections served at once; one arriving beyond that is closed at once.
const MAX_CONNECTIONS: usize = 4;

/// How long one scrape (read the request, write the answer) may take.
const SCRAPE_DEADLINE: Duration = Duration::from_secs(5);

/// The largest request head read.
const MAX_REQUEST_BYTES: usize = 8 * 1024;

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug)]
struct Series {
    executions: BTreeMap<(String, &'static str), u64>,
    skipped: BTreeMap<(String, String), u64>,
    durations: BTreeMap<String, Histogram>,
}

impl Series {
    /// The label for `script`: itself while there is room, `_other` after.
    fn script_label(&self, script: &str) -> String {
        let known = self.durations.contains_key(script)
            || self.executions.keys().any(|(s, _)| s == script)
            || self.skipped.keys().any(|(s, _)| s == script);
        if known || self.scripts() < MAX_SCRIPTS {
            script.to_owned()
        } else {
            OTHER_SCRIPT.to_owned()
        }
    }

    fn scripts(&self) -> usize {
        let mut names: Vec<&str> = self
            .executions
            .keys()
            .map(|(s, _)| s.as_str())
            .chain(self.skipped.keys().map(|(s, _)| s.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        names.len()
    }
}

/// The agent's metrics. One lives for the whole process ([`global`]); tests make their own.
#[derive(Debug)]
pub struct Metrics {
    connected: AtomicBool,
    sessions: AtomicU64,
    reconnects: AtomicU64,
    series: Mutex<Series>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics: disconnected, nothing counted.
    pub const fn new() -> Self {
        Self {
            connected: AtomicBool::new(false),
            sessions: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            series: Mutex::new(Series {
                executions: BTreeMap::new(),
                skipped: BTreeMap::new(),
                durations: BTreeMap::new(),
            }),
        }
    }

    /// A session opened (the server's `welcome` arrived). Every session after the first counts
    /// as a reconnect.
    pub fn session_opened(&self) {
        if self.sessions.fetch_add(1, Ordering::Relaxed) > 0 {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        self.connected.store(true, Ordering::Relaxed);
    }

    /// The session ended (or a dial failed).
    pub fn session_closed(&self) {
        self.connected.store(false, Ordering::Relaxed);
    }

    /// A script ran to an end.
    pub fn run_finished(&self, script: &str, status: RunStatus, duration: Duration) {
        let status = match status {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
        };
        let mut series = self.lock();
        let script = series.script_label(script);
        *series
            .executions
            .entry((script.clone(), status))
            .or_default() += 1;
        let seconds = duration.as_secs_f64();
        let histogram = series.durations.entry(script).or_default();
        for (bucket, bound) in histogram.buckets.iter_mut().zip(DURATION_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    /// A request was refused with `reason`.
    pub fn run_skipped(&self, script: &str, reason: SkipReason) {
        let reason = reason.as_str().to_owned();
        let mut series = self.lock();
        let script = series.script_label(script);
        *series.skipped.entry((script, reason)).or_default() += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Series> {
        // A panic while holding the lock leaves counts that are still counts.
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The Prometheus text exposition (format 0.0.4) of every series.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(1024);
        let series = self.lock();
        out.push_str(
            "# HELP medic_agent_script_executions_total Scripts run to an end, by script and status.\n\
             # TYPE medic_agent_script_executions_total counter\n",
        );
        for ((script, status), n) in &series.executions {
            let _ = writeln!(
                out,
                "medic_agent_script_executions_total{{script=\"{}\",status=\"{status}\"}} {n}",
                escape(script)
            );
        }
        out.push_str(
            "# HELP medic_agent_script_skipped_total Run requests refused, by script and reason.\n\
             # TYPE medic_agent_script_skipped_total counter\n",
        );
        for ((script, reason), n) in &series.skipped {
            let _ = writeln!(
                out,
                "medic_agent_script_skipped_total{{script=\"{}\",reason=\"{}\"}} {n}",
                escape(script),
                escape(reason)
            );
        }
        out.push_str(
            "# HELP medic_agent_script_duration_seconds Duration of scripts run to an end.\n\
             # TYPE medic_agent_script_duration_seconds histogram\n",
        );
        for (script, h) in &series.durations {
            let script = escape(script);
            for (bound, n) in DURATION_BUCKETS.iter().zip(h.buckets) {
                let _ = writeln!(
                    out,
                    "medic_agent_script_duration_seconds_bucket{{script=\"{script}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "medic_agent_script_duration_seconds_bucket{{script=\"{script}\",le=\"+Inf\"}} {}\n\
                 medic_agent_script_duration_seconds_sum{{script=\"{script}\"}} {}\n\
                 medic_agent_script_duration_seconds_count{{script=\"{script}\"}} {}",
                h.count, h.sum, h.count
            );
        }
        drop(series);
        let _ = write!(
            out,
            "# HELP medic_agent_connected 1 while a session with the server is open.\n\
             # TYPE medic_agent_connected gauge\n\
             medic_agent_connected {}\n\
             # HELP medic_agent_reconnects_total Sessions opened after the first one.\n\
             # TYPE medic_agent_reconnects_total counter\n\
             medic_agent_reconnects_total {}\n",
            u8::from(self.connected.load(Ordering::Relaxed)),
            self.reconnects.load(Ordering::Relaxed),
        );
        out
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static GLOBAL: Metrics = Metrics::new();
    &GLOBAL
}

/// A label value with `\`, `"` and newlines escaped, as the text format requires.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Serves `GET /metrics` (the [`global`] metrics) on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors and the like: try again shortly.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
                continue;
            }
        };
        // Busy with other scrapes: close this one rather than queue without bound.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        tokio::spawn(async move {
            let _ = tokio::time::timeout(SCRAPE_DEADLINE, answer(stream)).await;
            drop(slot);
        });
    }
}

/// Reads one request head and answers it.
async fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST_BYTES {
            return respond(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next());
    let path = target.map(|t| t.split(|&b| b == b'?').next().unwrap_or_default());
    match (method, path) {
        (b"GET" | b"HEAD", Some(b"/metrics")) => {
            let body = global().render();
            let body = if method == b"HEAD" {
                String::new()
            } else {
                body
            };
            respond(&mut stream, "200 OK", &body).await
        }
        (b"GET" | b"HEAD", Some(_)) => respond(&mut stream, "404 Not Found", "not found\n").await,
        _ => respond(&mut stream, "405 Method Not Allowed", "").await,
    }
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\n\
         Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_as_prometheus_text() {
        let m = Metrics::new();
        let text = m.render();
        assert!(text.contains("\nmedic_agent_connected 0\n"), "{text}");
        assert!(
            text.contains("\nmedic_agent_reconnects_total 0\n"),
            "{text}"
        );

        m.session_opened();
        m.session_closed();
        m.session_opened();
        m.run_finished("greet", RunStatus::Succeeded, Duration::from_millis(30));
        m.run_finished("greet", RunStatus::Failed, Duration::from_secs(2));
        m.run_skipped("rm-all", SkipReason::NotInAllowlist);
        m.run_skipped("a\"b\\c\nd", SkipReason::InvalidName);
        let text = m.render();
        for line in [
            "medic_agent_connected 1",
            "medic_agent_reconnects_total 1",
            "medic_agent_script_executions_total{script=\"greet\",status=\"succeeded\"} 1",
            "medic_agent_script_executions_total{script=\"greet\",status=\"failed\"} 1",
            "medic_agent_script_skipped_total{script=\"rm-all\",reason=\"not_in_allowlist\"} 1",
            "medic_agent_script_skipped_total{script=\"a\\\"b\\\\c\\nd\",reason=\"invalid_name\"} 1",
            "medic_agent_script_duration_seconds_bucket{script=\"greet\",le=\"0.01\"} 0",
            "medic_agent_script_duration_seconds_bucket{script=\"greet\",le=\"0.05\"} 1",
            "medic_agent_script_duration_seconds_bucket{script=\"greet\",le=\"2.5\"} 2",
            "medic_agent_script_duration_seconds_bucket{script=\"greet\",le=\"+Inf\"} 2",
            "medic_agent_script_duration_seconds_count{script=\"greet\"} 2",
            "medic_agent_script_duration_seconds_sum{script=\"greet\"} 2.03",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn script_labels_are_capped() {
        let m = Metrics::new();
        for i in 0..MAX_SCRIPTS + 10 {
            m.run_skipped(&format!("s{i}"), SkipReason::NotInAllowlist);
        }
        // A known name keeps its label after the cap.
        m.run_skipped("s0", SkipReason::NotApproved);
        let text = m.render();
        assert!(text.contains(
            "medic_agent_script_skipped_total{script=\"_other\",reason=\"not_in_allowlist\"} 10"
        ));
        assert!(
            text.contains(
                "medic_agent_script_skipped_total{script=\"s0\",reason=\"not_approved\"} 1"
            )
        );
    }
}
