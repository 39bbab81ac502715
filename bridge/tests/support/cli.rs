//! The reference MQTT clients `mosquitto_pub` and `mosquitto_sub`, run against a test broker
//! over plain TCP with a timeout, so a hung client fails the test instead of hanging it.
//!
//! `mosquitto_sub` buffers its output when it is not writing to a terminal, so a test cannot
//! watch it to learn when its subscription is active. Subscriptions are therefore made on a
//! durable session first ([`subscribe_durable`], which exits on the SUBACK); the broker then
//! keeps every matching message for that session, and [`receive_durable`] collects them.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{tool_path, Creds};

/// How long a one-shot client may run.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// A `mosquitto_pub` (or any tool) command aimed at 127.0.0.1:`port`, logged in as `creds`.
pub fn command(tool: &str, port: u16, creds: Option<&Creds>) -> Command {
    let mut cmd = Command::new(tool_path(tool));
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(creds) = creds {
        cmd.args(["-u", &creds.username, "-P", &creds.password]);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Publishes one message at QoS 1; `mosquitto_pub` exits once the broker acknowledged it.
/// A publish the ACL forbids is still acknowledged (MQTT 3.1.1 has no way to say no).
pub fn publish(port: u16, creds: Option<&Creds>, topic: &str, payload: &str) -> Output {
    let mut cmd = command("mosquitto_pub", port, creds);
    cmd.args(["-q", "1", "-t", topic, "-m", payload]);
    run(&mut cmd, CLIENT_TIMEOUT)
}

/// Publishes the contents of `file` at QoS 1.
pub fn publish_file(port: u16, creds: Option<&Creds>, topic: &str, file: &Path) -> Output {
    let mut cmd = command("mosquitto_pub", port, creds);
    cmd.args(["-q", "1", "-t", topic, "-f"]).arg(file);
    run(&mut cmd, CLIENT_TIMEOUT)
}

/// Subscribes `filter` at QoS 1 for the durable session `client_id` (clean session off) and
/// returns once the broker acknowledged it; from then on the broker keeps matching messages
/// for that session, whether or not a client is connected.
pub fn subscribe_durable(port: u16, creds: &Creds, client_id: &str, filter: &str) {
    let mut cmd = command("mosquitto_sub", port, Some(creds));
    cmd.args(["-c", "-i", client_id, "-q", "1", "-t", filter, "-E"]);
    let out = run(&mut cmd, CLIENT_TIMEOUT);
    assert!(
        out.status.success(),
        "mosquitto_sub -E failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `mosquitto_sub -v` on the durable session `client_id`, to receive `count` messages
/// within `wait` seconds. Collect them with [`Running::finish`]: one `topic payload` line each.
pub fn receive_durable(
    port: u16,
    creds: &Creds,
    client_id: &str,
    filter: &str,
    count: u32,
    wait: Duration,
) -> Running {
    let mut cmd = command("mosquitto_sub", port, Some(creds));
    cmd.args(["-c", "-i", client_id, "-q", "1", "-t", filter, "-v"]);
    cmd.args([
        "-C",
        &count.to_string(),
        "-W",
        &wait.as_secs().max(1).to_string(),
    ]);
    spawn(&mut cmd)
}

/// Runs `cmd` to completion, killing it and failing the test after `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    spawn(cmd).finish(timeout)
}

/// Starts `cmd` with its output captured.
pub fn spawn(cmd: &mut Command) -> Running {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));

    // Drain both pipes on threads so a chatty child never blocks on a full pipe.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    Running {
        what: format!("{cmd:?}"),
        child,
        stdout: Some(stdout),
        stderr: Some(stderr),
    }
}

/// A client process started by [`spawn`]; dropping it kills the process.
pub struct Running {
    what: String,
    child: Child,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Running {
    /// Waits for the process to exit, killing it and failing the test after `timeout`.
    pub fn finish(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                break status;
            }
            if Instant::now() >= deadline {
                panic!("{} did not finish within {timeout:?}", self.what);
            }
            thread::sleep(Duration::from_millis(20));
        };
        let join =
            |h: Option<JoinHandle<Vec<u8>>>| h.expect("output reader").join().expect("reader");
        Output {
            status,
            stdout: join(self.stdout.take()),
            stderr: join(self.stderr.take()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
