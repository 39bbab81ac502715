//! The benchmark (`scripts/bench.sh`): one machine, one go, release build. A real Mosquitto
//! with the project's config, the Twinzo stand-in with a realistic latency, and the bridge
//! binary with its outbox on. Prints a table:
//!
//! 1. the ceiling: how fast Mosquitto delivers the stream to a plain QoS 1 subscriber;
//! 2. the bridge's sustained end-to-end rate (publish to accepted) and its ratio to the ceiling;
//! 3. latency p50/p99/max from publish to acceptance at 1,000 and 10,000 msg/s;
//! 4. the bridge's peak RSS and CPU seconds per 100,000 messages;
//! 5. how long the backlog of a 60 s Twinzo outage at 1,000 msg/s takes to drain.
//!
//! Both rates are steady-state: 300,000 messages, counted between the 10th and 90th
//! percentile of arrivals, so neither the start nor the last flush tick of the tail (up to
//! `batch.max_age_ms`, which is latency, not throughput) weighs on them. They are measured in
//! turns, ceiling then bridge, [`ROUNDS`] times, with the ceiling on a second broker that
//! has no bridge on it: each round's ratio compares runs seconds apart.
//!
//! Built only with `--features bench` (a `harness = false` target), so `cargo test` in CI does
//! not run it. Sizes shrink with `BENCH_SCALE=0.1` for a quick look.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use support::stack::{self, BridgeProcess};
use support::Broker;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

/// Twinzo's answer time in the stand-in (ms), `BENCH_LATENCY_MS` or 50.
fn latency_ms() -> u64 {
    std::env::var("BENCH_LATENCY_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50)
}

/// Set (to a client id) in the plain subscriber's process; see [`ceiling`].
const SUBSCRIBER: &str = "BENCH_SUBSCRIBER";

/// Turns of ceiling and sustained runs.
const ROUNDS: u32 = 5;

/// The flush interval (`batch.max_age_ms`), `BENCH_BATCH_MS` or the product default.
fn batch_ms() -> u64 {
    std::env::var("BENCH_BATCH_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
}

/// `api_key` (default: one batch call for all robots) or `device` (`BENCH_MODE`).
fn mode() -> String {
    std::env::var("BENCH_MODE").unwrap_or_else(|_| "api_key".into())
}

fn scale() -> f64 {
    std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn scaled(n: u64) -> u64 {
    ((n as f64 * scale()) as u64).max(100)
}

/// ATI messages whose payload time is stamped when they are sent, so acceptance time minus
/// payload time is the end-to-end latency.
fn message(run: &str, robot: u64, seq: u64, now_ms: i64) -> (String, Vec<u8>) {
    let ts = chrono::DateTime::from_timestamp_millis(now_ms).unwrap();
    let body = serde_json::json!({
        "sherpa_name": format!("bot-{robot:03}"), "mode": "fleet", "error": "", "disabled": false,
        "pose": [seq as f64 * 0.01, robot as f64, 0.0], "battery_status": 80.0,
        "timestamp": ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "message_id": format!("{run}-{robot}-{seq}"),
    });
    (
        format!("ati/bot-{robot:03}/status"),
        body.to_string().into_bytes(),
    )
}

/// Publishes `n` messages from `robots` robots at `rate`/s (0: as fast as possible), with
/// payload times that are unique per robot. Returns when the broker acknowledged all.
async fn publish(broker: &Broker, id: &str, n: u64, robots: u64, rate: u64) -> Duration {
    let mut opts = MqttOptions::new(id, broker.ws_url(), broker.ws_port);
    opts.set_transport(Transport::Ws)
        .set_credentials(
            broker.publisher.username.clone(),
            broker.publisher.password.clone(),
        )
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_inflight(500);
    let (client, mut events) = AsyncClient::new(opts, 2000);
    let acked = Arc::new(AtomicUsize::new(0));
    let counter = acked.clone();
    let poller = tokio::spawn(async move {
        while counter.load(Ordering::Relaxed) < n as usize {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    let started = Instant::now();
    let mut last_ms = vec![0i64; robots as usize];
    for i in 0..n {
        if rate > 0 {
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
        }
        let robot = i % robots;
        let now = chrono::Utc::now()
            .timestamp_millis()
            .max(last_ms[robot as usize] + 1);
        last_ms[robot as usize] = now;
        let (topic, payload) = message(id, robot, i / robots, now);
        client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    poller.await.unwrap();
    started.elapsed()
}

/// Mosquitto's delivery rate of `n` messages to a subscriber that only acknowledges, and
/// that subscriber's CPU seconds. The subscriber is this binary again, as a process of its
/// own ([`plain_subscriber`]), so its CPU is measured apart from the publisher's.
async fn ceiling(broker: &Broker, round: u32, n: u64) -> (f64, f64) {
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .env(SUBSCRIBER, format!("plain-subscriber-{round}"))
        .env("BENCH_SUB_URL", broker.ws_url())
        .env("BENCH_SUB_PORT", broker.ws_port.to_string())
        .env("BENCH_SUB_USER", &broker.bridge.username)
        .env("BENCH_SUB_PASS", &broker.bridge.password)
        .env("BENCH_SUB_N", n.to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the plain subscriber");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || lines.next_line().await.unwrap().expect("subscriber output");
    assert_eq!(next().await, "subscribed");
    publish(broker, &format!("pub-ceiling-{round}"), n, 100, 0).await;
    let report = next().await;
    let numbers: Vec<f64> = report
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(child.wait().await.unwrap().success());
    match numbers[..] {
        [rate, cpu] => (rate, cpu),
        _ => panic!("plain subscriber said {report:?}"),
    }
}

/// The plain subscriber process: connects as `BENCH_SUBSCRIBER` to `BENCH_SUB_URL`, says
/// `subscribed`, receives `BENCH_SUB_N` messages, then says `rate R cpu C` (messages per
/// second over the middle 80 %, CPU seconds since subscribing).
async fn plain_subscriber(id: String) {
    let var = |k: &str| std::env::var(k).unwrap();
    let port: u16 = var("BENCH_SUB_PORT").parse().unwrap();
    let n: u64 = var("BENCH_SUB_N").parse().unwrap();
    let mut opts = MqttOptions::new(id, var("BENCH_SUB_URL"), port);
    opts.set_transport(Transport::Ws)
        .set_credentials(var("BENCH_SUB_USER"), var("BENCH_SUB_PASS"))
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(opts, 100);
    client
        .subscribe("ati/+/status", QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = events.poll().await {
            break;
        }
    }
    let (_, cpu_before) = usage(std::process::id());
    println!("subscribed");
    let mut window = Window::new(n);
    let mut count = 0;
    while count < n {
        if let Ok(Event::Incoming(Packet::Publish(_))) = events.poll().await {
            count += 1;
            window.observe(count);
        }
    }
    let (_, cpu_after) = usage(std::process::id());
    println!("rate {} cpu {}", window.rate(), cpu_after - cpu_before);
}

/// A steady-state rate: messages per second between the 10th and the 90th percentile of a
/// run, so neither the start nor the last flush of the tail counts.
struct Window {
    n: u64,
    from: Option<Instant>,
    to: Option<Instant>,
}

impl Window {
    fn new(n: u64) -> Self {
        Window {
            n,
            from: None,
            to: None,
        }
    }

    /// Notes that `count` of the run's messages have arrived.
    fn observe(&mut self, count: u64) {
        if count >= self.n / 10 && self.from.is_none() {
            self.from = Some(Instant::now());
        }
        if count >= self.n * 9 / 10 && self.to.is_none() {
            self.to = Some(Instant::now());
        }
    }

    fn rate(&self) -> f64 {
        let span = self.to.unwrap() - self.from.unwrap();
        (self.n * 8 / 10) as f64 / span.as_secs_f64()
    }
}

/// CPU seconds per 100,000 messages of each process, between two readings.
fn cpu_per_100k(before: &[(u32, f64)], n: u64) -> Vec<f64> {
    before
        .iter()
        .map(|(pid, cpu)| (usage(*pid).1 - cpu) * 100_000.0 / n as f64)
        .collect()
}

/// Adds `more` to `sum`, element by element.
fn add(sum: &mut [f64], more: &[f64]) {
    for (s, m) in sum.iter_mut().zip(more) {
        *s += m;
    }
}

fn cpu_now(pids: &[u32]) -> Vec<(u32, f64)> {
    pids.iter().map(|&pid| (pid, usage(pid).1)).collect()
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Latencies (ms) of the stand-in's acceptances since `from`, from payload time.
fn latencies(stub: &twinzo_bridge::stub::StubHandle, from: usize) -> (i64, i64, i64) {
    let mut l: Vec<i64> = stub.accepted()[from..]
        .iter()
        .map(|a| a.received_at_ms - a.timestamp)
        .collect();
    l.sort_unstable();
    (
        percentile(&l, 0.5),
        percentile(&l, 0.99),
        *l.last().unwrap(),
    )
}

/// Peak RSS (kB) and CPU seconds of a process, from /proc.
fn usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    (hwm, ticks as f64 / 100.0)
}

async fn wait_accepted(stub: &twinzo_bridge::stub::StubHandle, n: usize, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while stub.stats().accepted < n as u64 {
        if Instant::now() > deadline {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "stand-in accepted {} of {n}; bridge log tail:\n{}",
                stub.stats().accepted,
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Ok(id) = std::env::var(SUBSCRIBER) {
        return plain_subscriber(id).await;
    }
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut rows: Vec<(String, String)> = Vec::new();

    // The ceiling's broker: the same configuration, no bridge on it.
    let plain = Broker::start();
    let me = std::process::id();

    let broker = Broker::start();
    let stop = CancellationToken::new();
    // The benchmark reads no request bodies: the stand-in need not parse each one again to
    // keep it.
    let stub = stack::start_stub_with(&stop, |c| c.max_recorded_requests = 0).await;
    stub.set_latency(Duration::from_millis(latency_ms()));
    let dir = tempfile::tempdir().unwrap();
    let mut env = stack::bridge_env(&broker, stub.addr, dir.path());
    // The product's retry settings, not the tests' short ones: the drain after an outage
    // depends on them.
    env.retain(|(k, _)| k != "BRIDGE_BATCH__MAX_AGE_MS" && !k.starts_with("BRIDGE_RETRY__"));
    env.push(("BRIDGE_BATCH__MAX_AGE_MS".into(), batch_ms().to_string()));
    if mode() == "api_key" {
        stack::api_key_mode(&mut env);
    }
    env.push(("BRIDGE_TWINZO__MAX_CONCURRENT_REQUESTS".into(), "32".into()));
    let bridge = BridgeProcess::start(env, dir.path());
    let pid = bridge.child.id();
    stack::wait_subscribed_http(bridge.http.expect("bridge listening"), None).await;

    // 3. Latency at 1,000 msg/s (100 robots at 10 Hz) and at 10,000 msg/s.
    for (rate, secs) in [(1_000u64, 20u64), (10_000, 10)] {
        let from = stub.accepted().len();
        let count = scaled(rate * secs);
        publish(&broker, &format!("pub-{rate}"), count, 100, rate).await;
        wait_accepted(&stub, from + count as usize, &bridge.log).await;
        let (p50, p99, max) = latencies(&stub, from);
        rows.push((
            format!(
                "Latency at {rate} msg/s, p50 / p99 / max (ms; flush every {} ms, Twinzo {} ms)",
                batch_ms(),
                latency_ms()
            ),
            format!("{p50} / {p99} / {max}"),
        ));
    }
    let (rss_kb, _) = usage(pid);
    rows.push((
        "Bridge peak RSS through 10,000 msg/s (MB)".into(),
        format!("{:.1}", rss_kb as f64 / 1024.0),
    ));

    // 1 and 2. The ceiling and the sustained rate, measured in turns (ceiling, bridge,
    // ceiling, bridge): the speed of a shared machine drifts by a quarter or more within
    // minutes, and each round's ratio compares two runs a few seconds apart.
    let n = scaled(300_000);
    let mut ceilings = Vec::new();
    let mut rates = Vec::new();
    let (mut spent_ceiling, mut spent_bridge) = (vec![0.0; 3], vec![0.0; 3]);
    for round in 1..=ROUNDS {
        let before = cpu_now(&[plain.pid().unwrap(), me]);
        let (rate, subscriber_cpu) = ceiling(&plain, round, n).await;
        ceilings.push(rate);
        let mut spent = cpu_per_100k(&before, n);
        spent.push(subscriber_cpu * 100_000.0 / n as f64);
        add(&mut spent_ceiling, &spent);

        // Publish as fast as the broker takes it; the rate of acceptance between the 10th
        // and 90th percentile of the run.
        let from = stub.stats().accepted;
        let before = cpu_now(&[pid, broker.pid().unwrap(), me]);
        let watcher = {
            let stub = stub.clone();
            tokio::spawn(async move {
                let mut window = Window::new(n);
                loop {
                    let count = stub.stats().accepted - from;
                    window.observe(count);
                    if count >= n * 9 / 10 {
                        return window.rate();
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        };
        let _ = publish(&broker, &format!("pub-max-{round}"), n, 100, 0).await;
        wait_accepted(&stub, (from + n) as usize, &bridge.log).await;
        rates.push(watcher.await.unwrap());
        add(&mut spent_bridge, &cpu_per_100k(&before, n));
    }
    let rounds = f64::from(ROUNDS);
    let ratios: Vec<String> = ceilings
        .iter()
        .zip(&rates)
        .map(|(c, r)| format!("{:.0} %", 100.0 * r / c))
        .collect();
    let ceiling = ceilings.iter().sum::<f64>() / rounds;
    let rate = rates.iter().sum::<f64>() / rounds;
    // The rates lead the table.
    let mut rates_rows: Vec<(String, String)> = Vec::new();
    let each = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    rates_rows.push((
        format!("Mosquitto ceiling, plain QoS 1 subscriber (msg/s, middle 80 % of the run; mean, then each of {ROUNDS} rounds)"),
        format!("{ceiling:.0} ({})", each(&ceilings)),
    ));
    rates_rows.push((
        "CPU s per 100,000 msgs in the ceiling runs: broker / publisher / plain subscriber".into(),
        format!(
            "{:.2} / {:.2} / {:.2}",
            spent_ceiling[0] / rounds,
            spent_ceiling[1] / rounds,
            spent_ceiling[2] / rounds
        ),
    ));
    rates_rows.push((
        "Bridge sustained end-to-end (msg/s, middle 80 % of the run; mean, then each round)".into(),
        format!("{rate:.0} ({})", each(&rates)),
    ));
    rates_rows.push((
        "Ratio to the ceiling (of the means, then each round's)".into(),
        format!("{:.0} % ({})", 100.0 * rate / ceiling, ratios.join(" / ")),
    ));
    rates_rows.push((
        "Bridge CPU seconds per 100,000 messages".into(),
        format!("{:.2}", spent_bridge[0] / rounds),
    ));
    rates_rows.push((
        "CPU s per 100,000 msgs in the sustained runs: broker / publisher and stand-in".into(),
        format!(
            "{:.2} / {:.2}",
            spent_bridge[1] / rounds,
            spent_bridge[2] / rounds
        ),
    ));

    rows.splice(0..0, rates_rows);

    let (rss_kb, _) = usage(pid);
    rows.push((
        "Bridge peak RSS after the full-speed flood (MB)".into(),
        format!("{:.1}", rss_kb as f64 / 1024.0),
    ));

    // 5. A 60 s outage at 1,000 msg/s, then the time to drain the backlog.
    let defaults = twinzo_bridge::config::RetryConfig::default();
    let outage = Duration::from_secs_f64(60.0 * scale().min(1.0)).max(Duration::from_secs(5));
    let from = stub.stats().accepted as usize;
    let count = (outage.as_secs() * 1_000) as usize;
    stub.fail_for(503, outage);
    let ended = Instant::now() + outage;
    publish(&broker, "pub-outage", count as u64, 100, 1_000).await;
    if let Some(wait) = ended.checked_duration_since(Instant::now()) {
        tokio::time::sleep(wait).await;
    }
    let recovered = Instant::now();
    wait_accepted(&stub, from + count, &bridge.log).await;
    rows.push((
        format!(
            "Drain of a {} s outage backlog at 1,000 msg/s (s; default retry, {} to {} ms)",
            outage.as_secs(),
            defaults.min_delay_ms,
            defaults.max_delay_ms
        ),
        format!("{:.1}", recovered.elapsed().as_secs_f64()),
    ));

    println!(
        "\ntwinzo-bridge benchmark: commit {commit}, {cores} cores, scale {}",
        scale()
    );
    println!("| measure | value |\n|---|---|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
    stop.cancel();
}
