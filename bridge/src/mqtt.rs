//! The MQTT side: broker URLs, client options, and the loop that polls the connection.
//!
//! The loop never awaits a client call (rumqttc makes progress only while `poll()` runs; an
//! awaited `ack` or `subscribe` from here can deadlock when the request channel is full). It
//! hands QoS 1 publishes to the ingest task through a bounded channel, counts QoS 0 copies
//! from the `#` watch subscription itself, re-subscribes when the broker lost our session, and
//! sleeps with jittered exponential backoff between failed connection attempts.
//!
//! Overlapping subscriptions: a robot status matches both `ati/+/status` (QoS 1) and the `#`
//! watch (QoS 0). Mosquitto 2.0 delivers such a message once, at the highest QoS granted, so
//! every delivery is counted for the topic explorer once and forwarded when its topic matches
//! a forwarded route, whatever its QoS. A broker that delivers one copy per subscription
//! instead (the MQTT 3.1.1 alternative) produces two identical copies; the outbox drops the
//! second as a duplicate of the first (same message id, or same login and time).
//!
//! Shared subscriptions (`mqtt.shared_group`): the broker hands each message of
//! `$share/GROUP/ati/+/status` to one member of the group. A `#` watch beside it would give
//! every member every message (Mosquitto raises that copy to the shared subscription's QoS,
//! so it cannot be told apart), so in that mode there is no `#` watch: each member's topic
//! explorer shows the share it received.
//!
//! Leaving a group (`twinzo-bridge retire`, [`Retire`]): a member's durable session stays in
//! the group while the member is away, and Mosquitto goes on queueing its share there. To
//! scale in without loss, the member is started once more in retire mode: it unsubscribes,
//! takes in and acknowledges what the broker still holds for its session until, on one
//! connection, nothing has come or gone for [`Retire::QUIET`]; the app then delivers its
//! outbox, stops, checks that no publish came after that, and [`forget_session`] removes the
//! session from the broker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, PubAck, Publish, QoS, Transport,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::MqttConfig;
use crate::state::State;
use crate::twinzo::client::now_ms;
use crate::{error_chain, Backoff};

/// A validated broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// The whole URL, which rumqttc wants as the "host" for WebSockets.
    pub full: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Ws,
    Wss,
    Mqtt,
    Mqtts,
}

impl BrokerUrl {
    pub fn parse(s: &str) -> Result<BrokerUrl, String> {
        let url = url::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
        let (scheme, default_port) = match url.scheme() {
            "ws" => (Scheme::Ws, 80),
            "wss" => (Scheme::Wss, 443),
            "mqtt" | "tcp" => (Scheme::Mqtt, 1883),
            "mqtts" | "ssl" => (Scheme::Mqtts, 8883),
            other => {
                return Err(format!(
                    "unsupported scheme {other:?}: use ws, wss, mqtt or mqtts"
                ))
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("the URL has no host")?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "put credentials in mqtt.username and mqtt.password, not in the URL".into(),
            );
        }
        if matches!(scheme, Scheme::Mqtt | Scheme::Mqtts) && !matches!(url.path(), "" | "/") {
            return Err("mqtt:// and mqtts:// URLs have no path".into());
        }
        Ok(BrokerUrl {
            scheme,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: url.port().unwrap_or(default_port),
            full: s.to_string(),
        })
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.scheme, Scheme::Wss | Scheme::Mqtts)
    }

    /// The transport matching the scheme, so a `ws://` URL never runs under TLS settings or a
    /// `wss://` URL in clear text.
    pub fn transport(&self, ca: Option<&[u8]>) -> Transport {
        let tls = || match ca.map(<[u8]>::to_vec) {
            Some(ca) => rumqttc::TlsConfiguration::Simple {
                ca,
                alpn: None,
                client_auth: None,
            },
            None => rumqttc::TlsConfiguration::default(),
        };
        match self.scheme {
            Scheme::Ws => Transport::Ws,
            Scheme::Wss => Transport::Wss(tls()),
            Scheme::Mqtt => Transport::Tcp,
            Scheme::Mqtts => Transport::Tls(tls()),
        }
    }

    /// The URL with any path, for logs (it never holds credentials: parse refuses them).
    pub fn display(&self) -> &str {
        &self.full
    }
}

/// The topic the bridge publishes its own status to (retained, `offline` as last will).
pub fn status_topic(client_id: &str) -> String {
    format!("bridge/{client_id}/status")
}

/// Selects rustls' crypto provider once per process: two are linked (ring for reqwest,
/// aws-lc-rs through rumqttc's defaults) and rustls refuses to guess.
pub fn init_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Builds client options: durable session, manual acks, our packet limit, last will.
pub fn options(cfg: &MqttConfig, client_id: &str) -> Result<MqttOptions, String> {
    init_crypto();
    let url = BrokerUrl::parse(&cfg.url)?;
    let host = match url.scheme {
        Scheme::Ws | Scheme::Wss => url.full.clone(),
        Scheme::Mqtt | Scheme::Mqtts => url.host.clone(),
    };
    let ca = match &cfg.ca_file {
        Some(path) => {
            Some(std::fs::read(path).map_err(|e| format!("cannot read mqtt.ca_file: {e}"))?)
        }
        None => None,
    };
    let mut options = MqttOptions::new(client_id, host, url.port);
    options
        .set_transport(url.transport(ca.as_deref()))
        .set_credentials(cfg.username.clone(), cfg.password.expose().to_string())
        .set_keep_alive(Duration::from_secs(cfg.keep_alive_secs.max(5)))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(cfg.max_packet_bytes, cfg.max_packet_bytes)
        .set_request_channel_capacity(1024)
        .set_inflight(100)
        .set_last_will(LastWill::new(
            status_topic(client_id),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
    Ok(options)
}

/// The filters the bridge subscribes to, with their QoS.
pub fn subscriptions(cfg: &MqttConfig, forward_filters: &[String]) -> Vec<(String, QoS)> {
    let mut subs: Vec<(String, QoS)> = forward_filters
        .iter()
        .map(|f| {
            let filter = if cfg.shared_group.is_empty() {
                f.clone()
            } else {
                format!("$share/{}/{f}", cfg.shared_group)
            };
            (filter, QoS::AtLeastOnce)
        })
        .collect();
    if cfg.watch_all && cfg.shared_group.is_empty() {
        subs.push(("#".into(), QoS::AtMostOnce));
    }
    subs
}

/// Retire mode: the MQTT loop unsubscribes instead of subscribing and notes here what it
/// sees; the app reads it to decide when the session is empty.
#[derive(Debug)]
pub struct Retire {
    started: std::time::Instant,
    /// The broker confirmed the unsubscription on the current connection.
    left: AtomicBool,
    /// QoS 1 publishes received, on every connection.
    arrived: AtomicU64,
    /// QoS 1 publishes of the current connection not yet acknowledged.
    unacked: AtomicU64,
    /// When something last came or our acknowledgements last went, ms after `started`.
    last_ms: AtomicU64,
}

impl Default for Retire {
    fn default() -> Self {
        Retire {
            started: std::time::Instant::now(),
            left: AtomicBool::new(false),
            arrived: AtomicU64::new(0),
            unacked: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Retire {
    /// How long the session must stay silent, after the unsubscription and our last
    /// acknowledgement, to count as empty. Mosquitto sends what it queued for a session as
    /// fast as our acknowledgements free its in-flight window.
    pub const QUIET: Duration = Duration::from_secs(3);

    /// QoS 1 publishes received so far.
    pub fn arrived(&self) -> u64 {
        self.arrived.load(Ordering::SeqCst)
    }

    /// True when the unsubscription is confirmed on the current connection, everything
    /// received on it is acknowledged, and nothing has come or gone for [`Retire::QUIET`].
    pub fn quiet(&self) -> bool {
        // Saturating: `heard` may store a later time between the two readings.
        let silent = self
            .elapsed_ms()
            .saturating_sub(self.last_ms.load(Ordering::SeqCst));
        self.left.load(Ordering::SeqCst)
            && self.unacked.load(Ordering::SeqCst) == 0
            && silent >= Self::QUIET.as_millis() as u64
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn heard(&self) {
        self.last_ms.store(self.elapsed_ms(), Ordering::SeqCst);
    }

    fn connected(&self) {
        self.left.store(false, Ordering::SeqCst);
        // The broker sends again what it had sent unacknowledged.
        self.unacked.store(0, Ordering::SeqCst);
    }

    fn received(&self, qos: QoS) {
        if qos != QoS::AtMostOnce {
            self.arrived.fetch_add(1, Ordering::SeqCst);
            self.unacked.fetch_add(1, Ordering::SeqCst);
        }
        self.heard();
    }

    fn acknowledged(&self, n: u64) {
        let _ = self
            .unacked
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                Some(u.saturating_sub(n))
            });
        self.heard();
    }
}

/// Polls the connection until `stop` fires, feeding QoS 1 publishes to `ingest`.
pub struct Poller {
    pub client: AsyncClient,
    pub eventloop: EventLoop,
    pub subscriptions: Vec<(String, QoS)>,
    /// The forwarded filters (without any `$share/` prefix).
    pub forward_filters: Vec<String>,
    pub client_id: String,
    pub state: Arc<State>,
    pub backoff: Backoff,
    pub retire: Option<Arc<Retire>>,
}

impl Poller {
    /// Runs until `stop` fires: passes deliveries to the ingest and writes the
    /// acknowledgements it sends back once they are committed.
    pub async fn run(
        mut self,
        ingest: mpsc::Sender<Publish>,
        mut acks: mpsc::UnboundedReceiver<Vec<u16>>,
        stop: CancellationToken,
    ) {
        let mut delays = self.backoff.delays();
        let mut ingest = Some(ingest);
        loop {
            let event = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                // Polling is cancelled here while it waits for the network; rumqttc keeps
                // what it read meanwhile, and the next poll goes on from it.
                Some(pkids) = acks.recv() => {
                    self.write_acks(pkids, &mut acks).await;
                    continue;
                }
                event = self.eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    delays = self.backoff.delays();
                    tracing::info!(session_present = ack.session_present, "broker connected");
                    let status = status_topic(&self.client_id);
                    // try_ calls only: this task must never wait on the client.
                    let _ = self
                        .client
                        .try_publish(status, QoS::AtLeastOnce, true, "online");
                    let restore = !ack.session_present;
                    if let Some(retire) = &self.retire {
                        if restore {
                            tracing::warn!("no session on the broker for this client id");
                        }
                        retire.connected();
                        self.leave();
                    } else if restore {
                        if let Err(e) = self.client.try_subscribe_many(
                            self.subscriptions
                                .iter()
                                .map(|(f, q)| rumqttc::SubscribeFilter::new(f.clone(), *q)),
                        ) {
                            tracing::warn!(error = %e, "subscribe request not queued");
                        }
                    }
                    self.state.set_broker(|b| {
                        b.connected = true;
                        b.subscribed = !restore;
                        b.since_ms = now_ms();
                        b.last_error = None;
                    });
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let refused = ack
                        .return_codes
                        .iter()
                        .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                        .count();
                    if refused > 0 {
                        tracing::error!(
                            refused,
                            "broker refused subscriptions; check the bridge ACL"
                        );
                    } else {
                        tracing::info!(filters = self.subscriptions.len(), "subscribed");
                    }
                    self.state.set_broker(|b| b.subscribed = true);
                }
                Ok(Event::Incoming(Packet::UnsubAck(_))) => {
                    if let Some(retire) = &self.retire {
                        if !retire.left.swap(true, Ordering::SeqCst) {
                            tracing::info!(
                                "left the shared group; taking in what the broker still holds"
                            );
                        }
                        retire.heard();
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if let Some(retire) = &self.retire {
                        retire.received(publish.qos);
                    }
                    self.state
                        .observe_topic(&publish.topic, &publish.payload, now_ms());
                    let forwarded = self
                        .forward_filters
                        .iter()
                        .any(|f| crate::route::matches(f, &publish.topic));
                    // QoS 1 deliveries go to the ingest even when not forwarded (a filter left in
                    // our durable session by an older config): acks must follow receive order.
                    if !forwarded && publish.qos == QoS::AtMostOnce {
                        metrics::counter!("bridge_messages_received_total", "route" => "watch", "outcome" => "watched")
                            .increment(1);
                        continue;
                    }
                    let Some(tx) = &ingest else { continue };
                    // Waiting here is waiting on our own ingest, never on the client.
                    if tx.send(publish).await.is_err() {
                        ingest = None;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if let Some(retire) = &self.retire {
                        // Not empty until the next connection confirms the unsubscription.
                        retire.left.store(false, Ordering::SeqCst);
                    }
                    let chain = error_chain(&e);
                    let delay = delays.next().unwrap_or(Duration::from_secs(30));
                    metrics::counter!("bridge_mqtt_reconnects_total").increment(1);
                    self.state.set_broker(|b| {
                        b.connected = false;
                        b.subscribed = false;
                        b.reconnects += 1;
                        b.last_error = Some(chain.clone());
                    });
                    tracing::warn!(error = %chain, retry_in_ms = delay.as_millis() as u64, "broker connection lost");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        drop(ingest);
        // What the ingest committed before it stopped is acknowledged before DISCONNECT.
        if let Ok(pkids) = acks.try_recv() {
            self.write_acks(pkids, &mut acks).await;
        }
        self.disconnect().await;
    }

    /// Retire mode: asks the broker to drop every subscription of the session (after a
    /// reconnection too, in case the first request was lost with the connection).
    fn leave(&self) {
        for (filter, _) in &self.subscriptions {
            if let Err(e) = self.client.try_unsubscribe(filter.clone()) {
                tracing::warn!(error = %e, "unsubscribe request not queued");
            }
        }
    }

    /// Writes acknowledgements, with any others already queued, and flushes once: one
    /// WebSocket frame for a committed group instead of one per message. Without a connection
    /// they are dropped; the broker redelivers those messages and the outbox drops them as
    /// duplicates.
    async fn write_acks(
        &mut self,
        mut pkids: Vec<u16>,
        more: &mut mpsc::UnboundedReceiver<Vec<u16>>,
    ) {
        while let Ok(next) = more.try_recv() {
            pkids.extend(next);
        }
        let Some(network) = self.eventloop.network.as_mut() else {
            return;
        };
        let n = pkids.len() as u64;
        let written = async {
            for pkid in pkids {
                network.write(Packet::PubAck(PubAck::new(pkid))).await?;
            }
            network.flush().await
        };
        match tokio::time::timeout(Duration::from_secs(10), written).await {
            Ok(Ok(())) => {
                if let Some(retire) = &self.retire {
                    retire.acknowledged(n);
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "acknowledgements not written"),
            Err(_) => tracing::warn!("acknowledgements not written within 10 s"),
        }
    }

    /// Publishes the offline status and sends a clean DISCONNECT, briefly.
    async fn disconnect(mut self) {
        let status = status_topic(&self.client_id);
        let _ = self
            .client
            .try_publish(status, QoS::AtLeastOnce, true, "offline");
        let _ = self.client.try_disconnect();
        let drain = async {
            loop {
                match self.eventloop.poll().await {
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
        self.state.set_broker(|b| {
            b.connected = false;
            b.subscribed = false;
        });
        tracing::info!("broker disconnected");
    }
}

/// Removes this client id's session from the broker: connects with a clean session, which
/// discards the old one with anything left in it, and disconnects. Used after a retire run
/// has taken in and delivered everything the session held.
pub async fn forget_session(cfg: &MqttConfig) -> Result<(), String> {
    let mut options = options(cfg, &cfg.client_id)?;
    options.set_clean_session(true).set_manual_acks(false);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let session = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_disconnect();
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(error_chain(&e)),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), session)
        .await
        .map_err(|_| "no answer from the broker within 10 s".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_map_to_their_transport() {
        init_crypto();
        let ws = BrokerUrl::parse("ws://127.0.0.1:9001/mqtt").unwrap();
        assert_eq!(
            (ws.scheme, ws.port, ws.host.as_str()),
            (Scheme::Ws, 9001, "127.0.0.1")
        );
        assert!(matches!(ws.transport(None), Transport::Ws));
        let wss = BrokerUrl::parse("wss://broker.up.railway.app/mqtt").unwrap();
        assert_eq!(wss.port, 443);
        assert!(matches!(wss.transport(None), Transport::Wss(_)));
        assert!(matches!(
            BrokerUrl::parse("mqtt://h").unwrap().transport(None),
            Transport::Tcp
        ));
        assert_eq!(BrokerUrl::parse("mqtts://h").unwrap().port, 8883);
        assert!(matches!(
            BrokerUrl::parse("mqtts://h").unwrap().transport(None),
            Transport::Tls(_)
        ));
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        for (url, want) in [
            ("http://h:9001", "unsupported scheme"),
            ("ws://user:pw@h/mqtt", "credentials"),
            ("mqtt://h:1883/x", "no path"),
            ("nonsense", "not a URL"),
        ] {
            let err = BrokerUrl::parse(url).unwrap_err();
            assert!(err.contains(want), "{url}: {err}");
        }
    }

    #[test]
    fn shared_group_prefixes_forwarded_filters_and_drops_the_watch() {
        let cfg = MqttConfig {
            shared_group: "bridges".into(),
            ..MqttConfig::default()
        };
        let subs = subscriptions(&cfg, &["ati/+/status".into()]);
        assert_eq!(
            subs[0],
            ("$share/bridges/ati/+/status".to_string(), QoS::AtLeastOnce)
        );
        assert_eq!(subs.len(), 1, "no # watch beside a shared subscription");
        let plain = subscriptions(&MqttConfig::default(), &["ati/+/status".into()]);
        assert_eq!(plain[1], ("#".to_string(), QoS::AtMostOnce));
    }
}
