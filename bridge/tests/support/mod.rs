//! Shared harness of the integration tests: every file in `tests/` pulls it in with `mod support;`.
//!
//! - [`Broker`] renders the broker configuration with `mosquitto/render-config.sh`, the script
//!   the container runs, and starts the system `mosquitto` on ports the test picked itself.
//! - [`mqtt`] holds rumqttc helpers (WebSocket and TCP) that drive an event loop inline.
//! - [`cli`] runs `mosquitto_pub` and `mosquitto_sub` with a timeout.
//! - The free functions below pick ports, find tools and wait for conditions.
//!
//! A test never skips: when Mosquitto is not installed, [`require_tool`] fails it with the
//! command that installs it.

// Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod broker;
pub mod cli;
pub mod mqtt;
pub mod stack;

use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use broker::{render_config, Broker};

/// User name and password of one MQTT account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    pub username: String,
    pub password: String,
}

/// A TCP port that was free a moment ago: bound on 127.0.0.1:0, then released.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// The repository root (the parent of the `bridge` package).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bridge package has a parent directory")
        .to_path_buf()
}

/// Polls `f` every 20 ms until it returns true; panics naming `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where `name` is installed: `PATH` first, then the sbin directories that a non-root `PATH`
/// often lacks (Debian installs the broker as /usr/sbin/mosquitto).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sbin = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(sbin)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Fails the test when `name` is missing, with the command that installs it.
pub fn require_tool(name: &str) {
    tool_path(name);
}

/// The full path of a required tool; fails the test like [`require_tool`] when it is missing.
pub fn tool_path(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!(
            "{name} is not installed: run scripts/test.sh or \
             apt-get install -y mosquitto mosquitto-clients"
        )
    })
}

/// A random password of 32 hex characters, fresh for each call.
pub fn random_password() -> String {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The login name of the user running the tests, as `id -un` reports it.
pub fn current_user() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("run id -un");
    assert!(out.status.success(), "id -un failed");
    String::from_utf8(out.stdout)
        .expect("id -un prints UTF-8")
        .trim()
        .to_owned()
}
