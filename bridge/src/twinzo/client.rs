//! The Twinzo HTTP client, both modes of the API.
//!
//! **Device mode** authenticates each login (`POST /v3/authorization/authenticate`), caches the
//! token and refreshes it ahead of its `Expiration` (a fifth of its lifetime, at most five
//! minutes, early). Each login has its own async lock, so one authentication at most is in
//! flight per login however many batches wait for it. A 401 or a token-shaped `Success: false`
//! drops the token and re-authenticates once; a second refusal is retried later with backoff.
//!
//! **API-key mode** posts many logins in one `POST /v3/localization/batch` with the `Client`,
//! `Branch` and `Api-Key` headers.
//!
//! Every body is read and classified by [`classify`](super::classify): HTTP 200 with
//! `Success: false` is a failure, and a failed location inside a successful body is rejected
//! alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::classify::{classify, retry_after, Reply, Verdict};
use super::model::{AuthRequest, AuthResponse, BatchEntry, Location, LoginResult};
use crate::config::{AuthMode, Secret, TwinzoConfig};
use crate::error_chain;

/// Errors building the client or checking credentials.
#[derive(Debug, thiserror::Error)]
pub enum TwinzoError {
    #[error("cannot build the HTTP client")]
    Build(#[source] reqwest::Error),
    #[error("{0}")]
    Refused(String),
}

/// What became of one login's locations.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// Twinzo took them; `rejected` lists the timestamps of single locations it refused.
    Accepted {
        rejected: Vec<(i64, String)>,
    },
    Retry {
        after: Option<Duration>,
        reason: String,
        /// Twinzo, or the way to it, fails for every login (any retry of the table in
        /// [`super::classify`]); false when only this login is concerned.
        outage: bool,
    },
    Reject {
        code: &'static str,
        reason: String,
    },
}

#[derive(Clone)]
struct Token {
    token: String,
    client: String,
    branch: String,
    refresh_at_ms: i64,
}

type TokenSlot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// A Twinzo API client shared by all sender tasks.
pub struct Twinzo {
    http: reqwest::Client,
    base: String,
    mode: AuthMode,
    client_name: String,
    api_key: Secret,
    client_guid: String,
    branch_guid: String,
    tokens: Mutex<HashMap<String, TokenSlot>>,
    reachable: AtomicBool,
}

impl Twinzo {
    pub fn new(cfg: &TwinzoConfig) -> Result<Self, TwinzoError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.request_timeout_secs))
            .connect_timeout(Duration::from_secs(cfg.request_timeout_secs.min(5)))
            .pool_max_idle_per_host(cfg.max_concurrent_requests)
            .user_agent(concat!("twinzo-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(TwinzoError::Build)?;
        Ok(Twinzo {
            http,
            base: cfg.base_url.trim_end_matches('/').to_string(),
            mode: cfg.auth,
            client_name: cfg.client.clone(),
            api_key: cfg.api_key.clone(),
            client_guid: cfg.client_guid.clone(),
            branch_guid: cfg.branch_guid.clone(),
            tokens: Mutex::new(HashMap::new()),
            reachable: AtomicBool::new(false),
        })
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Whether an authentication or a request has succeeded since the last transport failure.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Device mode: posts one login's locations with its token.
    pub async fn send_device(
        &self,
        login: &str,
        password: &Secret,
        locations: &[Location],
    ) -> Delivery {
        for attempt in 0..2 {
            let token = match self.token(login, password, attempt > 0).await {
                Ok(t) => t,
                Err(delivery) => return delivery,
            };
            let mut request = self
                .http
                .post(format!("{}/v3/localization", self.base))
                .header("Client", &token.client)
                .header("Branch", &token.branch)
                .header("Token", &token.token)
                .json(locations);
            if !self.api_key.is_empty() {
                request = request.header("Api-Key", self.api_key.expose());
            }
            let reply = match self.call::<LoginResult>(request, "localization").await {
                Ok(body) => Reply::Body(body),
                Err(reply) => reply,
            };
            match classify(&reply, false) {
                Verdict::Reauthenticate if attempt == 0 => continue,
                Verdict::Reauthenticate => {
                    return Delivery::Retry {
                        after: None,
                        reason: "refused after re-authentication".into(),
                        outage: false,
                    }
                }
                verdict => return self.delivery(verdict, &reply),
            }
        }
        unreachable!("the loop returns on its second pass")
    }

    /// API-key mode: posts several logins in one call; one [`Delivery`] per group, in order.
    pub async fn send_batch(&self, groups: &[(String, Vec<Location>)]) -> Vec<Delivery> {
        let body: Vec<BatchEntry<'_>> = groups
            .iter()
            .map(|(login, locations)| BatchEntry { login, locations })
            .collect();
        let request = self
            .http
            .post(format!("{}/v3/localization/batch", self.base))
            .header("Client", &self.client_guid)
            .header("Branch", &self.branch_guid)
            .header("Api-Key", self.api_key.expose())
            .json(&body);
        match self.call::<Vec<LoginResult>>(request, "batch").await {
            Ok(results) => groups
                .iter()
                .map(|(login, _)| {
                    let found = results
                        .iter()
                        .find(|r| r.login.as_deref() == Some(login.as_str()));
                    match found {
                        Some(r) => {
                            let reply = Reply::Body(r.clone());
                            self.delivery(classify(&reply, true), &reply)
                        }
                        None => Delivery::Retry {
                            after: None,
                            reason: format!("no result for {login}"),
                            outage: false,
                        },
                    }
                })
                .collect(),
            Err(reply) => {
                let verdict = classify(&reply, true);
                groups
                    .iter()
                    .map(|_| self.delivery(verdict.clone(), &reply))
                    .collect()
            }
        }
    }

    /// Authenticates one login now, for `check` and readiness.
    pub async fn check_login(&self, login: &str, password: &Secret) -> Result<(), TwinzoError> {
        match self.token(login, password, true).await {
            Ok(_) => Ok(()),
            Err(Delivery::Retry { reason, .. } | Delivery::Reject { reason, .. }) => {
                Err(TwinzoError::Refused(reason))
            }
            Err(Delivery::Accepted { .. }) => Ok(()),
        }
    }

    /// Checks the API key with a read-only call (`GET /v3/sectors`).
    pub async fn check_api_key(&self) -> Result<(), TwinzoError> {
        let request = self
            .http
            .get(format!("{}/v3/sectors", self.base))
            .header("Client", &self.client_guid)
            .header("Branch", &self.branch_guid)
            .header("Api-Key", self.api_key.expose());
        match self.call::<serde_json::Value>(request, "sectors").await {
            Ok(_) => Ok(()),
            Err(Reply::Status { status: 401, .. }) => {
                Err(TwinzoError::Refused("API key refused (401)".into()))
            }
            Err(reply) => Err(TwinzoError::Refused(describe(&reply))),
        }
    }

    fn delivery(&self, verdict: Verdict, reply: &Reply) -> Delivery {
        match verdict {
            Verdict::Accepted => {
                let rejected = match reply {
                    Reply::Body(r) => r
                        .locations
                        .iter()
                        .filter(|l| !l.success)
                        .map(|l| {
                            (
                                l.timestamp.unwrap_or(0),
                                l.error_message.clone().unwrap_or_default(),
                            )
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                Delivery::Accepted { rejected }
            }
            Verdict::Retry { after, reason } => Delivery::Retry {
                after,
                reason,
                outage: true,
            },
            Verdict::Reauthenticate => Delivery::Retry {
                after: None,
                reason: "authentication needed".into(),
                outage: false,
            },
            Verdict::Reject { code, reason } => Delivery::Reject { code, reason },
        }
    }

    /// The login's token, authenticating when there is none, it is due for refresh, or `force`.
    async fn token(&self, login: &str, password: &Secret, force: bool) -> Result<Token, Delivery> {
        let slot = {
            let mut tokens = self
                .tokens
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            tokens.entry(login.to_string()).or_default().clone()
        };
        let mut guard = slot.lock().await;
        let now = now_ms();
        if let Some(token) = guard.as_ref() {
            if !force && now < token.refresh_at_ms {
                return Ok(token.clone());
            }
        }
        let fresh = self.authenticate(login, password).await?;
        *guard = Some(fresh.clone());
        Ok(fresh)
    }

    async fn authenticate(&self, login: &str, password: &Secret) -> Result<Token, Delivery> {
        let body = AuthRequest {
            client: &self.client_name,
            login,
            password: password.expose(),
        };
        let request = self
            .http
            .post(format!("{}/v3/authorization/authenticate", self.base))
            .json(&body);
        let response = match self.call::<AuthResponse>(request, "authenticate").await {
            Ok(r) => r,
            Err(reply) => {
                return Err(match classify(&reply, false) {
                    Verdict::Reject { code, reason } => Delivery::Reject { code, reason },
                    Verdict::Retry { after, reason } => Delivery::Retry {
                        after,
                        reason: format!("authenticate: {reason}"),
                        outage: true,
                    },
                    _ => Delivery::Retry {
                        after: None,
                        reason: format!("authenticate: {}", describe(&reply)),
                        outage: false,
                    },
                })
            }
        };
        let message = response.error_message.clone().unwrap_or_default();
        match response {
            AuthResponse {
                success: true,
                token: Some(token),
                expiration: Some(exp),
                client,
                branch,
                created,
                ..
            } => {
                let created = created.unwrap_or_else(now_ms);
                let lead = ((exp - created) / 5).clamp(0, 300_000);
                metrics::counter!("bridge_twinzo_token_refreshes_total").increment(1);
                tracing::debug!(
                    login,
                    expires_in_ms = exp - now_ms(),
                    "twinzo token refreshed"
                );
                Ok(Token {
                    token,
                    client: client.unwrap_or_else(|| self.client_guid.clone()),
                    branch: branch.unwrap_or_else(|| self.branch_guid.clone()),
                    refresh_at_ms: exp - lead,
                })
            }
            _ if message.to_lowercase().contains("does not exist") => Err(Delivery::Reject {
                code: "unknown_device",
                reason: message,
            }),
            _ => {
                let reason = if message.is_empty() {
                    "authentication refused".to_string()
                } else {
                    message
                };
                tracing::error!(login, reason = %reason, "twinzo authentication failed; records are kept");
                Err(Delivery::Retry {
                    after: None,
                    reason: format!("authenticate: {reason}"),
                    outage: false,
                })
            }
        }
    }

    /// Sends a request and reads the body as `T`; anything else becomes the [`Reply`] that
    /// [`classify`] understands.
    async fn call<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        endpoint: &'static str,
    ) -> Result<T, Reply> {
        let started = Instant::now();
        let outcome = request.send().await;
        let class = match &outcome {
            Ok(r) => status_class(r.status().as_u16()),
            Err(_) => "transport",
        };
        metrics::histogram!("bridge_twinzo_request_seconds", "endpoint" => endpoint, "status" => class)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("bridge_twinzo_requests_total", "endpoint" => endpoint, "status" => class).increment(1);

        let response = match outcome {
            Ok(r) => r,
            Err(e) => {
                self.reachable.store(false, Ordering::Relaxed);
                return Err(Reply::Transport(error_chain(&e)));
            }
        };
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let after = retry_after(
                response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()),
            );
            if status < 500 && status != 401 {
                self.reachable.store(true, Ordering::Relaxed);
            }
            return Err(Reply::Status {
                status,
                retry_after: after,
            });
        }
        self.reachable.store(true, Ordering::Relaxed);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Reply::Transport(error_chain(&e)))?;
        serde_json::from_slice::<T>(&bytes).map_err(|e| Reply::Unreadable(e.to_string()))
    }
}

fn describe(reply: &Reply) -> String {
    match reply {
        Reply::Transport(e) => e.clone(),
        Reply::Status { status, .. } => format!("HTTP {status}"),
        Reply::Unreadable(e) => format!("unreadable response: {e}"),
        Reply::Body(r) => r
            .error_message
            .clone()
            .unwrap_or_else(|| "Success: false".into()),
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
