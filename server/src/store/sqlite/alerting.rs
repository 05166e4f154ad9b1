//! The monitor's pass on SQLite; alerts and the notification outbox are `shared/alerting.rs`.
//!
//! One server process owns a SQLite file (see the module docs of [`super`]), so a pass needs no
//! row locks: it runs in one write transaction on the single writer connection.

use std::collections::HashMap;

use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite, Transaction};

use super::*;
use crate::domain::{ServiceState, Timestamp};
use crate::store::shared::alerting::AlertSql;

impl AlertSql for Sqlite {
    const NEXT_DELIVERY_AT: &'static str = "SELECT min(max(next_attempt_at, \
        coalesce(lease_until, 0))) FROM deliveries WHERE state = 'pending'";
    // SQLite binds one parameter per value.
    const MAX_RUN_IDS: usize = 2000;
}

/// Reads one row of the latest-alert query into its due service.
fn latest_alert(
    r: &SqliteRow,
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

impl SqliteStore {
    async fn monitor_context(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
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
impl AlertStore for SqliteStore {
    async fn open_alert(&self, new: &NewAlert) -> StoreResult<Alert> {
        Sql::open_alert(&self.write, new).await
    }

    async fn list_alerts(&self, active: Option<bool>, limit: u32) -> StoreResult<Vec<Alert>> {
        Sql::list_alerts(&self.read, active, limit).await
    }

    async fn acknowledge_alert(
        &self,
        id: i64,
        actor: &str,
        at: Timestamp,
        audit: Option<AuditWith<'_, Alert>>,
    ) -> StoreResult<AlertChange> {
        Sql::change_alert(&self.write, id, actor, at, false, audit).await
    }

    async fn resolve_alert(
        &self,
        id: i64,
        actor: &str,
        at: Timestamp,
        audit: Option<AuditWith<'_, Alert>>,
    ) -> StoreResult<AlertChange> {
        Sql::change_alert(&self.write, id, actor, at, true, audit).await
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
            "SELECT {SERVICE_COLUMNS}, deadline_at FROM services WHERE deleted_at IS NULL \
             AND deadline_at <= $1 ORDER BY deadline_at LIMIT $2"
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
                latest_alert(&r, &index, &mut due).map_err(unavailable)?;
            }
            Sql::load_jobs(&mut tx, now, &ids, &index, &mut due).await?;
            let ctx = self.monitor_context(&mut tx, now, &due).await?;
            for d in &due {
                let verdict = judge(&ctx, d);
                sqlx::query(
                    "UPDATE services SET state = coalesce($1, state), deadline_at = $2 \
                     WHERE id = $3",
                )
                .bind(verdict.state.map(ServiceState::as_str))
                .bind(verdict.deadline_at)
                .bind(d.service.id.0)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
                let (ops, suppressions) = (verdict.alerts, verdict.suppressions);
                Sql::apply(&mut tx, d, ops, suppressions, now, triggers, &mut report).await?;
            }
            report.examined = due.len();
        }
        report.next_deadline = Sql::next_deadline(&mut *tx).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(report)
    }

    async fn next_deadline(&self) -> StoreResult<Option<Timestamp>> {
        Sql::next_deadline(&self.read).await
    }

    async fn get_alert(&self, id: i64) -> StoreResult<Option<Alert>> {
        Sql::get_alert(&self.read, id).await
    }

    async fn list_alerts_filtered(
        &self,
        f: &AlertFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Alert>> {
        Sql::list_alerts_filtered(&self.read, f, page).await
    }

    async fn open_alert_counts(&self) -> StoreResult<OpenAlertCounts> {
        Sql::open_alert_counts(&self.read).await
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        Sql::claim_deliveries(&self.write, now, lease_until, limit).await
    }

    async fn finish_delivery(&self, id: i64, res: &DeliveryResult) -> StoreResult<()> {
        Sql::finish_delivery(&self.write, id, res).await
    }

    async fn list_deliveries(
        &self,
        target: TargetId,
        page: PageRequest,
    ) -> StoreResult<Page<DeliveryRecord>> {
        Sql::list_deliveries(&self.read, target, page).await
    }

    async fn next_delivery_at(&self) -> StoreResult<Option<Timestamp>> {
        Sql::next_delivery_at(&self.read).await
    }
}
