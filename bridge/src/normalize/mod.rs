//! Normalization: every supported payload becomes one [`Record`].
//!
//! Three readers share the helpers here: [`ati`] (ATI Motors sherpa status), [`vda5050`]
//! (VDA 5050 `state` and `visualization`, v2 and v3 field names) and [`fields`] (a JSON pointer
//! per field, for anything else). A payload that cannot be read is [`Malformed`], with a reason
//! code that the dead-letter store keeps; a readable payload without a usable position (a VDA
//! robot that is not localized) is [`Outcome::Skip`], which is not an error.
//!
//! The readers never panic: `tests/` and the property tests below feed them arbitrary bytes.

pub mod ati;
pub mod fields;
pub mod vda5050;

use serde_json::{Map, Value};

use crate::config::{FieldMap, Format, RouteConfig, TimestampSource};

/// A robot position in the robot's own frame, in metres, with what else the payload said.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The robot's id as the payload (or topic) gives it, before the device table.
    pub device: String,
    /// Unix milliseconds of the measurement (payload time or receive time, by config).
    pub measured_at_ms: i64,
    pub x: f64,
    pub y: f64,
    pub z: f64,
    /// Radians.
    pub heading: Option<f64>,
    /// Percent 0-100; `None` when unknown.
    pub battery: Option<f64>,
    /// From the payload when it says (VDA `driving`); otherwise decided from displacement.
    pub moving: Option<bool>,
    pub mode: Option<String>,
    pub error: Option<String>,
    /// The payload's own message id, used to recognise redeliveries.
    pub message_id: Option<String>,
}

/// What a readable payload gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Record(Record),
    /// Nothing to forward, for the stated reason (for example `position_not_initialized`).
    Skip(&'static str),
}

/// Why a payload could not be read. [`Malformed::code`] is the dead-letter reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Malformed {
    #[error("payload is not UTF-8")]
    NotUtf8,
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("payload is not a JSON object")]
    NotObject,
    #[error("missing field {0}")]
    Missing(String),
    #[error("field {field} must be {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    #[error("field {0} is not a finite number")]
    NotFinite(String),
    #[error("payload of {size} bytes is over the limit of {limit}")]
    Oversized { size: usize, limit: usize },
    #[error("field {field} is not a timestamp: {value}")]
    BadTimestamp { field: String, value: String },
}

impl Malformed {
    /// A short stable code for metrics and dead letters.
    pub fn code(&self) -> &'static str {
        match self {
            Malformed::NotUtf8 => "not_utf8",
            Malformed::NotJson(_) | Malformed::NotObject => "not_json",
            Malformed::Missing(_) => "missing_field",
            Malformed::WrongType { .. } => "wrong_type",
            Malformed::NotFinite(_) => "not_finite",
            Malformed::Oversized { .. } => "oversized",
            Malformed::BadTimestamp { .. } => "bad_timestamp",
        }
    }
}

/// How one route reads its payloads.
#[derive(Debug, Clone)]
pub struct Reader {
    pub format: Format,
    pub device_from_topic: Option<usize>,
    pub timestamp: TimestampSource,
    pub fields: Option<FieldMap>,
    pub max_payload_bytes: usize,
}

impl Reader {
    pub fn new(route: &RouteConfig, timestamp: TimestampSource, max_payload_bytes: usize) -> Self {
        Reader {
            format: route.format,
            device_from_topic: route.device_from_topic,
            timestamp,
            fields: route.fields.clone(),
            max_payload_bytes,
        }
    }

    /// Reads one message.
    pub fn read(
        &self,
        topic: &str,
        payload: &[u8],
        received_at_ms: i64,
    ) -> Result<Outcome, Malformed> {
        if payload.len() > self.max_payload_bytes {
            return Err(Malformed::Oversized {
                size: payload.len(),
                limit: self.max_payload_bytes,
            });
        }
        let ctx = Context {
            topic,
            received_at_ms,
            reader: self,
        };
        match self.format {
            Format::Ati => {
                let text = std::str::from_utf8(payload).map_err(|_| Malformed::NotUtf8)?;
                let fields = match ati::Fields::parse(text) {
                    Some(fields) => fields,
                    None => ati::Fields::from_map(parse_object(payload)?),
                };
                ati::read(&fields, &ctx)
            }
            Format::Vda5050 => vda5050::read(&parse_object(payload)?, &ctx),
            Format::Fields => fields::read(
                &parse_object(payload)?,
                &ctx,
                self.fields.as_ref().unwrap_or(&FieldMap::default()),
            ),
        }
    }
}

/// What a format reader needs besides the payload.
pub(crate) struct Context<'a> {
    pub topic: &'a str,
    pub received_at_ms: i64,
    pub reader: &'a Reader,
}

impl Context<'_> {
    /// The device id from the configured topic segment, if any.
    pub fn topic_device(&self) -> Result<Option<String>, Malformed> {
        let Some(index) = self.reader.device_from_topic else {
            return Ok(None);
        };
        match self.topic.split('/').nth(index) {
            Some(seg) if !seg.is_empty() => Ok(Some(seg.to_string())),
            _ => Err(Malformed::Missing(format!("topic segment {index}"))),
        }
    }

    /// Measurement time: the payload's when configured and present, else receive time.
    pub fn measured_at(&self, payload_ms: Option<i64>) -> i64 {
        match (self.reader.timestamp, payload_ms) {
            (TimestampSource::Payload, Some(ms)) => ms,
            _ => self.received_at_ms,
        }
    }
}

/// Marks a non-finite literal that was replaced so the payload could be parsed.
const NON_FINITE: &str = "\u{E000}non-finite";

/// Parses a JSON object. `NaN` and `Infinity` (as some encoders write them) are read as a
/// marker, so the field that holds one is named in the error instead of "not JSON".
fn parse_object(payload: &[u8]) -> Result<Map<String, Value>, Malformed> {
    let text = std::str::from_utf8(payload).map_err(|_| Malformed::NotUtf8)?;
    let value = match serde_json::from_str::<Value>(text) {
        Ok(v) => v,
        Err(first) => match replace_non_finite(text) {
            Some(fixed) => {
                serde_json::from_str(&fixed).map_err(|_| Malformed::NotJson(first.to_string()))?
            }
            None => return Err(Malformed::NotJson(first.to_string())),
        },
    };
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(Malformed::NotObject),
    }
}

/// Replaces bare `NaN`, `Infinity` and `-Infinity` outside strings with a marker string;
/// `None` when there were none.
fn replace_non_finite(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut found = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let token = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        if let Some(token) = token {
            out.push('"');
            out.push_str(NON_FINITE);
            out.push('"');
            rest = &rest[token.len()..];
            found = true;
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    found.then_some(out)
}

/// A required finite number.
pub(crate) fn number(v: Option<&Value>, field: &str) -> Result<f64, Malformed> {
    optional_number(v, field)?.ok_or_else(|| Malformed::Missing(field.into()))
}

/// An optional finite number (`null` counts as absent).
pub(crate) fn optional_number(v: Option<&Value>, field: &str) -> Result<Option<f64>, Malformed> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if f.is_finite() => Ok(Some(f)),
            _ => Err(Malformed::NotFinite(field.into())),
        },
        Some(Value::String(s)) if s == NON_FINITE => Err(Malformed::NotFinite(field.into())),
        Some(_) => Err(Malformed::WrongType {
            field: field.into(),
            expected: "a number",
        }),
    }
}

/// An optional string (`null` counts as absent).
pub(crate) fn optional_string(v: Option<&Value>, field: &str) -> Result<Option<String>, Malformed> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Malformed::WrongType {
            field: field.into(),
            expected: "a string",
        }),
    }
}

/// An optional boolean (`null` counts as absent).
pub(crate) fn optional_bool(v: Option<&Value>, field: &str) -> Result<Option<bool>, Malformed> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Malformed::WrongType {
            field: field.into(),
            expected: "a boolean",
        }),
    }
}

/// A timestamp: ISO-8601 (with or without offset; none means UTC) or unix time as a number
/// (milliseconds; values below 10^11 are taken as seconds).
pub(crate) fn timestamp(v: Option<&Value>, field: &str) -> Result<Option<i64>, Malformed> {
    let bad = |value: String| Malformed::BadTimestamp {
        field: field.into(),
        value,
    };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => parse_iso8601(s)
            .map(Some)
            .ok_or_else(|| bad(truncate(s, 64))),
        Some(Value::Number(n)) => {
            let f = n
                .as_f64()
                .filter(|f| f.is_finite() && *f > 0.0)
                .ok_or_else(|| bad(n.to_string()))?;
            let ms = if f < 1e11 { f * 1000.0 } else { f };
            if ms > 1e15 {
                return Err(bad(n.to_string()));
            }
            Ok(Some(ms.round() as i64))
        }
        Some(other) => Err(bad(truncate(&other.to_string(), 64))),
    }
}

fn parse_iso8601(s: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    let naive = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())?;
    Some(naive.and_utc().timestamp_millis())
}

/// Battery percent: negative means unknown (ATI sends -1), the rest is clamped to 0-100.
pub(crate) fn battery_percent(value: Option<f64>) -> Option<f64> {
    value.filter(|b| *b >= 0.0).map(|b| b.min(100.0))
}

/// Cuts a string to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests;
