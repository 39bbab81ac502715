//! The stored form of a [`Pending`] record: a fixed binary head, then the payload as it came.
//!
//! Version 1: a version byte; login, device and topic, each as a length (4 bytes) and UTF-8
//! bytes; the location (timestamp i64, sector i32, x, y, z f32, interval as a presence byte and
//! an i32, battery as a presence byte and a u8, moving as a byte); the enqueue time (i64); the
//! rest is the payload. Numbers are little endian. The first layout's records (a JSON head
//! after its length) are read by [`Pending::decode_first_layout`] when they are migrated.

use super::layout::text;
use super::{OutboxError, Pending};
use crate::twinzo::Location;

const VERSION: u8 = 1;

fn corrupt(why: &str) -> OutboxError {
    OutboxError::Corrupt(serde::de::Error::custom(format!("outbox record: {why}")))
}

/// The parts of a record, borrowed: [`Stored::encode`] writes them without building a
/// [`Pending`] first.
pub(crate) struct Stored<'a> {
    pub login: &'a str,
    pub device: &'a str,
    pub topic: &'a str,
    pub location: &'a Location,
    pub enqueued_at_ms: i64,
    pub payload: &'a [u8],
}

impl Stored<'_> {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let strings = self.login.len() + self.device.len() + self.topic.len();
        let mut out = Vec::with_capacity(64 + strings + self.payload.len());
        out.push(VERSION);
        for s in [self.login, self.device, self.topic] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        let l = self.location;
        out.extend_from_slice(&l.timestamp.to_le_bytes());
        out.extend_from_slice(&l.sector_id.to_le_bytes());
        for v in [l.x, l.y, l.z] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.push(u8::from(l.interval.is_some()));
        out.extend_from_slice(&l.interval.unwrap_or(0).to_le_bytes());
        out.push(u8::from(l.battery.is_some()));
        out.push(l.battery.unwrap_or(0));
        out.push(u8::from(l.is_moving));
        out.extend_from_slice(&self.enqueued_at_ms.to_le_bytes());
        out.extend_from_slice(self.payload);
        out
    }
}

impl Pending {
    pub(super) fn encode(&self) -> Vec<u8> {
        Stored {
            login: &self.login,
            device: &self.device,
            topic: &self.topic,
            location: &self.location,
            enqueued_at_ms: self.enqueued_at_ms,
            payload: self.payload.as_bytes(),
        }
        .encode()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Pending, OutboxError> {
        let mut r = Reader::versioned(bytes)?;
        let login = r.string()?;
        let device = r.string()?;
        let topic = r.string()?;
        let location = r.location()?;
        let enqueued_at_ms = i64::from_le_bytes(r.take()?);
        Ok(Pending {
            login,
            device,
            location,
            topic,
            payload: text(r.0),
            enqueued_at_ms,
        })
    }

    /// The login and enqueue time of a stored record: what the index rebuilt at open needs.
    pub(super) fn decode_head(bytes: &[u8]) -> Result<(String, i64), OutboxError> {
        let mut r = Reader::versioned(bytes)?;
        let login = r.string()?;
        r.skip_string()?;
        r.skip_string()?;
        r.location()?;
        Ok((login, i64::from_le_bytes(r.take()?)))
    }

    /// Only the location of a stored record, which is all a request to Twinzo needs: the
    /// names and the payload are skipped, not copied.
    pub(super) fn decode_location(bytes: &[u8]) -> Result<Location, OutboxError> {
        let mut r = Reader::versioned(bytes)?;
        for _ in 0..3 {
            r.skip_string()?;
        }
        r.location()
    }

    /// A record of the first layout: the length of a JSON head (4 bytes), the head, the
    /// payload.
    pub(super) fn decode_first_layout(bytes: &[u8]) -> Result<Pending, OutboxError> {
        let mut r = Reader(bytes);
        let len = u32::from_le_bytes(r.take()?) as usize;
        let head = r.0.get(..len).ok_or_else(|| corrupt("truncated"))?;
        let mut pending: Pending = serde_json::from_slice(head)?;
        pending.payload = text(&r.0[len..]);
        Ok(pending)
    }
}

/// Reads fields off the front of a record.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// A reader past the version byte, which must be this codec's.
    fn versioned(bytes: &'a [u8]) -> Result<Reader<'a>, OutboxError> {
        let mut r = Reader(bytes);
        if r.take::<1>()?[0] != VERSION {
            return Err(corrupt("unknown version"));
        }
        Ok(r)
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], OutboxError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or_else(|| corrupt("truncated"))?;
        self.0 = rest;
        Ok(*head)
    }

    /// A length-prefixed byte string.
    fn bytes(&mut self) -> Result<&'a [u8], OutboxError> {
        let len = u32::from_le_bytes(self.take()?) as usize;
        let (s, rest) = self
            .0
            .split_at_checked(len)
            .ok_or_else(|| corrupt("truncated"))?;
        self.0 = rest;
        Ok(s)
    }

    fn string(&mut self) -> Result<String, OutboxError> {
        let s = self.bytes()?;
        String::from_utf8(s.to_vec()).map_err(|_| corrupt("a name is not UTF-8"))
    }

    fn skip_string(&mut self) -> Result<(), OutboxError> {
        self.bytes().map(drop)
    }

    fn location(&mut self) -> Result<Location, OutboxError> {
        let timestamp = i64::from_le_bytes(self.take()?);
        let sector_id = i32::from_le_bytes(self.take()?);
        let x = f32::from_le_bytes(self.take()?);
        let y = f32::from_le_bytes(self.take()?);
        let z = f32::from_le_bytes(self.take()?);
        let has_interval = self.take::<1>()?[0] != 0;
        let interval = i32::from_le_bytes(self.take()?);
        let [has_battery, battery] = self.take::<2>()?;
        let is_moving = self.take::<1>()?[0] != 0;
        Ok(Location {
            timestamp,
            sector_id,
            x,
            y,
            z,
            interval: has_interval.then_some(interval),
            battery: (has_battery != 0).then_some(battery),
            is_moving,
        })
    }
}
