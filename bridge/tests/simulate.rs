//! `twinzo-bridge simulate` against a real Mosquitto: the stated count arrives (ATI with 3 and
//! 6 value poses, VDA 5050), pacing holds at high rates, a broker restart loses nothing, and a
//! wrong password fails at once with a clear error.
//!
//! A subscriber (the bridge account, rumqttc) subscribes before the simulator starts. It is
//! polled only afterwards: the broker queues for it meanwhile, and a final round trip (`sync`)
//! proves that nothing beyond the count arrived.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use rumqttc::{Publish, QoS};
use serde_json::Value;
use support::mqtt::{self, Client, Via};
use support::{Broker, Creds};
use tokio_util::sync::CancellationToken;
use twinzo_bridge::simulate::{self, SimReport, SimulateArgs};

const WAIT: Duration = Duration::from_secs(10);

fn args(url: &str, creds: &Creds, extra: &[&str]) -> SimulateArgs {
    let mut argv = vec![
        "--url",
        url,
        "--username",
        &creds.username,
        "--password",
        &creds.password,
    ];
    argv.extend_from_slice(extra);
    SimulateArgs::try_from_args(argv).expect("valid simulate arguments")
}

async fn subscriber(broker: &Broker, id: &str, filter: &str, durable: bool) -> Client {
    let mut opts = mqtt::options(broker, Via::Tcp, id, Some(&broker.bridge));
    opts.set_clean_session(!durable);
    let mut client = Client::connect(opts).await.expect("subscriber connects");
    client.subscribe(filter, QoS::AtLeastOnce).await;
    client
}

/// Reads `count` publications, then checks with a round trip that no more arrived.
async fn read_exactly(sub: &mut Client, count: u64) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for _ in 0..count {
        out.push(parse(sub.next_publish(WAIT).await));
    }
    sub.sync().await;
    let extra: Vec<String> = sub.received.iter().map(|p| p.topic.clone()).collect();
    assert!(
        extra.is_empty(),
        "{} messages beyond the count: {extra:?}",
        extra.len()
    );
    out
}

fn parse(publish: Publish) -> (String, Value) {
    let value = serde_json::from_slice(&publish.payload).expect("payload is JSON");
    (publish.topic, value)
}

fn assert_complete(report: &SimReport, count: u64, robots: usize) {
    assert_eq!((report.sent, report.failed), (count, 0), "{report}");
    assert_eq!(report.per_robot.len(), robots, "{report}");
    assert_eq!(report.per_robot.values().sum::<u64>(), count, "{report}");
}

/// Every message is ATI status from the robot its topic names, with a unique id and a unique
/// (robot, timestamp).
fn assert_ati(messages: &[(String, Value)], pose_len: usize) {
    let mut ids = HashSet::new();
    let mut stamps = HashSet::new();
    for (topic, m) in messages {
        let robot = m["sherpa_name"].as_str().expect("sherpa_name");
        assert_eq!(topic, &format!("ati/{robot}/status"));
        assert_eq!(m["pose"].as_array().expect("pose").len(), pose_len, "{m}");
        assert_eq!(m["mode"], "fleet");
        assert!(m["battery_status"]
            .as_f64()
            .is_some_and(|b| (0.0..=100.0).contains(&b)));
        let stamp = m["timestamp"].as_str().expect("timestamp");
        assert!(stamp.ends_with('Z') && stamp.len() == 24, "{stamp}");
        assert!(ids.insert(m["message_id"].as_str().expect("message_id").to_owned()));
        assert!(
            stamps.insert((robot.to_owned(), stamp.to_owned())),
            "{robot} {stamp} twice"
        );
    }
}

#[tokio::test]
async fn publishes_exactly_count_ati_messages_with_three_value_poses_over_websocket() {
    let broker = Broker::start();
    let mut sub = subscriber(&broker, "counter", "ati/#", false).await;

    let run_args = args(
        &broker.ws_url(),
        &broker.publisher,
        &["--count", "60", "--robots", "3", "--rate", "20"],
    );
    let report = simulate::run(run_args, CancellationToken::new())
        .await
        .expect("simulate runs");
    assert_complete(&report, 60, 3);
    assert!(report.per_robot.values().all(|&n| n == 20), "{report}");

    let messages = read_exactly(&mut sub, 60).await;
    assert_ati(&messages, 3);
}

#[tokio::test]
async fn publishes_six_value_poses_over_tcp_on_a_custom_topic() {
    let broker = Broker::start();
    let mut sub = subscriber(&broker, "counter", "ati/#", false).await;

    let extra = [
        "--count", "25", "--robots", "2", "--rate", "50", "--pose", "6", "--path", "region",
    ];
    let report = simulate::run(
        args(&broker.tcp_url(), &broker.publisher, &extra),
        CancellationToken::new(),
    )
    .await
    .expect("simulate runs");
    assert_complete(&report, 25, 2);
    assert_eq!(report.per_robot["sim-01"], 13);
    assert_eq!(report.per_robot["sim-02"], 12);

    let messages = read_exactly(&mut sub, 25).await;
    assert_ati(&messages, 6);
}

#[tokio::test]
async fn publishes_vda5050_state_and_visualization() {
    let broker = Broker::start_with(&[("MQTT_PUBLISH_TOPICS", "uagv/#")]);
    let mut sub = subscriber(&broker, "counter", "uagv/#", false).await;

    let extra = [
        "--count",
        "40",
        "--robots",
        "4",
        "--rate",
        "20",
        "--format",
        "vda5050",
        "--manufacturer",
        "acme",
    ];
    let report = simulate::run(
        args(&broker.ws_url(), &broker.publisher, &extra),
        CancellationToken::new(),
    )
    .await
    .expect("simulate runs");
    assert_complete(&report, 40, 4);

    let messages = read_exactly(&mut sub, 40).await;
    let mut per_topic: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (topic, m) in &messages {
        let serial = m["serialNumber"].as_str().expect("serialNumber");
        let kind = topic.rsplit('/').next().unwrap_or_default();
        assert_eq!(topic, &format!("uagv/v2/acme/{serial}/{kind}"));
        assert_eq!(m["manufacturer"], "acme");
        assert_eq!(m["version"], "2.0.0");
        assert_eq!(m["agvPosition"]["positionInitialized"], true);
        assert!(m["agvPosition"]["x"].is_f64() && m["agvPosition"]["theta"].is_f64());
        if kind == "state" {
            assert!(m["batteryState"]["batteryCharge"].is_f64(), "{m}");
            assert!(m["driving"].is_boolean() && m["errors"].is_array(), "{m}");
        }
        per_topic
            .entry(topic.clone())
            .or_default()
            .push(m["headerId"].as_u64().expect("headerId"));
    }
    // 4 robots x (state, visualization), 5 of each, headerIds counting per topic.
    assert_eq!(per_topic.len(), 8, "{per_topic:?}");
    for (topic, mut ids) in per_topic {
        ids.sort_unstable();
        assert_eq!(ids, vec![0, 1, 2, 3, 4], "{topic}");
    }
}

#[tokio::test]
async fn qos0_counts_messages_written() {
    let broker = Broker::start();
    let mut sub = subscriber(&broker, "counter", "ati/#", false).await;

    let extra = ["--count", "30", "--rate", "30", "--qos", "0"];
    let report = simulate::run(
        args(&broker.tcp_url(), &broker.publisher, &extra),
        CancellationToken::new(),
    )
    .await
    .expect("simulate runs");
    assert_complete(&report, 30, 5);
    // Nothing is lost on a healthy local connection, even without acknowledgements.
    read_exactly(&mut sub, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_a_high_rate_and_delivers_every_message() {
    let broker = Broker::start();
    let mut sub = subscriber(&broker, "counter", "ati/#", false).await;

    // 50 robots at 100 Hz: 5,000 messages a second for two seconds.
    let extra = ["--count", "10000", "--robots", "50", "--rate", "100"];
    let report = simulate::run(
        args(&broker.tcp_url(), &broker.publisher, &extra),
        CancellationToken::new(),
    )
    .await
    .expect("simulate runs");
    assert_complete(&report, 10_000, 50);
    let secs = report.elapsed.as_secs_f64();
    assert!(
        (1.9..6.0).contains(&secs),
        "paced at 5,000 msg/s, took {secs:.2} s: {report}"
    );

    let ids: HashSet<String> = read_exactly(&mut sub, 10_000)
        .await
        .into_iter()
        .map(|(_, m)| m["message_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids.len(), 10_000);
}

#[tokio::test]
async fn stops_at_the_duration_and_reports_what_it_sent() {
    let broker = Broker::start();
    let extra = ["--duration", "0.5", "--robots", "2", "--rate", "20"];
    let report = simulate::run(
        args(&broker.tcp_url(), &broker.publisher, &extra),
        CancellationToken::new(),
    )
    .await
    .expect("simulate runs");
    // 40 msg/s for half a second, the first at once.
    assert!((18..=23).contains(&report.sent), "{report}");
    assert_eq!(report.failed, 0);
}

#[tokio::test]
async fn shutdown_ends_an_endless_run_cleanly() {
    let broker = Broker::start();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(simulate::run(
        args(&broker.tcp_url(), &broker.publisher, &["--rate", "50"]),
        shutdown.clone(),
    ));
    let mut sub = subscriber(&broker, "counter", "ati/#", false).await;
    sub.next_publish(WAIT).await;
    shutdown.cancel();
    let report = tokio::time::timeout(WAIT, run)
        .await
        .expect("run ends")
        .expect("joins")
        .expect("ok");
    assert!(report.sent > 0 && report.failed == 0, "{report}");
}

async fn survives_a_broker_restart(durable: bool) {
    let mut broker = Broker::start();
    // A durable session that is away during the run: the broker queues every message for it
    // and keeps the queue across the restart.
    subscriber(&broker, "counter", "ati/#", true)
        .await
        .disconnect()
        .await;
    let mut watcher = subscriber(&broker, "watcher", "ati/#", false).await;

    // 2,000 msg/s for three seconds: at the stop, messages are in flight and queued.
    let mut extra = vec!["--count", "6000", "--robots", "20", "--rate", "100"];
    if durable {
        extra.extend(["--durable", "--client-id", "sim-durable"]);
    }
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(simulate::run(
        args(&broker.ws_url(), &broker.publisher, &extra),
        shutdown,
    ));

    // Restart while the stream flows.
    for _ in 0..500 {
        watcher.next_publish(WAIT).await;
    }
    drop(watcher);
    tokio::task::block_in_place(|| {
        broker.stop();
        broker.start_again();
    });

    let report = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("simulate finishes")
        .expect("simulate task joins")
        .expect("simulate survives the restart");
    assert_complete(&report, 6000, 20);

    // At least once: every message arrives, a few perhaps twice.
    let mut sub = subscriber(&broker, "counter", "ati/#", true).await;
    let mut ids: HashSet<String> = HashSet::new();
    let mut copies = 0;
    while ids.len() < 6000 {
        let (_, m) = parse(sub.next_publish(WAIT).await);
        ids.insert(m["message_id"].as_str().unwrap_or_default().to_owned());
        copies += 1;
    }
    sub.sync().await;
    copies += sub.received.len();
    assert!(copies - 6000 < 1000, "{} duplicates", copies - 6000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_broker_restart_without_losing_messages() {
    survives_a_broker_restart(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_session_survives_a_broker_restart_without_losing_messages() {
    survives_a_broker_restart(true).await;
}

#[tokio::test]
async fn wrong_password_fails_at_once_with_a_clear_error() {
    let broker = Broker::start();
    let creds = Creds {
        username: broker.publisher.username.clone(),
        password: "wrong".into(),
    };
    let started = std::time::Instant::now();
    let err = simulate::run(
        args(&broker.ws_url(), &creds, &["--count", "5"]),
        CancellationToken::new(),
    )
    .await
    .expect_err("a wrong password fails");
    let message = format!("{err:#}");
    assert!(
        message.starts_with("broker refused the connection: "),
        "{message}"
    );
    assert!(
        message.contains("username") && message.contains("password"),
        "{message}"
    );
    assert!(!message.contains("wrong"), "the password leaked: {message}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusal is final, not retried"
    );
}

#[tokio::test]
async fn wss_speaks_tls_even_to_a_plain_port() {
    let broker = Broker::start();
    let url = format!("wss://127.0.0.1:{}/mqtt", broker.ws_port);
    let err = simulate::run(
        args(
            &url,
            &broker.publisher,
            &["--count", "1", "--connect-timeout", "2"],
        ),
        CancellationToken::new(),
    )
    .await
    .expect_err("no TLS on a plain WebSocket port");
    let message = format!("{err:#}");
    assert!(
        message.starts_with("could not connect to the broker within 2 s"),
        "{message}"
    );
    // rustls' words for a reply that is not TLS.
    assert!(message.contains("InvalidContentType"), "{message}");
}
