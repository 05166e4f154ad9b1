//! Store conformance for playbook executions (SQLite always, PostgreSQL when configured).
//! Every check runs once per backend.

use std::sync::Arc;

use medic_server::domain::{ServiceId, Timestamp};
use medic_server::store::*;
use serde_json::json;

conformance! {
    executions_create_writes_state_audit_and_counts_starts,
    executions_update_is_conditional_on_version,
    executions_one_of_many_racing_updates_wins(db),
    executions_concurrent_starts_see_each_other(db),
    executions_claim_leases_what_is_due,
    executions_list_filters_and_pages,
}

const T0: i64 = 1_767_225_600_123; // 2026-01-01T00:00:00.123Z

fn t(offset_ms: i64) -> Timestamp {
    Timestamp::from_millis(T0 + offset_ms)
}

fn pinned(playbook_id: i64) -> PinnedVersion {
    PinnedVersion {
        playbook_id,
        name: format!("playbook-{playbook_id}"),
        version: 3,
        sha256: "ab".repeat(32),
        source: "name: x\nsteps: []\n".into(),
    }
}

fn new_execution(playbook_id: i64, service: Option<i64>, at: Timestamp) -> NewExecution {
    NewExecution {
        pinned: pinned(playbook_id),
        service_id: service.map(ServiceId),
        alert_id: None,
        trigger: ExecutionTrigger::Manual,
        requested_by: Some("key-a".into()),
        context: json!({ "inputs": { "unit": "nginx" } }),
        at,
    }
}

fn audit(action: &str, at: Timestamp) -> NewAuditEntry {
    NewAuditEntry {
        action_type: action.into(),
        on_behalf_of: None,
        actor: "engine".into(),
        service_id: None,
        execution_id: None,
        details: json!({}),
        at,
    }
}

/// A first state: `status`, due at `due`, one audit entry.
fn first(status: &str, due: Option<Timestamp>, at: Timestamp) -> ExecutionWrite {
    ExecutionWrite {
        status: status.into(),
        version: 0,
        state: json!({ "status": status }),
        due_at: due,
        lease: None,
        finished_at: (status == "skipped").then_some(at),
        at,
        audit: vec![audit(
            if status == "skipped" {
                "execution_skipped"
            } else {
                "execution_started"
            },
            at,
        )],
        notices: Vec::new(),
    }
}

async fn create(
    s: &dyn Store,
    new: &NewExecution,
    status: &str,
    due: Option<Timestamp>,
) -> ExecutionRecord {
    let at = new.at;
    s.create_execution(new, t(-3_600_000), &move |_, _| first(status, due, at))
        .await
        .expect("create")
}

async fn audit_of(s: &dyn Store, id: i64) -> Vec<String> {
    let f = AuditFilter {
        execution_id: Some(id),
        ..AuditFilter::default()
    };
    let mut e = s
        .list_audit(
            &f,
            PageRequest {
                limit: 100,
                offset: 0,
            },
        )
        .await
        .expect("audit")
        .entries;
    e.reverse();
    e.into_iter().map(|e| e.action_type).collect()
}

async fn executions_create_writes_state_audit_and_counts_starts(s: &dyn Store) {
    let a = create(s, &new_execution(1, Some(7), t(0)), "running", Some(t(0))).await;
    assert_eq!(a.status, "running");
    assert_eq!(a.version, 0);
    assert_eq!(a.state, json!({ "status": "running" }));
    assert_eq!(a.playbook_id, 1);
    assert_eq!(a.playbook_name, "playbook-1");
    assert_eq!(a.playbook_version, 3);
    assert_eq!(a.playbook_sha256, "ab".repeat(32));
    assert_eq!(a.playbook_source, "name: x\nsteps: []\n");
    assert_eq!(a.service_id, Some(ServiceId(7)));
    assert_eq!(a.trigger, "manual");
    assert_eq!(a.requested_by.as_deref(), Some("key-a"));
    assert_eq!(a.context["inputs"]["unit"], "nginx");
    assert_eq!(a.due_at, Some(t(0)));
    assert_eq!(a.created_at, t(0));
    assert_eq!(audit_of(s, a.id).await, ["execution_started"]);
    assert_eq!(s.get_execution(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(s.get_execution(a.id + 1000).await.unwrap(), None);

    create(s, &new_execution(1, None, t(10)), "pending_approval", None).await;
    create(s, &new_execution(2, Some(7), t(20)), "completed", None).await;
    // Skipped executions never started: they do not count.
    create(s, &new_execution(1, Some(7), t(30)), "skipped", None).await;
    // Older than the window: not counted.
    create(
        s,
        &new_execution(1, Some(7), t(-7_200_000)),
        "completed",
        None,
    )
    .await;

    let seen = std::sync::Mutex::new(None);
    let new = new_execution(1, Some(7), t(40));
    let d = s
        .create_execution(&new, t(-3_600_000), &|id, recent| {
            *seen.lock().unwrap() = Some((id, recent.clone()));
            first("running", None, t(40))
        })
        .await
        .unwrap();
    let (id, recent) = seen.into_inner().unwrap().expect("build was called");
    assert_eq!(id, d.id);
    let sorted = |mut v: Vec<Timestamp>| {
        v.sort();
        v
    };
    assert_eq!(sorted(recent.playbook), vec![t(0), t(10)]);
    assert_eq!(sorted(recent.service), vec![t(0), t(20)]);
    assert_eq!(sorted(recent.global), vec![t(0), t(10), t(20)]);
}

async fn executions_update_is_conditional_on_version(s: &dyn Store) {
    let a = create(s, &new_execution(1, Some(7), t(0)), "running", Some(t(0))).await;
    let w = |version: i64, status: &str, action: &str| ExecutionWrite {
        status: status.into(),
        version,
        state: json!({ "v": version }),
        due_at: None,
        lease: None,
        finished_at: (status == "completed").then_some(t(5)),
        at: t(5),
        audit: vec![audit(action, t(5))],
        notices: Vec::new(),
    };
    assert!(
        s.update_execution(a.id, 0, &w(1, "waiting", "step_completed"))
            .await
            .unwrap()
    );
    // From a version that is no longer current: refused, and no audit entry.
    assert!(
        !s.update_execution(a.id, 0, &w(1, "cancelled", "cancelled"))
            .await
            .unwrap()
    );
    assert!(
        s.update_execution(a.id, 1, &w(2, "completed", "execution_completed"))
            .await
            .unwrap()
    );
    let got = s.get_execution(a.id).await.unwrap().unwrap();
    assert_eq!(got.status, "completed");
    assert_eq!(got.version, 2);
    assert_eq!(got.state, json!({ "v": 2 }));
    assert_eq!(got.finished_at, Some(t(5)));
    assert_eq!(got.updated_at, t(5));
    assert_eq!(got.due_at, None);
    assert_eq!(
        audit_of(s, a.id).await,
        ["execution_started", "step_completed", "execution_completed"]
    );
    assert!(
        !s.update_execution(a.id + 1000, 0, &w(1, "waiting", "x"))
            .await
            .unwrap()
    );
}

async fn executions_one_of_many_racing_updates_wins(db: &crate::db::TestDb) {
    let s = db.store.clone();
    let a = create(&*s, &new_execution(1, None, t(0)), "pending_approval", None).await;
    let mut tasks = Vec::new();
    for i in 0..30 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            let w = ExecutionWrite {
                status: "running".into(),
                version: 1,
                state: json!({ "by": i }),
                due_at: Some(t(1)),
                lease: None,
                finished_at: None,
                at: t(1),
                audit: vec![audit("approved", t(1))],
                notices: Vec::new(),
            };
            s.update_execution(a.id, 0, &w).await.unwrap()
        }));
    }
    let mut wins = 0;
    for task in tasks {
        if task.await.unwrap() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(audit_of(&*s, a.id).await, ["execution_started", "approved"]);
}

async fn executions_concurrent_starts_see_each_other(db: &crate::db::TestDb) {
    // Each start may go ahead only while fewer than 5 started in the window: with the count
    // and the insert in one serialized step, exactly 5 of 20 concurrent starts run.
    let s = db.store.clone();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            let new = new_execution(1, Some(7), t(i));
            s.create_execution(&new, t(-3_600_000), &move |_, recent| {
                let status = if recent.service.len() >= 5 {
                    "skipped"
                } else {
                    "running"
                };
                first(status, None, t(i))
            })
            .await
            .unwrap()
            .status
        }));
    }
    let mut running = 0;
    for task in tasks {
        if task.await.unwrap() == "running" {
            running += 1;
        }
    }
    assert_eq!(running, 5);
}

async fn executions_claim_leases_what_is_due(s: &dyn Store) {
    assert_eq!(s.next_execution_due().await.unwrap(), None);
    let due = create(s, &new_execution(1, None, t(0)), "running", Some(t(0))).await;
    let later = create(s, &new_execution(1, None, t(0)), "waiting", Some(t(60_000))).await;
    let idle = create(s, &new_execution(1, None, t(0)), "pending_approval", None).await;
    assert_eq!(s.next_execution_due().await.unwrap(), Some(t(0)));

    let got = s.claim_executions("w1", t(1), t(30_001), 10).await.unwrap();
    assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), [due.id]);
    assert_eq!(got[0].lease_owner.as_deref(), Some("w1"));
    assert_eq!(got[0].lease_until, Some(t(30_001)));
    // Leased: nobody else gets it until the lease runs out.
    assert!(
        s.claim_executions("w2", t(2), t(30_002), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.next_execution_due().await.unwrap(), Some(t(30_001)));
    let got = s
        .claim_executions("w2", t(30_001), t(60_001), 10)
        .await
        .unwrap();
    assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), [due.id]);
    // Only the holder's release counts.
    s.release_execution(due.id, "w1", None).await.unwrap();
    assert_eq!(
        s.get_execution(due.id)
            .await
            .unwrap()
            .unwrap()
            .lease_owner
            .as_deref(),
        Some("w2")
    );
    s.release_execution(due.id, "w2", Some(t(60_000)))
        .await
        .unwrap();
    let r = s.get_execution(due.id).await.unwrap().unwrap();
    assert_eq!(
        (r.lease_owner, r.lease_until, r.due_at),
        (None, None, Some(t(60_000)))
    );

    // At the timer, both are due; oldest due first; `limit` holds.
    let got = s
        .claim_executions("w1", t(60_000), t(90_000), 1)
        .await
        .unwrap();
    assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), [due.id]);
    let got = s
        .claim_executions("w1", t(60_000), t(90_000), 10)
        .await
        .unwrap();
    assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), [later.id]);
    // A process alone on its database frees its dead predecessor's leases at start-up.
    assert_eq!(s.release_all_execution_leases(t(61_000)).await.unwrap(), 2);
    let r = s.get_execution(later.id).await.unwrap().unwrap();
    assert_eq!((r.lease_owner, r.due_at), (None, Some(t(60_000))));
    assert!(
        s.claim_executions("w3", t(61_000), t(91_000), 10)
            .await
            .unwrap()
            .iter()
            .all(|r| r.id != idle.id)
    );
}

async fn executions_list_filters_and_pages(s: &dyn Store) {
    let a = create(s, &new_execution(1, Some(7), t(0)), "completed", None).await;
    let mut webhook = new_execution(2, Some(8), t(10));
    webhook.trigger = ExecutionTrigger::Webhook;
    let b = create(s, &webhook, "failed", None).await;
    let c = create(s, &new_execution(1, None, t(20)), "running", Some(t(20))).await;
    let page = |limit, offset| PageRequest { limit, offset };
    let ids = |p: Page<ExecutionRecord>| {
        (
            p.entries.iter().map(|r| r.id).collect::<Vec<_>>(),
            p.total_count,
        )
    };
    let all = ExecutionFilter::default();
    assert_eq!(
        ids(s.list_executions(&all, page(10, 0)).await.unwrap()),
        (vec![c.id, b.id, a.id], 3)
    );
    assert_eq!(
        ids(s.list_executions(&all, page(1, 1)).await.unwrap()),
        (vec![b.id], 3)
    );
    let f = |f: ExecutionFilter| f;
    let cases = [
        (
            f(ExecutionFilter {
                playbook_id: Some(1),
                ..all.clone()
            }),
            vec![c.id, a.id],
        ),
        (
            f(ExecutionFilter {
                service_id: Some(ServiceId(8)),
                ..all.clone()
            }),
            vec![b.id],
        ),
        (
            f(ExecutionFilter {
                status: Some("completed".into()),
                ..all.clone()
            }),
            vec![a.id],
        ),
        (
            f(ExecutionFilter {
                trigger: Some(ExecutionTrigger::Webhook),
                ..all.clone()
            }),
            vec![b.id],
        ),
        (
            f(ExecutionFilter {
                start: Some(t(10)),
                end: Some(t(15)),
                ..all.clone()
            }),
            vec![b.id],
        ),
    ];
    for (filter, want) in cases {
        let n = want.len() as i64;
        assert_eq!(
            ids(s.list_executions(&filter, page(10, 0)).await.unwrap()),
            (want, n),
            "{filter:?}"
        );
    }
}
