//! The JSON the simulator publishes: ATI sherpa status and VDA 5050 v2 `state` and
//! `visualization`. Plain serde structs, so building a message costs one serialisation.

use serde::Serialize;

/// ATI fleet manager status of one sherpa, field for field as ATI publishes it.
#[derive(Debug, Serialize)]
pub(super) struct AtiStatus<'a> {
    pub sherpa_name: &'a str,
    pub mode: &'a str,
    pub error: &'a str,
    pub disabled: bool,
    pub disabled_reason: &'a str,
    /// `[x, y, heading]` or `[x, y, z, roll, pitch, yaw]`, metres and radians.
    pub pose: &'a [f64],
    /// Percent, or -1 when unknown.
    pub battery_status: f64,
    pub trip_id: Option<u64>,
    pub trip_leg_id: Option<u64>,
    pub timestamp: &'a str,
    pub message_id: &'a str,
}

/// The fields `state` and `visualization` share.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct VdaHeader<'a> {
    pub header_id: u64,
    pub timestamp: &'a str,
    pub version: &'a str,
    pub manufacturer: &'a str,
    pub serial_number: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AgvPosition<'a> {
    pub x: f64,
    pub y: f64,
    pub theta: f64,
    pub map_id: &'a str,
    pub position_initialized: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct Velocity {
    pub vx: f64,
    pub vy: f64,
    pub omega: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct VdaVisualization<'a> {
    #[serde(flatten)]
    pub header: VdaHeader<'a>,
    pub agv_position: AgvPosition<'a>,
    pub velocity: Velocity,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct VdaState<'a> {
    #[serde(flatten)]
    pub header: VdaHeader<'a>,
    pub order_id: String,
    pub order_update_id: u64,
    pub last_node_id: String,
    pub last_node_sequence_id: u64,
    pub node_states: [(); 0],
    pub edge_states: [(); 0],
    pub action_states: [(); 0],
    pub information: [(); 0],
    pub driving: bool,
    pub paused: bool,
    pub operating_mode: &'a str,
    pub agv_position: AgvPosition<'a>,
    pub velocity: Velocity,
    pub battery_state: BatteryState,
    pub errors: Vec<VdaError<'a>>,
    pub safety_state: SafetyState,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BatteryState {
    pub battery_charge: f64,
    pub charging: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct VdaError<'a> {
    pub error_type: &'a str,
    pub error_level: &'a str,
    pub error_description: &'a str,
    pub error_references: [(); 0],
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SafetyState {
    pub e_stop: &'static str,
    pub field_violation: bool,
}

/// ISO-8601 UTC with millisecond precision and a `Z`, e.g. `2025-01-31T08:15:02.125Z`.
pub fn iso_millis(unix_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(unix_ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Rounds to `decimals` places, so payloads carry millimetres, not float noise.
pub(super) fn round(value: f64, decimals: i32) -> f64 {
    let factor = 10f64.powi(decimals);
    let rounded = (value * factor).round() / factor;
    if rounded == 0.0 {
        0.0
    } else {
        rounded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_with_milliseconds_and_z() {
        assert_eq!(iso_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_millis(1_738_311_302_125), "2025-01-31T08:15:02.125Z");
    }

    #[test]
    fn empty_vda_lists_serialise_as_empty_arrays() {
        let e = VdaError {
            error_type: "t",
            error_level: "FATAL",
            error_description: "d",
            error_references: [],
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"errorType":"t","errorLevel":"FATAL","errorDescription":"d","errorReferences":[]}"#
        );
    }

    #[test]
    fn rounding_drops_negative_zero() {
        assert_eq!(round(-0.000_1, 3).to_string(), "0");
        assert_eq!(round(1.234_56, 3), 1.235);
    }
}
