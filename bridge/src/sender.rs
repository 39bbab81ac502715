//! The sender: drains the outbox to Twinzo, per login, in order.
//!
//! Batches go on a timer, like Twinzo's own connector: at every flush tick, every login with
//! records gets a request; a login that reaches `batch.max_size` records goes at once. The tick
//! runs every `batch.max_age_ms` less the recent time Twinzo took to answer (at most half the
//! interval less), so a record reaches Twinzo within about `batch.max_age_ms` of arriving
//! rather than that plus the request. Each login has at most one request in flight, so its
//! records reach Twinzo in the order they were received. Device mode sends one request per login
//! (`max_concurrent_requests` at once); API-key mode puts up to 50 ready logins in one batch
//! call. A failed batch stays in the outbox and its login waits out a backoff: exponential
//! from `retry.min_delay_ms` to `retry.max_delay_ms`, with full jitter (a uniform draw between
//! the minimum and the current step), or the server's `Retry-After` when longer. When Twinzo
//! as a whole fails (any retry of the table in [`crate::twinzo::classify`]: no answer, 5xx,
//! 429, a wrong URL or key), the [`outage`] gate holds every login and probes
//! with one request per step of the same backoff; the first answer after a failed probe
//! releases every login at once. Retries never end by count: records leave only when
//! accepted, rejected into dead letters, or expired.
//!
//! On shutdown it sends everything due at once (while the outage gate is open, still one probe
//! per step) and stops when nothing is left or `hard_stop` fires; unsent records stay in the
//! outbox for the next start.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{AuthMode, Config};
use crate::devices::Directory;
use crate::outbox::{Outbox, Refusal, Settled};
use crate::state::State;
use crate::twinzo::client::now_ms;
use crate::twinzo::{Delivery, Location, Twinzo};
use crate::Backoff;

mod outage;

use outage::{Admit, Outage};

/// Logins per API-key batch call.
const LOGINS_PER_BATCH: usize = 50;

type Batch = (String, Vec<(u64, Location)>);

/// What one request did, and how long it took.
struct Done {
    took: Duration,
    /// The outage gate's opening, when the request was its probe.
    probe: Option<u64>,
    results: Vec<(Batch, Delivery)>,
}

/// The weight of the newest accepted request in the latency estimate.
const LATENCY_WEIGHT: f64 = 0.2;

/// Sends one request for `chunk`: one login in device mode, up to [`LOGINS_PER_BATCH`] in
/// API-key mode; one delivery per login, in order.
async fn deliver(twinzo: &Twinzo, directory: &Directory, chunk: &[Batch]) -> Vec<Delivery> {
    let locations = |records: &[(u64, Location)]| -> Vec<Location> {
        records.iter().map(|(_, l)| l.clone()).collect()
    };
    match twinzo.mode() {
        AuthMode::Device => {
            let (login, records) = &chunk[0];
            let password = directory.password(login);
            vec![
                twinzo
                    .send_device(login, password, &locations(records))
                    .await,
            ]
        }
        AuthMode::ApiKey => {
            let groups: Vec<(String, Vec<Location>)> = chunk
                .iter()
                .map(|(login, records)| (login.clone(), locations(records)))
                .collect();
            twinzo.send_batch(&groups).await
        }
    }
}

struct Waiting {
    until: Instant,
    delays: Box<dyn Iterator<Item = Duration> + Send>,
    /// Held for an outage failure: released when the outage ends.
    outage: bool,
}

pub struct Sender {
    pub outbox: Arc<Outbox>,
    pub twinzo: Arc<Twinzo>,
    pub directory: Arc<Directory>,
    pub state: Arc<State>,
    pub wake: Arc<Notify>,
    pub batch_size: usize,
    pub max_age_ms: i64,
    pub max_concurrent: usize,
    pub backoff: Backoff,
    pub expire_after_ms: Option<i64>,
    pub payload_cap: usize,
}

impl Sender {
    pub fn new(
        config: &Config,
        outbox: Arc<Outbox>,
        twinzo: Arc<Twinzo>,
        directory: Arc<Directory>,
        state: Arc<State>,
        wake: Arc<Notify>,
    ) -> Self {
        Sender {
            outbox,
            twinzo,
            directory,
            state,
            wake,
            batch_size: config.batch.max_size,
            max_age_ms: config.batch.max_age_ms as i64,
            max_concurrent: config.twinzo.max_concurrent_requests,
            backoff: Backoff::from(&config.retry),
            expire_after_ms: (config.outbox.max_age_secs > 0)
                .then(|| config.outbox.max_age_secs as i64 * 1000),
            payload_cap: config.outbox.dead_letter_payload_cap,
        }
    }

    /// Runs until `drain` fired and the outbox is empty, or `hard_stop` fired.
    pub async fn run(self, drain: CancellationToken, hard_stop: CancellationToken) {
        let mut busy: HashSet<String> = HashSet::new();
        let mut waiting: HashMap<String, Waiting> = HashMap::new();
        let mut requests: JoinSet<Done> = JoinSet::new();
        let mut gate = Outage::new(self.backoff);
        metrics::gauge!("bridge_twinzo_outage").set(0.0);
        let mut next_expiry = Instant::now();
        // Twinzo's recent answer time (ms), a moving average of accepted requests.
        let mut latency_ms = 0.0;
        let mut next_tick = Instant::now() + self.flush_period(latency_ms);
        let mut cutoff_ms = i64::MIN;

        loop {
            let draining = drain.is_cancelled();
            if draining && requests.is_empty() && self.outbox.stats().records == 0 {
                break;
            }
            let now = Instant::now();
            if now >= next_tick {
                cutoff_ms = now_ms();
                next_tick = (next_tick + self.flush_period(latency_ms)).max(now);
            }

            if let Some(max_age) = self.expire_after_ms.filter(|_| now >= next_expiry) {
                next_expiry = now + Duration::from_secs(5);
                self.expire(max_age).await;
            }

            match gate.admits(now) {
                Admit::All if requests.len() < self.max_concurrent => {
                    let skip = |login: &str| {
                        busy.contains(login) || waiting.get(login).is_some_and(|w| w.until > now)
                    };
                    let ready = self
                        .outbox
                        .ready(self.batch_size, cutoff_ms, draining, skip);
                    let slots = self.max_concurrent - requests.len();
                    self.launch(ready, slots, None, &mut busy, &mut requests);
                }
                Admit::Probe if requests.len() < self.max_concurrent => {
                    // Any login may probe, whatever its own backoff: the gate paces them.
                    let ready = self
                        .outbox
                        .ready(self.batch_size, cutoff_ms, draining, |l| busy.contains(l));
                    let ready = gate.probe_order(ready);
                    let epoch = gate.epoch();
                    let sent = self.launch(ready, 1, epoch, &mut busy, &mut requests);
                    gate.probe_started(&sent, now);
                }
                _ => {}
            }

            let due = Some(next_tick.saturating_duration_since(now));
            let retry = waiting
                .values()
                .filter(|w| w.until > now)
                .map(|w| w.until.saturating_duration_since(now))
                .min();
            let probe = gate.wake_at().map(|at| at.saturating_duration_since(now));
            let retry = if gate.is_open() { probe } else { retry };
            let nap = [due, retry, Some(Duration::from_secs(1))]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_default();
            // A request slot must free before more can go; don't spin while all are taken.
            let nap = if requests.len() >= self.max_concurrent {
                Duration::from_secs(60)
            } else {
                nap
            };

            tokio::select! {
                biased;
                () = hard_stop.cancelled() => break,
                Some(done) = requests.join_next(), if !requests.is_empty() => {
                    if let Ok(done) = done {
                        let results = &done.results;
                        if results.iter().all(|(_, d)| matches!(d, Delivery::Accepted { .. })) {
                            let ms = done.took.as_secs_f64() * 1000.0;
                            latency_ms += LATENCY_WEIGHT * (ms - latency_ms);
                        }
                        Self::pace(&mut gate, &done, &mut waiting);
                        let mut settled = Vec::with_capacity(done.results.len());
                        for ((login, records), delivery) in done.results {
                            busy.remove(&login);
                            settled.extend(self.settle(&login, records, delivery, &mut waiting));
                        }
                        self.store(settled).await;
                    }
                }
                () = self.wake.notified() => {}
                () = drain.cancelled(), if !draining => {}
                () = tokio::time::sleep(nap.max(Duration::from_millis(1))) => {}
            }
        }
        let left = self.outbox.stats().records;
        tracing::info!(records_kept = left, "sender stopped");
    }

    /// The time between flush ticks: the interval less Twinzo's recent answer time, so records
    /// are delivered, not only sent, within the interval; never less than half of it.
    fn flush_period(&self, latency_ms: f64) -> Duration {
        let interval = self.max_age_ms.max(1) as f64;
        Duration::from_secs_f64((interval - latency_ms).max(interval / 2.0) / 1000.0)
    }

    /// Feeds a finished request to the outage gate. An outage failure opens the gate or, for
    /// the probe, steps its backoff; any answer closes it, and when the outage was confirmed
    /// by a failed probe, every login held for it is released.
    fn pace(gate: &mut Outage, done: &Done, waiting: &mut HashMap<String, Waiting>) {
        let outages: Option<Vec<(Option<Duration>, &str)>> = done
            .results
            .iter()
            .map(|(_, d)| match d {
                Delivery::Retry {
                    outage: true,
                    after,
                    reason,
                } => Some((*after, reason.as_str())),
                _ => None,
            })
            .collect();
        match outages {
            Some(outages) if !outages.is_empty() => {
                let logins: Vec<&str> = done.results.iter().map(|((l, _), _)| l.as_str()).collect();
                let after = outages.iter().filter_map(|(a, _)| *a).max();
                let reason = outages[0].1;
                let opening = !gate.is_open();
                if let Some(wait) = gate.failed(&logins, done.probe, after, Instant::now()) {
                    let retry_in_ms = wait.as_millis() as u64;
                    if opening {
                        tracing::warn!(
                            reason,
                            retry_in_ms,
                            "twinzo failing; holding all logins, probing with one request"
                        );
                    } else {
                        tracing::debug!(reason, retry_in_ms, "twinzo probe failed");
                    }
                }
                metrics::gauge!("bridge_twinzo_outage").set(1.0);
            }
            _ => {
                let was_open = gate.is_open();
                if gate.answered() {
                    let held = waiting.values().filter(|w| w.outage).count();
                    waiting.retain(|_, w| !w.outage);
                    tracing::info!(
                        logins = held,
                        "twinzo answers again; sending every held login"
                    );
                } else if was_open {
                    tracing::info!("twinzo answers; only the failed request's logins back off");
                }
                metrics::gauge!("bridge_twinzo_outage").set(0.0);
            }
        }
    }

    /// Starts at most `max_requests` requests for ready logins, in order; returns the logins
    /// they carry.
    fn launch(
        &self,
        ready: Vec<String>,
        max_requests: usize,
        probe: Option<u64>,
        busy: &mut HashSet<String>,
        requests: &mut JoinSet<Done>,
    ) -> Vec<String> {
        let per_request = match self.twinzo.mode() {
            AuthMode::Device => 1,
            AuthMode::ApiKey => LOGINS_PER_BATCH,
        };
        let mut batches: Vec<Batch> = Vec::new();
        for login in ready.into_iter() {
            if batches.len() == max_requests * per_request {
                break;
            }
            match self.outbox.peek_locations(&login, self.batch_size) {
                Ok(records) if !records.is_empty() => {
                    busy.insert(login.clone());
                    batches.push((login, records));
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %crate::error_chain(&e), "outbox read failed"),
            }
        }
        let sent: Vec<String> = batches.iter().map(|(login, _)| login.clone()).collect();
        let mut batches = batches.into_iter().peekable();
        while batches.peek().is_some() {
            let chunk: Vec<Batch> = batches.by_ref().take(per_request).collect();
            let twinzo = self.twinzo.clone();
            let directory = self.directory.clone();
            requests.spawn(async move {
                let started = Instant::now();
                // A panic must not leave the logins busy (or the gate probing) for good:
                // it counts as a failed request, and the records stay in the outbox.
                let deliveries = AssertUnwindSafe(deliver(&twinzo, &directory, &chunk))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| {
                        tracing::error!("twinzo request task panicked; records are kept");
                        let failed = Delivery::Retry {
                            after: None,
                            reason: "request task panicked".into(),
                            outage: true,
                        };
                        vec![failed; chunk.len()]
                    });
                Done {
                    took: started.elapsed(),
                    probe,
                    results: chunk.into_iter().zip(deliveries).collect(),
                }
            });
        }
        sent
    }

    /// Counts one login's delivery and updates its backoff; returns what the outbox must
    /// do with its records (nothing when they are to be retried).
    fn settle(
        &self,
        login: &str,
        records: Vec<(u64, Location)>,
        delivery: Delivery,
        waiting: &mut HashMap<String, Waiting>,
    ) -> Option<Settled> {
        let now = now_ms();
        let c = &self.state.counters;
        let n = records.len() as u64;
        let refusal = |reason: &str, detail: &str| Refusal {
            reason: reason.to_string(),
            detail: detail.to_string(),
        };
        let (delivered, rejected): (Vec<u64>, Vec<(u64, Refusal)>) = match delivery {
            Delivery::Accepted { rejected } => {
                waiting.remove(login);
                self.state.set_twinzo(true, None);
                let refused: HashMap<i64, String> = rejected.into_iter().collect();
                let mut ok = Vec::new();
                let mut bad = Vec::new();
                for (seq, location) in records {
                    match refused.get(&location.timestamp) {
                        Some(why) => bad.push((seq, refusal("twinzo_rejected", why))),
                        None => ok.push(seq),
                    }
                }
                (ok, bad)
            }
            Delivery::Retry {
                after,
                reason,
                outage,
            } => {
                c.retried.fetch_add(n, Ordering::Relaxed);
                metrics::counter!("bridge_records_retried_total").increment(n);
                let entry = waiting.entry(login.to_string()).or_insert_with(|| Waiting {
                    until: Instant::now(),
                    delays: Box::new(self.backoff.delays()),
                    outage,
                });
                entry.outage = outage;
                let step = entry.delays.next().unwrap_or(self.backoff.max);
                let delay = after.map_or(step, |a| a.max(step));
                entry.until = Instant::now() + delay;
                if !self.twinzo.reachable() {
                    self.state.set_twinzo(false, Some(reason.clone()));
                }
                self.state
                    .record_error("twinzo", format!("{login}: {reason}"), now);
                let retry_in_ms = delay.as_millis() as u64;
                if outage {
                    // The outage gate logs the outage once; per login it is detail.
                    tracing::debug!(
                        login,
                        records = n,
                        reason = %reason,
                        retry_in_ms,
                        "twinzo delivery failed; will retry"
                    );
                } else {
                    tracing::warn!(
                        login,
                        records = n,
                        reason = %reason,
                        retry_in_ms,
                        "twinzo delivery failed; will retry"
                    );
                }
                return None;
            }
            Delivery::Reject { code, reason } => {
                waiting.remove(login);
                tracing::error!(login, records = n, code, reason = %reason, "twinzo rejected records; moved to dead letters");
                self.state
                    .record_error("twinzo", format!("{login}: {reason}"), now);
                let bad = records
                    .iter()
                    .map(|(seq, _)| (*seq, refusal(code, &reason)))
                    .collect();
                (Vec::new(), bad)
            }
        };

        let (ok, bad) = (delivered.len() as u64, rejected.len() as u64);
        c.delivered.fetch_add(ok, Ordering::Relaxed);
        c.rejected.fetch_add(bad, Ordering::Relaxed);
        metrics::counter!("bridge_records_forwarded_total").increment(ok);
        metrics::counter!("bridge_records_rejected_total").increment(bad);
        metrics::counter!("bridge_records_dead_lettered_total", "reason" => "rejected")
            .increment(bad);
        Some(Settled {
            login: login.to_string(),
            delivered,
            rejected,
        })
    }

    /// Applies the settled records of one request to the outbox, in one transaction.
    async fn store(&self, settled: Vec<Settled>) {
        if settled.is_empty() {
            return;
        }
        let outbox = self.outbox.clone();
        let cap = self.payload_cap;
        let stored =
            tokio::task::spawn_blocking(move || outbox.finish(&settled, cap, now_ms())).await;
        match stored {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %crate::error_chain(&e), "outbox update failed; records may be sent again");
            }
            Err(e) => {
                tracing::error!(error = %e, "outbox update task failed; records may be sent again");
            }
        }
    }

    async fn expire(&self, max_age_ms: i64) {
        let outbox = self.outbox.clone();
        let cap = self.payload_cap;
        let now = now_ms();
        match tokio::task::spawn_blocking(move || outbox.expire(now - max_age_ms, now, cap)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                self.state
                    .counters
                    .dead_lettered
                    .fetch_add(n as u64, Ordering::Relaxed);
                metrics::counter!("bridge_records_dead_lettered_total", "reason" => "expired")
                    .increment(n as u64);
                tracing::error!(
                    records = n,
                    "records expired before delivery; moved to dead letters"
                );
            }
            Ok(Err(e)) => tracing::error!(error = %crate::error_chain(&e), "outbox expiry failed"),
            Err(e) => tracing::error!(error = %e, "outbox expiry task failed"),
        }
    }
}
