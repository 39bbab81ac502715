//! ATI Motors sherpa status (`ati/{robot}/status`, `ati_fm/sherpa/status`).
//!
//! `pose` is `[x, y, heading]` in live data and `[x, y, z, roll, pitch, yaw]` in ATI's
//! documents; both are accepted. `battery_status` -1 means unknown. `mode` is compared without
//! case (documents say `Fleet`, live data `fleet`) and stored lowercase. ATI status carries no
//! motion flag, so `moving` is left to the displacement rule.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    battery_percent, optional_bool, optional_number, optional_string, timestamp, Context,
    Malformed, Outcome, Record,
};

/// The fields of a status that are read; the others are skipped unread.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(crate) struct Fields {
    sherpa_name: Option<Value>,
    pose: Option<Value>,
    battery_status: Option<Value>,
    mode: Option<Value>,
    error: Option<Value>,
    disabled: Option<Value>,
    disabled_reason: Option<Value>,
    timestamp: Option<Value>,
    message_id: Option<Value>,
}

impl Fields {
    /// Parses the fields straight from the text, without a map of every key: the cheap path
    /// for a well-formed status. `None` for anything else (not an object, a key twice,
    /// `NaN`), which [`Fields::from_map`] then reads the general way, with its exact error.
    pub(crate) fn parse(text: &str) -> Option<Fields> {
        // A derived struct would also take an array of values in field order.
        if !text.trim_start().starts_with('{') {
            return None;
        }
        serde_json::from_str(text).ok()
    }

    /// The fields of a parsed object; `null` is absent, as in [`Fields::parse`].
    pub(crate) fn from_map(mut root: Map<String, Value>) -> Fields {
        let mut take = |key: &str| root.remove(key).filter(|v| !v.is_null());
        Fields {
            sherpa_name: take("sherpa_name"),
            pose: take("pose"),
            battery_status: take("battery_status"),
            mode: take("mode"),
            error: take("error"),
            disabled: take("disabled"),
            disabled_reason: take("disabled_reason"),
            timestamp: take("timestamp"),
            message_id: take("message_id"),
        }
    }
}

pub(crate) fn read(fields: &Fields, ctx: &Context<'_>) -> Result<Outcome, Malformed> {
    let device = match ctx.topic_device()? {
        Some(d) => d,
        None => match optional_string(fields.sherpa_name.as_ref(), "sherpa_name")? {
            Some(name) if !name.trim().is_empty() => name,
            _ => return Err(Malformed::Missing("sherpa_name".into())),
        },
    };

    let pose = match fields.pose.as_ref() {
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
        fields.battery_status.as_ref(),
        "battery_status",
    )?);
    let mode = optional_string(fields.mode.as_ref(), "mode")?.map(|m| m.to_lowercase());
    let error = optional_string(fields.error.as_ref(), "error")?.filter(|e| !e.is_empty());
    let disabled = optional_bool(fields.disabled.as_ref(), "disabled")?.unwrap_or(false);
    let disabled_reason = optional_string(fields.disabled_reason.as_ref(), "disabled_reason")?;
    let error = error.or_else(|| {
        disabled.then(|| match disabled_reason.as_deref() {
            Some(r) if !r.is_empty() => format!("disabled: {r}"),
            _ => "disabled".to_string(),
        })
    });
    let payload_ms = timestamp(fields.timestamp.as_ref(), "timestamp")?;
    let message_id =
        optional_string(fields.message_id.as_ref(), "message_id")?.filter(|m| !m.is_empty());

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
