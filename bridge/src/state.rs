//! What the bridge knows about itself and the fleet, for `/ready`, `/api/status` and the
//! dashboard. Writers are the MQTT loop, the ingest and the sender; readers take snapshots.
//! Every collection here is bounded: topics (1,000), robots (5,000), recent errors (50).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::normalize::{truncate, Record};
use crate::outbox::{Outbox, OutboxStats};
use crate::twinzo::Location;

const MAX_TOPICS: usize = 1000;
const MAX_ROBOTS: usize = 5000;
const MAX_ERRORS: usize = 50;
const RATE_WINDOW_MS: i64 = 10_000;

/// One robot as last seen.
#[derive(Debug, Clone, Serialize)]
pub struct Robot {
    pub device: String,
    pub login: String,
    pub sector_id: i32,
    /// Robot frame, metres.
    pub x: f64,
    pub y: f64,
    /// Twinzo sector frame, millimetres.
    pub twinzo_x: f32,
    pub twinzo_y: f32,
    pub heading: Option<f64>,
    pub battery: Option<f64>,
    pub moving: bool,
    pub mode: Option<String>,
    pub error: Option<String>,
    pub measured_at_ms: i64,
    pub last_seen_ms: i64,
    /// Messages per second over the last ten seconds.
    pub rate: f64,
    #[serde(skip)]
    recent: VecDeque<i64>,
}

/// One topic seen on the watch subscription.
#[derive(Debug, Clone, Serialize)]
pub struct Topic {
    pub topic: String,
    pub count: u64,
    pub rate: f64,
    pub last_seen_ms: i64,
    /// The last payload's head as text (at most 512 characters), filled in by snapshots.
    pub last_payload: String,
    #[serde(skip)]
    last_bytes: Vec<u8>,
    #[serde(skip)]
    recent: VecDeque<i64>,
}

/// Payload bytes kept per topic for its preview.
const PAYLOAD_HEAD: usize = 1024;

#[derive(Debug, Clone, Serialize)]
pub struct ErrorEvent {
    pub at_ms: i64,
    pub kind: String,
    pub message: String,
}

/// Broker connection as the MQTT loop sees it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BrokerState {
    /// Our client id (the broker keeps our session under it).
    pub client_id: String,
    /// The shared subscription group, when this process is one member of several.
    pub shared_group: Option<String>,
    pub connected: bool,
    pub subscribed: bool,
    pub since_ms: i64,
    pub reconnects: u64,
    pub last_error: Option<String>,
}

/// Pipeline counters since start.
#[derive(Debug, Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub accepted: AtomicU64,
    pub skipped: AtomicU64,
    pub duplicates: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub rejected: AtomicU64,
}

/// Shared state of one running bridge.
pub struct State {
    pub started_ms: i64,
    pub broker: Mutex<BrokerState>,
    pub twinzo_ok: AtomicBool,
    pub twinzo_error: Mutex<Option<String>>,
    /// True while the outbox is full and MQTT acknowledgements are held back.
    pub backpressure: AtomicBool,
    pub counters: Counters,
    robots: Mutex<BTreeMap<String, Robot>>,
    topics: Mutex<BTreeMap<String, Topic>>,
    errors: Mutex<VecDeque<ErrorEvent>>,
    outbox: Mutex<Option<Arc<Outbox>>>,
}

/// Everything `/api/status` returns.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub now_ms: i64,
    pub started_ms: i64,
    pub ready: bool,
    pub broker: BrokerState,
    pub twinzo: TwinzoSnapshot,
    pub outbox: OutboxStats,
    pub backpressure: bool,
    pub counters: BTreeMap<&'static str, u64>,
    pub robots: Vec<Robot>,
    pub topics: Vec<Topic>,
    pub errors: Vec<ErrorEvent>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TwinzoSnapshot {
    pub ok: bool,
    pub last_error: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn rate(recent: &mut VecDeque<i64>, now: i64) -> f64 {
    while recent.front().is_some_and(|t| now - t > RATE_WINDOW_MS) {
        recent.pop_front();
    }
    recent.len() as f64 * 1000.0 / RATE_WINDOW_MS as f64
}

impl State {
    pub fn new(now_ms: i64) -> Arc<State> {
        Arc::new(State {
            started_ms: now_ms,
            broker: Mutex::new(BrokerState::default()),
            twinzo_ok: AtomicBool::new(false),
            twinzo_error: Mutex::new(None),
            backpressure: AtomicBool::new(false),
            counters: Counters::default(),
            robots: Mutex::new(BTreeMap::new()),
            topics: Mutex::new(BTreeMap::new()),
            errors: Mutex::new(VecDeque::new()),
            outbox: Mutex::new(None),
        })
    }

    pub fn attach_outbox(&self, outbox: Arc<Outbox>) {
        *lock(&self.outbox) = Some(outbox);
    }

    /// Lets go of the outbox at shutdown, so the store file is closed and unlocked.
    pub fn detach_outbox(&self) {
        *lock(&self.outbox) = None;
    }

    pub fn set_broker(&self, f: impl FnOnce(&mut BrokerState)) {
        f(&mut lock(&self.broker));
    }

    pub fn set_twinzo(&self, ok: bool, error: Option<String>) {
        self.twinzo_ok.store(ok, Ordering::Relaxed);
        if let Some(e) = error {
            *lock(&self.twinzo_error) = Some(e);
        } else if ok {
            *lock(&self.twinzo_error) = None;
        }
    }

    /// `None` when ready, else why not.
    pub fn not_ready(&self) -> Option<String> {
        let broker = lock(&self.broker).clone();
        if !broker.connected {
            return Some(format!(
                "broker not connected{}",
                broker
                    .last_error
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
        if !broker.subscribed {
            return Some("broker connected, not yet subscribed".into());
        }
        if !self.twinzo_ok.load(Ordering::Relaxed) {
            let why = lock(&self.twinzo_error)
                .clone()
                .unwrap_or_else(|| "not yet verified".into());
            return Some(format!("twinzo not reachable: {why}"));
        }
        None
    }

    pub fn record_error(&self, kind: &str, message: String, now_ms: i64) {
        let mut errors = lock(&self.errors);
        if errors.len() == MAX_ERRORS {
            errors.pop_front();
        }
        errors.push_back(ErrorEvent {
            at_ms: now_ms,
            kind: kind.into(),
            message,
        });
    }

    /// Counts one message seen on the watch subscription. Called for every message, so it
    /// only copies the payload's head; the text shown is made when a snapshot is taken.
    pub fn observe_topic(&self, topic: &str, payload: &[u8], now_ms: i64) {
        let mut topics = lock(&self.topics);
        if !topics.contains_key(topic) {
            if topics.len() >= MAX_TOPICS {
                return;
            }
            let fresh = Topic {
                topic: topic.to_string(),
                count: 0,
                rate: 0.0,
                last_seen_ms: now_ms,
                last_payload: String::new(),
                last_bytes: Vec::new(),
                recent: VecDeque::new(),
            };
            topics.insert(topic.to_string(), fresh);
        }
        let Some(entry) = topics.get_mut(topic) else {
            return;
        };
        entry.count += 1;
        entry.last_seen_ms = now_ms;
        entry.last_bytes.clear();
        entry
            .last_bytes
            .extend_from_slice(&payload[..payload.len().min(PAYLOAD_HEAD)]);
        if entry.recent.len() < 1000 {
            entry.recent.push_back(now_ms);
        }
    }

    /// Updates a robot from an accepted record.
    pub fn observe_robot(&self, record: &Record, login: &str, location: &Location, now_ms: i64) {
        let mut robots = lock(&self.robots);
        if !robots.contains_key(&record.device) {
            if robots.len() >= MAX_ROBOTS {
                return;
            }
            robots.insert(
                record.device.clone(),
                Robot {
                    device: record.device.clone(),
                    login: String::new(),
                    sector_id: location.sector_id,
                    x: 0.0,
                    y: 0.0,
                    twinzo_x: 0.0,
                    twinzo_y: 0.0,
                    heading: None,
                    battery: None,
                    moving: false,
                    mode: None,
                    error: None,
                    measured_at_ms: 0,
                    last_seen_ms: 0,
                    rate: 0.0,
                    recent: VecDeque::new(),
                },
            );
        }
        let Some(robot) = robots.get_mut(&record.device) else {
            return;
        };
        // This runs for every message: fields are overwritten in place, without allocating.
        if robot.login != login {
            login.clone_into(&mut robot.login);
        }
        robot.sector_id = location.sector_id;
        robot.x = record.x;
        robot.y = record.y;
        robot.twinzo_x = location.x;
        robot.twinzo_y = location.y;
        robot.heading = record.heading;
        robot.battery = record.battery;
        robot.moving = location.is_moving;
        robot.mode.clone_from(&record.mode);
        robot.error.clone_from(&record.error);
        robot.measured_at_ms = record.measured_at_ms;
        robot.last_seen_ms = now_ms;
        if robot.recent.len() < 1000 {
            robot.recent.push_back(now_ms);
        }
    }

    pub fn snapshot(&self, now_ms: i64) -> Snapshot {
        let outbox = lock(&self.outbox)
            .as_ref()
            .map(|o| o.stats())
            .unwrap_or_default();
        let robots = lock(&self.robots)
            .values_mut()
            .map(|r| {
                r.rate = rate(&mut r.recent, now_ms);
                r.clone()
            })
            .collect();
        let mut topics: Vec<Topic> = lock(&self.topics)
            .values_mut()
            .map(|t| {
                t.rate = rate(&mut t.recent, now_ms);
                t.last_payload = truncate(&String::from_utf8_lossy(&t.last_bytes), 512);
                t.clone()
            })
            .collect();
        topics.sort_by_key(|t| std::cmp::Reverse(t.last_seen_ms));
        let c = &self.counters;
        let counters = [
            ("received", &c.received),
            ("accepted", &c.accepted),
            ("skipped", &c.skipped),
            ("duplicates", &c.duplicates),
            ("dead_lettered", &c.dead_lettered),
            ("delivered", &c.delivered),
            ("retried", &c.retried),
            ("rejected", &c.rejected),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.load(Ordering::Relaxed)))
        .collect();
        Snapshot {
            now_ms,
            started_ms: self.started_ms,
            ready: self.not_ready().is_none(),
            broker: lock(&self.broker).clone(),
            twinzo: TwinzoSnapshot {
                ok: self.twinzo_ok.load(Ordering::Relaxed),
                last_error: lock(&self.twinzo_error).clone(),
            },
            outbox,
            backpressure: self.backpressure.load(Ordering::Relaxed),
            counters,
            robots,
            topics,
            errors: lock(&self.errors).iter().rev().cloned().collect(),
        }
    }
}
