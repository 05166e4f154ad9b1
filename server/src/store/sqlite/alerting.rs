//! The monitor's pass, alert changes and the notification outbox on SQLite.
//!
//! One server process owns a SQLite file (see the module docs of [`super`]), so a pass needs no
//! row locks: it runs in one write transaction on the single writer connection.

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite, Transaction};

use super::*;
use crate::domain::{Destination, EventKind};
use crate::domain::{ServiceId, ServiceState, Timestamp};
use crate::store::*;

const DAY_MS: i64 = 86_400_000;

fn to_json(d: &Destination) -> Result<String, StoreError> {
    serde_json::to_string(d).map_err(|e| StoreError::Unavailable(e.to_string()))
}

async fn queue(
    tx: &mut Transaction<'_, Sqlite>,
    alert_id: i64,
    event: EventKind,
    routed: &[Routed],
    actor: Option<&str>,
    now: Timestamp,
) -> StoreResult<()> {
    // A re-notification is not queued behind one still pending for the same destination: a
    // slow or failing receiver gets one message to retry, not a growing backlog.
    let guard = if event == EventKind::Renotified {
        " AND NOT EXISTS (SELECT 1 FROM deliveries WHERE alert_id = $1 AND destination = $5 \
         AND state = 'pending')"
    } else {
        ""
    };
    for r in routed {
        let sql = format!(
            "INSERT INTO deliveries (alert_id, target_id, event, channel, destination, actor, \
             next_attempt_at, created_at) SELECT $1, $2, $3, $4, $5, $6, $7, $7 WHERE 1 = 1{guard}"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(alert_id)
            .bind(r.target_id.map(|t| t.0))
            .bind(event.as_str())
            .bind(r.destination.channel())
            .bind(to_json(&r.destination)?)
            .bind(actor)
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(unavailable)?;
    }
    Ok(())
}

/// Queues `event` to every destination the alert's trigger went to.
async fn queue_follow_up(
    tx: &mut Transaction<'_, Sqlite>,
    alert_id: i64,
    event: EventKind,
    actor: Option<&str>,
    now: Timestamp,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO deliveries (alert_id, target_id, event, channel, destination, actor, \
         next_attempt_at, created_at) \
         SELECT DISTINCT alert_id, target_id, $1, channel, destination, $2, $3, $3 \
         FROM deliveries WHERE alert_id = $4 AND event = 'triggered'",
    )
    .bind(event.as_str())
    .bind(actor)
    .bind(now)
    .bind(alert_id)
    .execute(&mut **tx)
    .await
    .map_err(unavailable)?;
    Ok(())
}

impl SqliteStore {
    async fn monitor_context(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        now: Timestamp,
        due: &[DueService],
    ) -> StoreResult<MonitorContext> {
        let mut ctx = MonitorContext {
            teams: self.list_teams().await?,
            targets: self
                .list_targets(&TargetFilter::default())
                .await?
                .into_iter()
                .filter(|t| t.enabled)
                .collect(),
            windows: self
                .list_windows(&WindowFilter::default())
                .await?
                .into_iter()
                .filter(|w| {
                    one_time_bounds(&w.window)
                        .is_none_or(|(_, end)| end.millis() > now.millis() - DAY_MS)
                })
                .collect(),
            down_parents: Vec::new(),
        };
        if due.iter().any(|d| d.service.monitoring.parent_id.is_some()) {
            let rows = sqlx::query(
                "SELECT service_id, id FROM alerts \
                 WHERE kind = 'heartbeat_missing' AND state <> 'resolved'",
            )
            .fetch_all(&mut **tx)
            .await
            .map_err(unavailable)?;
            for r in rows {
                ctx.down_parents.push((
                    ServiceId(r.try_get(0).map_err(unavailable)?),
                    r.try_get(1).map_err(unavailable)?,
                ));
            }
        }
        Ok(ctx)
    }

    pub(super) async fn change_alert(
        &self,
        id: i64,
        actor: &str,
        at: Timestamp,
        resolve: bool,
        audit: Option<AuditWith<'_, Alert>>,
    ) -> StoreResult<AlertChange> {
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let Some(row) = sqlx::query("SELECT * FROM alerts WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
        else {
            return Ok(AlertChange::NotFound);
        };
        let alert = Alert::from_row(&row).map_err(unavailable)?;
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
                "UPDATE alerts SET state = 'resolved', resolved_at = $1, resolved_by = $2, \
                 resolve_reason = 'operator' WHERE id = $3 RETURNING *",
                EventKind::Resolved,
            )
        } else {
            (
                "UPDATE alerts SET state = 'acknowledged', acknowledged_at = $1, \
                 acknowledged_by = $2 WHERE id = $3 RETURNING *",
                EventKind::Acknowledged,
            )
        };
        let row = sqlx::query(sql)
            .bind(at)
            .bind(actor)
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        queue_follow_up(&mut tx, id, event, Some(actor), at).await?;
        let changed = Alert::from_row(&row).map_err(unavailable)?;
        if let Some(entry) = audit {
            insert_audit(&mut tx, &entry(&changed)).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(AlertChange::Changed(changed))
    }
}

#[async_trait::async_trait]
impl AlertStore for SqliteStore {
    async fn open_alert(&self, new: &NewAlert) -> StoreResult<Alert> {
        let r = sqlx::query(
            "INSERT INTO alerts (service_id, kind, name, dedup_key, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING *",
        )
        .bind(new.service_id.0)
        .bind(new.kind.as_str())
        .bind(&new.name)
        .bind(&new.dedup_key)
        .bind(new.at)
        .fetch_one(&self.write)
        .await
        .map_err(unavailable)?;
        Alert::from_row(&r).map_err(unavailable)
    }

    async fn list_alerts(&self, active: Option<bool>, limit: u32) -> StoreResult<Vec<Alert>> {
        let filter = match active {
            None => "",
            Some(true) => " WHERE state <> 'resolved'",
            Some(false) => " WHERE state = 'resolved'",
        };
        let sql =
            format!("SELECT * FROM alerts{filter} ORDER BY created_at DESC, id DESC LIMIT $1");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(Alert::from_row)
            .collect::<Result<_, _>>()
            .map_err(unavailable)
    }

    async fn acknowledge_alert(
        &self,
        id: i64,
        actor: &str,
        at: Timestamp,
        audit: Option<AuditWith<'_, Alert>>,
    ) -> StoreResult<AlertChange> {
        self.change_alert(id, actor, at, false, audit).await
    }

    async fn resolve_alert(
        &self,
        id: i64,
        actor: &str,
        at: Timestamp,
        audit: Option<AuditWith<'_, Alert>>,
    ) -> StoreResult<AlertChange> {
        self.change_alert(id, actor, at, true, audit).await
    }

    async fn monitor_pass_triggering(
        &self,
        now: Timestamp,
        limit: u32,
        judge: &Judge<'_>,
        triggers: &dyn AlertTriggers,
    ) -> StoreResult<PassReport> {
        let mut report = PassReport::default();
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let sql = format!(
            "SELECT {SERVICE_COLUMNS}, deadline_at FROM services WHERE deleted_at IS NULL AND deadline_at <= $1 \
             ORDER BY deadline_at LIMIT $2"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        if !rows.is_empty() {
            let mut due = Vec::with_capacity(rows.len());
            for r in &rows {
                due.push(DueService {
                    service: Service::from_row(r).map_err(unavailable)?,
                    deadline_at: ts(r.try_get("deadline_at").map_err(unavailable)?),
                    recent_beats: Vec::new(),
                    live_alert: None,
                    last_incident_key: None,
                    runs: Vec::new(),
                    job_alerts: Vec::new(),
                    refusals: Vec::new(),
                });
            }
            let ids: Vec<i64> = due.iter().map(|d| d.service.id.0).collect();
            let index: HashMap<i64, usize> =
                ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
            // The newest beats: the stored last heartbeat is enough for a threshold of 1.
            for d in &mut due {
                let n = d.service.threshold.max(1);
                if n == 1 {
                    d.recent_beats.extend(d.service.last_heartbeat_at);
                } else {
                    let beats: Vec<i64> = sqlx::query_scalar(
                        "SELECT received_at FROM heartbeat_events WHERE service_id = $1 \
                         ORDER BY received_at DESC LIMIT $2",
                    )
                    .bind(d.service.id.0)
                    .bind(i64::from(n))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                    d.recent_beats = beats.into_iter().map(Timestamp::from_millis).collect();
                }
            }
            let mut qb = QueryBuilder::<Sqlite>::new(
                // One index probe per service (alerts_service), not a scan of every alert.
                "SELECT id, service_id, state, created_at, last_notified_at, dedup_key, \
                 state <> 'resolved' AS live FROM alerts a WHERE id IN ( \
                 SELECT (SELECT b.id FROM alerts b WHERE b.service_id = s.value \
                 AND b.kind = 'heartbeat_missing' ORDER BY b.created_at DESC, b.id DESC LIMIT 1) \
                 FROM json_each(",
            );
            qb.push_bind(serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()));
            qb.push(") s)");
            for r in qb.build().fetch_all(&mut *tx).await.map_err(unavailable)? {
                let sid: i64 = r.try_get("service_id").map_err(unavailable)?;
                let Some(d) = index.get(&sid).map(|i| &mut due[*i]) else {
                    continue;
                };
                d.last_incident_key = Some(r.try_get("dedup_key").map_err(unavailable)?);
                if r.try_get::<bool, _>("live").map_err(unavailable)? {
                    d.live_alert = Some(LiveAlert {
                        id: r.try_get("id").map_err(unavailable)?,
                        state: decode(
                            "alert state",
                            AlertState::parse(r.try_get("state").map_err(unavailable)?),
                        )
                        .map_err(unavailable)?,
                        created_at: Timestamp::from_millis(
                            r.try_get("created_at").map_err(unavailable)?,
                        ),
                        last_notified_at: ts(r.try_get("last_notified_at").map_err(unavailable)?),
                    });
                }
            }
            load_jobs(&mut tx, now, &ids, &index, &mut due).await?;
            let ctx = self.monitor_context(&mut tx, now, &due).await?;
            for d in &due {
                let verdict = judge(&ctx, d);
                apply(&mut tx, d, verdict, now, triggers, &mut report).await?;
            }
            report.examined = due.len();
        }
        report.next_deadline = next_deadline_in(&mut tx).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(report)
    }

    async fn next_deadline(&self) -> StoreResult<Option<Timestamp>> {
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT min(deadline_at) FROM services WHERE deleted_at IS NULL \
             AND deadline_at IS NOT NULL",
        )
        .fetch_one(&self.read)
        .await
        .map_err(unavailable)?;
        Ok(ts(v))
    }

    async fn get_alert(&self, id: i64) -> StoreResult<Option<Alert>> {
        sqlx::query("SELECT * FROM alerts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(unavailable)?
            .map(|r| Alert::from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    async fn list_alerts_filtered(
        &self,
        f: &AlertFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Alert>> {
        let push = |qb: &mut QueryBuilder<Sqlite>| {
            qb.push(" FROM alerts WHERE 1 = 1");
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
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT count(*)");
        push(&mut qb);
        let total: i64 = qb
            .build_query_scalar()
            .fetch_one(&self.read)
            .await
            .map_err(unavailable)?;
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT *");
        push(&mut qb);
        qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(page.limit))
            .push(" OFFSET ")
            .push_bind(i64::from(page.offset));
        let rows = qb
            .build()
            .fetch_all(&self.read)
            .await
            .map_err(unavailable)?;
        let entries = rows
            .iter()
            .map(Alert::from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        Ok(Page {
            entries,
            total_count: total,
        })
    }

    async fn open_alert_counts(&self) -> StoreResult<OpenAlertCounts> {
        let rows = sqlx::query(
            "SELECT priority, team, count(*) FROM alerts WHERE state <> 'resolved' \
             GROUP BY priority, team",
        )
        .fetch_all(&self.read)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<Option<String>, _>(0)?
                        .and_then(|p| Priority::parse(&p)),
                    r.try_get(1)?,
                    r.try_get(2)?,
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(unavailable)
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let rows = sqlx::query(
            "UPDATE deliveries SET lease_until = $1 WHERE id IN ( \
                 SELECT id FROM deliveries WHERE state = 'pending' AND next_attempt_at <= $2 \
                 AND (lease_until IS NULL OR lease_until <= $2) \
                 ORDER BY next_attempt_at, id LIMIT $3) RETURNING *",
        )
        .bind(lease_until)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let delivery = DeliveryRecord::from_row(r).map_err(unavailable)?;
            let alert = sqlx::query("SELECT * FROM alerts WHERE id = $1")
                .bind(delivery.alert_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
            let alert = Alert::from_row(&alert).map_err(unavailable)?;
            let sql = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = $1");
            let service = sqlx::query(AssertSqlSafe(sql))
                .bind(alert.service_id.0)
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
            out.push(ClaimedDelivery {
                delivery,
                alert,
                service: Service::from_row(&service).map_err(unavailable)?,
            });
        }
        tx.commit().await.map_err(unavailable)?;
        out.sort_by_key(|c| (c.delivery.next_attempt_at, c.delivery.id));
        Ok(out)
    }

    async fn finish_delivery(&self, id: i64, res: &DeliveryResult) -> StoreResult<()> {
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let done = res.state != DeliveryState::Pending;
        let row = sqlx::query(
            "UPDATE deliveries SET state = $1, attempts = attempts + 1, \
             next_attempt_at = coalesce($2, next_attempt_at), lease_until = NULL, \
             last_status = $3, last_error = $4, external_ref = coalesce($5, external_ref), \
             finished_at = $6 WHERE id = $7 RETURNING alert_id, event, channel",
        )
        .bind(res.state.as_str())
        .bind(res.next_attempt_at.map(Timestamp::millis))
        .bind(res.status)
        .bind(&res.error)
        .bind(&res.external_ref)
        .bind(done.then_some(res.at.millis()))
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
                    "UPDATE alerts SET external_reference_id = coalesce(external_reference_id, $1) \
                     WHERE id = $2",
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

    async fn list_deliveries(
        &self,
        target: TargetId,
        page: PageRequest,
    ) -> StoreResult<Page<DeliveryRecord>> {
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE target_id = $1")
            .bind(target.0)
            .fetch_one(&self.read)
            .await
            .map_err(unavailable)?;
        let rows = sqlx::query(
            "SELECT * FROM deliveries WHERE target_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3",
        )
        .bind(target.0)
        .bind(i64::from(page.limit))
        .bind(i64::from(page.offset))
        .fetch_all(&self.read)
        .await
        .map_err(unavailable)?;
        let entries = rows
            .iter()
            .map(DeliveryRecord::from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        Ok(Page {
            entries,
            total_count: total,
        })
    }

    async fn next_delivery_at(&self) -> StoreResult<Option<Timestamp>> {
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT min(max(next_attempt_at, coalesce(lease_until, 0))) FROM deliveries \
             WHERE state = 'pending'",
        )
        .fetch_one(&self.read)
        .await
        .map_err(unavailable)?;
        Ok(ts(v))
    }
}

async fn next_deadline_in(tx: &mut Transaction<'_, Sqlite>) -> StoreResult<Option<Timestamp>> {
    let v: Option<i64> = sqlx::query_scalar(
        "SELECT min(deadline_at) FROM services WHERE deleted_at IS NULL \
         AND deadline_at IS NOT NULL",
    )
    .fetch_one(&mut **tx)
    .await
    .map_err(unavailable)?;
    Ok(ts(v))
}

async fn apply(
    tx: &mut Transaction<'_, Sqlite>,
    d: &DueService,
    v: Verdict,
    now: Timestamp,
    triggers: &dyn AlertTriggers,
    report: &mut PassReport,
) -> StoreResult<()> {
    sqlx::query("UPDATE services SET state = coalesce($1, state), deadline_at = $2 WHERE id = $3")
        .bind(v.state.map(ServiceState::as_str))
        .bind(v.deadline_at.map(Timestamp::millis))
        .bind(d.service.id.0)
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
    for op in v.alerts {
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
                    "INSERT INTO alerts (service_id, kind, name, state, dedup_key, created_at, \
                     priority, team, down_since, last_notified_at, summary, run_id) \
                     VALUES ($1, $2, $3, 'open', $4, $5, $6, $7, $8, $5, $9, $10) \
                     ON CONFLICT DO NOTHING RETURNING id",
                )
                .bind(d.service.id.0)
                .bind(kind.as_str())
                .bind(&name)
                .bind(&dedup_key)
                .bind(now)
                .bind(priority.as_str())
                .bind(&team)
                .bind(down_since)
                .bind(&summary)
                .bind(&run_id)
                .fetch_optional(&mut **tx)
                .await
                .map_err(unavailable)?;
                if let Some(id) = id {
                    queue(tx, id, EventKind::Triggered, &notify, None, now).await?;
                    fire_triggers(tx, d, id, kind, now, triggers, report).await?;
                    // Lag counts from when the alert became due: the deadline the monitor woke
                    // for (a window's end, say), never before the service went down.
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
                .map_err(unavailable)?
                .rows_affected();
                if changed == 1 {
                    queue(tx, alert_id, EventKind::Renotified, &notify, None, now).await?;
                    report.renotified += 1;
                    // An escalation: triggers that wanted more missed intervals may fire now.
                    if d.live_alert.as_ref().is_some_and(|a| a.id == alert_id) {
                        fire_triggers(
                            tx,
                            d,
                            alert_id,
                            AlertKind::HeartbeatMissing,
                            now,
                            triggers,
                            report,
                        )
                        .await?;
                    }
                }
            }
            AlertOp::Resolve { alert_id, reason } => {
                let changed = sqlx::query(
                    "UPDATE alerts SET state = 'resolved', resolved_at = $1, resolve_reason = $2 \
                     WHERE id = $3 AND state <> 'resolved'",
                )
                .bind(now)
                .bind(&reason)
                .bind(alert_id)
                .execute(&mut **tx)
                .await
                .map_err(unavailable)?
                .rows_affected();
                if changed == 1 {
                    queue_follow_up(tx, alert_id, EventKind::Resolved, None, now).await?;
                    report.resolved += 1;
                }
            }
        }
    }
    for s in v.suppressions {
        let inserted = sqlx::query(
            "INSERT INTO alert_suppressions (service_id, kind, reason, incident_key, \
             parent_alert_id, created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(d.service.id.0)
        .bind(s.kind.as_str())
        .bind(s.reason.as_str())
        .bind(&s.incident_key)
        .bind(s.parent_alert_id)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if inserted == 1 {
            report.suppressed.push(s.reason);
        }
    }
    Ok(())
}

async fn load_jobs(
    tx: &mut Transaction<'_, Sqlite>,
    now: Timestamp,
    ids: &[i64],
    index: &HashMap<i64, usize>,
    due: &mut [DueService],
) -> StoreResult<()> {
    let mut qb = QueryBuilder::<Sqlite>::new(
        "SELECT service_id, run_id, status, started_at, finished_at FROM job_runs j \
         WHERE (status = 'running' OR finished_at = \
           (SELECT max(finished_at) FROM job_runs k \
            WHERE k.service_id = j.service_id AND k.status <> 'running')) AND service_id IN (",
    );
    let mut sep = qb.separated(", ");
    for id in ids {
        sep.push_bind(*id);
    }
    qb.push(") ORDER BY service_id, id DESC");
    let mut run_ids: Vec<String> = Vec::new();
    for r in qb.build().fetch_all(&mut **tx).await.map_err(unavailable)? {
        let sid: i64 = r.try_get("service_id").map_err(unavailable)?;
        let Some(d) = index.get(&sid).map(|i| &mut due[*i]) else {
            continue;
        };
        let run = RunView {
            run_id: r.try_get("run_id").map_err(unavailable)?,
            status: decode(
                "run status",
                RunStatus::parse(r.try_get("status").map_err(unavailable)?),
            )
            .map_err(unavailable)?,
            started_at: ts(r.try_get("started_at").map_err(unavailable)?),
            finished_at: ts(r.try_get("finished_at").map_err(unavailable)?),
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
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT a.service_id, r.id, r.agent_id, s.name AS script, r.refusal_reason, \
             r.refusal_detail, r.finished_at FROM agents a \
             JOIN agent_runs r ON r.agent_id = a.id AND r.status = 'refused' \
             JOIN scripts s ON s.id = r.script_id WHERE r.finished_at >= ",
        );
        qb.push_bind(now.millis() - DAY_MS);
        qb.push(" AND r.refusal_reason IN (");
        let mut sep = qb.separated(", ");
        for reason in ALERTING_REFUSALS {
            sep.push_bind(reason.as_str());
        }
        qb.push(") AND a.service_id IN (");
        let mut sep = qb.separated(", ");
        for id in ids {
            sep.push_bind(*id);
        }
        qb.push(") ORDER BY r.finished_at DESC");
        for r in qb.build().fetch_all(&mut **tx).await.map_err(unavailable)? {
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
                    at: Timestamp::from_millis(r.try_get("finished_at").map_err(unavailable)?),
                });
            }
        }
    }
    let mut qb = QueryBuilder::<Sqlite>::new(
        "SELECT id, service_id, kind, run_id, state, dedup_key FROM alerts \
         WHERE kind <> 'heartbeat_missing' AND service_id IN (",
    );
    let mut sep = qb.separated(", ");
    for id in ids {
        sep.push_bind(*id);
    }
    qb.push(") AND (state <> 'resolved' OR run_id IN (");
    let mut sep = qb.separated(", ");
    sep.push_bind(String::new());
    for r in run_ids.iter().take(2000) {
        sep.push_bind(r.clone());
    }
    qb.push("))");
    for r in qb.build().fetch_all(&mut **tx).await.map_err(unavailable)? {
        let sid: i64 = r.try_get("service_id").map_err(unavailable)?;
        let Some(d) = index.get(&sid).map(|i| &mut due[*i]) else {
            continue;
        };
        d.job_alerts.push(JobAlertView {
            id: r.try_get("id").map_err(unavailable)?,
            kind: decode(
                "alert kind",
                AlertKind::parse(r.try_get("kind").map_err(unavailable)?),
            )
            .map_err(unavailable)?,
            run_id: r.try_get("run_id").map_err(unavailable)?,
            state: decode(
                "alert state",
                AlertState::parse(r.try_get("state").map_err(unavailable)?),
            )
            .map_err(unavailable)?,
            dedup_key: r.try_get("dedup_key").map_err(unavailable)?,
        });
    }
    Ok(())
}

/// Evaluates the alert triggers for an alert this pass opened or escalated and inserts the
/// executions they start, in the pass's transaction (at most one per playbook and alert).
async fn fire_triggers(
    tx: &mut Transaction<'_, Sqlite>,
    d: &DueService,
    alert_id: i64,
    kind: AlertKind,
    now: Timestamp,
    triggers: &dyn AlertTriggers,
    report: &mut PassReport,
) -> StoreResult<()> {
    use super::executions::insert_execution;
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
            .bind(d.service.id.0)
            .fetch_all(&mut **tx)
            .await
            .map_err(unavailable)?;
            let failed = recent.iter().take_while(|s| s.as_str() == "failed").count();
            u32::try_from(failed.max(1)).unwrap_or(u32::MAX)
        }
        AlertKind::JobOverdue | AlertKind::RunRefused => 1,
    };
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT playbook_id, max(created_at) FROM playbook_executions \
         WHERE service_id = $1 AND trigger = 'alert' GROUP BY playbook_id",
    )
    .bind(d.service.id.0)
    .fetch_all(&mut **tx)
    .await
    .map_err(unavailable)?;
    let last_fired: HashMap<i64, Timestamp> = rows
        .into_iter()
        .map(|(p, at)| (p, Timestamp::from_millis(at)))
        .collect();
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
        insert_execution(tx, &start.new, start.window_from, &*start.build).await?;
        report.executions_started += 1;
    }
    Ok(())
}
