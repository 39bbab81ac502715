//! Scale-out: three bridge processes share one stream through an MQTT shared subscription
//! (`$share/bridges/...`), each with its own outbox. Every message must reach the stand-in
//! once in total while all run, and none may be lost when one member is killed mid-stream
//! and started again later. A member that leaves for good hands its share over with
//! `twinzo-bridge retire`.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::stack::{self, eventually, BridgeProcess};
use support::Broker;
use tokio_util::sync::CancellationToken;
use twinzo_bridge::stub::StubHandle;

/// The settings of group member `name`, at home in `dir/name`.
fn member_env(
    broker: &Broker,
    stub: std::net::SocketAddr,
    dir: &std::path::Path,
    name: &str,
) -> Vec<(String, String)> {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let mut env = stack::bridge_env(broker, stub, &home);
    env.retain(|(k, _)| k != "BRIDGE_MQTT__CLIENT_ID");
    env.push(("BRIDGE_MQTT__CLIENT_ID".into(), name.into()));
    env.push(("BRIDGE_MQTT__SHARED_GROUP".into(), "bridges".into()));
    env
}

/// A broker, the stand-in, and members of the group `bridges`, each subscribed.
struct Group {
    broker: Broker,
    stub: StubHandle,
    dir: tempfile::TempDir,
    members: Vec<BridgeProcess>,
    _stop: CancellationToken,
}

impl Group {
    async fn start(names: &[&str]) -> Group {
        let broker = Broker::start();
        let stop = CancellationToken::new();
        let stub = stack::start_stub(&stop).await;
        let dir = tempfile::tempdir().unwrap();
        let members: Vec<BridgeProcess> = names
            .iter()
            .map(|n| {
                let env = member_env(&broker, stub.addr, dir.path(), n);
                BridgeProcess::start(env, &dir.path().join(n))
            })
            .collect();
        for m in &members {
            stack::wait_subscribed_http(m.http.expect("listening"), None).await;
        }
        Group {
            broker,
            stub,
            dir,
            members,
            _stop: stop,
        }
    }

    /// Distinct locations the stand-in accepted.
    fn accepted(&self) -> usize {
        stack::distinct(&self.stub.accepted()).len()
    }
}

async fn status(member: &BridgeProcess) -> serde_json::Value {
    let url = format!("http://{}/api/status", member.http.expect("listening"));
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// Waits until `member` has received nothing new for a second and its outbox is empty;
/// returns how many records it delivered.
async fn settled(member: &BridgeProcess) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut last = None;
    loop {
        let s = status(member).await;
        let now = (
            s["counters"]["received"].clone(),
            s["outbox"]["records"] == 0,
        );
        if now.1 && last.as_ref() == Some(&now.0) {
            return s["counters"]["delivered"].as_u64().unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "never settled: {s}");
        last = Some(now.0);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_bridges_split_one_stream_and_survive_a_member_crash() {
    let mut g = Group::start(&["bridge-a", "bridge-b", "bridge-c"]).await;
    let broker = &g.broker;

    // Phase 1: 15,000 messages, nobody fails: each accepted exactly once.
    let all = stack::fleet_stream(30_000, 50);
    let (first, second) = all.split_at(15_000);
    publish(broker, "pub-share", first).await;
    eventually(Duration::from_secs(120), "15000 locations", || {
        g.accepted() >= 15_000
    })
    .await;
    // The broker split the stream: every member delivered part of it, and together all.
    let mut per_member = Vec::new();
    for m in &g.members {
        per_member.push(settled(m).await);
        let status = status(m).await;
        assert_eq!(status["broker"]["shared_group"], "bridges", "{status}");
    }
    let accepted = g.stub.accepted();
    assert_eq!(
        (accepted.len(), stack::distinct(&accepted).len()),
        (15_000, 15_000),
        "each message accepted once in total"
    );
    eprintln!("scale-out: phase 1 delivered per member {per_member:?}");
    assert!(
        per_member.iter().all(|&d| d > 0),
        "every member took a share: {per_member:?}"
    );
    assert_eq!(per_member.iter().sum::<u64>(), 15_000, "{per_member:?}");

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
    g.members[1].kill();
    eventually(Duration::from_secs(60), "12000 acked", || {
        acked.load(Ordering::Relaxed) >= 12_000
    })
    .await;
    g.members[1].restart();
    publisher.await.unwrap();
    eventually(Duration::from_secs(180), "30000 distinct locations", || {
        g.accepted() >= 30_000
    })
    .await;
    for m in g.members.iter_mut() {
        assert!(
            m.child.try_wait().unwrap().is_none(),
            "a member exited: {}",
            m.all_logs()
        );
    }
    let stats = g.stub.stats();
    eprintln!(
        "scale-out: 30000 published over 3 members, distinct accepted {}, duplicates {} (all from the crash phase)",
        g.accepted(),
        stats.duplicates
    );
}

/// Publishes `messages` as the robot publisher and waits for the broker's acknowledgements.
async fn publish(broker: &Broker, id: &str, messages: &[(String, Vec<u8>)]) {
    stack::publish_stream(
        broker.ws_url(),
        broker.ws_port,
        broker.publisher.clone(),
        id.into(),
        messages.to_vec(),
        3_000,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_member_hands_over_its_share_and_leaves_the_group() {
    let mut g = Group::start(&["bridge-a", "bridge-b"]).await;

    // bridge-b's share (5,000) is more than the broker sends unacknowledged (4,000): retire
    // must also take in what the broker sends only after its acknowledgements.
    let all = stack::fleet_stream(13_000, 30);

    // bridge-b goes away: Mosquitto keeps queueing its share in its durable session, and
    // bridge-a gets none of it.
    g.members[1].kill();
    publish(&g.broker, "pub-retire-1", &all[..10_000]).await;
    let from_a = settled(&g.members[0]).await;
    let held = 10_000 - g.accepted();
    eprintln!(
        "scale-out retire: 10000 published with bridge-b away, bridge-a delivered {from_a}, \
         {held} held in bridge-b's session"
    );
    assert_eq!(
        g.accepted() as u64,
        from_a,
        "everything accepted came from bridge-a"
    );
    assert!(
        held > 4_000,
        "the absent member's share waits in its session: {held}"
    );

    // Retiring bridge-b (same client id, its own outbox) delivers what its session held.
    let env = member_env(&g.broker, g.stub.addr, g.dir.path(), "bridge-b");
    let log = g.dir.path().join("bridge-b").join("retire.log");
    let (status, log) = stack::retire(&env, &log, Duration::from_secs(120)).await;
    assert!(status.success(), "retire failed: {status}\n{log}");
    assert!(log.contains("session removed"), "{log}");
    assert_eq!(g.accepted(), 10_000, "nothing lost");

    // The group is bridge-a alone now: it gets every new message, none is queued for b.
    let before_a = settled(&g.members[0]).await;
    publish(&g.broker, "pub-retire-2", &all[10_000..]).await;
    eventually(Duration::from_secs(60), "13000 distinct locations", || {
        g.accepted() >= 13_000
    })
    .await;
    assert_eq!(settled(&g.members[0]).await - before_a, 3_000);
    eprintln!(
        "scale-out retire: held {held} handed over by retire, then 3000 all to bridge-a, \
         13000 distinct accepted, duplicates {}",
        g.stub.stats().duplicates
    );
}
