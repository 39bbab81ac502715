//! `twinzo-bridge run`: wires the MQTT loop, the ingest, the sender and the HTTP server, and
//! shuts them down in order.
//!
//! Shutdown, once `shutdown` fires (SIGTERM or SIGINT in the binary):
//! 1. the ingest commits and acknowledges what it holds, then stops taking messages;
//! 2. the MQTT loop sends those acknowledgements and disconnects cleanly;
//! 3. the sender sends everything in the outbox until it is empty or the grace period
//!    (`shutdown.grace_secs`) ends; what is left stays in the outbox for the next start;
//! 4. the outbox closes when its last handle drops.
//!
//! `twinzo-bridge retire` ([`Mode::Retire`]) runs the same parts to take a member out of a
//! shared group: the MQTT loop unsubscribes and takes in what the broker still holds for the
//! session; once that has stopped and the outbox is empty, the bridge shuts down as above and
//! removes its session from the broker. Until then it runs like `run` (a signal stops it and
//! keeps the session and the outbox for another try).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::{AuthMode, Config};
use crate::devices::Directory;
use crate::mqtt::{self, Poller};
use crate::outbox::{Dedup, Outbox};
use crate::pipeline::{Ingest, IngestTask};
use crate::sender::Sender;
use crate::state::State;
use crate::twinzo::client::now_ms;
use crate::twinzo::Twinzo;
use crate::{http, Backoff};

/// A running bridge, as tests see it.
pub struct Running {
    pub http_addr: SocketAddr,
    pub state: Arc<State>,
    pub done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// What the process is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward until stopped.
    Run,
    /// Leave the shared group without losing this member's share, then exit.
    Retire,
}

/// Starts the bridge; it stops when `shutdown` fires (or on a fatal store error).
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    start_in(config, shutdown, Mode::Run).await
}

/// [`start`] in the given mode; in [`Mode::Retire`] it also stops once it has retired.
pub async fn start_in(
    config: Config,
    shutdown: CancellationToken,
    mode: Mode,
) -> anyhow::Result<Running> {
    http::metrics_handle();
    let state = State::new(now_ms());
    state.set_broker(|b| {
        b.client_id = config.mqtt.client_id.clone();
        b.shared_group = Some(config.mqtt.shared_group.clone()).filter(|g| !g.is_empty());
    });

    let path = config.outbox.path.clone();
    let dedup = Dedup::from(&config.outbox);
    let outbox = tokio::task::spawn_blocking(move || Outbox::open(&path, dedup)).await??;
    let outbox = Arc::new(outbox);
    state.attach_outbox(outbox.clone());
    let stats = outbox.stats();
    tracing::info!(
        path = %config.outbox.path.display(),
        records = stats.records,
        dead_letters = stats.dead_letters,
        "outbox opened"
    );

    let directory = Arc::new(Directory::new(&config));
    let twinzo = Arc::new(Twinzo::new(&config.twinzo)?);
    let ingest = Ingest::new(&config, directory.clone(), state.clone());
    let subscriptions = mqtt::subscriptions(&config.mqtt, &ingest.filters());
    let options =
        mqtt::options(&config.mqtt, &config.mqtt.client_id).map_err(anyhow::Error::msg)?;
    let (client, eventloop) = rumqttc::AsyncClient::new(options, 1024);

    let listener = tokio::net::TcpListener::bind(&config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.http.listen))?;
    let http_addr = listener.local_addr()?;
    tracing::info!(addr = %http_addr, "http listening");
    let router = http::router(state.clone(), config.http.auth_token.clone());
    let http_stop = CancellationToken::new();
    let http_task = {
        let stop = http_stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        })
    };

    tracing::info!(url = %mqtt::BrokerUrl::parse(&config.mqtt.url).map(|u| u.full).unwrap_or_default(), client_id = %config.mqtt.client_id, "connecting to broker");
    let (tx, rx) = mpsc::channel(1024);
    let poller_stop = CancellationToken::new();
    let retire = (mode == Mode::Retire).then(|| Arc::new(mqtt::Retire::default()));
    let poller = Poller {
        client: client.clone(),
        eventloop,
        subscriptions,
        forward_filters: ingest.filters(),
        client_id: config.mqtt.client_id.clone(),
        state: state.clone(),
        backoff: Backoff::RECONNECT,
        retire: retire.clone(),
    };
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    let poller_task = tokio::spawn(poller.run(tx, acks_rx, poller_stop.clone()));

    let wake = Arc::new(Notify::new());
    let ingest_task = IngestTask {
        ingest,
        acks: acks_tx,
        outbox: outbox.clone(),
        max_records: config.outbox.max_records,
        sender_wake: wake.clone(),
        state: state.clone(),
    };
    let ingest_stop = shutdown.child_token();
    let ingest_handle = tokio::spawn(ingest_task.run(rx, ingest_stop.clone()));

    let sender = Sender::new(
        &config,
        outbox.clone(),
        twinzo.clone(),
        directory.clone(),
        state.clone(),
        wake,
    );
    let hard_stop = CancellationToken::new();
    let sender_handle = tokio::spawn(sender.run(shutdown.clone(), hard_stop.clone()));

    let probe = tokio::spawn(probe_twinzo(
        twinzo,
        directory,
        state.clone(),
        shutdown.clone(),
    ));
    let retired = retire.map(|retire| {
        let decided = tokio::spawn(finish_retiring(
            retire.clone(),
            outbox.clone(),
            shutdown.clone(),
        ));
        (retire, decided)
    });
    let grace = Duration::from_secs(config.shutdown.grace_secs);
    let state_for_close = state.clone();
    let mqtt_config = config.mqtt.clone();

    let done = tokio::spawn(async move {
        let ingest_result = ingest_handle.await;
        let fatal = !shutdown.is_cancelled();
        if fatal {
            tracing::error!("ingest stopped on its own; shutting down");
            shutdown.cancel();
        }
        tracing::info!(grace_secs = grace.as_secs(), "shutting down");
        poller_stop.cancel();
        let _ = poller_task.await;
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        let mut sender_handle = sender_handle;
        tokio::select! {
            _ = &mut sender_handle => {}
            () = &mut deadline => {
                hard_stop.cancel();
                let _ = sender_handle.await;
            }
        }
        probe.abort();
        let _ = probe.await;
        http_stop.cancel();
        let _ = http_task.await;
        // The store closes with its last handle; the state (kept by callers) lets go of its.
        state_for_close.detach_outbox();
        let left = outbox.stats().records;
        drop(outbox);
        ingest_result?;
        if fatal {
            anyhow::bail!("the outbox could not be written; see the log above");
        }
        if let Some((retire, decided)) = retired {
            let Some(decided) = decided.await.ok().flatten() else {
                anyhow::bail!(
                    "not retired: stopped before the session was empty and the outbox \
                     delivered ({left} records kept); run retire again"
                );
            };
            // A publish after the decision was not delivered, perhaps not even stored: the
            // session must stay for another run.
            let late = retire.arrived() - decided;
            anyhow::ensure!(
                late == 0 && left == 0,
                "not retired: {late} messages came after the session looked empty \
                 ({left} records kept); run retire again"
            );
            mqtt::forget_session(&mqtt_config)
                .await
                .map_err(|e| anyhow::anyhow!("retired, but the session was not removed: {e}"))?;
            tracing::info!("retired: session removed from the broker");
        }
        tracing::info!("stopped");
        Ok(())
    });

    Ok(Running {
        http_addr,
        state,
        done,
    })
}

/// Runs until `shutdown` fires (or, retiring, until retired).
pub async fn run(config: Config, shutdown: CancellationToken, mode: Mode) -> anyhow::Result<()> {
    let running = start_in(config, shutdown, mode).await?;
    running.done.await?
}

/// Retire mode: waits until the session is empty (see [`mqtt::Retire::quiet`]) and the
/// outbox is delivered, then starts the shutdown. Returns how many publishes had come by then
/// (none: stopped first).
async fn finish_retiring(
    retire: Arc<mqtt::Retire>,
    outbox: Arc<Outbox>,
    shutdown: CancellationToken,
) -> Option<u64> {
    loop {
        if retire.quiet() && outbox.stats().records == 0 {
            let arrived = retire.arrived();
            tracing::info!(
                messages = arrived,
                "session empty and outbox delivered; retiring"
            );
            shutdown.cancel();
            return Some(arrived);
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Checks Twinzo credentials at start and every 30 s while they have not worked, so `/ready`
/// tells a bad password or API key before robots move. In device mode without a device table
/// there is no login to try: the first delivery decides.
async fn probe_twinzo(
    twinzo: Arc<Twinzo>,
    directory: Arc<Directory>,
    state: Arc<State>,
    stop: CancellationToken,
) {
    let login = directory.configured_logins().into_iter().next();
    loop {
        if !state.twinzo_ok.load(std::sync::atomic::Ordering::Relaxed) {
            let result = match (twinzo.mode(), &login) {
                (AuthMode::ApiKey, _) => Some(twinzo.check_api_key().await),
                (AuthMode::Device, Some(login)) => {
                    Some(twinzo.check_login(login, directory.password(login)).await)
                }
                (AuthMode::Device, None) => None,
            };
            match result {
                Some(Ok(())) => {
                    tracing::info!("twinzo credentials accepted");
                    state.set_twinzo(true, None);
                }
                Some(Err(e)) => {
                    let chain = crate::error_chain(&e);
                    tracing::warn!(error = %chain, "twinzo check failed");
                    state.set_twinzo(false, Some(chain));
                }
                None => {
                    if !state.twinzo_ok.load(std::sync::atomic::Ordering::Relaxed) {
                        state.set_twinzo(
                            false,
                            Some(
                                "waiting for the first delivery (no device configured to probe)"
                                    .into(),
                            ),
                        );
                    }
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}
