//! scripts/demo.sh as CI runs it: the real broker, stand-in, bridge and simulator as separate
//! processes on ports the script picks. The test hands it the binary cargo already built
//! (`TWINZO_BRIDGE_BIN`), reads the URLs it prints, checks that locations of the simulated
//! robots reach the stand-in and that `/api/status` lists the robots, then that the script
//! stops every process it started and removes its temporary directory.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::repo_root;

/// Time for the script to start everything and print its URLs.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Time for the script to stop everything once asked (the bridge's grace is 5 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(45);

const ROBOTS: [&str; 5] = ["sim-01", "sim-02", "sim-03", "sim-04", "sim-05"];

/// A running demo.sh. Dropping it sends SIGTERM, which the script answers by stopping the
/// processes it started, so a failed test leaves nothing running.
struct Demo {
    child: Child,
    lines: Receiver<String>,
    dashboard: String,
    stub: String,
    pids: Vec<u32>,
    tmp: PathBuf,
}

impl Demo {
    fn start(args: &[&str]) -> Demo {
        support::require_tool("mosquitto");
        let mut child = Command::new("bash")
            .arg(repo_root().join("scripts/demo.sh"))
            .args(args)
            .env("TWINZO_BRIDGE_BIN", env!("CARGO_BIN_EXE_twinzo-bridge"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start demo.sh");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("{line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });

        let mut demo = Demo {
            child,
            lines,
            dashboard: String::new(),
            stub: String::new(),
            pids: Vec::new(),
            tmp: PathBuf::new(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while demo.pids.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = demo
                .lines
                .recv_timeout(left)
                .expect("demo.sh prints its URLs and pids");
            demo.read_line(&line);
        }
        assert!(!demo.dashboard.is_empty() && !demo.stub.is_empty());
        demo
    }

    /// Picks up `demo: dashboard URL`, `demo: stub URL`, `demo: accounts FILE` and
    /// `demo: pids name=pid ...`.
    fn read_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("demo: ") else {
            return;
        };
        let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
        let value = value.trim();
        match key {
            "dashboard" => self.dashboard = value.trim_end_matches('/').to_owned(),
            "stub" => {
                self.stub = value
                    .strip_suffix("/_stub/accepted")
                    .expect("stub URL ends in /_stub/accepted")
                    .to_owned();
            }
            "accounts" => self.tmp = Path::new(value).parent().unwrap().to_path_buf(),
            "pids" => {
                self.pids = value
                    .split_whitespace()
                    .map(|p| p.split_once('=').unwrap().1.parse().unwrap())
                    .collect();
            }
            _ => {}
        }
    }

    /// Waits for the script to exit by itself.
    fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "demo.sh still running after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Asserts that no process the script started is left and its directory is gone.
    fn assert_cleaned_up(&self) {
        for pid in &self.pids {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            assert!(
                !cmdline.contains("twinzo-bridge") && !cmdline.contains("mosquitto"),
                "process {pid} is still running: {cmdline}"
            );
        }
        assert!(
            !self.tmp.as_os_str().is_empty(),
            "no temporary directory printed"
        );
        assert!(!self.tmp.exists(), "{} was not removed", self.tmp.display());
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
            let deadline = Instant::now() + STOP_TIMEOUT;
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// Polls `url` until `pick` finds all of `ROBOTS` in the JSON, or panics after `timeout`.
async fn wait_for_robots(url: &str, timeout: Duration, pick: fn(&Value) -> BTreeSet<String>) {
    let client = reqwest::Client::new();
    let want: BTreeSet<String> = ROBOTS.iter().map(|r| (*r).to_owned()).collect();
    let deadline = Instant::now() + timeout;
    let mut seen = BTreeSet::new();
    while Instant::now() < deadline {
        if let Some(json) = get_json(&client, url).await {
            seen = pick(&json);
            if want.is_subset(&seen) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{url} showed {seen:?} within {timeout:?}, expected {want:?}");
}

fn accepted_logins(json: &Value) -> BTreeSet<String> {
    json.as_array()
        .into_iter()
        .flatten()
        .filter_map(|location| location["login"].as_str())
        .map(str::to_owned)
        .collect()
}

fn status_robots(json: &Value) -> BTreeSet<String> {
    json["robots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|robot| robot["device"].as_str())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_delivers_simulated_robots_and_stops_by_itself() {
    let mut demo = Demo::start(&["--duration", "20"]);

    let accepted = format!("{}/_stub/accepted", demo.stub);
    wait_for_robots(&accepted, Duration::from_secs(15), accepted_logins).await;
    let status = format!("{}/api/status", demo.dashboard);
    wait_for_robots(&status, Duration::from_secs(5), status_robots).await;

    let exit = demo.wait(Duration::from_secs(20) + STOP_TIMEOUT);
    assert!(exit.success(), "demo.sh exited with {exit}");
    demo.assert_cleaned_up();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_stops_everything_on_sigterm() {
    let mut demo = Demo::start(&[]);
    let client = reqwest::Client::new();
    assert!(get_json(&client, &format!("{}/api/status", demo.dashboard))
        .await
        .is_some());

    demo.terminate();

    let exit = demo.wait(STOP_TIMEOUT);
    assert_eq!(exit.code(), Some(143), "demo.sh exited with {exit}");
    demo.assert_cleaned_up();
}

#[test]
fn demo_refuses_a_bad_duration_before_starting_anything() {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/demo.sh"))
        .args(["--duration", "soon"])
        .stdin(Stdio::null())
        .output()
        .expect("run demo.sh");

    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--duration"));
}
