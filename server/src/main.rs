//! `medic-server`: parses configuration, then runs the chosen subcommand.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use medic_server::config::{ApiKeyCommand, Cli, Command, Config, SecretsCommand};
use medic_server::domain::{Scopes, Timestamp, apikey};
use medic_server::store::{NewApiKey, NewAuditEntry};
use medic_server::{server, telemetry};

/// The static (musl) build, which the container image ships, allocates with mimalloc: musl's
/// own allocator takes one global lock per call, which the runtime's worker threads then queue
/// on. The glibc build keeps glibc's allocator. docs/benchmarks.md has the two side by side.
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
            telemetry::init_logging(&cfg.log_level, cfg.log_format);
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
            match runtime.block_on(run(other, cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "medic-server failed");
                    eprintln!("medic-server: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
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
        }) => {
            let scopes = Scopes::parse_list(&scopes).map_err(anyhow::Error::msg)?;
            let expires_at = expires
                .map(|e| Timestamp::parse(&e).context("--expires must be an RFC 3339 timestamp"))
                .transpose()?;
            let store = server::open_store(&cfg).await?;
            store.migrate().await?;
            let generated = apikey::generate();
            let now = Timestamp::now();
            let by = "medic-server api-key create";
            let record = store
                .create_api_key(&NewApiKey {
                    audit: Some(NewAuditEntry {
                        action_type: "api_key_created".to_owned(),
                        actor: by.to_owned(),
                        service_id: None,
                        execution_id: None,
                        details: serde_json::json!({
                            "key_id": generated.id, "name": name, "scopes": scopes.list(),
                        }),
                        at: now,
                    }),
                    id: generated.id.clone(),
                    name,
                    digest: generated.digest,
                    scopes,
                    expires_at,
                    rate_limit_per_minute: rate_limit,
                    created_by: Some(by.to_owned()),
                    created_at: now,
                })
                .await?;
            store.close().await;
            println!("{}", generated.plaintext);
            eprintln!(
                "created API key {} ({}) with scopes {}; the key above is shown only once",
                record.id,
                record.name,
                record.scopes.to_list_string()
            );
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
    let addr: SocketAddr = match url {
        Some(u) => match u
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
        {
            Ok(a) => a,
            Err(_) => {
                eprintln!("healthcheck: --url must be host:port (IP address)");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => SocketAddr::from(([127, 0, 0, 1], cfg.bind.port())),
    };
    let probe = || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
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
