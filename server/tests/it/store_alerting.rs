//! Store conformance for the monitor pass, alert changes and the outbox (SQLite always,
//! PostgreSQL when configured). Time is a parameter of every store call, so these checks walk
//! a service through its life without sleeping.

use medic_server::domain::service::name_key;
use medic_server::domain::{HeartbeatName, Priority, ServiceState, Timestamp};
use medic_server::monitor::judge::{self, Defaults};
use medic_server::notify::event::{Destination, EventKind};
use medic_server::store::*;

conformance! {
    a_silent_service_opens_one_alert_renotifies_and_resolves,
    heartbeats_move_the_deadline,
    operator_ack_and_resolve_queue_follow_ups,
    outbox_leases_retries_and_log,
    suppressions_are_recorded_once,
    housekeeping_trims_old_rows_in_batches,
    a_service_down_through_a_window_alerts_when_it_closes,
}

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const MIN: i64 = 60_000;

fn t(offset_ms: i64) -> Timestamp {
    Timestamp::from_millis(T0 + offset_ms)
}

fn defaults() -> Defaults {
    Defaults {
        destinations: vec![
            Destination::Pagerduty {
                routing_key: "legacy-key".into(),
            },
            Destination::Slack {
                channel: "C-LEGACY".into(),
            },
        ],
    }
}

async fn pass(store: &dyn Store, now: Timestamp) -> PassReport {
    let d = defaults();
    let j = |ctx: &MonitorContext, s: &DueService| judge::judge(now, &d, ctx, s);
    store.monitor_pass(now, 1000, &j).await.expect("pass")
}

async fn service(store: &dyn Store, name: &str, interval_s: i64) -> Service {
    match store
        .create_service(&NewService {
            heartbeat_name: HeartbeatName::parse(name).expect("name"),
            service_name: String::new(),
            environment: None,
            interval_seconds: interval_s,
            threshold: 1,
            grace_seconds: 0,
            team: "ops".into(),
            priority: Priority::P1,
            runbook: Some("https://runbooks.example/x".into()),
            max_duration_ms: None,
            monitoring: Default::default(),
            at: t(0),
        })
        .await
        .expect("create")
    {
        CreateOutcome::Created(s) => s,
        other => panic!("not created: {other:?}"),
    }
}

async fn beat(store: &dyn Store, name: &str, at: Timestamp) {
    store
        .record_heartbeats(&[NewHeartbeat {
            name_key: name_key(name),
            status: "up".into(),
            run_id: None,
            received_at: at,
        }])
        .await
        .expect("beat");
}

async fn claim_all(store: &dyn Store, now: Timestamp) -> Vec<ClaimedDelivery> {
    store
        .claim_deliveries(now, now.plus_millis(30_000), 100)
        .await
        .expect("claim")
}

fn delivered(at: Timestamp) -> DeliveryResult {
    DeliveryResult {
        at,
        state: DeliveryState::Delivered,
        next_attempt_at: None,
        status: Some(202),
        error: None,
        external_ref: Some("ext-1".into()),
    }
}

async fn a_silent_service_opens_one_alert_renotifies_and_resolves(store: &dyn Store) {
    let s = service(store, "nightly", 60).await;
    // Never heard from: due one interval after registration, not before.
    assert_eq!(pass(store, t(30_000)).await.examined, 0);
    let r = pass(store, t(MIN)).await;
    assert_eq!((r.examined, r.opened.len()), (1, 1));
    assert_eq!(r.opened[0].1, Priority::P1);
    // The next pass does not open it again.
    let r = pass(store, t(MIN + 1000)).await;
    assert_eq!(r.opened.len(), 0);
    let alerts = store
        .list_alerts_filtered(
            &AlertFilter::default(),
            PageRequest {
                limit: 10,
                offset: 0,
            },
        )
        .await
        .expect("list");
    assert_eq!(alerts.total_count, 1);
    let a = &alerts.entries[0];
    assert_eq!(a.state, AlertState::Open);
    assert_eq!(a.kind, AlertKind::HeartbeatMissing);
    assert_eq!(a.details.down_since, Some(t(MIN)));
    assert_eq!(a.details.team.as_deref(), Some("ops"));
    assert_eq!(
        store
            .get_service(s.id)
            .await
            .expect("get")
            .expect("svc")
            .state,
        ServiceState::Down
    );
    // Two deliveries: PagerDuty and Slack, the defaults.
    let claimed = claim_all(store, t(MIN + 1000)).await;
    assert_eq!(claimed.len(), 2);
    assert!(
        claimed
            .iter()
            .all(|c| c.delivery.event == EventKind::Triggered)
    );
    for c in &claimed {
        store
            .finish_delivery(c.delivery.id, &delivered(t(MIN + 1100)))
            .await
            .expect("finish");
    }
    // One interval later: re-notify chat only (PagerDuty escalates on its own).
    let r = pass(store, t(2 * MIN + 1000)).await;
    assert_eq!(r.renotified, 1);
    let claimed = claim_all(store, t(2 * MIN + 1000)).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].delivery.event, EventKind::Renotified);
    assert_eq!(claimed[0].delivery.destination.channel(), "slack");
    store
        .finish_delivery(claimed[0].delivery.id, &delivered(t(2 * MIN + 1100)))
        .await
        .expect("finish");
    // A heartbeat makes it due at once; the pass resolves and tells both destinations.
    beat(store, "nightly", t(2 * MIN + 5000)).await;
    let r = pass(store, t(2 * MIN + 5100)).await;
    assert_eq!(r.resolved, 1);
    let claimed = claim_all(store, t(2 * MIN + 5100)).await;
    assert_eq!(claimed.len(), 2);
    assert!(
        claimed
            .iter()
            .all(|c| c.delivery.event == EventKind::Resolved)
    );
    let a = store
        .get_alert(a.alert_id)
        .await
        .expect("get")
        .expect("alert");
    assert_eq!(a.state, AlertState::Resolved);
    assert_eq!(a.details.resolve_reason.as_deref(), Some("recovered"));
    assert_eq!(a.external_reference_id.as_deref(), Some("ext-1"));
    assert_eq!(
        store
            .get_service(s.id)
            .await
            .expect("get")
            .expect("svc")
            .state,
        ServiceState::Up
    );
    let counts = store.open_alert_counts().await.expect("counts");
    assert!(counts.is_empty(), "{counts:?}");
}

async fn heartbeats_move_the_deadline(store: &dyn Store) {
    service(store, "web", 60).await;
    assert_eq!(store.next_deadline().await.expect("next"), Some(t(MIN)));
    beat(store, "web", t(10_000)).await;
    // A new service's first beat makes it due now (state new → up is the monitor's call).
    assert_eq!(store.next_deadline().await.expect("next"), Some(t(10_000)));
    let r = pass(store, t(10_100)).await;
    assert_eq!(r.examined, 1);
    assert_eq!(store.next_deadline().await.expect("next"), Some(t(70_000)));
    // An up service's beats push the deadline without waking the monitor.
    beat(store, "web", t(40_000)).await;
    assert_eq!(store.next_deadline().await.expect("next"), Some(t(100_000)));
    assert_eq!(pass(store, t(50_000)).await.examined, 0);
}

async fn operator_ack_and_resolve_queue_follow_ups(store: &dyn Store) {
    service(store, "batch", 60).await;
    pass(store, t(MIN)).await;
    let a = store
        .list_alerts_filtered(
            &AlertFilter::default(),
            PageRequest {
                limit: 1,
                offset: 0,
            },
        )
        .await
        .expect("list")
        .entries
        .remove(0);
    for c in claim_all(store, t(MIN)).await {
        store
            .finish_delivery(c.delivery.id, &delivered(t(MIN)))
            .await
            .expect("finish");
    }
    // The change and its audit entry (built from the changed alert) commit together; a change
    // that does not apply writes no entry.
    let audit = |who: &'static str| {
        move |changed: &Alert| NewAuditEntry {
            on_behalf_of: None,
            action_type: "alert_acknowledged".into(),
            actor: who.into(),
            service_id: Some(changed.service_id),
            execution_id: None,
            details: serde_json::json!({ "alert_id": changed.alert_id, "state": changed.state.as_str() }),
            at: t(MIN + 10),
        }
    };
    let AlertChange::Changed(acked) = store
        .acknowledge_alert(a.alert_id, "alice", t(MIN + 10), Some(&audit("alice")))
        .await
        .expect("ack")
    else {
        panic!("not acknowledged");
    };
    assert_eq!(acked.state, AlertState::Acknowledged);
    assert_eq!(acked.details.acknowledged_by.as_deref(), Some("alice"));
    assert!(matches!(
        store
            .acknowledge_alert(a.alert_id, "bob", t(MIN + 20), Some(&audit("bob")))
            .await
            .expect("ack"),
        AlertChange::Unchanged(_)
    ));
    let entries = crate::db::audit_log(store, Some("alert_acknowledged")).await;
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0].actor, "alice");
    assert_eq!(entries[0].service_id, Some(acked.service_id));
    assert_eq!(entries[0].details["state"], "acknowledged");
    let claimed = claim_all(store, t(MIN + 20)).await;
    assert_eq!(claimed.len(), 2);
    assert!(
        claimed
            .iter()
            .all(|c| c.delivery.event == EventKind::Acknowledged
                && c.delivery.actor.as_deref() == Some("alice"))
    );
    // Acknowledged: no re-notification.
    assert_eq!(pass(store, t(3 * MIN)).await.renotified, 0);
    let AlertChange::Changed(resolved) = store
        .resolve_alert(a.alert_id, "alice", t(3 * MIN), None)
        .await
        .expect("resolve")
    else {
        panic!("not resolved");
    };
    assert_eq!(resolved.details.resolved_by.as_deref(), Some("alice"));
    // Still silent: the incident an operator resolved is not opened again.
    let r = pass(store, t(10 * MIN)).await;
    assert_eq!(r.opened.len(), 0);
    assert!(matches!(
        store
            .resolve_alert(999_999, "x", t(0), None)
            .await
            .expect("resolve"),
        AlertChange::NotFound
    ));
}

async fn outbox_leases_retries_and_log(store: &dyn Store) {
    let s = service(store, "api", 60).await;
    let target = store
        .create_target(
            &NewTarget {
                owner: TargetOwner::Service(s.id),
                config: TargetConfig::Webhook {
                    url: "https://hooks.example/x".into(),
                    secret: "s3cret".into(),
                },
                priority: 0,
                period: medic_server::domain::monitor::PagingPeriod::Always,
                enabled: true,
                at: t(0),
            },
            None,
        )
        .await
        .expect("target");
    pass(store, t(MIN)).await;
    let first = claim_all(store, t(MIN)).await;
    assert_eq!(first.len(), 1, "routed to the service's own target only");
    assert_eq!(first[0].delivery.target_id, Some(target.id));
    // Leased: a second dispatcher sees nothing until the lease runs out.
    assert!(claim_all(store, t(MIN + 1000)).await.is_empty());
    assert_eq!(claim_all(store, t(MIN + 31_000)).await.len(), 1);
    store
        .finish_delivery(
            first[0].delivery.id,
            &DeliveryResult {
                at: t(MIN + 31_000),
                state: DeliveryState::Pending,
                next_attempt_at: Some(t(MIN + 40_000)),
                status: Some(500),
                error: Some("HTTP 500".into()),
                external_ref: None,
            },
        )
        .await
        .expect("retry");
    assert!(claim_all(store, t(MIN + 39_000)).await.is_empty());
    assert_eq!(
        store.next_delivery_at().await.expect("next"),
        Some(t(MIN + 40_000))
    );
    let again = claim_all(store, t(MIN + 40_000)).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.attempts, 1);
    store
        .finish_delivery(again[0].delivery.id, &delivered(t(MIN + 41_000)))
        .await
        .expect("finish");
    let log = store
        .list_deliveries(
            target.id,
            PageRequest {
                limit: 10,
                offset: 0,
            },
        )
        .await
        .expect("log");
    assert_eq!(log.total_count, 1);
    let d = &log.entries[0];
    assert_eq!(d.state, DeliveryState::Delivered);
    assert_eq!(d.attempts, 2);
    assert_eq!(d.last_status, Some(202));
    assert_eq!(d.finished_at, Some(t(MIN + 41_000)));
    assert_eq!(store.next_delivery_at().await.expect("next"), None);
}

async fn suppressions_are_recorded_once(store: &dyn Store) {
    let s = service(store, "muted", 60).await;
    let patch = ServicePatch {
        mute: Some(MuteChange::Mute {
            until: None,
            reason: Some("noisy".into()),
        }),
        ..ServicePatch::default()
    };
    store
        .update_service(
            s.id,
            &patch,
            &ChangeMeta {
                action: medic_server::domain::SnapshotAction::Mute,
                actor: Actor::new("alice"),
                at: t(1000),
            },
        )
        .await
        .expect("mute")
        .expect("service");
    let r = pass(store, t(2 * MIN)).await;
    assert_eq!(r.opened.len(), 0);
    assert_eq!(r.suppressed, vec![SuppressionReason::Muted]);
    let r = pass(store, t(3 * MIN)).await;
    assert!(r.suppressed.is_empty(), "recorded once per incident");
    assert_eq!(
        store
            .list_alerts_filtered(
                &AlertFilter::default(),
                PageRequest {
                    limit: 1,
                    offset: 0
                }
            )
            .await
            .expect("list")
            .total_count,
        0
    );
}

async fn housekeeping_trims_old_rows_in_batches(store: &dyn Store) {
    service(store, "old", 60).await;
    for i in 0..25 {
        beat(store, "old", t(i * 1000)).await;
    }
    beat(store, "old", t(40 * 86_400_000)).await;
    // Alert opened and resolved long ago, with a delivered notification.
    pass(store, t(40 * 86_400_000 - 1)).await;
    let retention = Retention {
        heartbeats_ms: 30 * 86_400_000,
        ..Retention::default()
    };
    let now = t(40 * 86_400_000 + 1000);
    let stop = tokio_util::sync::CancellationToken::new();
    let report = medic_server::monitor::housekeep(store, &retention, now, &stop).await;
    let hb = report
        .iter()
        .find(|(t, _)| *t == PurgeTable::HeartbeatEvents)
        .expect("heartbeats")
        .1;
    assert_eq!(hb, 25);
    let left = store
        .list_heartbeats(&HeartbeatQuery {
            service_id: None,
            name_key: None,
            service_name: None,
            limit: 100,
            offset: 0,
        })
        .await
        .expect("list");
    assert_eq!(left.len(), 1);
    // Batches: a limit of 10 deletes 10 at a time.
    for i in 0..15 {
        beat(store, "old", t(i)).await;
    }
    let n = store
        .purge_batch(PurgeTable::HeartbeatEvents, t(1000), 10)
        .await
        .expect("purge");
    assert_eq!(n, 10);
}

async fn a_service_down_through_a_window_alerts_when_it_closes(store: &dyn Store) {
    let s = service(store, "maint", 60).await;
    store
        .create_window(
            &NewWindow {
                scope: WindowScope::Service(s.id),
                window: medic_server::domain::schedule::MaintenanceWindow::one_time(
                    t(30_000),
                    t(5 * MIN),
                )
                .expect("window"),
                reason: Some("upgrade".into()),
                created_by: "alice".into(),
                at: t(0),
            },
            None,
        )
        .await
        .expect("window");
    let r = pass(store, t(2 * MIN)).await;
    assert!(r.opened.is_empty());
    assert_eq!(r.suppressed, vec![SuppressionReason::Maintenance]);
    // The pass sleeps until the window closes, then alerts for the same incident.
    assert_eq!(store.next_deadline().await.expect("next"), Some(t(5 * MIN)));
    let r = pass(store, t(5 * MIN)).await;
    assert_eq!(r.opened.len(), 1);
    assert_eq!(
        r.opened[0].3,
        t(5 * MIN),
        "lag counts from the window's end"
    );
    let a = store
        .list_alerts_filtered(
            &AlertFilter::default(),
            PageRequest {
                limit: 1,
                offset: 0,
            },
        )
        .await
        .expect("list")
        .entries
        .remove(0);
    assert_eq!(a.details.down_since, Some(t(MIN)));
}
