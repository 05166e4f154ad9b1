//! The monitor's pass on PostgreSQL; alerts and the notification outbox are
//! `shared/alerting.rs`.
//!
//! Several server processes may share the database. A monitor pass takes its due services with
//! `FOR NO KEY UPDATE SKIP LOCKED` inside one transaction: each due service is judged by exactly
//! one process, the others skip it, and a killed process's transaction is rolled back with its
//! locks released, so another replica takes the services over on its next pass. Deliveries are
//! leased (`lease_until`) instead, since a delivery waits on the network: a dispatcher that dies
//! holding one leaves it to others once the lease runs out.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Postgres, Row, Transaction};

use super::*;
use crate::domain::{ServiceState, Timestamp};
use crate::store::shared::alerting::AlertSql;

impl AlertSql for Postgres {
    const NEXT_DELIVERY_AT: &'static str = "SELECT min(GREATEST(next_attempt_at, lease_until)) \
        FROM deliveries WHERE state = 'pending'";
    const MAX_RUN_IDS: usize = usize::MAX;
}

/// Reads one row of the latest-alert query into its due service.
fn latest_alert(
    r: &PgRow,
    index: &HashMap<i64, usize>,
    due: &mut [DueService],
) -> Result<(), sqlx::Error> {
    let sid: i64 = r.try_get("service_id")?;
    let Some(d) = index.get(&sid).map(|i| &mut due[*i]) else {
        return Ok(());
    };
    d.last_incident_key = Some(r.try_get("dedup_key")?);
    if r.try_get::<bool, _>("live")? {
        d.live_alert = Some(LiveAlert {
            id: r.try_get("id")?,
            state: r.try_get("state")?,
            created_at: r.try_get("created_at")?,
            last_notified_at: r.try_get("last_notified_at")?,
        });
    }
    Ok(())
}

impl PgStore {
    async fn monitor_context(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        now: Timestamp,
        due: &[DueService],
    ) -> StoreResult<MonitorContext> {
        let teams = self.list_teams().await?;
        let targets = self.list_targets(&TargetFilter::default()).await?;
        let windows = self.list_windows(&WindowFilter::default()).await?;
        Sql::monitor_context(tx, now, due, teams, targets, windows).await
    }
}

#[async_trait::async_trait]
impl AlertStore for PgStore {
    async fn open_alert(&self, new: &NewAlert) -> StoreResult<Alert> {
        Sql::open_alert(&self.pool, new).await
    }

    async fn list_alerts(&self, active: Option<bool>, limit: u32) -> StoreResult<Vec<Alert>> {
        Sql::list_alerts(&self.pool, active, limit).await
    }

    async fn acknowledge_alert(
        &self,
        id: i64,
        actor: &str,
        at: Timestamp,
        audit: Option<AuditWith<'_, Alert>>,
    ) -> StoreResult<AlertChange> {
        Sql::change_alert(&self.pool, id, actor, at, false, audit).await
    }

    async fn resolve_alert(
        &self,
        id: i64,
        actor: &str,
        at: Timestamp,
        audit: Option<AuditWith<'_, Alert>>,
    ) -> StoreResult<AlertChange> {
        Sql::change_alert(&self.pool, id, actor, at, true, audit).await
    }

    async fn monitor_pass_triggering(
        &self,
        now: Timestamp,
        limit: u32,
        judge: &Judge<'_>,
        triggers: &dyn AlertTriggers,
    ) -> StoreResult<PassReport> {
        let mut report = PassReport::default();
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let sql = format!(
            "SELECT {SERVICE_COLUMNS}, deadline_at FROM services WHERE deleted_at IS NULL AND deadline_at <= $1 \
             ORDER BY deadline_at LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED"
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
                    deadline_at: r.try_get("deadline_at").map_err(unavailable)?,
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
            Sql::load_recent_beats(&mut tx, &mut due).await?;
            let rows = sqlx::query(
                // One index probe per service (alerts_service), not a scan of every alert.
                "SELECT a.id, a.service_id, a.state, a.created_at, a.last_notified_at, \
                 a.dedup_key, a.state <> 'resolved' AS live \
                 FROM unnest($1::bigint[]) AS s(id) CROSS JOIN LATERAL ( \
                     SELECT * FROM alerts WHERE service_id = s.id \
                     AND kind = 'heartbeat_missing' ORDER BY created_at DESC, id DESC LIMIT 1) a",
            )
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
            for r in &rows {
                latest_alert(r, &index, &mut due).map_err(unavailable)?;
            }
            Sql::load_jobs(&mut tx, now, &ids, &index, &mut due).await?;
            let ctx = self.monitor_context(&mut tx, now, &due).await?;
            let mut states: Vec<Option<&'static str>> = Vec::with_capacity(due.len());
            let mut deadlines: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(due.len());
            for d in &due {
                let Verdict {
                    state,
                    deadline_at,
                    alerts,
                    suppressions,
                } = judge(&ctx, d);
                states.push(state.map(ServiceState::as_str));
                deadlines.push(deadline_at.map(Timestamp::datetime));
                Sql::apply(&mut tx, d, alerts, suppressions, now, triggers, &mut report).await?;
            }
            // Every judged service's state and next deadline in one statement: a pass at
            // 100,000 services must not cost a round trip per service while it holds row locks
            // the heartbeat writer is waiting on.
            sqlx::query(
                "UPDATE services s SET state = coalesce(u.state, s.state), deadline_at = u.deadline \
                 FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS u(id, state, deadline) \
                 WHERE s.id = u.id",
            )
            .bind(&ids)
            .bind(&states)
            .bind(&deadlines)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            report.examined = due.len();
        }
        tx.commit().await.map_err(unavailable)?;
        report.next_deadline = self.next_deadline().await?;
        Ok(report)
    }

    async fn next_deadline(&self) -> StoreResult<Option<Timestamp>> {
        Sql::next_deadline(&self.pool).await
    }

    async fn get_alert(&self, id: i64) -> StoreResult<Option<Alert>> {
        Sql::get_alert(&self.pool, id).await
    }

    async fn list_alerts_filtered(
        &self,
        f: &AlertFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Alert>> {
        Sql::list_alerts_filtered(&self.pool, f, page).await
    }

    async fn open_alert_counts(&self) -> StoreResult<OpenAlertCounts> {
        Sql::open_alert_counts(&self.pool).await
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        Sql::claim_deliveries(&self.pool, now, lease_until, limit).await
    }

    async fn finish_delivery(&self, id: i64, res: &DeliveryResult) -> StoreResult<()> {
        Sql::finish_delivery(&self.pool, id, res).await
    }

    async fn list_deliveries(
        &self,
        target: TargetId,
        page: PageRequest,
    ) -> StoreResult<Page<DeliveryRecord>> {
        Sql::list_deliveries(&self.pool, target, page).await
    }

    async fn next_delivery_at(&self) -> StoreResult<Option<Timestamp>> {
        Sql::next_delivery_at(&self.pool).await
    }
}
