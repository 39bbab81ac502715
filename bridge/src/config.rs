//! Configuration: a TOML file overlaid by `BRIDGE_...` environment variables.
//!
//! [`Config::load`] merges the file given by `--config` (exact path, no search) with the
//! environment (`BRIDGE_MQTT__URL` is `mqtt.url`: the prefix is dropped, `__` nests) and then
//! validates the result. Every problem is reported as one [`Problem`] naming its key and the
//! place the value came from, so an operator can fix them all in one pass.
//!
//! Secrets are held in [`Secret`], which prints as `****` in `Debug`, `Display` and when the
//! effective configuration is serialized by `check-config`.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::transform::Affine;

/// Exit code for a configuration that cannot be used (`EX_CONFIG` would be 78; the brief asks
/// for `EX_USAGE`-style 64, which operators' scripts already test for).
pub const EXIT_BAD_CONFIG: i32 = 64;

/// The whole configuration of the bridge.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub mqtt: MqttConfig,
    pub ati: AtiConfig,
    /// Extra topic filters and the format their payloads are read as.
    pub routes: Vec<RouteConfig>,
    pub twinzo: TwinzoConfig,
    /// Per-device overrides of login, sector and password.
    pub devices: Vec<DeviceConfig>,
    /// Per-sector transforms from robot metres to sector millimetres.
    pub sectors: Vec<SectorConfig>,
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    pub outbox: OutboxConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    pub shutdown: ShutdownConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// `ws://`, `wss://`, `mqtt://` or `mqtts://`; ws URLs keep their path (`/mqtt`).
    #[serde(deserialize_with = "lenient_string")]
    pub url: String,
    #[serde(deserialize_with = "lenient_string")]
    pub username: String,
    pub password: Secret,
    /// Fixed, so the broker keeps our durable session across restarts.
    #[serde(deserialize_with = "lenient_string")]
    pub client_id: String,
    pub keep_alive_secs: u64,
    pub max_packet_bytes: usize,
    /// Subscribe to `#` at QoS 0 to count every topic for monitoring.
    pub watch_all: bool,
    /// Subscribe to the default ATI topics (`ati/+/status`, `ati_fm/sherpa/status`).
    pub default_routes: bool,
    /// When set, forwarded filters are subscribed as `$share/GROUP/filter`, so several bridge
    /// processes split one stream.
    #[serde(deserialize_with = "lenient_string")]
    pub shared_group: String,
    /// CA bundle (PEM) for `mqtts://` and `wss://`; the system roots are used when empty.
    pub ca_file: Option<PathBuf>,
    /// Optional assertion that the connection is encrypted; it must agree with the scheme, so a
    /// `wss://` URL can never end up in clear text, nor a `ws://` URL be believed secure.
    pub tls: Option<bool>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: "ws://broker:9001/mqtt".into(),
            username: String::new(),
            password: Secret::default(),
            client_id: "twinzo-bridge".into(),
            keep_alive_secs: 30,
            max_packet_bytes: 1024 * 1024,
            watch_all: true,
            default_routes: true,
            shared_group: String::new(),
            ca_file: None,
            tls: None,
        }
    }
}

/// Where a record's measurement time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampSource {
    /// The payload's own timestamp, falling back to receive time when it has none.
    Payload,
    /// The time the bridge received the message.
    Received,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AtiConfig {
    pub timestamp: TimestampSource,
}

impl Default for AtiConfig {
    fn default() -> Self {
        AtiConfig {
            timestamp: TimestampSource::Payload,
        }
    }
}

/// How a payload is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Ati,
    Vda5050,
    Fields,
}

/// One subscription whose messages are forwarded to Twinzo.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub filter: String,
    pub format: Format,
    /// Take the device id from this topic segment (0-based) instead of the payload.
    #[serde(default)]
    pub device_from_topic: Option<usize>,
    /// JSON pointers for the `fields` format.
    #[serde(default)]
    pub fields: Option<FieldMap>,
}

/// JSON pointers (RFC 6901) to each field of a `fields` payload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldMap {
    pub device: Option<String>,
    pub x: String,
    pub y: String,
    pub z: Option<String>,
    pub heading: Option<String>,
    pub battery: Option<String>,
    pub moving: Option<String>,
    /// Unix milliseconds or an ISO-8601 string.
    pub timestamp: Option<String>,
    pub message_id: Option<String>,
    pub mode: Option<String>,
    pub error: Option<String>,
}

/// How the bridge authenticates to Twinzo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// One login per device, `POST /v3/localization` with a device token.
    Device,
    /// Server to server, `POST /v3/localization/batch` with the branch API key.
    ApiKey,
}

/// What happens to a device that has no entry in `devices`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownDevices {
    /// Forward with login = device id, the default sector and the default password.
    Forward,
    /// Store in dead letters with reason `unknown_device`.
    Reject,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TwinzoConfig {
    #[serde(deserialize_with = "lenient_string")]
    pub base_url: String,
    pub auth: AuthMode,
    /// Client name sent to `authenticate` (device mode).
    #[serde(deserialize_with = "lenient_string")]
    pub client: String,
    /// Password of every device without its own (device mode).
    pub device_password: Secret,
    /// Branch API key: required in API-key mode, sent as `Api-Key` in both modes when set.
    pub api_key: Secret,
    /// Client and branch GUIDs (API-key mode; device mode learns them from `authenticate`).
    #[serde(deserialize_with = "lenient_string")]
    pub client_guid: String,
    #[serde(deserialize_with = "lenient_string")]
    pub branch_guid: String,
    /// Sector of every device without its own.
    pub sector_id: Option<i32>,
    pub unknown_devices: UnknownDevices,
    /// Value of each location's `Interval` (ms); omitted when unset.
    pub interval_ms: Option<i32>,
    pub request_timeout_secs: u64,
    /// Requests to Twinzo in flight at once.
    pub max_concurrent_requests: usize,
}

impl Default for TwinzoConfig {
    fn default() -> Self {
        TwinzoConfig {
            base_url: "https://api.platform.twinzo.eu".into(),
            auth: AuthMode::Device,
            client: String::new(),
            device_password: Secret::default(),
            api_key: Secret::default(),
            client_guid: String::new(),
            branch_guid: String::new(),
            sector_id: None,
            unknown_devices: UnknownDevices::Forward,
            interval_ms: None,
            request_timeout_secs: 10,
            max_concurrent_requests: 8,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// The id the robot reports (ATI `sherpa_name`, VDA `manufacturer/serialNumber`).
    #[serde(deserialize_with = "lenient_string")]
    pub id: String,
    /// Twinzo login; the id when unset.
    #[serde(default, deserialize_with = "lenient_opt_string")]
    pub login: Option<String>,
    #[serde(default)]
    pub sector_id: Option<i32>,
    #[serde(default)]
    pub password: Option<Secret>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SectorConfig {
    pub id: i32,
    /// `[a, b, c, d, tx, ty]`: `X = a*x + b*y + tx`, `Y = c*x + d*y + ty` (mm from metres).
    #[serde(default)]
    pub transform: Option<[f64; 6]>,
    /// With no explicit transform: mm per metre (default 1000).
    #[serde(default)]
    pub scale: Option<f64>,
    /// With no explicit transform: negate Y (Twinzo's Y grows downwards).
    #[serde(default)]
    pub flip_y: bool,
    /// With no explicit transform: offset added after scaling, in mm.
    #[serde(default)]
    pub offset_mm: Option<[f64; 2]>,
}

impl SectorConfig {
    pub fn affine(&self) -> Affine {
        match self.transform {
            Some([a, b, c, d, tx, ty]) => Affine { a, b, c, d, tx, ty },
            None => {
                let scale = self.scale.unwrap_or(1000.0);
                let [tx, ty] = self.offset_mm.unwrap_or([0.0, 0.0]);
                let d = if self.flip_y { -scale } else { scale };
                Affine {
                    a: scale,
                    b: 0.0,
                    c: 0.0,
                    d,
                    tx,
                    ty,
                }
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Flush a login's batch at this many locations.
    pub max_size: usize,
    /// The flush interval: each login's waiting records are sent at every tick, and the tick
    /// runs this often less Twinzo's recent answer time, so records reach Twinzo within about
    /// this many ms of arriving.
    pub max_age_ms: u64,
    /// Forward at most one point per device in this interval (0: all).
    pub min_interval_ms: u64,
    /// Displacement (metres) since the previous record above which a device is moving, when
    /// the payload does not say.
    pub moving_threshold_m: f64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_size: 50,
            max_age_ms: 1000,
            min_interval_ms: 0,
            moving_threshold_m: 0.05,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    pub factor: f32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            min_delay_ms: 200,
            // One probe per step while Twinzo is down (see sender::outage), so a short
            // maximum costs Twinzo little and bounds the wait once it is back.
            max_delay_ms: 5_000,
            factor: 2.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// The store file; on Railway put it on the bridge's volume.
    pub path: PathBuf,
    /// Above this many records the bridge stops acknowledging MQTT messages.
    pub max_records: u64,
    /// Records older than this move to dead letters with reason `expired` (0: never).
    pub max_age_secs: u64,
    /// Records with a key already seen within this window are dropped as duplicates.
    pub dedup_window_secs: u64,
    /// At most this many dedup keys are remembered (the newest; about 30 bytes each).
    pub dedup_max_keys: usize,
    /// Payload bytes kept with a dead letter.
    pub dead_letter_payload_cap: usize,
    /// Payloads larger than this are dead-lettered as `oversized`.
    pub max_payload_bytes: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            path: PathBuf::from("data/outbox.redb"),
            max_records: 1_000_000,
            max_age_secs: 0,
            dedup_window_secs: 600,
            dedup_max_keys: 100_000,
            dead_letter_payload_cap: 16 * 1024,
            max_payload_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: String,
    /// When set, everything but `/live` and `/ready` needs `Authorization: Bearer TOKEN`
    /// (or `?token=TOKEN`, for the dashboard's event stream).
    pub auth_token: Secret,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "0.0.0.0:8080".into(),
            auth_token: Secret::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `twinzo_bridge=debug`); `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Time allowed to flush after SIGTERM; keep it under Railway's draining seconds.
    pub grace_secs: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { grace_secs: 8 }
    }
}

/// A value that must never be printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"****\""
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "****" })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        lenient_string(d).map(Secret)
    }
}

/// Accepts numbers and booleans as strings: environment values are parsed by figment, so a
/// password of digits would otherwise arrive as an integer.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        U(u64),
        F(f64),
        B(bool),
    }
    Ok(match Scalar::deserialize(d)? {
        Scalar::S(s) => s,
        Scalar::I(i) => i.to_string(),
        Scalar::U(u) => u.to_string(),
        Scalar::F(f) => f.to_string(),
        Scalar::B(b) => b.to_string(),
    })
}

fn lenient_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    lenient_string(d).map(Some)
}

mod load;

pub use load::{ConfigError, Problem};

#[cfg(test)]
mod tests;
