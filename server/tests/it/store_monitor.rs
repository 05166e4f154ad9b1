//! Store conformance for teams, notification targets and maintenance windows (SQLite always,
//! PostgreSQL when configured). Like `store.rs`, every check runs once per backend.

use medic_server::domain::monitor::PagingPeriod;
use medic_server::domain::schedule::{
    CronSchedule, MaintenanceWindow, RangeSpec, WorkingHours, WorkingHoursSpec,
};
use medic_server::domain::service::name_key;
use medic_server::domain::{HeartbeatName, Priority, Timestamp};
use medic_server::store::*;

conformance! {
    teams_crud_and_case_insensitive_names,
    targets_crud_order_and_filters,
    target_needs_an_existing_owner,
    deleting_a_team_takes_its_targets_and_windows,
    windows_crud_and_filters,
    changes_commit_with_their_audit_entries,
}

const T0: i64 = 1_767_225_600_123; // 2026-01-01T00:00:00.123Z

fn t(offset_ms: i64) -> Timestamp {
    Timestamp::from_millis(T0 + offset_ms)
}

const MINUTE: i64 = 60_000;

fn hours(tz: &str) -> WorkingHours {
    WorkingHours::parse(WorkingHoursSpec {
        timezone: tz.into(),
        ranges: vec![RangeSpec {
            days: vec!["mon".into(), "fri".into()],
            start: "22:00".into(),
            end: "06:00".into(),
        }],
    })
    .unwrap()
}

fn new_team(name: &str) -> NewTeam {
    NewTeam {
        name: name.into(),
        working_hours: None,
        slack_channel: None,
        at: t(0),
    }
}

async fn team(s: &dyn Store, name: &str) -> Team {
    s.create_team(&new_team(name), None).await.unwrap()
}

async fn service(s: &dyn Store, name: &str) -> ServiceId {
    let new = NewService {
        heartbeat_name: HeartbeatName::parse(name).unwrap(),
        service_name: name.into(),
        environment: None,
        interval_seconds: 60,
        threshold: 1,
        grace_seconds: 0,
        team: "payments".into(),
        priority: Priority::P3,
        runbook: None,
        max_duration_ms: None,
        monitoring: Default::default(),
        at: t(0),
    };
    match s.create_service(&new).await.unwrap() {
        CreateOutcome::Created(s) => s.id,
        CreateOutcome::Exists(_) => panic!("{name} exists"),
    }
}

use medic_server::domain::ServiceId;

fn target(owner: TargetOwner, config: TargetConfig, priority: i32) -> NewTarget {
    NewTarget {
        owner,
        config,
        priority,
        period: PagingPeriod::Always,
        enabled: true,
        at: t(0),
    }
}

fn slack(channel: &str) -> TargetConfig {
    TargetConfig::Slack {
        channel: channel.into(),
    }
}

fn ids<T, I: Copy>(v: &[T], f: impl Fn(&T) -> I) -> Vec<I> {
    v.iter().map(f).collect()
}

// ---- checks -------------------------------------------------------------------------------------

async fn teams_crud_and_case_insensitive_names(s: &dyn Store) {
    let created = s
        .create_team(
            &NewTeam {
                name: "Payments".into(),
                working_hours: Some(hours("Europe/Berlin")),
                slack_channel: Some("#payments".into()),
                at: t(0),
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(created.name, "Payments");
    assert_eq!(created.working_hours, Some(hours("Europe/Berlin")));
    assert_eq!(created.created_at, t(0));
    assert_eq!(s.get_team(created.id).await.unwrap(), Some(created.clone()));

    // Names are unique case-insensitively.
    let dup = s.create_team(&new_team("PAYMENTS"), None).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    // Found from a service's free-text team through name_key.
    let found = s.find_team(&name_key("payMENTS")).await.unwrap();
    assert_eq!(found.map(|t| t.id), Some(created.id));
    assert_eq!(s.find_team("nobody").await.unwrap(), None);

    let other = team(s, "Search").await;
    assert_eq!(
        ids(&s.list_teams().await.unwrap(), |t| t.id),
        vec![created.id, other.id]
    );

    // Patch: rename, change hours, clear the channel; absent fields stay.
    let patched = s
        .update_team(
            created.id,
            &TeamPatch {
                name: Some("Payments EU".into()),
                working_hours: Some(Some(hours("UTC"))),
                slack_channel: Some(None),
            },
            t(5),
            None,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(patched.name, "Payments EU");
    assert_eq!(patched.working_hours, Some(hours("UTC")));
    assert_eq!(patched.slack_channel, None);
    assert_eq!(patched.updated_at, t(5));
    assert_eq!(patched.created_at, t(0));
    assert_eq!(s.get_team(created.id).await.unwrap(), Some(patched.clone()));
    let cleared = s
        .update_team(
            created.id,
            &TeamPatch {
                working_hours: Some(None),
                ..TeamPatch::default()
            },
            t(6),
            None,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cleared.working_hours, None);
    assert_eq!(cleared.name, "Payments EU");

    // A rename onto a taken name conflicts and changes nothing.
    let clash = s
        .update_team(
            created.id,
            &TeamPatch {
                name: Some("search".into()),
                ..TeamPatch::default()
            },
            t(7),
            None,
        )
        .await;
    assert!(matches!(clash, Err(StoreError::Conflict(_))), "{clash:?}");
    assert_eq!(
        s.get_team(created.id).await.unwrap().unwrap().name,
        "Payments EU"
    );

    assert_eq!(
        s.update_team(TeamId(999_999), &TeamPatch::default(), t(8), None)
            .await
            .unwrap(),
        None
    );
    assert!(s.delete_team(other.id, None).await.unwrap());
    assert!(!s.delete_team(other.id, None).await.unwrap());
    assert_eq!(s.get_team(other.id).await.unwrap(), None);
    // The freed name can be taken again.
    team(s, "SEARCH").await;
}

async fn targets_crud_order_and_filters(s: &dyn Store) {
    let tm = team(s, "payments").await;
    let svc = service(s, "billing-job").await;
    let pd = s
        .create_target(
            &NewTarget {
                period: PagingPeriod::AfterHours,
                ..target(
                    TargetOwner::Team(tm.id),
                    TargetConfig::Pagerduty {
                        routing_key: "0123456789abcdef0123456789abcdef".into(),
                    },
                    2,
                )
            },
            None,
        )
        .await
        .unwrap();
    let sl = s
        .create_target(&target(TargetOwner::Team(tm.id), slack("#pay"), 1), None)
        .await
        .unwrap();
    let wh = s
        .create_target(
            &target(
                TargetOwner::Service(svc),
                TargetConfig::Webhook {
                    url: "https://hooks.example.com/medic".into(),
                    secret: "s3cret-value".into(),
                },
                0,
            ),
            None,
        )
        .await
        .unwrap();
    assert_eq!(pd.owner, TargetOwner::Team(tm.id));
    assert_eq!(pd.period, PagingPeriod::AfterHours);
    assert!(pd.enabled);
    assert_eq!(wh.owner, TargetOwner::Service(svc));
    // Secrets are stored as given (masking is the API's job).
    assert_eq!(s.get_target(wh.id).await.unwrap(), Some(wh.clone()));

    let team_targets = s
        .list_targets(&TargetFilter {
            team: Some(tm.id),
            service: None,
        })
        .await
        .unwrap();
    assert_eq!(
        ids(&team_targets, |t| t.id),
        vec![sl.id, pd.id],
        "priority order"
    );
    let svc_targets = s
        .list_targets(&TargetFilter {
            team: None,
            service: Some(svc),
        })
        .await
        .unwrap();
    assert_eq!(ids(&svc_targets, |t| t.id), vec![wh.id]);
    let all = s.list_targets(&TargetFilter::default()).await.unwrap();
    assert_eq!(ids(&all, |t| t.id), vec![wh.id, sl.id, pd.id]);

    let updated = s
        .update_target(
            sl.id,
            &TargetPatch {
                config: Some(slack("#pay-oncall")),
                priority: Some(5),
                period: Some(PagingPeriod::DuringHours),
                enabled: Some(false),
            },
            t(9),
            None,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.config, slack("#pay-oncall"));
    assert_eq!(updated.priority, 5);
    assert_eq!(updated.period, PagingPeriod::DuringHours);
    assert!(!updated.enabled);
    assert_eq!(updated.updated_at, t(9));
    assert_eq!(s.get_target(sl.id).await.unwrap(), Some(updated));
    let reordered = s
        .list_targets(&TargetFilter {
            team: Some(tm.id),
            service: None,
        })
        .await
        .unwrap();
    assert_eq!(ids(&reordered, |t| t.id), vec![pd.id, sl.id]);

    assert_eq!(
        s.update_target(TargetId(999_999), &TargetPatch::default(), t(9), None)
            .await
            .unwrap(),
        None
    );
    assert!(s.delete_target(pd.id, None).await.unwrap());
    assert!(!s.delete_target(pd.id, None).await.unwrap());
    assert_eq!(s.get_target(pd.id).await.unwrap(), None);
}

async fn target_needs_an_existing_owner(s: &dyn Store) {
    let r = s
        .create_target(
            &target(TargetOwner::Team(TeamId(424_242)), slack("#x"), 0),
            None,
        )
        .await;
    assert!(r.is_err(), "{r:?}");
    let r = s
        .create_target(
            &target(TargetOwner::Service(ServiceId(424_242)), slack("#x"), 0),
            None,
        )
        .await;
    assert!(r.is_err(), "{r:?}");
    assert!(
        s.list_targets(&TargetFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
}

async fn deleting_a_team_takes_its_targets_and_windows(s: &dyn Store) {
    let tm = team(s, "payments").await;
    let keep = team(s, "search").await;
    let gone = s
        .create_target(&target(TargetOwner::Team(tm.id), slack("#a"), 0), None)
        .await
        .unwrap();
    let kept = s
        .create_target(&target(TargetOwner::Team(keep.id), slack("#b"), 0), None)
        .await
        .unwrap();
    let window = |scope| NewWindow {
        scope,
        window: MaintenanceWindow::one_time(t(0), t(MINUTE)).unwrap(),
        reason: None,
        created_by: "it".into(),
        at: t(0),
    };
    let w_gone = s
        .create_window(&window(WindowScope::Team(tm.id)), None)
        .await
        .unwrap();
    let w_global = s
        .create_window(&window(WindowScope::Global), None)
        .await
        .unwrap();
    assert!(s.delete_team(tm.id, None).await.unwrap());
    assert_eq!(s.get_target(gone.id).await.unwrap(), None);
    assert_eq!(s.get_target(kept.id).await.unwrap(), Some(kept));
    assert_eq!(s.get_window(w_gone.id).await.unwrap(), None);
    assert_eq!(s.get_window(w_global.id).await.unwrap(), Some(w_global));
}

async fn windows_crud_and_filters(s: &dyn Store) {
    let tm = team(s, "payments").await;
    let svc = service(s, "billing-job").await;
    let other = service(s, "other-job").await;
    let one_time = MaintenanceWindow::one_time(t(10 * MINUTE), t(70 * MINUTE)).unwrap();
    // Every day at 03:00 UTC for an hour; T0 is 00:00:00.123 UTC.
    let nightly =
        MaintenanceWindow::recurring(CronSchedule::parse("0 3 * * *", "UTC").unwrap(), 60).unwrap();
    let mk = |scope, window: &MaintenanceWindow, reason: Option<&str>| NewWindow {
        scope,
        window: window.clone(),
        reason: reason.map(str::to_owned),
        created_by: "ops@example.com".into(),
        at: t(0),
    };
    let w_svc = s
        .create_window(
            &mk(WindowScope::Service(svc), &one_time, Some("db upgrade")),
            None,
        )
        .await
        .unwrap();
    let w_team = s
        .create_window(&mk(WindowScope::Team(tm.id), &nightly, None), None)
        .await
        .unwrap();
    let w_global = s
        .create_window(&mk(WindowScope::Global, &one_time, None), None)
        .await
        .unwrap();
    let w_other = s
        .create_window(&mk(WindowScope::Service(other), &nightly, None), None)
        .await
        .unwrap();
    assert_eq!(w_svc.scope, WindowScope::Service(svc));
    assert_eq!(w_svc.window, one_time);
    assert_eq!(w_svc.reason.as_deref(), Some("db upgrade"));
    assert_eq!(w_svc.created_by, "ops@example.com");
    assert_eq!(w_svc.created_at, t(0));
    assert_eq!(s.get_window(w_team.id).await.unwrap(), Some(w_team.clone()));
    assert_eq!(w_team.window, nightly);

    let list = |f: WindowFilter| async move {
        ids(
            &s.list_windows(&f).await.unwrap(),
            |w: &MaintenanceWindowRecord| w.id,
        )
    };
    assert_eq!(
        list(WindowFilter::default()).await,
        vec![w_svc.id, w_team.id, w_global.id, w_other.id]
    );
    assert_eq!(
        list(WindowFilter {
            scope: Some(ScopeKind::Service),
            ..WindowFilter::default()
        })
        .await,
        vec![w_svc.id, w_other.id]
    );
    assert_eq!(
        list(WindowFilter {
            scope: Some(ScopeKind::Global),
            ..WindowFilter::default()
        })
        .await,
        vec![w_global.id]
    );
    assert_eq!(
        list(WindowFilter {
            service: Some(svc),
            ..WindowFilter::default()
        })
        .await,
        vec![w_svc.id]
    );
    assert_eq!(
        list(WindowFilter {
            team: Some(tm.id),
            ..WindowFilter::default()
        })
        .await,
        vec![w_team.id]
    );
    // Active at: before the one-time window, inside it, inside the nightly one, after both.
    let active = |at| WindowFilter {
        active_at: Some(at),
        ..WindowFilter::default()
    };
    assert_eq!(list(active(t(0))).await, Vec::<WindowId>::new());
    assert_eq!(
        list(active(t(10 * MINUTE))).await,
        vec![w_svc.id, w_global.id],
        "start is inclusive"
    );
    assert_eq!(
        list(active(t(70 * MINUTE))).await,
        Vec::<WindowId>::new(),
        "end is exclusive"
    );
    assert_eq!(
        list(active(t(3 * 60 * MINUTE + MINUTE))).await,
        vec![w_team.id, w_other.id]
    );
    assert_eq!(
        list(WindowFilter {
            service: Some(other),
            active_at: Some(t(3 * 60 * MINUTE)),
            ..WindowFilter::default()
        })
        .await,
        vec![w_other.id]
    );

    assert!(s.delete_window(w_svc.id, None).await.unwrap());
    assert!(!s.delete_window(w_svc.id, None).await.unwrap());
    assert_eq!(s.get_window(w_svc.id).await.unwrap(), None);
    assert_eq!(
        list(WindowFilter::default()).await,
        vec![w_team.id, w_global.id, w_other.id]
    );
}

/// Every change of a team, target or window writes the audit entry it is given (built from the
/// changed row where it needs one) in its own transaction; a change that does not happen (a
/// taken name, an unknown id) writes none.
async fn changes_commit_with_their_audit_entries(s: &dyn Store) {
    fn entry(action: &str, details: serde_json::Value) -> NewAuditEntry {
        NewAuditEntry {
            on_behalf_of: None,
            action_type: action.into(),
            actor: "it".into(),
            service_id: None,
            execution_id: None,
            details,
            at: t(0),
        }
    }
    let team_entry = |action: &'static str| {
        move |team: &Team| entry(action, serde_json::json!({ "name": team.name }))
    };
    let target_entry = |target: &NotificationTarget| {
        entry(
            "target_changed",
            serde_json::json!({ "priority": target.priority }),
        )
    };
    let window_entry = |w: &MaintenanceWindowRecord| {
        entry("window_created", serde_json::json!({ "reason": w.reason }))
    };

    let created = s
        .create_team(&new_team("Audited"), Some(&team_entry("team_created")))
        .await
        .unwrap();
    let dup = s
        .create_team(&new_team("AUDITED"), Some(&team_entry("team_created")))
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    let patch = TeamPatch {
        name: Some("Audited-2".into()),
        ..TeamPatch::default()
    };
    s.update_team(created.id, &patch, t(1), Some(&team_entry("team_updated")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        s.update_team(
            TeamId(created.id.0 + 1_000),
            &patch,
            t(1),
            Some(&team_entry("team_updated"))
        )
        .await
        .unwrap(),
        None
    );
    let tg = s
        .create_target(
            &target(TargetOwner::Team(created.id), slack("#a"), 3),
            Some(&target_entry),
        )
        .await
        .unwrap();
    let patch = TargetPatch {
        priority: Some(7),
        ..TargetPatch::default()
    };
    s.update_target(tg.id, &patch, t(2), Some(&target_entry))
        .await
        .unwrap()
        .unwrap();
    let mut window = NewWindow {
        scope: WindowScope::Team(created.id),
        window: MaintenanceWindow::one_time(t(0), t(MINUTE)).unwrap(),
        reason: Some("patching".into()),
        created_by: "it".into(),
        at: t(0),
    };
    let w = s.create_window(&window, Some(&window_entry)).await.unwrap();
    window.reason = Some("kept".into());
    let kept = s.create_window(&window, None).await.unwrap();
    let gone = entry("window_deleted", serde_json::json!({ "window": w.id.0 }));
    assert!(s.delete_window(w.id, Some(&gone)).await.unwrap());
    assert!(!s.delete_window(w.id, Some(&gone)).await.unwrap());
    let gone = entry("target_deleted", serde_json::json!({ "target": tg.id.0 }));
    assert!(s.delete_target(tg.id, Some(&gone)).await.unwrap());
    assert!(!s.delete_target(tg.id, Some(&gone)).await.unwrap());
    let gone = entry("team_deleted", serde_json::json!({ "team": created.id.0 }));
    assert!(s.delete_team(created.id, Some(&gone)).await.unwrap());
    assert!(!s.delete_team(created.id, Some(&gone)).await.unwrap());
    assert_eq!(s.get_window(kept.id).await.unwrap(), None);

    let got: Vec<(String, serde_json::Value)> = crate::db::audit_log(s, None)
        .await
        .into_iter()
        .map(|e| (e.action_type, e.details))
        .collect();
    let want: Vec<(String, serde_json::Value)> = [
        ("team_created", serde_json::json!({ "name": "Audited" })),
        ("team_updated", serde_json::json!({ "name": "Audited-2" })),
        ("target_changed", serde_json::json!({ "priority": 3 })),
        ("target_changed", serde_json::json!({ "priority": 7 })),
        (
            "window_created",
            serde_json::json!({ "reason": "patching" }),
        ),
        ("window_deleted", serde_json::json!({ "window": w.id.0 })),
        ("target_deleted", serde_json::json!({ "target": tg.id.0 })),
        ("team_deleted", serde_json::json!({ "team": created.id.0 })),
    ]
    .into_iter()
    .map(|(a, d)| (a.to_owned(), d))
    .collect();
    assert_eq!(got, want);
}
