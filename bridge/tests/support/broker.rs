//! A real Mosquitto for one test: configuration rendered by `mosquitto/render-config.sh`, the
//! same script the container runs, in a temporary directory that also holds the persistence
//! data and the broker's log.
//!
//! Tests usually run as root (here and in CI). Mosquitto started as root switches to the account
//! named by the rendered `user` line, which could not read a root-owned temporary directory, so
//! the harness sets `MOSQUITTO_RUN_USER` to the account running the tests: as root, Mosquitto
//! then stays root (and logs a warning); as anyone else the line has no effect.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{current_user, free_port, random_password, repo_root, tool_path, wait_until, Creds};

/// How long a broker gets to open its listeners or to exit.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts at starting with fresh ports when another process took one of them meanwhile.
const START_ATTEMPTS: usize = 3;

/// One running (or stopped) Mosquitto with its own ports, configuration and data directory.
pub struct Broker {
    pub mqtt_port: u16,
    pub ws_port: u16,
    pub publisher: Creds,
    pub bridge: Creds,
    pub data_dir: PathBuf,
    child: Option<Child>,
    conf_dir: PathBuf,
    log_path: PathBuf,
    // Declared last so that the directory outlives the child, which Drop kills first.
    _tempdir: TempDir,
}

impl Broker {
    /// Starts a broker with random strong passwords and the default topic filters.
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// Like [`Broker::start`], with `env` added to (or overriding) what render-config.sh gets,
    /// for example `("MQTT_PUBLISH_TOPICS", "fleet/#")`.
    pub fn start_with(env: &[(&str, &str)]) -> Broker {
        tool_path("mosquitto");
        tool_path("mosquitto_passwd");

        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let mut broker = Broker::render(env);
            if broker.try_spawn() {
                return broker;
            }
            last_log = broker.log();
        }
        panic!("mosquitto did not start after {START_ATTEMPTS} attempts; last log:\n{last_log}");
    }

    /// Sends SIGTERM, on which Mosquitto saves its database, and waits for the process to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM failed");

        wait_until(SHUTDOWN_TIMEOUT, "mosquitto to exit after SIGTERM", || {
            child.try_wait().expect("wait for mosquitto").is_some()
        });
    }

    /// Starts Mosquitto again on the same ports, with the same configuration and data directory.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "start_again called while the broker is running"
        );
        assert!(
            self.try_spawn(),
            "mosquitto did not start again; log:\n{}",
            self.log()
        );
    }

    /// Kills Mosquitto with SIGKILL, as a crash or an impatient orchestrator would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The broker's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The WebSocket URL, in the form rumqttc expects.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/mqtt", self.ws_port)
    }

    /// The plain MQTT URL.
    pub fn tcp_url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.mqtt_port)
    }

    /// Everything Mosquitto wrote to stdout and stderr so far, across restarts.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The directory holding the rendered mosquitto.conf, passwd, acl and probe.env.
    pub fn conf_dir(&self) -> &Path {
        &self.conf_dir
    }

    /// The file the container health check reads.
    pub fn probe_env(&self) -> PathBuf {
        self.conf_dir.join("probe.env")
    }

    /// The health probe's account, read from probe.env.
    pub fn probe(&self) -> Creds {
        let text = fs::read_to_string(self.probe_env()).expect("read probe.env");
        let value = |key: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("probe.env has no {key}"))
                .to_owned()
        };
        Creds {
            username: value("PROBE_USERNAME"),
            password: value("PROBE_PASSWORD"),
        }
    }

    /// Whether the Mosquitto process is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().expect("poll mosquitto").is_none(),
            None => false,
        }
    }

    /// Renders a configuration on fresh ports into a fresh temporary directory.
    fn render(overrides: &[(&str, &str)]) -> Broker {
        let tempdir = tempfile::Builder::new()
            .prefix("twinzo-broker-")
            .tempdir()
            .expect("create temporary directory");
        let conf_dir = tempdir.path().join("config");
        let default_data_dir = tempdir.path().join("data");
        fs::create_dir(&default_data_dir).expect("create data directory");

        let mut env = BTreeMap::new();
        let mut set = |key: &str, value: String| env.insert(key.to_owned(), value);
        set("MQTT_USERNAME", "ati-fleet".to_owned());
        set("MQTT_PASSWORD", random_password());
        set("MQTT_BRIDGE_USERNAME", "twinzo-bridge".to_owned());
        set("MQTT_BRIDGE_PASSWORD", random_password());
        set("MQTT_PORT", free_port().to_string());
        set("MQTT_WS_PORT", free_port().to_string());
        set("MOSQUITTO_DATA_DIR", default_data_dir.display().to_string());
        set("MOSQUITTO_RUN_USER", current_user());
        for (key, value) in overrides {
            env.insert((*key).to_owned(), (*value).to_owned());
        }

        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let out = render_config(&conf_dir, &pairs);
        assert!(
            out.status.success(),
            "render-config.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let port = |key: &str| env[key].parse::<u16>().expect("numeric port");
        let creds = |user: &str, pass: &str| Creds {
            username: env[user].clone(),
            password: env[pass].clone(),
        };
        let data_dir = PathBuf::from(&env["MOSQUITTO_DATA_DIR"]);
        fs::create_dir_all(&data_dir).expect("create data directory");

        Broker {
            mqtt_port: port("MQTT_PORT"),
            ws_port: port("MQTT_WS_PORT"),
            publisher: creds("MQTT_USERNAME", "MQTT_PASSWORD"),
            bridge: creds("MQTT_BRIDGE_USERNAME", "MQTT_BRIDGE_PASSWORD"),
            data_dir,
            child: None,
            log_path: tempdir.path().join("mosquitto.log"),
            conf_dir,
            _tempdir: tempdir,
        }
    }

    /// Spawns Mosquitto and waits until it reports itself running and both listeners accept
    /// TCP connections. Returns false when the process exited first (typically because a port
    /// was taken). The log check matters: another test's broker could be answering on a port
    /// this one failed to bind.
    fn try_spawn(&mut self) -> bool {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open broker log");
        let log_start = log.metadata().expect("log metadata").len() as usize;
        let stderr = log.try_clone().expect("clone log handle");
        let child = Command::new(tool_path("mosquitto"))
            .arg("-c")
            .arg(self.conf_dir.join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);

        let ports = [self.mqtt_port, self.ws_port];
        let mut exited = false;
        wait_until(STARTUP_TIMEOUT, "mosquitto to accept connections", || {
            if !self.is_running() {
                exited = true;
                return true;
            }
            let log = self.log();
            let running = log
                .get(log_start..)
                .is_some_and(|new| new.contains(" running"));
            running && ports.iter().all(|&port| accepts_tcp(port))
        });
        if exited {
            self.child = None;
        }
        !exited
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn accepts_tcp(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Runs `mosquitto/render-config.sh OUT_DIR` with exactly `env` (plus `PATH`), so that nothing
/// from the caller's environment leaks into the result.
pub fn render_config(out_dir: &Path, env: &[(&str, &str)]) -> Output {
    let script = repo_root().join("mosquitto/render-config.sh");
    let path = std::env::var("PATH").unwrap_or_default();
    Command::new("sh")
        .arg(script)
        .arg(out_dir)
        .env_clear()
        .env("PATH", format!("{path}:/usr/local/sbin:/usr/sbin:/sbin"))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run render-config.sh")
}
