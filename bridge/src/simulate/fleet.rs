//! The simulated fleet: where each robot is, what it is doing, and the message it sends next.
//!
//! Pure state with no I/O, so tests and benchmarks build realistic messages without a broker.
//! Each message advances its robot by one period of simulated time (`1 / rate` seconds), not by
//! wall-clock time: with the same seed, robot `i`'s n-th message always carries the same pose,
//! mode, battery, trip and message id. Only the timestamp comes from the clock, made strictly
//! increasing per robot so that `(robot, timestamp)` identifies a message.
//!
//! A robot drives its path at `speed`, its battery draining while it moves. Below 25 % it heads
//! for its charger (its start point on the loop, a dock on the region's left edge otherwise) and
//! charges to 95 %. A share of robots (`error_rate`) is flaky: about once every 90 simulated
//! seconds one of them stops in `error` (with an error text) or `disconnected` for 5 to 20
//! seconds, then recovers.

use std::f64::consts::PI;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::path::{Path, Region};
use super::payload::{self, round};
use super::{Format, PathKind, PoseShape};

const LOW_BATTERY: f64 = 25.0;
const CHARGED: f64 = 95.0;
/// Percent per simulated second: a full battery lasts about 17 minutes of driving.
const DRAIN_MOVING: f64 = 0.1;
const DRAIN_IDLE: f64 = 0.005;
const CHARGE_RATE: f64 = 1.0;
const MEAN_SECS_BETWEEN_FAULTS: f64 = 90.0;
const VDA_VERSION: &str = "2.0.0";

const ERRORS: [(&str, &str); 4] = [
    ("Mule app down", ""),
    ("obstacle blocking the path", ""),
    ("localization lost", ""),
    ("emergency stop pressed", "emergency_stop"),
];

/// What [`Fleet`] needs to know; [`super::SimulateArgs`] builds one from the command line.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub robots: usize,
    pub robot_prefix: String,
    /// Messages per second per robot; one message is `1 / rate_hz` of simulated time.
    pub rate_hz: f64,
    pub path: PathKind,
    pub region: Region,
    pub speed_mps: f64,
    pub pose: PoseShape,
    pub format: Format,
    /// ATI topic with `{robot}` for the robot name.
    pub topic_template: String,
    /// VDA 5050 manufacturer; the robot name is the serial number.
    pub manufacturer: String,
    pub map_id: String,
    /// Fraction of robots that now and then fail and recover.
    pub error_rate: f64,
    /// Send ATI `battery_status` -1 (unknown) instead of the charge.
    pub unknown_battery: bool,
    pub seed: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            robots: 5,
            robot_prefix: "sim-".into(),
            rate_hz: 1.0,
            path: PathKind::Loop,
            region: Region {
                x0: 0.0,
                y0: 0.0,
                x1: 40.0,
                y1: 25.0,
            },
            speed_mps: 1.2,
            pose: PoseShape::Three,
            format: Format::Ati,
            topic_template: "ati/{robot}/status".into(),
            manufacturer: "sim".into(),
            map_id: "map-1".into(),
            error_rate: 0.0,
            unknown_battery: false,
            seed: 0,
        }
    }
}

/// Every robot of the simulation.
#[derive(Debug)]
pub struct Fleet {
    config: FleetConfig,
    path: Path,
    robots: Vec<Robot>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Activity {
    Driving,
    /// Loading or unloading at a waypoint, seconds left.
    Dwelling(f64),
    GoingToCharge,
    Charging,
    /// Index into [`ERRORS`] (or `None` for disconnected), seconds left.
    Fault(Option<usize>, f64),
}

#[derive(Debug)]
struct Robot {
    name: String,
    rng: StdRng,
    x: f64,
    y: f64,
    heading: f64,
    /// Position along the loop in metres (loop path only).
    s: f64,
    /// Where the robot charges: a loop position, or a point in the region.
    dock_s: f64,
    dock: (f64, f64),
    waypoint: (f64, f64),
    legs_left: u32,
    activity: Activity,
    moving: bool,
    battery: f64,
    flaky: bool,
    trip: Option<(u64, u64)>,
    trips: u64,
    legs: u64,
    /// Metres driven since the current leg started (loop path).
    leg_progress: f64,
    seq: u64,
    last_ms: i64,
}

impl Fleet {
    pub fn new(config: FleetConfig) -> Fleet {
        let n = config.robots.max(1);
        let path = Path::new(config.path, config.region);
        let mut pick = StdRng::seed_from_u64(config.seed);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut pick);
        let flaky_count = match config.error_rate {
            r if r <= 0.0 => 0,
            r => ((r * n as f64).round() as usize).clamp(1, n),
        };
        let width = n.to_string().len().max(2);

        let robots = (0..n)
            .map(|i| {
                let name = format!("{}{:0width$}", config.robot_prefix, i + 1);
                let seed = config.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let mut rng = StdRng::seed_from_u64(seed);
                let dock_s = path.length() * i as f64 / n as f64;
                let dock = path.dock(i, n);
                let (x, y, heading, waypoint) = match config.path {
                    PathKind::Loop => {
                        let (x, y, h) = path.at(dock_s);
                        (x, y, h, (x, y))
                    }
                    PathKind::Region => {
                        let (x, y) = path.random_point(&mut rng);
                        (x, y, rng.random_range(-PI..PI), path.random_point(&mut rng))
                    }
                };
                Robot {
                    name,
                    x,
                    y,
                    heading,
                    s: dock_s,
                    dock_s,
                    dock,
                    waypoint,
                    legs_left: 0,
                    activity: Activity::Driving,
                    moving: false,
                    battery: rng.random_range(40.0..100.0),
                    flaky: order[..flaky_count].contains(&i),
                    trip: None,
                    trips: 0,
                    legs: 0,
                    leg_progress: 0.0,
                    seq: 0,
                    last_ms: i64::MIN,
                    rng,
                }
            })
            .collect();
        Fleet {
            config,
            path,
            robots,
        }
    }

    pub fn len(&self) -> usize {
        self.robots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.robots.is_empty()
    }

    pub fn robot_name(&self, idx: usize) -> &str {
        &self.robots[idx].name
    }

    /// The robot's next message `(topic, payload)`, stamped with the current time.
    pub fn next_message(&mut self, idx: usize) -> (String, Vec<u8>) {
        self.next_message_at(idx, chrono::Utc::now().timestamp_millis())
    }

    /// The robot's next message, stamped `max(now_ms, previous + 1 ms)`. Panics when `idx` is
    /// not below [`Fleet::len`].
    pub fn next_message_at(&mut self, idx: usize, now_ms: i64) -> (String, Vec<u8>) {
        let dt = 1.0 / self.config.rate_hz;
        let n = self.robots.len();
        let robot = &mut self.robots[idx];
        if robot.seq > 0 {
            robot.step(dt, &self.path, &self.config, idx, n);
        }
        robot.last_ms = now_ms.max(robot.last_ms.saturating_add(1));
        let timestamp = payload::iso_millis(robot.last_ms);
        let message = match self.config.format {
            Format::Ati => robot.ati(&self.config, &timestamp),
            Format::Vda5050 => robot.vda(&self.config, &timestamp),
        };
        robot.seq += 1;
        message
    }
}

impl Robot {
    fn step(&mut self, dt: f64, path: &Path, config: &FleetConfig, idx: usize, n: usize) {
        self.moving = false;
        match self.activity {
            Activity::Fault(kind, left) => {
                self.activity = if left > dt {
                    Activity::Fault(kind, left - dt)
                } else {
                    Activity::Driving
                };
                return;
            }
            Activity::Charging => {
                self.battery = (self.battery + CHARGE_RATE * dt).min(100.0);
                if self.battery >= CHARGED {
                    self.activity = Activity::Driving;
                }
                return;
            }
            Activity::Dwelling(left) => {
                self.battery = (self.battery - DRAIN_IDLE * dt).max(0.0);
                self.activity = if left > dt {
                    Activity::Dwelling(left - dt)
                } else {
                    Activity::Driving
                };
                return;
            }
            Activity::Driving | Activity::GoingToCharge => {}
        }

        if self.flaky
            && self
                .rng
                .random_bool((dt / MEAN_SECS_BETWEEN_FAULTS).min(1.0))
        {
            let kind = self
                .rng
                .random_bool(0.7)
                .then(|| self.rng.random_range(0..ERRORS.len()));
            self.activity = Activity::Fault(kind, self.rng.random_range(5.0..20.0));
            return;
        }
        if self.activity == Activity::Driving && self.battery < LOW_BATTERY {
            self.activity = Activity::GoingToCharge;
            self.trip = None;
        }

        let distance = config.speed_mps * dt;
        self.moving = distance > 0.0;
        self.battery = (self.battery - DRAIN_MOVING * dt).max(0.0);
        match config.path {
            PathKind::Loop => self.drive_loop(distance, path, idx, n),
            PathKind::Region => self.drive_region(distance, path, idx, n),
        }
    }

    fn drive_loop(&mut self, distance: f64, path: &Path, idx: usize, n: usize) {
        let length = path.length();
        let to_dock = (self.dock_s - self.s).rem_euclid(length);
        if self.activity == Activity::GoingToCharge && to_dock <= distance {
            self.s = self.dock_s;
            self.activity = Activity::Charging;
        } else {
            self.s = (self.s + distance) % length;
            self.leg_progress += distance;
            // A trip is one lap from the robot's start; a leg is a quarter of it.
            let leg_length = length / 4.0;
            if self.activity == Activity::Driving
                && (self.trip.is_none() || self.leg_progress >= leg_length)
            {
                self.leg_progress = 0.0;
                let new_trip = self.trip.is_none() || self.legs_left == 0;
                self.next_leg(new_trip, 4, idx, n);
            }
        }
        (self.x, self.y, self.heading) = path.at(self.s);
    }

    fn drive_region(&mut self, distance: f64, path: &Path, idx: usize, n: usize) {
        if self.trip.is_none() && self.activity == Activity::Driving {
            let legs = self.rng.random_range(2..=4);
            self.next_leg(true, legs, idx, n);
        }
        let target = if self.activity == Activity::GoingToCharge {
            self.dock
        } else {
            self.waypoint
        };
        let (dx, dy) = (target.0 - self.x, target.1 - self.y);
        let gap = dx.hypot(dy);
        if gap > 1e-9 {
            self.heading = dy.atan2(dx);
        }
        if gap > distance {
            self.x += dx / gap * distance;
            self.y += dy / gap * distance;
            return;
        }

        (self.x, self.y) = target;
        if self.activity == Activity::GoingToCharge {
            self.activity = Activity::Charging;
            return;
        }
        self.waypoint = path.random_point(&mut self.rng);
        self.activity = Activity::Dwelling(self.rng.random_range(0.0..3.0));
        if self.legs_left == 0 {
            self.trip = None;
        } else {
            self.next_leg(false, 0, idx, n);
        }
    }

    /// Starts the next leg, and a new trip of `legs` legs when `new_trip`. Ids are unique across
    /// the fleet: robot `idx` of `n` takes every n-th number.
    fn next_leg(&mut self, new_trip: bool, legs: u32, idx: usize, n: usize) {
        let (n, idx) = (n as u64, idx as u64);
        let trip_id = match (new_trip, self.trip) {
            (false, Some((trip, _))) => trip,
            _ => {
                self.trips += 1;
                self.legs_left = legs;
                1000 + self.trips * n + idx
            }
        };
        self.legs += 1;
        self.legs_left = self.legs_left.saturating_sub(1);
        self.trip = Some((trip_id, 5000 + self.legs * n + idx));
    }

    fn message_id(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.random())
            .into_uuid()
            .to_string()
    }

    fn ati(&mut self, config: &FleetConfig, timestamp: &str) -> (String, Vec<u8>) {
        let (mode, error, disabled_reason) = match self.activity {
            Activity::Fault(None, _) => ("disconnected", "", "stale_heartbeat"),
            Activity::Fault(Some(k), _) => ("error", ERRORS[k].0, ERRORS[k].1),
            _ => ("fleet", "", ""),
        };
        let (x, y, h) = (round(self.x, 3), round(self.y, 3), round(self.heading, 4));
        let pose = match config.pose {
            PoseShape::Three => vec![x, y, h],
            PoseShape::Six => vec![x, y, 0.0, 0.0, 0.0, h],
        };
        let message_id = self.message_id();
        let trip = self
            .trip
            .filter(|_| matches!(self.activity, Activity::Driving | Activity::Dwelling(_)));
        let status = payload::AtiStatus {
            sherpa_name: &self.name,
            mode,
            error,
            disabled: !disabled_reason.is_empty(),
            disabled_reason,
            pose: &pose,
            battery_status: if config.unknown_battery {
                -1.0
            } else {
                round(self.battery, 1)
            },
            trip_id: trip.map(|t| t.0),
            trip_leg_id: trip.map(|t| t.1),
            timestamp,
            message_id: &message_id,
        };
        let topic = config.topic_template.replace("{robot}", &self.name);
        (topic, serde_json::to_vec(&status).unwrap_or_default())
    }

    /// Even messages are `state`, odd ones `visualization`: both topics flow, and the total rate
    /// stays `rate` per robot.
    fn vda(&mut self, config: &FleetConfig, timestamp: &str) -> (String, Vec<u8>) {
        let header = payload::VdaHeader {
            header_id: self.seq / 2,
            timestamp,
            version: VDA_VERSION,
            manufacturer: &config.manufacturer,
            serial_number: &self.name,
        };
        let position = payload::AgvPosition {
            x: round(self.x, 3),
            y: round(self.y, 3),
            theta: round(self.heading, 4),
            map_id: &config.map_id,
            position_initialized: !matches!(self.activity, Activity::Fault(None, _)),
        };
        let speed = if self.moving { config.speed_mps } else { 0.0 };
        let (sin, cos) = self.heading.sin_cos();
        let velocity = payload::Velocity {
            vx: round(speed * cos, 3),
            vy: round(speed * sin, 3),
            omega: 0.0,
        };
        let base = format!("uagv/v2/{}/{}", config.manufacturer, self.name);

        if self.seq % 2 == 1 {
            let vis = payload::VdaVisualization {
                header,
                agv_position: position,
                velocity,
            };
            return (
                format!("{base}/visualization"),
                serde_json::to_vec(&vis).unwrap_or_default(),
            );
        }

        let (errors, e_stop, mode) = match self.activity {
            Activity::Fault(Some(k), _) => {
                let error = payload::VdaError {
                    error_type: "simulatedFault",
                    error_level: "FATAL",
                    error_description: ERRORS[k].0,
                    error_references: [],
                };
                let e_stop = if ERRORS[k].1.is_empty() {
                    "NONE"
                } else {
                    "MANUAL"
                };
                (vec![error], e_stop, "AUTOMATIC")
            }
            Activity::Fault(None, _) => (Vec::new(), "NONE", "SERVICE"),
            _ => (Vec::new(), "NONE", "AUTOMATIC"),
        };
        let order_id = self
            .trip
            .map(|t| format!("order-{}", t.0))
            .unwrap_or_default();
        let state = payload::VdaState {
            header,
            order_id,
            order_update_id: 0,
            last_node_id: self
                .trip
                .map(|t| format!("node-{}", t.1))
                .unwrap_or_default(),
            last_node_sequence_id: 0,
            node_states: [],
            edge_states: [],
            action_states: [],
            information: [],
            driving: self.moving,
            paused: false,
            operating_mode: mode,
            agv_position: position,
            velocity,
            battery_state: payload::BatteryState {
                battery_charge: round(self.battery, 1),
                charging: self.activity == Activity::Charging,
            },
            errors,
            safety_state: payload::SafetyState {
                e_stop,
                field_violation: false,
            },
        };
        (
            format!("{base}/state"),
            serde_json::to_vec(&state).unwrap_or_default(),
        )
    }
}
