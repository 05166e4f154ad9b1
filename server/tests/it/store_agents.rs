//! Store conformance for the agent registry (SQLite always, PostgreSQL when configured). Every
//! check runs once per backend.

use std::collections::BTreeMap;

use medic_server::domain::Timestamp;
use medic_server::store::*;

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let db = crate::db::sqlite().await;
                    super::$check(&*db.store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some(db) = crate::db::postgres().await else { return };
                    super::$check(&*db.store).await;
                }
            )*
        }
    };
}

conformance! {
    agents_register_update_and_disconnect,
    agents_older_session_cannot_disconnect_newer,
    agents_revoked_are_refused,
    agents_list_filters_and_paging,
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
        labels: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
        session_id: session.into(),
        remote_addr: Some("192.0.2.7:40000".into()),
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
    again.labels.clear();
    let back = connected(store.agent_connected(&again).await.unwrap());
    assert!(back.connected);
    assert_eq!(back.agent_version, "0.2.0");
    assert!(back.labels.is_empty());
    assert_eq!(back.first_seen_at, t(0));
    assert_eq!(back.connected_at, Some(t(1000)));
    assert!(store.get_agent("nobody").await.unwrap().is_none());
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
    assert!(store.revoke_agent("bad-1", "alice", t(5)).await.unwrap());
    // Revoking twice, or an unknown agent, changes nothing.
    assert!(!store.revoke_agent("bad-1", "bob", t(6)).await.unwrap());
    assert!(!store.revoke_agent("nobody", "bob", t(6)).await.unwrap());
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
    store.revoke_agent("d", "alice", t(60)).await.unwrap();
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
    };
    assert_eq!(
        ids(&store.list_agents(&unrevoked, page(50, 0)).await.unwrap()),
        ["b"]
    );
}
