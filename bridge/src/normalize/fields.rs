//! The configured field map: one JSON pointer per field, for payloads of any other shape
//! (flat `{device_id, x, y}` or nested `{event: {location: {current: {x, y}}}}`).

use serde_json::{Map, Value};

use super::{
    battery_percent, number, optional_bool, optional_number, optional_string, timestamp, Context,
    Malformed, Outcome, Record,
};
use crate::config::FieldMap;

pub(crate) fn read(
    root: &Map<String, Value>,
    ctx: &Context<'_>,
    map: &FieldMap,
) -> Result<Outcome, Malformed> {
    let root = Value::Object(root.clone());
    let at = |ptr: &Option<String>| ptr.as_deref().and_then(|p| root.pointer(p));
    let field = |ptr: &Option<String>| ptr.clone().unwrap_or_default();

    let device = match ctx.topic_device()? {
        Some(d) => d,
        None => match at(&map.device) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            None | Some(Value::Null) => return Err(Malformed::Missing(field(&map.device))),
            Some(_) => {
                return Err(Malformed::WrongType {
                    field: field(&map.device),
                    expected: "a string",
                })
            }
        },
    };
    let x = number(root.pointer(&map.x), &map.x)?;
    let y = number(root.pointer(&map.y), &map.y)?;
    let z = optional_number(at(&map.z), &field(&map.z))?.unwrap_or(0.0);
    let payload_ms = timestamp(at(&map.timestamp), &field(&map.timestamp))?;
    let message_id = match at(&map.message_id) {
        Some(Value::Number(n)) => Some(n.to_string()),
        other => optional_string(other, &field(&map.message_id))?,
    };

    Ok(Outcome::Record(Record {
        device,
        measured_at_ms: ctx.measured_at(payload_ms),
        x,
        y,
        z,
        heading: optional_number(at(&map.heading), &field(&map.heading))?,
        battery: battery_percent(optional_number(at(&map.battery), &field(&map.battery))?),
        moving: optional_bool(at(&map.moving), &field(&map.moving))?,
        mode: optional_string(at(&map.mode), &field(&map.mode))?,
        error: optional_string(at(&map.error), &field(&map.error))?.filter(|e| !e.is_empty()),
        message_id,
    }))
}
