//! The retry table: what each outcome of a Twinzo request means for the records it carried.
//!
//! | outcome                                         | verdict                         |
//! |-------------------------------------------------|---------------------------------|
//! | connection refused, reset, DNS, TLS, timeout    | retry                           |
//! | 2xx whose body cannot be read                   | retry (a proxy's page, a cut body) |
//! | 2xx, `Success: true`                            | accepted (a failed location is rejected alone) |
//! | 2xx, `Success: false`, "... does not exist"     | reject `unknown_device`         |
//! | 2xx, `Success: false`, token or auth wording    | re-authenticate                 |
//! | 2xx, `Success: false`, anything else            | reject                          |
//! | 401                                             | re-authenticate (device mode), retry (API key) |
//! | 400, 413, 422                                   | reject: the same body fails again |
//! | 403, 404, 3xx                                   | retry: configuration, a person must act; data is kept |
//! | 408, 425, 429, 5xx                              | retry, honouring `Retry-After`  |
//! | any other 4xx                                   | reject                          |
//!
//! Every retry here means Twinzo, or our way to it, fails for every login alike: down, slow,
//! asking us to slow down, or configured wrongly. The sender then holds all logins and probes
//! with one request at a time until Twinzo answers (see `sender::outage`). The retries that
//! concern one login only (its credentials, a batch result missing for it) come from the
//! client.
//!
//! Retrying keeps records in the outbox, so a wrong base URL or revoked key costs nothing but
//! time (bounded by `outbox.max_age_secs` when set); rejecting sends them to dead letters,
//! from where `dead-letters replay` can resend them.

use std::time::Duration;

use super::model::LoginResult;

/// What happened to one request, as far as classification needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// No HTTP response: refused, reset, timed out.
    Transport(String),
    /// A status outside 2xx.
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// 2xx whose body was not the expected JSON.
    Unreadable(String),
    /// 2xx with a body, for one login.
    Body(LoginResult),
}

/// What to do with the records of one login.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Accepted,
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    Reauthenticate,
    Reject {
        code: &'static str,
        reason: String,
    },
}

/// Classifies one reply. `api_key` says which auth mode sent it (401 differs).
pub fn classify(reply: &Reply, api_key: bool) -> Verdict {
    let retry = |reason: String| Verdict::Retry {
        after: None,
        reason,
    };
    match reply {
        Reply::Transport(e) => retry(e.clone()),
        Reply::Unreadable(e) => retry(format!("unreadable response: {e}")),
        Reply::Body(result) if result.success => Verdict::Accepted,
        Reply::Body(result) => {
            let message = result
                .error_message
                .clone()
                .unwrap_or_else(|| "Success: false".into());
            let lower = message.to_lowercase();
            if lower.contains("does not exist") || lower.contains("not found") {
                Verdict::Reject {
                    code: "unknown_device",
                    reason: message,
                }
            } else if !api_key
                && ["token", "expired", "unauthori", "authenticat"]
                    .iter()
                    .any(|w| lower.contains(w))
            {
                Verdict::Reauthenticate
            } else {
                Verdict::Reject {
                    code: "twinzo_rejected",
                    reason: message,
                }
            }
        }
        Reply::Status {
            status,
            retry_after,
        } => match status {
            401 if !api_key => Verdict::Reauthenticate,
            401 => retry("401: API key refused".into()),
            400 | 413 | 422 => Verdict::Reject {
                code: "twinzo_rejected",
                reason: format!("HTTP {status}"),
            },
            403 | 404 | 300..=399 => retry(format!(
                "HTTP {status}: check twinzo.base_url and credentials"
            )),
            408 | 425 | 429 | 500..=599 => Verdict::Retry {
                after: *retry_after,
                reason: format!("HTTP {status}"),
            },
            _ => Verdict::Reject {
                code: "twinzo_rejected",
                reason: format!("HTTP {status}"),
            },
        },
    }
}

/// Reads a `Retry-After` header given in seconds (HTTP dates are rare from APIs; they are
/// ignored and the backoff applies).
pub fn retry_after(value: Option<&str>) -> Option<Duration> {
    let secs: u64 = value?.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(300)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(success: bool, message: Option<&str>) -> Reply {
        Reply::Body(LoginResult {
            login: Some("tugger-01".into()),
            success,
            error_message: message.map(str::to_string),
            locations: Vec::new(),
        })
    }

    fn status(status: u16) -> Reply {
        Reply::Status {
            status,
            retry_after: None,
        }
    }

    fn kind(v: &Verdict) -> &'static str {
        match v {
            Verdict::Accepted => "accept",
            Verdict::Retry { .. } => "retry",
            Verdict::Reauthenticate => "reauth",
            Verdict::Reject { .. } => "reject",
        }
    }

    #[test]
    fn every_outcome_has_its_verdict() {
        let table: Vec<(Reply, bool, &str)> = vec![
            (
                Reply::Transport("connection refused".into()),
                false,
                "retry",
            ),
            (
                Reply::Transport("operation timed out".into()),
                true,
                "retry",
            ),
            (Reply::Unreadable("<html>".into()), false, "retry"),
            (body(true, None), false, "accept"),
            (
                body(false, Some("Device tugger-01 does not exist.")),
                false,
                "reject",
            ),
            (
                body(false, Some("Device tugger-01 does not exist.")),
                true,
                "reject",
            ),
            (body(false, Some("Token expired")), false, "reauth"),
            (body(false, Some("Token expired")), true, "reject"),
            (body(false, Some("Sector 9 is archived")), false, "reject"),
            (body(false, None), false, "reject"),
            (status(400), false, "reject"),
            (status(413), false, "reject"),
            (status(422), true, "reject"),
            (status(401), false, "reauth"),
            (status(401), true, "retry"),
            (status(403), false, "retry"),
            (status(404), true, "retry"),
            (status(301), false, "retry"),
            (status(408), false, "retry"),
            (status(425), false, "retry"),
            (status(429), false, "retry"),
            (status(500), false, "retry"),
            (status(502), true, "retry"),
            (status(503), false, "retry"),
            (status(504), false, "retry"),
            (status(418), false, "reject"),
            (status(409), false, "reject"),
        ];
        for (reply, api_key, want) in table {
            assert_eq!(
                kind(&classify(&reply, api_key)),
                want,
                "{reply:?} api_key={api_key}"
            );
        }
    }

    #[test]
    fn unknown_device_has_its_own_code() {
        let v = classify(&body(false, Some("Device x does not exist.")), false);
        assert!(matches!(
            v,
            Verdict::Reject {
                code: "unknown_device",
                ..
            }
        ));
    }

    #[test]
    fn retry_after_is_kept_for_503_and_429() {
        let after = Some(Duration::from_secs(7));
        for s in [429, 503] {
            let v = classify(
                &Reply::Status {
                    status: s,
                    retry_after: after,
                },
                false,
            );
            assert_eq!(
                v,
                Verdict::Retry {
                    after,
                    reason: format!("HTTP {s}")
                }
            );
        }
    }

    #[test]
    fn retry_after_header_parses_seconds_and_caps_them() {
        assert_eq!(retry_after(Some("3")), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(Some("99999")), Some(Duration::from_secs(300)));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(None), None);
    }
}
