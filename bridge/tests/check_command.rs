//! `twinzo-bridge check` against a real broker and the stand-in: one PASS/FAIL line per step,
//! non-zero exit when any step fails, and the failing step named.

mod support;

use std::process::{Command, Output};

use support::stack;
use support::Broker;
use tokio_util::sync::CancellationToken;

fn check(env: &[(String, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_twinzo-bridge"))
        .arg("check")
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .expect("binary runs")
}

fn set(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    env.retain(|(k, _)| k != key);
    env.push((key.into(), value.into()));
}

fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_every_step_in_both_modes_and_names_the_failing_one() {
    let broker = Broker::start();
    let stop = CancellationToken::new();
    let stub = stack::start_stub(&stop).await;
    let dir = tempfile::tempdir().unwrap();
    let mut device = stack::bridge_env(&broker, stub.addr, dir.path());
    set(
        &mut device,
        "BRIDGE_DEVICES",
        r#"[{id = "tugger-01"}, {id = "tugger-02", login = "tugger-02"}]"#,
    );

    let out = tokio::task::spawn_blocking({
        let env = device.clone();
        move || check(&env)
    })
    .await
    .unwrap();
    let got = lines(&out);
    assert!(
        out.status.success(),
        "{got:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got[0].starts_with("PASS broker ws://127.0.0.1:"), "{got:?}");
    assert_eq!(got[1], "PASS twinzo login tugger-01: authenticated");
    assert_eq!(got[2], "PASS twinzo login tugger-02: authenticated");

    let mut wrong_device = device.clone();
    set(
        &mut wrong_device,
        "BRIDGE_TWINZO__DEVICE_PASSWORD",
        "not-the-device-password",
    );
    let out = tokio::task::spawn_blocking(move || check(&wrong_device))
        .await
        .unwrap();
    let got = lines(&out);
    assert_eq!(out.status.code(), Some(1), "{got:?}");
    assert!(got[0].starts_with("PASS broker"), "{got:?}");
    assert!(
        got[1].starts_with("FAIL twinzo login tugger-01: authenticate: Invalid login or password"),
        "{got:?}"
    );

    let mut wrong_mqtt = device.clone();
    set(
        &mut wrong_mqtt,
        "BRIDGE_MQTT__PASSWORD",
        "not-the-bridge-password",
    );
    let out = tokio::task::spawn_blocking(move || check(&wrong_mqtt))
        .await
        .unwrap();
    let got = lines(&out);
    assert_eq!(out.status.code(), Some(1), "{got:?}");
    assert!(
        got[0].starts_with("FAIL broker") && got[0].to_lowercase().contains("refused"),
        "{got:?}"
    );
    assert!(
        got[1].starts_with("PASS twinzo"),
        "later steps still run: {got:?}"
    );

    let mut api_key = stack::bridge_env(&broker, stub.addr, dir.path());
    stack::api_key_mode(&mut api_key);
    let out = tokio::task::spawn_blocking({
        let env = api_key.clone();
        move || check(&env)
    })
    .await
    .unwrap();
    let got = lines(&out);
    assert!(out.status.success(), "{got:?}");
    assert!(
        got[1].starts_with("PASS twinzo http://") && got[1].ends_with("API key accepted"),
        "{got:?}"
    );

    set(&mut api_key, "BRIDGE_TWINZO__API_KEY", "wrong-api-key-0000");
    let out = tokio::task::spawn_blocking(move || check(&api_key))
        .await
        .unwrap();
    let got = lines(&out);
    assert_eq!(out.status.code(), Some(1), "{got:?}");
    assert!(
        got[1].starts_with("FAIL twinzo") && got[1].contains("401"),
        "{got:?}"
    );
}
