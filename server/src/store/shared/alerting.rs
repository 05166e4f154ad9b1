//! Alerts, the monitor pass's writes and the notification outbox (deliveries), on both backends.
//!
//! The monitor pass itself stays in each backend: how it takes its due services (PostgreSQL
//! locks them `FOR NO KEY UPDATE SKIP LOCKED`), how it finds each service's latest alert
//! (`unnest` and a lateral join, or `json_each`) and how it writes the verdicts' states and
//! deadlines (one `unnest` update, or one update per service) differ. What it reads and writes
//! per service is here.

use std::collections::HashMap;

use sqlx::{
    AssertSqlSafe, ColumnIndex, Decode, Encode, Executor, Pool, QueryBuilder, Row, Transaction,
    Type,
};

use super::executions::ExecutionSql;
use super::{Db, Sql, unavailable};
use crate::domain::run::ALERTING_REFUSALS;
use crate::domain::{Destination, EventKind, Priority, ServiceId, Timestamp};
use crate::store::services::SERVICE_COLUMNS;
use crate::store::*;

const DAY_MS: i64 = 86_400_000;

/// The columns an [`Alert`] is read from.
pub(crate) const ALERT_COLUMNS: &str = "id, service_id, kind, name, state, dedup_key, \
    external_reference_id, alert_cycle, created_at, acknowledged_at, resolved_at, priority, team, \
    down_since, last_notified_at, acknowledged_by, resolved_by, resolve_reason, run_id, summary";

/// The statements of this area that differ between the backends (a pass starts playbook
/// executions, so the executions' differences come along).
pub(crate) trait AlertSql: ExecutionSql {
    /// When the next pending delivery is due: its next attempt, or its lease's end if later.
    const NEXT_DELIVERY_AT: &'static str;
    /// How many run ids the monitor pass binds when it looks for their resolved alerts.
    const MAX_RUN_IDS: usize;
}

fn delivery_columns<DB: Db>() -> String {
    format!(
        "id, alert_id, target_id, event, destination{} AS destination, actor, state, attempts, \
         next_attempt_at, last_status, last_error, external_ref, created_at, finished_at",
        DB::TEXT
    )
}

fn to_json(d: &Destination) -> Result<String, StoreError> {
    serde_json::to_string(d).map_err(|e| StoreError::Unavailable(e.to_string()))
}

impl<DB: AlertSql> Sql<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> i32: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> bool: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> String: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> &'a str: Encode<'a, DB> + Decode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'a> Timestamp: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> Option<i32>: Encode<'a, DB>,
    for<'a> Option<i64>: Encode<'a, DB>,
    for<'a> Option<bool>: Encode<'a, DB>,
    for<'a> Option<String>: Encode<'a, DB>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    for<'a> Option<Timestamp>: Encode<'a, DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Queues `event` for every routed destination.
    async fn queue(
        conn: &mut DB::Connection,
        alert_id: i64,
        event: EventKind,
        routed: &[Routed],
        actor: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<()> {
        // A re-notification is not queued behind one still pending for the same destination: a
        // slow or failing receiver gets one message to retry, not a growing backlog.
        let guard = if event == EventKind::Renotified {
            format!(
                " AND NOT EXISTS (SELECT 1 FROM deliveries WHERE alert_id = $1 \
                 AND destination = $5{} AND state = 'pending')",
                DB::JSONB
            )
        } else {
            String::new()
        };
        for r in routed {
            let sql = format!(
                "INSERT INTO deliveries (alert_id, target_id, event, channel, destination, actor, \
                 next_attempt_at, created_at) SELECT $1, $2, $3, $4, $5{}, $6, $7, $7 \
                 WHERE 1 = 1{guard}",
                DB::JSONB
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(alert_id)
                .bind(r.target_id.map(|t| t.0))
                .bind(event)
                .bind(r.destination.channel())
                .bind(to_json(&r.destination)?)
                .bind(actor)
                .bind(now)
                .execute(&mut *conn)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Queues `event` to every destination the alert's trigger went to.
    async fn queue_follow_up(
        conn: &mut DB::Connection,
        alert_id: i64,
        event: EventKind,
        actor: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO deliveries (alert_id, target_id, event, channel, destination, actor, \
             next_attempt_at, created_at) \
             SELECT DISTINCT alert_id, target_id, $1, channel, destination, $2, $3{t}, $3{t} \
             FROM deliveries WHERE alert_id = $4 AND event = 'triggered'",
            t = DB::TIMESTAMPTZ
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(event)
            .bind(actor)
            .bind(now)
            .bind(alert_id)
            .execute(conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Each due service's newest heartbeats, as many as its threshold (the stored last heartbeat
    /// is enough for a threshold of 1).
    pub(crate) async fn load_recent_beats(
        conn: &mut DB::Connection,
        due: &mut [DueService],
    ) -> StoreResult<()> {
        for d in due {
            let n = d.service.threshold.max(1);
            if n == 1 {
                d.recent_beats.extend(d.service.last_heartbeat_at);
            } else {
                d.recent_beats = sqlx::query_scalar(
                    "SELECT received_at FROM heartbeat_events WHERE service_id = $1 \
                     ORDER BY received_at DESC LIMIT $2",
                )
                .bind(d.service.id)
                .bind(i64::from(n))
                .fetch_all(&mut *conn)
                .await
                .map_err(unavailable)?;
            }
        }
        Ok(())
    }

    /// What the judge needs beyond the due services: the routing configuration (read by the
    /// caller through the store) and the services that are down with a live alert.
    pub(crate) async fn monitor_context(
        conn: &mut DB::Connection,
        now: Timestamp,
        due: &[DueService],
        teams: Vec<Team>,
        targets: Vec<NotificationTarget>,
        windows: Vec<MaintenanceWindowRecord>,
    ) -> StoreResult<MonitorContext> {
        let mut ctx = MonitorContext {
            teams,
            targets: targets.into_iter().filter(|t| t.enabled).collect(),
            windows: windows
                .into_iter()
                .filter(|w| {
                    one_time_bounds(&w.window)
                        .is_none_or(|(_, end)| end.millis() > now.millis() - DAY_MS)
                })
                .collect(),
            down_parents: Vec::new(),
        };
        if due.iter().any(|d| d.service.monitoring.parent_id.is_some()) {
            ctx.down_parents = sqlx::query_as::<_, (ServiceId, i64)>(
                "SELECT service_id, id FROM alerts \
                 WHERE kind = 'heartbeat_missing' AND state <> 'resolved'",
            )
            .fetch_all(conn)
            .await
            .map_err(unavailable)?;
        }
        Ok(ctx)
    }

    /// Acknowledges or resolves alert `id` by an operator, queueing the follow-up to where the
    /// alert went, and audits the change when asked.
    pub(crate) async fn change_alert(
        pool: &Pool<DB>,
        id: i64,
        actor: &str,
        at: Timestamp,
        resolve: bool,
        audit: Option<AuditWith<'_, Alert>>,
    ) -> StoreResult<AlertChange> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1{}",
            DB::FOR_UPDATE
        );
        let Some(alert) = sqlx::query_as::<_, Alert>(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
        else {
            return Ok(AlertChange::NotFound);
        };
        let applies = if resolve {
            alert.state != AlertState::Resolved
        } else {
            alert.state == AlertState::Open
        };
        if !applies {
            return Ok(AlertChange::Unchanged(alert));
        }
        let (sql, event) = if resolve {
            (
                format!(
                    "UPDATE alerts SET state = 'resolved', resolved_at = $1, resolved_by = $2, \
                     resolve_reason = 'operator' WHERE id = $3 RETURNING {ALERT_COLUMNS}"
                ),
                EventKind::Resolved,
            )
        } else {
            (
                format!(
                    "UPDATE alerts SET state = 'acknowledged', acknowledged_at = $1, \
                     acknowledged_by = $2 WHERE id = $3 RETURNING {ALERT_COLUMNS}"
                ),
                EventKind::Acknowledged,
            )
        };
        let changed: Alert = sqlx::query_as(AssertSqlSafe(sql))
            .bind(at)
            .bind(actor)
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        Self::queue_follow_up(&mut tx, id, event, Some(actor), at).await?;
        if let Some(entry) = audit {
            Self::insert_audit(&mut tx, &entry(&changed)).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(AlertChange::Changed(changed))
    }

    pub(crate) async fn open_alert(pool: &Pool<DB>, new: &NewAlert) -> StoreResult<Alert> {
        let sql = format!(
            "INSERT INTO alerts (service_id, kind, name, dedup_key, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {ALERT_COLUMNS}"
        );
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(new.service_id)
            .bind(new.kind)
            .bind(&new.name)
            .bind(&new.dedup_key)
            .bind(new.at)
            .fetch_one(pool)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn list_alerts(
        pool: &Pool<DB>,
        active: Option<bool>,
        limit: u32,
    ) -> StoreResult<Vec<Alert>> {
        let filter = match active {
            None => "",
            Some(true) => " WHERE state <> 'resolved'",
            Some(false) => " WHERE state = 'resolved'",
        };
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts{filter} ORDER BY created_at DESC, id DESC \
             LIMIT $1"
        );
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(unavailable)
    }

    /// The earliest deadline of any live service.
    pub(crate) async fn next_deadline<'c>(
        ex: impl Executor<'c, Database = DB>,
    ) -> StoreResult<Option<Timestamp>> {
        sqlx::query_scalar(
            "SELECT min(deadline_at) FROM services WHERE deleted_at IS NULL \
             AND deadline_at IS NOT NULL",
        )
        .fetch_one(ex)
        .await
        .map_err(unavailable)
    }

    pub(crate) async fn get_alert(pool: &Pool<DB>, id: i64) -> StoreResult<Option<Alert>> {
        let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1");
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn list_alerts_filtered(
        pool: &Pool<DB>,
        f: &AlertFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Alert>> {
        let filter = |qb: &mut QueryBuilder<DB>| {
            qb.push(" WHERE 1 = 1");
            if !f.states.is_empty() {
                qb.push(" AND state IN (");
                let mut sep = qb.separated(", ");
                for s in &f.states {
                    sep.push_bind(s.as_str());
                }
                qb.push(")");
            }
            if let Some(k) = f.kind {
                qb.push(" AND kind = ").push_bind(k.as_str());
            }
            if let Some(s) = f.service {
                qb.push(" AND service_id = ").push_bind(s.0);
            }
            if let Some(t) = &f.team {
                qb.push(" AND lower(team) = lower(")
                    .push_bind(t.clone())
                    .push(")");
            }
            if let Some(p) = f.priority {
                qb.push(" AND priority = ").push_bind(p.as_str());
            }
            if let Some(since) = f.since {
                qb.push(" AND created_at >= ").push_bind(since);
            }
        };
        Self::page(
            pool,
            "alerts",
            ALERT_COLUMNS,
            filter,
            "created_at DESC, id DESC",
            page,
        )
        .await
    }

    pub(crate) async fn open_alert_counts(pool: &Pool<DB>) -> StoreResult<OpenAlertCounts> {
        let rows: Vec<(Option<String>, Option<String>, i64)> = sqlx::query_as(
            "SELECT priority, team, count(*) FROM alerts WHERE state <> 'resolved' \
             GROUP BY priority, team",
        )
        .fetch_all(pool)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|(p, team, n)| (p.and_then(|p| Priority::parse(&p)), team, n))
            .collect())
    }

    /// Leases up to `limit` due deliveries (PostgreSQL skips those another replica is claiming).
    pub(crate) async fn claim_deliveries(
        pool: &Pool<DB>,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let sql = format!(
            "UPDATE deliveries SET lease_until = $1 WHERE id IN ( \
                 SELECT id FROM deliveries WHERE state = 'pending' AND next_attempt_at <= $2 \
                 AND (lease_until IS NULL OR lease_until <= $2) \
                 ORDER BY next_attempt_at, id LIMIT $3{}) \
             RETURNING {}",
            DB::SKIP_LOCKED,
            delivery_columns::<DB>()
        );
        let deliveries: Vec<DeliveryRecord> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(lease_until)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        let mut out = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1");
            let alert: Alert = sqlx::query_as(AssertSqlSafe(sql))
                .bind(delivery.alert_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
            let sql = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = $1");
            let service = sqlx::query_as(AssertSqlSafe(sql))
                .bind(alert.service_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
            out.push(ClaimedDelivery {
                delivery,
                alert,
                service,
            });
        }
        tx.commit().await.map_err(unavailable)?;
        out.sort_by_key(|c| (c.delivery.next_attempt_at, c.delivery.id));
        Ok(out)
    }

    pub(crate) async fn finish_delivery(
        pool: &Pool<DB>,
        id: i64,
        res: &DeliveryResult,
    ) -> StoreResult<()> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let done = res.state != DeliveryState::Pending;
        let row = sqlx::query(
            "UPDATE deliveries SET state = $1, attempts = attempts + 1, \
             next_attempt_at = coalesce($2, next_attempt_at), lease_until = NULL, \
             last_status = $3, last_error = $4, external_ref = coalesce($5, external_ref), \
             finished_at = $6 WHERE id = $7 RETURNING alert_id, event, channel",
        )
        .bind(res.state)
        .bind(res.next_attempt_at)
        .bind(res.status)
        .bind(&res.error)
        .bind(&res.external_ref)
        .bind(done.then_some(res.at))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        if let (Some(r), DeliveryState::Delivered, Some(ext)) =
            (row, res.state, res.external_ref.as_deref())
        {
            let channel: String = r.try_get("channel").map_err(unavailable)?;
            if channel == "pagerduty" {
                sqlx::query(
                    "UPDATE alerts SET external_reference_id = \
                     coalesce(external_reference_id, $1) WHERE id = $2",
                )
                .bind(ext)
                .bind(r.try_get::<i64, _>("alert_id").map_err(unavailable)?)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            }
        }
        tx.commit().await.map_err(unavailable)
    }

    pub(crate) async fn list_deliveries(
        pool: &Pool<DB>,
        target: TargetId,
        page: PageRequest,
    ) -> StoreResult<Page<DeliveryRecord>> {
        Self::page(
            pool,
            "deliveries",
            &delivery_columns::<DB>(),
            |qb| {
                qb.push(" WHERE target_id = ").push_bind(target);
            },
            "id DESC",
            page,
        )
        .await
    }

    pub(crate) async fn next_delivery_at(pool: &Pool<DB>) -> StoreResult<Option<Timestamp>> {
        sqlx::query_scalar(DB::NEXT_DELIVERY_AT)
            .fetch_one(pool)
            .await
            .map_err(unavailable)
    }

    /// Writes one service's alert changes and suppressions (its state and deadline are the
    /// caller's to write).
    pub(crate) async fn apply(
        tx: &mut Transaction<'static, DB>,
        d: &DueService,
        ops: Vec<AlertOp>,
        suppressions: Vec<NewSuppression>,
        now: Timestamp,
        triggers: &dyn AlertTriggers,
        report: &mut PassReport,
    ) -> StoreResult<()> {
        for op in ops {
            match op {
                AlertOp::Open {
                    kind,
                    name,
                    dedup_key,
                    priority,
                    team,
                    down_since,
                    summary,
                    run_id,
                    notify,
                } => {
                    let id: Option<i64> = sqlx::query_scalar(
                        "INSERT INTO alerts (service_id, kind, name, state, dedup_key, \
                         created_at, priority, team, down_since, last_notified_at, summary, \
                         run_id) VALUES ($1, $2, $3, 'open', $4, $5, $6, $7, $8, $5, $9, $10) \
                         ON CONFLICT DO NOTHING RETURNING id",
                    )
                    .bind(d.service.id)
                    .bind(kind)
                    .bind(&name)
                    .bind(&dedup_key)
                    .bind(now)
                    .bind(priority)
                    .bind(&team)
                    .bind(down_since)
                    .bind(&summary)
                    .bind(&run_id)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(unavailable)?;
                    if let Some(id) = id {
                        Self::queue(tx, id, EventKind::Triggered, &notify, None, now).await?;
                        Self::fire_triggers(tx, d, id, kind, now, triggers, report).await?;
                        // Lag counts from when the alert became due: the deadline the monitor
                        // woke for (a window's end, say), never before the service went down.
                        let due = d.deadline_at.map_or(down_since, |t| t.max(down_since));
                        report.opened.push((kind, priority, team, due));
                    }
                }
                AlertOp::Renotify { alert_id, notify } => {
                    let changed = sqlx::query(
                        "UPDATE alerts SET last_notified_at = $1 WHERE id = $2 AND state = 'open'",
                    )
                    .bind(now)
                    .bind(alert_id)
                    .execute(&mut **tx)
                    .await
                    .map_err(unavailable)?;
                    let changed = DB::rows_affected(&changed);
                    if changed == 1 {
                        Self::queue(tx, alert_id, EventKind::Renotified, &notify, None, now)
                            .await?;
                        report.renotified += 1;
                        // An escalation: triggers that wanted more missed intervals may fire now.
                        if d.live_alert.as_ref().is_some_and(|a| a.id == alert_id) {
                            let kind = AlertKind::HeartbeatMissing;
                            Self::fire_triggers(tx, d, alert_id, kind, now, triggers, report)
                                .await?;
                        }
                    }
                }
                AlertOp::Resolve { alert_id, reason } => {
                    let changed = sqlx::query(
                        "UPDATE alerts SET state = 'resolved', resolved_at = $1, \
                         resolve_reason = $2 WHERE id = $3 AND state <> 'resolved'",
                    )
                    .bind(now)
                    .bind(&reason)
                    .bind(alert_id)
                    .execute(&mut **tx)
                    .await
                    .map_err(unavailable)?;
                    let changed = DB::rows_affected(&changed);
                    if changed == 1 {
                        Self::queue_follow_up(tx, alert_id, EventKind::Resolved, None, now).await?;
                        report.resolved += 1;
                    }
                }
            }
        }
        for s in suppressions {
            let inserted = sqlx::query(
                "INSERT INTO alert_suppressions (service_id, kind, reason, incident_key, \
                 parent_alert_id, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(d.service.id)
            .bind(s.kind)
            .bind(s.reason.as_str())
            .bind(&s.incident_key)
            .bind(s.parent_alert_id)
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(unavailable)?;
            if DB::rows_affected(&inserted) == 1 {
                report.suppressed.push(s.reason);
            }
        }
        Ok(())
    }

    /// Reads what the judge needs about the due services' jobs: their running and latest
    /// finished runs, their agents' recent refusals and their live or recent job alerts.
    pub(crate) async fn load_jobs(
        conn: &mut DB::Connection,
        now: Timestamp,
        ids: &[i64],
        index: &HashMap<i64, usize>,
        due: &mut [DueService],
    ) -> StoreResult<()> {
        let mut qb = QueryBuilder::<DB>::new(
            "SELECT service_id, run_id, status, started_at, finished_at FROM job_runs j \
             WHERE (status = 'running' OR finished_at = \
               (SELECT max(finished_at) FROM job_runs k \
                WHERE k.service_id = j.service_id AND k.status <> 'running')) AND service_id",
        );
        DB::push_in_ids(&mut qb, ids);
        qb.push(" ORDER BY service_id, id DESC");
        let rows = qb
            .build()
            .fetch_all(&mut *conn)
            .await
            .map_err(unavailable)?;
        let mut run_ids: Vec<String> = Vec::new();
        for r in rows {
            let sid: i64 = r.try_get("service_id").map_err(unavailable)?;
            let Some(d) = index.get(&sid).map(|i| &mut due[*i]) else {
                continue;
            };
            let run = RunView {
                run_id: r.try_get("run_id").map_err(unavailable)?,
                status: r.try_get("status").map_err(unavailable)?,
                started_at: r.try_get("started_at").map_err(unavailable)?,
                finished_at: r.try_get("finished_at").map_err(unavailable)?,
            };
            if d.runs.len() < 50 {
                run_ids.push(run.run_id.clone());
                d.runs.push(run);
            }
        }
        // Refusals by the agents these services stand for (`agent:<id>`), from the last day; not
        // looked for when no due service is an agent's.
        if due
            .iter()
            .any(|d| d.service.heartbeat_name.starts_with(AGENT_SERVICE_PREFIX))
        {
            let mut qb = QueryBuilder::<DB>::new(
                "SELECT a.service_id, r.id, r.agent_id, s.name AS script, r.refusal_reason, \
                 r.refusal_detail, r.finished_at FROM agents a \
                 JOIN agent_runs r ON r.agent_id = a.id AND r.status = 'refused' \
                 JOIN scripts s ON s.id = r.script_id WHERE r.finished_at >= ",
            );
            qb.push_bind(Timestamp::from_millis(now.millis() - DAY_MS));
            qb.push(" AND r.refusal_reason");
            let reasons: Vec<String> = ALERTING_REFUSALS
                .iter()
                .map(|r| r.as_str().to_owned())
                .collect();
            DB::push_in_texts(&mut qb, &reasons);
            qb.push(" AND a.service_id");
            DB::push_in_ids(&mut qb, ids);
            qb.push(" ORDER BY r.finished_at DESC");
            for r in qb
                .build()
                .fetch_all(&mut *conn)
                .await
                .map_err(unavailable)?
            {
                let sid: i64 = r.try_get("service_id").map_err(unavailable)?;
                let Some(d) = index.get(&sid).map(|i| &mut due[*i]) else {
                    continue;
                };
                if d.refusals.len() < 50 {
                    let run_id: String = r.try_get("id").map_err(unavailable)?;
                    run_ids.push(run_id.clone());
                    d.refusals.push(RefusalView {
                        run_id,
                        agent_id: r.try_get("agent_id").map_err(unavailable)?,
                        script: r.try_get("script").map_err(unavailable)?,
                        reason: r.try_get("refusal_reason").map_err(unavailable)?,
                        detail: r.try_get("refusal_detail").map_err(unavailable)?,
                        at: r.try_get("finished_at").map_err(unavailable)?,
                    });
                }
            }
        }
        run_ids.truncate(DB::MAX_RUN_IDS);
        let mut qb = QueryBuilder::<DB>::new(
            "SELECT id, service_id, kind, run_id, state, dedup_key FROM alerts \
             WHERE kind <> 'heartbeat_missing' AND service_id",
        );
        DB::push_in_ids(&mut qb, ids);
        qb.push(" AND (state <> 'resolved' OR run_id");
        DB::push_in_texts(&mut qb, &run_ids);
        qb.push(")");
        for r in qb
            .build()
            .fetch_all(&mut *conn)
            .await
            .map_err(unavailable)?
        {
            let sid: i64 = r.try_get("service_id").map_err(unavailable)?;
            let Some(d) = index.get(&sid).map(|i| &mut due[*i]) else {
                continue;
            };
            d.job_alerts.push(JobAlertView {
                id: r.try_get("id").map_err(unavailable)?,
                kind: r.try_get("kind").map_err(unavailable)?,
                run_id: r.try_get("run_id").map_err(unavailable)?,
                state: r.try_get("state").map_err(unavailable)?,
                dedup_key: r.try_get("dedup_key").map_err(unavailable)?,
            });
        }
        Ok(())
    }

    /// Evaluates the alert triggers for an alert this pass opened or escalated and inserts the
    /// executions they start, in the pass's transaction (at most one per playbook and alert).
    async fn fire_triggers(
        tx: &mut Transaction<'static, DB>,
        d: &DueService,
        alert_id: i64,
        kind: AlertKind,
        now: Timestamp,
        triggers: &dyn AlertTriggers,
        report: &mut PassReport,
    ) -> StoreResult<()> {
        if triggers.is_empty() {
            return Ok(());
        }
        let consecutive_failures = match kind {
            AlertKind::HeartbeatMissing => missed_intervals(&d.service, now),
            AlertKind::JobFailed => {
                let recent: Vec<String> = sqlx::query_scalar(
                    "SELECT status FROM job_runs WHERE service_id = $1 AND status <> 'running' \
                     ORDER BY finished_at DESC LIMIT 1000",
                )
                .bind(d.service.id)
                .fetch_all(&mut **tx)
                .await
                .map_err(unavailable)?;
                let failed = recent.iter().take_while(|s| s.as_str() == "failed").count();
                u32::try_from(failed.max(1)).unwrap_or(u32::MAX)
            }
            AlertKind::JobOverdue | AlertKind::RunRefused => 1,
        };
        let last_fired: Vec<(i64, Timestamp)> = sqlx::query_as(
            "SELECT playbook_id, max(created_at) FROM playbook_executions \
             WHERE service_id = $1 AND trigger = 'alert' GROUP BY playbook_id",
        )
        .bind(d.service.id)
        .fetch_all(&mut **tx)
        .await
        .map_err(unavailable)?;
        let last_fired: HashMap<i64, Timestamp> = last_fired.into_iter().collect();
        let fired_for_alert: Vec<i64> = sqlx::query_scalar(
            "SELECT playbook_id FROM playbook_executions WHERE alert_id = $1 AND trigger = 'alert'",
        )
        .bind(alert_id)
        .fetch_all(&mut **tx)
        .await
        .map_err(unavailable)?;
        let alert = TriggeringAlert {
            alert_id,
            service: &d.service,
            kind,
            consecutive_failures,
            last_fired: &last_fired,
            fired_for_alert: &fired_for_alert,
            now,
        };
        for start in triggers.fire(&alert) {
            Self::insert_execution(&mut **tx, &start.new, start.window_from, &*start.build).await?;
            report.executions_started += 1;
        }
        Ok(())
    }
}
