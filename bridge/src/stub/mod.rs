//! A stand-in for Twinzo's REST API that enforces the contract of
//! `shared/reference/twinzo-api.md`, records what it accepted and injects faults. It serves
//! the tests, the demo and the benchmarks (`twinzo-bridge stub --listen ADDR`).
//!
//! Twinzo routes (see `routes`):
//!
//! | route | signed with | answers |
//! |---|---|---|
//! | `POST /v3/authorization/authenticate` | body credentials | 200, token or `Success: false` |
//! | `POST /v3/localization` | `Client`, `Branch`, `Token` | 200 one login; 400, 401, 415 |
//! | `POST /v3/localization/batch` | `Client`, `Branch`, `Api-Key` | 200 per login; 400, 401, 415 |
//! | `GET /v3/devices/login/{login}` | token or API key | 200 device, 404 |
//! | `GET /v3/sectors` | token or API key | 200 with `SectorWidth`, `SectorHeight` |
//! | anything else | | 404, empty body |
//!
//! The `/_stub/` routes (see `control`) are **not part of Twinzo**: they let a test or a
//! script read what was accepted, read counters, inject faults and reset the stand-in.
//! In-process tests use the same operations on [`StubHandle`].
//!
//! Parts: `config` (flags, TOML file), `contract` (parsing and validation), `responses`
//! (answer bodies), `records` (what is handed out), `state` (devices, tokens, accepted
//! locations, counters; no I/O), `faults` (status queue, latency, `Retry-After`), `listener`
//! (TCP refusal), `routes`, `control`.
//!
//! Where the reference is silent the stand-in chooses, and says so: a refused authenticate is
//! HTTP 200 with `Success: false` (`"Invalid client."` or `"Invalid login or password."`);
//! logins are compared exactly and the client name without case; a duplicate is the same
//! login and `Timestamp` (answered `Update`); tokens stay valid across a reset. Validation
//! choices are listed in `contract`.
//!
//! Shortcomings: routes match case-sensitively, whereas ASP.NET routing does not; a body
//! that spells one field in two casings is not resolved in document order.

mod config;
mod contract;
mod control;
mod faults;
mod listener;
mod records;
mod responses;
mod routes;
mod state;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::DefaultBodyLimit;
use axum::response::Response;
use axum::Router;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::{
    StubArgs, StubConfig, StubConfigError, StubDevice, StubSector, DEFAULT_BRANCH_GUID,
    DEFAULT_CLIENT_GUID, DEFAULT_LISTEN,
};
pub use faults::FaultRequest;
pub use records::{AcceptedLocation, RecordedRequest, StubStats};

use faults::{fault_response, Faults};
use listener::{Gate, GatedListener};
use state::StubState;

/// State shared by the routes and every [`StubHandle`].
pub(crate) struct Shared {
    state: Mutex<StubState>,
    faults: Mutex<Faults>,
    gate: Arc<Gate>,
    runtime: Handle,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, StubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The response for the next queued status, if one is queued.
    fn injected_fault(&self) -> Option<Response> {
        let (status, retry_after) = {
            let mut faults = self.faults();
            (faults.next_status()?, faults.retry_after())
        };
        self.state().stats_mut().injected_faults += 1;
        Some(fault_response(status, retry_after))
    }

    /// Counts a localization request refused by authentication or validation.
    fn reject(&self, response: Response) -> Response {
        self.state().stats_mut().rejected_requests += 1;
        response
    }

    fn refuse(&self, window: Duration, grace: Duration) {
        self.gate.refuse_for(window, grace, &self.runtime);
    }

    fn reset(&self) {
        let latency = {
            let mut state = self.state();
            state.reset();
            state.config().latency
        };
        *self.faults() = Faults::new(latency);
        self.gate.reopen_now(&self.runtime);
    }
}

/// A running stand-in. Clones share it; it stops when the shutdown token is cancelled.
#[derive(Clone)]
pub struct StubHandle {
    /// The address actually bound (useful after listening on port 0).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for StubHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StubHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl StubHandle {
    /// `http://ADDR`, the base URL to give a client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every location accepted, in order, duplicates included and flagged.
    pub fn accepted(&self) -> Vec<AcceptedLocation> {
        self.shared.state().accepted()
    }

    pub fn stats(&self) -> StubStats {
        self.shared.state().stats()
    }

    /// The last `n` localization requests as received, oldest first.
    pub fn requests(&self, n: usize) -> Vec<RecordedRequest> {
        self.shared.state().requests(n)
    }

    /// The next localization requests (device or batch) answer these statuses in order;
    /// a 200 in the queue means "answer normally". Authenticate is not affected.
    ///
    /// # Panics
    /// On a code outside 100-999, which is a mistake in the calling test.
    pub fn push_statuses(&self, statuses: &[u16]) {
        if let Err(code) = self.shared.faults().push(statuses) {
            panic!("{code} is not an HTTP status");
        }
    }

    /// Answers `status` to every localization request for `window` (an outage of set length).
    pub fn fail_for(&self, status: u16, window: Duration) {
        if let Err(code) = self.shared.faults().fail_for(status, window) {
            panic!("{code} is not an HTTP status");
        }
    }

    /// `Retry-After` seconds sent with injected 429 and 503 (`None`: no header).
    pub fn set_retry_after(&self, after: Option<Duration>) {
        self.shared.faults().set_retry_after(after);
    }

    /// Delay before every Twinzo response.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.faults().set_latency(latency);
    }

    /// Stops listening now (connects are refused by the kernel) and closes open connections;
    /// binds the same address again after `window`.
    pub fn refuse_for(&self, window: Duration) {
        self.shared.refuse(window, Duration::ZERO);
    }

    /// Lifetime of tokens issued from now on.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.shared.state().set_token_ttl(ttl);
    }

    /// Makes `login` exist (with its own password, if given).
    pub fn add_device(&self, device: StubDevice) {
        self.shared.state().add_device(device);
    }

    /// Makes `login` not exist; its tokens stay valid, so localization answers
    /// `Success: false`, "Device LOGIN does not exist.".
    pub fn remove_device(&self, login: &str) {
        self.shared.state().remove_device(login);
    }

    /// Forgets accepted locations, counters and recorded requests, clears faults, undoes
    /// device changes and listens again if refusing. Issued tokens stay valid.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Waits until the server has stopped (after the shutdown token is cancelled).
    pub async fn closed(&self) {
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Starts the stand-in on `listen` (port 0 picks a free port; see [`StubHandle::addr`]).
pub async fn spawn(
    config: StubConfig,
    listen: SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<StubHandle> {
    config.validate()?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let gate = Gate::new(listener, shutdown.clone()).context("cannot read the bound address")?;
    let listener = GatedListener(Arc::clone(&gate));
    let bound = axum::serve::Listener::local_addr(&listener)?;

    let shared = Arc::new(Shared {
        faults: Mutex::new(Faults::new(config.latency)),
        state: Mutex::new(StubState::new(config)),
        gate: Arc::clone(&gate),
        runtime: Handle::current(),
    });
    let app = Router::new()
        .merge(routes::twinzo_routes())
        .merge(control::control_routes())
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            routes::observe,
        ))
        .layer(DefaultBodyLimit::max(routes::BODY_LIMIT))
        .with_state(Arc::clone(&shared));

    let server =
        axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let task = tokio::spawn(async move {
        let close_on_shutdown = async {
            shutdown.cancelled().await;
            gate.close();
        };
        let (result, ()) = tokio::join!(server.into_future(), close_on_shutdown);
        if let Err(err) = result {
            warn!(error = %err, "stub server stopped with an error");
        }
    });

    Ok(StubHandle {
        addr: bound,
        shared,
        task: Arc::new(Mutex::new(Some(task))),
    })
}

/// Runs the stand-in for the `stub` command until `shutdown` is cancelled.
pub async fn run(args: StubArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (config, listen) = StubConfig::from_args(&args)?;
    if config.devices.is_empty() && config.device_globs.is_empty() {
        warn!("stub has no devices: every login is unknown (use --device or --device-glob)");
    }
    let passwordless = config.device_password.is_none()
        && (!config.device_globs.is_empty() || config.devices.iter().any(|d| d.password.is_none()));
    if passwordless {
        warn!("stub has devices without a password: they cannot authenticate (--device-password)");
    }
    let api_key_mode = config.api_key.is_some();
    let devices = config.devices.len();
    let handle = spawn(config, listen, shutdown).await?;
    info!(addr = %handle.addr, devices, api_key_mode, "stub listening");

    handle.closed().await;
    info!("stub stopped");
    Ok(())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
