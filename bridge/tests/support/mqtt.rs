//! rumqttc clients for tests, over WebSocket (the way robots arrive through Railway's domain)
//! or plain TCP.
//!
//! [`Client`] drives its event loop inline: each helper queues one request with a `try_*` call
//! and polls until the matching acknowledgement, keeping every publication that arrives in the
//! meantime. Nothing polls in the background, so a test reads top to bottom.

use std::collections::VecDeque;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnAck, ConnectionError, Event, EventLoop, Incoming, MqttOptions, Outgoing,
    Publish, QoS, SubscribeReasonCode, Transport,
};
use tokio::time::timeout;

use super::{Broker, Creds};

/// How long any single exchange with the broker may take.
pub const MQTT_TIMEOUT: Duration = Duration::from_secs(10);

/// Packets up to 1 MiB, above the broker's limit, so tests can send oversized ones.
const MAX_PACKET: usize = 1 << 20;

/// Which listener a client connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Tcp,
    Ws,
}

/// Options for a client of `broker` with a fixed id; `creds` of `None` connects anonymously.
pub fn options(broker: &Broker, via: Via, client_id: &str, creds: Option<&Creds>) -> MqttOptions {
    let mut opts = match via {
        Via::Tcp => MqttOptions::new(client_id, "127.0.0.1", broker.mqtt_port),
        Via::Ws => {
            // For WebSocket rumqttc takes the whole URL as the host and ignores the port.
            let mut opts = MqttOptions::new(client_id, broker.ws_url(), broker.ws_port);
            opts.set_transport(Transport::Ws);
            opts
        }
    };
    if let Some(creds) = creds {
        opts.set_credentials(creds.username.clone(), creds.password.clone());
    }
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    opts
}

/// A connected client and its event loop.
pub struct Client {
    pub client: AsyncClient,
    pub events: EventLoop,
    pub connack: ConnAck,
    /// Publications received while waiting for something else, oldest first.
    pub received: VecDeque<Publish>,
}

impl Client {
    /// Connects and returns once the broker accepted the connection, or with the error that
    /// ended the attempt (a refusal is `ConnectionError::ConnectionRefused`).
    pub async fn connect(opts: MqttOptions) -> Result<Client, ConnectionError> {
        let (client, mut events) = AsyncClient::new(opts, 16);
        let event = timeout(MQTT_TIMEOUT, events.poll())
            .await
            .expect("timed out waiting for CONNACK")?;
        let Event::Incoming(Incoming::ConnAck(connack)) = event else {
            panic!("expected CONNACK first, got {event:?}");
        };
        Ok(Client {
            client,
            events,
            connack,
            received: VecDeque::new(),
        })
    }

    /// Subscribes and returns the broker's verdict from the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubscribeReasonCode {
        self.client
            .try_subscribe(filter, qos)
            .expect("queue SUBSCRIBE");
        let what = format!("SUBACK for {filter}");
        let ack = self
            .poll_until(&what, |event| match event {
                Event::Incoming(Incoming::SubAck(ack)) => Some(ack.clone()),
                _ => None,
            })
            .await;
        ack.return_codes[0]
    }

    /// Publishes and waits until it left (QoS 0) or the broker acknowledged it (QoS 1).
    pub async fn publish(&mut self, topic: &str, qos: QoS, payload: &[u8]) {
        self.client
            .try_publish(topic, qos, false, payload.to_vec())
            .expect("queue PUBLISH");
        let what = format!("acknowledgement of a publish to {topic}");
        self.poll_until(&what, |event| match (qos, event) {
            (QoS::AtMostOnce, Event::Outgoing(Outgoing::Publish(_)))
            | (_, Event::Incoming(Incoming::PubAck(_) | Incoming::PubComp(_))) => Some(()),
            _ => None,
        })
        .await;
    }

    /// The next publication, failing the test after `wait`.
    pub async fn next_publish(&mut self, wait: Duration) -> Publish {
        if let Some(publish) = self.received.pop_front() {
            return publish;
        }
        let result = timeout(wait, async {
            loop {
                match self.events.poll().await {
                    Ok(Event::Incoming(Incoming::Publish(publish))) => return publish,
                    Ok(_) => {}
                    Err(e) => panic!("connection failed while waiting for a publication: {e}"),
                }
            }
        })
        .await;
        result.unwrap_or_else(|_| panic!("no publication arrived within {wait:?}"))
    }

    /// One round trip to the broker. The broker writes to a client in order, so once this
    /// returns every publication it routed to this client before has been received (and is
    /// in `received`).
    pub async fn sync(&mut self) {
        // Any valid filter does: a SUBACK comes back even when the ACL would deny reading.
        self.subscribe("twinzo-test/sync", QoS::AtMostOnce).await;
    }

    /// Sends DISCONNECT, so that the broker keeps a durable session without a last will.
    pub async fn disconnect(mut self) {
        self.client.try_disconnect().expect("queue DISCONNECT");
        self.poll_until("DISCONNECT to be sent", |event| match event {
            Event::Outgoing(Outgoing::Disconnect) => Some(()),
            _ => None,
        })
        .await;
    }

    /// Polls until `pick` returns something, keeping publications aside.
    async fn poll_until<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        let result = timeout(MQTT_TIMEOUT, async {
            loop {
                let event = match self.events.poll().await {
                    Ok(event) => event,
                    Err(e) => panic!("connection failed while waiting for {what}: {e}"),
                };
                if let Some(found) = pick(&event) {
                    return found;
                }
                if let Event::Incoming(Incoming::Publish(publish)) = event {
                    self.received.push_back(publish);
                }
            }
        })
        .await;
        result.unwrap_or_else(|_| panic!("timed out after {MQTT_TIMEOUT:?} waiting for {what}"))
    }
}

/// Connects expecting a refusal and returns the error; fails the test if the broker accepted.
pub async fn connect_refused(opts: MqttOptions) -> ConnectionError {
    match Client::connect(opts).await {
        Ok(client) => panic!("broker accepted the connection: {:?}", client.connack),
        Err(e) => e,
    }
}
