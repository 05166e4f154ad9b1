//! Configuration: one typed [`Config`] from flags, environment and an optional TOML file.
//!
//! Precedence: command-line flag > environment variable > TOML file (`--config`, keys are the
//! snake_case field names below) > built-in default. Parsing and validation are pure functions
//! ([`Cli::parse_from_sources`], [`Settings::validate`]) so they can be unit-tested. Secrets are
//! wrapped in [`Secret`], whose `Debug` never prints the value.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

/// A string that must never be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RateLimiterType {
    Auto,
    Redis,
    Memory,
}

/// Which parts of the server a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The HTTP API only.
    Api,
    /// Background work only (monitor, dispatcher); still serves health and metrics.
    Worker,
    /// Everything (the default; what a single-node deployment wants).
    All,
}

#[derive(Debug, Parser)]
#[command(
    name = "medic-server",
    version,
    about = "Medic: heartbeat monitoring and auto-remediation server"
)]
pub struct Cli {
    /// Optional TOML file with settings (keys are the snake_case option names).
    #[arg(long, env = "MEDIC_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the configuration and exit 0, or print what is wrong and exit 64.
    CheckConfig,
    /// Probe a running server's /health/live on this host; exit 0 when it answers 200.
    Healthcheck {
        /// Address to probe: host:port, a host name or an IP address, optionally as
        /// http://host:port/ (default: 127.0.0.1 and the configured port).
        #[arg(long)]
        url: Option<String>,
    },
    /// Manage API keys directly in the database.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Print the OpenAPI document (what `/openapi.json` serves) and exit.
    Openapi,
    /// Manage playbook secrets directly in the database.
    #[command(subcommand)]
    Secrets(SecretsCommand),
}

#[derive(Debug, Clone, Subcommand)]
pub enum SecretsCommand {
    /// Re-encrypt every stored secret under MEDIC_SECRETS_KEY (values sealed under a key in
    /// MEDIC_SECRETS_OLD_KEYS are opened with it), in one transaction.
    Rotate,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key and print it once.
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated scopes: read, write, admin, run, ingest, agent.
        #[arg(long)]
        scopes: String,
        /// The person or service account the key belongs to (default: the key's name). An
        /// owner of that name that does not exist yet is created here: the only way to make
        /// one, since keys made through the API belong to their creator's owner.
        #[arg(long)]
        owner: Option<String>,
        /// For a new owner: person (default) or service (a service account).
        #[arg(long, default_value = "person")]
        owner_kind: String,
        /// For agent keys: a label an agent connecting with this key may carry, `name=value`
        /// (repeat for more).
        #[arg(long = "label", value_name = "NAME=VALUE")]
        labels: Vec<String>,
        /// Expiry as RFC 3339 (for example 2027-01-01T00:00:00Z).
        #[arg(long)]
        expires: Option<String>,
        /// Requests per minute allowed for this key (overrides the per-class limits).
        #[arg(long)]
        rate_limit: Option<u32>,
    },
    /// Link a key owner to their Slack user id (or unlink it), so that four-eyes treats their
    /// button presses in Slack as their own: they cannot approve in Slack what they requested.
    LinkSlack {
        /// The owner's name (as given to `create --owner`).
        #[arg(long)]
        owner: String,
        /// The Slack user id (`U024BE7LH`, from the user's Slack profile: "Copy member ID").
        #[arg(long, required_unless_present = "unlink", conflicts_with = "unlink")]
        slack_user_id: Option<String>,
        /// Remove the owner's link instead.
        #[arg(long)]
        unlink: bool,
    },
}

/// Every server setting. Each has a flag and an environment variable.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// TCP port to listen on (all interfaces).
    #[arg(long, env = "PORT", default_value_t = 8080, global = true)]
    pub port: u16,
    /// Full listen address; overrides PORT (for example 127.0.0.1:9000).
    #[arg(long, env = "MEDIC_BIND", global = true)]
    pub bind: Option<SocketAddr>,
    /// `sqlite://FILE` (default, created if missing) or `postgres://…`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://medic.db",
        global = true
    )]
    pub database_url: Secret,
    /// Maximum database connections per process.
    #[arg(
        long,
        env = "MEDIC_DB_MAX_CONNECTIONS",
        default_value_t = 16,
        global = true
    )]
    pub db_max_connections: u32,
    /// Redis for shared rate limiting (`redis://` or `rediss://`).
    #[arg(long, env = "REDIS_URL", global = true)]
    pub redis_url: Option<Secret>,
    /// Multiplexed Redis connections per process.
    #[arg(long, env = "REDIS_POOL_SIZE", default_value_t = 10, global = true)]
    pub redis_pool_size: usize,
    /// `auto` uses Redis when REDIS_URL is set and reachable, memory otherwise.
    #[arg(long, env = "MEDIC_RATE_LIMITER_TYPE", value_enum, default_value_t = RateLimiterType::Auto, global = true)]
    pub rate_limiter_type: RateLimiterType,
    /// Log filter (error, warn, info, debug, trace, or a tracing filter directive).
    #[arg(long, env = "MEDIC_LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,
    #[arg(long, env = "MEDIC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json, global = true)]
    pub log_format: LogFormat,
    /// A bootstrap admin credential (at least 32 characters), accepted as a Bearer token.
    #[arg(long, env = "MEDIC_ADMIN_API_KEY", global = true)]
    pub admin_api_key: Option<Secret>,
    /// Accept heartbeats, job signals, new service registrations and the v1 reads without an
    /// API key (migration path).
    #[arg(long, env = "MEDIC_ALLOW_ANONYMOUS_HEARTBEATS", default_value_t = false, global = true, action = clap::ArgAction::Set)]
    pub allow_anonymous_heartbeats: bool,
    /// Also let requests without a key change, deactivate or mute existing services through
    /// `POST /service/<name>` (needs MEDIC_ALLOW_ANONYMOUS_HEARTBEATS=true).
    #[arg(long, env = "MEDIC_ALLOW_ANONYMOUS_SERVICE_CHANGES", default_value_t = false, global = true, action = clap::ArgAction::Set)]
    pub allow_anonymous_service_changes: bool,
    /// Comma-separated CIDRs of proxies whose X-Forwarded-For is believed.
    #[arg(
        long,
        env = "MEDIC_TRUSTED_PROXIES",
        value_delimiter = ',',
        global = true
    )]
    pub trusted_proxies: Vec<String>,
    /// Comma-separated hosts that webhook targets may call (`*.example.com` matches
    /// subdomains). Empty: any public host. Never allows a private or internal address.
    #[arg(
        long,
        env = "MEDIC_ALLOWED_WEBHOOK_HOSTS",
        default_value = "",
        global = true
    )]
    pub allowed_webhook_hosts: String,
    /// Let webhook targets reach private, loopback and internal addresses. Only for receivers
    /// on a private network and for local testing: it turns off the SSRF guard's network checks.
    #[arg(long, env = "MEDIC_ALLOW_PRIVATE_WEBHOOK_TARGETS", default_value_t = false, global = true, action = clap::ArgAction::Set)]
    pub allow_private_webhook_targets: bool,
    /// Slack Web API base URL (`chat.postMessage` is appended).
    #[arg(
        long,
        env = "SLACK_API_URL",
        default_value = crate::notify::DEFAULT_SLACK_API_URL,
        global = true
    )]
    pub slack_api_url: String,
    /// Slack bot token (`xoxb-…`) used to post alert messages.
    #[arg(long, env = "SLACK_API_TOKEN", global = true)]
    pub slack_api_token: Option<Secret>,
    /// Slack channel id for alerts of teams without a Slack target (legacy default).
    #[arg(long, env = "SLACK_CHANNEL_ID", global = true)]
    pub slack_channel_id: Option<String>,
    /// Slack app signing secret: verifies `POST /v2/slack/interactions` (the Acknowledge
    /// button); without it that route refuses every request.
    #[arg(long, env = "SLACK_SIGNING_SECRET", global = true)]
    pub slack_signing_secret: Option<Secret>,
    /// Shared secret of the playbook webhook trigger
    /// (`POST /v2/webhooks/playbooks/{id}/trigger`); without it that route answers 503.
    #[arg(long, env = "MEDIC_WEBHOOK_SECRET", global = true)]
    pub webhook_secret: Option<Secret>,
    /// How old a signed webhook trigger's `X-Medic-Timestamp` may be, in seconds (either way).
    #[arg(
        long,
        env = "MEDIC_WEBHOOK_REPLAY_WINDOW_SECONDS",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..=86_400),
        global = true
    )]
    pub webhook_replay_window_seconds: u64,
    /// How long a web page session lasts at most, in hours.
    #[arg(long, env = "MEDIC_UI_SESSION_HOURS", default_value_t = 12,
        value_parser = clap::value_parser!(u64).range(1..=720), global = true)]
    pub ui_session_hours: u64,
    /// How long a web page session lasts without a request, in minutes.
    #[arg(long, env = "MEDIC_UI_SESSION_IDLE_MINUTES", default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=43_200), global = true)]
    pub ui_session_idle_minutes: u64,
    /// PagerDuty Events API v2 endpoint.
    #[arg(
        long,
        env = "PAGERDUTY_EVENTS_URL",
        default_value = crate::notify::DEFAULT_PAGERDUTY_EVENTS_URL,
        global = true
    )]
    pub pagerduty_events_url: String,
    /// PagerDuty routing key for alerts of teams without a PagerDuty target (legacy default).
    #[arg(long, env = "PAGERDUTY_ROUTING_KEY", global = true)]
    pub pagerduty_routing_key: Option<Secret>,
    /// The key that encrypts playbook secrets: base64 of exactly 32 bytes
    /// (`openssl rand -base64 32`). Without it `/v2/secrets` answers 503, and a server that holds
    /// secrets refuses to start.
    #[arg(long, env = "MEDIC_SECRETS_KEY", global = true)]
    pub secrets_key: Option<Secret>,
    /// Earlier secrets keys still accepted for reading during a rotation (comma-separated
    /// base64); `medic-server secrets rotate` re-encrypts everything under MEDIC_SECRETS_KEY.
    #[arg(long, env = "MEDIC_SECRETS_OLD_KEYS", global = true)]
    pub secrets_old_keys: Option<Secret>,
    /// The server's public base URL, for links in notifications (e.g. https://medic.example.com).
    #[arg(long, env = "MEDIC_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// Time limit on each notification request (Slack, PagerDuty, webhooks), in seconds.
    #[arg(
        long,
        env = "MEDIC_NOTIFY_TIMEOUT_SECONDS",
        default_value_t = 10,
        global = true
    )]
    pub notify_timeout_seconds: u64,
    /// How long a dispatcher holds a claimed notification before another replica may take it
    /// over (seconds); a crashed replica's notifications are delivered after this.
    #[arg(
        long,
        env = "MEDIC_DISPATCH_LEASE_SECONDS",
        default_value_t = 30,
        global = true
    )]
    pub dispatch_lease_seconds: u64,
    /// Playbook executions one service may start per hour before the circuit breaker opens
    /// (further executions are recorded as `skipped`).
    #[arg(
        long,
        env = "MEDIC_PLAYBOOK_BREAKER_PER_SERVICE",
        default_value_t = 5,
        global = true
    )]
    pub playbook_breaker_per_service: u32,
    /// Playbook executions that may start per hour in all, before the breaker opens.
    #[arg(
        long,
        env = "MEDIC_PLAYBOOK_BREAKER_GLOBAL",
        default_value_t = 50,
        global = true
    )]
    pub playbook_breaker_global: u32,
    /// How long an execution of a playbook with `approval: required` waits for a decision
    /// before it is `expired` (minutes).
    #[arg(
        long,
        env = "MEDIC_PLAYBOOK_APPROVAL_MAX_WAIT_MINUTES",
        default_value_t = 1440,
        global = true
    )]
    pub playbook_approval_max_wait_minutes: u64,
    /// How long a worker holds an execution it is driving before another worker may take it
    /// over (seconds); a webhook step holds it for its timeout on top.
    #[arg(
        long,
        env = "MEDIC_PLAYBOOK_LEASE_SECONDS",
        default_value_t = 60,
        global = true
    )]
    pub playbook_lease_seconds: u64,
    /// PostgreSQL: how often the engine looks for executions other replicas made due
    /// (seconds). SQLite has one process, which is always told.
    #[arg(
        long,
        env = "MEDIC_PLAYBOOK_RECHECK_SECONDS",
        default_value_t = 5,
        global = true
    )]
    pub playbook_recheck_seconds: u64,
    /// Comma-separated names of the registered scripts that playbook steps may run on the server
    /// itself (`on: server`). Empty (the default): none; such steps are refused.
    #[arg(long, env = "MEDIC_SERVER_SCRIPTS", default_value = "", global = true)]
    pub server_scripts: String,
    /// Where scripts run on the server keep their private run directories and run-id journal.
    #[arg(
        long,
        env = "MEDIC_SERVER_SCRIPTS_DIR",
        default_value = "medic-server-scripts",
        global = true
    )]
    pub server_scripts_dir: PathBuf,
    /// The unprivileged account scripts run on the server run as. Required when the server runs
    /// as root or holds CAP_SETUID/CAP_SETGID; never root.
    #[arg(long, env = "MEDIC_SERVER_SCRIPTS_USER", global = true)]
    pub server_scripts_user: Option<String>,
    /// How many steps the engine runs at once in this process (each execution runs one step
    /// at a time, so also how many executions it drives at once).
    #[arg(
        long,
        env = "MEDIC_PLAYBOOK_CONCURRENCY",
        default_value_t = 32,
        global = true
    )]
    pub playbook_concurrency: u32,
    /// Seconds past a run's timeout (counted from when it was sent or started), or past the
    /// agent's reconnection without it, after which a run the agent has not reported is `lost`.
    #[arg(
        long,
        env = "MEDIC_AGENT_RUN_GRACE_SECONDS",
        default_value_t = 60,
        global = true
    )]
    pub agent_run_grace_seconds: u64,
    /// Days of heartbeat events kept.
    #[arg(
        long,
        env = "MEDIC_RETENTION_HEARTBEAT_DAYS",
        default_value_t = 30,
        global = true
    )]
    pub retention_heartbeat_days: u32,
    /// Days of finished notification deliveries kept.
    #[arg(
        long,
        env = "MEDIC_RETENTION_DELIVERY_DAYS",
        default_value_t = 90,
        global = true
    )]
    pub retention_delivery_days: u32,
    /// Days resolved alerts (and suppression records) are kept.
    #[arg(
        long,
        env = "MEDIC_RETENTION_ALERT_DAYS",
        default_value_t = 90,
        global = true
    )]
    pub retention_alert_days: u32,
    /// Days of snapshots kept.
    #[arg(
        long,
        env = "MEDIC_RETENTION_SNAPSHOT_DAYS",
        default_value_t = 90,
        global = true
    )]
    pub retention_snapshot_days: u32,
    /// Days of audit entries kept.
    #[arg(
        long,
        env = "MEDIC_RETENTION_AUDIT_DAYS",
        default_value_t = 90,
        global = true
    )]
    pub retention_audit_days: u32,
    /// Largest accepted request body, in bytes.
    #[arg(
        long,
        env = "MEDIC_MAX_BODY_BYTES",
        default_value_t = 1_048_576,
        global = true
    )]
    pub max_body_bytes: usize,
    /// Per-request time limit, in seconds.
    #[arg(
        long,
        env = "MEDIC_REQUEST_TIMEOUT_SECONDS",
        default_value_t = 30,
        global = true
    )]
    pub request_timeout_seconds: u64,
    /// How long SIGTERM waits for in-flight requests, in seconds.
    #[arg(
        long,
        env = "MEDIC_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 25,
        global = true
    )]
    pub shutdown_grace_seconds: u64,
    /// How long a client may take to send a request's headers (and, on a kept-alive
    /// connection, to start the next request), in seconds; then the connection is closed.
    #[arg(
        long,
        env = "MEDIC_HEADER_READ_TIMEOUT_SECONDS",
        default_value_t = 10,
        global = true
    )]
    pub header_read_timeout_seconds: u64,
    /// A connection on which nothing is read or written and no request is running for this
    /// long is closed, in seconds.
    #[arg(
        long,
        env = "MEDIC_IDLE_TIMEOUT_SECONDS",
        default_value_t = 120,
        global = true
    )]
    pub idle_timeout_seconds: u64,
    /// Most open client connections; further clients wait in the listen backlog.
    #[arg(
        long,
        env = "MEDIC_MAX_CONNECTIONS",
        default_value_t = 4096,
        global = true
    )]
    pub max_connections: usize,
    /// Most open connections from one peer address (0: no per-address limit); connections
    /// above it are closed at once. Behind a proxy every client shares the proxy's address.
    #[arg(
        long,
        env = "MEDIC_MAX_CONNECTIONS_PER_IP",
        default_value_t = 256,
        global = true
    )]
    pub max_connections_per_ip: usize,
    /// How long a verified API key is cached (bounds how long a revocation takes to reach
    /// other replicas), in seconds.
    #[arg(
        long,
        env = "MEDIC_API_KEY_CACHE_SECONDS",
        default_value_t = 5,
        global = true
    )]
    pub api_key_cache_seconds: u64,
    /// How long `/health/ready` and `/health` wait for the database before answering 503, in
    /// milliseconds (keep it well under the readiness probe's timeout).
    #[arg(
        long,
        env = "MEDIC_READY_TIMEOUT_MS",
        default_value_t = 1_000,
        global = true
    )]
    pub ready_timeout_ms: u64,
    /// Most API keys (and unknown key ids) the key cache holds; reaching it clears the cache.
    #[arg(
        long,
        env = "MEDIC_API_KEY_CACHE_MAX_ENTRIES",
        default_value_t = 50_000,
        global = true
    )]
    pub api_key_cache_max_entries: usize,
    /// Most client buckets the in-memory rate limiter holds; beyond it new clients share one
    /// bucket per route class until buckets expire.
    #[arg(
        long,
        env = "MEDIC_RATE_LIMIT_MAX_BUCKETS",
        default_value_t = 100_000,
        global = true
    )]
    pub rate_limit_max_buckets: usize,
    /// Which parts of the server this process runs.
    #[arg(long, env = "MEDIC_ROLE", value_enum, default_value_t = Role::All, global = true)]
    pub role: Role,
    /// Requests per minute per client on POST /heartbeat and job signals.
    #[arg(
        long,
        env = "RATE_LIMIT_HEARTBEAT_REQUESTS",
        default_value_t = 6000,
        global = true
    )]
    pub rate_limit_heartbeat_requests: u32,
    /// Requests per minute per client on management routes.
    #[arg(
        long,
        env = "RATE_LIMIT_MANAGEMENT_REQUESTS",
        default_value_t = 600,
        global = true
    )]
    pub rate_limit_management_requests: u32,
    #[arg(
        long,
        env = "RATE_LIMIT_HEALTH_REQUESTS",
        default_value_t = 1000,
        global = true
    )]
    pub rate_limit_health_requests: u32,
    #[arg(
        long,
        env = "RATE_LIMIT_METRICS_REQUESTS",
        default_value_t = 100,
        global = true
    )]
    pub rate_limit_metrics_requests: u32,
    #[arg(
        long,
        env = "RATE_LIMIT_DOCS_REQUESTS",
        default_value_t = 60,
        global = true
    )]
    pub rate_limit_docs_requests: u32,
}

/// Settings after validation: typed, checked, ready to use.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub database_url: Secret,
    pub db_max_connections: u32,
    pub redis_url: Option<Secret>,
    pub redis_pool_size: usize,
    pub rate_limiter_type: RateLimiterType,
    pub log_level: String,
    pub log_format: LogFormat,
    pub admin_api_key: Option<Secret>,
    pub allow_anonymous_heartbeats: bool,
    /// Anonymous `POST /service/<name>` (only with `allow_anonymous_heartbeats`).
    pub allow_anonymous_service_changes: bool,
    pub trusted_proxies: Vec<IpNet>,
    /// Webhook host allowlist ([`crate::notify::ssrf::check_url`]); empty allows any public host.
    pub allowed_webhook_hosts: Vec<String>,
    /// How notifications are delivered (endpoints, Slack token, webhook guard, timeout).
    pub notify: crate::notify::NotifySettings,
    /// Legacy default Slack channel (`SLACK_CHANNEL_ID`) for teams without a Slack target.
    pub slack_channel_id: Option<String>,
    /// Verifies Slack's interactivity callbacks.
    pub slack_signing_secret: Option<Secret>,
    /// The playbook webhook trigger's secret (`MEDIC_WEBHOOK_SECRET`).
    pub webhook_secret: Option<Secret>,
    /// The signed webhook trigger's replay window.
    pub webhook_replay_window: Duration,
    /// The web page's session lifetimes: absolute and idle.
    pub ui_session: Duration,
    pub ui_session_idle: Duration,
    /// Legacy default PagerDuty routing key (`PAGERDUTY_ROUTING_KEY`).
    pub pagerduty_routing_key: Option<Secret>,
    /// The playbook secrets keys (`MEDIC_SECRETS_KEY`, `MEDIC_SECRETS_OLD_KEYS`), if configured.
    pub secrets: Option<crate::playbook::secrets::Keyring>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// 0: no per-address limit.
    pub max_connections_per_ip: usize,
    pub api_key_cache: Duration,
    pub ready_timeout: Duration,
    pub api_key_cache_max_entries: usize,
    pub rate_limit_max_buckets: usize,
    pub role: Role,
    pub limits: RateLimits,
    pub dispatch_lease: Duration,
    pub agent_run_grace: Duration,
    pub retention: crate::store::Retention,
    /// The playbook engine (`MEDIC_PLAYBOOK_*`, and the webhook guard's settings).
    pub playbook: crate::engine::EngineSettings,
}

/// Requests per minute per client, by route class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub heartbeat: u32,
    pub management: u32,
    pub health: u32,
    pub metrics: u32,
    pub docs: u32,
}

/// Shortest accepted bootstrap admin key.
pub const MIN_ADMIN_KEY_LEN: usize = 32;

impl Settings {
    /// Checks everything that can be checked without connecting anywhere.
    pub fn validate(&self) -> Result<Config, Vec<String>> {
        let mut errors = Vec::new();
        let db = self.database_url.expose();
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            errors.push("DATABASE_URL must start with sqlite: or postgres://".to_owned());
        }
        if self.db_max_connections == 0 {
            errors.push("MEDIC_DB_MAX_CONNECTIONS must be at least 1".to_owned());
        }
        if db.starts_with("sqlite:") && self.role == Role::Api {
            errors.push(
                "MEDIC_ROLE=api runs no monitor, and SQLite allows one server process, so no \
                 alert would ever open: use MEDIC_ROLE=all with SQLite, or PostgreSQL to run \
                 api and worker processes apart"
                    .to_owned(),
            );
        }
        if self.allow_anonymous_service_changes && !self.allow_anonymous_heartbeats {
            errors.push(
                "MEDIC_ALLOW_ANONYMOUS_SERVICE_CHANGES needs MEDIC_ALLOW_ANONYMOUS_HEARTBEATS=true"
                    .to_owned(),
            );
        }
        if let Some(r) = &self.redis_url {
            let r = r.expose();
            if !(r.starts_with("redis://") || r.starts_with("rediss://")) {
                errors.push("REDIS_URL must start with redis:// or rediss://".to_owned());
            }
        }
        if self.rate_limiter_type == RateLimiterType::Redis && self.redis_url.is_none() {
            errors.push("MEDIC_RATE_LIMITER_TYPE=redis needs REDIS_URL".to_owned());
        }
        if self.redis_pool_size == 0 || self.redis_pool_size > 256 {
            errors.push("REDIS_POOL_SIZE must be between 1 and 256".to_owned());
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            errors.push(format!(
                "MEDIC_LOG_LEVEL {:?} is not a valid level or filter",
                self.log_level
            ));
        }
        if let Some(k) = &self.admin_api_key
            && k.expose().trim().len() < MIN_ADMIN_KEY_LEN
        {
            errors.push(format!(
                "MEDIC_ADMIN_API_KEY must be at least {MIN_ADMIN_KEY_LEN} characters"
            ));
        }
        let mut trusted = Vec::new();
        for raw in self.trusted_proxies.iter().map(|s| s.trim()) {
            if raw.is_empty() {
                continue;
            }
            match raw
                .parse::<IpNet>()
                .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from))
            {
                Ok(net) => trusted.push(net),
                Err(_) => errors.push(format!(
                    "MEDIC_TRUSTED_PROXIES: {raw:?} is not a CIDR or IP address"
                )),
            }
        }
        let notify = self.notify_settings(&mut errors);
        let slack_channel_id = non_empty(self.slack_channel_id.as_deref());
        let pagerduty_routing_key =
            non_empty(self.pagerduty_routing_key.as_ref().map(Secret::expose)).map(Secret);
        if slack_channel_id.is_some() && notify.slack_token.is_none() {
            errors.push("SLACK_CHANNEL_ID is set but SLACK_API_TOKEN is not".to_owned());
        }
        if !(1..=3600).contains(&self.dispatch_lease_seconds) {
            errors.push("MEDIC_DISPATCH_LEASE_SECONDS must be between 1 and 3600".to_owned());
        }
        if self.playbook_breaker_per_service == 0 {
            errors.push("MEDIC_PLAYBOOK_BREAKER_PER_SERVICE must be at least 1".to_owned());
        }
        if self.playbook_breaker_global == 0 {
            errors.push("MEDIC_PLAYBOOK_BREAKER_GLOBAL must be at least 1".to_owned());
        }
        if !(1..=43_200).contains(&self.playbook_approval_max_wait_minutes) {
            errors.push(
                "MEDIC_PLAYBOOK_APPROVAL_MAX_WAIT_MINUTES must be between 1 and 43200".to_owned(),
            );
        }
        if !(5..=3600).contains(&self.playbook_lease_seconds) {
            errors.push("MEDIC_PLAYBOOK_LEASE_SECONDS must be between 5 and 3600".to_owned());
        }
        if !(1..=3600).contains(&self.playbook_recheck_seconds) {
            errors.push("MEDIC_PLAYBOOK_RECHECK_SECONDS must be between 1 and 3600".to_owned());
        }
        if !(1..=4096).contains(&self.playbook_concurrency) {
            errors.push(format!(
                "MEDIC_PLAYBOOK_CONCURRENCY must be between 1 and 4096 (steps the engine runs at \
                 once), not {}",
                self.playbook_concurrency
            ));
        }
        if !(1..=86_400).contains(&self.agent_run_grace_seconds) {
            errors.push("MEDIC_AGENT_RUN_GRACE_SECONDS must be between 1 and 86400".to_owned());
        }
        for (name, days) in [
            (
                "MEDIC_RETENTION_HEARTBEAT_DAYS",
                self.retention_heartbeat_days,
            ),
            (
                "MEDIC_RETENTION_DELIVERY_DAYS",
                self.retention_delivery_days,
            ),
            ("MEDIC_RETENTION_ALERT_DAYS", self.retention_alert_days),
            (
                "MEDIC_RETENTION_SNAPSHOT_DAYS",
                self.retention_snapshot_days,
            ),
            ("MEDIC_RETENTION_AUDIT_DAYS", self.retention_audit_days),
        ] {
            if !(1..=36_500).contains(&days) {
                errors.push(format!("{name} must be between 1 and 36500"));
            }
        }
        if self.max_body_bytes < 1024 {
            errors.push("MEDIC_MAX_BODY_BYTES must be at least 1024".to_owned());
        }
        for (name, v) in [
            (
                "MEDIC_HEADER_READ_TIMEOUT_SECONDS",
                self.header_read_timeout_seconds,
            ),
            ("MEDIC_IDLE_TIMEOUT_SECONDS", self.idle_timeout_seconds),
        ] {
            if v == 0 {
                errors.push(format!("{name} must be at least 1"));
            }
        }
        if self.max_connections == 0 {
            errors.push("MEDIC_MAX_CONNECTIONS must be at least 1".to_owned());
        }
        if self.request_timeout_seconds == 0 {
            errors.push("MEDIC_REQUEST_TIMEOUT_SECONDS must be at least 1".to_owned());
        }
        if !(1..=60_000).contains(&self.ready_timeout_ms) {
            errors.push("MEDIC_READY_TIMEOUT_MS must be between 1 and 60000".to_owned());
        }
        if self.api_key_cache_max_entries == 0 {
            errors.push("MEDIC_API_KEY_CACHE_MAX_ENTRIES must be at least 1".to_owned());
        }
        if self.rate_limit_max_buckets == 0 {
            errors.push("MEDIC_RATE_LIMIT_MAX_BUCKETS must be at least 1".to_owned());
        }
        for (name, v) in [
            (
                "RATE_LIMIT_HEARTBEAT_REQUESTS",
                self.rate_limit_heartbeat_requests,
            ),
            (
                "RATE_LIMIT_MANAGEMENT_REQUESTS",
                self.rate_limit_management_requests,
            ),
            (
                "RATE_LIMIT_HEALTH_REQUESTS",
                self.rate_limit_health_requests,
            ),
            (
                "RATE_LIMIT_METRICS_REQUESTS",
                self.rate_limit_metrics_requests,
            ),
            ("RATE_LIMIT_DOCS_REQUESTS", self.rate_limit_docs_requests),
        ] {
            if v == 0 {
                errors.push(format!("{name} must be at least 1"));
            }
        }
        let secrets = self.secrets_keyring(&mut errors);
        let server_scripts = self.server_scripts(&mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        let playbook = crate::engine::EngineSettings {
            lease: Duration::from_secs(self.playbook_lease_seconds),
            recheck: Duration::from_secs(self.playbook_recheck_seconds),
            concurrency: self.playbook_concurrency as usize,
            machine: crate::playbook::machine::Settings {
                approval_max_wait: Duration::from_secs(
                    self.playbook_approval_max_wait_minutes * 60,
                ),
            },
            limits: crate::playbook::breaker::Limits {
                per_service: self.playbook_breaker_per_service,
                global: self.playbook_breaker_global,
            },
            allowed_hosts: notify.allowed_webhook_hosts.clone(),
            allow_private_targets: notify.allow_private_webhook_targets,
            server_scripts,
            ..crate::engine::EngineSettings::default()
        };
        Ok(Config {
            bind: self
                .bind
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], self.port))),
            database_url: self.database_url.clone(),
            db_max_connections: self.db_max_connections,
            redis_url: self.redis_url.clone(),
            redis_pool_size: self.redis_pool_size,
            rate_limiter_type: self.rate_limiter_type,
            log_level: self.log_level.clone(),
            log_format: self.log_format,
            admin_api_key: self.admin_api_key.clone(),
            allow_anonymous_heartbeats: self.allow_anonymous_heartbeats,
            allow_anonymous_service_changes: self.allow_anonymous_service_changes,
            trusted_proxies: trusted,
            allowed_webhook_hosts: crate::notify::ssrf::parse_allowlist(
                &self.allowed_webhook_hosts,
            ),
            notify,
            slack_channel_id,
            slack_signing_secret: non_empty(self.slack_signing_secret.as_ref().map(Secret::expose))
                .map(Secret),
            webhook_secret: non_empty(self.webhook_secret.as_ref().map(Secret::expose)).map(Secret),
            webhook_replay_window: Duration::from_secs(self.webhook_replay_window_seconds),
            ui_session: Duration::from_secs(self.ui_session_hours * 3_600),
            ui_session_idle: Duration::from_secs(self.ui_session_idle_minutes * 60),
            pagerduty_routing_key,
            secrets,
            max_body_bytes: self.max_body_bytes,
            request_timeout: Duration::from_secs(self.request_timeout_seconds),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_seconds),
            header_read_timeout: Duration::from_secs(self.header_read_timeout_seconds),
            idle_timeout: Duration::from_secs(self.idle_timeout_seconds),
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            api_key_cache: Duration::from_secs(self.api_key_cache_seconds),
            ready_timeout: Duration::from_millis(self.ready_timeout_ms),
            api_key_cache_max_entries: self.api_key_cache_max_entries,
            rate_limit_max_buckets: self.rate_limit_max_buckets,
            role: self.role,
            limits: RateLimits {
                heartbeat: self.rate_limit_heartbeat_requests,
                management: self.rate_limit_management_requests,
                health: self.rate_limit_health_requests,
                metrics: self.rate_limit_metrics_requests,
                docs: self.rate_limit_docs_requests,
            },
            dispatch_lease: Duration::from_secs(self.dispatch_lease_seconds),
            agent_run_grace: Duration::from_secs(self.agent_run_grace_seconds),
            retention: crate::store::Retention {
                heartbeats_ms: days_ms(self.retention_heartbeat_days),
                deliveries_ms: days_ms(self.retention_delivery_days),
                resolved_alerts_ms: days_ms(self.retention_alert_days),
                snapshots_ms: days_ms(self.retention_snapshot_days),
                audit_ms: days_ms(self.retention_audit_days),
            },
            playbook,
        })
    }
}

impl Settings {
    /// What may run on the server itself, or `None` when `MEDIC_SERVER_SCRIPTS` is empty.
    fn server_scripts(
        &self,
        errors: &mut Vec<String>,
    ) -> Option<crate::engine::local::ServerScriptSettings> {
        let mut allow = std::collections::BTreeSet::new();
        for name in self.server_scripts.split(',').map(str::trim) {
            if name.is_empty() {
                continue;
            }
            match medic_protocol::validate::validate_script_name(name) {
                Ok(()) => {
                    allow.insert(name.to_owned());
                }
                Err(e) => errors.push(format!("MEDIC_SERVER_SCRIPTS: {name:?}: {e}")),
            }
        }
        if let Some(user) = &self.server_scripts_user
            && (user.is_empty() || user == "root")
        {
            errors.push("MEDIC_SERVER_SCRIPTS_USER must name an unprivileged account".to_owned());
        }
        (!allow.is_empty()).then(|| crate::engine::local::ServerScriptSettings {
            allow,
            dir: self.server_scripts_dir.clone(),
            user: self.server_scripts_user.clone(),
        })
    }

    /// The secrets keyring, or `None` when `MEDIC_SECRETS_KEY` is unset or empty; a bad key is
    /// an error (naming the variable, never the value), as are old keys without a current one.
    fn secrets_keyring(
        &self,
        errors: &mut Vec<String>,
    ) -> Option<crate::playbook::secrets::Keyring> {
        let current = non_empty(self.secrets_key.as_ref().map(Secret::expose));
        let old = non_empty(self.secrets_old_keys.as_ref().map(Secret::expose));
        let Some(current) = current else {
            if old.is_some() {
                errors
                    .push("MEDIC_SECRETS_OLD_KEYS is set but MEDIC_SECRETS_KEY is not".to_owned());
            }
            return None;
        };
        match crate::playbook::secrets::Keyring::from_env_values(&current, old.as_deref()) {
            Ok(ring) => Some(ring),
            Err(e) => {
                errors.push(e.to_string());
                None
            }
        }
    }
}

fn days_ms(days: u32) -> i64 {
    i64::from(days) * 86_400_000
}

/// Longest accepted `MEDIC_NOTIFY_TIMEOUT_SECONDS`.
pub const MAX_NOTIFY_TIMEOUT_SECONDS: u64 = 300;

impl Settings {
    /// The notification settings, with a message in `errors` for each bad value. Empty values
    /// (as container environments often set) count as unset.
    fn notify_settings(&self, errors: &mut Vec<String>) -> crate::notify::NotifySettings {
        let mut http_url = |name: &str, raw: &str| -> String {
            let raw = raw.trim();
            match url::Url::parse(raw) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => errors.push(format!("{name} must be an http:// or https:// URL")),
            }
            raw.trim_end_matches('/').to_owned()
        };
        let slack_api_url = http_url("SLACK_API_URL", &self.slack_api_url);
        let pagerduty_events_url = http_url("PAGERDUTY_EVENTS_URL", &self.pagerduty_events_url);
        let public_url =
            non_empty(self.public_url.as_deref()).map(|u| http_url("MEDIC_PUBLIC_URL", &u));
        if self.notify_timeout_seconds == 0
            || self.notify_timeout_seconds > MAX_NOTIFY_TIMEOUT_SECONDS
        {
            errors.push(format!(
                "MEDIC_NOTIFY_TIMEOUT_SECONDS must be between 1 and {MAX_NOTIFY_TIMEOUT_SECONDS}"
            ));
        }
        crate::notify::NotifySettings {
            slack_api_url,
            slack_token: non_empty(self.slack_api_token.as_ref().map(Secret::expose)),
            pagerduty_events_url,
            allowed_webhook_hosts: crate::notify::ssrf::parse_allowlist(
                &self.allowed_webhook_hosts,
            ),
            allow_private_webhook_targets: self.allow_private_webhook_targets,
            timeout: Duration::from_secs(self.notify_timeout_seconds),
            public_url,
        }
    }
}

fn non_empty(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

impl Config {
    /// A configuration for tests and embedding: SQLite at `database_url`, defaults elsewhere.
    pub fn for_database(database_url: &str) -> Self {
        let cli = Cli::parse_from_sources(["medic-server"], |_| None, None)
            .unwrap_or_else(|e| panic!("default settings must parse: {e}"));
        let mut cfg = cli
            .settings
            .validate()
            .unwrap_or_else(|e| panic!("default settings must validate: {e:?}"));
        cfg.database_url = Secret(database_url.to_owned());
        cfg
    }
}

/// Why the command line or file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Clap(#[from] clap::Error),
    #[error("cannot read config file {path}: {reason}")]
    File { path: String, reason: String },
}

impl Cli {
    /// Parses flags and environment (clap), with defaults supplied by the TOML `file_text` when
    /// given. `env` looks up environment variables (injectable for tests) — it is only used to
    /// find `MEDIC_CONFIG`; clap reads the rest of the environment itself.
    pub fn parse_from_sources<I, T>(
        args: I,
        env: impl Fn(&str) -> Option<String>,
        file_text: Option<&str>,
    ) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let mut cmd = Cli::command();
        let text = match file_text {
            Some(t) => Some(t.to_owned()),
            None => match config_path(&args, &env) {
                Some(path) => {
                    Some(
                        std::fs::read_to_string(&path).map_err(|e| ConfigError::File {
                            path: path.display().to_string(),
                            reason: e.to_string(),
                        })?,
                    )
                }
                None => None,
            },
        };
        if let Some(text) = text {
            let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::File {
                path: "config".into(),
                reason: e.to_string(),
            })?;
            let known: Vec<String> = cmd
                .get_arguments()
                .map(|a| a.get_id().as_str().to_owned())
                .collect();
            for (key, value) in table {
                if !known.contains(&key) || key == "config" {
                    return Err(ConfigError::File {
                        path: "config".into(),
                        reason: format!("unknown setting {key:?}"),
                    });
                }
                let value = match value {
                    toml::Value::String(s) => s,
                    toml::Value::Array(items) => items
                        .iter()
                        .map(|v| match v {
                            toml::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                    other => other.to_string(),
                };
                cmd = cmd.mut_arg(key, |a| a.default_value(value));
            }
        }
        let matches = hide_settings_that_do_not_apply(cmd).try_get_matches_from(args)?;
        Ok(Cli::from_arg_matches(&matches)?)
    }
}

/// The settings each subcommand reads; `serve` and `check-config` (which checks them all) read
/// every one, so only these are listed.
const SUBCOMMAND_SETTINGS: [(&[&str], &[&str]); 5] = [
    (&["healthcheck"], &["config", "port", "bind"]),
    (
        &["migrate"],
        &[
            "config",
            "database_url",
            "db_max_connections",
            "log_level",
            "log_format",
        ],
    ),
    (
        &["api-key", "create"],
        &[
            "config",
            "database_url",
            "db_max_connections",
            "log_level",
            "log_format",
        ],
    ),
    (&["openapi"], &[]),
    (
        &["api-key", "link-slack"],
        &[
            "config",
            "database_url",
            "db_max_connections",
            "log_level",
            "log_format",
        ],
    ),
];

/// Keeps every setting accepted everywhere (so a shared environment or `--config` file never
/// breaks a subcommand) but leaves those a subcommand does not read out of its `--help`.
fn hide_settings_that_do_not_apply(mut cmd: clap::Command) -> clap::Command {
    let settings: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set())
        .cloned()
        .collect();
    // A subcommand that already has a global setting keeps it when clap copies the globals
    // down, so a hidden copy stays hidden (and still sets the same value).
    let hide = |mut sc: clap::Command, keep: &[&str]| {
        for a in &settings {
            if !keep.contains(&a.get_id().as_str()) {
                sc = sc.arg(a.clone().hide(true));
            }
        }
        sc
    };
    // A parent of several listed subcommands (`api-key`) is given the hidden copies once.
    let mut parents: Vec<&str> = Vec::new();
    for (path, keep) in SUBCOMMAND_SETTINGS {
        cmd = match path {
            [name] => cmd.mut_subcommand(*name, |sc| hide(sc, keep)),
            [name, child] => {
                let first = !parents.contains(name);
                parents.push(name);
                cmd.mut_subcommand(*name, |sc| {
                    let sc = if first { hide(sc, keep) } else { sc };
                    sc.mut_subcommand(*child, |c| hide(c, keep))
                })
            }
            _ => cmd,
        };
    }
    cmd
}

fn config_path(
    args: &[std::ffi::OsString],
    env: &impl Fn(&str) -> Option<String>,
) -> Option<PathBuf> {
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    env("MEDIC_CONFIG").map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], file: Option<&str>) -> Result<Cli, ConfigError> {
        let mut full = vec!["medic-server"];
        full.extend_from_slice(args);
        Cli::parse_from_sources(full, |_| None, file)
    }

    #[test]
    fn defaults_run_on_sqlite_port_8080() {
        let cfg = parse(&[], None).unwrap().settings.validate().unwrap();
        assert_eq!(cfg.bind.to_string(), "0.0.0.0:8080");
        assert_eq!(cfg.database_url.expose(), "sqlite://medic.db");
        assert_eq!(cfg.limits.health, 1000);
        assert_eq!(cfg.limits.metrics, 100);
        assert_eq!(cfg.limits.docs, 60);
        assert_eq!(cfg.role, Role::All);
    }

    #[test]
    fn playbook_concurrency_is_bounded_with_a_clear_message() {
        let cfg = parse(&[], None).unwrap().settings.validate().unwrap();
        assert_eq!(cfg.playbook.concurrency, 32);
        let cfg = parse(&["--playbook-concurrency", "4096"], None)
            .unwrap()
            .settings
            .validate()
            .unwrap();
        assert_eq!(cfg.playbook.concurrency, 4096);
        for bad in ["0", "4097"] {
            let errors = parse(&["--playbook-concurrency", bad], None)
                .unwrap()
                .settings
                .validate()
                .unwrap_err();
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains("MEDIC_PLAYBOOK_CONCURRENCY")
                        && e.contains("between 1 and 4096")
                        && e.contains(bad)),
                "{errors:?}"
            );
        }
    }

    #[test]
    fn file_supplies_defaults_and_flags_win() {
        let file = "port = 9000\nlog_format = \"text\"\ntrusted_proxies = [\"10.0.0.0/8\", \"192.168.1.1\"]\n";
        let cfg = parse(&[], Some(file)).unwrap().settings.validate().unwrap();
        assert_eq!(cfg.bind.port(), 9000);
        assert_eq!(cfg.log_format, LogFormat::Text);
        assert_eq!(cfg.trusted_proxies.len(), 2);
        let cfg = parse(&["--port", "7000"], Some(file))
            .unwrap()
            .settings
            .validate()
            .unwrap();
        assert_eq!(cfg.bind.port(), 7000);
    }

    #[test]
    fn anonymous_service_changes_need_anonymous_heartbeats() {
        let cfg = parse(&[], None).unwrap().settings.validate().unwrap();
        assert!(!cfg.allow_anonymous_heartbeats && !cfg.allow_anonymous_service_changes);
        let alone = parse(&["--allow-anonymous-service-changes", "true"], None)
            .unwrap()
            .settings
            .validate()
            .unwrap_err();
        assert!(
            alone
                .iter()
                .any(|e| e.contains("MEDIC_ALLOW_ANONYMOUS_SERVICE_CHANGES")),
            "{alone:?}"
        );
        let both = parse(
            &[
                "--allow-anonymous-heartbeats",
                "true",
                "--allow-anonymous-service-changes",
                "true",
            ],
            None,
        )
        .unwrap()
        .settings
        .validate()
        .unwrap();
        assert!(both.allow_anonymous_service_changes);
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        assert!(parse(&[], Some("prot = 1\n")).is_err());
    }

    #[test]
    fn validation_lists_every_problem() {
        let cli = parse(
            &[
                "--database-url",
                "mysql://x",
                "--trusted-proxies",
                "10.0.0.0/8,nonsense",
                "--admin-api-key",
                "short",
                "--rate-limiter-type",
                "redis",
                "--rate-limit-docs-requests",
                "0",
            ],
            None,
        )
        .unwrap();
        let errors = cli.settings.validate().unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("DATABASE_URL")));
        assert!(errors.iter().any(|e| e.contains("nonsense")));
        assert!(errors.iter().any(|e| e.contains("REDIS_URL")));
    }

    #[test]
    fn secrets_keys_are_checked_and_never_printed() {
        // 32 bytes of 0x07 and of 0x08, base64.
        let key = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
        let old = "CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg=";
        let cfg = parse(&["--secrets-key", key, "--secrets-old-keys", old], None)
            .unwrap()
            .settings
            .validate()
            .unwrap();
        let ring = cfg.secrets.as_ref().expect("keyring");
        let sealed = crate::playbook::secrets::Keyring::from_env_values(old, None)
            .unwrap()
            .seal("A", &crate::playbook::secrets::SecretValue::new("v"));
        assert_eq!(ring.open("A", &sealed).unwrap().expose(), "v");
        assert!(!format!("{cfg:?}").contains(key));
        let unset = parse(&[], None).unwrap().settings.validate().unwrap();
        assert!(unset.secrets.is_none());
        let errors = parse(&["--secrets-key", "c2hvcnQ="], None)
            .unwrap()
            .settings
            .validate()
            .unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("MEDIC_SECRETS_KEY") && e.contains("32 bytes")),
            "{errors:?}"
        );
        let errors = parse(&["--secrets-old-keys", old], None)
            .unwrap()
            .settings
            .validate()
            .unwrap_err();
        assert!(
            errors.iter().any(|e| e.contains("MEDIC_SECRETS_OLD_KEYS")),
            "{errors:?}"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let cli = parse(
            &[
                "--admin-api-key",
                "super-secret-value-that-is-long-enough",
                "--slack-api-token",
                "xoxb-super-secret-token",
                "--slack-channel-id",
                "C0123",
                "--pagerduty-routing-key",
                "super-secret-routing-key",
            ],
            None,
        )
        .unwrap();
        let shown = format!("{:?}", cli.settings);
        assert!(!shown.contains("super-secret"), "{shown}");
        let cfg = cli.settings.validate().unwrap();
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("super-secret"), "{shown}");
        assert_eq!(
            cfg.notify.slack_token.as_deref(),
            Some("xoxb-super-secret-token")
        );
        assert_eq!(
            cfg.pagerduty_routing_key.as_ref().map(Secret::expose),
            Some("super-secret-routing-key")
        );
    }

    #[test]
    fn notification_defaults_and_overrides() {
        let cfg = parse(&[], None).unwrap().settings.validate().unwrap();
        assert_eq!(cfg.notify.slack_api_url, "https://slack.com/api");
        assert_eq!(
            cfg.notify.pagerduty_events_url,
            "https://events.pagerduty.com/v2/enqueue"
        );
        assert_eq!(cfg.notify.slack_token, None);
        assert_eq!(cfg.notify.timeout, Duration::from_secs(10));
        assert!(!cfg.notify.allow_private_webhook_targets);
        assert_eq!(cfg.notify.public_url, None);
        assert_eq!(cfg.slack_channel_id, None);
        assert!(cfg.pagerduty_routing_key.is_none());

        let file = "slack_api_url = \"http://127.0.0.1:9/api/\"\npublic_url = \"https://medic.example.com/\"\nallow_private_webhook_targets = true\nnotify_timeout_seconds = 3\nallowed_webhook_hosts = \"hooks.example.com\"\n";
        let cfg = parse(
            &["--slack-api-token", "  ", "--slack-channel-id", ""],
            Some(file),
        )
        .unwrap()
        .settings
        .validate()
        .unwrap();
        assert_eq!(cfg.notify.slack_api_url, "http://127.0.0.1:9/api");
        assert_eq!(
            cfg.notify.public_url.as_deref(),
            Some("https://medic.example.com")
        );
        assert!(cfg.notify.allow_private_webhook_targets);
        assert_eq!(cfg.notify.timeout, Duration::from_secs(3));
        assert_eq!(cfg.notify.allowed_webhook_hosts, ["hooks.example.com"]);
        // Blank values, as container environments set them, are unset.
        assert_eq!(cfg.notify.slack_token, None);
        assert_eq!(cfg.slack_channel_id, None);
    }

    #[test]
    fn bad_notification_settings_are_reported() {
        let cli = parse(
            &[
                "--slack-api-url",
                "slack.com/api",
                "--pagerduty-events-url",
                "ftp://events.pagerduty.com",
                "--public-url",
                "medic.example.com",
                "--notify-timeout-seconds",
                "0",
                "--slack-channel-id",
                "C0123",
            ],
            None,
        )
        .unwrap();
        let errors = cli.settings.validate().unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:?}");
        for name in [
            "SLACK_API_URL",
            "PAGERDUTY_EVENTS_URL",
            "MEDIC_PUBLIC_URL",
            "MEDIC_NOTIFY_TIMEOUT_SECONDS",
            "SLACK_API_TOKEN",
        ] {
            assert!(
                errors.iter().any(|e| e.contains(name)),
                "{name}: {errors:?}"
            );
        }
    }
}
