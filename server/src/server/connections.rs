//! The accept loop: HTTP/1 over hyper with a timer (so the header-read timeout is on), an idle
//! timeout, a global connection cap (a semaphore taken before `accept`, as in tokio's
//! mini-redis) and a per-address cap. Running out of descriptors pauses accepting briefly
//! instead of ending the loop. On `stop` it stops accepting and asks every connection to
//! finish its current request and close.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Connection settings (from [`crate::config::Config`]).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// 0: no per-address limit.
    pub max_connections_per_ip: usize,
}

/// How long accepting pauses after an error such as "too many open files".
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Open connections per peer address.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

/// One counted connection of an address; dropping it frees the slot.
struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn try_take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut t = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = t.entry(ip).or_insert(0);
        if max != 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut t = self
            .table
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

/// When a connection last moved a byte, and how many requests it is running.
struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A request in progress on a connection.
struct Running(Arc<Activity>);

impl Running {
    fn start(a: &Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(a.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A socket that records its activity, and gives the answers hyper writes by itself (a request
/// it could not parse) the JSON envelope every other answer has.
struct Watched {
    io: TcpStream,
    activity: Arc<Activity>,
    /// An answer rewritten by [`enveloped`], accepted from hyper but not yet all sent.
    pending: Vec<u8>,
}

/// hyper answers a request it cannot parse by itself, with an empty body: 400 (a malformed
/// request line or header), 414 (URI too long) or 431 (headers too large). Such a head —
/// `HTTP/1.1 4xx …` with `content-length: 0`, which no handler's answer has — is given a JSON
/// error envelope; every other write passes unchanged.
fn enveloped(head: &[u8]) -> Option<Vec<u8>> {
    let message = if head.starts_with(b"HTTP/1.1 400 ") {
        "Malformed request: the request line or a header could not be parsed."
    } else if head.starts_with(b"HTTP/1.1 414 ") {
        "The request URI is too long."
    } else if head.starts_with(b"HTTP/1.1 431 ") {
        "The request headers are too large: too many, or too long."
    } else {
        return None;
    };
    let text = std::str::from_utf8(head).ok()?;
    let head_end = text.find("\r\n\r\n")?;
    if head_end + 4 != text.len() {
        return None;
    }
    let empty = "\r\ncontent-length: 0\r\n";
    let at = text[..head_end + 2].find(empty)?;
    let body = serde_json::json!({"success": false, "message": message, "results": ""}).to_string();
    let mut out = String::with_capacity(text.len() + body.len() + 48);
    out.push_str(&text[..at]);
    out.push_str("\r\ncontent-type: application/json\r\ncontent-length: ");
    out.push_str(&body.len().to_string());
    out.push_str("\r\n");
    out.push_str(&text[at + empty.len()..]);
    out.push_str(&body);
    Some(out.into_bytes())
}

impl Watched {
    /// Sends what is left of a rewritten answer; ready when nothing is.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
            self.activity.touch();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if r.is_ready() {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        ready!(self.drain(cx))?;
        if let Some(answer) = enveloped(buf) {
            self.pending = answer;
            // Accepted: the rewritten answer is sent by this and the following calls.
            let _ = self.drain(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if r.is_ready() {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        ready!(self.drain(cx))?;
        // hyper's own answers are a head alone, in one slice.
        let mut non_empty = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (non_empty.next(), non_empty.next())
            && let Some(answer) = enveloped(only)
        {
            self.pending = answer;
            let _ = self.drain(cx)?;
            return Poll::Ready(Ok(only.len()));
        }
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if r.is_ready() {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves `app` on `listener` until `stop` is cancelled and every connection has finished.
/// Dropping the returned future (the drain timed out) aborts the remaining connections.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, stop: CancellationToken) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = Arc::new(PerIp::default());
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    if is_connection_error(&e) {
                        continue;
                    }
                    // Out of descriptors or memory: wait for connections to close, keep going.
                    tracing::warn!(error = %e, "accept failed; pausing before accepting again");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            },
        };
        let Some(slot) = per_ip.try_take(peer.ip(), limits.max_connections_per_ip) else {
            metrics::counter!("medic_http_connections_refused_total", "reason" => "per_ip")
                .increment(1);
            tracing::debug!(peer = %peer.ip(), "per-address connection limit reached");
            drop(tcp);
            continue;
        };
        // No Nagle delay: an agent session's small frames (a run request, an ack) must leave
        // at once, not wait up to 40 ms for the peer's delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let app = app.clone();
        let stop = stop.clone();
        conns.spawn(async move {
            serve_connection(tcp, peer, app, limits, stop).await;
            drop(slot);
            drop(permit);
        });
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// Errors that concern one incoming connection only; the next `accept` may succeed at once.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    stop: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        io: tcp,
        activity: activity.clone(),
        pending: Vec::new(),
    });
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let running = Running::start(&requests);
        let app = app.clone();
        async move {
            let resp = app.oneshot(req).await;
            drop(running);
            resp
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let mut closing = false;
    let mut idle_deadline = activity.last() + limits.idle_timeout;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = stop.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(idle_deadline.into()), if !closing => {
                let idle = activity.in_flight.load(Ordering::Relaxed) == 0
                    && activity.last() + limits.idle_timeout <= Instant::now();
                if idle {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                } else {
                    // Busy: look again one idle period after the later of the last byte and now.
                    idle_deadline = activity.last().max(Instant::now()) + limits.idle_timeout;
                }
            }
        }
    }
}
