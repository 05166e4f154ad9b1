//! Store conformance for the agent registry (SQLite always, PostgreSQL when configured). Every
//! check runs once per backend.

use std::collections::BTreeMap;

use medic_server::domain::{ApiKeyId, Timestamp};
use medic_server::store::*;

conformance! {
    agents_register_update_and_disconnect,
    agents_older_session_cannot_disconnect_newer,
    agents_revoked_are_refused,
    agents_list_filters_and_paging,
    agents_keep_the_latest_host_facts_of_their_current_session,
    agents_carry_declared_labels_granted_by_the_key_or_an_operator,
    runs_queue_send_start_and_finish_once,
    runs_pending_and_listing,
    runs_expire_in_the_queue_and_are_lost_past_their_deadline,
    runs_still_queued_can_be_made_to_expire,
}

const T0: i64 = 1_767_225_600_123; // 2026-01-01T00:00:00.123Z

fn t(offset_ms: i64) -> Timestamp {
    Timestamp::from_millis(T0 + offset_ms)
}

fn conn(id: &str, session: &str, at: i64) -> AgentConnection {
    AgentConnection {
        id: id.into(),
        hostname: format!("{id}.example.com"),
        agent_version: "0.1.0".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        declared_labels: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
        key_labels: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
        session_id: session.into(),
        remote_addr: Some("192.0.2.7:40000".into()),
        key_id: Some("0123456789ab".into()),
        service_id: None,
        at: t(at),
    }
}

#[track_caller]
fn connected(outcome: AgentConnectOutcome) -> AgentRecord {
    match outcome {
        AgentConnectOutcome::Connected(r) => *r,
        AgentConnectOutcome::Revoked => panic!("agent unexpectedly revoked"),
    }
}

async fn agents_register_update_and_disconnect(store: &dyn Store) {
    let first = connected(
        store
            .agent_connected(&conn("web-1", "s1", 0))
            .await
            .unwrap(),
    );
    assert_eq!(first.id, "web-1");
    assert!(first.connected);
    assert_eq!(first.session_id.as_deref(), Some("s1"));
    assert_eq!(first.first_seen_at, t(0));
    assert_eq!(first.last_seen_at, t(0));
    assert_eq!(first.labels["env"], "prod");
    assert_eq!(first.remote_addr.as_deref(), Some("192.0.2.7:40000"));
    assert_eq!(first.key_id.as_deref(), Some("0123456789ab"));

    assert!(store.agent_seen("web-1", "s1", t(500)).await.unwrap());
    // A wrong session is not this agent's current one.
    assert!(!store.agent_seen("web-1", "other", t(600)).await.unwrap());
    assert!(!store.agent_seen("nobody", "s1", t(600)).await.unwrap());
    let seen = store.get_agent("web-1").await.unwrap().unwrap();
    assert_eq!(seen.last_seen_at, t(500));

    store
        .agent_disconnected("web-1", "s1", t(700))
        .await
        .unwrap();
    let gone = store.get_agent("web-1").await.unwrap().unwrap();
    assert!(!gone.connected);
    assert_eq!(gone.disconnected_at, Some(t(700)));

    // Reconnecting updates what the hello said, keeps the first sighting.
    let mut again = conn("web-1", "s2", 1000);
    again.agent_version = "0.2.0".into();
    again.declared_labels.clear();
    again.key_id = Some("ba9876543210".into());
    let back = connected(store.agent_connected(&again).await.unwrap());
    assert!(back.connected);
    assert_eq!(back.agent_version, "0.2.0");
    assert!(back.labels.is_empty());
    assert_eq!(back.first_seen_at, t(0));
    assert_eq!(back.connected_at, Some(t(1000)));
    assert_eq!(back.key_id.as_deref(), Some("ba9876543210"));
    assert!(store.get_agent("nobody").await.unwrap().is_none());
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn agents_carry_declared_labels_granted_by_the_key_or_an_operator(store: &dyn Store) {
    let mut c = conn("lb-1", "s1", 0);
    c.declared_labels = labels(&[("env", "prod"), ("role", "backup"), ("tier", "gold")]);
    c.key_labels = labels(&[("env", "prod"), ("role", "web")]);
    let first = connected(store.agent_connected(&c).await.unwrap());
    assert_eq!(first.labels, labels(&[("env", "prod")]));
    assert_eq!(first.declared_labels, c.declared_labels);
    assert_eq!(first.key_labels, c.key_labels);
    assert!(first.label_grants.is_empty());
    let by = |pairs: &[(&str, &str)]| AgentFilter {
        labels: labels(pairs),
        ..AgentFilter::default()
    };
    let selected = |f: AgentFilter| async move {
        store
            .list_agents(
                &f,
                PageRequest {
                    limit: 50,
                    offset: 0,
                },
            )
            .await
            .unwrap()
            .entries
            .into_iter()
            .map(|a| a.id)
            .collect::<Vec<_>>()
    };
    assert!(selected(by(&[("role", "backup")])).await.is_empty());

    // A grant on the connected agent: its labels (and the selectors) change at once; an
    // operator's value wins over the key's; a grant the agent does not declare is kept but
    // carries nothing. The audit entry is written with it.
    let audit = NewAuditEntry {
        action_type: "agent_labels_changed".into(),
        actor: "test".into(),
        on_behalf_of: None,
        service_id: None,
        execution_id: None,
        details: serde_json::json!({ "agent_id": "lb-1" }),
        at: t(10),
    };
    let granted = store
        .set_agent_label_grants(
            "lb-1",
            &labels(&[("role", "backup"), ("dc", "eu-1")]),
            Some(&audit),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        granted.labels,
        labels(&[("env", "prod"), ("role", "backup")])
    );
    assert_eq!(
        granted.label_grants,
        labels(&[("role", "backup"), ("dc", "eu-1")])
    );
    assert!(granted.connected, "a grant leaves the session alone");
    assert_eq!(selected(by(&[("role", "backup")])).await, ["lb-1"]);
    assert_eq!(store.get_agent("lb-1").await.unwrap().unwrap(), granted);

    // A reconnection keeps the grants and works the labels out again with them.
    let again = connected(
        store
            .agent_connected(&conn_with(&c, "s2", 20))
            .await
            .unwrap(),
    );
    assert_eq!(again.labels, labels(&[("env", "prod"), ("role", "backup")]));
    assert_eq!(again.label_grants, granted.label_grants);

    // Revoking the grants leaves what the key grants.
    let revoked = store
        .set_agent_label_grants("lb-1", &BTreeMap::new(), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.labels, labels(&[("env", "prod")]));
    assert!(selected(by(&[("role", "backup")])).await.is_empty());
    assert!(
        store
            .set_agent_label_grants("nobody", &labels(&[("a", "b")]), None)
            .await
            .unwrap()
            .is_none()
    );
}

fn conn_with(c: &AgentConnection, session: &str, at: i64) -> AgentConnection {
    AgentConnection {
        session_id: session.into(),
        at: t(at),
        ..c.clone()
    }
}

async fn agents_keep_the_latest_host_facts_of_their_current_session(store: &dyn Store) {
    let first = connected(store.agent_connected(&conn("db-1", "s1", 0)).await.unwrap());
    assert_eq!((first.host_facts, first.host_facts_at), (None, None));
    let facts = r#"{"os_name":"Debian GNU/Linux","cpus":4,"load_average":[0.5,0.25,0.125]}"#;
    store
        .agent_host_facts("db-1", "s1", facts, t(100))
        .await
        .unwrap();
    let got = store.get_agent("db-1").await.unwrap().unwrap();
    let stored: serde_json::Value =
        serde_json::from_str(got.host_facts.as_deref().expect("stored")).unwrap();
    assert_eq!(
        stored,
        serde_json::from_str::<serde_json::Value>(facts).unwrap()
    );
    assert_eq!(got.host_facts_at, Some(t(100)));
    // A session that is no longer the agent's current one changes nothing.
    connected(
        store
            .agent_connected(&conn("db-1", "s2", 200))
            .await
            .unwrap(),
    );
    store
        .agent_host_facts("db-1", "s1", r#"{"cpus":1}"#, t(300))
        .await
        .unwrap();
    let kept = store.get_agent("db-1").await.unwrap().unwrap();
    assert_eq!(kept.host_facts_at, Some(t(100)));
    // Reconnecting keeps the facts until the new session reports its own; listing shows them.
    store
        .agent_host_facts("db-1", "s2", r#"{"cpus":8}"#, t(400))
        .await
        .unwrap();
    let page = store
        .list_agents(
            &AgentFilter::default(),
            PageRequest {
                limit: 10,
                offset: 0,
            },
        )
        .await
        .unwrap();
    let listed = page.entries.iter().find(|a| a.id == "db-1").unwrap();
    let listed_facts: serde_json::Value =
        serde_json::from_str(listed.host_facts.as_deref().unwrap()).unwrap();
    assert_eq!(listed_facts["cpus"], 8);
    assert_eq!(listed.host_facts_at, Some(t(400)));
}

async fn agents_older_session_cannot_disconnect_newer(store: &dyn Store) {
    connected(
        store
            .agent_connected(&conn("db-1", "old", 0))
            .await
            .unwrap(),
    );
    connected(
        store
            .agent_connected(&conn("db-1", "new", 10))
            .await
            .unwrap(),
    );
    store
        .agent_disconnected("db-1", "old", t(20))
        .await
        .unwrap();
    let row = store.get_agent("db-1").await.unwrap().unwrap();
    assert!(
        row.connected,
        "the old session's end must not disconnect the new one"
    );
    assert_eq!(row.session_id.as_deref(), Some("new"));
}

async fn agents_revoked_are_refused(store: &dyn Store) {
    connected(
        store
            .agent_connected(&conn("bad-1", "s1", 0))
            .await
            .unwrap(),
    );
    let audit = |who: &str| NewAuditEntry {
        on_behalf_of: None,
        action_type: "agent_revoked".into(),
        actor: who.into(),
        service_id: None,
        execution_id: None,
        details: serde_json::json!({ "agent_id": "bad-1" }),
        at: t(5),
    };
    let revocations = || async {
        crate::db::audit_log(store, Some("agent_revoked"))
            .await
            .into_iter()
            .map(|e| e.actor)
            .collect::<Vec<_>>()
    };
    assert!(
        store
            .revoke_agent("bad-1", "alice", t(5), Some(&audit("alice")))
            .await
            .unwrap()
    );
    assert_eq!(revocations().await, ["alice"]);
    // Revoking twice, or an unknown agent, changes nothing and audits nothing.
    assert!(
        !store
            .revoke_agent("bad-1", "bob", t(6), Some(&audit("bob")))
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_agent("nobody", "bob", t(6), None)
            .await
            .unwrap()
    );
    assert_eq!(revocations().await, ["alice"]);
    let row = store.get_agent("bad-1").await.unwrap().unwrap();
    assert_eq!(row.revoked_at, Some(t(5)));
    assert_eq!(row.revoked_by.as_deref(), Some("alice"));
    assert!(!row.connected);
    assert_eq!(row.disconnected_at, Some(t(5)));
    // The live session learns at its next heartbeat; new connections are refused.
    assert!(!store.agent_seen("bad-1", "s1", t(10)).await.unwrap());
    assert_eq!(
        store
            .agent_connected(&conn("bad-1", "s2", 20))
            .await
            .unwrap(),
        AgentConnectOutcome::Revoked
    );
    let row = store.get_agent("bad-1").await.unwrap().unwrap();
    assert_eq!(row.session_id.as_deref(), Some("s1"));
    assert!(!row.connected);
}

async fn agents_list_filters_and_paging(store: &dyn Store) {
    for (i, id) in ["c", "a", "d", "b"].iter().enumerate() {
        connected(
            store
                .agent_connected(&conn(id, &format!("s-{id}"), i as i64))
                .await
                .unwrap(),
        );
    }
    store.agent_disconnected("b", "s-b", t(50)).await.unwrap();
    store.revoke_agent("d", "alice", t(60), None).await.unwrap();
    let page = |limit, offset| PageRequest { limit, offset };
    let ids = |p: &Page<AgentRecord>| p.entries.iter().map(|a| a.id.clone()).collect::<Vec<_>>();

    let all = store
        .list_agents(&AgentFilter::default(), page(50, 0))
        .await
        .unwrap();
    assert_eq!(ids(&all), ["a", "b", "c", "d"]);
    assert_eq!(all.total_count, 4);

    let second = store
        .list_agents(&AgentFilter::default(), page(2, 2))
        .await
        .unwrap();
    assert_eq!(ids(&second), ["c", "d"]);
    assert_eq!(second.total_count, 4);

    let on = AgentFilter {
        connected: Some(true),
        ..AgentFilter::default()
    };
    assert_eq!(
        ids(&store.list_agents(&on, page(50, 0)).await.unwrap()),
        ["a", "c"]
    );
    let revoked = AgentFilter {
        revoked: Some(true),
        ..AgentFilter::default()
    };
    let r = store.list_agents(&revoked, page(50, 0)).await.unwrap();
    assert_eq!(ids(&r), ["d"]);
    assert_eq!(r.total_count, 1);
    let unrevoked = AgentFilter {
        revoked: Some(false),
        connected: Some(false),
        ..AgentFilter::default()
    };
    assert_eq!(
        ids(&store.list_agents(&unrevoked, page(50, 0)).await.unwrap()),
        ["b"]
    );

    // Labels: every label of the selector, with exactly its value (keys and values that look
    // like JSON paths or SQL are plain strings).
    let mut web = conn("w", "s-w", 70);
    web.declared_labels = BTreeMap::from([
        ("env".to_owned(), "prod".to_owned()),
        ("role".to_owned(), "web".to_owned()),
        ("a.b'\"".to_owned(), "x' OR 1=1".to_owned()),
    ]);
    web.key_labels = web.declared_labels.clone();
    connected(store.agent_connected(&web).await.unwrap());
    let with = |pairs: &[(&str, &str)]| AgentFilter {
        labels: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..AgentFilter::default()
    };
    let listed = |f: AgentFilter| async move {
        let p = store.list_agents(&f, page(50, 0)).await.unwrap();
        assert_eq!(p.total_count as usize, p.entries.len());
        ids(&p)
    };
    assert_eq!(
        listed(with(&[("env", "prod")])).await,
        ["a", "b", "c", "d", "w"]
    );
    assert_eq!(
        listed(with(&[("env", "prod"), ("role", "web")])).await,
        ["w"]
    );
    assert_eq!(listed(with(&[("a.b'\"", "x' OR 1=1")])).await, ["w"]);
    assert!(listed(with(&[("role", "we")])).await.is_empty());
    assert!(
        listed(with(&[("env", "prod"), ("role", "db")]))
            .await
            .is_empty()
    );
    let mut live_web = with(&[("role", "web")]);
    live_web.revoked = Some(false);
    assert_eq!(listed(live_web).await, ["w"]);
}

async fn script(store: &dyn Store) -> ScriptId {
    let outcome = store
        .register_script_version(&NewScriptVersion {
            name: "fix-it".into(),
            interpreter: Interpreter::Sh,
            content: "echo fixed\n".into(),
            sha256: "ab".repeat(32),
            description: None,
            created_by: "alice".into(),
            created_by_key: Some(ApiKeyId("aaaaaaaaaaaa".into())),
            created_by_owner: medic_server::domain::OwnerId("aaaaaaaaaaaa".into()),
            at: t(0),
            audit: None,
        })
        .await
        .unwrap();
    match outcome {
        RegisterOutcome::Created { version, .. } | RegisterOutcome::Unchanged { version, .. } => {
            version.script_id
        }
    }
}

fn new_run(id: &str, agent: &str, script_id: ScriptId, at: i64) -> NewAgentRun {
    NewAgentRun {
        id: id.into(),
        agent_id: agent.into(),
        script_id,
        script_version: 1,
        parameters: BTreeMap::from([("WHO".to_owned(), "world".to_owned())]),
        secret_parameters: BTreeMap::new(),
        timeout_seconds: 30,
        requested_by: "alice".into(),
        at: t(at),
        expires_at: t(at + 3_600_000),
        audit: Some(NewAuditEntry {
            on_behalf_of: None,
            action_type: "agent_run_requested".into(),
            actor: "alice".into(),
            service_id: None,
            execution_id: None,
            details: serde_json::json!({ "run_id": id }),
            at: t(at),
        }),
    }
}

fn finished_end(stdout: &str) -> AgentRunEnd {
    AgentRunEnd::Finished {
        status: AgentRunStatus::Succeeded,
        exit_code: Some(0),
        signal: None,
        stdout: stdout.into(),
        stderr: String::new(),
        stdout_truncated: false,
        stderr_truncated: true,
        started_at: t(100),
        finished_at: t(150),
        duration_ms: 50,
    }
}

async fn runs_queue_send_start_and_finish_once(store: &dyn Store) {
    connected(store.agent_connected(&conn("w-1", "s1", 0)).await.unwrap());
    let script_id = script(store).await;
    let run = store
        .create_agent_run(&new_run("r-1", "w-1", script_id, 10))
        .await
        .unwrap();
    assert_eq!(run.status, AgentRunStatus::Queued);
    assert_eq!(run.parameters["WHO"], "world");
    assert_eq!(run.created_at, t(10));
    // A run for an unknown agent is refused by the database, and so is its audit entry (one
    // transaction): only r-1's request is in the log.
    assert!(
        store
            .create_agent_run(&new_run("r-x", "nobody", script_id, 10))
            .await
            .is_err()
    );
    let audit = store
        .list_audit(
            &AuditFilter {
                action_type: Some("agent_run_requested".into()),
                ..AuditFilter::default()
            },
            PageRequest {
                limit: 10,
                offset: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(audit.total_count, 1);
    assert_eq!(audit.entries[0].details["run_id"], "r-1");

    assert!(store.agent_run_sent("r-1", t(20), t(20)).await.unwrap());
    assert_eq!(
        store.get_agent_run("r-1").await.unwrap().unwrap().status,
        AgentRunStatus::Dispatched
    );
    // Declined for now (`busy`): back in the queue, to be sent again.
    assert!(
        !store.requeue_agent_run("w-2", "r-1").await.unwrap(),
        "another agent's run"
    );
    assert!(store.requeue_agent_run("w-1", "r-1").await.unwrap());
    let back = store.get_agent_run("r-1").await.unwrap().unwrap();
    assert_eq!(back.status, AgentRunStatus::Queued);
    assert_eq!(back.dispatched_at, None);
    assert_eq!(back.reported_at, None, "no report yet");
    assert!(
        !store.requeue_agent_run("w-1", "r-1").await.unwrap(),
        "only a dispatched run goes back"
    );
    assert!(store.agent_run_sent("r-1", t(20), t(20)).await.unwrap());
    // Another agent cannot start or finish it.
    assert!(
        !store
            .agent_run_started("w-2", "r-1", t(30), t(30))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .finish_agent_run("w-2", "r-1", &finished_end("x"))
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .agent_run_started("w-1", "r-1", t(100), t(100))
            .await
            .unwrap()
    );
    assert!(
        !store
            .agent_run_started("w-1", "r-1", t(101), t(101))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .finish_agent_run("w-1", "r-1", &finished_end("fixed\n"))
            .await
            .unwrap(),
        Some(RunFinish {
            status: AgentRunStatus::Succeeded,
            stored: true,
            dispatched_at: Some(t(20)),
        })
    );
    // A resent report, or a different one, changes nothing.
    let skip = AgentRunEnd::Refused {
        reason: "not_in_allowlist".into(),
        detail: "again".into(),
        at: t(200),
    };
    assert_eq!(
        store
            .finish_agent_run("w-1", "r-1", &skip)
            .await
            .unwrap()
            .map(|f| (f.status, f.stored)),
        Some((AgentRunStatus::Succeeded, false))
    );
    let run = store.get_agent_run("r-1").await.unwrap().unwrap();
    assert_eq!(run.status, AgentRunStatus::Succeeded);
    assert_eq!(run.stdout.as_deref(), Some("fixed\n"));
    // Stamped by the server when the result was stored (now, on its clock; the test's times
    // are in 2023), and not moved by the refusal that changed nothing.
    let reported = run.reported_at.expect("reported_at");
    assert!(reported.millis() > t(3_600_000).millis(), "{reported:?}");
    assert_eq!(run.stderr_truncated, Some(true));
    assert_eq!(run.started_at, Some(t(100)));
    assert_eq!(run.finished_at, Some(t(150)));
    assert_eq!(run.duration_ms, Some(50));
    assert_eq!(run.refusal_reason, None);
    assert!(store.get_agent_run("nope").await.unwrap().is_none());
    // A run can also end skipped, without starting.
    store
        .create_agent_run(&new_run("r-2", "w-1", script_id, 11))
        .await
        .unwrap();
    assert_eq!(
        store
            .finish_agent_run("w-1", "r-2", &skip)
            .await
            .unwrap()
            .map(|f| (f.status, f.stored, f.dispatched_at)),
        Some((AgentRunStatus::Refused, true, None))
    );
    let run = store.get_agent_run("r-2").await.unwrap().unwrap();
    assert_eq!(run.refusal_reason.as_deref(), Some("not_in_allowlist"));
    assert_eq!(run.refusal_detail.as_deref(), Some("again"));
    assert_eq!(run.started_at, None);
}

async fn runs_pending_and_listing(store: &dyn Store) {
    connected(store.agent_connected(&conn("p-1", "s1", 0)).await.unwrap());
    connected(store.agent_connected(&conn("p-2", "s1", 0)).await.unwrap());
    let script_id = script(store).await;
    for (id, agent, at) in [
        ("a", "p-1", 1),
        ("b", "p-1", 2),
        ("c", "p-2", 3),
        ("d", "p-1", 4),
    ] {
        store
            .create_agent_run(&new_run(id, agent, script_id, at))
            .await
            .unwrap();
    }
    assert!(store.agent_run_sent("a", t(10), t(10)).await.unwrap());
    assert!(
        store
            .agent_run_started("p-1", "d", t(11), t(11))
            .await
            .unwrap()
    );
    let ids = |runs: Vec<AgentRun>| runs.into_iter().map(|r| r.run_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.unaccepted_agent_runs("p-1").await.unwrap()),
        ["a"]
    );
    // Claiming takes the queued runs with what the agent needs of the script, once.
    let claimed = store.claim_agent_runs("p-1", t(20), t(25)).await.unwrap();
    assert_eq!(claimed.len(), 1, "{claimed:#?}");
    let b = &claimed[0];
    assert_eq!(b.run.run_id, "b");
    assert_eq!(b.run.status, AgentRunStatus::Dispatched);
    assert_eq!(b.run.dispatched_at, Some(t(20)));
    assert_eq!(
        (b.script_name.as_str(), b.interpreter, b.content.as_str()),
        ("fix-it", Interpreter::Sh, "echo fixed\n")
    );
    assert_eq!(b.sha256, "ab".repeat(32));
    // This store-level script was registered and never decided: the agent would refuse it.
    assert!(!b.approved);
    assert!(
        store
            .claim_agent_runs("p-1", t(21), t(21))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(store.unaccepted_agent_runs("p-1").await.unwrap()),
        ["a", "b"]
    );
    // Several at once come oldest first.
    for (id, at) in [("e", 31), ("f", 30)] {
        store
            .create_agent_run(&new_run(id, "p-2", script_id, at))
            .await
            .unwrap();
    }
    let claimed = store.claim_agent_runs("p-2", t(40), t(40)).await.unwrap();
    let order: Vec<_> = claimed.iter().map(|c| c.run.run_id.as_str()).collect();
    assert_eq!(order, ["c", "f", "e"]);
    let page = PageRequest {
        limit: 2,
        offset: 0,
    };
    let only =
        |agent: Option<&str>, status: Option<AgentRunStatus>, script: Option<ScriptId>| RunFilter {
            agent_id: agent.map(str::to_owned),
            status,
            script_id: script,
        };
    let mine = store
        .list_agent_runs(&only(Some("p-1"), None, None), page)
        .await
        .unwrap();
    assert_eq!(mine.total_count, 3);
    assert_eq!(ids(mine.entries), ["d", "b"]);
    let everything = PageRequest {
        limit: 50,
        offset: 0,
    };
    let all = store
        .list_agent_runs(&RunFilter::default(), everything)
        .await
        .unwrap();
    assert_eq!(all.total_count, 6);
    assert_eq!(ids(all.entries), ["e", "f", "d", "c", "b", "a"]);
    let running = store
        .list_agent_runs(&only(None, Some(AgentRunStatus::Running), None), everything)
        .await
        .unwrap();
    assert_eq!(ids(running.entries), ["d"]);
    let dispatched_here = store
        .list_agent_runs(
            &only(
                Some("p-2"),
                Some(AgentRunStatus::Dispatched),
                Some(script_id),
            ),
            everything,
        )
        .await
        .unwrap();
    assert_eq!(ids(dispatched_here.entries), ["e", "f", "c"]);
    let other_script = store
        .list_agent_runs(
            &only(None, None, Some(ScriptId(script_id.0 + 1))),
            everything,
        )
        .await
        .unwrap();
    assert_eq!(other_script.total_count, 0);
    assert_eq!(
        store.script_id_by_name("fix-it").await.unwrap(),
        Some(script_id)
    );
    assert_eq!(store.script_id_by_name("fix").await.unwrap(), None);

    // A batch is queued whole or not at all: a run for an unknown agent fails the others.
    let batch = [
        new_run("g", "p-1", script_id, 50),
        new_run("h", "nobody", script_id, 50),
    ];
    assert!(store.create_agent_runs(&batch).await.is_err());
    assert_eq!(store.get_agent_run("g").await.unwrap(), None);
    let batch = [
        new_run("g", "p-1", script_id, 50),
        new_run("h", "p-2", script_id, 50),
    ];
    let queued = store.create_agent_runs(&batch).await.unwrap();
    assert_eq!(ids(queued), ["g", "h"]);
    let audited = crate::db::audit_log(store, Some("agent_run_requested")).await;
    assert!(
        ["g", "h"]
            .iter()
            .all(|id| audited.iter().any(|e| e.details["run_id"] == *id)),
        "{audited:#?}"
    );
}

async fn runs_expire_in_the_queue_and_are_lost_past_their_deadline(store: &dyn Store) {
    connected(store.agent_connected(&conn("x-1", "s1", 0)).await.unwrap());
    let script_id = script(store).await;
    let status =
        |id: &'static str| async move { store.get_agent_run(id).await.unwrap().unwrap().status };
    for id in ["queued", "sent", "running", "orphan", "kept", "dup"] {
        let mut run = new_run(id, "x-1", script_id, 0);
        run.expires_at = t(1_000);
        store.create_agent_run(&run).await.unwrap();
    }
    // Not yet expired: pending and polled.
    assert_eq!(
        store.agents_with_queued_runs(t(999)).await.unwrap(),
        ["x-1"]
    );
    // timeout 30 s: sent at 100 with a 5 s grace → lost after 35 100.
    for id in ["sent", "running", "orphan", "kept", "dup"] {
        assert!(store.agent_run_sent(id, t(100), t(5_100)).await.unwrap());
    }
    for id in ["running", "orphan", "kept"] {
        assert!(
            store
                .agent_run_started("x-1", id, t(200), t(5_200))
                .await
                .unwrap()
        );
    }
    // Past the expiry, a queued run is neither claimed nor polled, and the sweep expires it.
    assert!(
        store
            .claim_agent_runs("x-1", t(1_000), t(1_000))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .agents_with_queued_runs(t(1_000))
            .await
            .unwrap()
            .is_empty()
    );
    // Not claimable for sending either, even before the sweep.
    assert!(
        !store
            .agent_run_sent("queued", t(1_000), t(1_000))
            .await
            .unwrap()
    );
    let swept = store.sweep_agent_runs(t(1_000)).await.unwrap();
    assert_eq!(
        swept,
        RunSweep {
            expired: 1,
            lost: 0
        }
    );
    assert_eq!(status("queued").await, AgentRunStatus::Expired);
    // A run the agent's journal knows but no longer has: lost at once.
    let dup = AgentRunEnd::Refused {
        reason: "duplicate".into(),
        detail: "already admitted".into(),
        at: t(1_100),
    };
    let f = store.finish_agent_run("x-1", "dup", &dup).await.unwrap();
    assert_eq!(f.map(|f| f.status), Some(AgentRunStatus::Lost));
    // The agent came back running "kept" and "running" only: "orphan" is lost after the grace
    // (2 000).
    assert_eq!(
        store
            .orphan_agent_runs("x-1", &["kept".to_owned(), "running".to_owned()], t(2_000))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.sweep_agent_runs(t(1_999)).await.unwrap(),
        RunSweep::default()
    );
    assert_eq!(
        store.sweep_agent_runs(t(2_000)).await.unwrap(),
        RunSweep {
            expired: 0,
            lost: 1
        }
    );
    assert_eq!(status("orphan").await, AgentRunStatus::Lost);
    assert_eq!(status("running").await, AgentRunStatus::Running);
    // The others, past timeout + grace.
    assert_eq!(
        store.sweep_agent_runs(t(35_099)).await.unwrap(),
        RunSweep::default()
    );
    assert_eq!(
        store.sweep_agent_runs(t(35_200)).await.unwrap(),
        RunSweep {
            expired: 0,
            lost: 3
        }
    );
    for id in ["sent", "running", "kept"] {
        assert_eq!(status(id).await, AgentRunStatus::Lost, "{id}");
    }
    // A late real result replaces `lost`; a refusal does not.
    let late = store
        .finish_agent_run("x-1", "kept", &finished_end("late\n"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (late.status, late.stored),
        (AgentRunStatus::Succeeded, true)
    );
    let refused = store
        .finish_agent_run("x-1", "sent", &dup)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (refused.status, refused.stored),
        (AgentRunStatus::Lost, false)
    );
    // Nothing left to sweep.
    assert_eq!(
        store.sweep_agent_runs(t(99_999)).await.unwrap(),
        RunSweep::default()
    );
}

async fn runs_still_queued_can_be_made_to_expire(store: &dyn Store) {
    connected(store.agent_connected(&conn("x-1", "s1", 0)).await.unwrap());
    let script_id = script(store).await;
    for id in ["waiting", "sent"] {
        store
            .create_agent_run(&new_run(id, "x-1", script_id, 0))
            .await
            .unwrap();
    }
    assert!(
        store
            .agent_run_sent("sent", t(100), t(5_100))
            .await
            .unwrap()
    );
    let ids = [
        "waiting".to_owned(),
        "sent".to_owned(),
        "unknown".to_owned(),
    ];
    // Only the run still in the queue is touched.
    assert_eq!(
        store.expire_queued_agent_runs(&ids, t(200)).await.unwrap(),
        1
    );
    assert!(
        store
            .claim_agent_runs("x-1", t(200), t(200))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !store
            .agent_run_sent("waiting", t(200), t(200))
            .await
            .unwrap()
    );
    let swept = store.sweep_agent_runs(t(200)).await.unwrap();
    assert_eq!(swept.expired, 1);
    let status =
        |id: &'static str| async move { store.get_agent_run(id).await.unwrap().unwrap().status };
    assert_eq!(status("waiting").await, AgentRunStatus::Expired);
    assert_eq!(status("sent").await, AgentRunStatus::Dispatched);
}
