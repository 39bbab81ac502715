//! The records the stand-in keeps and hands out: accepted locations, counters and raw
//! localization requests. They serialize to the JSON of the `/_stub/` routes and read back
//! from it, so a test that runs the stand-in as a process gets the same types.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A location the stand-in accepted, in arrival order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AcceptedLocation {
    pub login: String,
    pub timestamp: i64,
    pub sector_id: i32,
    pub x: f32,
    pub y: f32,
    pub z: f32,
    pub battery: Option<u8>,
    pub is_moving: Option<bool>,
    pub interval: Option<i32>,
    /// `"device"` (`/v3/localization`) or `"batch"` (`/v3/localization/batch`).
    pub mode: &'static str,
    /// The same login and `Timestamp` were stored before; Twinzo answered `Update`.
    pub duplicate: bool,
    pub received_at_ms: i64,
}

/// [`AcceptedLocation`] as read back from JSON, with an owned `mode`.
#[derive(Deserialize)]
struct AcceptedWire {
    login: String,
    timestamp: i64,
    sector_id: i32,
    x: f32,
    y: f32,
    z: f32,
    battery: Option<u8>,
    is_moving: Option<bool>,
    interval: Option<i32>,
    mode: String,
    duplicate: bool,
    received_at_ms: i64,
}

// By hand: a derive would tie the input's lifetime to the `&'static str` of `mode`.
impl<'de> Deserialize<'de> for AcceptedLocation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        AcceptedWire::deserialize(deserializer)?
            .try_into()
            .map_err(serde::de::Error::custom)
    }
}

impl TryFrom<AcceptedWire> for AcceptedLocation {
    type Error = String;

    fn try_from(wire: AcceptedWire) -> Result<Self, Self::Error> {
        let mode = match wire.mode.as_str() {
            MODE_DEVICE => MODE_DEVICE,
            MODE_BATCH => MODE_BATCH,
            other => return Err(format!("unknown mode {other:?}, expected device or batch")),
        };
        Ok(Self {
            login: wire.login,
            timestamp: wire.timestamp,
            sector_id: wire.sector_id,
            x: wire.x,
            y: wire.y,
            z: wire.z,
            battery: wire.battery,
            is_moving: wire.is_moving,
            interval: wire.interval,
            mode,
            duplicate: wire.duplicate,
            received_at_ms: wire.received_at_ms,
        })
    }
}

pub(crate) const MODE_DEVICE: &str = "device";
pub(crate) const MODE_BATCH: &str = "batch";

/// Counters since start or the last reset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StubStats {
    /// Locations accepted, duplicates included.
    pub accepted: u64,
    /// Accepted locations that repeated a stored login and `Timestamp`.
    pub duplicates: u64,
    /// Localization requests refused with 400, 401 or 415 (injected faults not included).
    pub rejected_requests: u64,
    /// Per-login answers with `Success: false` because the device does not exist.
    pub unknown_devices: u64,
    /// Statuses answered from the fault queue.
    pub injected_faults: u64,
    pub auth_ok: u64,
    pub auth_failed: u64,
    /// Every Twinzo-route response by HTTP status (control routes excluded).
    pub requests_by_status: BTreeMap<u16, u64>,
}

/// A localization request as received, for tests that check the exact wire format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub received_at_ms: i64,
    pub path: String,
    pub status: u16,
    /// The body as JSON, or as a string when it was not JSON.
    pub body: Value,
}
