//! Upgrades keep what is stored: a database left at an earlier schema version, holding rows,
//! migrates to the current schema without losing or mangling them — including the SQLite
//! migrations that rebuild a table to change a CHECK constraint (`alerts` is referenced by
//! `deliveries`, so the rebuild must keep those references intact).

use std::str::FromStr;

use medic_server::domain::Timestamp;
use medic_server::store::{AgentRunStatus, AlertKind, AlertState};
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, Row};

use crate::db::{self, EmptyDb, TestDb};

static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");

/// The schema version the rows are written at: before run statuses were renamed and before
/// `run_refused` alerts.
const BEFORE: i64 = 6;

/// Rows as version 6 stored them: a service with a job alert and its delivery, an agent, an
/// approved script, and runs in the statuses that were renamed (`sent`, `skipped`).
/// `overriding` goes between an `INSERT`'s column list and `VALUES` (PostgreSQL identity
/// columns take an explicit id only with `OVERRIDING SYSTEM VALUE`).
fn old_rows(now: &str, overriding: &str) -> Vec<String> {
    vec![
        format!(
            "INSERT INTO services (id, heartbeat_name, name_key, interval_seconds, team, priority, \
             created_at, updated_at) {overriding} VALUES (1, 'agent:old-1', 'agent:old-1', 60, 'ops', 'p3', \
             {now}, {now})"
        ),
        format!(
            "INSERT INTO alerts (id, service_id, kind, name, state, dedup_key, created_at, run_id) \
             {overriding} VALUES (7, 1, 'job_failed', 'old job failed', 'open', 'medic-1-job_failed-r0', {now}, 'r0')"
        ),
        format!(
            r#"INSERT INTO deliveries (alert_id, event, channel, destination, next_attempt_at,
               created_at) VALUES (7, 'triggered', 'webhook',
               '{{"kind":"webhook","url":"https://hooks.example/x","secret":"0123456789abcdef"}}',
               {now}, {now})"#
        ),
        format!(
            "INSERT INTO agents (id, hostname, agent_version, os, arch, first_seen_at, \
             last_seen_at, service_id) VALUES ('old-1', 'old-1', '0.1.0', 'linux', 'x86_64', \
             {now}, {now}, 1)"
        ),
        format!(
            "INSERT INTO scripts (id, name, name_key, created_at) {overriding} \
             VALUES (3, 'fix', 'fix', {now})"
        ),
        format!(
            "INSERT INTO script_versions (script_id, version, interpreter, content, sha256, status, \
             created_by, created_at, decided_at) VALUES (3, 1, 'sh', 'true', '{}', 'approved', \
             'admin', {now}, {now})",
            "a".repeat(64)
        ),
        format!(
            "INSERT INTO agent_runs (id, agent_id, script_id, script_version, timeout_seconds, \
             status, requested_by, created_at, sent_at) VALUES ('run-sent', 'old-1', 3, 1, 30, \
             'sent', 'admin', {now}, {now})"
        ),
        format!(
            "INSERT INTO agent_runs (id, agent_id, script_id, script_version, timeout_seconds, \
             status, requested_by, created_at, sent_at, finished_at, skip_reason, skip_detail) \
             VALUES ('run-skipped', 'old-1', 3, 1, 30, 'skipped', 'admin', {now}, {now}, {now}, \
             'hash_mismatch', 'content differs')"
        ),
    ]
}

/// Opens the store (applying the later migrations) and checks the rows; returns the database,
/// which lives as long as the value.
async fn check_upgraded(empty: EmptyDb, backend: &str) -> TestDb {
    let db = empty.open().await;
    let store = &db.store;

    let sent = store
        .get_agent_run("run-sent")
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(sent.status, AgentRunStatus::Dispatched, "{backend}");
    assert!(
        sent.dispatched_at.is_some(),
        "{backend}: dispatch time kept"
    );
    let refused = store
        .get_agent_run("run-skipped")
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(refused.status, AgentRunStatus::Refused, "{backend}");
    assert_eq!(refused.refusal_reason.as_deref(), Some("hash_mismatch"));
    assert_eq!(refused.refusal_detail.as_deref(), Some("content differs"));

    let alert = store.get_alert(7).await.expect("read").expect("kept");
    assert_eq!(alert.kind, AlertKind::JobFailed, "{backend}");
    assert_eq!(alert.state, AlertState::Open, "{backend}");
    // The pending delivery is still joined to its alert (and its service).
    let later = Timestamp::from_millis(Timestamp::now().millis() + 86_400_000);
    let claimed = store
        .claim_deliveries(later, later, 10)
        .await
        .expect("claim deliveries");
    assert_eq!(claimed.len(), 1, "{backend}");
    assert_eq!(claimed[0].alert.alert_id, 7, "{backend}");
    assert_eq!(
        claimed[0].service.heartbeat_name, "agent:old-1",
        "{backend}"
    );
    db
}

#[tokio::test]
async fn sqlite_upgrade_keeps_runs_alerts_and_deliveries() {
    let empty = db::sqlite_empty();
    {
        let mut conn = SqliteConnectOptions::from_str(&empty.url)
            .expect("url")
            .create_if_missing(true)
            .foreign_keys(true)
            .connect()
            .await
            .expect("connect");
        SQLITE
            .run_to(BEFORE, &mut conn)
            .await
            .expect("migrate to 6");
        for sql in old_rows("1764547200000", "") {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        conn.close().await.expect("close");
    }
    let url = empty.url.clone();
    let _db = check_upgraded(empty, "sqlite").await;

    // The rebuilt tables keep their references and indexes, and take the new kind.
    let mut conn = SqliteConnectOptions::from_str(&url)
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let broken = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&mut conn)
        .await
        .expect("foreign key check");
    assert!(broken.is_empty(), "{} broken references", broken.len());
    let indexes: Vec<String> = sqlx::query(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name IN \
         ('alerts', 'alert_suppressions', 'agent_runs') AND sql IS NOT NULL ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .expect("indexes")
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(
        indexes,
        [
            "agent_runs_by_agent",
            "agent_runs_open",
            "alert_suppressions_created",
            "alert_suppressions_service",
            "alerts_created",
            "alerts_live_dedup",
            "alerts_resolved",
            "alerts_service",
            "alerts_state",
        ]
    );
}

#[tokio::test]
async fn postgres_upgrade_keeps_runs_alerts_and_deliveries() {
    let Some(empty) = db::postgres_empty().await else {
        return;
    };
    {
        let mut conn = PgConnection::connect(&empty.url).await.expect("connect");
        POSTGRES
            .run_to(BEFORE, &mut conn)
            .await
            .expect("migrate to 6");
        for sql in old_rows("now()", "OVERRIDING SYSTEM VALUE") {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        conn.close().await.expect("close");
    }
    check_upgraded(empty, "postgres").await;
}
