//! The bodies the stand-in answers with: PascalCase localization and authenticate results,
//! and ASP.NET problem details for 400, 415 and injected errors.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

use super::contract::ValidationError;

/// The per-location part of a localization response.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct LocationOutcome {
    pub timestamp: i64,
    pub action: &'static str,
    pub success: bool,
    pub error_message: Option<String>,
}

/// The per-login localization response (the whole body in device mode, an element in batch).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DeviceOutcome {
    pub login: String,
    pub success: bool,
    pub error_message: Option<String>,
    pub locations: Vec<LocationOutcome>,
}

impl DeviceOutcome {
    pub fn unknown_device(login: &str) -> Self {
        Self {
            login: login.to_owned(),
            success: false,
            error_message: Some(format!("Device {login} does not exist.")),
            locations: Vec::new(),
        }
    }
}

/// The authenticate response; a refusal is HTTP 200 with `Success: false` and null fields.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AuthOutcome {
    pub token: Option<String>,
    pub expiration: i64,
    pub created: i64,
    pub client: Option<String>,
    pub branch: Option<String>,
    pub success: bool,
    pub error_message: Option<String>,
}

impl AuthOutcome {
    pub fn refused(message: &str) -> Self {
        Self {
            token: None,
            expiration: 0,
            created: 0,
            client: None,
            branch: None,
            success: false,
            error_message: Some(message.to_owned()),
        }
    }
}

/// An ASP.NET problem-details body (`application/problem+json`).
pub(crate) fn problem(status: StatusCode, errors: Option<Map<String, Value>>) -> Response {
    let (kind, title) = match status.as_u16() {
        400 => ("15.5.1", "One or more validation errors occurred."),
        415 => ("15.5.16", "Unsupported Media Type"),
        500 => ("15.6.1", "An error occurred while processing your request."),
        _ => ("15", status.canonical_reason().unwrap_or("Error")),
    };
    let mut body = serde_json::json!({
        "type": format!("https://tools.ietf.org/html/rfc9110#section-{kind}"),
        "title": title,
        "status": status.as_u16(),
        "traceId": trace_id(),
    });
    if let Some(errors) = errors {
        body["errors"] = Value::Object(errors);
    }
    (
        status,
        [(
            header::CONTENT_TYPE,
            "application/problem+json; charset=utf-8",
        )],
        body.to_string(),
    )
        .into_response()
}

/// The 400 for a body that does not bind; a wrapper object also names the missing parameter.
pub(crate) fn validation_problem(err: &ValidationError, parameter: &str) -> Response {
    let mut errors = Map::new();
    errors.insert(err.key.clone(), Value::from(vec![err.message.clone()]));
    if err.key == "$" {
        errors.insert(
            parameter.to_owned(),
            Value::from(vec![format!("The {parameter} field is required.")]),
        );
    }
    problem(StatusCode::BAD_REQUEST, Some(errors))
}

fn trace_id() -> String {
    let trace: u128 = rand::random();
    let span: u64 = rand::random();
    format!("00-{trace:032x}-{span:016x}-00")
}
