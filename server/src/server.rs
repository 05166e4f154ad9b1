//! Process lifecycle: connect, migrate, start background tasks, serve, drain.
//!
//! [`start`] takes an already-bound listener (tests bind port 0) and returns a [`Running`]
//! server; [`Running::shutdown`] (or a cancelled token) stops accepting connections, lets
//! in-flight requests finish within the grace period, then stops background tasks (the
//! heartbeat writer commits what it holds) and closes the database pool.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod connections;

use crate::auth::Authenticator;
use crate::clock::Clock;
use crate::config::{Config, RateLimiterType, Role};
use crate::http::{self, AppState, Inner};
use crate::monitor::{self, DispatchSettings, MonitorSettings, OutboxSignal};
use crate::notify::{Destination, Notifiers};
use crate::ratelimit::{LimiterKind, RateLimiter};
use crate::store::batch::HeartbeatWriter;
use crate::store::{self, Backend, PoolOptions, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("rate limiter: {0}")]
    RateLimiter(String),
    #[error("notifications: {0}")]
    Notifications(String),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "another medic-server is already serving the SQLite database {0}; \
         SQLite supports one server process — run several replicas on PostgreSQL"
    )]
    SqliteInUse(String),
    #[error(
        "cannot create {lock} (the lock file that keeps a second server off the SQLite \
         database {database}): {error}; the database's directory must exist and be writable \
         by the server's user"
    )]
    SqliteDirectory {
        lock: String,
        database: String,
        error: std::io::Error,
    },
    #[error("playbook secrets: {0}")]
    Secrets(#[from] crate::playbook::secrets::StartupError),
    #[error("scripts on the server: {0}")]
    ServerScripts(String),
}

/// Refuses to go on when the database holds secrets that the configured keys cannot open
/// (no `MEDIC_SECRETS_KEY`, the wrong one, or a value that was altered): a server that started
/// anyway would fail every playbook that uses them, later and less clearly.
pub async fn check_secrets(
    store: &dyn Store,
    keyring: Option<&crate::playbook::secrets::Keyring>,
) -> Result<(), StartError> {
    use crate::playbook::secrets::{Sealed, StartupError, check_startup};
    let stored = store.all_sealed_secrets().await?;
    let sealed = stored
        .iter()
        .map(|s| Sealed::from_text(&s.sealed).map(|x| (s.name.as_str(), x)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(StartupError::Unreadable)?;
    check_startup(keyring, sealed.iter().map(|(name, s)| (*name, s)))?;
    Ok(())
}

/// Opens the configured store (without migrating).
pub async fn open_store(cfg: &Config) -> Result<Arc<dyn Store>, StoreError> {
    store::connect(
        cfg.database_url.expose(),
        &PoolOptions {
            max_connections: cfg.db_max_connections,
            ..PoolOptions::default()
        },
    )
    .await
}

/// Seals every stored secret again under the current key of `keyring` (values under an old key
/// open with `MEDIC_SECRETS_OLD_KEYS`), all in one transaction with its `secrets_rotated` audit
/// entry; any value that does not open stops the rotation and nothing is written.
pub async fn rotate_secrets(
    store: &dyn Store,
    keyring: &crate::playbook::secrets::Keyring,
    actor: &str,
) -> Result<store::RotateSummary, String> {
    use crate::playbook::secrets::Sealed;
    let reseal = |s: &store::SealedSecret| -> Result<Option<store::Resealed>, String> {
        let sealed = Sealed::from_text(&s.sealed).map_err(|e| e.to_string())?;
        if !keyring.needs_reseal(&sealed) {
            return Ok(None);
        }
        let new = keyring
            .reseal(&s.name, &sealed)
            .map_err(|e| e.to_string())?;
        Ok(Some(store::Resealed {
            sealed: new.to_text(),
            key_id: new.key_id,
        }))
    };
    let key_id = keyring.current_id().to_string();
    let audit = |summary: &store::RotateSummary| store::NewAuditEntry {
        action_type: "secrets_rotated".to_owned(),
        actor: actor.to_owned(),
        on_behalf_of: None,
        service_id: None,
        execution_id: None,
        details: serde_json::json!({
            "total": summary.total, "resealed": summary.resealed, "key_id": key_id,
        }),
        at: crate::domain::Timestamp::now(),
    };
    match store
        .rotate_secrets(&reseal, &audit)
        .await
        .map_err(|e| e.to_string())?
    {
        store::RotateOutcome::Done(summary) => Ok(summary),
        store::RotateOutcome::Failed { name, reason } => Err(format!(
            "secret {name:?} could not be re-encrypted, nothing was changed: {reason}"
        )),
    }
}

/// Largest group commit.
const MAX_BATCH: usize = 1024;

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    /// Starts playbook executions (the HTTP routes that start them use the same handle).
    pub engine: crate::engine::Engine,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    /// Asks the server to stop and waits until it has drained and closed its pool.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Waits until the server stops (after `trigger` is cancelled).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    pub fn trigger(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Connects, migrates and starts serving on `listener`.
/// Where an SQLite URL keeps its data, unless it is in memory.
pub fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    Some(std::path::PathBuf::from(path))
}

/// Holds an exclusive lock next to an SQLite database file for the life of the server, so a
/// second server process on the same file is refused with a clear message (both would run a
/// monitor, and SQLite has no way to share that work).
fn lock_sqlite(url: &str) -> Result<Option<std::fs::File>, StartError> {
    let Some(path) = sqlite_path(url) else {
        return Ok(None);
    };
    let mut lock_path = path.clone().into_os_string();
    lock_path.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|error| StartError::SqliteDirectory {
            lock: std::path::Path::new(&lock_path).display().to_string(),
            database: path.display().to_string(),
            error,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(StartError::SqliteInUse(path.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

pub async fn start(cfg: Config, listener: TcpListener) -> Result<Running, StartError> {
    start_with_clock(cfg, listener, Clock::system()).await
}

/// [`start`], with every handler, session and worker reading the time from `clock` (tests pass
/// a manual clock and advance it instead of waiting).
pub async fn start_with_clock(
    cfg: Config,
    listener: TcpListener,
    clock: Clock,
) -> Result<Running, StartError> {
    // The recorder first, so everything set during start-up is exported.
    let metrics = crate::telemetry::metrics_handle();
    let sqlite_lock = lock_sqlite(cfg.database_url.expose())?;
    let store = open_store(&cfg).await?;
    store.migrate().await?;
    check_secrets(&*store, cfg.secrets.as_ref()).await?;
    let limiter = match (cfg.rate_limiter_type, &cfg.redis_url) {
        (RateLimiterType::Memory, _) | (RateLimiterType::Auto, None) => RateLimiter::memory(),
        (kind, url) => {
            let kind = if kind == RateLimiterType::Redis {
                LimiterKind::Redis
            } else {
                LimiterKind::Auto
            };
            RateLimiter::new(kind, url.as_ref().map(|u| u.expose()), cfg.redis_pool_size)
                .await
                .map_err(|e| StartError::RateLimiter(e.to_string()))?
        }
    };
    limiter.set_max_buckets(cfg.rate_limit_max_buckets);
    let tracker = TaskTracker::new();
    let background = CancellationToken::new();
    // One writer per process: bigger batches (fewer commits) measured faster than several
    // concurrent writers on both backends (docs/benchmarks.md).
    let writers = 1;
    let writer = HeartbeatWriter::spawn(
        store.clone(),
        writers,
        MAX_BATCH,
        &tracker,
        background.clone(),
    );
    tracker.spawn(crate::telemetry::run_upkeep(
        crate::telemetry::upkeep(),
        crate::telemetry::UPKEEP_INTERVAL,
        background.clone(),
    ));
    let outbox = Arc::new(OutboxSignal::default());
    let mut engine_settings = cfg.playbook.clone();
    engine_settings.notify_defaults = default_destinations(&cfg);
    engine_settings.secrets = cfg.secrets.clone();
    if let Some(allowed) = &engine_settings.server_scripts {
        let scripts = crate::engine::local::ServerScripts::start(allowed)
            .map_err(StartError::ServerScripts)?;
        tracing::info!(
            scripts = scripts.allowed().collect::<Vec<_>>().join(","),
            dir = %allowed.dir.display(),
            "playbook steps may run these scripts on the server"
        );
        engine_settings.server_executor = Some(scripts);
    }
    let engine = crate::engine::Engine::new(store.clone(), clock.clone(), engine_settings);
    if cfg.role != Role::Api {
        let notifiers = Notifiers::new(cfg.notify.clone())
            .map_err(|e| StartError::Notifications(e.to_string()))?
            .with_clock(clock.clone());
        let workers = Workers {
            store: &store,
            outbox: &outbox,
            clock: &clock,
            tracker: &tracker,
            stop: &background,
            engine: &engine,
        };
        spawn_workers(&cfg, notifiers, &workers);
    }
    if cfg.role != Role::Api {
        tracker.spawn(engine.clone().run(background.clone()));
        let notifiers = Notifiers::new(cfg.notify.clone())
            .map_err(|e| StartError::Notifications(e.to_string()))?
            .with_clock(clock.clone());
        tracker.spawn(crate::engine::notices::run_dispatcher(
            store.clone(),
            notifiers,
            crate::engine::notices::DispatchSettings {
                lease: cfg.dispatch_lease,
                ..crate::engine::notices::DispatchSettings::default()
            },
            engine.notice_signal(),
            clock.clone(),
            background.clone(),
        ));
    }
    let gateway = crate::gateway::Gateway::with_clock(cfg.agent_run_grace, clock.clone())
        .with_secrets(cfg.secrets.clone());
    // A run's ending stored here makes its execution due at once (playbook script steps).
    gateway.runs_ended().listen({
        let engine = engine.clone();
        move |run_id| engine.run_ended(run_id)
    });
    // A run a playbook step queued goes to its agent's session here at once. (Weak: the
    // gateway already holds the engine, above.)
    engine.on_runs_queued({
        let gateway = gateway.downgrade();
        move |agent_id| gateway.notify_run(agent_id)
    });
    // Every replica serves agents, so every replica polls the queue for its own sessions.
    tracker.spawn(
        gateway
            .clone()
            .poll_queue(store.clone(), background.clone()),
    );
    let state = AppState::new(Inner {
        auth: Authenticator::new(store.clone(), cfg.admin_api_key.as_ref(), cfg.api_key_cache)
            .with_max_entries(cfg.api_key_cache_max_entries),
        store: store.clone(),
        writer,
        limiter,
        metrics,
        started: Instant::now(),
        clock,
        config: cfg.clone(),
        outbox,
        gateway: gateway.clone(),
        engine: engine.clone(),
    });
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let app = http::app(state);
    let stop = shutdown.clone();
    let grace = cfg.shutdown_grace;
    let limits = connections::Limits {
        header_read_timeout: cfg.header_read_timeout,
        idle_timeout: cfg.idle_timeout,
        max_connections: cfg.max_connections,
        max_connections_per_ip: cfg.max_connections_per_ip,
    };
    let task = tokio::spawn(async move {
        let serve = connections::serve(listener, app, limits, stop.clone());
        let mut serve = tokio::spawn(serve);
        stop.cancelled().await;
        tracing::info!("shutting down: draining in-flight requests");
        // Agents are told to go (and dial again later) while HTTP requests drain.
        gateway.drain();
        match tokio::time::timeout(grace, &mut serve).await {
            Ok(_) => tracing::info!("in-flight requests drained"),
            Err(_) => {
                tracing::warn!(grace_seconds = grace.as_secs(), "drain timed out");
                serve.abort();
            }
        }
        if tokio::time::timeout(grace, gateway.wait()).await.is_err() {
            tracing::warn!("agent sessions did not close within the grace period");
        }
        background.cancel();
        tracker.close();
        tracker.wait().await;
        store.close().await;
        drop(sqlite_lock);
        tracing::info!("stopped");
    });
    tracing::info!(%addr, backend = cfg_backend(&cfg), "medic-server listening");
    Ok(Running {
        addr,
        engine,
        shutdown,
        task,
    })
}

/// What the background workers share.
struct Workers<'a> {
    store: &'a Arc<dyn Store>,
    outbox: &'a Arc<OutboxSignal>,
    clock: &'a Clock,
    tracker: &'a TaskTracker,
    stop: &'a CancellationToken,
    engine: &'a crate::engine::Engine,
}

/// The deployment's default destinations (`PAGERDUTY_ROUTING_KEY`, `SLACK_CHANNEL_ID`).
fn default_destinations(cfg: &Config) -> Vec<Destination> {
    let mut destinations = Vec::new();
    if let Some(key) = &cfg.pagerduty_routing_key {
        destinations.push(Destination::Pagerduty {
            routing_key: key.expose().to_owned(),
        });
    }
    if let Some(channel) = &cfg.slack_channel_id {
        destinations.push(Destination::Slack {
            channel: channel.clone(),
        });
    }
    destinations
}

/// Starts the monitor and the notification dispatcher (roles `worker` and `all`).
fn spawn_workers(cfg: &Config, notifiers: Notifiers, w: &Workers<'_>) {
    let Workers {
        store,
        outbox,
        clock,
        tracker,
        stop,
        engine,
    } = *w;
    let destinations = default_destinations(cfg);
    tracker.spawn(monitor::run_monitor(
        store.clone(),
        MonitorSettings {
            defaults: monitor::Defaults { destinations },
            triggers: Some(engine.clone()),
            ..MonitorSettings::default()
        },
        outbox.clone(),
        clock.clone(),
        stop.clone(),
    ));
    let deliver: Arc<dyn monitor::Deliver> = Arc::new(notifiers);
    tracker.spawn(monitor::run_dispatcher(
        store.clone(),
        deliver,
        DispatchSettings {
            lease: cfg.dispatch_lease,
            public_url: cfg.notify.public_url.clone(),
            ..DispatchSettings::default()
        },
        outbox.clone(),
        clock.clone(),
        stop.clone(),
    ));
    // Ends expired and lost agent runs; guarded UPDATEs, so several workers may sweep.
    tracker.spawn(crate::gateway::sweep_runs(
        store.clone(),
        clock.clone(),
        stop.clone(),
    ));
    tracker.spawn(monitor::run_housekeeping(
        store.clone(),
        cfg.retention,
        Duration::from_secs(3600),
        clock.clone(),
        stop.clone(),
    ));
}

fn cfg_backend(cfg: &Config) -> &'static str {
    Backend::from_url(cfg.database_url.expose()).map_or("unknown", Backend::as_str)
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn termination_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
