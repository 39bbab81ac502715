//! The whole chain for bridge tests: a real Mosquitto (project config), the Twinzo stand-in
//! (in process), and the bridge either in process ([`start_bridge`]) or as a child process
//! ([`BridgeProcess`]), plus a QoS 1 publisher that counts broker acknowledgements.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use tokio_util::sync::CancellationToken;
use twinzo_bridge::config::Config;
use twinzo_bridge::stub::{self, AcceptedLocation, StubConfig, StubHandle};

use super::Broker;

pub const STUB_PASSWORD: &str = "stub-device-password";
pub const STUB_API_KEY: &str = "stub-api-key-0123456789";

/// Starts the stand-in on a free port, knowing `tugger-*` and `sim-*` devices.
pub async fn start_stub(shutdown: &CancellationToken) -> StubHandle {
    start_stub_with(shutdown, |_| {}).await
}

/// [`start_stub`], with `adjust` applied to its configuration first.
pub async fn start_stub_with(
    shutdown: &CancellationToken,
    adjust: impl FnOnce(&mut StubConfig),
) -> StubHandle {
    let mut config = StubConfig {
        api_key: Some(STUB_API_KEY.into()),
        device_password: Some(STUB_PASSWORD.into()),
        devices: Vec::new(),
        device_globs: vec![
            "tugger-*".into(),
            "sim-*".into(),
            "KIT/*".into(),
            "bot-*".into(),
        ],
        ..StubConfig::default()
    };
    adjust(&mut config);
    stub::spawn(config, "127.0.0.1:0".parse().unwrap(), shutdown.clone())
        .await
        .expect("stub starts")
}

/// Bridge settings for this broker and stand-in, as environment variables (device mode).
pub fn bridge_env(broker: &Broker, stub_addr: SocketAddr, dir: &Path) -> Vec<(String, String)> {
    let pairs = [
        ("BRIDGE_MQTT__URL", broker.ws_url()),
        ("BRIDGE_MQTT__USERNAME", broker.bridge.username.clone()),
        ("BRIDGE_MQTT__PASSWORD", broker.bridge.password.clone()),
        ("BRIDGE_MQTT__CLIENT_ID", "bridge-under-test".into()),
        ("BRIDGE_TWINZO__BASE_URL", format!("http://{stub_addr}")),
        ("BRIDGE_TWINZO__CLIENT", "demo".into()),
        ("BRIDGE_TWINZO__DEVICE_PASSWORD", STUB_PASSWORD.into()),
        ("BRIDGE_TWINZO__SECTOR_ID", "1".into()),
        ("BRIDGE_HTTP__LISTEN", "127.0.0.1:0".into()),
        (
            "BRIDGE_OUTBOX__PATH",
            dir.join("outbox.redb").display().to_string(),
        ),
        ("BRIDGE_BATCH__MAX_AGE_MS", "100".into()),
        ("BRIDGE_RETRY__MIN_DELAY_MS", "50".into()),
        ("BRIDGE_RETRY__MAX_DELAY_MS", "1000".into()),
    ];
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Switches an environment to API-key mode.
pub fn api_key_mode(env: &mut Vec<(String, String)>) {
    env.push(("BRIDGE_TWINZO__AUTH".into(), "api_key".into()));
    env.push(("BRIDGE_TWINZO__API_KEY".into(), STUB_API_KEY.into()));
    env.push((
        "BRIDGE_TWINZO__CLIENT_GUID".into(),
        stub::DEFAULT_CLIENT_GUID.to_string(),
    ));
    env.push((
        "BRIDGE_TWINZO__BRANCH_GUID".into(),
        stub::DEFAULT_BRANCH_GUID.to_string(),
    ));
}

pub fn load(env: &[(String, String)], file: Option<&Path>) -> Config {
    Config::load_from(file, env.to_vec()).unwrap_or_else(|e| panic!("test config invalid:\n{e}"))
}

/// A bridge running in this process.
pub struct InProcess {
    pub running: twinzo_bridge::app::Running,
    pub shutdown: CancellationToken,
}

impl InProcess {
    pub fn base(&self) -> String {
        format!("http://{}", self.running.http_addr)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.running
            .done
            .await
            .expect("bridge task")
            .expect("bridge stops cleanly");
    }
}

pub async fn start_bridge(config: Config) -> InProcess {
    let shutdown = CancellationToken::new();
    let running = twinzo_bridge::app::start(config, shutdown.clone())
        .await
        .expect("bridge starts");
    InProcess { running, shutdown }
}

/// Waits (polling, with a deadline) until `f` holds.
pub async fn eventually(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the bridge says it is subscribed.
pub async fn wait_subscribed(state: &twinzo_bridge::state::State) {
    eventually(Duration::from_secs(20), "bridge subscribed", || {
        let s = state.snapshot(0);
        s.broker.connected && s.broker.subscribed
    })
    .await;
}

/// Publishes every message at QoS 1 over WebSocket as the robot publisher and returns once
/// the broker acknowledged all of them. A durable session keeps unacknowledged messages
/// across a broker restart.
pub async fn publish(broker: &Broker, client_id: &str, messages: &[(String, Vec<u8>)]) {
    let mut opts = MqttOptions::new(client_id, broker.ws_url(), broker.ws_port);
    opts.set_transport(Transport::Ws)
        .set_credentials(
            broker.publisher.username.clone(),
            broker.publisher.password.clone(),
        )
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(false)
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_inflight(100);
    let (client, mut events) = AsyncClient::new(opts, messages.len().max(1) + 10);
    for (topic, payload) in messages {
        client
            .try_publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
            .expect("queued");
    }
    let mut acked = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked < messages.len() {
        assert!(
            Instant::now() < deadline,
            "broker acked {acked} of {}",
            messages.len()
        );
        match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(_) => panic!("no broker event for 10 s with {acked} acked"),
        }
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while events.poll().await.is_ok() {}
    })
    .await;
}

/// An ATI sherpa status with a unique payload timestamp.
pub fn ati(robot: &str, seq: u64, pose: &[f64], battery: f64) -> (String, Vec<u8>) {
    let ts = chrono::DateTime::from_timestamp_millis(1_730_000_000_000 + seq as i64).unwrap();
    let body = serde_json::json!({
        "sherpa_name": robot, "mode": "fleet", "error": "", "disabled": false, "disabled_reason": "",
        "pose": pose, "battery_status": battery, "trip_id": 1, "trip_leg_id": 2,
        "timestamp": ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "message_id": format!("{robot}-{seq}"),
    });
    (format!("ati/{robot}/status"), body.to_string().into_bytes())
}

/// The distinct (login, timestamp) pairs the stand-in accepted.
pub fn distinct(accepted: &[AcceptedLocation]) -> BTreeSet<(String, i64)> {
    accepted
        .iter()
        .map(|a| (a.login.clone(), a.timestamp))
        .collect()
}

/// The bridge binary as a child process, for crash and signal tests.
pub struct BridgeProcess {
    pub child: Child,
    pub log: PathBuf,
    pub http: Option<SocketAddr>,
    env: Vec<(String, String)>,
    runs: usize,
}

impl BridgeProcess {
    pub fn start(env: Vec<(String, String)>, log_dir: &Path) -> BridgeProcess {
        Self::start_with_log_level(env, log_dir, "info")
    }

    /// Starts with `RUST_LOG` set to `level`.
    pub fn start_with_log_level(
        mut env: Vec<(String, String)>,
        log_dir: &Path,
        level: &str,
    ) -> BridgeProcess {
        env.push(("RUST_LOG".into(), level.into()));
        let mut p = BridgeProcess {
            child: spawn(&env, &log_dir.join("bridge-0.log")),
            log: log_dir.join("bridge-0.log"),
            http: None,
            env,
            runs: 1,
        };
        p.http = wait_listening(&p.log);
        p
    }

    /// Starts the process again with the same settings (after a kill or an exit).
    pub fn restart(&mut self) {
        let log = self.log.with_file_name(format!("bridge-{}.log", self.runs));
        self.runs += 1;
        self.child = spawn(&self.env, &log);
        self.log = log;
        self.http = wait_listening(&self.log);
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit; returns how long it took and the status.
    pub fn terminate(&mut self, limit: Duration) -> (Duration, std::process::ExitStatus) {
        let started = Instant::now();
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (started.elapsed(), status);
            }
            assert!(
                started.elapsed() < limit,
                "bridge still running {limit:?} after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn all_logs(&self) -> String {
        let dir = self.log.parent().unwrap();
        (0..self.runs)
            .map(|i| {
                std::fs::read_to_string(dir.join(format!("bridge-{i}.log"))).unwrap_or_default()
            })
            .collect()
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `twinzo-bridge retire` with these settings until it exits (at most `limit`);
/// returns its status and its log.
pub async fn retire(
    env: &[(String, String)],
    log: &Path,
    limit: Duration,
) -> (std::process::ExitStatus, String) {
    let mut child = spawn_command("retire", env, log);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!(
                "retire still running after {limit:?}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    (status, std::fs::read_to_string(log).unwrap_or_default())
}

fn spawn(env: &[(String, String)], log: &Path) -> Child {
    spawn_command("run", env, log)
}

fn spawn_command(command: &str, env: &[(String, String)], log: &Path) -> Child {
    let file = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_twinzo-bridge"))
        .arg(command)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().cloned())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("bridge binary starts")
}

/// Reads the HTTP address from the log line `http listening addr=...`.
fn wait_listening(log: &Path) -> Option<SocketAddr> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("http listening")) {
            let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
            return addr.parse().ok();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Polls a bridge's `/api/status` until it reports the broker subscription.
pub async fn wait_subscribed_http(addr: SocketAddr, token: Option<&str>) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut request = client.get(format!("http://{addr}/api/status"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Ok(response) = request.send().await {
            if let Ok(status) = response.json::<serde_json::Value>().await {
                if status["broker"]["subscribed"] == serde_json::Value::Bool(true) {
                    return;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "bridge at {addr} not subscribed within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n` ATI messages spread over `robots` robots, each with a unique payload time.
pub fn fleet_stream(n: u64, robots: u64) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let robot = format!("bot-{:03}", i % robots);
            let step = (i / robots) as f64;
            ati(
                &robot,
                i,
                &[step * 0.1, (i % robots) as f64, 0.0],
                90.0 - (step % 80.0),
            )
        })
        .collect()
}

/// Publishes `messages` at about `rate` per second at QoS 1 with a durable session, counting
/// broker acknowledgements into `acked`; survives broker restarts (rumqttc resends in-flight
/// messages after reconnecting). Returns when every message was acknowledged.
pub async fn publish_stream(
    broker_ws_url: String,
    broker_ws_port: u16,
    publisher: super::Creds,
    client_id: String,
    messages: Vec<(String, Vec<u8>)>,
    rate: u64,
    acked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering;
    let mut opts = MqttOptions::new(client_id, broker_ws_url, broker_ws_port);
    opts.set_transport(Transport::Ws)
        .set_credentials(publisher.username, publisher.password)
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(false)
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_inflight(200);
    let (client, mut events) = AsyncClient::new(opts, 1000);
    let total = messages.len();
    let counter = acked.clone();
    let poller = tokio::spawn(async move {
        while counter.load(Ordering::Relaxed) < total {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while events.poll().await.is_ok() {}
        })
        .await;
    });
    let started = Instant::now();
    for (i, (topic, payload)) in messages.into_iter().enumerate() {
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish queued");
    }
    tokio::time::timeout(Duration::from_secs(300), poller)
        .await
        .expect("broker acknowledged every message within 300 s")
        .expect("publisher task");
    let _ = client.try_disconnect();
}
