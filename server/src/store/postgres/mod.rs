//! The PostgreSQL store: for multi-replica deployments.
//!
//! Behaves exactly like the SQLite store (the conformance suite in `tests/it/store.rs` runs
//! against both); only the mechanics differ:
//!
//! - Timestamps are `timestamptz`; the server only ever writes whole milliseconds, so values
//!   round-trip exactly. Flags are `boolean`; snapshot payloads and audit details are `jsonb`
//!   (sent and read as text, cast in SQL).
//! - Case-insensitive matches of team and service name use `lower(… COLLATE "C")`, which folds
//!   ASCII only — exactly what SQLite's `lower()` does — so results do not depend on the
//!   cluster's locale. (Heartbeat names fold fully, in Rust, through `name_key`.)
//! - Several server replicas may write at once, so every read-modify-write locks what it is about
//!   to change: `FOR NO KEY UPDATE` on `services` rows (the strongest lock that still lets
//!   other transactions insert rows referencing the service — we never change a service's id)
//!   and `FOR UPDATE` on snapshots and job runs. A transaction that locks several services
//!   locks them in id order, so concurrent heartbeat batches cannot deadlock.
//! - [`Store::record_heartbeats`] takes a constant number of round trips whatever the batch
//!   size: one lookup-and-lock of every named service, one `INSERT … SELECT FROM unnest(…)` of
//!   all events, one `UPDATE … FROM unnest(…)` of `last_heartbeat_at`.

mod agents;
mod alerting;
mod runs;
mod scripts;
mod teams;

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder, Row, Transaction};

use super::sql::escape_like;
use super::*;
use crate::domain::run::{SignalStep, run_duration_ms, signal_heartbeat_status, signal_step};
use crate::domain::service::name_key;
use crate::domain::{Priority, Scopes, ServiceState, SnapshotAction, Timestamp};

/// Upper bound on any one statement, so a stuck query frees its connection. A migration that
/// needs longer starts with `SET LOCAL statement_timeout = 0` (each migration is a transaction).
const STATEMENT_TIMEOUT: &str = "30s";

pub struct PgStore {
    pool: PgPool,
    max: u32,
}

/// Opens a PostgreSQL store (without migrating).
pub async fn connect(url: &str, opts: &PoolOptions) -> StoreResult<Arc<dyn Store>> {
    Ok(Arc::new(PgStore::connect(url, opts).await?))
}

fn unavailable(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.message().to_owned())
        }
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// Appends an audit entry on `conn` (a pooled connection or an open transaction).
async fn insert_audit(conn: &mut sqlx::PgConnection, e: &NewAuditEntry) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_log (action_type, actor, service_id, execution_id, details, \
         created_at) VALUES ($1, $2, $3, $4, $5::jsonb, $6)",
    )
    .bind(&e.action_type)
    .bind(&e.actor)
    .bind(e.service_id.map(|s| s.0))
    .bind(e.execution_id)
    .bind(e.details.to_string())
    .bind(dt(e.at))
    .execute(conn)
    .await
    .map_err(unavailable)?;
    Ok(())
}

fn dt(t: Timestamp) -> DateTime<Utc> {
    t.datetime()
}

fn dto(t: Option<Timestamp>) -> Option<DateTime<Utc>> {
    t.map(Timestamp::datetime)
}

fn ts(r: &PgRow, col: &str) -> Result<Timestamp, sqlx::Error> {
    Ok(Timestamp::from_datetime(r.try_get(col)?))
}

fn tso(r: &PgRow, col: &str) -> Result<Option<Timestamp>, sqlx::Error> {
    Ok(r.try_get::<Option<DateTime<Utc>>, _>(col)?
        .map(Timestamp::from_datetime))
}

fn decode<T>(what: &str, v: Option<T>) -> Result<T, sqlx::Error> {
    v.ok_or_else(|| sqlx::Error::Decode(format!("invalid {what} in database").into()))
}

const SERVICE_COLUMNS: &str = "id, heartbeat_name, service_name, environment, active, \
    interval_seconds, threshold, grace_seconds, team, priority, runbook, state, muted_at, \
    muted_until, mute_reason, max_duration_ms, last_heartbeat_at, created_at, updated_at, \
    schedule, schedule_tz, renotify_seconds, parent_id, alert_on_failure";

const RUN_COLUMNS: &str = "id, service_id, run_id, status, started_at, finished_at, duration_ms, \
    exit_code, body, body_truncated";

const ALERT_COLUMNS: &str = "id, service_id, kind, name, state, dedup_key, \
    external_reference_id, alert_cycle, created_at, acknowledged_at, resolved_at, priority, team, \
    down_since, last_notified_at, acknowledged_by, resolved_by, resolve_reason, run_id, summary";

const SNAPSHOT_COLUMNS: &str = "id, service_id, action_type, snapshot_data::text AS snapshot_data, \
    actor, created_at, restored_at, restored_by";

const API_KEY_COLUMNS: &str = "id, name, digest, scopes, created_at, expires_at, revoked_at, \
    rate_limit_per_minute, created_by";

const AUDIT_COLUMNS: &str =
    "id, action_type, actor, service_id, execution_id, details::text AS details, created_at";

fn service_from_row(r: &PgRow) -> Result<Service, sqlx::Error> {
    let muted_at = tso(r, "muted_at")?;
    Ok(Service {
        id: ServiceId(r.try_get("id")?),
        heartbeat_name: r.try_get("heartbeat_name")?,
        service_name: r.try_get("service_name")?,
        environment: r.try_get("environment")?,
        active: r.try_get("active")?,
        interval_seconds: r.try_get("interval_seconds")?,
        threshold: r.try_get("threshold")?,
        grace_seconds: r.try_get("grace_seconds")?,
        team: r.try_get("team")?,
        priority: decode("priority", Priority::parse(r.try_get("priority")?))?,
        runbook: r.try_get("runbook")?,
        state: decode("state", ServiceState::parse(r.try_get("state")?))?,
        mute: match muted_at {
            Some(at) => Some(Mute {
                at,
                until: tso(r, "muted_until")?,
                reason: r.try_get("mute_reason")?,
            }),
            None => None,
        },
        max_duration_ms: r.try_get("max_duration_ms")?,
        last_heartbeat_at: tso(r, "last_heartbeat_at")?,
        created_at: ts(r, "created_at")?,
        updated_at: ts(r, "updated_at")?,
        monitoring: Monitoring {
            schedule: r
                .try_get::<Option<String>, _>("schedule")?
                .map(|cron| -> Result<ScheduleSpec, sqlx::Error> {
                    Ok(ScheduleSpec {
                        cron,
                        timezone: r
                            .try_get::<Option<String>, _>("schedule_tz")?
                            .unwrap_or_else(|| "UTC".to_owned()),
                    })
                })
                .transpose()?,
            renotify_seconds: r.try_get("renotify_seconds")?,
            parent_id: r.try_get::<Option<i64>, _>("parent_id")?.map(ServiceId),
            alert_on_failure: r.try_get("alert_on_failure")?,
        },
    })
}

fn run_from_row(r: &PgRow) -> Result<JobRun, sqlx::Error> {
    Ok(JobRun {
        id: r.try_get("id")?,
        service_id: ServiceId(r.try_get("service_id")?),
        run_id: r.try_get("run_id")?,
        status: decode("run status", RunStatus::parse(r.try_get("status")?))?,
        started_at: tso(r, "started_at")?,
        finished_at: tso(r, "finished_at")?,
        duration_ms: r.try_get("duration_ms")?,
        exit_code: r.try_get("exit_code")?,
        body: r.try_get("body")?,
        body_truncated: r.try_get("body_truncated")?,
    })
}

fn alert_from_row(r: &PgRow) -> Result<Alert, sqlx::Error> {
    Ok(Alert {
        alert_id: r.try_get("id")?,
        service_id: ServiceId(r.try_get("service_id")?),
        kind: decode("alert kind", AlertKind::parse(r.try_get("kind")?))?,
        alert_name: r.try_get("name")?,
        state: decode("alert state", AlertState::parse(r.try_get("state")?))?,
        dedup_key: r.try_get("dedup_key")?,
        external_reference_id: r.try_get("external_reference_id")?,
        alert_cycle: r.try_get("alert_cycle")?,
        created_at: ts(r, "created_at")?,
        acknowledged_at: tso(r, "acknowledged_at")?,
        resolved_at: tso(r, "resolved_at")?,
        details: AlertDetails {
            priority: r
                .try_get::<Option<String>, _>("priority")?
                .and_then(|p| Priority::parse(&p)),
            team: r.try_get("team")?,
            down_since: tso(r, "down_since")?,
            last_notified_at: tso(r, "last_notified_at")?,
            acknowledged_by: r.try_get("acknowledged_by")?,
            resolved_by: r.try_get("resolved_by")?,
            resolve_reason: r.try_get("resolve_reason")?,
            run_id: r.try_get("run_id")?,
            summary: r.try_get("summary")?,
        },
    })
}

fn snapshot_from_row(r: &PgRow) -> Result<Snapshot, sqlx::Error> {
    let data: String = r.try_get("snapshot_data")?;
    Ok(Snapshot {
        snapshot_id: SnapshotId(r.try_get("id")?),
        service_id: ServiceId(r.try_get("service_id")?),
        action_type: decode("action", SnapshotAction::parse(r.try_get("action_type")?))?,
        snapshot_data: serde_json::from_str(&data).map_err(|e| sqlx::Error::Decode(e.into()))?,
        actor: r.try_get("actor")?,
        created_at: ts(r, "created_at")?,
        restored_at: tso(r, "restored_at")?,
        restored_by: r.try_get("restored_by")?,
    })
}

fn api_key_from_row(r: &PgRow) -> Result<ApiKeyRecord, sqlx::Error> {
    let scopes: String = r.try_get("scopes")?;
    Ok(ApiKeyRecord {
        id: ApiKeyId(r.try_get("id")?),
        name: r.try_get("name")?,
        digest: r.try_get("digest")?,
        scopes: Scopes::parse_list(&scopes).map_err(|e| sqlx::Error::Decode(e.into()))?,
        created_at: ts(r, "created_at")?,
        expires_at: tso(r, "expires_at")?,
        revoked_at: tso(r, "revoked_at")?,
        rate_limit_per_minute: r
            .try_get::<Option<i64>, _>("rate_limit_per_minute")?
            .map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
        created_by: r.try_get("created_by")?,
    })
}

fn audit_from_row(r: &PgRow) -> Result<AuditEntry, sqlx::Error> {
    let details: String = r.try_get("details")?;
    Ok(AuditEntry {
        id: r.try_get("id")?,
        action_type: r.try_get("action_type")?,
        actor: r.try_get("actor")?,
        service_id: r.try_get::<Option<i64>, _>("service_id")?.map(ServiceId),
        execution_id: r.try_get("execution_id")?,
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
        timestamp: ts(r, "created_at")?,
    })
}

fn collect<T>(rows: &[PgRow], f: fn(&PgRow) -> Result<T, sqlx::Error>) -> StoreResult<Vec<T>> {
    rows.iter()
        .map(f)
        .collect::<Result<_, _>>()
        .map_err(unavailable)
}

impl PgStore {
    pub async fn connect(url: &str, opts: &PoolOptions) -> StoreResult<Self> {
        let conn = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(e.to_string()))?
            .application_name("medic-server")
            .options([("statement_timeout", STATEMENT_TIMEOUT)]);
        let max = opts.max_connections.max(1);
        let pool = PgPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(opts.acquire_timeout)
            // No ping before every acquire (a round trip per query); a connection that broke
            // while idle fails its next query once and is discarded, and idle connections are
            // recycled after a minute.
            .test_before_acquire(false)
            .idle_timeout(Duration::from_secs(60))
            .connect_with(conn)
            .await
            .map_err(unavailable)?;
        Ok(Self { pool, max })
    }

    /// The live service `id`, locked for the rest of `tx`.
    async fn lock_service(
        tx: &mut Transaction<'static, Postgres>,
        id: ServiceId,
    ) -> Result<Option<Service>, sqlx::Error> {
        let sql = format!(
            "SELECT {SERVICE_COLUMNS} FROM services WHERE id = $1 AND deleted_at IS NULL \
             FOR NO KEY UPDATE"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| service_from_row(&r))
            .transpose()
    }

    async fn insert_snapshot(
        tx: &mut Transaction<'static, Postgres>,
        service: &Service,
        action: SnapshotAction,
        actor: &str,
        at: Timestamp,
    ) -> Result<SnapshotId, sqlx::Error> {
        let data = serde_json::to_string(service).map_err(|e| sqlx::Error::Encode(e.into()))?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO snapshots (service_id, action_type, snapshot_data, actor, created_at) \
             VALUES ($1, $2, $3::jsonb, $4, $5) RETURNING id",
        )
        .bind(service.id.0)
        .bind(action.as_str())
        .bind(data)
        .bind(actor)
        .bind(dt(at))
        .fetch_one(&mut **tx)
        .await?;
        Ok(SnapshotId(id))
    }

    /// Writes every mutable column of `s` (used by update and restore).
    async fn write_service(
        tx: &mut Transaction<'static, Postgres>,
        s: &Service,
        undelete: bool,
    ) -> Result<(), sqlx::Error> {
        let sql = format!(
            "UPDATE services SET heartbeat_name = $1, name_key = $2, service_name = $3, \
             environment = $4, active = $5, interval_seconds = $6, threshold = $7, \
             grace_seconds = $8, team = $9, priority = $10, runbook = $11, state = $12, \
             muted_at = $13, muted_until = $14, mute_reason = $15, max_duration_ms = $16, \
             updated_at = $17, deadline_at = $17, schedule = $19, schedule_tz = $20, \
             renotify_seconds = $21, parent_id = $22, alert_on_failure = $23{} WHERE id = $18",
            if undelete { ", deleted_at = NULL" } else { "" }
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(&s.heartbeat_name)
            .bind(name_key(&s.heartbeat_name))
            .bind(&s.service_name)
            .bind(&s.environment)
            .bind(s.active)
            .bind(s.interval_seconds)
            .bind(s.threshold)
            .bind(s.grace_seconds)
            .bind(&s.team)
            .bind(s.priority.as_str())
            .bind(&s.runbook)
            .bind(s.state.as_str())
            .bind(s.mute.as_ref().map(|m| dt(m.at)))
            .bind(s.mute.as_ref().and_then(|m| dto(m.until)))
            .bind(s.mute.as_ref().and_then(|m| m.reason.clone()))
            .bind(s.max_duration_ms)
            .bind(dt(s.updated_at))
            .bind(s.id.0)
            .bind(s.monitoring.schedule.as_ref().map(|x| x.cron.clone()))
            .bind(s.monitoring.schedule.as_ref().map(|x| x.timezone.clone()))
            .bind(s.monitoring.renotify_seconds)
            .bind(s.monitoring.parent_id.map(|p| p.0))
            .bind(s.monitoring.alert_on_failure)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// `SELECT count(*)` and one page of `SELECT {columns}` over `table` with the same filter.
    async fn page<T>(
        &self,
        table: &str,
        columns: &str,
        filter: impl Fn(&mut QueryBuilder<Postgres>),
        order: &str,
        page: PageRequest,
        from_row: fn(&PgRow) -> Result<T, sqlx::Error>,
    ) -> StoreResult<Page<T>> {
        let mut count = QueryBuilder::<Postgres>::new(format!("SELECT count(*) FROM {table}"));
        filter(&mut count);
        let total: i64 = count
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        let mut qb = QueryBuilder::<Postgres>::new(format!("SELECT {columns} FROM {table}"));
        filter(&mut qb);
        qb.push(" ORDER BY ")
            .push(order)
            .push(" LIMIT ")
            .push_bind(i64::from(page.limit))
            .push(" OFFSET ")
            .push_bind(i64::from(page.offset));
        let rows = qb
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(Page {
            entries: collect(&rows, from_row)?,
            total_count: total,
        })
    }
}

fn push_service_filter(qb: &mut QueryBuilder<Postgres>, f: &ServiceFilter) {
    qb.push(" WHERE deleted_at IS NULL");
    if let Some(v) = &f.name_contains {
        let pattern = format!("%{}%", escape_like(&name_key(v)));
        qb.push(" AND name_key LIKE ")
            .push_bind(pattern)
            .push(" ESCAPE '\\'");
    }
    if let Some(v) = &f.service_name {
        qb.push(" AND lower(service_name COLLATE \"C\") = lower(")
            .push_bind(v.clone())
            .push(" COLLATE \"C\")");
    }
    if let Some(v) = &f.team {
        qb.push(" AND lower(team COLLATE \"C\") = lower(")
            .push_bind(v.clone())
            .push(" COLLATE \"C\")");
    }
    if let Some(v) = f.active {
        qb.push(" AND active = ").push_bind(v);
    }
    if let Some(v) = f.muted {
        qb.push(if v {
            " AND muted_at IS NOT NULL"
        } else {
            " AND muted_at IS NULL"
        });
    }
    if let Some(v) = f.state {
        qb.push(" AND state = ").push_bind(v.as_str());
    }
    if let Some(v) = f.priority {
        qb.push(" AND priority = ").push_bind(v.as_str());
    }
}

fn push_snapshot_filter(qb: &mut QueryBuilder<Postgres>, f: &SnapshotFilter) {
    qb.push(" WHERE true");
    if let Some(v) = f.service_id {
        qb.push(" AND service_id = ").push_bind(v.0);
    }
    if let Some(v) = f.action_type {
        qb.push(" AND action_type = ").push_bind(v.as_str());
    }
    if let Some(v) = f.start {
        qb.push(" AND created_at >= ").push_bind(dt(v));
    }
    if let Some(v) = f.end {
        qb.push(" AND created_at <= ").push_bind(dt(v));
    }
}

fn push_audit_filter(qb: &mut QueryBuilder<Postgres>, f: &AuditFilter) {
    qb.push(" WHERE true");
    if let Some(v) = f.execution_id {
        qb.push(" AND execution_id = ").push_bind(v);
    }
    if let Some(v) = f.service_id {
        qb.push(" AND service_id = ").push_bind(v.0);
    }
    if let Some(v) = &f.action_type {
        qb.push(" AND action_type = ").push_bind(v.clone());
    }
    if let Some(v) = &f.actor {
        qb.push(" AND actor = ").push_bind(v.clone());
    }
    if let Some(v) = f.start {
        qb.push(" AND created_at >= ").push_bind(dt(v));
    }
    if let Some(v) = f.end {
        qb.push(" AND created_at <= ").push_bind(dt(v));
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    fn pool_stats(&self) -> PoolStats {
        let size = self.pool.size();
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        PoolStats {
            size,
            idle: idle.min(size),
            max: self.max,
        }
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn record_heartbeats(
        &self,
        batch: &[NewHeartbeat],
    ) -> StoreResult<Vec<HeartbeatOutcome>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<&str> = batch.iter().map(|h| h.name_key.as_str()).collect();
        let statuses: Vec<&str> = batch.iter().map(|h| h.status.as_str()).collect();
        let run_ids: Vec<Option<&str>> = batch.iter().map(|h| h.run_id.as_deref()).collect();
        let times: Vec<DateTime<Utc>> = batch.iter().map(|h| dt(h.received_at)).collect();
        // One statement, so one round trip and an implicit transaction:
        // - `svc` locks every named live service in id order (concurrent batches, also from
        //   other replicas, lock in the same order, so they queue instead of deadlocking;
        //   NO KEY UPDATE does not conflict with the KEY SHARE lock the event insert's foreign
        //   key check takes);
        // - `ins` records the events of active services in input order (identity values are
        //   drawn in that order, so the sorted ids map one-to-one onto the accepted inputs);
        // - `upd` moves each service's last_heartbeat_at forward once.
        let rows = sqlx::query(
            "WITH input AS ( \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) \
                     WITH ORDINALITY AS t(name_key, status, run_id, received_at, ord)), \
             svc AS ( \
                 SELECT id, name_key, active, heartbeat_name FROM services \
                 WHERE name_key = ANY($1) AND deleted_at IS NULL \
                 ORDER BY id FOR NO KEY UPDATE), \
             ins AS ( \
                 INSERT INTO heartbeat_events (service_id, status, run_id, received_at) \
                 SELECT svc.id, i.status, i.run_id, i.received_at \
                 FROM input i JOIN svc ON svc.name_key = i.name_key \
                 WHERE svc.active ORDER BY i.ord RETURNING id), \
             upd AS ( \
                 UPDATE services s SET last_heartbeat_at = GREATEST(s.last_heartbeat_at, n.at), \
                     deadline_at = CASE WHEN s.state = 'up' AND s.threshold = 1 \
                         AND s.schedule IS NULL AND s.muted_at IS NULL \
                     THEN GREATEST(s.last_heartbeat_at, n.at) \
                         + s.interval_seconds * interval '1 second' \
                     ELSE LEAST(s.deadline_at, n.at) END \
                 FROM (SELECT svc.id, max(i.received_at) AS at \
                       FROM input i JOIN svc ON svc.name_key = i.name_key \
                       WHERE svc.active GROUP BY svc.id) n \
                 WHERE s.id = n.id) \
             SELECT false AS event, id, name_key, active, heartbeat_name FROM svc \
             UNION ALL \
             SELECT true, id, NULL, NULL, NULL FROM ins",
        )
        .bind(&keys)
        .bind(&statuses)
        .bind(&run_ids)
        .bind(&times)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let mut services: HashMap<String, (i64, bool, String)> = HashMap::new();
        let mut event_ids: Vec<i64> = Vec::with_capacity(batch.len());
        for r in &rows {
            let id: i64 = r.try_get("id").map_err(unavailable)?;
            if r.try_get::<bool, _>("event").map_err(unavailable)? {
                event_ids.push(id);
            } else {
                services.insert(
                    r.try_get("name_key").map_err(unavailable)?,
                    (
                        id,
                        r.try_get("active").map_err(unavailable)?,
                        r.try_get("heartbeat_name").map_err(unavailable)?,
                    ),
                );
            }
        }
        event_ids.sort_unstable();
        let accepted = batch
            .iter()
            .filter(|h| services.get(&h.name_key).is_some_and(|s| s.1))
            .count();
        if accepted != event_ids.len() {
            return Err(StoreError::Unavailable(format!(
                "inserted {} heartbeat events for {accepted} inputs",
                event_ids.len()
            )));
        }
        let mut ids = event_ids.into_iter();
        Ok(batch
            .iter()
            .map(|h| match services.get(&h.name_key) {
                None => HeartbeatOutcome::UnknownService,
                Some((_, false, name)) => HeartbeatOutcome::Inactive {
                    heartbeat_name: name.clone(),
                },
                Some((id, true, _)) => HeartbeatOutcome::Recorded {
                    service_id: ServiceId(*id),
                    event_id: ids.next().unwrap_or_default(),
                },
            })
            .collect())
    }

    async fn list_heartbeats(&self, q: &HeartbeatQuery) -> StoreResult<Vec<HeartbeatRow>> {
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT e.id, e.service_id, s.heartbeat_name, s.service_name, e.status, e.run_id, \
             e.received_at, s.team, s.priority FROM heartbeat_events e \
             JOIN services s ON s.id = e.service_id WHERE true",
        );
        if let Some(id) = q.service_id {
            qb.push(" AND e.service_id = ").push_bind(id.0);
        }
        if let Some(k) = &q.name_key {
            qb.push(" AND s.name_key = ").push_bind(k.clone());
        }
        if let Some(n) = &q.service_name {
            qb.push(" AND lower(s.service_name COLLATE \"C\") = lower(")
                .push_bind(n.clone())
                .push(" COLLATE \"C\")");
        }
        qb.push(" ORDER BY e.received_at DESC, e.id DESC LIMIT ")
            .push_bind(i64::from(q.limit))
            .push(" OFFSET ")
            .push_bind(i64::from(q.offset));
        let rows = qb
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        collect(&rows, |r| {
            Ok(HeartbeatRow {
                heartbeat_id: r.try_get("id")?,
                service_id: ServiceId(r.try_get("service_id")?),
                heartbeat_name: r.try_get("heartbeat_name")?,
                service_name: r.try_get("service_name")?,
                status: r.try_get("status")?,
                run_id: r.try_get("run_id")?,
                time: ts(r, "received_at")?,
                team: r.try_get("team")?,
                priority: decode("priority", Priority::parse(r.try_get("priority")?))?,
            })
        })
    }

    async fn record_job_signal(&self, sig: &JobSignal) -> StoreResult<JobSignalOutcome> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // Locking the service serialises signals for one service across replicas.
        let Some(service) = Self::lock_service(&mut tx, sig.service_id)
            .await
            .map_err(unavailable)?
        else {
            return Ok(JobSignalOutcome::UnknownService);
        };
        if !service.active {
            return Ok(JobSignalOutcome::Inactive {
                heartbeat_name: service.heartbeat_name,
            });
        }
        let at = dt(sig.at);
        let existing: Option<PgRow> = match (&sig.run_id, sig.kind) {
            (Some(run_id), _) => {
                let sql = format!(
                    "SELECT {RUN_COLUMNS} FROM job_runs WHERE service_id = $1 AND run_id = $2 \
                     FOR UPDATE"
                );
                sqlx::query(AssertSqlSafe(sql))
                    .bind(service.id.0)
                    .bind(run_id)
                    .fetch_optional(&mut *tx)
                    .await
            }
            (None, SignalKind::Start) => Ok(None),
            (None, _) => {
                let sql = format!(
                    "SELECT {RUN_COLUMNS} FROM job_runs WHERE service_id = $1 \
                     AND status = 'running' ORDER BY started_at DESC NULLS LAST, id DESC \
                     LIMIT 1 FOR UPDATE"
                );
                sqlx::query(AssertSqlSafe(sql))
                    .bind(service.id.0)
                    .fetch_optional(&mut *tx)
                    .await
            }
        }
        .map_err(unavailable)?;
        let existing = existing
            .map(|r| run_from_row(&r))
            .transpose()
            .map_err(unavailable)?;
        let new_run_id = || {
            sig.run_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
        };
        let existing = existing.map(|run| {
            let status = run.status;
            (run, status)
        });
        let run_row = match signal_step(sig.kind, sig.exit_code, existing) {
            SignalStep::Keep(run) => run,
            SignalStep::Start => {
                let sql = format!(
                    "INSERT INTO job_runs (service_id, run_id, status, started_at, body, \
                     body_truncated) VALUES ($1, $2, 'running', $3, $4, $5) \
                     RETURNING {RUN_COLUMNS}"
                );
                let r = sqlx::query(AssertSqlSafe(sql))
                    .bind(service.id.0)
                    .bind(new_run_id())
                    .bind(at)
                    .bind(&sig.body)
                    .bind(sig.body_truncated)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                run_from_row(&r).map_err(unavailable)?
            }
            SignalStep::Finish(run, finished_status) => {
                let duration = run_duration_ms(run.started_at, sig.at);
                let sql = format!(
                    "UPDATE job_runs SET status = $1, finished_at = $2, duration_ms = $3, \
                     exit_code = $4, body = coalesce($5, body), body_truncated = $6 \
                     WHERE id = $7 RETURNING {RUN_COLUMNS}"
                );
                let r = sqlx::query(AssertSqlSafe(sql))
                    .bind(finished_status.as_str())
                    .bind(at)
                    .bind(duration)
                    .bind(sig.exit_code)
                    .bind(&sig.body)
                    .bind(sig.body_truncated || run.body_truncated)
                    .bind(run.id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                run_from_row(&r).map_err(unavailable)?
            }
            SignalStep::RecordFinished(finished_status) => {
                let sql = format!(
                    "INSERT INTO job_runs (service_id, run_id, status, finished_at, exit_code, \
                     body, body_truncated) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     RETURNING {RUN_COLUMNS}"
                );
                let r = sqlx::query(AssertSqlSafe(sql))
                    .bind(service.id.0)
                    .bind(new_run_id())
                    .bind(finished_status.as_str())
                    .bind(at)
                    .bind(sig.exit_code)
                    .bind(&sig.body)
                    .bind(sig.body_truncated)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                run_from_row(&r).map_err(unavailable)?
            }
        };
        let status = signal_heartbeat_status(sig.kind, sig.exit_code);
        sqlx::query(
            "INSERT INTO heartbeat_events (service_id, status, run_id, received_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(service.id.0)
        .bind(status)
        .bind(&run_row.run_id)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        sqlx::query(
            "UPDATE services SET last_heartbeat_at = GREATEST(last_heartbeat_at, $1), \
             deadline_at = LEAST(deadline_at, $1) WHERE id = $2",
        )
        .bind(at)
        .bind(service.id.0)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(JobSignalOutcome::Recorded {
            service: Box::new(service),
            run: run_row,
        })
    }

    async fn recent_run_durations(&self, service: ServiceId, limit: u32) -> StoreResult<Vec<i64>> {
        sqlx::query_scalar(
            "SELECT duration_ms FROM job_runs WHERE service_id = $1 \
             AND finished_at IS NOT NULL AND duration_ms IS NOT NULL \
             ORDER BY finished_at DESC, id DESC LIMIT $2",
        )
        .bind(service.0)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)
    }

    async fn list_runs(&self, service: ServiceId, page: PageRequest) -> StoreResult<Page<JobRun>> {
        self.page(
            "job_runs",
            RUN_COLUMNS,
            |qb| {
                qb.push(" WHERE service_id = ").push_bind(service.0);
            },
            "coalesce(started_at, finished_at) DESC NULLS LAST, id DESC",
            page,
            run_from_row,
        )
        .await
    }

    async fn create_service(&self, new: &NewService) -> StoreResult<CreateOutcome> {
        let key = new.heartbeat_name.key();
        if let Some(s) = self.find_service(&key).await? {
            return Ok(CreateOutcome::Exists(s));
        }
        // Insert unless a live service holds the name; concurrent creators of one name all see
        // the winner's row instead of a conflict.
        let sql = format!(
            "INSERT INTO services (heartbeat_name, name_key, service_name, environment, \
             interval_seconds, threshold, grace_seconds, team, priority, runbook, \
             max_duration_ms, created_at, updated_at, deadline_at, schedule, schedule_tz, \
             renotify_seconds, parent_id, alert_on_failure) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, \
                     $12 + $5 * interval '1 second', $13, $14, $15, $16, $17) \
             ON CONFLICT (name_key) WHERE deleted_at IS NULL DO NOTHING \
             RETURNING {SERVICE_COLUMNS}"
        );
        let inserted = sqlx::query(AssertSqlSafe(sql))
            .bind(new.heartbeat_name.as_str())
            .bind(&key)
            .bind(&new.service_name)
            .bind(&new.environment)
            .bind(new.interval_seconds)
            .bind(new.threshold)
            .bind(new.grace_seconds)
            .bind(&new.team)
            .bind(new.priority.as_str())
            .bind(&new.runbook)
            .bind(new.max_duration_ms)
            .bind(dt(new.at))
            .bind(new.monitoring.schedule.as_ref().map(|x| x.cron.clone()))
            .bind(new.monitoring.schedule.as_ref().map(|x| x.timezone.clone()))
            .bind(new.monitoring.renotify_seconds)
            .bind(new.monitoring.parent_id.map(|p| p.0))
            .bind(new.monitoring.alert_on_failure)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        if let Some(r) = inserted {
            return Ok(CreateOutcome::Created(
                service_from_row(&r).map_err(unavailable)?,
            ));
        }
        match self.find_service(&key).await? {
            Some(s) => Ok(CreateOutcome::Exists(s)),
            // The holder was deleted between the two statements.
            None => Err(StoreError::Conflict(format!(
                "service {} changed concurrently",
                new.heartbeat_name.as_str()
            ))),
        }
    }

    async fn get_service(&self, id: ServiceId) -> StoreResult<Option<Service>> {
        let sql =
            format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = $1 AND deleted_at IS NULL");
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .map(|r| service_from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    async fn find_service(&self, key: &str) -> StoreResult<Option<Service>> {
        let sql = format!(
            "SELECT {SERVICE_COLUMNS} FROM services WHERE name_key = $1 AND deleted_at IS NULL"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .map(|r| service_from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    async fn list_services(
        &self,
        filter: &ServiceFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Service>> {
        self.page(
            "services",
            SERVICE_COLUMNS,
            |qb| push_service_filter(qb, filter),
            "id",
            page,
            service_from_row,
        )
        .await
    }

    async fn update_service(
        &self,
        id: ServiceId,
        patch: &ServicePatch,
        change: &ChangeMeta,
    ) -> StoreResult<Option<Service>> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let Some(before) = Self::lock_service(&mut tx, id).await.map_err(unavailable)? else {
            return Ok(None);
        };
        Self::insert_snapshot(&mut tx, &before, change.action, &change.actor, change.at)
            .await
            .map_err(unavailable)?;
        let after = patch.apply(&before, change.at);
        Self::write_service(&mut tx, &after, false)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(after))
    }

    async fn delete_service(&self, id: ServiceId, actor: &str) -> StoreResult<Option<SnapshotId>> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let Some(before) = Self::lock_service(&mut tx, id).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let now = Timestamp::now();
        let snap = Self::insert_snapshot(&mut tx, &before, SnapshotAction::Delete, actor, now)
            .await
            .map_err(unavailable)?;
        sqlx::query("UPDATE services SET deleted_at = $1, updated_at = $1 WHERE id = $2")
            .bind(dt(now))
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(snap))
    }

    async fn list_snapshots(
        &self,
        filter: &SnapshotFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Snapshot>> {
        self.page(
            "snapshots",
            SNAPSHOT_COLUMNS,
            |qb| push_snapshot_filter(qb, filter),
            "created_at DESC, id DESC",
            page,
            snapshot_from_row,
        )
        .await
    }

    async fn get_snapshot(&self, id: SnapshotId) -> StoreResult<Option<Snapshot>> {
        let sql = format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE id = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .map(|r| snapshot_from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    async fn restore_snapshot(
        &self,
        id: SnapshotId,
        actor: &str,
        audit: Option<AuditWith<'_, Service>>,
    ) -> StoreResult<RestoreOutcome> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // Locking the snapshot makes a concurrent second restore wait, then see it restored.
        let sql = format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE id = $1 FOR UPDATE");
        let Some(row) = sqlx::query(AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
        else {
            return Ok(RestoreOutcome::NotFound);
        };
        let snap = snapshot_from_row(&row).map_err(unavailable)?;
        if snap.restored_at.is_some() {
            return Ok(RestoreOutcome::AlreadyRestored);
        }
        let now = Timestamp::now();
        let key = name_key(&snap.snapshot_data.heartbeat_name);
        let holder: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM services WHERE name_key = $1 AND deleted_at IS NULL AND id <> $2",
        )
        .bind(&key)
        .bind(snap.service_id.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        if holder.is_some() {
            return Ok(RestoreOutcome::NameTaken);
        }
        // Snapshot what is there now (live or deleted) so the restore itself can be undone.
        let sql = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = $1 FOR NO KEY UPDATE");
        let current = sqlx::query(AssertSqlSafe(sql))
            .bind(snap.service_id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
            .map(|r| service_from_row(&r))
            .transpose()
            .map_err(unavailable)?;
        let Some(current) = current else {
            return Ok(RestoreOutcome::NotFound);
        };
        Self::insert_snapshot(&mut tx, &current, SnapshotAction::Edit, actor, now)
            .await
            .map_err(unavailable)?;
        let mut restored = snap.snapshot_data.clone();
        restored.id = snap.service_id;
        restored.updated_at = now;
        // Observations are facts, not configuration: keep the newest.
        restored.last_heartbeat_at = current.last_heartbeat_at;
        restored.state = current.state;
        Self::write_service(&mut tx, &restored, true)
            .await
            .map_err(unavailable)?;
        sqlx::query("UPDATE snapshots SET restored_at = $1, restored_by = $2 WHERE id = $3")
            .bind(dt(now))
            .bind(actor)
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        if let Some(entry) = audit {
            insert_audit(&mut tx, &entry(&restored)).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(RestoreOutcome::Restored(restored))
    }

    async fn open_alert(&self, new: &NewAlert) -> StoreResult<Alert> {
        let sql = format!(
            "INSERT INTO alerts (service_id, kind, name, dedup_key, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {ALERT_COLUMNS}"
        );
        let r = sqlx::query(AssertSqlSafe(sql))
            .bind(new.service_id.0)
            .bind(new.kind.as_str())
            .bind(&new.name)
            .bind(&new.dedup_key)
            .bind(dt(new.at))
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        alert_from_row(&r).map_err(unavailable)
    }

    async fn list_alerts(&self, active: Option<bool>, limit: u32) -> StoreResult<Vec<Alert>> {
        let filter = match active {
            None => "",
            Some(true) => " WHERE state <> 'resolved'",
            Some(false) => " WHERE state = 'resolved'",
        };
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts{filter} ORDER BY created_at DESC, id DESC \
             LIMIT $1"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        collect(&rows, alert_from_row)
    }

    async fn get_alert(&self, id: i64) -> StoreResult<Option<Alert>> {
        self.get_alert_impl(id).await
    }

    async fn list_alerts_filtered(
        &self,
        filter: &AlertFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Alert>> {
        self.list_alerts_filtered_impl(filter, page).await
    }

    async fn acknowledge_alert(
        &self,
        id: i64,
        actor: &str,
        at: Timestamp,
        audit: Option<AuditWith<'_, Alert>>,
    ) -> StoreResult<AlertChange> {
        self.change_alert_impl(id, actor, at, false, audit).await
    }

    async fn resolve_alert(
        &self,
        id: i64,
        actor: &str,
        at: Timestamp,
        audit: Option<AuditWith<'_, Alert>>,
    ) -> StoreResult<AlertChange> {
        self.change_alert_impl(id, actor, at, true, audit).await
    }

    async fn open_alert_counts(&self) -> StoreResult<OpenAlertCounts> {
        self.open_alert_counts_impl().await
    }

    async fn monitor_pass(
        &self,
        now: Timestamp,
        limit: u32,
        judge: &Judge<'_>,
    ) -> StoreResult<PassReport> {
        self.monitor_pass_impl(now, limit, judge).await
    }

    async fn next_deadline(&self) -> StoreResult<Option<Timestamp>> {
        self.next_deadline_impl().await
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        self.claim_deliveries_impl(now, lease_until, limit).await
    }

    async fn finish_delivery(&self, id: i64, result: &DeliveryResult) -> StoreResult<()> {
        self.finish_delivery_impl(id, result).await
    }

    async fn list_deliveries(
        &self,
        target: TargetId,
        page: PageRequest,
    ) -> StoreResult<Page<DeliveryRecord>> {
        self.list_deliveries_impl(target, page).await
    }

    async fn next_delivery_at(&self) -> StoreResult<Option<Timestamp>> {
        self.next_delivery_at_impl().await
    }

    async fn purge_batch(
        &self,
        table: PurgeTable,
        before: Timestamp,
        limit: u32,
    ) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let mut n = 0;
        for sql in table.statements() {
            n = sqlx::query(AssertSqlSafe(*sql))
                .bind(dt(before))
                .bind(i64::from(limit))
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?
                .rows_affected();
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(n)
    }

    async fn create_api_key(&self, key: &NewApiKey) -> StoreResult<ApiKeyRecord> {
        let sql = format!(
            "INSERT INTO api_keys (id, name, digest, scopes, created_at, expires_at, \
             rate_limit_per_minute, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             RETURNING {API_KEY_COLUMNS}"
        );
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let r = sqlx::query(AssertSqlSafe(sql))
            .bind(&key.id.0)
            .bind(&key.name)
            .bind(key.digest.as_slice())
            .bind(key.scopes.to_list_string())
            .bind(dt(key.created_at))
            .bind(dto(key.expires_at))
            .bind(key.rate_limit_per_minute.map(i64::from))
            .bind(&key.created_by)
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        if let Some(e) = &key.audit {
            insert_audit(&mut tx, e).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        api_key_from_row(&r).map_err(unavailable)
    }

    async fn get_api_key(&self, id: &ApiKeyId) -> StoreResult<Option<ApiKeyRecord>> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(&id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .map(|r| api_key_from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        // Byte order, as SQLite compares text.
        let sql =
            format!("SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id COLLATE \"C\"");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        collect(&rows, api_key_from_row)
    }

    async fn revoke_api_key(
        &self,
        id: &ApiKeyId,
        at: Timestamp,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(dt(at))
                .bind(&id.0)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        let revoked = done.rows_affected() == 1;
        if revoked && let Some(e) = audit {
            insert_audit(&mut tx, e).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(revoked)
    }

    async fn append_audit(&self, e: &NewAuditEntry) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        insert_audit(&mut conn, e).await
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AuditEntry>> {
        self.page(
            "audit_log",
            AUDIT_COLUMNS,
            |qb| push_audit_filter(qb, filter),
            "created_at DESC, id DESC",
            page,
            audit_from_row,
        )
        .await
    }

    async fn create_team(
        &self,
        new: &NewTeam,
        audit: Option<AuditWith<'_, Team>>,
    ) -> StoreResult<Team> {
        self.create_team_impl(new, audit).await
    }

    async fn get_team(&self, id: TeamId) -> StoreResult<Option<Team>> {
        self.get_team_impl(id).await
    }

    async fn find_team(&self, key: &str) -> StoreResult<Option<Team>> {
        self.find_team_impl(key).await
    }

    async fn list_teams(&self) -> StoreResult<Vec<Team>> {
        self.list_teams_impl().await
    }

    async fn update_team(
        &self,
        id: TeamId,
        patch: &TeamPatch,
        at: Timestamp,
        audit: Option<AuditWith<'_, Team>>,
    ) -> StoreResult<Option<Team>> {
        self.update_team_impl(id, patch, at, audit).await
    }

    async fn delete_team(&self, id: TeamId, audit: Option<&NewAuditEntry>) -> StoreResult<bool> {
        self.delete_team_impl(id, audit).await
    }

    async fn create_target(
        &self,
        new: &NewTarget,
        audit: Option<AuditWith<'_, NotificationTarget>>,
    ) -> StoreResult<NotificationTarget> {
        self.create_target_impl(new, audit).await
    }

    async fn get_target(&self, id: TargetId) -> StoreResult<Option<NotificationTarget>> {
        self.get_target_impl(id).await
    }

    async fn list_targets(&self, filter: &TargetFilter) -> StoreResult<Vec<NotificationTarget>> {
        self.list_targets_impl(filter).await
    }

    async fn update_target(
        &self,
        id: TargetId,
        patch: &TargetPatch,
        at: Timestamp,
        audit: Option<AuditWith<'_, NotificationTarget>>,
    ) -> StoreResult<Option<NotificationTarget>> {
        self.update_target_impl(id, patch, at, audit).await
    }

    async fn delete_target(
        &self,
        id: TargetId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        self.delete_target_impl(id, audit).await
    }

    async fn create_window(
        &self,
        new: &NewWindow,
        audit: Option<AuditWith<'_, MaintenanceWindowRecord>>,
    ) -> StoreResult<MaintenanceWindowRecord> {
        self.create_window_impl(new, audit).await
    }

    async fn get_window(&self, id: WindowId) -> StoreResult<Option<MaintenanceWindowRecord>> {
        self.get_window_impl(id).await
    }

    async fn list_windows(
        &self,
        filter: &WindowFilter,
    ) -> StoreResult<Vec<MaintenanceWindowRecord>> {
        self.list_windows_impl(filter).await
    }

    async fn delete_window(
        &self,
        id: WindowId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        self.delete_window_impl(id, audit).await
    }

    async fn agent_connected(&self, conn: &AgentConnection) -> StoreResult<AgentConnectOutcome> {
        self.agent_connected_impl(conn).await
    }

    async fn agent_seen(&self, id: &str, session_id: &str, at: Timestamp) -> StoreResult<bool> {
        self.agent_seen_impl(id, session_id, at).await
    }

    async fn agent_disconnected(
        &self,
        id: &str,
        session_id: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        self.agent_disconnected_impl(id, session_id, at).await
    }

    async fn get_agent(&self, id: &str) -> StoreResult<Option<AgentRecord>> {
        self.get_agent_impl(id).await
    }

    async fn list_agents(
        &self,
        filter: &AgentFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AgentRecord>> {
        self.list_agents_impl(filter, page).await
    }

    async fn revoke_agent(
        &self,
        id: &str,
        by: &str,
        at: Timestamp,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        self.revoke_agent_impl(id, by, at, audit).await
    }

    async fn create_agent_runs(&self, new: &[NewAgentRun]) -> StoreResult<Vec<AgentRun>> {
        self.create_agent_runs_impl(new).await
    }

    async fn get_agent_run(&self, run_id: &str) -> StoreResult<Option<AgentRun>> {
        self.get_agent_run_impl(run_id).await
    }

    async fn list_agent_runs(
        &self,
        filter: &RunFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AgentRun>> {
        self.list_agent_runs_impl(filter, page).await
    }

    async fn unaccepted_agent_runs(&self, agent_id: &str) -> StoreResult<Vec<AgentRun>> {
        self.unaccepted_agent_runs_impl(agent_id).await
    }

    async fn claim_agent_runs(
        &self,
        agent_id: &str,
        at: Timestamp,
        lost_base: Timestamp,
    ) -> StoreResult<Vec<ClaimedRun>> {
        self.claim_agent_runs_impl(agent_id, at, lost_base).await
    }

    async fn requeue_agent_run(&self, agent_id: &str, run_id: &str) -> StoreResult<bool> {
        self.requeue_agent_run_impl(agent_id, run_id).await
    }

    async fn agent_run_sent(
        &self,
        run_id: &str,
        at: Timestamp,
        lost_base: Timestamp,
    ) -> StoreResult<bool> {
        self.agent_run_sent_impl(run_id, at, lost_base).await
    }

    async fn agent_run_started(
        &self,
        agent_id: &str,
        run_id: &str,
        at: Timestamp,
        lost_base: Timestamp,
    ) -> StoreResult<bool> {
        self.agent_run_started_impl(agent_id, run_id, at, lost_base)
            .await
    }

    async fn finish_agent_run(
        &self,
        agent_id: &str,
        run_id: &str,
        end: &AgentRunEnd,
    ) -> StoreResult<Option<RunFinish>> {
        self.finish_agent_run_impl(agent_id, run_id, end).await
    }

    async fn orphan_agent_runs(
        &self,
        agent_id: &str,
        still_running: &[String],
        lost_after: Timestamp,
    ) -> StoreResult<u64> {
        self.orphan_agent_runs_impl(agent_id, still_running, lost_after)
            .await
    }

    async fn sweep_agent_runs(&self, now: Timestamp) -> StoreResult<RunSweep> {
        self.sweep_agent_runs_impl(now).await
    }

    async fn agents_with_queued_runs(&self, now: Timestamp) -> StoreResult<Vec<String>> {
        self.agents_with_queued_runs_impl(now).await
    }

    async fn register_script_version(
        &self,
        new: &NewScriptVersion,
    ) -> StoreResult<RegisterOutcome> {
        self.register_script_version_impl(new).await
    }

    async fn get_script(&self, id: ScriptId) -> StoreResult<Option<Script>> {
        self.get_script_impl(id).await
    }

    async fn script_id_by_name(&self, name: &str) -> StoreResult<Option<ScriptId>> {
        self.script_id_by_name_impl(name).await
    }

    async fn list_scripts(
        &self,
        filter: &ScriptFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Script>> {
        self.list_scripts_impl(filter, page).await
    }

    async fn get_script_version(
        &self,
        id: ScriptId,
        version: i32,
    ) -> StoreResult<Option<ScriptVersion>> {
        self.get_script_version_impl(id, version).await
    }

    async fn decide_script_version(
        &self,
        version_id: i64,
        decision: &ScriptDecision,
    ) -> StoreResult<DecideOutcome> {
        self.decide_script_version_impl(version_id, decision).await
    }
}
