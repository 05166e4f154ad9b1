//! Medic server integration tests: one binary, one module per feature.

/// Runs each store check once per backend (`<module>::sqlite::<check>` and
/// `<module>::postgres::<check>`, PostgreSQL when configured), so a failure names the backend.
/// A check is an async function of `&dyn Store`, or of the whole `&TestDb` when marked
/// `check(db)`.
macro_rules! conformance {
    ($($check:ident $(($with_db:ident))?),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let db = crate::db::sqlite().await;
                    conformance!(@call $check db $($with_db)?);
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some(db) = crate::db::postgres().await else { return };
                    conformance!(@call $check db $($with_db)?);
                }
            )*
        }
    };
    (@call $check:ident $db:ident) => { super::$check(&*$db.store).await };
    (@call $check:ident $db:ident db) => { super::$check(&$db).await };
}

mod agent_labels;
mod agent_runs;
mod agents;
mod alerting;
mod cli;
mod db;
mod gateway_strings;
mod http_auth;
mod http_authz;
mod http_bounds;
mod http_conn;
mod http_durability;
mod http_input;
mod http_jobs;
mod http_legacy;
mod http_ops;
mod http_playbooks;
mod http_ratelimit;
mod http_ratelimit_clients;
mod http_scripts;
mod http_services;
mod http_teams;
mod medic_cli;
mod migrations;
mod notify;
mod otel;
mod outage;
mod playbook_crash;
mod playbook_engine;
mod playbook_notices;
mod playbook_secrets;
mod playbook_server_scripts;
mod playbook_triggers;
mod recovery;
mod slack_four_eyes;
mod store;
mod store_agents;
mod store_alerting;
mod store_executions;
mod store_monitor;
mod store_playbooks;
mod store_scripts;
mod support;
mod support_recorder;
mod ui;
mod ui_browser;
