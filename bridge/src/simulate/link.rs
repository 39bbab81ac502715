//! The simulator's MQTT connection: broker URL to rumqttc options, and the task that polls the
//! event loop, counts acknowledgements and reconnects with backoff.
//!
//! rumqttc loses messages across a reconnect in two ways, and the driver works around both.
//! When the connection drops it moves the unacknowledged publishes *and everything still queued
//! in the request channel* into its `pending` list, then empties that list if the broker says it
//! holds no session (clean session, or a broker that restarted without persistence). And it
//! replays `pending` without flow control, so a long list wraps packet ids past the in-flight
//! limit and silently overwrites colliding messages. The driver therefore copies the
//! unacknowledged publishes (which have packet ids) to restore them into a fresh session, and
//! takes the queued ones (packet id 0) out of `pending` into its own backlog, which it feeds
//! back only while the in-flight window has room. Every message is thus delivered at least once;
//! one that reached the broker just before the connection broke may arrive twice.

use std::collections::VecDeque;
use std::time::Duration;

use rumqttc::{
    ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish,
    Request,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::mqtt::{BrokerUrl, Scheme};
use crate::{error_chain, Backoff};

/// Largest packet either way; Mosquitto's project config allows 256 KiB of payload.
const MAX_PACKET: usize = 256 * 1024 + 4096;
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Reconnect delays: a simulator should be back quickly after a broker restart.
const RECONNECT: Backoff = Backoff {
    min: Duration::from_millis(100),
    max: Duration::from_secs(5),
    factor: 2.0,
};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("invalid broker url: {0}")]
    Url(String),
    #[error("--password needs --username")]
    PasswordWithoutUser,
    #[error("could not set up TLS with the platform's root certificates")]
    Tls,
    #[error("broker refused the connection: {0}")]
    Refused(&'static str),
}

/// What the producer needs to know about the connection.
#[derive(Debug, Clone, Default)]
pub(super) struct Progress {
    pub connected: bool,
    /// PubAcks received: QoS 1 messages the broker took responsibility for.
    pub acked: u64,
    /// Publish packets written (QoS 0 delivery as far as the client can tell).
    pub written: u64,
    pub last_error: Option<String>,
}

/// Builds client options from a broker URL ([`BrokerUrl`] picks the transport from the scheme
/// and gives rumqttc the whole URL for ws/wss).
pub(super) fn options(
    url: &str,
    client_id: &str,
    credentials: Option<(&str, &str)>,
    durable: bool,
    inflight: u16,
) -> Result<MqttOptions, LinkError> {
    let url = BrokerUrl::parse(url).map_err(LinkError::Url)?;
    let host = match url.scheme {
        Scheme::Ws | Scheme::Wss => url.full.clone(),
        Scheme::Mqtt | Scheme::Mqtts => url.host.clone(),
    };
    if url.is_tls() {
        crate::mqtt::init_crypto();
    }
    // rumqttc panics instead of failing when the platform's root certificates cannot be read.
    let transport = std::panic::catch_unwind(|| url.transport(None)).map_err(|_| LinkError::Tls)?;

    let mut options = MqttOptions::new(client_id, host, url.port);
    if let Some((user, password)) = credentials {
        options.set_credentials(user, password);
    }
    options
        .set_transport(transport)
        .set_keep_alive(KEEP_ALIVE)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_inflight(inflight)
        .set_clean_session(!durable);
    Ok(options)
}

/// Polls the event loop until `stop`, a DISCONNECT, or a refusal that retrying cannot fix.
pub(super) async fn drive(
    mut el: EventLoop,
    progress: watch::Sender<Progress>,
    stop: CancellationToken,
) -> Result<(), LinkError> {
    let mut link = Resend::default();
    let mut failures: u32 = 0;
    let mut delays = RECONNECT.delays();
    loop {
        let polled = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            polled = el.poll() => polled,
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                info!(session_present = ack.session_present, "mqtt connected");
                link.connected(&mut el, ack.session_present);
                failures = 0;
                delays = RECONNECT.delays();
                progress.send_modify(|p| p.connected = true);
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => progress.send_modify(|p| p.acked += 1),
            Ok(Event::Outgoing(Outgoing::Publish(_))) => progress.send_modify(|p| p.written += 1),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return Ok(()),
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => return Ok(()),
            Err(ConnectionError::ConnectionRefused(code)) if refusal(code).is_some() => {
                return Err(LinkError::Refused(refusal(code).unwrap_or_default()));
            }
            Err(err) => {
                link.disconnected(&mut el);
                failures = failures.saturating_add(1);
                let delay = delays.next().unwrap_or(RECONNECT.max);
                let error = error_chain(&err);
                let retry_in_ms = delay.as_millis() as u64;
                warn!(%error, attempt = failures, retry_in_ms, "mqtt connection failed");
                progress.send_modify(|p| {
                    p.connected = false;
                    p.last_error = Some(error);
                });
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
                continue;
            }
        }
        link.feed(&mut el);
    }
}

/// A CONNACK code that retrying will not change, as a message.
fn refusal(code: ConnectReturnCode) -> Option<&'static str> {
    match code {
        ConnectReturnCode::BadUserNamePassword => Some("bad username or password"),
        ConnectReturnCode::NotAuthorized => Some("not authorized (check username and password)"),
        ConnectReturnCode::BadClientId => Some("client id rejected"),
        ConnectReturnCode::RefusedProtocolVersion => Some("MQTT 3.1.1 not supported"),
        ConnectReturnCode::ServiceUnavailable | ConnectReturnCode::Success => None,
    }
}

/// The messages the driver holds back to resend (see the module docs).
#[derive(Debug, Default)]
struct Resend {
    /// Copies of the publishes that were in flight when the connection dropped.
    in_flight: Vec<Request>,
    /// Queued publishes not yet given a packet id, oldest first.
    backlog: VecDeque<Publish>,
    connected: bool,
}

impl Resend {
    fn disconnected(&mut self, el: &mut EventLoop) {
        self.connected = false;
        let mut keep = VecDeque::with_capacity(el.pending.len());
        for request in el.pending.drain(..) {
            match request {
                Request::Publish(p) if p.pkid == 0 => self.backlog.push_back(p),
                other => keep.push_back(other),
            }
        }
        self.in_flight = keep.iter().cloned().collect();
        el.pending = keep;
    }

    fn connected(&mut self, el: &mut EventLoop, session_present: bool) {
        self.connected = true;
        if session_present {
            // rumqttc kept its pending list and replays it.
            self.in_flight.clear();
        } else {
            el.pending.extend(self.in_flight.drain(..));
        }
    }

    /// Moves backlog into `pending` while the in-flight window has room.
    fn feed(&mut self, el: &mut EventLoop) {
        if !self.connected {
            return;
        }
        let window = usize::from(el.mqtt_options.inflight());
        while el.state.collision.is_none()
            && el.pending.len() + usize::from(el.state.inflight()) < window
        {
            let Some(publish) = self.backlog.pop_front() else {
                break;
            };
            el.pending.push_back(Request::Publish(publish));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(url: &str) -> rumqttc::Transport {
        options(url, "c", None, false, 10).unwrap().transport()
    }

    #[test]
    fn transport_follows_the_url_scheme() {
        use rumqttc::Transport;
        assert!(matches!(transport("mqtt://broker:1883"), Transport::Tcp));
        assert!(matches!(transport("ws://broker:9001/mqtt"), Transport::Ws));
        // Without a panic: rustls needs a crypto provider chosen first.
        assert!(matches!(transport("mqtts://broker"), Transport::Tls(_)));
        assert!(matches!(
            transport("wss://broker.up.railway.app/mqtt"),
            Transport::Wss(_)
        ));

        let ws = options("ws://broker:9001/mqtt", "c", None, false, 10).unwrap();
        assert_eq!(ws.broker_address().0, "ws://broker:9001/mqtt");
        let tcp = options("mqtt://[::1]", "c", None, false, 10).unwrap();
        assert_eq!(tcp.broker_address(), ("::1".to_owned(), 1883));
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        let err = |url| options(url, "c", None, false, 10).unwrap_err().to_string();
        assert!(err("http://broker").starts_with("invalid broker url: unsupported scheme"));
        assert!(err("mqtt://user:pw@broker").contains("credentials"));
        assert!(err("broker:1883").starts_with("invalid broker url"));
    }

    #[test]
    fn durable_turns_clean_session_off() {
        let o = options("mqtt://b", "fixed", Some(("u", "p")), true, 10).unwrap();
        assert!(!o.clean_session());
        assert_eq!(o.credentials().map(|l| l.username), Some("u".to_owned()));
        assert_eq!(o.keep_alive(), KEEP_ALIVE);
        assert!(options("mqtt://b", "c", None, false, 10)
            .unwrap()
            .clean_session());
    }

    #[test]
    fn only_auth_and_protocol_refusals_are_final() {
        assert!(refusal(ConnectReturnCode::NotAuthorized).is_some());
        assert!(refusal(ConnectReturnCode::BadUserNamePassword).is_some());
        assert!(refusal(ConnectReturnCode::ServiceUnavailable).is_none());
    }

    #[test]
    fn queued_publishes_move_to_the_backlog_and_in_flight_ones_are_kept() {
        let mut options = MqttOptions::new("c", "h", 1);
        options.set_inflight(10);
        let (_client, mut el) = rumqttc::AsyncClient::new(options, 10);
        let publish = |pkid| {
            let mut p = Publish::new("t", rumqttc::QoS::AtLeastOnce, vec![1]);
            p.pkid = pkid;
            Request::Publish(p)
        };
        el.pending
            .extend([publish(3), publish(0), publish(4), publish(0)]);

        let mut resend = Resend::default();
        resend.disconnected(&mut el);
        assert_eq!(el.pending.len(), 2);
        assert_eq!(resend.backlog.len(), 2);

        // A fresh session: rumqttc cleared pending, the copies come back.
        el.pending.clear();
        resend.connected(&mut el, false);
        assert_eq!(el.pending, VecDeque::from([publish(3), publish(4)]));

        // The backlog fills the window (10) but no further.
        resend
            .backlog
            .extend((0..20).map(|_| Publish::new("t", rumqttc::QoS::AtLeastOnce, vec![1])));
        resend.feed(&mut el);
        assert_eq!(el.pending.len(), 10);
        assert_eq!(resend.backlog.len(), 22 - 8);
    }
}
