//! Scale-out: three bridge processes share one stream through an MQTT shared subscription
//! (`$share/bridges/...`), each with its own outbox. Every message must reach the stand-in
//! once in total while all run, and none may be lost when one member is killed mid-stream
//! and started again later.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::stack::{self, eventually, BridgeProcess};
use support::Broker;
use tokio_util::sync::CancellationToken;

fn member(
    broker: &Broker,
    stub: std::net::SocketAddr,
    dir: &std::path::Path,
    name: &str,
) -> BridgeProcess {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let mut env = stack::bridge_env(broker, stub, &home);
    env.retain(|(k, _)| k != "BRIDGE_MQTT__CLIENT_ID");
    env.push(("BRIDGE_MQTT__CLIENT_ID".into(), name.into()));
    env.push(("BRIDGE_MQTT__SHARED_GROUP".into(), "bridges".into()));
    BridgeProcess::start(env, &home)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_bridges_split_one_stream_and_survive_a_member_crash() {
    let broker = Broker::start();
    let stop = CancellationToken::new();
    let stub = stack::start_stub(&stop).await;
    let dir = tempfile::tempdir().unwrap();
    let mut members: Vec<BridgeProcess> = ["bridge-a", "bridge-b", "bridge-c"]
        .iter()
        .map(|n| member(&broker, stub.addr, dir.path(), n))
        .collect();
    for m in &members {
        stack::wait_subscribed_http(m.http.expect("listening"), None).await;
    }

    // Phase 1: 15,000 messages, nobody fails: each accepted exactly once.
    let all = stack::fleet_stream(30_000, 50);
    let (first, second) = all.split_at(15_000);
    let acked = Arc::new(AtomicUsize::new(0));
    stack::publish_stream(
        broker.ws_url(),
        broker.ws_port,
        broker.publisher.clone(),
        "pub-share".into(),
        first.to_vec(),
        3_000,
        acked.clone(),
    )
    .await;
    eventually(Duration::from_secs(120), "15000 locations", || {
        stack::distinct(&stub.accepted()).len() >= 15_000
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let accepted = stub.accepted();
    assert_eq!(
        (accepted.len(), stack::distinct(&accepted).len()),
        (15_000, 15_000),
        "each message accepted once in total"
    );
    let per_member: Vec<u64> = members
        .iter()
        .map(|m| {
            let log = std::fs::read_to_string(&m.log).unwrap_or_default();
            u64::from(log.contains("subscribed"))
        })
        .collect();
    assert_eq!(per_member, [1, 1, 1], "every member subscribed");

    // Phase 2: 15,000 more; bridge-b is killed a third of the way and restarted near the end.
    let acked = Arc::new(AtomicUsize::new(0));
    let publisher = tokio::spawn(stack::publish_stream(
        broker.ws_url(),
        broker.ws_port,
        broker.publisher.clone(),
        "pub-share".into(),
        second.to_vec(),
        3_000,
        acked.clone(),
    ));
    eventually(Duration::from_secs(60), "5000 acked", || {
        acked.load(Ordering::Relaxed) >= 5_000
    })
    .await;
    members[1].kill();
    eventually(Duration::from_secs(60), "12000 acked", || {
        acked.load(Ordering::Relaxed) >= 12_000
    })
    .await;
    members[1].restart();
    publisher.await.unwrap();
    eventually(Duration::from_secs(180), "30000 distinct locations", || {
        stack::distinct(&stub.accepted()).len() >= 30_000
    })
    .await;
    for m in members.iter_mut() {
        assert!(
            m.child.try_wait().unwrap().is_none(),
            "a member exited: {}",
            m.all_logs()
        );
    }
    let stats = stub.stats();
    eprintln!(
        "scale-out: 30000 published over 3 members, distinct accepted {}, duplicates {} (all from the crash phase)",
        stack::distinct(&stub.accepted()).len(),
        stats.duplicates
    );
}
