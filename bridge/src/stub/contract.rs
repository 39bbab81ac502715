//! The Twinzo wire contract as the stand-in enforces it: request bodies parsed and validated
//! the way ASP.NET's System.Text.Json binder does: field names without case, strict number
//! types, and the first error reported by its path (`$[0].SectorId`). The answers are in
//! `responses`.
//!
//! The stand-in is stricter than Twinzo's SDK types in one place: `SectorId`, `X` and `Y`
//! are nullable in the SDK, but here a location without them is a 400, because a bridge that
//! omits them has a bug. `Z` defaults to 0. String values for numbers are refused although
//! ASP.NET's web defaults would read `"5"` as 5; the reference reports 400 for strings.

use axum::http::{header, HeaderMap};
use serde_json::{Map, Value};

/// One location as accepted from a request body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Location {
    pub timestamp: i64,
    pub sector_id: i32,
    pub x: f32,
    pub y: f32,
    pub z: f32,
    pub battery: Option<u8>,
    pub is_moving: Option<bool>,
    pub interval: Option<i32>,
}

/// One element of a `/v3/localization/batch` body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeviceLocations {
    pub login: String,
    pub locations: Vec<Location>,
}

/// The body of `POST /v3/authorization/authenticate`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Credentials {
    pub client: Option<String>,
    pub login: String,
    pub password: String,
}

/// The first problem found in a body, keyed by its JSON path as ASP.NET reports it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ValidationError {
    pub key: String,
    pub message: String,
}

impl ValidationError {
    fn conversion(path: &str, dotnet_type: &str) -> Self {
        Self {
            key: path.to_owned(),
            message: format!(
                "The JSON value could not be converted to {dotnet_type}. Path: {path}."
            ),
        }
    }

    fn required(path: &str, field: &str) -> Self {
        Self {
            key: path.to_owned(),
            message: format!("The {field} field is required."),
        }
    }
}

/// Whether the request declares a JSON body, as ASP.NET's input formatter requires.
pub(crate) fn has_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let media = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media == "application/json"
        || media == "text/json"
        || (media.starts_with("application/") && media.ends_with("+json"))
}

fn parse_json(body: &[u8]) -> Result<Value, ValidationError> {
    serde_json::from_slice(body).map_err(|err| ValidationError {
        key: "$".to_owned(),
        message: format!("The request body is not valid JSON: {err}. Path: $."),
    })
}

/// Parses a device-mode body: a bare array of locations.
pub(crate) fn parse_locations_body(body: &[u8]) -> Result<Vec<Location>, ValidationError> {
    let value = parse_json(body)?;
    let Value::Array(items) = value else {
        return Err(ValidationError::conversion(
            "$",
            "System.Collections.Generic.List`1[Twinzo.Contracts.LocationContract]",
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_location(item, &format!("$[{i}]")))
        .collect()
}

/// Parses an API-key-mode body: a bare array of `{"Login", "Locations": [...]}`.
pub(crate) fn parse_batch_body(body: &[u8]) -> Result<Vec<DeviceLocations>, ValidationError> {
    let value = parse_json(body)?;
    let Value::Array(items) = value else {
        return Err(ValidationError::conversion(
            "$",
            "System.Collections.Generic.List`1[Twinzo.Contracts.DeviceLocationContract]",
        ));
    };
    let mut batches = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("$[{i}]");
        let obj = as_object(item, &path, "Twinzo.Contracts.DeviceLocationContract")?;
        let login = match field(obj, "Login") {
            Some((_, Value::String(s))) if !s.is_empty() => s.clone(),
            Some((key, Value::String(_) | Value::Null)) => {
                return Err(ValidationError::required(&format!("{path}.{key}"), "Login"));
            }
            Some((key, _)) => {
                return Err(ValidationError::conversion(
                    &format!("{path}.{key}"),
                    "System.String",
                ));
            }
            None => return Err(ValidationError::required(&format!("{path}.Login"), "Login")),
        };
        let locations = match field(obj, "Locations") {
            None | Some((_, Value::Null)) => Vec::new(),
            Some((key, Value::Array(list))) => list
                .iter()
                .enumerate()
                .map(|(j, loc)| parse_location(loc, &format!("{path}.{key}[{j}]")))
                .collect::<Result<_, _>>()?,
            Some((key, _)) => {
                return Err(ValidationError::conversion(
                    &format!("{path}.{key}"),
                    "Twinzo.Contracts.LocationContract[]",
                ))
            }
        };
        batches.push(DeviceLocations { login, locations });
    }
    Ok(batches)
}

/// Parses the authenticate body. A missing `Client` is kept as `None` (the SDK omits it for
/// super users, which the stand-in does not have); a missing `Login` or `Password` is a 400.
pub(crate) fn parse_credentials(body: &[u8]) -> Result<Credentials, ValidationError> {
    let value = parse_json(body)?;
    let obj = as_object(&value, "$", "Twinzo.Contracts.CredentialContract")?;
    let string = |name: &str| -> Result<Option<String>, ValidationError> {
        match field(obj, name) {
            None | Some((_, Value::Null)) => Ok(None),
            Some((_, Value::String(s))) => Ok(Some(s.clone())),
            Some((key, _)) => Err(ValidationError::conversion(
                &format!("$.{key}"),
                "System.String",
            )),
        }
    };
    let client = string("Client")?;
    let login = string("Login")?.ok_or_else(|| ValidationError::required("$.Login", "Login"))?;
    let password =
        string("Password")?.ok_or_else(|| ValidationError::required("$.Password", "Password"))?;
    Ok(Credentials {
        client,
        login,
        password,
    })
}

fn as_object<'a>(
    value: &'a Value,
    path: &str,
    dotnet_type: &str,
) -> Result<&'a Map<String, Value>, ValidationError> {
    value
        .as_object()
        .ok_or_else(|| ValidationError::conversion(path, dotnet_type))
}

/// Finds a field without regard to case. A body that spells one field several ways gets one
/// of them (System.Text.Json takes the last in document order; serde_json's map is sorted).
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<(&'a str, &'a Value)> {
    obj.iter()
        .filter(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(key, value)| (key.as_str(), value))
        .next_back()
}

fn parse_location(value: &Value, path: &str) -> Result<Location, ValidationError> {
    let obj = as_object(value, path, "Twinzo.Contracts.LocationContract")?;
    let at = |key: &str| format!("{path}.{key}");

    let timestamp = required(obj, "Timestamp", path, |key, v| {
        v.as_i64()
            .ok_or_else(|| ValidationError::conversion(&at(key), "System.Int64"))
    })?;
    let sector_id = required(obj, "SectorId", path, |key, v| int32(v, &at(key)))?;
    let x = required(obj, "X", path, |key, v| single(v, &at(key)))?;
    let y = required(obj, "Y", path, |key, v| single(v, &at(key)))?;
    let z = optional(obj, "Z", |key, v| single(v, &at(key)))?.unwrap_or(0.0);
    let interval = optional(obj, "Interval", |key, v| int32(v, &at(key)))?;
    let battery = optional(obj, "Battery", |key, v| {
        v.as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .ok_or_else(|| ValidationError::conversion(&at(key), "System.Byte"))
    })?;

    // IsMoving is a plain bool in Twinzo's contract, so null does not bind either.
    let is_moving = match field(obj, "IsMoving") {
        None => None,
        Some((_, Value::Bool(b))) => Some(*b),
        Some((key, _)) => return Err(ValidationError::conversion(&at(key), "System.Boolean")),
    };
    for name in ["LocalizationAreas", "NoGoAreas"] {
        optional(obj, name, |key, v| int32_array(v, &at(key)))?;
    }

    Ok(Location {
        timestamp,
        sector_id,
        x,
        y,
        z,
        battery,
        is_moving,
        interval,
    })
}

fn required<T>(
    obj: &Map<String, Value>,
    name: &str,
    path: &str,
    convert: impl Fn(&str, &Value) -> Result<T, ValidationError>,
) -> Result<T, ValidationError> {
    match field(obj, name) {
        Some((key, value)) => convert(key, value),
        None => Err(ValidationError::required(&format!("{path}.{name}"), name)),
    }
}

fn optional<T>(
    obj: &Map<String, Value>,
    name: &str,
    convert: impl Fn(&str, &Value) -> Result<T, ValidationError>,
) -> Result<Option<T>, ValidationError> {
    match field(obj, name) {
        None | Some((_, Value::Null)) => Ok(None),
        Some((key, value)) => convert(key, value).map(Some),
    }
}

fn int32(value: &Value, path: &str) -> Result<i32, ValidationError> {
    value
        .as_i64()
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| ValidationError::conversion(path, "System.Int32"))
}

fn single(value: &Value, path: &str) -> Result<f32, ValidationError> {
    match value.as_f64() {
        Some(n) if n.is_finite() && n.abs() <= f64::from(f32::MAX) => Ok(n as f32),
        _ => Err(ValidationError::conversion(path, "System.Single")),
    }
}

fn int32_array(value: &Value, path: &str) -> Result<(), ValidationError> {
    let Value::Array(items) = value else {
        return Err(ValidationError::conversion(path, "System.Int32[]"));
    };
    for (i, item) in items.iter().enumerate() {
        int32(item, &format!("{path}[{i}]"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_error(body: &str) -> ValidationError {
        parse_locations_body(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_full_location_parses_with_names_in_any_case() {
        let body = r#"[{"timestamp": 1730000000000, "SECTORID": 2, "x": 1.5, "Y": -3,
            "Battery": 79, "IsMoving": true, "Interval": 1000, "LocalizationAreas": [1],
            "NoGoAreas": [], "Unknown": "ignored"}]"#;

        let locations = parse_locations_body(body.as_bytes()).unwrap();

        assert_eq!(
            locations,
            [Location {
                timestamp: 1_730_000_000_000,
                sector_id: 2,
                x: 1.5,
                y: -3.0,
                z: 0.0,
                battery: Some(79),
                is_moving: Some(true),
                interval: Some(1000),
            }]
        );
    }

    #[test]
    fn invalid_fields_are_reported_by_path() {
        let ok = r#""Timestamp": 1, "SectorId": 1, "X": 0, "Y": 0"#;
        let cases = [
            (r#"{"Timestamp": 1}"#.to_owned(), "$"),
            (format!(r#"[{{{ok}, "SectorId": "1"}}]"#), "$[0].SectorId"),
            (format!(r#"[{{{ok}, "SectorId": 1.5}}]"#), "$[0].SectorId"),
            (
                format!(r#"[{{{ok}, "SectorId": 3000000000}}]"#),
                "$[0].SectorId",
            ),
            (
                format!(r#"[{{{ok}}}, {{{ok}, "Battery": 79.5}}]"#),
                "$[1].Battery",
            ),
            (format!(r#"[{{{ok}, "Battery": 256}}]"#), "$[0].Battery"),
            (format!(r#"[{{{ok}, "Battery": -1}}]"#), "$[0].Battery"),
            (format!(r#"[{{{ok}, "X": 1e39}}]"#), "$[0].X"),
            (format!(r#"[{{{ok}, "IsMoving": "yes"}}]"#), "$[0].IsMoving"),
            (format!(r#"[{{{ok}, "Interval": 1.5}}]"#), "$[0].Interval"),
            (
                format!(r#"[{{{ok}, "NoGoAreas": [1, "a"]}}]"#),
                "$[0].NoGoAreas[1]",
            ),
            (
                r#"[{"SectorId": 1, "X": 0, "Y": 0}]"#.to_owned(),
                "$[0].Timestamp",
            ),
            (
                r#"[{"Timestamp": 1.0, "SectorId": 1, "X": 0, "Y": 0}]"#.to_owned(),
                "$[0].Timestamp",
            ),
            (
                r#"[{"Timestamp": 1, "X": 0, "Y": 0}]"#.to_owned(),
                "$[0].SectorId",
            ),
            ("[7]".to_owned(), "$[0]"),
            ("not json".to_owned(), "$"),
        ];
        for (body, key) in cases {
            assert_eq!(first_error(&body).key, key, "{body}");
        }
    }

    #[test]
    fn batch_paths_include_the_device_index() {
        let body = r#"[{"Login": "a", "Locations": []},
            {"login": "b", "locations": [{"Timestamp": 1, "SectorId": "x", "X": 0, "Y": 0}]}]"#;

        let err = parse_batch_body(body.as_bytes()).unwrap_err();

        assert_eq!(err.key, "$[1].locations[0].SectorId");
    }

    #[test]
    fn batch_without_login_is_refused() {
        let err = parse_batch_body(br#"[{"Locations": []}]"#).unwrap_err();

        assert_eq!(err.key, "$[0].Login");
    }

    #[test]
    fn credentials_need_login_and_password_but_not_client() {
        let creds = parse_credentials(br#"{"login": "a", "PASSWORD": "p"}"#).unwrap();
        assert_eq!(creds.client, None);
        assert_eq!(creds.login, "a");

        let err = parse_credentials(br#"{"Client": "c", "Login": "a"}"#).unwrap_err();
        assert_eq!(err.key, "$.Password");
    }
}
