//! `twinzo-bridge check`: after a deploy, proves each link of the chain with the real
//! configuration and prints one `PASS`/`FAIL` line per step:
//! 1. the broker accepts our credentials (a separate, clean session, so the bridge's durable
//!    session is not disturbed) and grants every subscription;
//! 2. Twinzo accepts each configured login (device mode) or the API key.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, SubscribeReasonCode};

use crate::config::{AuthMode, Config};
use crate::devices::Directory;
use crate::twinzo::Twinzo;

/// One step's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub result: Result<String, String>,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.result {
            Ok(detail) => write!(f, "PASS {}: {detail}", self.name),
            Err(reason) => write!(f, "FAIL {}: {reason}", self.name),
        }
    }
}

/// Runs every step; the caller exits non-zero when any failed.
pub async fn run(config: &Config) -> Vec<Step> {
    let mut steps = vec![broker(config).await];
    steps.extend(twinzo(config).await);
    steps
}

async fn broker(config: &Config) -> Step {
    let name = format!("broker {}", config.mqtt.url);
    let result = tokio::time::timeout(Duration::from_secs(15), subscribe_once(config))
        .await
        .unwrap_or_else(|_| Err("no answer within 15 s".into()));
    Step { name, result }
}

async fn subscribe_once(config: &Config) -> Result<String, String> {
    let client_id = format!("{}-check", config.mqtt.client_id);
    let mut options = crate::mqtt::options(&config.mqtt, &client_id)?;
    options.set_clean_session(true).set_manual_acks(false);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let filters: Vec<String> = config
        .forward_routes()
        .into_iter()
        .map(|r| r.filter)
        .collect();
    let subs = crate::mqtt::subscriptions(&config.mqtt, &filters);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let filters = subs
                    .iter()
                    .map(|(f, q)| rumqttc::SubscribeFilter::new(f.clone(), *q));
                client
                    .try_subscribe_many(filters)
                    .map_err(|e| e.to_string())?;
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let refused: Vec<&str> = subs
                    .iter()
                    .zip(&ack.return_codes)
                    .filter(|(_, code)| matches!(code, SubscribeReasonCode::Failure))
                    .map(|((f, _), _)| f.as_str())
                    .collect();
                let _ = client.try_disconnect();
                return if refused.is_empty() {
                    Ok(format!(
                        "logged in as {:?}, subscribed to {} filters",
                        config.mqtt.username,
                        subs.len()
                    ))
                } else {
                    Err(format!("subscriptions refused: {}", refused.join(", ")))
                };
            }
            Ok(_) => {}
            Err(e) => return Err(crate::error_chain(&e)),
        }
    }
}

async fn twinzo(config: &Config) -> Vec<Step> {
    let client = match Twinzo::new(&config.twinzo) {
        Ok(c) => c,
        Err(e) => {
            return vec![Step {
                name: "twinzo".into(),
                result: Err(crate::error_chain(&e)),
            }]
        }
    };
    match config.twinzo.auth {
        AuthMode::ApiKey => {
            let result = client
                .check_api_key()
                .await
                .map(|()| "API key accepted".to_string());
            vec![Step {
                name: format!("twinzo {}", config.twinzo.base_url),
                result: result.map_err(|e| e.to_string()),
            }]
        }
        AuthMode::Device => {
            let directory = Directory::new(config);
            let logins = directory.configured_logins();
            if logins.is_empty() {
                let result = Err("no device in the device table to authenticate; add [[devices]] to check device mode".to_string());
                return vec![Step {
                    name: "twinzo login".into(),
                    result,
                }];
            }
            let mut steps = Vec::new();
            for login in logins {
                let result = client
                    .check_login(&login, directory.password(&login))
                    .await
                    .map(|()| "authenticated".to_string())
                    .map_err(|e| e.to_string());
                steps.push(Step {
                    name: format!("twinzo login {login}"),
                    result,
                });
            }
            steps
        }
    }
}
