//! The broker side: authentication, ACLs, durability and the refusals of `render-config.sh`,
//! checked against the system Mosquitto with real clients (rumqttc over WebSocket and TCP,
//! `mosquitto_pub`/`mosquitto_sub` over TCP), plus static checks of the deployment files.
//!
//! Where a test shows that something did not happen, it sends an allowed message right after
//! the forbidden one on the same path and checks that the allowed one arrives first, so the
//! test can fail instead of waiting out a timeout.

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rumqttc::{ConnectReturnCode, ConnectionError, QoS, SubscribeReasonCode};
use support::cli;
use support::mqtt::{self, connect_refused, Client, Via};
use support::{random_password, render_config, repo_root, tool_path, wait_until, Broker, Creds};

const STATUS_TOPIC: &str = "ati/tugger-01/status";
const WAIT: Duration = Duration::from_secs(10);

fn wrong_password(creds: &Creds) -> Creds {
    Creds {
        username: creds.username.clone(),
        password: random_password(),
    }
}

fn assert_not_authorised(err: &ConnectionError) {
    assert!(
        matches!(
            err,
            ConnectionError::ConnectionRefused(
                ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword
            )
        ),
        "expected a refused CONNACK, got {err:?}"
    );
}

/// Connects as `creds` over WebSocket and subscribes to `filter` at QoS 1.
async fn ws_subscriber(broker: &Broker, id: &str, creds: &Creds, filter: &str) -> Client {
    let mut client = Client::connect(mqtt::options(broker, Via::Ws, id, Some(creds)))
        .await
        .expect("subscriber connects");
    let granted = client.subscribe(filter, QoS::AtLeastOnce).await;
    assert_eq!(granted, SubscribeReasonCode::Success(QoS::AtLeastOnce));
    client
}

fn assert_published(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "mosquitto_pub failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// --- Authentication ----------------------------------------------------------------------

#[test]
fn anonymous_and_wrong_password_are_refused_over_tcp() {
    let broker = Broker::start();

    let anonymous = cli::publish(broker.mqtt_port, None, STATUS_TOPIC, "x");
    let wrong = cli::publish(
        broker.mqtt_port,
        Some(&wrong_password(&broker.publisher)),
        STATUS_TOPIC,
        "x",
    );
    for (case, out) in [("anonymous", anonymous), ("wrong password", wrong)] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{case} publish was accepted");
        assert!(
            stderr.contains("not authorised"),
            "{case}: unexpected error: {stderr}"
        );
    }

    // The same listener accepts the right password, so the refusals were about credentials.
    assert_published(&cli::publish(
        broker.mqtt_port,
        Some(&broker.publisher),
        STATUS_TOPIC,
        "x",
    ));
}

#[tokio::test]
async fn anonymous_and_wrong_password_are_refused_over_websocket() {
    let broker = Broker::start();

    let anonymous = connect_refused(mqtt::options(&broker, Via::Ws, "anon", None)).await;
    assert_not_authorised(&anonymous);
    let bad = wrong_password(&broker.bridge);
    let wrong = connect_refused(mqtt::options(&broker, Via::Ws, "wrong", Some(&bad))).await;
    assert_not_authorised(&wrong);

    let ok = mqtt::options(&broker, Via::Ws, "right", Some(&broker.bridge));
    Client::connect(ok)
        .await
        .expect("right password is accepted over WebSocket");
}

// --- Delivery ----------------------------------------------------------------------------

#[tokio::test]
async fn bridge_receives_publisher_message_over_websocket() {
    let broker = Broker::start();
    let mut bridge = ws_subscriber(&broker, "bridge", &broker.bridge, "ati/#").await;

    let opts = mqtt::options(&broker, Via::Ws, "tugger-01", Some(&broker.publisher));
    let mut robot = Client::connect(opts)
        .await
        .expect("publisher connects over WebSocket");
    robot
        .publish(STATUS_TOPIC, QoS::AtLeastOnce, b"{\"battery\":87}")
        .await;

    let got = bridge.next_publish(WAIT).await;
    assert_eq!(got.topic, STATUS_TOPIC);
    assert_eq!(&got.payload[..], b"{\"battery\":87}");
}

#[test]
fn bridge_receives_publisher_message_over_tcp() {
    let broker = Broker::start();
    cli::subscribe_durable(broker.mqtt_port, &broker.bridge, "bridge-tcp", "ati/#");
    let bridge = cli::receive_durable(
        broker.mqtt_port,
        &broker.bridge,
        "bridge-tcp",
        "ati/#",
        1,
        WAIT,
    );

    let out = cli::publish(
        broker.mqtt_port,
        Some(&broker.publisher),
        STATUS_TOPIC,
        "battery=87",
    );
    assert_published(&out);

    let got = bridge.finish(WAIT * 2);
    let stdout = String::from_utf8_lossy(&got.stdout);
    assert!(
        got.status.success(),
        "mosquitto_sub failed: {}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(stdout.trim_end(), format!("{STATUS_TOPIC} battery=87"));
}

// --- Access control ----------------------------------------------------------------------

#[tokio::test]
async fn publisher_cannot_publish_outside_its_filters() {
    let broker = Broker::start();
    let mut bridge = ws_subscriber(&broker, "bridge", &broker.bridge, "#").await;

    // Forbidden topics first, then an allowed control message; all at QoS 1, one after another.
    for topic in ["other/tugger-01/status", "bridge/status", "atix/tugger-01"] {
        assert_published(&cli::publish(
            broker.mqtt_port,
            Some(&broker.publisher),
            topic,
            "forbidden",
        ));
    }
    assert_published(&cli::publish(
        broker.mqtt_port,
        Some(&broker.publisher),
        "ati_fm/fleet",
        "control",
    ));

    let first = bridge.next_publish(WAIT).await;
    assert_eq!(
        (first.topic.as_str(), &first.payload[..]),
        ("ati_fm/fleet", &b"control"[..])
    );
}

#[tokio::test]
async fn publisher_filters_follow_mqtt_publish_topics() {
    let broker = Broker::start_with(&[("MQTT_PUBLISH_TOPICS", "fleet/+/status, yard/#")]);
    let mut bridge = ws_subscriber(&broker, "bridge", &broker.bridge, "#").await;

    let publish = |topic: &str, payload: &str| {
        assert_published(&cli::publish(
            broker.mqtt_port,
            Some(&broker.publisher),
            topic,
            payload,
        ));
    };
    publish(STATUS_TOPIC, "no longer allowed");
    publish("fleet/t1/battery", "not matched by the filter");
    publish("fleet/t1/status", "allowed");
    publish("yard/gate", "allowed too");

    let first = bridge.next_publish(WAIT).await;
    let second = bridge.next_publish(WAIT).await;
    assert_eq!(first.topic, "fleet/t1/status");
    assert_eq!(second.topic, "yard/gate");
}

#[tokio::test]
async fn publisher_cannot_read_anything() {
    let broker = Broker::start();
    let mut bridge = ws_subscriber(&broker, "bridge", &broker.bridge, "#").await;

    // Mosquitto 2.0 grants the subscription and filters at delivery, so what counts is
    // whether anything arrives.
    let opts = mqtt::options(&broker, Via::Ws, "nosy-robot", Some(&broker.publisher));
    let mut nosy = Client::connect(opts).await.expect("publisher connects");
    nosy.subscribe("#", QoS::AtLeastOnce).await;
    nosy.subscribe("ati/#", QoS::AtLeastOnce).await;

    assert_published(&cli::publish(
        broker.mqtt_port,
        Some(&broker.publisher),
        STATUS_TOPIC,
        "hello",
    ));
    let seen = bridge.next_publish(WAIT).await;
    assert_eq!(seen.topic, STATUS_TOPIC, "the message was routed");

    // Anything routed to the publisher before this round trip would have arrived by now.
    nosy.sync().await;
    assert!(
        nosy.received.is_empty(),
        "publisher read {:?}",
        nosy.received
    );
}

#[tokio::test]
async fn bridge_cannot_publish_to_ati_topics() {
    let broker = Broker::start();
    let mut watcher = ws_subscriber(&broker, "bridge-watch", &broker.bridge, "#").await;

    let opts = mqtt::options(&broker, Via::Ws, "bridge-pub", Some(&broker.bridge));
    let mut bridge = Client::connect(opts).await.expect("bridge connects");
    bridge
        .publish(STATUS_TOPIC, QoS::AtLeastOnce, b"spoofed")
        .await;
    bridge
        .publish("ati_fm/fleet", QoS::AtLeastOnce, b"spoofed")
        .await;
    bridge
        .publish("bridge/status", QoS::AtLeastOnce, b"online")
        .await;

    let first = watcher.next_publish(WAIT).await;
    assert_eq!(
        (first.topic.as_str(), &first.payload[..]),
        ("bridge/status", &b"online"[..])
    );
}

#[tokio::test]
async fn oversized_message_is_dropped() {
    let broker = Broker::start();
    let mut bridge = ws_subscriber(&broker, "bridge", &broker.bridge, "ati/#").await;

    let big = tempfile::NamedTempFile::new().expect("temp file");
    fs::write(big.path(), vec![b'a'; 300 * 1024]).expect("write payload");
    // Mosquitto disconnects the sender, so mosquitto_pub's exit status does not matter.
    cli::publish_file(
        broker.mqtt_port,
        Some(&broker.publisher),
        "ati/big",
        big.path(),
    );
    assert_published(&cli::publish(
        broker.mqtt_port,
        Some(&broker.publisher),
        STATUS_TOPIC,
        "small",
    ));

    let first = bridge.next_publish(WAIT).await;
    assert_eq!(first.topic, STATUS_TOPIC);
    assert!(
        broker.log().contains("oversize packet"),
        "log:\n{}",
        broker.log()
    );
}

// --- Durability --------------------------------------------------------------------------

/// Leaves a durable QoS 1 session for the bridge subscribed to `ati/#`, offline.
async fn park_durable_session(broker: &Broker, id: &str) {
    let mut opts = mqtt::options(broker, Via::Tcp, id, Some(&broker.bridge));
    opts.set_clean_session(false);
    let mut client = Client::connect(opts)
        .await
        .expect("durable client connects");
    client.subscribe("ati/#", QoS::AtLeastOnce).await;
    client.disconnect().await;
}

/// Reconnects the durable session and returns the first message waiting for it.
async fn resume_durable_session(broker: &Broker, id: &str) -> rumqttc::Publish {
    let mut opts = mqtt::options(broker, Via::Tcp, id, Some(&broker.bridge));
    opts.set_clean_session(false);
    let mut client = Client::connect(opts)
        .await
        .expect("durable client reconnects");
    assert!(client.connack.session_present, "broker lost the session");
    client.next_publish(WAIT).await
}

#[tokio::test]
async fn queued_message_for_offline_durable_session_survives_restart() {
    let mut broker = Broker::start();
    park_durable_session(&broker, "twinzo-bridge-durable").await;
    assert_published(&cli::publish(
        broker.mqtt_port,
        Some(&broker.publisher),
        STATUS_TOPIC,
        "queued",
    ));

    broker.stop();
    broker.start_again();

    let got = resume_durable_session(&broker, "twinzo-bridge-durable").await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        (STATUS_TOPIC, &b"queued"[..])
    );
    assert_eq!(got.qos, QoS::AtLeastOnce);
}

#[tokio::test]
async fn queued_message_survives_a_crash_once_autosaved() {
    let mut broker = Broker::start();
    park_durable_session(&broker, "twinzo-bridge-durable").await;
    assert_published(&cli::publish(
        broker.mqtt_port,
        Some(&broker.publisher),
        STATUS_TOPIC,
        "queued",
    ));

    // Mosquitto saves by writing a new file and renaming it, so a new inode means a save that
    // began after the message was acknowledged. The autosave interval is 5 s.
    let db = broker.data_dir.join("mosquitto.db");
    let inode = || fs::metadata(&db).map(|m| m.ino()).ok();
    let before = inode();
    wait_until(
        Duration::from_secs(15),
        "an autosave of mosquitto.db",
        || inode().is_some_and(|now| Some(now) != before),
    );

    broker.kill();
    broker.start_again();

    let got = resume_durable_session(&broker, "twinzo-bridge-durable").await;
    assert_eq!(&got.payload[..], b"queued");
}

// --- Health probe ------------------------------------------------------------------------

#[test]
fn probe_account_reads_uptime_through_the_container_health_check() {
    let broker = Broker::start();

    let mut cmd = Command::new("sh");
    cmd.arg(repo_root().join("mosquitto/healthcheck.sh"))
        .arg(broker.probe_env());
    let out = cli::run(&mut cmd, cli::CLIENT_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "health check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("seconds"), "unexpected uptime: {stdout}");
}

#[tokio::test]
async fn probe_account_reads_nothing_but_uptime() {
    let broker = Broker::start();
    let probe = broker.probe();
    assert_eq!(probe.username, "healthprobe");

    // $SYS topics are retained, so each subscription below would be answered at once with
    // whatever the ACL lets the probe see: uptime, and nothing else.
    let opts = mqtt::options(&broker, Via::Tcp, "probe", Some(&probe));
    let mut client = Client::connect(opts).await.expect("probe connects");
    for filter in [
        "$SYS/broker/version",
        "$SYS/#",
        "ati/#",
        "$SYS/broker/uptime",
    ] {
        client.subscribe(filter, QoS::AtMostOnce).await;
    }
    let first = client.next_publish(WAIT).await;
    assert_eq!(first.topic, "$SYS/broker/uptime");
    client.sync().await;
    let others: Vec<&str> = client.received.iter().map(|p| p.topic.as_str()).collect();
    assert!(
        others.iter().all(|t| *t == "$SYS/broker/uptime"),
        "probe read {others:?}"
    );

    // The bridge, allowed $SYS/#, gets the retained version at once.
    let mut bridge = ws_subscriber(&broker, "bridge", &broker.bridge, "$SYS/broker/version").await;
    let version = bridge.next_publish(WAIT).await;
    assert!(String::from_utf8_lossy(&version.payload).contains("mosquitto"));
}

// --- render-config.sh --------------------------------------------------------------------

/// A complete, valid environment for render-config.sh.
fn good_env() -> Vec<(String, String)> {
    [
        ("MQTT_USERNAME", "ati-fleet".to_owned()),
        ("MQTT_PASSWORD", random_password()),
        ("MQTT_BRIDGE_USERNAME", "twinzo-bridge".to_owned()),
        ("MQTT_BRIDGE_PASSWORD", random_password()),
        ("MOSQUITTO_DATA_DIR", "/tmp/unused-data".to_owned()),
        ("MOSQUITTO_RUN_USER", support::current_user()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Runs render-config.sh on `good_env` changed by `change` (`None` removes the variable).
fn render_changed(out_dir: &Path, change: &[(&str, Option<&str>)]) -> std::process::Output {
    let mut env = good_env();
    for (key, value) in change {
        env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            env.push(((*key).to_owned(), (*value).to_owned()));
        }
    }
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    render_config(out_dir, &pairs)
}

/// Asserts a refusal: non-zero exit, one line on stderr naming `variable`, no `secret` printed
/// and no password file written.
fn assert_refused(
    case: &str,
    out: &std::process::Output,
    variable: &str,
    secret: Option<&str>,
    dir: &Path,
) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{case}: accepted");
    assert_eq!(
        stderr.lines().count(),
        1,
        "{case}: stderr is not one line: {stderr:?}"
    );
    assert!(
        stderr.contains(variable),
        "{case}: {stderr:?} does not name {variable}"
    );
    if let Some(secret) = secret {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{case}: printed the password"
        );
    }
    assert!(
        !dir.join("passwd").exists(),
        "{case}: wrote a password file"
    );
}

#[test]
fn render_config_refuses_bad_passwords_naming_the_variable_without_printing_them() {
    support::require_tool("mosquitto_passwd");
    let cases: &[(&str, Option<&str>)] = &[
        ("missing", None),
        ("empty", Some("")),
        ("short", Some("Xk3-q9Lz7pW")),
        ("fifteen characters", Some("Xk3-q9Lz7pW2vB8")),
        ("ATI example", Some("ati_password_123")),
        ("example in capitals", Some("ATI_Password_123")),
        ("password", Some("password")),
        ("changeme", Some("changeme")),
        ("digits", Some("1234567890123456")),
        ("twenty digits", Some("12345678901234567890")),
        ("two lines", Some("Xk3-q9Lz7pW2vB8t\nsecond-line-here")),
    ];
    for var in ["MQTT_PASSWORD", "MQTT_BRIDGE_PASSWORD"] {
        for (case, value) in cases {
            let dir = tempfile::tempdir().expect("temp dir");
            let out = render_changed(dir.path(), &[(var, *value)]);
            let secret = value.filter(|v| !v.is_empty());
            assert_refused(&format!("{var} {case}"), &out, var, secret, dir.path());
        }
    }

    // A password equal to its user name, which must not be printed either.
    let user = "robot-fleet-account-01";
    for (user_var, pass_var) in [
        ("MQTT_USERNAME", "MQTT_PASSWORD"),
        ("MQTT_BRIDGE_USERNAME", "MQTT_BRIDGE_PASSWORD"),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = render_changed(
            dir.path(),
            &[(user_var, Some(user)), (pass_var, Some(user))],
        );
        assert_refused(
            &format!("{pass_var} equals {user_var}"),
            &out,
            pass_var,
            Some(user),
            dir.path(),
        );
    }
}

#[test]
fn render_config_refuses_user_names_that_would_break_passwd_or_acl() {
    support::require_tool("mosquitto_passwd");
    for var in ["MQTT_USERNAME", "MQTT_BRIDGE_USERNAME"] {
        for bad in [
            None,
            Some(""),
            Some("ati:fleet"),
            Some("ati fleet"),
            Some("ati\tfleet"),
            Some("healthprobe"),
        ] {
            let dir = tempfile::tempdir().expect("temp dir");
            let out = render_changed(dir.path(), &[(var, bad)]);
            assert_refused(&format!("{var}={bad:?}"), &out, var, None, dir.path());
        }
    }
}

#[test]
fn render_config_refuses_filters_that_reach_beyond_the_fleet() {
    support::require_tool("mosquitto_passwd");
    for bad in [
        "#", "+/status", "bridge/#", "$SYS/#", "ati/#/x", "ati/t+/x", "ati/#,", "ati /x",
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = render_changed(dir.path(), &[("MQTT_PUBLISH_TOPICS", Some(bad))]);
        assert_refused(
            &format!("filters {bad:?}"),
            &out,
            "MQTT_PUBLISH_TOPICS",
            None,
            dir.path(),
        );
    }
}

#[test]
fn render_config_writes_private_files_and_a_new_probe_password_each_time() {
    support::require_tool("mosquitto_passwd");
    let env = good_env();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let probe_password = |dir: &Path| {
        let text = fs::read_to_string(dir.join("probe.env")).expect("read probe.env");
        let line = text
            .lines()
            .find(|l| l.starts_with("PROBE_PASSWORD="))
            .expect("password line");
        line["PROBE_PASSWORD=".len()..].to_owned()
    };

    let first = tempfile::tempdir().expect("temp dir");
    let second = tempfile::tempdir().expect("temp dir");
    for dir in [first.path(), second.path()] {
        let out = render_config(dir, &pairs);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "render-config.sh printed something"
        );
        for file in ["mosquitto.conf", "passwd", "acl", "probe.env"] {
            let mode = fs::metadata(dir.join(file))
                .expect("rendered file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file} has mode {mode:o}");
        }
    }
    assert!(probe_password(first.path()).len() >= 32);
    assert_ne!(probe_password(first.path()), probe_password(second.path()));

    // The password file holds hashes only.
    let passwd = fs::read_to_string(first.path().join("passwd")).expect("read passwd");
    for (key, value) in &env {
        if key.ends_with("PASSWORD") {
            assert!(!passwd.contains(value.as_str()), "{key} stored in clear");
        }
    }
}

#[test]
fn rendered_listeners_bind_every_interface() {
    let broker = Broker::start();
    let conf = fs::read_to_string(broker.conf_dir().join("mosquitto.conf")).expect("read conf");
    for port in [broker.mqtt_port, broker.ws_port] {
        let line = format!("listener {port}");
        assert!(
            conf.lines().any(|l| l.trim_end() == line),
            "no bare `{line}` line"
        );
    }

    // Over IPv6 as well, where the host has an IPv6 loopback at all.
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        for port in [broker.mqtt_port, broker.ws_port] {
            let addr = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
            std::net::TcpStream::connect_timeout(&addr, WAIT).expect("connect over IPv6");
        }
    }
}

// --- Deployment files --------------------------------------------------------------------

#[test]
fn docker_compose_file_is_valid() {
    let compose = tool_path("docker-compose");
    let root = repo_root();

    // A throwaway copy with its own .env, so the repository never gets one.
    let dir = tempfile::tempdir().expect("temp dir");
    for file in ["docker-compose.yml", "Dockerfile.railway"] {
        fs::copy(root.join(file), dir.path().join(file)).expect("copy compose inputs");
    }
    let example = fs::read_to_string(root.join(".env.example")).expect("read .env.example");
    let env: String = example
        .lines()
        .map(|line| match line.split_once('=') {
            Some((key, "")) if key.ends_with("_PASSWORD") => {
                format!("{key}={}\n", random_password())
            }
            _ => format!("{line}\n"),
        })
        .collect();
    fs::write(dir.path().join(".env"), env).expect("write .env");

    let compose_config = |extra: &[&str]| {
        let mut cmd = Command::new(&compose);
        cmd.current_dir(dir.path())
            .args(["-f", "docker-compose.yml", "config"])
            .args(extra);
        let out = cli::run(&mut cmd, cli::CLIENT_TIMEOUT);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "docker-compose config {extra:?} failed: {stderr}"
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    };
    compose_config(&["-q"]);
    // The bridge and the demo services are checked in deploy_files.rs; here, the broker's part.
    assert!(compose_config(&["--services"])
        .lines()
        .any(|s| s == "broker"));
    assert!(compose_config(&["--volumes"])
        .lines()
        .any(|v| v == "mosquitto-data"));

    let full = compose_config(&[]);
    for needle in [
        "Dockerfile.railway",
        "mosquitto-data:/mosquitto/data",
        "/opt/broker/healthcheck.sh",
    ] {
        assert!(
            full.contains(needle),
            "compose config lacks {needle}:\n{full}"
        );
    }
}

#[test]
fn env_example_holds_no_passwords() {
    let example = fs::read_to_string(repo_root().join(".env.example")).expect("read .env.example");
    let mut password_keys = Vec::new();
    for line in example.lines().filter(|l| !l.trim_start().starts_with('#')) {
        if let Some((key, value)) = line.split_once('=') {
            if key.contains("PASSWORD") || key.contains("API_KEY") || key.contains("TOKEN") {
                password_keys.push(key.trim().to_string());
                assert!(value.trim().is_empty(), "{key} has a value in .env.example");
            }
        }
    }
    for key in ["MQTT_PASSWORD", "MQTT_BRIDGE_PASSWORD"] {
        assert!(
            password_keys.iter().any(|k| k == key),
            "{key} missing from .env.example"
        );
    }
}

#[test]
fn railway_json_builds_the_broker_from_its_dockerfile() {
    let root = repo_root();
    let text = fs::read_to_string(root.join("railway.json")).expect("read railway.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("railway.json is JSON");

    assert_eq!(json["build"]["builder"], "DOCKERFILE");
    let dockerfile = json["build"]["dockerfilePath"]
        .as_str()
        .expect("dockerfilePath");
    assert!(
        root.join(dockerfile).is_file(),
        "{dockerfile} does not exist"
    );
    let policy = json["deploy"]["restartPolicyType"]
        .as_str()
        .expect("restart policy");
    assert!(
        ["ALWAYS", "ON_FAILURE"].contains(&policy),
        "restart policy {policy}"
    );
    // The broker serves no HTTP, so an HTTP health check could never pass.
    assert!(json["deploy"].get("healthcheckPath").is_none());
}

#[test]
fn dockerfile_pins_mosquitto_and_copies_existing_files() {
    let root = repo_root();
    let text = fs::read_to_string(root.join("Dockerfile.railway")).expect("read Dockerfile");
    let instructions: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();

    let from = instructions
        .iter()
        .find(|l| l.starts_with("FROM "))
        .expect("FROM line");
    let tag = from.trim_start_matches("FROM eclipse-mosquitto:");
    let parts: Vec<&str> = tag.split('.').collect();
    assert!(
        parts.len() == 3 && parts[0] == "2" && parts.iter().all(|p| p.parse::<u32>().is_ok()),
        "base image is not an exact eclipse-mosquitto 2.x.y tag: {from}"
    );

    // Railway refuses Dockerfiles with VOLUME; its own volume is attached instead.
    assert!(
        !instructions.iter().any(|l| l.starts_with("VOLUME")),
        "VOLUME breaks Railway builds"
    );
    for needle in ["HEALTHCHECK", "EXPOSE 1883 9001", "ENTRYPOINT"] {
        assert!(
            instructions.iter().any(|l| l.contains(needle)),
            "no {needle}"
        );
    }
    let words = instructions.iter().flat_map(|l| l.split_whitespace());
    for source in words.filter(|w| w.starts_with("mosquitto/")) {
        assert!(
            root.join(source).is_file(),
            "COPY source {source} does not exist"
        );
    }
}
