//! VDA 5050 `state` and `visualization` (v2.x and v3.0).
//!
//! v2 names the position `agvPosition {x, y, theta, positionInitialized}` and the battery
//! `batteryState {batteryCharge}`; v3 renames them `mobileRobotPosition {.., localized}` and
//! `powerSupply {stateOfCharge}`. Both are read. A message without a position, or whose position
//! is not initialized or localized, is skipped. `connection` messages carry no position and are
//! skipped too. The device is `manufacturer/serialNumber` from the payload, or from topic
//! segments 2 and 3 (`{interface}/{version}/{manufacturer}/{serial}/{topic}`) when absent.

use serde_json::{Map, Value};

use super::{
    battery_percent, number, optional_bool, optional_number, optional_string, timestamp, Context,
    Malformed, Outcome, Record,
};

pub(crate) fn read(root: &Map<String, Value>, ctx: &Context<'_>) -> Result<Outcome, Malformed> {
    let kind = ctx.topic.rsplit('/').next().unwrap_or_default();
    if kind == "connection" {
        return Ok(Outcome::Skip("no_position"));
    }

    let (position, initialized_key) =
        match (root.get("agvPosition"), root.get("mobileRobotPosition")) {
            (Some(Value::Object(p)), _) => (p, "positionInitialized"),
            (_, Some(Value::Object(p))) => (p, "localized"),
            (None | Some(Value::Null), None | Some(Value::Null)) => {
                return Ok(Outcome::Skip("no_position"))
            }
            _ => {
                return Err(Malformed::WrongType {
                    field: "agvPosition".into(),
                    expected: "an object",
                })
            }
        };
    let initialized = optional_bool(position.get(initialized_key), initialized_key)?;
    if initialized == Some(false) {
        return Ok(Outcome::Skip("position_not_initialized"));
    }
    let x = number(position.get("x"), "x")?;
    let y = number(position.get("y"), "y")?;
    let heading = optional_number(position.get("theta"), "theta")?;

    let device = match ctx.topic_device()? {
        Some(d) => d,
        None => {
            let manufacturer = optional_string(root.get("manufacturer"), "manufacturer")?;
            let serial = optional_string(root.get("serialNumber"), "serialNumber")?;
            let segments: Vec<&str> = ctx.topic.split('/').collect();
            match (manufacturer, serial) {
                (Some(m), Some(s)) if !m.is_empty() && !s.is_empty() => format!("{m}/{s}"),
                _ if segments.len() >= 5 => format!("{}/{}", segments[2], segments[3]),
                _ => return Err(Malformed::Missing("serialNumber".into())),
            }
        }
    };

    let charge = match (root.get("batteryState"), root.get("powerSupply")) {
        (Some(Value::Object(b)), _) => optional_number(b.get("batteryCharge"), "batteryCharge")?,
        (_, Some(Value::Object(p))) => optional_number(p.get("stateOfCharge"), "stateOfCharge")?,
        _ => None,
    };
    let moving = optional_bool(root.get("driving"), "driving")?;
    let mode =
        optional_string(root.get("operatingMode"), "operatingMode")?.map(|m| m.to_lowercase());
    let error = match root.get("errors") {
        Some(Value::Array(errors)) => {
            let texts: Vec<String> = errors
                .iter()
                .filter_map(|e| e.get("errorType").and_then(Value::as_str))
                .map(str::to_string)
                .collect();
            (!texts.is_empty()).then(|| texts.join(", "))
        }
        _ => None,
    };
    let payload_ms = timestamp(root.get("timestamp"), "timestamp")?;
    let message_id = match root.get("headerId") {
        Some(Value::Number(n)) => Some(format!("{kind}:{n}:{}", payload_ms.unwrap_or(0))),
        _ => None,
    };

    Ok(Outcome::Record(Record {
        device,
        measured_at_ms: ctx.measured_at(payload_ms),
        x,
        y,
        z: 0.0,
        heading,
        battery: battery_percent(charge),
        moving,
        mode,
        error,
        message_id,
    }))
}
