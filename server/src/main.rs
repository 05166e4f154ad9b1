//! `medic-server`: parses configuration, then runs the chosen subcommand.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use medic_server::config::{ApiKeyCommand, Cli, Command, Config, SecretsCommand};
use medic_server::domain::{OwnerId, OwnerKind, Scopes, Timestamp, apikey};
use medic_server::store::{NewApiKey, NewAuditEntry, NewKeyOwner};
use medic_server::{server, telemetry};

/// The static (musl) build, which the container image ships, allocates with mimalloc: musl's
/// own allocator takes one global lock per call, which the runtime's worker threads then queue
/// on. mimalloc's `override` feature makes it the C `malloc` as well, so SQLite allocates with it
/// too, and the image sets `MIMALLOC_ARENA_EAGER_COMMIT=0` (mimalloc reads its options from the
/// environment), which keeps its memory at the glibc build's. The glibc build keeps glibc's
/// allocator. docs/benchmarks.md has the builds side by side.
#[cfg(target_env = "musl")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for bad configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::parse_from_sources(std::env::args_os(), |k| std::env::var(k).ok(), None) {
        Ok(cli) => cli,
        Err(medic_server::config::ConfigError::Clap(e)) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
        Err(e) => {
            eprintln!("medic-server: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if matches!(cli.command, Some(Command::Openapi)) {
        // The document depends on no setting, so it prints without a valid configuration.
        return match medic_server::http::openapi().to_pretty_json() {
            Ok(doc) => {
                println!("{doc}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("medic-server: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cfg = match cli.settings.validate() {
        Ok(cfg) => cfg,
        Err(errors) => {
            eprintln!("medic-server: invalid configuration:");
            for e in errors {
                eprintln!("  - {e}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    match command {
        Command::CheckConfig => {
            println!("configuration OK");
            println!("  listen:       {}", cfg.bind);
            println!("  database:     {}", backend_name(&cfg));
            println!(
                "  redis:        {}",
                if cfg.redis_url.is_some() {
                    "configured"
                } else {
                    "not configured"
                }
            );
            println!("  role:         {:?}", cfg.role);
            println!("  anonymous v1: {}", cfg.allow_anonymous_heartbeats);
            println!(
                "  anonymous service changes: {}",
                cfg.allow_anonymous_service_changes
            );
            println!(
                "  slack:        {}",
                match (&cfg.notify.slack_token, &cfg.slack_channel_id) {
                    (None, _) => "not configured".to_owned(),
                    (Some(_), None) => "token set, no default channel".to_owned(),
                    (Some(_), Some(c)) => format!("token set, default channel {c}"),
                }
            );
            println!(
                "  pagerduty:    {}",
                if cfg.pagerduty_routing_key.is_some() {
                    "default routing key set"
                } else {
                    "no default routing key"
                }
            );
            println!(
                "  webhooks:     {}",
                if cfg.notify.allow_private_webhook_targets {
                    "private targets ALLOWED (MEDIC_ALLOW_PRIVATE_WEBHOOK_TARGETS)".to_owned()
                } else if cfg.notify.allowed_webhook_hosts.is_empty() {
                    "any public host".to_owned()
                } else {
                    format!("only {}", cfg.notify.allowed_webhook_hosts.join(", "))
                }
            );
            println!(
                "  server scripts: {}",
                match &cfg.playbook.server_scripts {
                    None => "none (MEDIC_SERVER_SCRIPTS)".to_owned(),
                    Some(s) => format!(
                        "{} in {}",
                        s.allow.iter().cloned().collect::<Vec<_>>().join(", "),
                        s.dir.display()
                    ),
                }
            );
            println!(
                "  secrets key:  {}",
                match &cfg.secrets {
                    None => "not configured (MEDIC_SECRETS_KEY)".to_owned(),
                    Some(k) => format!("key id {}", k.current_id()),
                }
            );
            ExitCode::SUCCESS
        }
        Command::Healthcheck { url } => healthcheck(&cfg, url.as_deref()),
        other => {
            // Scripts may run on this host: before any thread starts, make the server
            // non-dumpable (a script cannot read its memory or environment through /proc),
            // keep inherited descriptors from scripts, and drop the capabilities and groups
            // scripts would otherwise inherit — what the agent does for the same scripts.
            if matches!(other, Command::Serve)
                && cfg.playbook.server_scripts.is_some()
                && let Err(e) = medic_agent::exec::harden_process()
            {
                eprintln!("medic-server: cannot prepare to run scripts on the server: {e}");
                return ExitCode::FAILURE;
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("medic-server: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // Only the server exports traces (OTEL_EXPORTER_OTLP_ENDPOINT), never a one-off
            // command; the exporter's requests run on this runtime.
            let traces = {
                let _runtime = runtime.enter();
                let serve = matches!(other, Command::Serve);
                telemetry::init(&cfg.log_level, cfg.log_format, serve)
            };
            let code = match runtime.block_on(run(other, cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "medic-server failed");
                    eprintln!("medic-server: {e:#}");
                    ExitCode::FAILURE
                }
            };
            runtime.block_on(traces.shutdown());
            code
        }
    }
}

/// Which database a command wrote to, for people: an SQLite file's absolute path, or a
/// PostgreSQL server and database without the credentials.
fn database_description(cfg: &Config) -> String {
    let url = cfg.database_url.expose();
    if let Some(path) = server::sqlite_path(url) {
        let shown = std::path::absolute(&path).unwrap_or(path);
        return format!("the SQLite database {}", shown.display());
    }
    match url::Url::parse(url) {
        Ok(u) if u.scheme().starts_with("postgres") => format!(
            "the PostgreSQL database {} on {}:{}",
            u.path().trim_start_matches('/'),
            u.host_str().unwrap_or("localhost"),
            u.port().unwrap_or(5432)
        ),
        _ => format!("the {} database", backend_name(cfg)),
    }
}

fn backend_name(cfg: &Config) -> &'static str {
    medic_server::store::Backend::from_url(cfg.database_url.expose())
        .map_or("unknown", |b| b.as_str())
}

async fn run(command: Command, cfg: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let listener = tokio::net::TcpListener::bind(cfg.bind)
                .await
                .with_context(|| format!("cannot listen on {}", cfg.bind))?;
            let running = server::start(cfg, listener).await?;
            let trigger = running.trigger();
            tokio::spawn(async move {
                server::termination_signal().await;
                trigger.cancel();
            });
            running.wait().await;
            Ok(())
        }
        Command::Migrate => {
            let store = server::open_store(&cfg).await?;
            store.migrate().await?;
            store.close().await;
            tracing::info!(backend = backend_name(&cfg), "migrations applied");
            Ok(())
        }
        Command::ApiKey(ApiKeyCommand::Create {
            name,
            scopes,
            expires,
            rate_limit,
            owner,
            owner_kind,
            labels,
        }) => {
            let labels = labels
                .iter()
                .map(|l| {
                    l.split_once('=')
                        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                        .context("--label must be name=value")
                })
                .collect::<anyhow::Result<std::collections::BTreeMap<_, _>>>()?;
            let scopes = Scopes::parse_list(&scopes).map_err(anyhow::Error::msg)?;
            if !labels.is_empty() {
                if !scopes.allows(medic_server::domain::Scope::Agent) {
                    anyhow::bail!("--label is for keys with the agent scope");
                }
                medic_protocol::validate::validate_labels(&labels)
                    .map_err(|e| anyhow::anyhow!("--label: {e}"))?;
            }
            let expires_at = expires
                .map(|e| Timestamp::parse(&e).context("--expires must be an RFC 3339 timestamp"))
                .transpose()?;
            let kind =
                OwnerKind::parse(&owner_kind).context("--owner-kind must be person or service")?;
            let owner = owner.unwrap_or_else(|| name.clone()).trim().to_owned();
            if owner.is_empty() || owner.len() > 255 || owner.chars().any(char::is_control) {
                anyhow::bail!("--owner must be 1 to 255 printable characters");
            }
            let store = server::open_store(&cfg).await?;
            store.migrate().await?;
            let generated = apikey::generate();
            let now = Timestamp::now();
            let by = "medic-server api-key create";
            let audit = |action: &str, details: serde_json::Value| NewAuditEntry {
                action_type: action.to_owned(),
                actor: by.to_owned(),
                on_behalf_of: None,
                service_id: None,
                execution_id: None,
                details,
                at: now,
            };
            let (owner_id, new_owner) = match store.find_key_owner(&owner).await? {
                Some(o) => (o.id, None),
                None => {
                    let id = OwnerId::generate();
                    let new = NewKeyOwner {
                        audit: Some(audit(
                            "key_owner_created",
                            serde_json::json!({
                                "owner_id": id, "name": owner, "kind": kind.as_str(),
                            }),
                        )),
                        id: id.clone(),
                        name: owner.clone(),
                        kind,
                        created_by: by.to_owned(),
                        created_at: now,
                    };
                    (id, Some(new))
                }
            };
            let created_owner = new_owner.is_some();
            let record = store
                .create_api_key(&NewApiKey {
                    audit: Some(audit(
                        "api_key_created",
                        serde_json::json!({
                            "key_id": generated.id, "name": name, "scopes": scopes.list(),
                            "owner_id": owner_id,
                        }),
                    )),
                    id: generated.id.clone(),
                    name,
                    digest: generated.digest,
                    scopes,
                    expires_at,
                    rate_limit_per_minute: rate_limit,
                    created_by: Some(by.to_owned()),
                    created_at: now,
                    owner_id,
                    new_owner,
                    labels,
                })
                .await?;
            store.close().await;
            println!("{}", generated.plaintext);
            eprintln!(
                "created API key {} ({}) with scopes {} for {} owner {owner:?} ({}) in {}; the key \
                 above is shown only once",
                record.id,
                record.name,
                record.scopes.to_list_string(),
                if created_owner {
                    "the new"
                } else {
                    "the existing"
                },
                record.owner_id,
                database_description(&cfg)
            );
            Ok(())
        }
        Command::ApiKey(ApiKeyCommand::LinkSlack {
            owner,
            slack_user_id,
            unlink,
        }) => {
            let slack_user_id = if unlink {
                None
            } else {
                let id = slack_user_id.unwrap_or_default().trim().to_owned();
                if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric())
                {
                    anyhow::bail!(
                        "--slack-user-id must be a Slack user id such as U024BE7LH (letters and \
                         digits)"
                    );
                }
                Some(id)
            };
            let store = server::open_store(&cfg).await?;
            store.migrate().await?;
            let Some(found) = store.find_key_owner(owner.trim()).await? else {
                store.close().await;
                anyhow::bail!(
                    "no key owner is named {owner:?} in {}",
                    database_description(&cfg)
                );
            };
            let audit = NewAuditEntry {
                action_type: "key_owner_slack_user_linked".to_owned(),
                actor: "medic-server api-key link-slack".to_owned(),
                on_behalf_of: None,
                service_id: None,
                execution_id: None,
                details: serde_json::json!({
                    "owner_id": found.id, "name": found.name,
                    "slack_user_id": slack_user_id, "previous_slack_user_id": found.slack_user_id,
                }),
                at: Timestamp::now(),
            };
            let result = store
                .set_key_owner_slack_user(&found.id, slack_user_id.as_deref(), &audit)
                .await;
            store.close().await;
            match result {
                Ok(true) => {}
                Ok(false) => anyhow::bail!("the key owner {owner:?} was deleted meanwhile"),
                Err(medic_server::store::StoreError::Conflict(_)) => anyhow::bail!(
                    "the Slack user {} is already linked to another owner; unlink it there first",
                    slack_user_id.unwrap_or_default()
                ),
                Err(e) => return Err(e.into()),
            }
            match slack_user_id {
                Some(id) => eprintln!(
                    "linked owner {:?} ({}) to the Slack user {id} in {}",
                    found.name,
                    found.id,
                    database_description(&cfg)
                ),
                None => eprintln!(
                    "unlinked owner {:?} ({}) from Slack in {}",
                    found.name,
                    found.id,
                    database_description(&cfg)
                ),
            }
            Ok(())
        }
        Command::Secrets(SecretsCommand::Rotate) => {
            let Some(keyring) = cfg.secrets.as_ref() else {
                anyhow::bail!(
                    "MEDIC_SECRETS_KEY is not set: set the new key there and the old one in \
                     MEDIC_SECRETS_OLD_KEYS"
                );
            };
            let store = server::open_store(&cfg).await?;
            store.migrate().await?;
            let result =
                server::rotate_secrets(&*store, keyring, "medic-server secrets rotate").await;
            store.close().await;
            let summary = result.map_err(anyhow::Error::msg)?;
            println!(
                "re-encrypted {} of {} secrets under key id {}; every secret now opens with \
                 MEDIC_SECRETS_KEY alone",
                summary.resealed,
                summary.total,
                keyring.current_id()
            );
            Ok(())
        }
        Command::CheckConfig | Command::Healthcheck { .. } | Command::Openapi => Ok(()),
    }
}

/// `GET /health/live` on this host without an HTTP client dependency (for container
/// health checks in images that have no curl).
fn healthcheck(cfg: &Config, url: Option<&str>) -> ExitCode {
    let default_host = format!("127.0.0.1:{}", cfg.bind.port());
    // `host:port`, `http://host:port/`, a host name or an IP address (IPv6 in brackets).
    let host = url.map_or(default_host.as_str(), |u| {
        let u = u.trim();
        let u = u.strip_prefix("http://").unwrap_or(u);
        u.split('/').next().unwrap_or(u)
    });
    let port = cfg.bind.port();
    let resolve = |spec: &str| {
        std::net::ToSocketAddrs::to_socket_addrs(spec)
            .map(Iterator::collect::<Vec<_>>)
            .ok()
            .filter(|addrs| !addrs.is_empty())
    };
    // With its port, or without one (the configured port then).
    let resolved = resolve(host).or_else(|| {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<std::net::IpAddr>() {
            Ok(ip) => Some(vec![SocketAddr::new(ip, port)]),
            Err(_) => resolve(&format!("{bare}:{port}")),
        }
    });
    let Some(addrs) = resolved else {
        eprintln!(
            "healthcheck: cannot resolve --url {host:?}; give host:port, e.g. localhost:{port}"
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    let addr = addrs[0];
    let probe = || -> std::io::Result<String> {
        // A name may resolve to several addresses (localhost: ::1 and 127.0.0.1): the first
        // that accepts.
        let mut connected = Err(std::io::Error::other("no address"));
        for a in &addrs {
            connected = TcpStream::connect_timeout(a, Duration::from_secs(3));
            if connected.is_ok() {
                break;
            }
        }
        let mut s = connected?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    match probe() {
        Ok(head) if head.starts_with("HTTP/1.1 200") => ExitCode::SUCCESS,
        Ok(head) => {
            eprintln!(
                "healthcheck: unexpected answer: {}",
                head.lines().next().unwrap_or("")
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("healthcheck: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
