//! Every HTTP route of a real bridge (in process), with a real Mosquitto and the Twinzo
//! stand-in: `/live`, `/ready` (and how it follows the broker), `/metrics` (checked by a strict
//! exposition-format parser), `/api/status`, `/api/events`, the dashboard at `/`, and the
//! optional token in its three forms.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE};
use reqwest::StatusCode;
use serde_json::Value;
use support::stack::{self, ati, publish, InProcess};
use support::Broker;
use tokio_util::sync::CancellationToken;
use twinzo_bridge::stub::StubHandle;

const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "dashboard-token-7f3a9c";

/// A broker, the stand-in and a bridge between them.
struct Stack {
    broker: Broker,
    stub: StubHandle,
    bridge: InProcess,
    stop: CancellationToken,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Device mode without a device table: Twinzo is verified by the first delivery.
    Device,
    /// API-key mode: the key is probed at start.
    ApiKey,
}

impl Stack {
    async fn start(mode: Mode, extra: &[(&str, &str)]) -> Stack {
        Stack::start_with(Broker::start(), mode, extra).await
    }

    async fn start_with(broker: Broker, mode: Mode, extra: &[(&str, &str)]) -> Stack {
        let stop = CancellationToken::new();
        let stub = stack::start_stub(&stop).await;
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut env = stack::bridge_env(&broker, stub.addr, dir.path());
        if mode == Mode::ApiKey {
            stack::api_key_mode(&mut env);
        }
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let bridge = stack::start_bridge(stack::load(&env, None)).await;
        Stack {
            broker,
            stub,
            bridge,
            stop,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.bridge.base())
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = self.http.get(self.url(path)).send().await.expect("GET");
        let status = response.status();
        (status, response.text().await.expect("body"))
    }

    /// Polls `path` until it answers `want`; returns the body.
    async fn until_status(&self, path: &str, want: StatusCode) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, body) = self.get(path).await;
            if status == want {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path} still answers {status} ({body:?}) after {WAIT:?}, want {want}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn status_json(&self) -> Value {
        let (status, body) = self.get("/api/status").await;
        assert_eq!(status, StatusCode::OK, "/api/status: {body}");
        serde_json::from_str(&body).expect("/api/status is JSON")
    }

    async fn stop(self) {
        self.bridge.stop().await;
        self.stop.cancel();
    }
}

// ---------------------------------------------------------------------------------------------
// /live and /ready

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_waits_for_the_broker_subscription_and_a_twinzo_delivery() {
    // The broker is down when the bridge starts, so the first answer cannot race ahead.
    let mut broker = Broker::start();
    broker.stop();
    let stack = Stack::start_with(broker, Mode::Device, &[]).await;

    assert_eq!(stack.get("/live").await, (StatusCode::OK, "live\n".into()));
    let (status, body) = stack.get("/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.starts_with("not ready: broker not connected"),
        "{body:?}"
    );

    let mut stack = stack;
    stack.broker.start_again();
    stack::wait_subscribed(&stack.bridge.running.state).await;
    let (status, body) = stack.get("/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body:?}");
    assert!(
        body.starts_with("not ready: twinzo not reachable"),
        "subscribed, but no delivery yet: {body:?}"
    );

    publish(
        &stack.broker,
        "pub-ready",
        &[ati("tugger-01", 1, &[1.0, 2.0, 0.0], 80.0)],
    )
    .await;
    let body = stack.until_status("/ready", StatusCode::OK).await;
    assert_eq!(body, "ready\n");
    assert_eq!(stack.stub.accepted().len(), 1);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_turns_503_while_the_broker_is_down_and_200_when_it_returns() {
    let mut stack = Stack::start(Mode::ApiKey, &[]).await;
    stack.until_status("/ready", StatusCode::OK).await;

    stack.broker.stop();
    let body = stack
        .until_status("/ready", StatusCode::SERVICE_UNAVAILABLE)
        .await;
    assert!(
        body.starts_with("not ready: broker not connected"),
        "{body:?}"
    );
    assert_eq!(
        stack.get("/live").await.0,
        StatusCode::OK,
        "/live does not follow the broker"
    );

    stack.broker.start_again();
    assert_eq!(
        stack.until_status("/ready", StatusCode::OK).await,
        "ready\n"
    );
    let status = stack.status_json().await;
    assert!(status["broker"]["reconnects"].as_u64().unwrap() >= 1);
    stack.stop().await;
}

// ---------------------------------------------------------------------------------------------
// /metrics

/// One sample of the exposition format: `name{label="value",...} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses Prometheus text exposition (version 0.0.4) strictly: every line is blank, a
/// `# HELP name text`, a `# TYPE name counter|gauge|histogram|summary|untyped`, or a sample
/// with an optional label set and a float value (and an optional integer timestamp).
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    let mut typed = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let tail = parts.next();
            match kind {
                "HELP" if is_metric_name(name) => {}
                "TYPE" if is_metric_name(name) => {
                    let ty = tail.ok_or_else(|| at("TYPE without a type"))?;
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty) {
                        return Err(at("unknown type"));
                    }
                    if typed.insert(name.to_string(), ty.to_string()).is_some() {
                        return Err(at("second TYPE line for one metric"));
                    }
                }
                _ => return Err(at("bad comment line")),
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(at("comment without a space"));
        }
        samples.push(parse_sample(line).map_err(|why| at(&why))?);
    }
    Ok(samples)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let (labels, rest) = match line[name_end..].strip_prefix('{') {
        Some(body) => parse_labels(body)?,
        None => (BTreeMap::new(), &line[name_end..]),
    };

    let mut fields = rest
        .strip_prefix(' ')
        .ok_or("no space before the value")?
        .split(' ');
    let value = match fields.next().ok_or("no value")? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `name="value",...}` (what follows the `{`); returns the labels and the rest.
fn parse_labels(body: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = body;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;

        // The value runs to the first unescaped quote; \\, \" and \n are the only escapes.
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, c) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name:?} twice"));
        }
        rest = &rest[end + 1..];
        match rest.strip_prefix(',') {
            Some(after) => rest = after,
            None if rest.starts_with('}') => {}
            None => return Err("expected , or } after a label".into()),
        }
    }
}

fn total(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

async fn scrape(stack: &Stack) -> Vec<Sample> {
    let response = stack
        .http
        .get(stack.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.unwrap();
    parse_exposition(&text).unwrap_or_else(|e| panic!("/metrics is not exposition format: {e}"))
}

/// Scrapes until `done` holds for the samples; panics naming `what` after [`WAIT`].
async fn scrape_until(stack: &Stack, what: &str, done: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let deadline = Instant::now() + WAIT;
    loop {
        let samples = scrape(stack).await;
        if done(&samples) {
            return samples;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} in /metrics"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn the_exposition_parser_rejects_what_prometheus_rejects() {
    let good = "# HELP a_total Things.\n# TYPE a_total counter\n\
                a_total{route=\"ati/+/status\",outcome=\"ok\"} 3\nb 1.5e3 1700000000000\n\
                c_bucket{le=\"+Inf\"} 2\nd{x=\"q\\\"uote\"} NaN\n";
    let samples = parse_exposition(good).expect("valid text");
    assert_eq!(samples.len(), 4);
    assert_eq!(samples[0].labels["route"], "ati/+/status");
    assert_eq!(samples[1].value, 1500.0);
    assert_eq!(samples[3].labels["x"], "q\"uote");
    for bad in [
        "1abc 1",
        "a{route=unquoted} 1",
        "a{route=\"x\"",
        "a{9=\"x\"} 1",
        "a one",
        "a  1",
        "a{x=\"1\",x=\"2\"} 1",
        "#TYPE a counter",
        "# TYPE a widget",
        "# TYPE a counter\n# TYPE a counter",
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_exposition_format_and_counters_move() {
    let stack = Stack::start(Mode::ApiKey, &[]).await;
    stack::wait_subscribed(&stack.bridge.running.state).await;
    let robots = ["tugger-01", "tugger-02", "tugger-03"];
    let first: Vec<_> = robots
        .iter()
        .enumerate()
        .map(|(i, r)| ati(r, i as u64, &[i as f64, 1.0, 0.0], 50.0))
        .collect();
    publish(&stack.broker, "pub-metrics-1", &first).await;
    stack::eventually(WAIT, "three deliveries", || {
        stack.stub.accepted().len() >= 3
    })
    .await;

    // The stand-in records a location before the bridge counts the answer: poll.
    let before = scrape_until(&stack, "three forwarded records", |m| {
        total(m, "bridge_records_forwarded_total") >= 3.0
    })
    .await;
    for name in [
        "bridge_messages_received_total",
        "bridge_records_forwarded_total",
        "bridge_outbox_records",
        "bridge_outbox_bytes",
        "bridge_outbox_oldest_age_seconds",
        "bridge_mqtt_connected",
        "bridge_twinzo_request_seconds_bucket",
        "bridge_twinzo_requests_total",
    ] {
        assert!(
            before.iter().any(|s| s.name == name),
            "/metrics has no {name}"
        );
    }
    let buckets: Vec<_> = before
        .iter()
        .filter(|s| s.name == "bridge_twinzo_request_seconds_bucket")
        .collect();
    assert!(buckets.iter().all(|s| s.labels.contains_key("le")
        && s.labels.contains_key("endpoint")
        && s.labels.contains_key("status")));

    // Labels stay bounded: never a raw topic or a device id.
    let topics: Vec<&String> = first.iter().map(|(topic, _)| topic).collect();
    for sample in &before {
        for value in sample.labels.values() {
            let raw = topics.contains(&value) || robots.iter().any(|r| value.contains(r));
            assert!(!raw, "{} carries {value:?} as a label", sample.name);
        }
    }

    let second: Vec<_> = robots
        .iter()
        .enumerate()
        .map(|(i, r)| ati(r, 10 + i as u64, &[i as f64, 2.0, 0.0], 49.0))
        .collect();
    publish(&stack.broker, "pub-metrics-2", &second).await;
    stack::eventually(WAIT, "six deliveries", || stack.stub.accepted().len() >= 6).await;
    for name in [
        "bridge_messages_received_total",
        "bridge_records_forwarded_total",
    ] {
        let was = total(&before, name);
        scrape_until(&stack, &format!("{name} to grow by 3 from {was}"), |m| {
            total(m, name) >= was + 3.0
        })
        .await;
    }
    stack.stop().await;
}

// ---------------------------------------------------------------------------------------------
// /api/status, /api/events, /

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_published_robots_with_both_coordinates() {
    let stack = Stack::start(Mode::Device, &[]).await;
    stack::wait_subscribed(&stack.bridge.running.state).await;
    publish(
        &stack.broker,
        "pub-status",
        &[
            ati("tugger-01", 1, &[12.5, 20.25, 1.57], 79.0),
            ati("tugger-02", 2, &[3.0, 4.0, 0.5], 55.0),
        ],
    )
    .await;
    // The stand-in records a location before the bridge counts the answer: poll.
    let deadline = Instant::now() + WAIT;
    let status = loop {
        let status = stack.status_json().await;
        if status["counters"]["delivered"] == 2 {
            break status;
        }
        assert!(Instant::now() < deadline, "two deliveries: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let robots = status["robots"].as_array().expect("robots array");
    let robot = |id: &str| {
        robots
            .iter()
            .find(|r| r["device"] == id)
            .unwrap_or_else(|| panic!("{id} missing from {robots:?}"))
    };
    let one = robot("tugger-01");
    assert_eq!(
        (one["x"].as_f64(), one["y"].as_f64()),
        (Some(12.5), Some(20.25))
    );
    assert_eq!(
        (one["twinzo_x"].as_f64(), one["twinzo_y"].as_f64()),
        (Some(12_500.0), Some(20_250.0))
    );
    assert_eq!(one["heading"].as_f64(), Some(1.57));
    assert_eq!(one["battery"].as_f64(), Some(79.0));
    assert_eq!(one["sector_id"], 1);
    assert!(one["last_seen_ms"].as_i64().unwrap() > 0);
    assert_eq!(robot("tugger-02")["twinzo_x"].as_f64(), Some(3_000.0));

    let topics = status["topics"].as_array().expect("topics array");
    let topic = topics
        .iter()
        .find(|t| t["topic"] == "ati/tugger-01/status")
        .expect("the robot's topic is listed");
    assert!(topic["count"].as_u64().unwrap() >= 1);
    assert!(topic["last_payload"]
        .as_str()
        .unwrap()
        .contains("tugger-01"));
    assert_eq!(status["ready"], true);
    stack.stop().await;
}

/// Reads the event stream until one whole event arrived; returns (event name, data).
async fn first_event(response: &mut reqwest::Response) -> (String, String) {
    let mut buffer = String::new();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let block = &buffer[..end];
            let field = |name: &str| {
                block
                    .lines()
                    .filter_map(|l| l.strip_prefix(name))
                    .map(|v| v.strip_prefix(' ').unwrap_or(v))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            if block.lines().any(|l| l.starts_with("data:")) {
                return (field("event:"), field("data:"));
            }
            buffer.drain(..end + 2);
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, response.chunk())
            .await
            .expect("an event within the deadline")
            .expect("read the event stream")
            .expect("the stream stays open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_status_snapshots_as_json() {
    let stack = Stack::start(Mode::ApiKey, &[]).await;
    let mut response = stack
        .http
        .get(stack.url("/api/events"))
        .send()
        .await
        .expect("GET /api/events");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));

    let (event, data) = first_event(&mut response).await;
    assert_eq!(event, "status");
    let first: Value = serde_json::from_str(&data).expect("event data is JSON");
    for key in [
        "now_ms", "ready", "broker", "twinzo", "outbox", "counters", "robots", "topics", "errors",
    ] {
        assert!(first.get(key).is_some(), "snapshot has no {key}: {first}");
    }

    // The stream keeps going: a later event carries a later snapshot.
    let (_, data) = first_event(&mut response).await;
    let second: Value = serde_json::from_str(&data).unwrap();
    assert!(second["now_ms"].as_i64() > first["now_ms"].as_i64());
    drop(response);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_is_one_self_contained_page() {
    let stack = Stack::start(Mode::ApiKey, &[]).await;
    let response = stack.http.get(stack.url("/")).send().await.expect("GET /");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.unwrap();
    for hook in [
        "id=\"robots\"",
        "id=\"map\"",
        "data-updated",
        "api/events",
        "api/status",
    ] {
        assert!(page.contains(hook), "the page has no {hook}");
    }
    // Works offline: nothing loaded from elsewhere, and the SSE/status URLs are relative so
    // the page also works behind a path prefix.
    let external = page
        .match_indices("://")
        .filter(|(i, _)| !page[i.saturating_sub(4)..].starts_with("http://www.w3.org/2000/svg"))
        .count();
    assert_eq!(external, 0, "the page references another origin");
    for forbidden in ["<script src", "@import", "url(", "'/api/", "\"/api/"] {
        assert!(!page.contains(forbidden), "the page contains {forbidden}");
    }
    stack.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Authentication

const PROTECTED: [&str; 4] = ["/", "/metrics", "/api/status", "/api/events"];

/// Sends GET `path` with `with` applied and returns the status; streams are not read.
async fn status_of(
    stack: &Stack,
    path: &str,
    with: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> StatusCode {
    with(stack.http.get(stack.url(path)))
        .send()
        .await
        .expect("GET")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_token_guards_everything_but_live_and_ready() {
    let stack = Stack::start(Mode::ApiKey, &[("BRIDGE_HTTP__AUTH_TOKEN", TOKEN)]).await;

    assert_eq!(status_of(&stack, "/live", |r| r).await, StatusCode::OK);
    assert_eq!(
        stack.until_status("/ready", StatusCode::OK).await,
        "ready\n",
        "/ready needs no token"
    );

    for path in PROTECTED {
        let plain = status_of(&stack, path, |r| r).await;
        assert_eq!(plain, StatusCode::UNAUTHORIZED, "{path} without a token");
        let wrong = status_of(&stack, path, |r| r.bearer_auth("not-the-token")).await;
        assert_eq!(wrong, StatusCode::UNAUTHORIZED, "{path} with a wrong token");

        let bearer = status_of(&stack, path, |r| {
            r.header(AUTHORIZATION, format!("Bearer {TOKEN}"))
        })
        .await;
        assert_eq!(bearer, StatusCode::OK, "{path} with Authorization: Bearer");
        let query = status_of(&stack, path, |r| r.query(&[("token", TOKEN)])).await;
        assert_eq!(query, StatusCode::OK, "{path} with ?token=");
        let cookie = status_of(&stack, path, |r| {
            r.header(COOKIE, format!("theme=dark; bridge_token={TOKEN}"))
        })
        .await;
        assert_eq!(
            cookie,
            StatusCode::OK,
            "{path} with the bridge_token cookie"
        );
    }

    let response = stack
        .http
        .get(stack.url("/api/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body = response.text().await.unwrap();
    assert!(!body.contains(TOKEN), "the 401 body never echoes the token");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auth_token_every_route_answers() {
    let stack = Stack::start(Mode::ApiKey, &[]).await;
    stack.until_status("/ready", StatusCode::OK).await;
    for path in ["/live", "/ready"].into_iter().chain(PROTECTED) {
        assert_eq!(
            status_of(&stack, path, |r| r).await,
            StatusCode::OK,
            "{path}"
        );
    }
    stack.stop().await;
}

// ---------------------------------------------------------------------------------------------
// grafana/twinzo-bridge.json

/// Every `"bridge_..."` string literal in the Rust sources under `dir`.
fn metric_names_in_source(dir: &std::path::Path, names: &mut std::collections::BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("read source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            metric_names_in_source(&path, names);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("read source");
            for piece in text.split('"').skip(1).step_by(2) {
                if piece.starts_with("bridge_") && is_metric_name(piece) {
                    names.insert(piece.to_string());
                }
            }
        }
    }
}

#[test]
fn grafana_dashboard_queries_only_metrics_the_bridge_exports() {
    let root = support::repo_root();
    let text = std::fs::read_to_string(root.join("grafana/twinzo-bridge.json"))
        .expect("grafana/twinzo-bridge.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut defined = std::collections::BTreeSet::new();
    metric_names_in_source(&root.join("bridge/src"), &mut defined);

    let mut queried = std::collections::BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {} uses the datasource variable",
            panel["title"]
        );
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("bridge_") {
                    queried.insert(word.to_string());
                }
            }
        }
    }
    for name in &queried {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| defined.contains(*base))
            .unwrap_or(name);
        assert!(
            defined.contains(base),
            "the dashboard queries {name}, which bridge/src does not define"
        );
    }
    for wanted in [
        "bridge_messages_received_total",
        "bridge_twinzo_request_seconds_bucket",
        "bridge_outbox_oldest_age_seconds",
        "bridge_mqtt_reconnects_total",
        "bridge_twinzo_token_refreshes_total",
    ] {
        assert!(queried.contains(wanted), "no panel shows {wanted}");
    }
}
