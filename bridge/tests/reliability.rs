//! The reliability suite: nothing is lost when any part fails.
//!
//! Each scenario runs a real Mosquitto (project config, persistence on), the Twinzo stand-in
//! in this process, and the bridge binary as a child process, then counts every message
//! published against every distinct location (login, timestamp) the stand-in accepted.
//! Each prints one `scenario N:` line with its counts (run with `--nocapture` to see them).

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::stack::{self, eventually, BridgeProcess};
use support::Broker;
use tokio_util::sync::CancellationToken;
use twinzo_bridge::outbox::Outbox;
use twinzo_bridge::stub::StubHandle;

const DRAIN: Duration = Duration::from_secs(180);

struct Rig {
    broker: Broker,
    stub: StubHandle,
    dir: tempfile::TempDir,
    _stop: CancellationToken,
}

impl Rig {
    async fn new(extra: &[(&str, &str)]) -> (Rig, BridgeProcess) {
        let broker = Broker::start();
        let stop = CancellationToken::new();
        let stub = stack::start_stub(&stop).await;
        let dir = tempfile::tempdir().unwrap();
        let mut env = stack::bridge_env(&broker, stub.addr, dir.path());
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let bridge = BridgeProcess::start(env, dir.path());
        stack::wait_subscribed_http(bridge.http.expect("bridge listening"), None).await;
        (
            Rig {
                broker,
                stub,
                dir,
                _stop: stop,
            },
            bridge,
        )
    }

    /// Starts publishing `messages` at `rate`/s in the background; returns the ack counter.
    fn stream(
        &self,
        id: &str,
        messages: Vec<(String, Vec<u8>)>,
        rate: u64,
    ) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
        let acked = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(stack::publish_stream(
            self.broker.ws_url(),
            self.broker.ws_port,
            self.broker.publisher.clone(),
            id.to_string(),
            messages,
            rate,
            acked.clone(),
        ));
        (acked, task)
    }

    fn distinct(&self) -> BTreeSet<(String, i64)> {
        stack::distinct(&self.stub.accepted())
    }

    async fn wait_all(&self, expected: usize) {
        eventually(DRAIN, &format!("{expected} distinct locations"), || {
            self.distinct().len() >= expected
        })
        .await;
        assert_eq!(
            self.distinct().len(),
            expected,
            "more distinct locations than published"
        );
    }
}

async fn wait_acked(acked: &AtomicUsize, n: usize) {
    eventually(
        DRAIN,
        &format!("{n} messages acknowledged by the broker"),
        || acked.load(Ordering::Relaxed) >= n,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_1_three_sigkills_during_20000_messages_lose_nothing() {
    let (rig, mut bridge) = Rig::new(&[]).await;
    let (acked, publisher) = rig.stream("pub-s1", stack::fleet_stream(20_000, 50), 2_000);
    for at in [5_000, 10_000, 15_000] {
        wait_acked(&acked, at).await;
        bridge.kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        bridge.restart();
    }
    publisher.await.unwrap();
    rig.wait_all(20_000).await;
    let stats = rig.stub.stats();
    eprintln!(
        "scenario 1: published 20000, distinct accepted {}, lost 0, duplicates at Twinzo {} (0 after dedup by login+timestamp)",
        rig.distinct().len(),
        stats.duplicates
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_2_twinzo_503_then_refusing_then_back_loses_nothing() {
    let (rig, _bridge) = Rig::new(&[("BRIDGE_RETRY__MAX_DELAY_MS", "2000")]).await;
    // The 503 window overlaps the refusal by a second, so there is no gap between the two.
    rig.stub.fail_for(503, Duration::from_secs(31));
    let n = 6_000;
    let (_acked, publisher) = rig.stream("pub-s2", stack::fleet_stream(n as u64, 20), 100);
    tokio::time::sleep(Duration::from_secs(29)).await;
    let during_503 = rig.distinct().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    rig.stub.refuse_for(Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(29)).await;
    let during_refusal = rig.distinct().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let recovered = Instant::now();
    publisher.await.unwrap();
    rig.wait_all(n).await;
    eprintln!(
        "scenario 2: published {n}, accepted during 503 {during_503}, during refusal {during_refusal}, \
         distinct accepted {}, lost 0, backlog drained {:.1} s after recovery, 503s answered {}",
        rig.distinct().len(),
        recovered.elapsed().as_secs_f64(),
        rig.stub.stats().requests_by_status.get(&503).copied().unwrap_or(0)
    );
    assert_eq!(
        (during_503, during_refusal),
        (0, 0),
        "nothing is accepted during the outage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_3_broker_restart_mid_stream_loses_nothing() {
    let (mut rig, _bridge) = Rig::new(&[]).await;
    let n = 6_000;
    let (acked, publisher) = rig.stream("pub-s3", stack::fleet_stream(n as u64, 30), 1_000);
    wait_acked(&acked, 2_500).await;
    rig.broker.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    rig.broker.start_again();
    publisher.await.unwrap();
    rig.wait_all(n).await;
    eprintln!(
        "scenario 3: published {n}, distinct accepted {}, lost 0, duplicates {}",
        rig.distinct().len(),
        rig.stub.stats().duplicates
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_4_tokens_expiring_every_two_seconds_lose_nothing() {
    let (rig, _bridge) = Rig::new(&[]).await;
    rig.stub.set_token_ttl(Duration::from_secs(2));
    let n = 4_000;
    let (_acked, publisher) = rig.stream("pub-s4", stack::fleet_stream(n as u64, 10), 400);
    publisher.await.unwrap();
    rig.wait_all(n).await;
    let stats = rig.stub.stats();
    eprintln!(
        "scenario 4: published {n}, distinct accepted {}, lost 0, authentications {}, 401s {}",
        rig.distinct().len(),
        stats.auth_ok,
        stats.requests_by_status.get(&401).copied().unwrap_or(0)
    );
    assert!(
        stats.auth_ok >= 10 + 4,
        "tokens were renewed during the stream: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_5_one_in_ten_malformed_is_set_aside_with_its_reason() {
    let (rig, mut bridge) = Rig::new(&[]).await;
    let pid = bridge.child.id();
    let bad: [(&str, Vec<u8>); 6] = [
        ("not_json", b"{\"sherpa_name\": \"bot-x\", pose".to_vec()),
        ("not_utf8", b"\xff\xfe\xfd not text".to_vec()),
        (
            "wrong_type",
            br#"{"sherpa_name":"bot-x","pose":"1,2,3"}"#.to_vec(),
        ),
        (
            "not_finite",
            br#"{"sherpa_name":"bot-x","pose":[NaN,1,0]}"#.to_vec(),
        ),
        ("missing_field", br#"{"sherpa_name":"bot-x"}"#.to_vec()),
        (
            "oversized",
            format!(
                r#"{{"sherpa_name":"bot-x","pose":[1,2,3],"pad":"{}"}}"#,
                "x".repeat(100_000)
            )
            .into_bytes(),
        ),
    ];
    let good = stack::fleet_stream(900, 10);
    let mut messages = Vec::new();
    let mut expected_reasons = Vec::new();
    for (i, message) in good.into_iter().enumerate() {
        messages.push(message);
        if i % 9 == 8 {
            let (reason, payload) = &bad[(i / 9) % bad.len()];
            messages.push(("ati/bot-x/status".to_string(), payload.clone()));
            expected_reasons.push(reason.to_string());
        }
    }
    let (_acked, publisher) = rig.stream("pub-s5", messages, 500);
    publisher.await.unwrap();
    rig.wait_all(900).await;
    assert!(bridge.child.try_wait().unwrap().is_none(), "bridge exited");
    assert_eq!(bridge.child.id(), pid);
    bridge.terminate(Duration::from_secs(20));

    let outbox = Outbox::open(
        &rig.dir.path().join("outbox.redb"),
        (&twinzo_bridge::config::OutboxConfig::default()).into(),
    )
    .unwrap();
    let mut reasons: Vec<String> = outbox
        .dead_letters(0, 1000)
        .unwrap()
        .into_iter()
        .map(|l| l.reason)
        .collect();
    let mut expected = expected_reasons.clone();
    reasons.sort();
    expected.sort();
    assert_eq!(reasons, expected);
    eprintln!("scenario 5: published {} good + {} malformed, distinct accepted {}, dead letters {} with matching reasons, bridge restarts 0",
        900, expected_reasons.len(), rig.distinct().len(), reasons.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_6_full_outbox_holds_acks_then_catches_up() {
    let (rig, bridge) = Rig::new(&[
        ("BRIDGE_OUTBOX__MAX_RECORDS", "200"),
        ("BRIDGE_RETRY__MAX_DELAY_MS", "1000"),
    ])
    .await;
    rig.stub.fail_for(503, Duration::from_secs(600));
    let n = 3_000;
    let (_acked, publisher) = rig.stream("pub-s6", stack::fleet_stream(n as u64, 20), 1_000);
    publisher.await.unwrap();
    let addr = bridge.http.unwrap();
    let status = || async move {
        reqwest::get(format!("http://{addr}/api/status"))
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let held = loop {
        let s = status().await;
        if s["backpressure"] == true {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "backpressure never reported: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let depth = held["outbox"]["records"].as_u64().unwrap();
    assert!(
        (200..1300).contains(&depth),
        "outbox bounded near its limit: {depth}"
    );
    rig.stub.fail_for(503, Duration::ZERO);
    let recovered = Instant::now();
    rig.wait_all(n).await;
    eprintln!("scenario 6: published {n}, outbox held at {depth} records (limit 200) with acks withheld, distinct accepted {}, lost 0, caught up in {:.1} s",
        rig.distinct().len(), recovered.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_7_sigterm_mid_stream_exits_within_grace_and_loses_nothing() {
    let (rig, mut bridge) = Rig::new(&[("BRIDGE_SHUTDOWN__GRACE_SECS", "5")]).await;
    rig.stub.set_latency(Duration::from_millis(50));
    let n = 5_000;
    let (acked, publisher) = rig.stream("pub-s7", stack::fleet_stream(n as u64, 25), 1_000);
    wait_acked(&acked, 2_000).await;
    let (took, status) = bridge.terminate(Duration::from_secs(20));
    assert!(status.success(), "clean exit: {status}");
    assert!(
        took < Duration::from_secs(7),
        "exited in {took:?}, grace 5 s"
    );
    bridge.restart();
    publisher.await.unwrap();
    rig.wait_all(n).await;
    let log = bridge.all_logs();
    assert!(
        log.contains("shutting down") && log.contains("stopped"),
        "lifecycle logged"
    );
    eprintln!("scenario 7: published {n}, SIGTERM exit after {:.2} s (grace 5 s), distinct accepted {}, lost 0", took.as_secs_f64(), rig.distinct().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_8_a_twinzo_outage_is_probed_one_request_at_a_time() {
    // Steps of at least 500 ms: in a 6 s outage the gate can send at most 12 probes, plus
    // the requests already out when it opened (8 at once), and once more as many if one of
    // those came back accepted and closed the gate early: 28. Twenty logins retrying each on
    // its own backoff send well over a hundred (175 in a run without the gate).
    let (rig, _bridge) = Rig::new(&[
        ("BRIDGE_RETRY__MIN_DELAY_MS", "500"),
        ("BRIDGE_RETRY__MAX_DELAY_MS", "1000"),
    ])
    .await;
    let outage = Duration::from_secs(6);
    let n = 2_000;
    let (_acked, publisher) = rig.stream("pub-s8", stack::fleet_stream(n as u64, 20), 200);
    eventually(DRAIN, "the stream flowing", || rig.distinct().len() >= 100).await;
    let before = rig.distinct().len();
    rig.stub.fail_for(503, outage);
    tokio::time::sleep(outage).await;
    let recovered = Instant::now();
    let failed = rig
        .stub
        .stats()
        .requests_by_status
        .get(&503)
        .copied()
        .unwrap_or(0);
    publisher.await.unwrap();
    rig.wait_all(n).await;
    eprintln!(
        "scenario 8: published {n}, 20 logins, {} accepted before a {} s outage, 503s answered {failed}, \
         distinct accepted {}, lost 0, all delivered {:.1} s after recovery",
        before,
        outage.as_secs(),
        rig.distinct().len(),
        recovered.elapsed().as_secs_f64()
    );
    assert!(
        (1..=12 + 8 + 8).contains(&failed),
        "503s during the outage: {failed}"
    );
}
