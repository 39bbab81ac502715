//! The binary's configuration handling: a bad config is one line per problem on stderr naming
//! the key and its origin, exit code 64; `check-config` masks secrets; a running bridge never
//! logs a secret, even at trace level.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use support::stack::{self, ati, eventually, publish};
use support::Broker;
use tokio_util::sync::CancellationToken;

fn bridge(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_twinzo-bridge"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("binary runs")
}

const GOOD: [(&str, &str); 5] = [
    ("BRIDGE_MQTT__USERNAME", "bridge"),
    ("BRIDGE_MQTT__PASSWORD", "bridge-secret-password-1"),
    ("BRIDGE_TWINZO__CLIENT", "acme"),
    ("BRIDGE_TWINZO__DEVICE_PASSWORD", "device-secret-password-2"),
    ("BRIDGE_TWINZO__SECTOR_ID", "1"),
];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env: Vec<_> = GOOD.to_vec();
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        if !v.is_empty() {
            env.push((k, v));
        }
    }
    env
}

fn assert_refused(env: &[(&str, &str)], key_line: &str) {
    let out = bridge(&["check-config"], env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr: {stderr}");
    assert!(
        stderr.lines().any(|l| l.starts_with(key_line)),
        "no line starting {key_line:?} in:\n{stderr}"
    );
    assert!(out.stdout.is_empty());
    for (_, secret) in GOOD.iter().filter(|(k, _)| k.contains("PASSWORD")) {
        assert!(!stderr.contains(secret), "secret printed");
    }
}

#[test]
fn bad_url_scheme_exits_64_naming_the_key() {
    assert_refused(
        &with(&[("BRIDGE_MQTT__URL", "http://broker:9001/mqtt")]),
        "config error: mqtt.url (BRIDGE_MQTT__URL): unsupported scheme",
    );
}

#[test]
fn wss_without_tls_exits_64() {
    assert_refused(
        &with(&[
            ("BRIDGE_MQTT__URL", "wss://broker.example.com/mqtt"),
            ("BRIDGE_MQTT__TLS", "false"),
        ]),
        "config error: mqtt.tls (BRIDGE_MQTT__TLS)",
    );
    assert_refused(
        &with(&[
            ("BRIDGE_MQTT__URL", "ws://broker:9001/mqtt"),
            ("BRIDGE_MQTT__TLS", "true"),
        ]),
        "config error: mqtt.tls",
    );
}

#[test]
fn missing_password_exits_64() {
    assert_refused(
        &with(&[("BRIDGE_MQTT__PASSWORD", "")]),
        "config error: mqtt.password (default): required",
    );
    assert_refused(
        &with(&[("BRIDGE_TWINZO__DEVICE_PASSWORD", "")]),
        "config error: twinzo.device_password",
    );
}

#[test]
fn unknown_format_in_a_file_exits_64_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bridge.toml");
    std::fs::write(
        &file,
        "[[routes]]\nfilter = \"plant/#\"\nformat = \"xml\"\n",
    )
    .unwrap();
    let out = bridge(&["--config", file.to_str().unwrap(), "check-config"], &GOOD);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("routes") && stderr.contains("xml") && stderr.contains("bridge.toml"),
        "{stderr}"
    );
}

#[test]
fn several_problems_are_reported_together_one_line_each() {
    let out = bridge(&["check-config"], &[("BRIDGE_MQTT__URL", "ftp://x")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr.lines().count() >= 4, "{stderr}");
    assert!(
        stderr.lines().all(|l| l.starts_with("config error: ")),
        "{stderr}"
    );
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_masked() {
    let out = bridge(
        &["check-config"],
        &with(&[("BRIDGE_HTTP__AUTH_TOKEN", "http-token-secret-3")]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("client = \"acme\"") && text.contains("password = \"****\""),
        "{text}"
    );
    for secret in [
        "bridge-secret-password-1",
        "device-secret-password-2",
        "http-token-secret-3",
    ] {
        assert!(!text.contains(secret), "{secret} printed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_log_even_at_trace() {
    let broker = Broker::start();
    let stop = CancellationToken::new();
    let stub = stack::start_stub(&stop).await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = stack::bridge_env(&broker, stub.addr, dir.path());
    env.push(("BRIDGE_LOG__LEVEL".into(), "trace".into()));
    env.push((
        "BRIDGE_HTTP__AUTH_TOKEN".into(),
        "http-token-secret-4".into(),
    ));
    let secrets: Vec<String> = env
        .iter()
        .filter(|(k, _)| k.contains("PASSWORD") || k.contains("TOKEN"))
        .map(|(_, v)| v.clone())
        .collect();
    let mut process = stack::BridgeProcess::start_with_log_level(env, dir.path(), "trace");
    let addr = process.http.expect("bridge listening");
    stack::wait_subscribed_http(addr, Some("http-token-secret-4")).await;
    publish(
        &broker,
        "pub-secrets",
        &[ati("tugger-01", 1, &[1.0, 2.0, 0.0], 50.0)],
    )
    .await;
    eventually(Duration::from_secs(30), "a delivery", || {
        !stub.accepted().is_empty()
    })
    .await;
    process.terminate(Duration::from_secs(20));
    let log = process.all_logs();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "trace logging was on: {} bytes",
        log.len()
    );
    for secret in &secrets {
        let line = log
            .lines()
            .find(|l| l.contains(secret.as_str()))
            .map(|l| l.replace(secret.as_str(), "<SECRET>"));
        assert!(
            line.is_none(),
            "a secret appeared in the log: {}",
            line.unwrap_or_default()
                .chars()
                .take(300)
                .collect::<String>()
        );
    }
}
