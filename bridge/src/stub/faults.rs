//! Injected faults that answer at the HTTP level: a queue of statuses for the next
//! localization requests, added latency, and an optional `Retry-After` on 429 and 503.
//! Refusing connections is a TCP matter and lives in `listener`.
//!
//! A queued 200 means "answer normally", so `[503, 200, 503]` fails every other request.
//! Bodies of injected statuses look like what sits in front of Twinzo would send: empty for
//! 401, 404, 429, 502, 503 and 504, an ASP.NET problem body for other 4xx and 5xx.

use std::collections::VecDeque;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer};

use super::responses::problem;

#[derive(Debug, Default)]
pub(crate) struct Faults {
    statuses: VecDeque<StatusCode>,
    latency: Duration,
    retry_after: Option<Duration>,
    /// Answer this status to every request until the instant (an outage of a set length).
    failing: Option<(StatusCode, std::time::Instant)>,
}

impl Faults {
    pub fn new(latency: Duration) -> Self {
        Self {
            latency,
            ..Self::default()
        }
    }

    /// Queues statuses; a code outside 100-999 is refused whole.
    pub fn push(&mut self, statuses: &[u16]) -> Result<(), u16> {
        let parsed = statuses
            .iter()
            .map(|&s| StatusCode::from_u16(s).map_err(|_| s))
            .collect::<Result<Vec<_>, _>>()?;
        self.statuses.extend(parsed);
        Ok(())
    }

    /// Answers `status` to every localization request for `window`.
    pub fn fail_for(&mut self, status: u16, window: Duration) -> Result<(), u16> {
        let code = StatusCode::from_u16(status).map_err(|_| status)?;
        self.failing = Some((code, std::time::Instant::now() + window));
        Ok(())
    }

    /// The next queued status, `None` when the request should be answered normally.
    pub fn next_status(&mut self) -> Option<StatusCode> {
        if let Some((code, until)) = self.failing {
            if std::time::Instant::now() < until {
                return Some(code);
            }
            self.failing = None;
        }
        self.statuses.pop_front().filter(|s| *s != StatusCode::OK)
    }

    pub fn latency(&self) -> Duration {
        self.latency
    }

    pub fn set_latency(&mut self, latency: Duration) {
        self.latency = latency;
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    pub fn set_retry_after(&mut self, retry_after: Option<Duration>) {
        self.retry_after = retry_after;
    }

    pub fn queued(&self) -> usize {
        self.statuses.len()
    }
}

/// The response for an injected status.
pub(crate) fn fault_response(status: StatusCode, retry_after: Option<Duration>) -> Response {
    let mut response = match status.as_u16() {
        401 | 404 | 429 | 502 | 503 | 504 => status.into_response(),
        400..=599 => problem(status, None),
        _ => status.into_response(),
    };
    let throttled = matches!(status.as_u16(), 429 | 503);
    if let (true, Some(after)) = (throttled, retry_after) {
        let value = HeaderValue::from(after.as_secs());
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The body of `POST /_stub/faults`; every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    /// Statuses for the next localization requests, appended to the queue.
    #[serde(default)]
    pub statuses: Vec<u16>,
    pub latency_ms: Option<u64>,
    /// Refuse TCP connections for this long, then listen again.
    pub refuse_ms: Option<u64>,
    /// Lifetime of tokens issued from now on.
    pub token_ttl_ms: Option<u64>,
    /// `Retry-After` seconds on injected 429 and 503; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    pub retry_after_s: Option<Option<u64>>,
}

/// Tells an explicit `null` (Some(None)) from an absent field (None).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_statuses_answer_in_order_and_200_passes_through() {
        let mut faults = Faults::default();
        faults.push(&[503, 200, 429]).unwrap();

        let seen: Vec<_> = (0..4)
            .map(|_| faults.next_status().map(|s| s.as_u16()))
            .collect();

        assert_eq!(seen, [Some(503), None, Some(429), None]);
    }

    #[test]
    fn invalid_codes_are_refused_whole() {
        let mut faults = Faults::default();

        assert_eq!(faults.push(&[503, 42]), Err(42));
        assert_eq!(faults.queued(), 0);
    }

    #[test]
    fn retry_after_goes_on_429_and_503_only() {
        let after = Some(Duration::from_secs(2));

        let on_503 = fault_response(StatusCode::SERVICE_UNAVAILABLE, after);
        let on_500 = fault_response(StatusCode::INTERNAL_SERVER_ERROR, after);

        assert_eq!(on_503.headers()[header::RETRY_AFTER], "2");
        assert!(on_500.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn fault_request_tells_null_from_absent() {
        let cleared: FaultRequest = serde_json::from_str(r#"{"retry_after_s": null}"#).unwrap();
        let absent: FaultRequest = serde_json::from_str("{}").unwrap();

        assert_eq!(cleared.retry_after_s, Some(None));
        assert_eq!(absent.retry_after_s, None);
    }
}
