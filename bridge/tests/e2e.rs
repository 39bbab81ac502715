//! End to end: real Mosquitto with the project's broker config, the Twinzo stand-in, and the
//! bridge in process. The robot publisher publishes over WebSocket; the tests read what the
//! stand-in accepted.

mod support;

use std::time::Duration;

use support::stack::{self, ati, eventually, publish};
use support::Broker;
use tokio_util::sync::CancellationToken;
use twinzo_bridge::stub::StubHandle;

const WAIT: Duration = Duration::from_secs(30);

/// The stand-in and a subscribed bridge (in process) for one test.
struct Rig {
    stub: StubHandle,
    bridge: stack::InProcess,
    /// Holds the bridge's outbox file.
    dir: tempfile::TempDir,
    _stop: CancellationToken,
}

/// Starts the stand-in, lets `setup` prepare it, then starts the bridge against `broker` with
/// `toml` as its config file (may be empty) and waits until it is subscribed.
async fn rig(broker: &Broker, api_key: bool, toml: &str, setup: impl FnOnce(&StubHandle)) -> Rig {
    let stop = CancellationToken::new();
    let stub = stack::start_stub(&stop).await;
    setup(&stub);
    let dir = tempfile::tempdir().unwrap();
    let mut env = stack::bridge_env(broker, stub.addr, dir.path());
    if api_key {
        stack::api_key_mode(&mut env);
    }
    let file = dir.path().join("bridge.toml");
    std::fs::write(&file, toml).unwrap();
    let bridge = stack::start_bridge(stack::load(&env, Some(&file))).await;
    stack::wait_subscribed(&bridge.running.state).await;
    Rig {
        stub,
        bridge,
        dir,
        _stop: stop,
    }
}

async fn ati_pose_layouts_arrive(api_key: bool) {
    let broker = Broker::start();
    let toml = "[[sectors]]\nid = 1\nflip_y = true\noffset_mm = [500.0, 30000.0]\n";
    let Rig {
        stub,
        bridge,
        _stop: stop,
        ..
    } = rig(&broker, api_key, toml, |_| {}).await;

    publish(
        &broker,
        "pub-poses",
        &[
            ati("tugger-01", 1, &[12.5, 20.25, 1.57], 79.4),
            ati("tugger-02", 2, &[1.0, 2.0, 0.25, 0.0, 0.0, 3.0], -1.0),
        ],
    )
    .await;
    eventually(WAIT, "two locations", || stub.accepted().len() >= 2).await;

    let mut got = stub.accepted();
    got.sort_by_key(|a| a.timestamp);
    let (a, b) = (&got[0], &got[1]);
    let mode = if api_key { "batch" } else { "device" };
    assert_eq!(
        (a.login.as_str(), a.sector_id, a.mode),
        ("tugger-01", 1, mode)
    );
    assert_eq!((a.x, a.y, a.z), (13_000.0, 30_000.0 - 20_250.0, 0.0));
    assert_eq!((a.battery, a.timestamp), (Some(79), 1_730_000_000_001));
    assert_eq!(
        (b.login.as_str(), b.x, b.y, b.z),
        ("tugger-02", 1_500.0, 28_000.0, 250.0)
    );
    assert_eq!(b.battery, None, "battery -1 is omitted");
    assert_eq!(b.timestamp, 1_730_000_000_002);
    assert!(got.iter().all(|g| !g.duplicate));
    bridge.stop().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ati_both_pose_layouts_arrive_in_device_mode() {
    ati_pose_layouts_arrive(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ati_both_pose_layouts_arrive_in_api_key_mode() {
    ati_pose_layouts_arrive(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vda5050_v2_and_v3_states_arrive_and_uninitialized_ones_do_not() {
    let broker = Broker::start_with(&[("MQTT_PUBLISH_TOPICS", "ati/#,uagv/#,vda5050/#")]);
    let toml = "[[routes]]\nfilter = \"uagv/v2/+/+/state\"\nformat = \"vda5050\"\n\n\
                [[routes]]\nfilter = \"vda5050/v3/+/+/state\"\nformat = \"vda5050\"\n";
    let Rig { stub, bridge, .. } = rig(&broker, false, toml, |_| {}).await;

    let v2 = r#"{"headerId":1,"timestamp":"2024-11-01T10:00:00.000Z","version":"2.0.0","manufacturer":"KIT","serialNumber":"0001",
        "agvPosition":{"x":3.5,"y":4.0,"theta":0.1,"mapId":"m","positionInitialized":true},"batteryState":{"batteryCharge":55.6,"charging":false},"driving":true}"#;
    let v3 = r#"{"headerId":1,"timestamp":"2024-11-01T10:00:01.000Z","version":"3.0.0","manufacturer":"KIT","serialNumber":"0002",
        "mobileRobotPosition":{"x":1,"y":2,"theta":0,"localized":true},"powerSupply":{"stateOfCharge":80},"driving":false}"#;
    let lost = r#"{"headerId":2,"timestamp":"2024-11-01T10:00:02.000Z","manufacturer":"KIT","serialNumber":"0003",
        "agvPosition":{"x":9,"y":9,"theta":0,"positionInitialized":false}}"#;
    publish(
        &broker,
        "pub-vda",
        &[
            ("uagv/v2/KIT/0003/state".into(), lost.as_bytes().to_vec()),
            ("uagv/v2/KIT/0001/state".into(), v2.as_bytes().to_vec()),
            ("vda5050/v3/KIT/0002/state".into(), v3.as_bytes().to_vec()),
        ],
    )
    .await;
    eventually(WAIT, "two VDA locations", || stub.accepted().len() >= 2).await;
    // The uninitialized one was published first; its absence is not a matter of time.
    eventually(WAIT, "three messages read", || {
        bridge.running.state.snapshot(0).counters["received"] >= 3
    })
    .await;

    let mut got = stub.accepted();
    got.sort_by_key(|a| a.timestamp);
    let logins: Vec<&str> = got.iter().map(|a| a.login.as_str()).collect();
    assert_eq!(logins, ["KIT/0001", "KIT/0002"]);
    assert_eq!(
        (got[0].x, got[0].y, got[0].battery, got[0].is_moving),
        (3_500.0, 4_000.0, Some(56), Some(true))
    );
    assert_eq!((got[1].battery, got[1].is_moving), (Some(80), Some(false)));
    assert_eq!(bridge.running.state.snapshot(0).counters["skipped"], 1);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_tokens_are_refreshed_and_nothing_is_lost() {
    let broker = Broker::start();
    let Rig { stub, bridge, .. } = rig(&broker, false, "", |stub| {
        stub.set_token_ttl(Duration::from_millis(700));
    })
    .await;

    for round in 0..6u64 {
        let batch: Vec<_> = (0..10)
            .map(|i| ati("tugger-01", round * 10 + i, &[1.0, 2.0, 0.0], 50.0))
            .collect();
        publish(&broker, "pub-tokens", &batch).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eventually(WAIT, "60 locations", || {
        stack::distinct(&stub.accepted()).len() >= 60
    })
    .await;
    assert_eq!(stack::distinct(&stub.accepted()).len(), 60);
    assert!(
        stub.stats().auth_ok >= 2,
        "tokens were refreshed: {:?}",
        stub.stats()
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_503_twice_then_200_is_retried() {
    let broker = Broker::start();
    let Rig { stub, bridge, .. } =
        rig(&broker, false, "", |stub| stub.push_statuses(&[503, 503])).await;

    publish(
        &broker,
        "pub-503",
        &[ati("tugger-01", 1, &[1.0, 1.0, 0.0], 10.0)],
    )
    .await;
    eventually(WAIT, "the location after two 503s", || {
        stub.accepted().len() == 1
    })
    .await;
    assert_eq!(stub.stats().requests_by_status.get(&503), Some(&2));
    let counters = bridge.running.state.snapshot(0).counters;
    assert_eq!(
        (
            counters["retried"],
            counters["delivered"],
            counters["rejected"]
        ),
        (2, 1, 0)
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_400_and_unknown_device_are_rejected_without_retry() {
    let broker = Broker::start();
    // API-key mode: Twinzo answers an unknown login inside the batch, HTTP 200, Success:false.
    let Rig {
        stub, bridge, dir, ..
    } = rig(&broker, true, "", |stub| stub.push_statuses(&[400])).await;

    publish(
        &broker,
        "pub-400",
        &[ati("tugger-01", 1, &[1.0, 1.0, 0.0], 10.0)],
    )
    .await;
    eventually(WAIT, "the 400 settled", || {
        bridge.running.state.snapshot(0).counters["rejected"] == 1
    })
    .await;
    publish(
        &broker,
        "pub-400",
        &[ati("ghost-07", 2, &[1.0, 1.0, 0.0], 10.0)],
    )
    .await;
    eventually(WAIT, "the unknown device settled", || {
        bridge.running.state.snapshot(0).counters["rejected"] == 2
    })
    .await;
    publish(
        &broker,
        "pub-400",
        &[ati("tugger-01", 3, &[1.0, 1.0, 0.0], 10.0)],
    )
    .await;
    eventually(WAIT, "a later good record", || stub.accepted().len() == 1).await;

    let stats = stub.stats();
    assert_eq!(
        stats.requests_by_status.get(&400),
        Some(&1),
        "400 was not retried: {stats:?}"
    );
    let snap = bridge.running.state.snapshot(0);
    assert_eq!((snap.counters["retried"], snap.outbox.dead_letters), (0, 2));
    bridge.stop().await;
    let outbox = twinzo_bridge::outbox::Outbox::open(
        &dir.path().join("outbox.redb"),
        (&twinzo_bridge::config::OutboxConfig::default()).into(),
    )
    .unwrap();
    let reasons: Vec<String> = outbox
        .dead_letters(0, 10)
        .unwrap()
        .into_iter()
        .map(|l| l.reason)
        .collect();
    assert_eq!(reasons, ["twinzo_rejected", "unknown_device"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_matching_status_and_watch_is_forwarded_once() {
    let broker = Broker::start();
    let Rig { stub, bridge, .. } = rig(&broker, false, "", |_| {}).await;

    let batch: Vec<_> = (0..20)
        .map(|i| ati("tugger-01", i, &[i as f64, 0.0, 0.0], 50.0))
        .collect();
    publish(&broker, "pub-once", &batch).await;
    eventually(WAIT, "20 locations", || stub.accepted().len() >= 20).await;
    eventually(WAIT, "20 watched", || {
        bridge
            .running
            .state
            .snapshot(0)
            .topics
            .iter()
            .any(|t| t.count == 20)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let snap = bridge.running.state.snapshot(0);
    assert_eq!(stub.accepted().len(), 20, "each message forwarded once");
    assert_eq!(
        (snap.counters["received"], snap.counters["duplicates"]),
        (20, 0),
        "one delivery per message"
    );
    let topic = snap
        .topics
        .iter()
        .find(|t| t.topic == "ati/tugger-01/status")
        .expect("topic watched");
    assert_eq!(topic.count, 20);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_restored_when_the_broker_lost_the_session() {
    let mut broker = Broker::start();
    let Rig { stub, bridge, .. } = rig(&broker, false, "", |_| {}).await;
    publish(
        &broker,
        "pub-lost",
        &[ati("tugger-01", 1, &[1.0, 1.0, 0.0], 10.0)],
    )
    .await;
    eventually(WAIT, "the first location", || stub.accepted().len() == 1).await;

    // A broker that comes back without its database knows nothing of our session.
    broker.kill();
    for entry in std::fs::read_dir(&broker.data_dir).unwrap() {
        let _ = std::fs::remove_file(entry.unwrap().path());
    }
    eventually(WAIT, "the bridge noticed", || {
        !bridge.running.state.snapshot(0).broker.connected
    })
    .await;
    broker.start_again();
    stack::wait_subscribed(&bridge.running.state).await;
    publish(
        &broker,
        "pub-lost",
        &[ati("tugger-01", 2, &[2.0, 1.0, 0.0], 10.0)],
    )
    .await;
    eventually(WAIT, "a location after resubscribing", || {
        stub.accepted().len() == 2
    })
    .await;
    assert!(bridge.running.state.snapshot(0).broker.reconnects >= 1);
    bridge.stop().await;
}
