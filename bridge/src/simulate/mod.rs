//! `twinzo-bridge simulate`: an ATI fleet simulator and load generator.
//!
//! It publishes realistic ATI sherpa status messages (or VDA 5050 `state` and `visualization`)
//! for N robots at a fixed rate per robot to any broker URL, and reports how many the broker
//! acknowledged. The parts:
//!
//! - [`SimulateArgs`] (`args.rs`): the command line.
//! - [`Fleet`] (`fleet.rs`, `path.rs`, `payload.rs`): robots moving on a loop or between random
//!   waypoints, batteries, trips, faults, and the JSON they send. No I/O; tests and benchmarks
//!   use it to build messages without a broker.
//! - `link.rs`: the MQTT connection. Its event loop runs in a task of its own, counts PubAcks
//!   and reconnects with backoff, holding on to unacknowledged messages (see its docs).
//! - [`run`] (here): the schedule. Message `k` of the run is due at `k / (robots * rate)`
//!   seconds and comes from robot `k % robots`, so robots are staggered evenly. A tick publishes
//!   everything due; after a stall (broker away, channel full) the schedule skips ahead rather
//!   than bursting more than a second's worth.
//!
//! With QoS 1 a message counts as sent once its PubAck arrived. `--count` is exact: the run
//! generates that many messages and waits up to `--drain-timeout` for their acknowledgements;
//! the rest are reported as failed. With QoS 0 a message counts once written to the socket.
//! Delivery is at least once: across a reconnect a subscriber may see a message twice, so count
//! distinct `message_id`s (ATI) or `headerId`s per topic (VDA) when exactness matters.
//! `per_robot` counts the messages generated per robot, which equals what was sent unless the
//! report shows failures (acknowledgements do not say which robot they belong to).

mod args;
mod fleet;
mod link;
mod path;
mod payload;

pub use args::{Format, Password, PathKind, PoseShape, SimulateArgs};
pub use fleet::{Fleet, FleetConfig};
pub use link::LinkError;
pub use path::Region;
pub use payload::iso_millis;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use anyhow::Context as _;
use rumqttc::{AsyncClient, QoS};
use tokio::sync::watch;
use tokio::task::JoinError;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use link::Progress;

/// Requests the client may queue ahead of the event loop.
const CHANNEL_CAPACITY: usize = 8192;
/// Unacknowledged QoS 1 publishes on the wire.
const INFLIGHT: u16 = 200;
const MIN_TICK: Duration = Duration::from_millis(1);
const MAX_TICK: Duration = Duration::from_millis(100);
/// After a stall longer than this the schedule restarts from now instead of catching up.
const MAX_LAG: Duration = Duration::from_secs(1);
/// How long the event loop gets to send the DISCONNECT at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a run sent; printed by the caller as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimReport {
    /// Acknowledged by the broker (QoS 1) or written to the connection (QoS 0).
    pub sent: u64,
    /// Generated but not acknowledged within the drain timeout.
    pub failed: u64,
    /// Messages generated per robot.
    pub per_robot: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl fmt::Display for SimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.sent as f64 / secs
        } else {
            0.0
        };
        write!(
            f,
            "sent {} messages, {} failed, from {} robots in {secs:.2} s ({rate:.1} msg/s",
            self.sent,
            self.failed,
            self.per_robot.len()
        )?;
        let min = self.per_robot.values().min().copied().unwrap_or(0);
        let max = self.per_robot.values().max().copied().unwrap_or(0);
        if min == max {
            write!(f, ", {min} per robot)")
        } else {
            write!(f, ", {min} to {max} per robot)")
        }
    }
}

/// Runs the simulator until `--count`, `--duration` or `shutdown`, then waits (bounded) for the
/// outstanding acknowledgements. Fails when the broker cannot be reached within
/// `--connect-timeout` or refuses the credentials.
pub async fn run(args: SimulateArgs, shutdown: CancellationToken) -> anyhow::Result<SimReport> {
    let started = Instant::now();
    if args.topic_template.is_empty() || args.topic_template.contains(['+', '#']) {
        anyhow::bail!("--topic-template must be a topic name without wildcards");
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let client_id = args
        .client_id
        .clone()
        .unwrap_or_else(|| format!("sim-{:08x}", rand::random::<u32>()));
    let options = link::options(
        &args.url,
        &client_id,
        args.credentials()?,
        args.durable,
        INFLIGHT,
    )?;
    let qos = if args.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let mut fleet = Fleet::new(args.fleet_config(seed));

    let (client, eventloop) = AsyncClient::new(options, CHANNEL_CAPACITY);
    let (progress_tx, progress) = watch::channel(Progress::default());
    let stop = CancellationToken::new();
    let mut driver = tokio::spawn(link::drive(eventloop, progress_tx, stop.clone()));
    info!(
        broker = %args.url,
        client_id,
        robots = args.robots,
        rate_hz = args.rate,
        format = ?args.format,
        seed,
        "simulator starting"
    );

    let produced = tokio::select! {
        produced = produce(&args, &mut fleet, &client, qos, progress.clone(), &shutdown) => {
            produced
        }
        joined = &mut driver => return Err(link_failure(joined)),
    };
    if driver.is_finished() {
        return Err(link_failure(driver.await));
    }

    // Close politely when connected; the driver ends once the DISCONNECT is out.
    let connected = progress.borrow().connected;
    if !connected || client.try_disconnect().is_err() {
        stop.cancel();
    }
    if tokio::time::timeout(CLOSE_TIMEOUT, &mut driver)
        .await
        .is_err()
    {
        stop.cancel();
        let _ = driver.await;
    }

    let (generated, sent) = produced?;
    let per_robot = (0..fleet.len()).map(|i| (fleet.robot_name(i).to_owned(), generated[i]));
    let report = SimReport {
        sent,
        failed: generated.iter().sum::<u64>() - sent,
        per_robot: per_robot.collect(),
        elapsed: started.elapsed(),
    };
    info!(
        sent = report.sent,
        failed = report.failed,
        "simulator finished"
    );
    Ok(report)
}

/// Waits for the first connection, publishes on schedule, then waits for delivery. Returns the
/// messages generated per robot and how many of them were delivered.
async fn produce(
    args: &SimulateArgs,
    fleet: &mut Fleet,
    client: &AsyncClient,
    qos: QoS,
    mut progress: watch::Receiver<Progress>,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Vec<u64>, u64)> {
    let mut per_robot = vec![0u64; fleet.len()];
    let first = tokio::select! {
        _ = shutdown.cancelled() => return Ok((per_robot, 0)),
        first = tokio::time::timeout(args.connect_timeout, progress.wait_for(|p| p.connected)) => {
            first.map(|r| r.is_ok())
        }
    };
    if first != Ok(true) {
        let last = progress
            .borrow()
            .last_error
            .clone()
            .unwrap_or_else(|| "no answer".into());
        anyhow::bail!(
            "could not connect to the broker within {} s (last error: {last})",
            args.connect_timeout.as_secs_f64()
        );
    }

    let robots = fleet.len() as u64;
    let period = Duration::from_secs_f64(1.0 / (robots as f64 * args.rate));
    let mut ticker = tokio::time::interval(period.clamp(MIN_TICK, MAX_TICK));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let limit = args.count.unwrap_or(u64::MAX);
    let begun = Instant::now();
    let ended = until(args.duration.map(|d| begun + d));
    let cancelled = shutdown.cancelled();
    tokio::pin!(ended, cancelled);

    let mut next_due = begun;
    let mut generated = 0u64;
    'generate: while generated < limit {
        tokio::select! {
            biased;
            _ = &mut cancelled => break,
            _ = &mut ended => break,
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        if now.saturating_duration_since(next_due) > MAX_LAG {
            next_due = now;
        }
        while next_due <= now && generated < limit {
            let idx = (generated % robots) as usize;
            let (topic, payload) = fleet.next_message(idx);
            tokio::select! {
                biased;
                _ = &mut cancelled => break 'generate,
                _ = &mut ended => break 'generate,
                sent = client.publish(topic, qos, false, payload) => {
                    sent.context("mqtt event loop stopped")?;
                }
            }
            generated += 1;
            per_robot[idx] += 1;
            next_due += period;
        }
    }

    let delivered = move |p: &Progress| {
        if qos == QoS::AtMostOnce {
            p.written
        } else {
            p.acked
        }
    };
    let drained = progress.wait_for(|p| delivered(p) >= generated);
    if tokio::time::timeout(args.drain_timeout, drained)
        .await
        .is_err()
    {
        let outstanding = generated.saturating_sub(delivered(&progress.borrow()));
        warn!(
            generated,
            outstanding, "simulator gave up waiting for acknowledgements"
        );
    }
    let sent = delivered(&progress.borrow()).min(generated);
    Ok((per_robot, sent))
}

/// Completes at `deadline`, or never.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn link_failure(joined: Result<Result<(), LinkError>, JoinError>) -> anyhow::Error {
    match joined {
        Ok(Err(err)) => err.into(),
        Ok(Ok(())) => anyhow::anyhow!("mqtt event loop stopped"),
        Err(err) => anyhow::Error::new(err).context("mqtt event loop failed"),
    }
}

#[cfg(test)]
mod tests;
