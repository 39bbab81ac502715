//! Control routes under `/_stub/`, for tests and scripts that run the stand-in as a separate
//! process. They are not part of Twinzo, need no credentials and see no latency or faults.
//!
//! | route | does |
//! |---|---|
//! | `GET /_stub/accepted?from=N` | accepted locations (JSON array), skipping the first N |
//! | `GET /_stub/stats` | counters |
//! | `GET /_stub/requests?last=N` | the last N localization requests (all kept when absent) |
//! | `POST /_stub/faults` | inject faults, body below |
//! | `POST /_stub/devices` | `{"add": [{"login", "password", ..}], "remove": ["login"]}` |
//! | `POST /_stub/reset` | forget accepted locations, counters, faults and device changes |
//!
//! The faults body has optional fields: `statuses` (array, appended to the queue),
//! `latency_ms`, `refuse_ms`, `token_ttl_ms` and `retry_after_s` (`null` removes it), e.g.
//! `{"statuses": [503, 503], "latency_ms": 50, "retry_after_s": 1}`.
//!
//! The answer to a `refuse_ms` request carries `Connection: close`; connections already open
//! are closed 100 ms later, after that answer has left.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::config::StubDevice;
use super::faults::FaultRequest;
use super::records::{AcceptedLocation, RecordedRequest, StubStats};
use super::Shared;

const REFUSE_GRACE: Duration = Duration::from_millis(100);

pub(crate) fn control_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_stub/accepted", get(accepted))
        .route("/_stub/stats", get(stats))
        .route("/_stub/requests", get(requests))
        .route("/_stub/faults", post(faults))
        .route("/_stub/devices", post(devices))
        .route("/_stub/reset", post(reset))
}

#[derive(Debug, Deserialize)]
struct AcceptedQuery {
    #[serde(default)]
    from: usize,
}

async fn accepted(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<AcceptedQuery>,
) -> Json<Vec<AcceptedLocation>> {
    Json(shared.state().accepted_from(query.from))
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<StubStats> {
    Json(shared.state().stats())
}

#[derive(Debug, Deserialize)]
struct RequestsQuery {
    last: Option<usize>,
}

async fn requests(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<RequestsQuery>,
) -> Json<Vec<RecordedRequest>> {
    Json(shared.state().requests(query.last.unwrap_or(usize::MAX)))
}

async fn faults(State(shared): State<Arc<Shared>>, Json(req): Json<FaultRequest>) -> Response {
    let queued = {
        let mut faults = shared.faults();
        if let Err(code) = faults.push(&req.statuses) {
            let message = format!("{code} is not an HTTP status");
            return (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response();
        }
        if let Some(ms) = req.latency_ms {
            faults.set_latency(Duration::from_millis(ms));
        }
        if let Some(after) = req.retry_after_s {
            faults.set_retry_after(after.map(Duration::from_secs));
        }
        faults.queued()
    };
    if let Some(ms) = req.token_ttl_ms {
        shared.state().set_token_ttl(Duration::from_millis(ms));
    }

    let body = Json(json!({ "queued_statuses": queued }));
    match req.refuse_ms {
        Some(ms) => {
            shared.refuse(Duration::from_millis(ms), REFUSE_GRACE);
            ([(header::CONNECTION, "close")], body).into_response()
        }
        None => body.into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevicesRequest {
    #[serde(default)]
    add: Vec<StubDevice>,
    #[serde(default)]
    remove: Vec<String>,
}

async fn devices(State(shared): State<Arc<Shared>>, Json(req): Json<DevicesRequest>) -> StatusCode {
    let mut state = shared.state();
    for login in &req.remove {
        state.remove_device(login);
    }
    for device in req.add {
        state.add_device(device);
    }
    StatusCode::NO_CONTENT
}

async fn reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.reset();
    StatusCode::NO_CONTENT
}
