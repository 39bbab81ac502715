//! ATI Motors sherpa status (`ati/{robot}/status`, `ati_fm/sherpa/status`).
//!
//! `pose` is `[x, y, heading]` in live data and `[x, y, z, roll, pitch, yaw]` in ATI's
//! documents; both are accepted. `battery_status` -1 means unknown. `mode` is compared without
//! case (documents say `Fleet`, live data `fleet`) and stored lowercase. ATI status carries no
//! motion flag, so `moving` is left to the displacement rule.

use serde_json::{Map, Value};

use super::{
    battery_percent, optional_bool, optional_number, optional_string, timestamp, Context,
    Malformed, Outcome, Record,
};

pub(crate) fn read(root: &Map<String, Value>, ctx: &Context<'_>) -> Result<Outcome, Malformed> {
    let device = match ctx.topic_device()? {
        Some(d) => d,
        None => match optional_string(root.get("sherpa_name"), "sherpa_name")? {
            Some(name) if !name.trim().is_empty() => name,
            _ => return Err(Malformed::Missing("sherpa_name".into())),
        },
    };

    let pose = match root.get("pose") {
        None | Some(Value::Null) => return Err(Malformed::Missing("pose".into())),
        Some(Value::Array(values)) if values.len() == 3 || values.len() == 6 => values,
        Some(_) => {
            return Err(Malformed::WrongType {
                field: "pose".into(),
                expected: "an array of 3 or 6 numbers",
            })
        }
    };
    let mut p = [0.0; 6];
    for (i, v) in pose.iter().enumerate() {
        // The field's name is made only for an error: this runs for every message.
        p[i] = match v.as_f64() {
            Some(f) if f.is_finite() => f,
            _ => super::number(Some(v), &format!("pose[{i}]"))?,
        };
    }
    let (x, y, z, heading) = if pose.len() == 3 {
        (p[0], p[1], 0.0, p[2])
    } else {
        (p[0], p[1], p[2], p[5])
    };

    let battery = battery_percent(optional_number(
        root.get("battery_status"),
        "battery_status",
    )?);
    let mode = optional_string(root.get("mode"), "mode")?.map(|m| m.to_lowercase());
    let error = optional_string(root.get("error"), "error")?.filter(|e| !e.is_empty());
    let disabled = optional_bool(root.get("disabled"), "disabled")?.unwrap_or(false);
    let disabled_reason = optional_string(root.get("disabled_reason"), "disabled_reason")?;
    let error = error.or_else(|| {
        disabled.then(|| match disabled_reason.as_deref() {
            Some(r) if !r.is_empty() => format!("disabled: {r}"),
            _ => "disabled".to_string(),
        })
    });
    let payload_ms = timestamp(root.get("timestamp"), "timestamp")?;
    let message_id =
        optional_string(root.get("message_id"), "message_id")?.filter(|m| !m.is_empty());

    Ok(Outcome::Record(Record {
        device,
        measured_at_ms: ctx.measured_at(payload_ms),
        x,
        y,
        z,
        heading: Some(heading),
        battery,
        moving: None,
        mode,
        error,
        message_id,
    }))
}
