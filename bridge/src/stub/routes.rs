//! The Twinzo routes of the stand-in, and the layer that adds latency, counts statuses and
//! records localization bodies for every route that is not a control route.
//!
//! Checks run in the order ASP.NET runs them: injected fault, then authentication (401 with
//! an empty body), then the content type (415), then binding and validation (400).
//! In device mode the `Token` header authenticates and an `Api-Key` header is ignored; the
//! batch route takes only `Api-Key`. `Client` and `Branch` must name the configured GUIDs.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;
use tracing::debug;
use uuid::Uuid;

use super::contract::{
    has_json_content_type, parse_batch_body, parse_credentials, parse_locations_body,
};
use super::records::{RecordedRequest, MODE_BATCH, MODE_DEVICE};
use super::responses::{problem, validation_problem};
use super::{now_ms, Shared};

/// Largest request body read, as a generous stand-in for Kestrel's limit.
pub(crate) const BODY_LIMIT: usize = 32 * 1024 * 1024;

pub(crate) fn twinzo_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v3/authorization/authenticate", post(authenticate))
        .route("/v3/localization", post(localization))
        .route("/v3/localization/batch", post(localization_batch))
        .route("/v3/devices/login/{login}", get(device_by_login))
        .route("/v3/sectors", get(sectors))
}

/// Adds the configured latency, counts the status and records localization bodies.
pub(crate) async fn observe(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_owned();
    if path == "/_stub" || path.starts_with("/_stub/") {
        return next.run(req).await;
    }

    let latency = shared.faults().latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let (response, body) = if path.starts_with("/v3/localization") {
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, BODY_LIMIT).await else {
            return StatusCode::PAYLOAD_TOO_LARGE.into_response();
        };
        let response = next
            .run(Request::from_parts(parts, Body::from(bytes.clone())))
            .await;
        (response, Some(bytes))
    } else {
        (next.run(req).await, None)
    };

    let status = response.status().as_u16();
    shared.state().count_status(status);
    // Parsed a second time only to be kept, and outside the lock.
    if let Some(bytes) = body.filter(|_| shared.state().records_requests()) {
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        shared.state().record_request(RecordedRequest {
            received_at_ms: now_ms(),
            path,
            status,
            body,
        });
    }
    response
}

pub(crate) async fn not_found() -> StatusCode {
    StatusCode::NOT_FOUND
}

async fn authenticate(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !has_json_content_type(&headers) {
        return problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, None);
    }
    let creds = match parse_credentials(&body) {
        Ok(creds) => creds,
        Err(err) => return validation_problem(&err, "credentials"),
    };
    let outcome = shared.state().authenticate(&creds, now_ms());
    debug!(login = %creds.login, success = outcome.success, "stub authenticate");
    Json(outcome).into_response()
}

async fn localization(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(fault) = shared.injected_fault() {
        return fault;
    }
    let Some(Caller::Device(login)) = authorize(&shared, &headers, Accept::Token) else {
        return shared.reject(StatusCode::UNAUTHORIZED.into_response());
    };
    if !has_json_content_type(&headers) {
        return shared.reject(problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, None));
    }
    let locations = match parse_locations_body(&body) {
        Ok(locations) => locations,
        Err(err) => return shared.reject(validation_problem(&err, "locations")),
    };

    let outcome = shared
        .state()
        .store(&login, MODE_DEVICE, &locations, now_ms());
    debug!(%login, count = locations.len(), success = outcome.success, "stub localization");
    Json(outcome).into_response()
}

async fn localization_batch(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(fault) = shared.injected_fault() {
        return fault;
    }
    let Some(Caller::ApiKey) = authorize(&shared, &headers, Accept::ApiKey) else {
        return shared.reject(StatusCode::UNAUTHORIZED.into_response());
    };
    if !has_json_content_type(&headers) {
        return shared.reject(problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, None));
    }
    let devices = match parse_batch_body(&body) {
        Ok(devices) => devices,
        Err(err) => return shared.reject(validation_problem(&err, "devices")),
    };

    let now = now_ms();
    let mut state = shared.state();
    let outcomes: Vec<_> = devices
        .iter()
        .map(|d| state.store(&d.login, MODE_BATCH, &d.locations, now))
        .collect();
    drop(state);
    debug!(devices = outcomes.len(), "stub localization batch");
    Json(outcomes).into_response()
}

async fn device_by_login(
    State(shared): State<Arc<Shared>>,
    Path(login): Path<String>,
    headers: HeaderMap,
) -> Response {
    if authorize(&shared, &headers, Accept::Either).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match shared.state().device_json(&login) {
        Some(device) => Json(device).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn sectors(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if authorize(&shared, &headers, Accept::Either).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    Json(shared.state().sectors_json()).into_response()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Accept {
    Token,
    ApiKey,
    Either,
}

#[derive(Debug, PartialEq)]
enum Caller {
    Device(String),
    ApiKey,
}

/// Who signed the request, if the signature is valid for this route.
fn authorize(shared: &Shared, headers: &HeaderMap, accept: Accept) -> Option<Caller> {
    let state = shared.state();
    let config = state.config();
    if !guid_matches(header(headers, "client"), config.client_guid)
        || !guid_matches(header(headers, "branch"), config.branch_guid)
    {
        return None;
    }

    if accept != Accept::ApiKey {
        if let Some(token) = header(headers, "token") {
            return state
                .token_login(token, now_ms())
                .map(|l| Caller::Device(l.to_owned()));
        }
    }
    if accept != Accept::Token {
        let expected = config.api_key.as_deref()?;
        return (header(headers, "api-key")? == expected).then_some(Caller::ApiKey);
    }
    None
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let value = headers.get(name)?.to_str().ok()?.trim();
    (!value.is_empty()).then_some(value)
}

fn guid_matches(value: Option<&str>, expected: Uuid) -> bool {
    value.and_then(|v| Uuid::parse_str(v).ok()) == Some(expected)
}
