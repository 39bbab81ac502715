//! The bridge's HTTP server (axum).
//!
//! Routes:
//! - `GET /live`: 200 `live` while the process runs.
//! - `GET /ready`: 200 `ready` once the bridge is subscribed and Twinzo has answered, else 503
//!   with the reason (broker down, not subscribed, Twinzo unreachable or refusing).
//! - `GET /metrics`: Prometheus text exposition.
//! - `GET /api/status`: the [`Snapshot`](crate::state::Snapshot) as JSON.
//! - `GET /api/events`: server-sent events, one `status` event with the snapshot a second.
//! - `GET /`: the dashboard, one page embedded in the binary.
//!
//! With `http.auth_token` set, every route but `/live` and `/ready` needs
//! `Authorization: Bearer TOKEN`, or `?token=TOKEN` (browsers cannot set headers on an
//! `EventSource`), or the `bridge_token` cookie that the dashboard sets after asking once.
//! Refused at `/`, a browser still gets the page (401, no data in it) so that it can ask.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{Request, State as Extract};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::stream::Stream;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::config::Secret;
use crate::state::State;
use crate::twinzo::client::now_ms;

const DASHBOARD: &str = include_str!("dashboard.html");

#[derive(Clone)]
struct Shared {
    state: Arc<State>,
    token: Secret,
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                    &buckets,
                )
                .expect("static buckets are valid");
            match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed (a test harness): render our own, unused one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// The router, for the server and for in-process tests.
pub fn router(state: Arc<State>, token: Secret) -> Router {
    let shared = Shared { state, token };
    let protected = Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics))
        .route("/api/status", get(status))
        .route("/api/events", get(events))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            require_token,
        ));
    Router::new()
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(ready))
        .merge(protected)
        .with_state(shared)
}

async fn require_token(Extract(shared): Extract<Shared>, request: Request, next: Next) -> Response {
    if shared.token.is_empty()
        || presented_token(request.headers(), request.uri().query())
            == Some(shared.token.expose().to_string())
    {
        return next.run(request).await;
    }
    // A browser at `/` gets the page itself (it holds no data), which asks for the token when
    // its first `api/status` call is refused and keeps it in the `bridge_token` cookie.
    let mut response = if request.uri().path() == "/" {
        (StatusCode::UNAUTHORIZED, Html(DASHBOARD)).into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            "unauthorized: set Authorization: Bearer <http.auth_token>\n",
        )
            .into_response()
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

fn presented_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let from_query = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    let from_cookie = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|cookies| {
            cookies
                .split(';')
                .find_map(|c| c.trim().strip_prefix("bridge_token=").map(str::to_string))
        });
    bearer.or(from_query).or(from_cookie)
}

async fn ready(Extract(shared): Extract<Shared>) -> Response {
    match shared.state.not_ready() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

async fn status(Extract(shared): Extract<Shared>) -> Response {
    axum::Json(shared.state.snapshot(now_ms())).into_response()
}

async fn metrics(Extract(shared): Extract<Shared>) -> Response {
    let snap = shared.state.snapshot(now_ms());
    let outbox = &snap.outbox;
    metrics::gauge!("bridge_outbox_records").set(outbox.records as f64);
    metrics::gauge!("bridge_outbox_bytes").set(outbox.bytes as f64);
    let oldest = outbox
        .oldest_enqueued_ms
        .map_or(0.0, |t| (snap.now_ms - t).max(0) as f64 / 1000.0);
    metrics::gauge!("bridge_outbox_oldest_age_seconds").set(oldest);
    metrics::gauge!("bridge_dead_letters").set(outbox.dead_letters as f64);
    metrics::gauge!("bridge_mqtt_connected").set(f64::from(u8::from(snap.broker.connected)));
    metrics::gauge!("bridge_ready").set(f64::from(u8::from(snap.ready)));
    metrics::gauge!("bridge_backpressure").set(f64::from(u8::from(snap.backpressure)));
    let handle = metrics_handle();
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}

async fn events(
    Extract(shared): Extract<Shared>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let state = shared.state.clone();
    let stream = futures_util::stream::unfold((state, true), |(state, first)| async move {
        if !first {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let snapshot = state.snapshot(now_ms());
        let event = Event::default()
            .event("status")
            .json_data(&snapshot)
            .unwrap_or_else(|_| Event::default());
        Some((Ok(event), (state, false)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
