//! Store conformance suite (runs against SQLite always, PostgreSQL when configured).
//!
//! Every check is written once, as an async function of the store, and run once per backend
//! (`store::sqlite::<check>` and `store::postgres::<check>`), so a failure names the backend.
//! Both backends must give the same answers; a difference is a bug in one of them.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::join_all;
use medic_server::domain::service::name_key;
use medic_server::domain::{
    ApiKeyId, HeartbeatName, OwnerId, OwnerKind, Priority, Scope, Scopes, ServiceId, ServiceState,
    SnapshotAction, SnapshotId, Timestamp,
};
use medic_server::store::*;
use serde_json::json;

use crate::db::TestDb;

conformance! {
    ping_and_pool_stats,
    heartbeats_batch_mixed_outcomes,
    heartbeats_large_batch,
    heartbeats_concurrent_batches,
    list_heartbeats_filters_and_paging,
    job_signal_lifecycle,
    job_signal_edge_cases,
    recent_run_durations_newest_first,
    list_runs_paging,
    create_and_find_services,
    concurrent_creates_of_one_name,
    list_services_filters,
    team_and_service_name_fold_ascii_only,
    list_services_paging,
    update_service_snapshots_before_image,
    update_service_mute_and_clear,
    concurrent_updates_lose_nothing,
    rename_onto_existing_name_conflicts,
    delete_and_restore,
    restore_edit_snapshot,
    snapshot_filters_and_paging,
    alerts_open_and_list,
    alerts_dedup_until_resolved(db),
    api_keys,
    key_owners,
    actor_and_on_behalf_of_are_kept_apart,
    audit_log_filters_and_paging,
    timestamps_round_trip_to_the_millisecond,
    a_refused_statement_is_not_an_outage,
}

// ---- helpers ------------------------------------------------------------------------------------

const T0: i64 = 1_767_225_600_123; // 2026-01-01T00:00:00.123Z

fn t(offset_ms: i64) -> Timestamp {
    Timestamp::from_millis(T0 + offset_ms)
}

fn page(limit: u32, offset: u32) -> PageRequest {
    PageRequest { limit, offset }
}

const ALL: PageRequest = PageRequest {
    limit: 1000,
    offset: 0,
};

fn new_service(name: &str) -> NewService {
    NewService {
        heartbeat_name: HeartbeatName::parse(name).unwrap(),
        service_name: format!("{name} service"),
        environment: None,
        interval_seconds: 60,
        threshold: 1,
        grace_seconds: 0,
        team: "site-reliability".into(),
        priority: Priority::P3,
        runbook: None,
        max_duration_ms: None,
        monitoring: Default::default(),
        at: t(0),
    }
}

#[track_caller]
fn created(o: CreateOutcome) -> Service {
    match o {
        CreateOutcome::Created(s) => s,
        CreateOutcome::Exists(s) => panic!("expected a new service, {} exists", s.heartbeat_name),
    }
}

async fn service(s: &dyn Store, name: &str) -> Service {
    created(s.create_service(&new_service(name)).await.unwrap())
}

async fn service_with(s: &dyn Store, new: NewService) -> Service {
    created(s.create_service(&new).await.unwrap())
}

fn hb(name: &str, status: &str, at: Timestamp) -> NewHeartbeat {
    NewHeartbeat {
        name_key: name_key(name),
        status: status.into(),
        run_id: None,
        received_at: at,
    }
}

fn change(action: SnapshotAction, actor: &str, at: Timestamp) -> ChangeMeta {
    ChangeMeta {
        action,
        actor: Actor::new(actor),
        at,
    }
}

async fn update(s: &dyn Store, id: ServiceId, patch: ServicePatch, at: Timestamp) -> Service {
    s.update_service(id, &patch, &change(SnapshotAction::Edit, "tester", at))
        .await
        .unwrap()
        .expect("service exists")
}

fn signal(id: ServiceId, kind: SignalKind, run_id: Option<&str>, at: Timestamp) -> JobSignal {
    JobSignal {
        service_id: id,
        kind,
        run_id: run_id.map(str::to_owned),
        exit_code: None,
        body: None,
        body_truncated: false,
        at,
    }
}

#[track_caller]
fn recorded(o: JobSignalOutcome) -> JobRun {
    match o {
        JobSignalOutcome::Recorded { run, .. } => run,
        other => panic!("expected a recorded signal, got {other:?}"),
    }
}

async fn heartbeats_of(s: &dyn Store, id: ServiceId) -> Vec<HeartbeatRow> {
    s.list_heartbeats(&HeartbeatQuery {
        service_id: Some(id),
        limit: 100_000,
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn snapshots_of(s: &dyn Store, id: ServiceId) -> Page<Snapshot> {
    s.list_snapshots(
        &SnapshotFilter {
            service_id: Some(id),
            ..Default::default()
        },
        ALL,
    )
    .await
    .unwrap()
}

// ---- basics -------------------------------------------------------------------------------------

async fn ping_and_pool_stats(s: &dyn Store) {
    s.ping().await.unwrap();
    let stats = s.pool_stats();
    assert!(stats.size >= 1, "{stats:?}");
    assert!(stats.idle <= stats.size, "{stats:?}");
    assert!(stats.size <= stats.max, "{stats:?}");
    // Migrating twice is a no-op.
    s.migrate().await.unwrap();
}

// ---- heartbeats ---------------------------------------------------------------------------------

async fn heartbeats_batch_mixed_outcomes(s: &dyn Store) {
    let alpha = service(s, "Alpha").await;
    let beta = service(s, "Beta").await;
    update(
        s,
        beta.id,
        ServicePatch {
            active: Some(false),
            ..Default::default()
        },
        t(1),
    )
    .await;

    assert_eq!(s.record_heartbeats(&[]).await.unwrap(), vec![]);

    let mut with_run = hb("ALPHA", "DEGRADED", t(30));
    with_run.run_id = Some("run-7".into());
    let out = s
        .record_heartbeats(&[
            hb("alpha", "UP", t(20)),
            hb("nobody", "UP", t(21)),
            hb("BETA", "UP", t(22)),
            with_run,
            hb("Alpha", "UP", t(10)),
        ])
        .await
        .unwrap();
    assert_eq!(out.len(), 5);
    let ids: Vec<i64> = [0, 3, 4]
        .iter()
        .map(|&i| match &out[i] {
            HeartbeatOutcome::Recorded {
                service_id,
                event_id,
            } => {
                assert_eq!(*service_id, alpha.id);
                *event_id
            }
            other => panic!("outcome {i}: {other:?}"),
        })
        .collect();
    assert!(
        ids[0] < ids[1] && ids[1] < ids[2],
        "event ids follow input order: {ids:?}"
    );
    assert_eq!(out[1], HeartbeatOutcome::UnknownService);
    assert_eq!(
        out[2],
        HeartbeatOutcome::Inactive {
            heartbeat_name: "Beta".into()
        }
    );

    // The newest heartbeat wins, whatever the order within the batch.
    let alpha_now = s.get_service(alpha.id).await.unwrap().unwrap();
    assert_eq!(alpha_now.last_heartbeat_at, Some(t(30)));
    assert_eq!(alpha_now.updated_at, alpha.updated_at);
    let beta_now = s.get_service(beta.id).await.unwrap().unwrap();
    assert_eq!(beta_now.last_heartbeat_at, None);
    assert!(heartbeats_of(s, beta.id).await.is_empty());

    // An older heartbeat later does not move last_heartbeat_at back.
    s.record_heartbeats(&[hb("alpha", "UP", t(5))])
        .await
        .unwrap();
    let alpha_now = s.get_service(alpha.id).await.unwrap().unwrap();
    assert_eq!(alpha_now.last_heartbeat_at, Some(t(30)));

    let rows = heartbeats_of(s, alpha.id).await;
    let seen: Vec<(&str, Option<&str>, Timestamp)> = rows
        .iter()
        .map(|r| (r.status.as_str(), r.run_id.as_deref(), r.time))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("DEGRADED", Some("run-7"), t(30)),
            ("UP", None, t(20)),
            ("UP", None, t(10)),
            ("UP", None, t(5)),
        ]
    );
    assert_eq!(rows[0].heartbeat_id, ids[1]);
}

async fn heartbeats_large_batch(s: &dyn Store) {
    let mut services = Vec::new();
    for i in 0..20 {
        services.push(service(s, &format!("svc-{i}")).await);
    }
    let batch: Vec<NewHeartbeat> = (0..1000)
        .map(|i| {
            if i % 50 == 49 {
                hb(&format!("missing-{i}"), "UP", t(i))
            } else {
                hb(&format!("SVC-{}", i % 20), "UP", t(i))
            }
        })
        .collect();
    let started = std::time::Instant::now();
    let out = s.record_heartbeats(&batch).await.unwrap();
    eprintln!(
        "{}: 1000 heartbeats in one batch took {:?}",
        s.backend().as_str(),
        started.elapsed()
    );
    assert_eq!(out.len(), 1000);
    let mut last_event = 0;
    for (i, o) in out.iter().enumerate() {
        if i % 50 == 49 {
            assert_eq!(*o, HeartbeatOutcome::UnknownService, "input {i}");
        } else {
            match o {
                HeartbeatOutcome::Recorded {
                    service_id,
                    event_id,
                } => {
                    assert_eq!(*service_id, services[i % 20].id, "input {i}");
                    assert!(*event_id > last_event, "input {i}");
                    last_event = *event_id;
                }
                other => panic!("input {i}: {other:?}"),
            }
        }
    }
    // Every event is stored with the right service and time.
    for (n, svc) in services.iter().enumerate() {
        let rows = heartbeats_of(s, svc.id).await;
        let expected: Vec<Timestamp> = (0..1000i64)
            .rev()
            .filter(|i| i % 50 != 49 && (*i as usize) % 20 == n)
            .map(t)
            .collect();
        let times: Vec<Timestamp> = rows.iter().map(|r| r.time).collect();
        assert_eq!(times, expected, "service {n}");
        let got = s.get_service(svc.id).await.unwrap().unwrap();
        assert_eq!(got.last_heartbeat_at, expected.first().copied());
    }
}

async fn heartbeats_concurrent_batches(s: &dyn Store) {
    let mut services = Vec::new();
    for i in 0..10 {
        services.push(service(s, &format!("conc-{i}")).await);
    }
    // Eight batches naming the same services in different orders.
    let batches: Vec<Vec<NewHeartbeat>> = (0..8i64)
        .map(|b| {
            (0..200i64)
                .map(|i| {
                    let which = ((i * (b + 1) + b * 3) % 10) as usize;
                    hb(&format!("conc-{which}"), &format!("B{b}"), t(b * 1000 + i))
                })
                .collect()
        })
        .collect();
    let results = join_all(batches.iter().map(|b| s.record_heartbeats(b))).await;
    let mut expected: BTreeMap<ServiceId, usize> = BTreeMap::new();
    let mut event_ids = BTreeSet::new();
    for (b, result) in results.into_iter().enumerate() {
        let outcomes = result.unwrap_or_else(|e| panic!("batch {b}: {e}"));
        assert_eq!(outcomes.len(), 200);
        for o in outcomes {
            match o {
                HeartbeatOutcome::Recorded {
                    service_id,
                    event_id,
                } => {
                    *expected.entry(service_id).or_default() += 1;
                    assert!(event_ids.insert(event_id), "event id {event_id} reused");
                }
                other => panic!("batch {b}: {other:?}"),
            }
        }
    }
    let mut total = 0;
    for svc in &services {
        let rows = heartbeats_of(s, svc.id).await;
        assert_eq!(rows.len(), expected.get(&svc.id).copied().unwrap_or(0));
        total += rows.len();
        let newest = rows.iter().map(|r| r.time).max();
        let got = s.get_service(svc.id).await.unwrap().unwrap();
        assert_eq!(got.last_heartbeat_at, newest, "{}", svc.heartbeat_name);
    }
    assert_eq!(total, 1600);
}

async fn list_heartbeats_filters_and_paging(s: &dyn Store) {
    let mut a = new_service("Web-A");
    a.service_name = "Frontend".into();
    a.team = "web".into();
    a.priority = Priority::P1;
    let a = service_with(s, a).await;
    let mut b = new_service("Db-B");
    b.service_name = "Database".into();
    let b = service_with(s, b).await;

    // Same timestamp twice: the later insert sorts first.
    s.record_heartbeats(&[
        hb("web-a", "UP", t(10)),
        hb("db-b", "UP", t(11)),
        hb("web-a", "DOWN", t(12)),
        hb("web-a", "SAME-1", t(12)),
        hb("db-b", "UP", t(13)),
    ])
    .await
    .unwrap();

    let q = |f: fn(&mut HeartbeatQuery)| {
        let mut q = HeartbeatQuery {
            limit: 100,
            ..Default::default()
        };
        f(&mut q);
        q
    };
    let statuses = |rows: Vec<HeartbeatRow>| -> Vec<(String, String)> {
        rows.into_iter()
            .map(|r| (r.heartbeat_name, r.status))
            .collect()
    };

    let everything = s.list_heartbeats(&q(|_| {})).await.unwrap();
    assert_eq!(
        statuses(everything.clone()),
        vec![
            ("Db-B".into(), "UP".into()),
            ("Web-A".into(), "SAME-1".into()),
            ("Web-A".into(), "DOWN".into()),
            ("Db-B".into(), "UP".into()),
            ("Web-A".into(), "UP".into()),
        ]
    );
    let first_a = &everything[1];
    assert_eq!(first_a.service_id, a.id);
    assert_eq!(first_a.service_name, "Frontend");
    assert_eq!(first_a.team, "web");
    assert_eq!(first_a.priority, Priority::P1);
    assert_eq!(first_a.time, t(12));
    assert_eq!(first_a.run_id, None);

    let by_id = s
        .list_heartbeats(&HeartbeatQuery {
            service_id: Some(b.id),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_id.len(), 2);
    assert!(by_id.iter().all(|r| r.service_id == b.id));

    let by_key = s
        .list_heartbeats(&q(|q| q.name_key = Some("web-a".into())))
        .await
        .unwrap();
    assert_eq!(by_key.len(), 3);
    let by_service_name = s
        .list_heartbeats(&q(|q| q.service_name = Some("DATABASE".into())))
        .await
        .unwrap();
    assert_eq!(by_service_name.len(), 2);
    let none = s
        .list_heartbeats(&q(|q| {
            q.name_key = Some("web-a".into());
            q.service_name = Some("Database".into());
        }))
        .await
        .unwrap();
    assert!(none.is_empty());

    let paged = s
        .list_heartbeats(&HeartbeatQuery {
            limit: 2,
            offset: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(paged, everything[1..3].to_vec());
    let past_end = s
        .list_heartbeats(&HeartbeatQuery {
            limit: 10,
            offset: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(past_end.is_empty());
    let zero = s
        .list_heartbeats(&HeartbeatQuery {
            limit: 0,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(zero.is_empty());
}

// ---- job runs -----------------------------------------------------------------------------------

async fn job_signal_lifecycle(s: &dyn Store) {
    let svc = service(s, "Nightly").await;

    // Start without a run id: the store makes one up.
    let mut start = signal(svc.id, SignalKind::Start, None, t(1_000));
    start.body = Some("starting".into());
    let out = s.record_job_signal(&start).await.unwrap();
    let JobSignalOutcome::Recorded { service, run } = out else {
        panic!("{out:?}");
    };
    assert_eq!(service.id, svc.id);
    assert_eq!(service.heartbeat_name, "Nightly");
    assert_eq!(run.status, RunStatus::Running);
    assert!(!run.run_id.is_empty());
    assert_eq!(run.started_at, Some(t(1_000)));
    assert_eq!(run.finished_at, None);
    assert_eq!(run.duration_ms, None);
    assert_eq!(run.body.as_deref(), Some("starting"));
    let generated = run.run_id.clone();

    // Complete without a run id finishes the newest running run.
    let mut done = signal(svc.id, SignalKind::Complete, None, t(3_500));
    done.exit_code = Some(0);
    let finished = recorded(s.record_job_signal(&done).await.unwrap());
    assert_eq!(finished.id, run.id);
    assert_eq!(finished.run_id, generated);
    assert_eq!(finished.status, RunStatus::Completed);
    assert_eq!(finished.finished_at, Some(t(3_500)));
    assert_eq!(finished.duration_ms, Some(2_500));
    assert_eq!(finished.exit_code, Some(0));
    assert_eq!(
        finished.body.as_deref(),
        Some("starting"),
        "no new body keeps the old one"
    );

    // Start and fail with an explicit run id.
    recorded(
        s.record_job_signal(&signal(svc.id, SignalKind::Start, Some("r1"), t(4_000)))
            .await
            .unwrap(),
    );
    let mut fail = signal(svc.id, SignalKind::Fail, Some("r1"), t(4_100));
    fail.body = Some("boom".into());
    fail.body_truncated = true;
    let failed = recorded(s.record_job_signal(&fail).await.unwrap());
    assert_eq!(failed.run_id, "r1");
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(failed.duration_ms, Some(100));
    assert_eq!(failed.body.as_deref(), Some("boom"));
    assert!(failed.body_truncated);

    // A non-zero exit code on complete is a failure.
    recorded(
        s.record_job_signal(&signal(svc.id, SignalKind::Start, Some("r2"), t(5_000)))
            .await
            .unwrap(),
    );
    let mut bad = signal(svc.id, SignalKind::Complete, Some("r2"), t(5_010));
    bad.exit_code = Some(3);
    let bad = recorded(s.record_job_signal(&bad).await.unwrap());
    assert_eq!(bad.status, RunStatus::Failed);
    assert_eq!(bad.exit_code, Some(3));

    // Every signal counts as a heartbeat, with the run's id.
    let beats: Vec<(String, Option<String>, Timestamp)> = heartbeats_of(s, svc.id)
        .await
        .into_iter()
        .map(|r| (r.status, r.run_id, r.time))
        .collect();
    let some = |v: &str| Some(v.to_owned());
    assert_eq!(
        beats,
        vec![
            ("FAILED".into(), some("r2"), t(5_010)),
            ("STARTED".into(), some("r2"), t(5_000)),
            ("FAILED".into(), some("r1"), t(4_100)),
            ("STARTED".into(), some("r1"), t(4_000)),
            ("COMPLETED".into(), Some(generated.clone()), t(3_500)),
            ("STARTED".into(), Some(generated), t(1_000)),
        ]
    );
    let now = s.get_service(svc.id).await.unwrap().unwrap();
    assert_eq!(now.last_heartbeat_at, Some(t(5_010)));
}

async fn job_signal_edge_cases(s: &dyn Store) {
    let svc = service(s, "Edge").await;

    // Unknown and inactive services.
    assert_eq!(
        s.record_job_signal(&signal(ServiceId(987_654), SignalKind::Start, None, t(0)))
            .await
            .unwrap(),
        JobSignalOutcome::UnknownService
    );
    let idle = service(s, "Idle").await;
    update(
        s,
        idle.id,
        ServicePatch {
            active: Some(false),
            ..Default::default()
        },
        t(1),
    )
    .await;
    assert_eq!(
        s.record_job_signal(&signal(idle.id, SignalKind::Start, None, t(2)))
            .await
            .unwrap(),
        JobSignalOutcome::Inactive {
            heartbeat_name: "Idle".into()
        }
    );
    assert!(heartbeats_of(s, idle.id).await.is_empty());

    // Complete without a start records a finished run without a duration.
    let lone = recorded(
        s.record_job_signal(&signal(svc.id, SignalKind::Complete, Some("r3"), t(100)))
            .await
            .unwrap(),
    );
    assert_eq!(lone.run_id, "r3");
    assert_eq!(lone.status, RunStatus::Completed);
    assert_eq!(lone.started_at, None);
    assert_eq!(lone.finished_at, Some(t(100)));
    assert_eq!(lone.duration_ms, None);
    // ... also without a run id (a fresh one is generated).
    let anon = recorded(
        s.record_job_signal(&signal(svc.id, SignalKind::Fail, None, t(110)))
            .await
            .unwrap(),
    );
    assert_eq!(anon.status, RunStatus::Failed);
    assert!(!anon.run_id.is_empty() && anon.run_id != "r3");

    // A duplicate start keeps the first run.
    let first = recorded(
        s.record_job_signal(&signal(svc.id, SignalKind::Start, Some("r4"), t(200)))
            .await
            .unwrap(),
    );
    let again = recorded(
        s.record_job_signal(&signal(svc.id, SignalKind::Start, Some("r4"), t(250)))
            .await
            .unwrap(),
    );
    assert_eq!(again, first);
    // A signal for a finished run leaves it as it was.
    let end = recorded(
        s.record_job_signal(&signal(svc.id, SignalKind::Complete, Some("r4"), t(300)))
            .await
            .unwrap(),
    );
    assert_eq!(end.duration_ms, Some(100));
    let late = recorded(
        s.record_job_signal(&signal(svc.id, SignalKind::Fail, Some("r4"), t(400)))
            .await
            .unwrap(),
    );
    assert_eq!(late, end);
    // A completion stamped before its start has duration 0, not a negative one.
    recorded(
        s.record_job_signal(&signal(svc.id, SignalKind::Start, Some("r5"), t(1_000)))
            .await
            .unwrap(),
    );
    let backwards = recorded(
        s.record_job_signal(&signal(svc.id, SignalKind::Complete, Some("r5"), t(900)))
            .await
            .unwrap(),
    );
    assert_eq!(backwards.duration_ms, Some(0));
    // Complete without a run id picks the most recently started running run.
    for (id, at) in [("old", 2_000), ("new", 2_100)] {
        recorded(
            s.record_job_signal(&signal(svc.id, SignalKind::Start, Some(id), t(at)))
                .await
                .unwrap(),
        );
    }
    let picked = recorded(
        s.record_job_signal(&signal(svc.id, SignalKind::Complete, None, t(2_200)))
            .await
            .unwrap(),
    );
    assert_eq!(picked.run_id, "new");
    assert_eq!(picked.duration_ms, Some(100));
    // Signals of one service do not touch another's runs.
    let other = service(s, "Other").await;
    let other_run = recorded(
        s.record_job_signal(&signal(other.id, SignalKind::Complete, None, t(2_300)))
            .await
            .unwrap(),
    );
    assert_eq!(
        other_run.started_at, None,
        "\"old\" belongs to another service"
    );
    // last_heartbeat_at never moves back.
    let now = s.get_service(svc.id).await.unwrap().unwrap();
    assert_eq!(now.last_heartbeat_at, Some(t(2_200)));
}

async fn recent_run_durations_newest_first(s: &dyn Store) {
    let svc = service(s, "Durations").await;
    assert!(s.recent_run_durations(svc.id, 10).await.unwrap().is_empty());
    for (i, d) in [30i64, 10, 20, 50, 40].into_iter().enumerate() {
        let run = format!("run-{i}");
        let start = (i as i64) * 1_000;
        s.record_job_signal(&signal(svc.id, SignalKind::Start, Some(&run), t(start)))
            .await
            .unwrap();
        s.record_job_signal(&signal(
            svc.id,
            SignalKind::Complete,
            Some(&run),
            t(start + d),
        ))
        .await
        .unwrap();
    }
    // Runs without a duration (no start) and running runs are left out.
    s.record_job_signal(&signal(svc.id, SignalKind::Complete, Some("x"), t(9_000)))
        .await
        .unwrap();
    s.record_job_signal(&signal(svc.id, SignalKind::Start, Some("y"), t(9_500)))
        .await
        .unwrap();
    assert_eq!(
        s.recent_run_durations(svc.id, 10).await.unwrap(),
        vec![40, 50, 20, 10, 30]
    );
    assert_eq!(
        s.recent_run_durations(svc.id, 2).await.unwrap(),
        vec![40, 50]
    );
    let other = service(s, "No runs").await;
    assert!(
        s.recent_run_durations(other.id, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn list_runs_paging(s: &dyn Store) {
    let svc = service(s, "Runs").await;
    let other = service(s, "Other runs").await;
    s.record_job_signal(&signal(other.id, SignalKind::Start, Some("o"), t(0)))
        .await
        .unwrap();
    // Started runs sort by start, start-less ones by finish.
    s.record_job_signal(&signal(svc.id, SignalKind::Start, Some("a"), t(100)))
        .await
        .unwrap();
    s.record_job_signal(&signal(svc.id, SignalKind::Complete, Some("b"), t(300)))
        .await
        .unwrap();
    s.record_job_signal(&signal(svc.id, SignalKind::Start, Some("c"), t(200)))
        .await
        .unwrap();
    s.record_job_signal(&signal(svc.id, SignalKind::Complete, Some("a"), t(400)))
        .await
        .unwrap();
    let all = s.list_runs(svc.id, ALL).await.unwrap();
    assert_eq!(all.total_count, 3);
    let ids: Vec<&str> = all.entries.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["b", "c", "a"]);
    assert!(all.entries.iter().all(|r| r.service_id == svc.id));
    let second = s.list_runs(svc.id, page(1, 1)).await.unwrap();
    assert_eq!(second.total_count, 3);
    assert_eq!(second.entries, all.entries[1..2].to_vec());
    let beyond = s.list_runs(svc.id, page(5, 3)).await.unwrap();
    assert_eq!(beyond.total_count, 3);
    assert!(beyond.entries.is_empty());
    let none = s.list_runs(ServiceId(424_242), ALL).await.unwrap();
    assert_eq!(none.total_count, 0);
}

// ---- services -----------------------------------------------------------------------------------

async fn create_and_find_services(s: &dyn Store) {
    let mut new = new_service("Nightly-Backup");
    new.environment = Some("prod".into());
    new.interval_seconds = 3_600;
    new.threshold = 3;
    new.grace_seconds = 120;
    new.team = "Storage".into();
    new.priority = Priority::P2;
    new.runbook = Some("https://runbooks.example/backup".into());
    new.max_duration_ms = Some(90_000);
    new.at = t(42);
    let svc = service_with(s, new.clone()).await;
    assert_eq!(svc.heartbeat_name, "Nightly-Backup");
    assert_eq!(svc.service_name, "Nightly-Backup service");
    assert_eq!(svc.environment.as_deref(), Some("prod"));
    assert!(svc.active);
    assert_eq!(svc.interval_seconds, 3_600);
    assert_eq!(svc.threshold, 3);
    assert_eq!(svc.grace_seconds, 120);
    assert_eq!(svc.team, "Storage");
    assert_eq!(svc.priority, Priority::P2);
    assert_eq!(
        svc.runbook.as_deref(),
        Some("https://runbooks.example/backup")
    );
    assert_eq!(svc.state, ServiceState::New);
    assert_eq!(svc.mute, None);
    assert_eq!(svc.max_duration_ms, Some(90_000));
    assert_eq!(svc.last_heartbeat_at, None);
    assert_eq!(svc.created_at, t(42));
    assert_eq!(svc.updated_at, t(42));

    assert_eq!(s.get_service(svc.id).await.unwrap(), Some(svc.clone()));
    assert_eq!(
        s.find_service("nightly-backup").await.unwrap(),
        Some(svc.clone())
    );
    assert_eq!(
        s.find_service("Nightly-Backup").await.unwrap(),
        None,
        "keys are folded"
    );
    assert_eq!(
        s.get_service(ServiceId(svc.id.0 + 1000)).await.unwrap(),
        None
    );

    // Registering the same name in another case changes nothing.
    let mut again = new_service("NIGHTLY-backup");
    again.team = "someone-else".into();
    again.at = t(99);
    match s.create_service(&again).await.unwrap() {
        CreateOutcome::Exists(existing) => assert_eq!(existing, svc),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.get_service(svc.id).await.unwrap(), Some(svc.clone()));

    // Non-ASCII names fold the same way on both backends.
    let umlaut = service(s, "Über-Job").await;
    assert_eq!(
        s.find_service(&name_key("ÜBER-JOB")).await.unwrap(),
        Some(umlaut.clone())
    );
    assert!(matches!(
        s.create_service(&new_service("über-job")).await.unwrap(),
        CreateOutcome::Exists(e) if e.id == umlaut.id
    ));
}

async fn concurrent_creates_of_one_name(s: &dyn Store) {
    let attempts: Vec<NewService> = (0..8)
        .map(|i| {
            let mut n = new_service(if i % 2 == 0 { "Racer" } else { "RACER" });
            n.at = t(i);
            n
        })
        .collect();
    let results = join_all(attempts.iter().map(|n| s.create_service(n))).await;
    let mut created_ids = Vec::new();
    let mut ids = BTreeSet::new();
    for r in results {
        match r.unwrap() {
            CreateOutcome::Created(svc) => {
                created_ids.push(svc.id);
                ids.insert(svc.id);
            }
            CreateOutcome::Exists(svc) => {
                ids.insert(svc.id);
            }
        }
    }
    assert_eq!(created_ids.len(), 1, "exactly one creator wins");
    assert_eq!(ids.len(), 1, "everyone sees the same service");
    let all = s
        .list_services(&ServiceFilter::default(), ALL)
        .await
        .unwrap();
    assert_eq!(all.total_count, 1);
}

async fn list_services_filters(s: &dyn Store) {
    let names = [
        "a_b",
        "axb",
        "50%off",
        "50xoff",
        r"back\slash",
        "backXslash",
        "Plain",
    ];
    let mut by_name = BTreeMap::new();
    for n in names {
        by_name.insert(n, service(s, n).await);
    }
    let matching = |f: ServiceFilter| async move {
        let p = s.list_services(&f, ALL).await.unwrap();
        assert_eq!(p.total_count, p.entries.len() as i64);
        p.entries
            .into_iter()
            .map(|x| x.heartbeat_name)
            .collect::<Vec<_>>()
    };
    let contains = |v: &str| ServiceFilter {
        name_contains: Some(v.into()),
        ..Default::default()
    };
    assert_eq!(matching(contains("a_b")).await, ["a_b"]);
    assert_eq!(matching(contains("A_B")).await, ["a_b"]);
    assert_eq!(matching(contains("%")).await, ["50%off"]);
    assert_eq!(matching(contains("0%o")).await, ["50%off"]);
    assert_eq!(matching(contains("_")).await, ["a_b"]);
    assert_eq!(matching(contains(r"\")).await, [r"back\slash"]);
    assert_eq!(matching(contains("OFF")).await, ["50%off", "50xoff"]);
    assert_eq!(matching(contains("plain")).await, ["Plain"]);
    assert!(matching(contains("zzz")).await.is_empty());

    // Shape the other attributes.
    let plain = by_name["Plain"].id;
    let axb = by_name["axb"].id;
    let off = by_name["50xoff"].id;
    s.update_service(
        plain,
        &ServicePatch {
            team: Some("Payments".into()),
            priority: Some(Priority::P1),
            service_name: Some("Billing API".into()),
            ..Default::default()
        },
        &change(SnapshotAction::TeamChange, "t", t(1)),
    )
    .await
    .unwrap()
    .unwrap();
    s.update_service(
        axb,
        &ServicePatch {
            active: Some(false),
            state: Some(ServiceState::Down),
            ..Default::default()
        },
        &change(SnapshotAction::Deactivate, "t", t(2)),
    )
    .await
    .unwrap()
    .unwrap();
    s.update_service(
        off,
        &ServicePatch {
            mute: Some(MuteChange::Mute {
                until: None,
                reason: None,
            }),
            state: Some(ServiceState::Up),
            ..Default::default()
        },
        &change(SnapshotAction::Mute, "t", t(3)),
    )
    .await
    .unwrap()
    .unwrap();

    let f = ServiceFilter::default;
    assert_eq!(
        matching(ServiceFilter {
            team: Some("PAYMENTS".into()),
            ..f()
        })
        .await,
        ["Plain"]
    );
    assert_eq!(
        matching(ServiceFilter {
            service_name: Some("billing api".into()),
            ..f()
        })
        .await,
        ["Plain"]
    );
    assert!(
        matching(ServiceFilter {
            service_name: Some("billing".into()),
            ..f()
        })
        .await
        .is_empty(),
        "service_name is exact"
    );
    assert_eq!(
        matching(ServiceFilter {
            active: Some(false),
            ..f()
        })
        .await,
        ["axb"]
    );
    assert_eq!(
        matching(ServiceFilter {
            active: Some(true),
            ..f()
        })
        .await
        .len(),
        6
    );
    assert_eq!(
        matching(ServiceFilter {
            muted: Some(true),
            ..f()
        })
        .await,
        ["50xoff"]
    );
    assert_eq!(
        matching(ServiceFilter {
            muted: Some(false),
            ..f()
        })
        .await
        .len(),
        6
    );
    assert_eq!(
        matching(ServiceFilter {
            state: Some(ServiceState::Down),
            ..f()
        })
        .await,
        ["axb"]
    );
    assert_eq!(
        matching(ServiceFilter {
            state: Some(ServiceState::New),
            ..f()
        })
        .await
        .len(),
        5
    );
    assert_eq!(
        matching(ServiceFilter {
            priority: Some(Priority::P1),
            ..f()
        })
        .await,
        ["Plain"]
    );
    assert_eq!(
        matching(ServiceFilter {
            priority: Some(Priority::P3),
            team: Some("site-reliability".into()),
            active: Some(true),
            muted: Some(false),
            name_contains: Some("a".into()),
            ..f()
        })
        .await,
        ["a_b", r"back\slash", "backXslash"]
    );
}

/// SQL `lower()` folds ASCII only on both backends (SQLite's built-in one does nothing else, and
/// the PostgreSQL store matches it whatever the cluster's locale). Heartbeat names, which need
/// full Unicode folding, are folded in Rust instead (`name_key`).
async fn team_and_service_name_fold_ascii_only(s: &dyn Store) {
    let mut new = new_service("Unicode-team");
    new.team = "Équipe-Ops".into();
    new.service_name = "Zürich API".into();
    let svc = service_with(s, new).await;
    let count =
        |f: ServiceFilter| async move { s.list_services(&f, ALL).await.unwrap().total_count };
    let team = |v: &str| ServiceFilter {
        team: Some(v.into()),
        ..Default::default()
    };
    let name = |v: &str| ServiceFilter {
        service_name: Some(v.into()),
        ..Default::default()
    };
    assert_eq!(count(team("ÉQUIPE-OPS")).await, 1);
    assert_eq!(count(team("Équipe-ops")).await, 1);
    assert_eq!(count(team("équipe-ops")).await, 0);
    assert_eq!(count(name("ZüRICH api")).await, 1);
    assert_eq!(count(name("ZÜRICH API")).await, 0);
    s.record_heartbeats(&[hb("unicode-team", "UP", t(1))])
        .await
        .unwrap();
    let rows = |v: &str| {
        let q = HeartbeatQuery {
            service_name: Some(v.into()),
            limit: 10,
            ..Default::default()
        };
        async move { s.list_heartbeats(&q).await.unwrap().len() }
    };
    assert_eq!(rows("zürich API").await, 1);
    assert_eq!(rows("ZÜRICH API").await, 0);
    assert_eq!(
        s.get_service(svc.id).await.unwrap().unwrap().team,
        "Équipe-Ops"
    );
}

async fn list_services_paging(s: &dyn Store) {
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(service(s, &format!("page-{i}")).await.id);
    }
    let gone = service(s, "page-deleted").await;
    s.delete_service(gone.id, &Actor::new("t"))
        .await
        .unwrap()
        .unwrap();
    let p = s
        .list_services(&ServiceFilter::default(), page(3, 2))
        .await
        .unwrap();
    assert_eq!(p.total_count, 7, "deleted services are not counted");
    let got: Vec<ServiceId> = p.entries.iter().map(|x| x.id).collect();
    assert_eq!(got, ids[2..5].to_vec(), "ordered by id");
    let tail = s
        .list_services(&ServiceFilter::default(), page(3, 6))
        .await
        .unwrap();
    assert_eq!(tail.entries.len(), 1);
    assert_eq!(tail.total_count, 7);
    let empty = s
        .list_services(&ServiceFilter::default(), page(0, 0))
        .await
        .unwrap();
    assert!(empty.entries.is_empty());
    assert_eq!(empty.total_count, 7);
}

async fn update_service_snapshots_before_image(s: &dyn Store) {
    let before = service(s, "Patchy").await;
    let patch = ServicePatch {
        team: Some("new-team".into()),
        interval_seconds: Some(300),
        threshold: Some(2),
        grace_seconds: Some(30),
        runbook: Some(Some("rb".into())),
        max_duration_ms: Some(Some(5_000)),
        service_name: Some("Renamed svc".into()),
        ..Default::default()
    };
    let meta = change(SnapshotAction::TeamChange, "alice", t(500));
    let after = s
        .update_service(before.id, &patch, &meta)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after, patch.apply(&before, t(500)));
    assert_eq!(after.updated_at, t(500));
    assert_eq!(after.created_at, before.created_at);
    assert_eq!(s.get_service(before.id).await.unwrap(), Some(after.clone()));

    let snaps = snapshots_of(s, before.id).await;
    assert_eq!(snaps.total_count, 1, "exactly one snapshot");
    let snap = &snaps.entries[0];
    assert_eq!(snap.service_id, before.id);
    assert_eq!(snap.action_type, SnapshotAction::TeamChange);
    assert_eq!(
        snap.snapshot_data, before,
        "the snapshot holds the before-image"
    );
    assert_eq!(snap.actor, "alice");
    assert_eq!(snap.created_at, t(500));
    assert_eq!(snap.restored_at, None);
    assert_eq!(snap.restored_by, None);
    assert_eq!(
        s.get_snapshot(snap.snapshot_id).await.unwrap().as_ref(),
        Some(snap)
    );

    // A rename moves the lookup key.
    let renamed = s
        .update_service(
            before.id,
            &ServicePatch {
                heartbeat_name: Some(HeartbeatName::parse("Patchy-2").unwrap()),
                ..Default::default()
            },
            &change(SnapshotAction::Edit, "bob", t(600)),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renamed.heartbeat_name, "Patchy-2");
    assert_eq!(s.find_service("patchy").await.unwrap(), None);
    assert_eq!(
        s.find_service("patchy-2").await.unwrap().map(|x| x.id),
        Some(before.id)
    );
    let snaps = snapshots_of(s, before.id).await;
    assert_eq!(snaps.total_count, 2);
    assert_eq!(snaps.entries[0].action_type, SnapshotAction::Edit);
    assert_eq!(snaps.entries[0].snapshot_data, after);

    // Unknown service: nothing happens.
    let missing = ServiceId(before.id.0 + 999);
    assert_eq!(
        s.update_service(missing, &patch, &meta).await.unwrap(),
        None
    );
    assert_eq!(snapshots_of(s, missing).await.total_count, 0);
}

async fn update_service_mute_and_clear(s: &dyn Store) {
    let mut new = new_service("Mutable");
    new.runbook = Some("rb".into());
    new.max_duration_ms = Some(10);
    let svc = service_with(s, new).await;
    let muted = s
        .update_service(
            svc.id,
            &ServicePatch {
                mute: Some(MuteChange::Mute {
                    until: Some(t(10_000)),
                    reason: Some("maintenance".into()),
                }),
                ..Default::default()
            },
            &change(SnapshotAction::Mute, "ops", t(100)),
        )
        .await
        .unwrap()
        .unwrap();
    let mute = muted.mute.clone().expect("muted");
    assert_eq!(mute.at, t(100));
    assert_eq!(mute.until, Some(t(10_000)));
    assert_eq!(mute.reason.as_deref(), Some("maintenance"));
    assert_eq!(s.get_service(svc.id).await.unwrap(), Some(muted.clone()));

    // Mute without an end or reason.
    let forever = update(
        s,
        svc.id,
        ServicePatch {
            mute: Some(MuteChange::Mute {
                until: None,
                reason: None,
            }),
            ..Default::default()
        },
        t(150),
    )
    .await;
    assert_eq!(
        forever.mute,
        Some(Mute {
            at: t(150),
            until: None,
            reason: None
        })
    );
    assert_eq!(s.get_service(svc.id).await.unwrap(), Some(forever));

    let cleared = s
        .update_service(
            svc.id,
            &ServicePatch {
                mute: Some(MuteChange::Unmute),
                runbook: Some(None),
                max_duration_ms: Some(None),
                state: Some(ServiceState::Late),
                ..Default::default()
            },
            &change(SnapshotAction::Unmute, "ops", t(200)),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cleared.mute, None);
    assert_eq!(cleared.runbook, None);
    assert_eq!(cleared.max_duration_ms, None);
    assert_eq!(cleared.state, ServiceState::Late);
    assert_eq!(s.get_service(svc.id).await.unwrap(), Some(cleared));
    let snaps = snapshots_of(s, svc.id).await;
    let actions: Vec<SnapshotAction> = snaps.entries.iter().map(|x| x.action_type).collect();
    assert_eq!(
        actions,
        [
            SnapshotAction::Unmute,
            SnapshotAction::Edit,
            SnapshotAction::Mute
        ]
    );
    assert_eq!(snaps.entries[1].snapshot_data.mute, Some(mute));
}

async fn concurrent_updates_lose_nothing(s: &dyn Store) {
    let svc = service(s, "Contended").await;
    let patches: Vec<ServicePatch> = (2..10)
        .map(|n| ServicePatch {
            threshold: Some(n),
            ..Default::default()
        })
        .collect();
    let metas: Vec<ChangeMeta> = (0..8)
        .map(|i| change(SnapshotAction::Edit, &format!("w{i}"), t(i)))
        .collect();
    let results = join_all(
        patches
            .iter()
            .zip(&metas)
            .map(|(p, m)| s.update_service(svc.id, p, m)),
    )
    .await;
    for r in results {
        r.unwrap().unwrap();
    }
    // Each update saw the previous one's result: the before-images are eight distinct states.
    let snaps = snapshots_of(s, svc.id).await;
    assert_eq!(snaps.total_count, 8);
    let befores: BTreeSet<i32> = snaps
        .entries
        .iter()
        .map(|x| x.snapshot_data.threshold)
        .collect();
    let last = s.get_service(svc.id).await.unwrap().unwrap().threshold;
    let mut all: BTreeSet<i32> = (1..10).collect();
    all.remove(&last);
    assert_eq!(befores, all);
}

async fn rename_onto_existing_name_conflicts(s: &dyn Store) {
    let a = service(s, "Taken").await;
    let b = service(s, "Other").await;
    let err = s
        .update_service(
            b.id,
            &ServicePatch {
                heartbeat_name: Some(HeartbeatName::parse("TAKEN").unwrap()),
                team: Some("changed".into()),
                ..Default::default()
            },
            &change(SnapshotAction::Edit, "t", t(5)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    // Nothing of the failed update remains.
    assert_eq!(s.get_service(b.id).await.unwrap(), Some(b.clone()));
    assert_eq!(s.get_service(a.id).await.unwrap(), Some(a));
    assert_eq!(snapshots_of(s, b.id).await.total_count, 0);
    // Renaming to one's own name in another case is fine.
    let same = update(
        s,
        b.id,
        ServicePatch {
            heartbeat_name: Some(HeartbeatName::parse("OTHER").unwrap()),
            ..Default::default()
        },
        t(6),
    )
    .await;
    assert_eq!(same.heartbeat_name, "OTHER");
}

async fn delete_and_restore(s: &dyn Store) {
    let svc = service(s, "Doomed").await;
    s.record_heartbeats(&[hb("doomed", "UP", t(50))])
        .await
        .unwrap();
    let svc = s.get_service(svc.id).await.unwrap().unwrap();

    let snap_id = s
        .delete_service(svc.id, &Actor::new("carol"))
        .await
        .unwrap()
        .expect("deleted");
    assert_eq!(s.get_service(svc.id).await.unwrap(), None);
    assert_eq!(s.find_service("doomed").await.unwrap(), None);
    let listed = s
        .list_services(&ServiceFilter::default(), ALL)
        .await
        .unwrap();
    assert_eq!(listed.total_count, 0);
    assert_eq!(
        s.delete_service(svc.id, &Actor::new("carol"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.record_heartbeats(&[hb("doomed", "UP", t(60))])
            .await
            .unwrap(),
        vec![HeartbeatOutcome::UnknownService]
    );
    assert_eq!(
        s.record_job_signal(&signal(svc.id, SignalKind::Start, None, t(60)))
            .await
            .unwrap(),
        JobSignalOutcome::UnknownService
    );
    assert!(
        s.update_service(
            svc.id,
            &ServicePatch::default(),
            &change(SnapshotAction::Edit, "x", t(61))
        )
        .await
        .unwrap()
        .is_none()
    );

    let snap = s.get_snapshot(snap_id).await.unwrap().expect("snapshot");
    assert_eq!(snap.action_type, SnapshotAction::Delete);
    assert_eq!(snap.snapshot_data, svc);
    assert_eq!(snap.actor, "carol");

    // The name is free again.
    let usurper = service(s, "DOOMED").await;
    assert_ne!(usurper.id, svc.id);
    assert_eq!(
        s.restore_snapshot(snap_id, &Actor::new("dave"), None)
            .await
            .unwrap(),
        RestoreOutcome::NameTaken
    );
    assert_eq!(
        s.get_snapshot(snap_id).await.unwrap().unwrap().restored_at,
        None
    );
    s.delete_service(usurper.id, &Actor::new("dave"))
        .await
        .unwrap()
        .unwrap();

    // Restoring the delete brings the service back under its old id, with its audit entry
    // (built from the restored service) in the same commit.
    let audit = |who: &'static str| {
        move |restored: &Service| NewAuditEntry {
            on_behalf_of: None,
            action_type: "snapshot_restored".into(),
            actor: who.into(),
            service_id: Some(restored.id),
            execution_id: None,
            details: serde_json::json!({ "name": restored.heartbeat_name }),
            at: t(60),
        }
    };
    let restored = match s
        .restore_snapshot(snap_id, &Actor::new("dave"), Some(&audit("dave")))
        .await
        .unwrap()
    {
        RestoreOutcome::Restored(x) => x,
        other => panic!("{other:?}"),
    };
    assert_eq!(restored.id, svc.id);
    assert_eq!(restored.heartbeat_name, "Doomed");
    assert_eq!(restored.last_heartbeat_at, Some(t(50)));
    assert_eq!(restored.created_at, svc.created_at);
    assert!(restored.updated_at >= svc.updated_at);
    assert_eq!(s.get_service(svc.id).await.unwrap(), Some(restored.clone()));
    assert_eq!(
        s.find_service("doomed").await.unwrap().map(|x| x.id),
        Some(svc.id)
    );
    let marked = s.get_snapshot(snap_id).await.unwrap().unwrap();
    assert!(marked.restored_at.is_some());
    assert_eq!(marked.restored_by.as_deref(), Some("dave"));
    assert_eq!(
        s.restore_snapshot(snap_id, &Actor::new("erin"), Some(&audit("erin")))
            .await
            .unwrap(),
        RestoreOutcome::AlreadyRestored
    );
    let entries = crate::db::audit_log(s, Some("snapshot_restored")).await;
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0].actor, "dave");
    assert_eq!(entries[0].service_id, Some(svc.id));
    assert_eq!(entries[0].details["name"], "Doomed");
    assert_eq!(
        s.restore_snapshot(SnapshotId(snap_id.0 + 10_000), &Actor::new("erin"), None)
            .await
            .unwrap(),
        RestoreOutcome::NotFound
    );
    // The restore snapshotted the deleted state first, so it can be undone.
    let snaps = snapshots_of(s, svc.id).await;
    assert_eq!(snaps.total_count, 2);
    assert_eq!(snaps.entries[0].action_type, SnapshotAction::Edit);
    assert_eq!(snaps.entries[0].actor, "dave");
    assert_eq!(snaps.entries[0].snapshot_data.heartbeat_name, "Doomed");
    // Heartbeats flow again.
    assert!(matches!(
        s.record_heartbeats(&[hb("doomed", "UP", t(70))])
            .await
            .unwrap()[0],
        HeartbeatOutcome::Recorded { service_id, .. } if service_id == svc.id
    ));
}

async fn restore_edit_snapshot(s: &dyn Store) {
    let svc = service(s, "Reverted").await;
    update(
        s,
        svc.id,
        ServicePatch {
            team: Some("wrong".into()),
            priority: Some(Priority::P5),
            ..Default::default()
        },
        t(100),
    )
    .await;
    s.record_heartbeats(&[hb("reverted", "UP", t(150))])
        .await
        .unwrap();
    update(
        s,
        svc.id,
        ServicePatch {
            state: Some(ServiceState::Up),
            ..Default::default()
        },
        t(160),
    )
    .await;
    let first = snapshots_of(s, svc.id).await.entries.pop().unwrap();
    assert_eq!(first.snapshot_data.team, "site-reliability");
    let restored = match s
        .restore_snapshot(first.snapshot_id, &Actor::new("ops"), None)
        .await
        .unwrap()
    {
        RestoreOutcome::Restored(x) => x,
        other => panic!("{other:?}"),
    };
    assert_eq!(restored.team, "site-reliability");
    assert_eq!(restored.priority, Priority::P3);
    // Observations are kept, not rolled back.
    assert_eq!(restored.last_heartbeat_at, Some(t(150)));
    assert_eq!(restored.state, ServiceState::Up);
    assert_eq!(s.get_service(svc.id).await.unwrap(), Some(restored));
    assert_eq!(snapshots_of(s, svc.id).await.total_count, 3);
}

async fn snapshot_filters_and_paging(s: &dyn Store) {
    let a = service(s, "Snap-A").await;
    let b = service(s, "Snap-B").await;
    let actions = [
        (a.id, SnapshotAction::Mute, 100),
        (b.id, SnapshotAction::Edit, 200),
        (a.id, SnapshotAction::Edit, 300),
        (a.id, SnapshotAction::PriorityChange, 300),
        (b.id, SnapshotAction::BulkEdit, 400),
    ];
    for (id, action, at) in actions {
        s.update_service(id, &ServicePatch::default(), &change(action, "x", t(at)))
            .await
            .unwrap()
            .unwrap();
    }
    let list = |f: SnapshotFilter, p: PageRequest| async move {
        let page = s.list_snapshots(&f, p).await.unwrap();
        (
            page.total_count,
            page.entries
                .into_iter()
                .map(|x| (x.service_id, x.action_type, x.created_at))
                .collect::<Vec<_>>(),
        )
    };
    let f = SnapshotFilter::default;
    let (total, all) = list(f(), ALL).await;
    assert_eq!(total, 5);
    assert_eq!(
        all,
        vec![
            (b.id, SnapshotAction::BulkEdit, t(400)),
            (a.id, SnapshotAction::PriorityChange, t(300)),
            (a.id, SnapshotAction::Edit, t(300)),
            (b.id, SnapshotAction::Edit, t(200)),
            (a.id, SnapshotAction::Mute, t(100)),
        ],
        "newest first, later id first on ties"
    );
    let (total, page2) = list(f(), page(2, 2)).await;
    assert_eq!(total, 5);
    assert_eq!(page2, all[2..4].to_vec());
    let (total, only_a) = list(
        SnapshotFilter {
            service_id: Some(a.id),
            ..f()
        },
        ALL,
    )
    .await;
    assert_eq!(total, 3);
    assert!(only_a.iter().all(|x| x.0 == a.id));
    let (total, edits) = list(
        SnapshotFilter {
            action_type: Some(SnapshotAction::Edit),
            ..f()
        },
        ALL,
    )
    .await;
    assert_eq!(total, 2);
    assert_eq!(edits, vec![all[2], all[3]]);
    let (total, window) = list(
        SnapshotFilter {
            start: Some(t(200)),
            end: Some(t(300)),
            ..f()
        },
        ALL,
    )
    .await;
    assert_eq!(total, 3, "start and end are inclusive");
    assert_eq!(window, all[1..4].to_vec());
    let (total, combined) = list(
        SnapshotFilter {
            service_id: Some(a.id),
            action_type: Some(SnapshotAction::Edit),
            start: Some(t(301)),
            end: None,
        },
        ALL,
    )
    .await;
    assert_eq!((total, combined), (0, vec![]));
    assert_eq!(s.get_snapshot(SnapshotId(999_999)).await.unwrap(), None);
}

// ---- alerts -------------------------------------------------------------------------------------

fn new_alert(id: ServiceId, kind: AlertKind, key: &str, at: Timestamp) -> NewAlert {
    NewAlert {
        service_id: id,
        kind,
        name: format!("alert {key}"),
        dedup_key: key.into(),
        at,
    }
}

async fn alerts_open_and_list(s: &dyn Store) {
    let svc = service(s, "Alerting").await;
    assert!(s.list_alerts(None, 100).await.unwrap().is_empty());
    let first = s
        .open_alert(&new_alert(
            svc.id,
            AlertKind::HeartbeatMissing,
            "k1",
            t(100),
        ))
        .await
        .unwrap();
    assert_eq!(first.service_id, svc.id);
    assert_eq!(first.kind, AlertKind::HeartbeatMissing);
    assert_eq!(first.alert_name, "alert k1");
    assert_eq!(first.state, AlertState::Open);
    assert_eq!(first.dedup_key, "k1");
    assert_eq!(first.external_reference_id, None);
    assert_eq!(first.alert_cycle, 1);
    assert_eq!(first.created_at, t(100));
    assert_eq!(first.acknowledged_at, None);
    assert_eq!(first.resolved_at, None);
    let second = s
        .open_alert(&new_alert(svc.id, AlertKind::JobFailed, "k2", t(300)))
        .await
        .unwrap();
    let third = s
        .open_alert(&new_alert(svc.id, AlertKind::JobOverdue, "k3", t(300)))
        .await
        .unwrap();
    let listed = s.list_alerts(None, 100).await.unwrap();
    assert_eq!(listed, vec![third.clone(), second.clone(), first.clone()]);
    assert_eq!(s.list_alerts(None, 2).await.unwrap(), vec![third, second]);
    assert_eq!(s.list_alerts(Some(true), 100).await.unwrap(), listed);
    assert!(s.list_alerts(Some(false), 100).await.unwrap().is_empty());
    assert!(s.list_alerts(None, 0).await.unwrap().is_empty());

    // One live alert per dedup key.
    let err = s
        .open_alert(&new_alert(svc.id, AlertKind::JobFailed, "k1", t(400)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(s.list_alerts(None, 100).await.unwrap().len(), 3);
    // An alert for a service that does not exist is refused.
    assert!(
        s.open_alert(&new_alert(
            ServiceId(777_777),
            AlertKind::JobFailed,
            "k9",
            t(1)
        ))
        .await
        .is_err()
    );
}

/// Resolves an alert behind the store's back (the trait has no resolve method yet).
async fn resolve_alert(db: &TestDb, id: i64) {
    match db.store.backend() {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            sqlx::query("UPDATE alerts SET state = 'resolved', resolved_at = ? WHERE id = ?")
                .bind(t(999).millis())
                .bind(id)
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            sqlx::query("UPDATE alerts SET state = 'resolved', resolved_at = $1 WHERE id = $2")
                .bind(t(999).datetime())
                .bind(id)
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
    }
}

async fn alerts_dedup_until_resolved(db: &TestDb) {
    let s = &*db.store;
    let svc = service(s, "Flappy").await;
    let first = s
        .open_alert(&new_alert(
            svc.id,
            AlertKind::HeartbeatMissing,
            "flap",
            t(1),
        ))
        .await
        .unwrap();
    let dup = s
        .open_alert(&new_alert(
            svc.id,
            AlertKind::HeartbeatMissing,
            "flap",
            t(2),
        ))
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    resolve_alert(db, first.alert_id).await;
    let second = s
        .open_alert(&new_alert(
            svc.id,
            AlertKind::HeartbeatMissing,
            "flap",
            t(3),
        ))
        .await
        .expect("a resolved alert frees its dedup key");
    let resolved = s.list_alerts(Some(false), 10).await.unwrap();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].alert_id, first.alert_id);
    assert_eq!(resolved[0].state, AlertState::Resolved);
    assert_eq!(resolved[0].resolved_at, Some(t(999)));
    assert_eq!(s.list_alerts(Some(true), 10).await.unwrap(), vec![second]);
}

// ---- API keys -----------------------------------------------------------------------------------

fn new_key(id: &str, created: i64) -> NewApiKey {
    let mut digest = [0u8; 32];
    for (i, b) in digest.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(7).wrapping_add(created as u8);
    }
    digest[0] = 0;
    digest[31] = 0xff;
    NewApiKey {
        id: ApiKeyId(id.into()),
        name: format!("key {id}"),
        digest,
        scopes: Scopes::from_iter([Scope::Read, Scope::Agent]),
        expires_at: None,
        rate_limit_per_minute: None,
        created_by: None,
        created_at: t(created),
        owner_id: OwnerId::bootstrap(),
        new_owner: None,
        labels: Default::default(),
        audit: Some(NewAuditEntry {
            on_behalf_of: None,
            action_type: "api_key_created".into(),
            actor: "alice".into(),
            service_id: None,
            execution_id: None,
            details: serde_json::json!({ "key_id": id }),
            at: t(created),
        }),
    }
}

/// A key belongs to an owner; a new owner is written with its key and its audit entry in one
/// transaction, and a taken name (case-insensitively) writes nothing.
async fn key_owners(s: &dyn Store) {
    let boot = s
        .get_key_owner(&OwnerId::bootstrap())
        .await
        .unwrap()
        .expect("the migrations make the bootstrap owner");
    assert_eq!(boot.name, "bootstrap-admin");
    assert_eq!(boot.kind, OwnerKind::Person);

    let by_boot = s.create_api_key(&new_key("000000000001", 1)).await.unwrap();
    assert_eq!(by_boot.owner_id, OwnerId::bootstrap());

    let owner = |id: &str, name: &str, kind| NewKeyOwner {
        id: OwnerId(id.into()),
        name: name.into(),
        kind,
        created_by: "cli".into(),
        created_at: t(2),
        audit: Some(NewAuditEntry {
            on_behalf_of: None,
            action_type: "key_owner_created".into(),
            actor: "cli".into(),
            service_id: None,
            execution_id: None,
            details: json!({ "owner_id": id }),
            at: t(2),
        }),
    };
    let mut k = new_key("000000000002", 2);
    k.owner_id = OwnerId("0wner0000001".into());
    k.new_owner = Some(owner("0wner0000001", "Backup Robot", OwnerKind::Service));
    k.labels = BTreeMap::from([("tier".into(), "web".into()), ("env".into(), "prod".into())]);
    let rec = s.create_api_key(&k).await.unwrap();
    assert_eq!(rec.owner_id, OwnerId("0wner0000001".into()));
    assert_eq!(rec.labels, k.labels);
    assert!(by_boot.labels.is_empty());
    assert_eq!(
        s.get_api_key(&k.id).await.unwrap().unwrap().owner_id,
        rec.owner_id
    );
    let found = s
        .find_key_owner("backup robot")
        .await
        .unwrap()
        .expect("found");
    assert_eq!(found.id, rec.owner_id);
    assert_eq!(found.kind, OwnerKind::Service);
    assert_eq!(found.created_by, "cli");
    assert_eq!(s.find_key_owner("nobody").await.unwrap(), None);

    // A taken name: neither the owner nor the key nor an audit entry is written.
    let mut again = new_key("000000000003", 3);
    again.owner_id = OwnerId("0wner0000002".into());
    again.new_owner = Some(owner("0wner0000002", "BACKUP ROBOT", OwnerKind::Person));
    let dup = s.create_api_key(&again).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    assert_eq!(s.get_api_key(&again.id).await.unwrap(), None);
    assert_eq!(
        s.get_key_owner(&OwnerId("0wner0000002".into()))
            .await
            .unwrap(),
        None
    );
    let made = crate::db::audit_log(s, Some("key_owner_created")).await;
    assert_eq!(made.len(), 1, "{made:#?}");
    let owners: Vec<_> = s
        .list_key_owners()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id.0)
        .collect();
    assert!(
        owners.contains(&"bootstrap".to_owned()) && owners.contains(&"0wner0000001".to_owned())
    );
    assert_eq!(owners.len(), 2, "{owners:?}");
}

/// The actor (the key) and whom it said it acted for are stored apart, in audit entries and in
/// snapshots.
async fn actor_and_on_behalf_of_are_kept_apart(s: &dyn Store) {
    let svc = service(s, "told").await;
    let who = Actor {
        name: "ops (0123456789ab)".into(),
        on_behalf_of: Some("bootstrap-admin".into()),
    };
    s.append_audit(&NewAuditEntry {
        action_type: "team_created".into(),
        actor: who.name.clone(),
        on_behalf_of: who.on_behalf_of.clone(),
        service_id: None,
        execution_id: None,
        details: json!({}),
        at: t(1),
    })
    .await
    .unwrap();
    let e = crate::db::audit_log(s, Some("team_created"))
        .await
        .remove(0);
    assert_eq!(e.actor, "ops (0123456789ab)");
    assert_eq!(e.on_behalf_of.as_deref(), Some("bootstrap-admin"));
    s.delete_service(svc.id, &who).await.unwrap().unwrap();
    let snap = snapshots_of(s, svc.id).await.entries.pop().unwrap();
    assert_eq!(snap.actor, "ops (0123456789ab)");
    assert_eq!(snap.on_behalf_of.as_deref(), Some("bootstrap-admin"));
    s.restore_snapshot(snap.snapshot_id, &who, None)
        .await
        .unwrap();
    let restored = s.get_snapshot(snap.snapshot_id).await.unwrap().unwrap();
    assert_eq!(restored.restored_by.as_deref(), Some("ops (0123456789ab)"));
    assert_eq!(
        restored.restored_on_behalf_of.as_deref(),
        Some("bootstrap-admin")
    );
}

/// The `key_id`s of an action's audit entries, sorted.
async fn keys_audited(s: &dyn Store, action: &str) -> Vec<String> {
    let mut ids: Vec<String> = crate::db::audit_log(s, Some(action))
        .await
        .iter()
        .map(|e| e.details["key_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    ids
}

async fn api_keys(s: &dyn Store) {
    assert!(s.list_api_keys().await.unwrap().is_empty());
    let mut full = new_key("0a0b0c0d0e0f", 10);
    full.scopes = Scopes::from_iter([Scope::Admin, Scope::Write]);
    full.expires_at = Some(t(86_400_000));
    full.rate_limit_per_minute = Some(u32::MAX);
    full.created_by = Some("bootstrap".into());
    let rec = s.create_api_key(&full).await.unwrap();
    assert_eq!(rec.id, full.id);
    assert_eq!(rec.name, "key 0a0b0c0d0e0f");
    assert_eq!(rec.digest, full.digest.to_vec());
    assert_eq!(rec.scopes, full.scopes);
    assert_eq!(rec.created_at, t(10));
    assert_eq!(rec.expires_at, Some(t(86_400_000)));
    assert_eq!(rec.revoked_at, None);
    assert_eq!(rec.rate_limit_per_minute, Some(u32::MAX));
    assert_eq!(rec.created_by.as_deref(), Some("bootstrap"));
    assert_eq!(s.get_api_key(&full.id).await.unwrap(), Some(rec.clone()));
    assert_eq!(
        s.get_api_key(&ApiKeyId("ffffffffffff".into()))
            .await
            .unwrap(),
        None
    );

    let dup = s.create_api_key(&new_key("0a0b0c0d0e0f", 20)).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");

    // Listed by creation time, then id.
    let b = s.create_api_key(&new_key("bbbbbbbbbbbb", 5)).await.unwrap();
    let a = s.create_api_key(&new_key("aaaaaaaaaaaa", 5)).await.unwrap();
    let upper = s.create_api_key(&new_key("Zzzzzzzzzzzz", 5)).await.unwrap();
    assert_eq!(
        s.list_api_keys().await.unwrap(),
        vec![upper.clone(), a.clone(), b.clone(), rec.clone()],
        "ties in byte order"
    );

    let revocation = NewAuditEntry {
        on_behalf_of: None,
        action_type: "api_key_revoked".into(),
        actor: "alice".into(),
        service_id: None,
        execution_id: None,
        details: serde_json::json!({ "key_id": a.id.0 }),
        at: t(50),
    };
    assert!(
        s.revoke_api_key(&a.id, t(50), Some(&revocation))
            .await
            .unwrap()
    );
    let revoked = s.get_api_key(&a.id).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(t(50)));
    assert!(
        !s.revoke_api_key(&a.id, t(60), Some(&revocation))
            .await
            .unwrap(),
        "revoking twice"
    );
    // Each key created and revoked has its entry, written with it; the duplicate and the
    // second revocation wrote none.
    assert_eq!(
        keys_audited(s, "api_key_created").await,
        [
            "0a0b0c0d0e0f",
            "Zzzzzzzzzzzz",
            "aaaaaaaaaaaa",
            "bbbbbbbbbbbb"
        ]
    );
    assert_eq!(keys_audited(s, "api_key_revoked").await, ["aaaaaaaaaaaa"]);
    assert_eq!(
        s.get_api_key(&a.id).await.unwrap().unwrap().revoked_at,
        Some(t(50)),
        "the first revocation time stays"
    );
    assert!(
        !s.revoke_api_key(&ApiKeyId("000000000000".into()), t(1), None)
            .await
            .unwrap()
    );
    assert_eq!(s.get_api_key(&b.id).await.unwrap(), Some(b));
}

// ---- audit log ----------------------------------------------------------------------------------

async fn audit_log_filters_and_paging(s: &dyn Store) {
    let svc = service(s, "Audited").await;
    let other = service(s, "Audited-2").await;
    let entries = [
        ("service.update", "alice", Some(svc.id), None, 100),
        ("playbook.run", "bob", Some(svc.id), Some(7), 200),
        ("playbook.step", "bob", None, Some(7), 200),
        ("service.update", "carol", Some(other.id), None, 300),
        ("key.create", "alice", None, None, 400),
    ];
    for (i, (action, actor, service_id, execution_id, at)) in entries.into_iter().enumerate() {
        s.append_audit(&NewAuditEntry {
            on_behalf_of: None,
            action_type: action.into(),
            actor: actor.into(),
            service_id,
            execution_id,
            details: json!({
                "i": i,
                "nested": {"list": [1, 2.5, "x"], "none": null},
                "text": "ünï ☃ \"quoted\" \\",
                "numbers": [1.0, -0.5, 1e300, u64::MAX, i64::MIN, 0.1]
            }),
            at: t(at),
        })
        .await
        .unwrap();
    }
    let list = |f: AuditFilter, p: PageRequest| async move {
        let page = s.list_audit(&f, p).await.unwrap();
        (
            page.total_count,
            page.entries
                .iter()
                .map(|e| e.details["i"].as_i64().unwrap())
                .collect::<Vec<_>>(),
            page.entries,
        )
    };
    let f = AuditFilter::default;
    let (total, order, all) = list(f(), ALL).await;
    assert_eq!(total, 5);
    assert_eq!(
        order,
        [4, 3, 2, 1, 0],
        "newest first, later id first on ties"
    );
    let e = &all[3];
    assert_eq!(e.action_type, "playbook.run");
    assert_eq!(e.actor, "bob");
    assert_eq!(e.service_id, Some(svc.id));
    assert_eq!(e.execution_id, Some(7));
    assert_eq!(e.timestamp, t(200));
    assert_eq!(
        e.details,
        json!({
            "i": 1,
            "nested": {"list": [1, 2.5, "x"], "none": null},
            "text": "ünï ☃ \"quoted\" \\",
            "numbers": [1.0, -0.5, 1e300, u64::MAX, i64::MIN, 0.1]
        })
    );
    assert!(e.details["numbers"][0].is_f64(), "1.0 stays a float");
    assert!(e.details["numbers"][3].is_u64());
    assert!(all.windows(2).all(|w| w[0].id != w[1].id));

    let check = |f: AuditFilter, expected: &'static [i64]| {
        let fut = list(f, ALL);
        async move {
            let (total, order, _) = fut.await;
            assert_eq!(order, expected);
            assert_eq!(total, expected.len() as i64);
        }
    };
    check(
        AuditFilter {
            execution_id: Some(7),
            ..f()
        },
        &[2, 1],
    )
    .await;
    check(
        AuditFilter {
            service_id: Some(svc.id),
            ..f()
        },
        &[1, 0],
    )
    .await;
    check(
        AuditFilter {
            action_type: Some("service.update".into()),
            ..f()
        },
        &[3, 0],
    )
    .await;
    check(
        AuditFilter {
            actor: Some("alice".into()),
            ..f()
        },
        &[4, 0],
    )
    .await;
    check(
        AuditFilter {
            actor: Some("ALICE".into()),
            ..f()
        },
        &[],
    )
    .await;
    check(
        AuditFilter {
            start: Some(t(200)),
            end: Some(t(300)),
            ..f()
        },
        &[3, 2, 1],
    )
    .await;
    check(
        AuditFilter {
            start: Some(t(201)),
            ..f()
        },
        &[4, 3],
    )
    .await;
    check(
        AuditFilter {
            end: Some(t(199)),
            ..f()
        },
        &[0],
    )
    .await;
    check(
        AuditFilter {
            execution_id: Some(7),
            service_id: Some(svc.id),
            action_type: Some("playbook.run".into()),
            actor: Some("bob".into()),
            start: Some(t(200)),
            end: Some(t(200)),
        },
        &[1],
    )
    .await;

    let (total, order, _) = list(f(), page(2, 1)).await;
    assert_eq!((total, order), (5, vec![3, 2]));
    let (total, order, _) = list(f(), page(10, 5)).await;
    assert_eq!((total, order), (5, vec![]));
}

// ---- time ---------------------------------------------------------------------------------------

async fn timestamps_round_trip_to_the_millisecond(s: &dyn Store) {
    for (i, ms) in [
        1_767_225_600_001i64, // .001
        1_767_225_600_999,    // .999
        946_684_799_999,      // 1999-12-31T23:59:59.999Z
        253_402_300_799_999,  // 9999-12-31T23:59:59.999Z
        1,
    ]
    .into_iter()
    .enumerate()
    {
        let at = Timestamp::from_millis(ms);
        let mut new = new_service(&format!("clock-{i}"));
        new.at = at;
        let svc = service_with(s, new).await;
        assert_eq!(svc.created_at, at);
        let got = s.get_service(svc.id).await.unwrap().unwrap();
        assert_eq!(got.created_at.millis(), ms);
        assert_eq!(got.updated_at.millis(), ms);

        s.record_heartbeats(&[hb(&format!("clock-{i}"), "UP", at)])
            .await
            .unwrap();
        let got = s.get_service(svc.id).await.unwrap().unwrap();
        assert_eq!(got.last_heartbeat_at, Some(at));
        assert_eq!(heartbeats_of(s, svc.id).await[0].time, at);

        let muted = update(
            s,
            svc.id,
            ServicePatch {
                mute: Some(MuteChange::Mute {
                    until: Some(at),
                    reason: None,
                }),
                ..Default::default()
            },
            at,
        )
        .await;
        let got = s.get_service(svc.id).await.unwrap().unwrap();
        assert_eq!(got, muted);
        let snap = &snapshots_of(s, svc.id).await.entries[0];
        assert_eq!(snap.created_at, at);
        assert_eq!(snap.snapshot_data.created_at, at);

        let run = recorded(
            s.record_job_signal(&signal(svc.id, SignalKind::Complete, Some("r"), at))
                .await
                .unwrap(),
        );
        assert_eq!(run.finished_at, Some(at));
        assert_eq!(
            s.list_runs(svc.id, ALL).await.unwrap().entries[0].finished_at,
            Some(at)
        );

        s.append_audit(&NewAuditEntry {
            on_behalf_of: None,
            action_type: format!("clock-{i}"),
            actor: "t".into(),
            service_id: None,
            execution_id: None,
            details: json!({}),
            at,
        })
        .await
        .unwrap();
        let audit = s
            .list_audit(
                &AuditFilter {
                    action_type: Some(format!("clock-{i}")),
                    start: Some(at),
                    end: Some(at),
                    ..Default::default()
                },
                ALL,
            )
            .await
            .unwrap();
        assert_eq!(audit.total_count, 1);
        assert_eq!(audit.entries[0].timestamp, at);
        assert_eq!(audit.entries[0].details, json!({}));
    }
}

#[tokio::test]
async fn every_configured_backend_is_reachable() {
    for (name, db) in crate::db::all().await {
        assert_eq!(db.store.backend().as_str(), name);
        assert_eq!(Backend::from_url(&db.url).unwrap(), db.store.backend());
        db.store.ping().await.unwrap();
    }
}

/// A statement the database refuses (PostgreSQL rejects a NUL byte in text; SQLite stores it) is
/// a failure of that request, not an outage: it must not be reported as "database unavailable",
/// which tells clients to retry and operators to look at the database.
async fn a_refused_statement_is_not_an_outage(s: &dyn Store) {
    match s.find_service("nul\0name").await {
        Ok(found) => assert!(found.is_none()),
        Err(StoreError::Failed(_)) => {}
        Err(e) => panic!("a refused statement was reported as {e:?}"),
    }
    // The store still answers afterwards.
    s.ping().await.unwrap();
}
