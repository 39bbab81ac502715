//! twinzo-bridge: ATI Motors robot telemetry from MQTT into Twinzo's localization API.
//!
//! The data path, one module per step:
//! - [`mqtt`]: broker URLs, client options and the loop that polls the connection;
//! - [`pipeline`]: routes, normalizes ([`normalize`]), resolves devices ([`devices`]),
//!   transforms ([`transform`]) and commits each message to the [`outbox`] before acking it;
//! - [`sender`]: drains the outbox to Twinzo ([`twinzo`]) in batches per login, with retry,
//!   and one probe at a time while Twinzo as a whole fails;
//! - [`app`]: wires them together with the HTTP server ([`http`]) and shutdown, for `run` and
//!   for `retire` (a member leaving its shared group).
//!
//! Around it: [`config`] (TOML plus `BRIDGE_` variables), [`state`] (what the dashboard
//! shows), [`stub`] (a strict Twinzo stand-in), [`simulate`] (an ATI fleet simulator),
//! [`calibrate`] (fits the metre-to-millimetre transform), [`check`] (post-deploy checks) and
//! [`dead_letters`] (the `dead-letters` command).

pub mod app;
pub mod calibrate;
pub mod check;
pub mod config;
pub mod dead_letters;
pub mod devices;
pub mod http;
pub mod mqtt;
pub mod normalize;
pub mod outbox;
pub mod pipeline;
pub mod route;
pub mod sender;
pub mod simulate;
pub mod state;
pub mod stub;
pub mod transform;
pub mod twinzo;

use std::time::Duration;

use backon::BackoffBuilder;
use rand::Rng;

/// An error and all its sources on one line: `a: b: c`. reqwest and rumqttc keep the useful
/// part (refused, timed out) deep in the chain.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

/// An exponential backoff schedule with full jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
    pub factor: f32,
}

impl Backoff {
    /// For reconnecting to the broker.
    pub const RECONNECT: Backoff = Backoff {
        min: Duration::from_millis(500),
        max: Duration::from_secs(30),
        factor: 2.0,
    };

    /// Endless delays: each a uniform draw between `min` and the current exponential step
    /// (backon computes the steps), so many clients do not retry in lockstep and none retries
    /// in a tight loop.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + 'static {
        let min = self.min;
        backon::ExponentialBuilder::default()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_factor(self.factor)
            .without_max_times()
            .build()
            .map(move |step| {
                if step <= min {
                    min
                } else {
                    rand::rng().random_range(min..=step)
                }
            })
    }
}

impl From<&config::RetryConfig> for Backoff {
    fn from(r: &config::RetryConfig) -> Self {
        Backoff {
            min: Duration::from_millis(r.min_delay_ms),
            max: Duration::from_millis(r.max_delay_ms),
            factor: r.factor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_stays_within_bounds_and_never_ends() {
        let b = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(2),
            factor: 2.0,
        };
        let delays: Vec<Duration> = b.delays().take(50).collect();
        assert_eq!(delays.len(), 50);
        assert!(
            delays.iter().all(|d| *d >= b.min && *d <= b.max),
            "{delays:?}"
        );
        // With full jitter the late delays spread over [min, max]; their mean is well above min.
        let late: Duration = delays[20..].iter().sum::<Duration>() / 30;
        assert!(late > Duration::from_millis(400), "{late:?}");
    }

    #[test]
    fn error_chain_joins_sources_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let outer = crate::outbox::OutboxError::Dir {
            path: "/x".into(),
            source: io,
        };
        assert_eq!(
            error_chain(&outer),
            "cannot create the outbox directory /x: connection refused"
        );
    }
}
