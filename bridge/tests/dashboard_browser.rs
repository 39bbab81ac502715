//! The dashboard in a real browser. Five robots publish through a real Mosquitto, the bridge
//! (in process) and the Twinzo stand-in while headless Chromium shows `/`. The test speaks the
//! Chrome DevTools protocol over a WebSocket (tungstenite, the version rumqttc already pulls
//! in) to read the page, to see a new position arrive without a reload, and to save
//! screenshots under `target/artifacts/`.
//!
//! Chromium is required, never skipped: CI installs the Debian `chromium` package.

mod support;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::stack::{self, ati, publish};
use support::{repo_root, wait_until, Broker};
use tokio_util::sync::CancellationToken;
use tungstenite::{Message, WebSocket};

const CHROMIUM: &str = "/usr/bin/chromium";
const WAIT: Duration = Duration::from_secs(15);
const ROBOTS: [&str; 5] = [
    "tugger-01",
    "tugger-02",
    "tugger-03",
    "tugger-04",
    "tugger-05",
];

/// Headless Chromium with its own profile directory; killed on drop.
struct Chromium {
    child: Child,
    profile: tempfile::TempDir,
}

impl Chromium {
    fn launch() -> Chromium {
        assert!(
            Path::new(CHROMIUM).is_file(),
            "{CHROMIUM} is not installed: run `apt-get install -y chromium` \
             (CI installs it in .ci/run)"
        );
        let profile = tempfile::Builder::new()
            .prefix("twinzo-chromium-")
            .tempdir()
            .expect("create profile directory");
        let child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1366,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromium");
        Chromium { child, profile }
    }

    /// The browser's DevTools WebSocket URL, from the `DevToolsActivePort` file Chromium writes
    /// into its profile once it listens (port on the first line, path on the second).
    fn devtools_url(&mut self) -> String {
        let file = self.profile.path().join("DevToolsActivePort");
        let mut text = String::new();
        wait_until(WAIT, "chromium to write DevToolsActivePort", || {
            if let Some(status) = self.child.try_wait().expect("poll chromium") {
                panic!("chromium exited early with {status}");
            }
            text = std::fs::read_to_string(&file).unwrap_or_default();
            text.lines().count() >= 2
        });
        let mut lines = text.lines();
        let port = lines.next().expect("port line").trim();
        let path = lines.next().expect("path line").trim();
        format!("ws://127.0.0.1:{port}{path}")
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One DevTools session attached to one page, over a blocking WebSocket. Calls block the
/// test's own thread only; the bridge runs on the runtime's worker threads.
struct Page {
    ws: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    /// Uncaught exceptions the page reported (`Runtime.exceptionThrown`).
    exceptions: Vec<String>,
    /// What to type into a `prompt()`; `None` dismisses it.
    prompt_answer: Option<String>,
    /// The messages of the dialogs the page opened.
    dialogs: Vec<String>,
}

impl Page {
    fn open(browser_url: &str) -> Page {
        let addr = browser_url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .expect("ws:// URL");
        let stream = TcpStream::connect(addr).expect("connect to devtools");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("set read timeout");
        let (ws, _) = tungstenite::client(browser_url, stream)
            .unwrap_or_else(|e| panic!("devtools handshake: {e}"));
        let mut page = Page {
            ws,
            session: String::new(),
            next_id: 0,
            exceptions: Vec::new(),
            prompt_answer: None,
            dialogs: Vec::new(),
        };
        let target = page.call("Target.createTarget", json!({ "url": "about:blank" }));
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = page.call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        page.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        page.call("Runtime.enable", json!({}));
        page.call("Page.enable", json!({}));
        page
    }

    /// Sends one command without waiting; returns its id.
    fn send(&mut self, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method });
        command["params"] = params;
        if !self.session.is_empty() {
            command["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(command.to_string()))
            .expect("send devtools command");
        id
    }

    /// Sends one command and returns its `result`, handling the events that matter meanwhile:
    /// exceptions are kept, dialogs are answered (a page blocked on one answers nothing else).
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params);
        loop {
            let message = match self.ws.read() {
                Ok(Message::Text(text)) => text,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                    panic!("no devtools answer to {method} within 20 s")
                }
                Err(e) => panic!("devtools connection failed during {method}: {e}"),
            };
            let value: Value = serde_json::from_str(message.as_str()).expect("devtools JSON");
            if value["id"] == json!(id) {
                if let Some(error) = value.get("error") {
                    panic!("{method} failed: {error}");
                }
                return value["result"].clone();
            }
            if value["method"] == "Page.javascriptDialogOpening" {
                let message = value["params"]["message"].as_str().unwrap_or_default();
                self.dialogs.push(message.to_string());
                let answer = self.prompt_answer.clone();
                self.send(
                    "Page.handleJavaScriptDialog",
                    json!({ "accept": answer.is_some(), "promptText": answer.unwrap_or_default() }),
                );
            }
            if value["method"] == "Runtime.exceptionThrown" {
                let details = &value["params"]["exceptionDetails"];
                self.exceptions.push(format!(
                    "{} {}",
                    details["text"].as_str().unwrap_or_default(),
                    details["exception"]["description"]
                        .as_str()
                        .unwrap_or_default()
                ));
            }
        }
    }

    /// Evaluates `expression` in the page and returns its value (JSON-serialisable values only).
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        if let Some(details) = result.get("exceptionDetails") {
            panic!("evaluating {expression:?} threw: {details}");
        }
        result["result"]["value"].clone()
    }

    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
    }

    /// Polls `expression` until it evaluates to `true`; panics naming `what` after [`WAIT`].
    /// A page still loading may throw (no `body` yet): that counts as not yet.
    async fn until(&mut self, what: &str, expression: &str) {
        let deadline = Instant::now() + WAIT;
        let guarded = format!("(() => {{ try {{ return ({expression}) === true; }} catch (e) {{ return false; }} }})()");
        while self.eval(&guarded) != json!(true) {
            assert!(
                Instant::now() < deadline,
                "timed out after {WAIT:?} waiting for {what}; page state: {}; dialogs: {:?}; \
                 exceptions: {:?}",
                self.eval(PAGE_STATE),
                self.dialogs,
                self.exceptions
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the viewport (or of the whole page) to `path`.
    fn screenshot(&mut self, path: &Path, full_page: bool) {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": full_page }),
        );
        let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        std::fs::write(path, png).expect("write screenshot");
        println!("screenshot: {}", path.display());
    }

    /// Resizes the viewport, as a phone or a laptop would show the page.
    fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        );
    }
}

/// What the failure messages show of the page.
const PAGE_STATE: &str = "(() => { try { return JSON.stringify({ \
    updated: document.body.dataset.updated, \
    rows: [...document.querySelectorAll('#robots tr[data-device]')].map(r => r.dataset.device), \
    markers: [...document.querySelectorAll('#map [data-device]')].map(m => m.dataset.device), \
    status: document.getElementById('status').textContent, \
    reason: document.getElementById('reason').textContent, \
    href: location.href, cookie: document.cookie, \
    net: performance.getEntries().map(e => e.name + ' ' + e.responseStatus) }); \
    } catch (e) { return String(e); } })()";

/// Decodes standard base64 (what DevTools returns screenshots in).
fn base64_decode(text: &str) -> Vec<u8> {
    let sextet = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("invalid base64 byte {c}"),
        }
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|&c| c != b'=') {
        acc = (acc << 6) | sextet(c);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Where screenshots go: `target/artifacts/` (or under `CARGO_TARGET_DIR`).
fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let dir = target.join("artifacts");
    std::fs::create_dir_all(&dir).expect("create target/artifacts");
    dir
}

/// Where robot `i` is after `step` steps: three drive (along different axes), one stands with
/// an error, one stands disconnected. Metres in the robot frame, heading in radians.
fn pose(i: usize, step: u64) -> [f64; 3] {
    let s = step as f64;
    match i {
        0 => [4.0 + 1.2 * s, 6.0, 0.0],
        1 => [31.0, 8.0 + 1.5 * s, std::f64::consts::FRAC_PI_2],
        2 => [26.0 - s, 30.0 - s, -3.0 * std::f64::consts::FRAC_PI_4],
        3 => [43.0, 24.0, 3.1],
        _ => [17.0, 18.0, 1.2],
    }
}

/// The status messages of one round: every robot at `step`, with a unique payload timestamp.
fn round(step: u64) -> Vec<(String, Vec<u8>)> {
    ROBOTS
        .iter()
        .enumerate()
        .map(|(i, robot)| {
            let battery = [86.0, 64.0, 41.0, 12.0, 77.0][i] - step as f64 * 0.2;
            let (topic, payload) = ati(robot, step * 10 + i as u64, &pose(i, step), battery);
            let mut body: Value = serde_json::from_slice(&payload).expect("ati payload");
            if i == 3 {
                body["error"] = json!("E-STOP pressed (front bumper)");
                body["mode"] = json!("error");
            }
            if i == 4 {
                body["mode"] = json!("disconnected");
            }
            (topic, body.to_string().into_bytes())
        })
        .collect()
}

/// The sector as Twinzo draws it: origin at the top-left of a 40 m deep hall, Y down.
fn sector_config(dir: &Path) -> PathBuf {
    let file = dir.join("bridge.toml");
    std::fs::write(
        &file,
        "[[sectors]]\nid = 1\nflip_y = true\noffset_mm = [0.0, 40000.0]\n",
    )
    .expect("write sector config");
    file
}

/// Mosquitto, the stand-in and the bridge in process, with the sector of [`sector_config`].
struct Stack {
    broker: Broker,
    bridge: stack::InProcess,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Stack {
    /// Device mode; `api_key` switches to API-key mode (ready without a delivery).
    async fn start(api_key: bool, extra: &[(&str, &str)]) -> Stack {
        let broker = Broker::start();
        let stop = CancellationToken::new();
        let stub = stack::start_stub(&stop).await;
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut env = stack::bridge_env(&broker, stub.addr, dir.path());
        if api_key {
            stack::api_key_mode(&mut env);
        }
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = stack::load(&env, Some(&sector_config(dir.path())));
        let bridge = stack::start_bridge(config).await;
        stack::wait_subscribed(&bridge.running.state).await;
        Stack {
            broker,
            bridge,
            stop,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.bridge.stop().await;
        self.stop.cancel();
    }
}

/// The page's row and marker for tugger-01 both sit at Twinzo X `x_mm`.
fn tugger_01_at(x_mm: i64) -> String {
    format!(
        "document.querySelector('#robots tr[data-device=\"tugger-01\"]')?.dataset.x === '{x_mm}' \
         && document.querySelector('#map [data-device=\"tugger-01\"]')?.dataset.x === '{x_mm}'"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_five_robots_and_updates_live() {
    let mut stack = Stack::start(false, &[]).await;
    publish(&stack.broker, "pub-dash-0", &round(0)).await;

    let mut chromium = Chromium::launch();
    let mut page = Page::open(&chromium.devtools_url());
    page.navigate(&format!("{}/", stack.bridge.base()));

    // The five robots appear in the table and on the map.
    page.until(
        "five robot rows and five map markers",
        "document.querySelectorAll('#robots tr[data-device]').length === 5 \
         && document.querySelectorAll('#map [data-device]').length === 5",
    )
    .await;
    let rows = page.eval(
        "[...document.querySelectorAll('#robots tr[data-device]')].map(r => r.dataset.device)",
    );
    let markers = page.eval(
        "[...document.querySelectorAll('#map [data-device]')].map(m => m.dataset.device).sort()",
    );
    assert_eq!(rows, json!(ROBOTS), "table rows, sorted by device");
    assert_eq!(markers, json!(ROBOTS), "map markers");

    // A new position arrives live: same document (the marker survives), newer snapshot, new
    // coordinates in both the row and the marker.
    page.eval("window.__sameDocument = true");
    let before: i64 = page
        .eval("Number(document.body.dataset.updated)")
        .as_i64()
        .expect("data-updated is a number");
    assert!(before > 0, "data-updated is set after the first event");
    for step in 1..=5 {
        publish(&stack.broker, &format!("pub-dash-{step}"), &round(step)).await;
        let x_mm = (pose(0, step)[0] * 1000.0).round() as i64;
        page.until(
            &format!("tugger-01 at X {x_mm} mm (step {step})"),
            &tugger_01_at(x_mm),
        )
        .await;
    }
    let after = page.eval(
        "JSON.stringify([window.__sameDocument === true, Number(document.body.dataset.updated)])",
    );
    let after: (bool, i64) = serde_json::from_str(after.as_str().unwrap()).unwrap();
    assert!(after.0, "the page was not reloaded");
    assert!(
        after.1 > before,
        "data-updated advanced ({before} -> {})",
        after.1
    );
    let status = page.eval("document.getElementById('status').textContent");
    assert_eq!(
        status,
        json!("ready"),
        "header shows the bridge ready once Twinzo took positions"
    );

    // Screenshots: the laptop view, the whole page, and a phone.
    let artifacts = artifacts_dir();
    page.screenshot(&artifacts.join("dashboard.png"), false);
    page.screenshot(&artifacts.join("dashboard-full.png"), true);
    page.viewport(390, 844, true);
    page.until(
        "the map to fit the phone width",
        "document.getElementById('map').getBoundingClientRect().width < 390",
    )
    .await;
    page.screenshot(&artifacts.join("dashboard-phone.png"), true);

    // The broker goes away: the header says so, with the reason.
    page.call("Emulation.clearDeviceMetricsOverride", json!({}));
    stack.broker.stop();
    page.until(
        "the header to report the broker down",
        "document.getElementById('status').textContent === 'not ready' \
         && document.getElementById('reason').textContent.startsWith('Broker not connected')",
    )
    .await;
    page.screenshot(&artifacts.join("dashboard-broker-down.png"), false);

    assert!(
        page.exceptions.is_empty(),
        "the page threw: {:?}",
        page.exceptions
    );
    drop(page);
    drop(chromium);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_asks_for_the_token_once_and_keeps_it_in_a_cookie() {
    const TOKEN: &str = "browser-token-51c2e8";
    let stack = Stack::start(true, &[("BRIDGE_HTTP__AUTH_TOKEN", TOKEN)]).await;
    let base = stack.bridge.base();

    let mut chromium = Chromium::launch();
    let mut page = Page::open(&chromium.devtools_url());
    page.prompt_answer = Some(TOKEN.to_string());

    // Refused at `/`, the browser still gets the page, which asks once and connects.
    page.navigate(&format!("{base}/"));
    page.until(
        "the page to connect with the token it asked for",
        "Number(document.body.dataset.updated) > 0",
    )
    .await;
    assert_eq!(page.dialogs.len(), 1, "one question: {:?}", page.dialogs);
    assert!(page.dialogs[0].contains("token"), "{:?}", page.dialogs);
    let cookie = page.eval("document.cookie");
    assert_eq!(cookie, json!(format!("bridge_token={TOKEN}")));

    // The next visit passes on the cookie: no second question.
    page.eval("window.__previous = true");
    page.navigate(&format!("{base}/"));
    page.until(
        "a fresh page connected on the cookie",
        "window.__previous === undefined && Number(document.body.dataset.updated) > 0",
    )
    .await;
    assert_eq!(page.dialogs.len(), 1, "asked again: {:?}", page.dialogs);

    // A token in the URL is taken into the cookie and removed from the address bar.
    page.call("Network.clearBrowserCookies", json!({}));
    page.navigate(&format!("{base}/?token={TOKEN}"));
    page.until(
        "the page connected with the token from its URL",
        "location.search === '' && Number(document.body.dataset.updated) > 0",
    )
    .await;
    assert_eq!(page.eval("document.cookie"), cookie);
    assert_eq!(page.dialogs.len(), 1, "asked again: {:?}", page.dialogs);
    assert!(
        page.exceptions.is_empty(),
        "the page threw: {:?}",
        page.exceptions
    );
    drop(page);
    drop(chromium);
    stack.stop().await;
}
