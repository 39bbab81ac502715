//! Twinzo's JSON shapes. Field names are PascalCase on the wire; responses are read
//! case-insensitively enough for the real server (`alias`), and every body is read in full,
//! because Twinzo reports failures as HTTP 200 with `Success: false`.

use serde::{Deserialize, Serialize};

/// One location as `POST /v3/localization` takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Location {
    /// Unix ms of the measurement.
    pub timestamp: i64,
    pub sector_id: i32,
    /// Sector millimetres.
    pub x: f32,
    pub y: f32,
    pub z: f32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub interval: Option<i32>,
    /// Integer percent; omitted when unknown.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub battery: Option<u8>,
    pub is_moving: bool,
}

/// `POST /v3/authorization/authenticate` request body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AuthRequest<'a> {
    pub client: &'a str,
    pub login: &'a str,
    pub password: &'a str,
}

/// `authenticate` response. `Success: false` comes with HTTP 200.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthResponse {
    #[serde(rename = "Token", alias = "token", default)]
    pub token: Option<String>,
    #[serde(rename = "Expiration", alias = "expiration", default)]
    pub expiration: Option<i64>,
    #[serde(rename = "Created", alias = "created", default)]
    pub created: Option<i64>,
    #[serde(rename = "Client", alias = "client", default)]
    pub client: Option<String>,
    #[serde(rename = "Branch", alias = "branch", default)]
    pub branch: Option<String>,
    #[serde(rename = "Success", alias = "success", default)]
    pub success: bool,
    #[serde(rename = "ErrorMessage", alias = "errorMessage", default)]
    pub error_message: Option<String>,
}

/// One login's result: the whole body in device mode, one element in batch mode.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LoginResult {
    #[serde(rename = "Login", alias = "login", default)]
    pub login: Option<String>,
    #[serde(rename = "Success", alias = "success")]
    pub success: bool,
    #[serde(rename = "ErrorMessage", alias = "errorMessage", default)]
    pub error_message: Option<String>,
    #[serde(rename = "Locations", alias = "locations", default)]
    pub locations: Vec<LocationResult>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LocationResult {
    #[serde(rename = "Timestamp", alias = "timestamp", default)]
    pub timestamp: Option<i64>,
    #[serde(rename = "Action", alias = "action", default)]
    pub action: Option<String>,
    #[serde(rename = "Success", alias = "success", default = "yes")]
    pub success: bool,
    #[serde(rename = "ErrorMessage", alias = "errorMessage", default)]
    pub error_message: Option<String>,
}

fn yes() -> bool {
    true
}

/// One element of the `/v3/localization/batch` request body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchEntry<'a> {
    pub login: &'a str,
    pub locations: &'a [Location],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_is_pascal_case_and_omits_unknown_battery() {
        let loc = Location {
            timestamp: 1_730_000_000_000,
            sector_id: 3,
            x: 12_500.0,
            y: 40_250.0,
            z: 0.0,
            interval: None,
            battery: None,
            is_moving: true,
        };
        let json = serde_json::to_value(&loc).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"Timestamp": 1_730_000_000_000_i64, "SectorId": 3, "X": 12500.0,
                "Y": 40250.0, "Z": 0.0, "IsMoving": true})
        );
    }

    #[test]
    fn failure_under_http_200_is_read() {
        let body = r#"{"Login":"tugger-01","Success":false,
            "ErrorMessage":"Device tugger-01 does not exist.","Locations":[]}"#;
        let r: LoginResult = serde_json::from_str(body).unwrap();
        assert!(!r.success);
        assert_eq!(
            r.error_message.as_deref(),
            Some("Device tugger-01 does not exist.")
        );
    }
}
