//! The outbox: a crash-safe store (redb) between MQTT and Twinzo.
//!
//! # Delivery guarantee
//! A forwarded MQTT message is acknowledged to the broker only after its record (or its dead
//! letter) is committed here with `Durability::Immediate`, i.e. fsynced; commits are grouped,
//! so one fsync covers every message that arrived meanwhile. A record leaves the outbox only
//! when Twinzo accepted it or it was moved, in the same transaction, to the dead-letter table.
//! Together with the broker's durable session this makes delivery **at-least-once** from the
//! broker to Twinzo, across crashes of the bridge, the broker (with its persistence) or Twinzo.
//!
//! # Duplicates
//! A message committed but not yet acknowledged when the bridge dies is redelivered by the
//! broker. Each record has a key (the payload's message id, else login and measured-at time)
//! and a key seen within `dedup_window_secs` of the newest key is dropped at commit. The window
//! is measured from the newest commit, not the wall clock, so a bridge that was down for hours
//! still recognises the redeliveries that greet it. Duplicates can still reach Twinzo when the
//! bridge dies after Twinzo accepted a batch and before the deletion committed (the batch is
//! sent again; Twinzo answers `Update` for a timestamp it has), and in `ati.timestamp =
//! "received"` mode for messages without a message id, whose redelivery gets a new time.
//!
//! # Bounds
//! Above `max_records` the ingest stops acknowledging: the broker keeps the rest in our durable
//! session (`max_queued_messages`). With `max_age_secs` set, older records move to dead letters
//! with reason `expired`. Depth, bytes and the oldest age are in [`OutboxStats`].

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::twinzo::Location;

const PENDING: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("pending");
const SEEN: TableDefinition<&str, u64> = TableDefinition::new("seen");
const SEEN_ORDER: TableDefinition<(u64, &str), ()> = TableDefinition::new("seen_order");
const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot open the outbox at {path}")]
    Open {
        path: String,
        source: redb::DatabaseError,
    },
    #[error("cannot create the outbox directory {path}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("outbox storage error")]
    Storage(#[source] Box<redb::Error>),
    #[error("outbox record is corrupt")]
    Corrupt(#[from] serde_json::Error),
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for OutboxError {
            fn from(e: $t) -> Self {
                OutboxError::Storage(Box::new(e.into()))
            }
        }
    )*};
}
storage_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// A record waiting for Twinzo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub login: String,
    pub device: String,
    pub location: Location,
    pub topic: String,
    /// The original payload, kept so a rejected record can be replayed after a config fix.
    /// Stored beside the JSON, not in it, so it is never escaped and unescaped.
    #[serde(skip)]
    pub payload: String,
    pub enqueued_at_ms: i64,
}

impl Pending {
    /// The stored form: the length of the JSON head (4 bytes, little endian), the head, then
    /// the payload as it came.
    fn encode(&self) -> Result<Vec<u8>, OutboxError> {
        let head = serde_json::to_vec(self)?;
        let mut out = Vec::with_capacity(4 + head.len() + self.payload.len());
        out.extend_from_slice(&(head.len() as u32).to_le_bytes());
        out.extend_from_slice(&head);
        out.extend_from_slice(self.payload.as_bytes());
        Ok(out)
    }

    fn decode(bytes: &[u8]) -> Result<Pending, OutboxError> {
        let corrupt = || OutboxError::Corrupt(serde::de::Error::custom("truncated outbox record"));
        let len_bytes: [u8; 4] = bytes
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(corrupt)?;
        let len = u32::from_le_bytes(len_bytes) as usize;
        let head = bytes.get(4..4 + len).ok_or_else(corrupt)?;
        let mut pending: Pending = serde_json::from_slice(head)?;
        pending.payload = String::from_utf8_lossy(&bytes[4 + len..]).into_owned();
        Ok(pending)
    }
}

/// A message or record set aside, with why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    #[serde(default)]
    pub id: u64,
    pub at_ms: i64,
    pub topic: String,
    /// A stable code: `not_json`, `not_finite`, `unknown_device`, `twinzo_rejected`, `expired`...
    pub reason: String,
    pub detail: String,
    /// The payload, cut to the configured cap (lossy when it was not UTF-8).
    pub payload: String,
    pub payload_bytes: usize,
}

impl DeadLetter {
    pub fn new(
        topic: &str,
        payload: &[u8],
        reason: &str,
        detail: String,
        cap: usize,
        at_ms: i64,
    ) -> Self {
        let shown = &payload[..payload.len().min(cap)];
        DeadLetter {
            id: 0,
            at_ms,
            topic: topic.to_string(),
            reason: reason.to_string(),
            detail,
            payload: String::from_utf8_lossy(shown).into_owned(),
            payload_bytes: payload.len(),
        }
    }
}

/// One thing to commit.
#[derive(Debug, Clone)]
pub enum Entry {
    Record { pending: Box<Pending>, key: String },
    Dead(DeadLetter),
}

/// What a commit did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub stored: usize,
    pub duplicates: usize,
    pub dead: usize,
}

/// Monitoring figures.
#[derive(Debug, Default, Clone, Serialize)]
pub struct OutboxStats {
    pub records: u64,
    pub bytes: u64,
    pub oldest_enqueued_ms: Option<i64>,
    pub dead_letters: u64,
    pub logins: usize,
}

#[derive(Default)]
struct Index {
    /// Per login, its records' (seq, enqueued ms, bytes) in order.
    logins: BTreeMap<String, VecDeque<(u64, i64, u32)>>,
    records: u64,
    bytes: u64,
    dead: u64,
    next_seq: u64,
    newest_seen_ms: u64,
}

/// The store. Methods block on disk I/O: call them from `spawn_blocking`.
pub struct Outbox {
    db: Database,
    index: Mutex<Index>,
    dedup_window_ms: u64,
}

impl Outbox {
    /// Opens (or creates) the store and rebuilds the in-memory index from it.
    pub fn open(path: &Path, dedup_window_secs: u64) -> Result<Outbox, OutboxError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OutboxError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        // redb's page cache defaults to 1 GiB; the outbox is read mostly at its head.
        let db = redb::Builder::new()
            .set_cache_size(8 * 1024 * 1024)
            .create(path)
            .map_err(|source| OutboxError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let tx = db.begin_write()?;
        let mut index = Index::default();
        {
            let pending = tx.open_table(PENDING)?;
            for row in pending.iter()? {
                let (key, value) = row?;
                let (login, seq) = key.value();
                let record = Pending::decode(value.value())?;
                let size = value.value().len() as u32;
                index
                    .logins
                    .entry(login.to_string())
                    .or_default()
                    .push_back((seq, record.enqueued_at_ms, size));
                index.records += 1;
                index.bytes += u64::from(size);
                index.next_seq = index.next_seq.max(seq + 1);
            }
            let dead = tx.open_table(DEAD)?;
            index.dead = dead.len()?;
            if let Some(row) = dead.last()? {
                index.next_seq = index.next_seq.max(row.0.value() + 1);
            }
            let meta = tx.open_table(META)?;
            index.next_seq = index
                .next_seq
                .max(meta.get("next_seq")?.map_or(0, |v| v.value()));
            let order = tx.open_table(SEEN_ORDER)?;
            index.newest_seen_ms = order.last()?.map_or(0, |row| row.0.value().0);
            tx.open_table(SEEN)?;
        }
        tx.commit()?;
        Ok(Outbox {
            db,
            index: Mutex::new(index),
            dedup_window_ms: dedup_window_secs * 1000,
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Commits records and dead letters in one durable transaction, dropping duplicates.
    pub fn commit(&self, entries: Vec<Entry>, now_ms: i64) -> Result<Committed, OutboxError> {
        let mut done = Committed::default();
        if entries.is_empty() {
            return Ok(done);
        }
        let now = now_ms.max(0) as u64;
        // Sequence numbers are taken up front so the index is not locked during the fsync
        // (the sender and the HTTP server read it meanwhile); a duplicate leaves a gap.
        let (mut seq, newest_seen) = {
            let mut index = self.index();
            let base = index.next_seq;
            index.next_seq += entries.len() as u64;
            (base, index.newest_seen_ms)
        };
        let mut added: Vec<(String, u64, i64, u32)> = Vec::new();
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate);
        {
            let mut pending = tx.open_table(PENDING)?;
            let mut seen = tx.open_table(SEEN)?;
            let mut order = tx.open_table(SEEN_ORDER)?;
            let mut dead = tx.open_table(DEAD)?;
            for entry in entries {
                match entry {
                    Entry::Record {
                        pending: record,
                        key,
                    } => {
                        if seen.get(key.as_str())?.is_some() {
                            done.duplicates += 1;
                            continue;
                        }
                        seen.insert(key.as_str(), now)?;
                        order.insert((now, key.as_str()), ())?;
                        let bytes = record.encode()?;
                        pending.insert((record.login.as_str(), seq), bytes.as_slice())?;
                        added.push((
                            record.login.clone(),
                            seq,
                            record.enqueued_at_ms,
                            bytes.len() as u32,
                        ));
                        seq += 1;
                        done.stored += 1;
                    }
                    Entry::Dead(mut letter) => {
                        letter.id = seq;
                        dead.insert(seq, serde_json::to_vec(&letter)?.as_slice())?;
                        seq += 1;
                        done.dead += 1;
                    }
                }
            }
            raise_next_seq(&tx, seq)?;
            self.prune_seen(&mut seen, &mut order, now.max(newest_seen))?;
        }
        tx.commit()?;

        let mut index = self.index();
        index.newest_seen_ms = index.newest_seen_ms.max(now);
        index.dead += done.dead as u64;
        for (login, seq, at, size) in added {
            index
                .logins
                .entry(login)
                .or_default()
                .push_back((seq, at, size));
            index.records += 1;
            index.bytes += u64::from(size);
        }
        Ok(done)
    }

    /// Drops dedup keys older than the window, counted back from the newest key.
    fn prune_seen(
        &self,
        seen: &mut redb::Table<&str, u64>,
        order: &mut redb::Table<(u64, &str), ()>,
        newest: u64,
    ) -> Result<(), OutboxError> {
        let cutoff = newest.saturating_sub(self.dedup_window_ms);
        // Bounded per commit so one commit never pays for a long backlog of expiries.
        for _ in 0..1024 {
            let Some((key, _)) = order.first()? else {
                break;
            };
            let (at, name) = key.value();
            if at >= cutoff {
                break;
            }
            let name = name.to_string();
            drop(key);
            order.remove((at, name.as_str()))?;
            seen.remove(name.as_str())?;
        }
        Ok(())
    }

    /// Up to `max` of the login's oldest records, in order.
    pub fn peek(&self, login: &str, max: usize) -> Result<Vec<(u64, Pending)>, OutboxError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(PENDING)?;
        let mut out = Vec::with_capacity(max);
        for row in table.range((login, 0)..=(login, u64::MAX))?.take(max) {
            let (key, value) = row?;
            out.push((key.value().1, Pending::decode(value.value())?));
        }
        Ok(out)
    }

    /// Removes a login's delivered records and moves its rejected ones to dead letters.
    pub fn finish(
        &self,
        login: &str,
        delivered: &[u64],
        rejected: &[(u64, DeadLetter)],
    ) -> Result<(), OutboxError> {
        let (mut seq, empties) = {
            let mut index = self.index();
            let base = index.next_seq;
            index.next_seq += rejected.len() as u64;
            let leaving = (delivered.len() + rejected.len()) as u64;
            (base, index.records <= leaving)
        };
        let mut tx = self.db.begin_write()?;
        // Removing a delivered record need not be fsynced: lost in a crash, it is only sent
        // again (a duplicate Twinzo answers with `Update`), never lost. The next ingest commit,
        // which is fsynced, makes it durable; so does this one when it empties the outbox.
        tx.set_durability(if empties {
            Durability::Immediate
        } else {
            Durability::None
        });
        {
            let mut pending = tx.open_table(PENDING)?;
            let mut dead = tx.open_table(DEAD)?;
            for &s in delivered {
                pending.remove((login, s))?;
            }
            for (s, mut letter) in rejected.iter().cloned() {
                pending.remove((login, s))?;
                letter.id = seq;
                dead.insert(seq, serde_json::to_vec(&letter)?.as_slice())?;
                seq += 1;
            }
            raise_next_seq(&tx, seq)?;
        }
        tx.commit()?;

        let mut index = self.index();
        index.dead += rejected.len() as u64;
        let gone: std::collections::HashSet<u64> = delivered
            .iter()
            .copied()
            .chain(rejected.iter().map(|(s, _)| *s))
            .collect();
        let mut freed = 0u64;
        let mut removed = 0u64;
        if let Some(queue) = index.logins.get_mut(login) {
            queue.retain(|(s, _, size)| {
                let keep = !gone.contains(s);
                if !keep {
                    freed += u64::from(*size);
                    removed += 1;
                }
                keep
            });
            if queue.is_empty() {
                index.logins.remove(login);
            }
        }
        index.records -= removed;
        index.bytes -= freed;
        Ok(())
    }

    /// Logins whose batch should go now: at least `batch` records, or an oldest record
    /// enqueued at or before `cutoff_ms` (the sender's last flush tick), or any records at all
    /// when `force`. `skip` excludes busy logins.
    pub fn ready(
        &self,
        batch: usize,
        cutoff_ms: i64,
        force: bool,
        skip: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let index = self.index();
        index
            .logins
            .iter()
            .filter(|(login, q)| {
                !skip(login)
                    && (force
                        || q.len() >= batch
                        || q.front().is_some_and(|(_, at, _)| *at <= cutoff_ms))
            })
            .map(|(login, _)| login.clone())
            .collect()
    }

    /// Moves records enqueued before `cutoff_ms` to dead letters with reason `expired`.
    pub fn expire(
        &self,
        cutoff_ms: i64,
        now_ms: i64,
        payload_cap: usize,
    ) -> Result<usize, OutboxError> {
        let due: Vec<(String, Vec<u64>)> = {
            let index = self.index();
            index
                .logins
                .iter()
                .map(|(login, q)| {
                    let old = q
                        .iter()
                        .take_while(|(_, at, _)| *at < cutoff_ms)
                        .map(|(s, _, _)| *s)
                        .collect();
                    (login.clone(), old)
                })
                .filter(|(_, old): &(String, Vec<u64>)| !old.is_empty())
                .collect()
        };
        let mut total = 0;
        for (login, seqs) in due {
            let records = self.peek(&login, seqs.len())?;
            let letters = records
                .into_iter()
                .filter(|(s, _)| seqs.contains(s))
                .map(|(s, p)| {
                    let detail = format!(
                        "not delivered within outbox.max_age_secs (enqueued at {})",
                        p.enqueued_at_ms
                    );
                    (
                        s,
                        DeadLetter::new(
                            &p.topic,
                            p.payload.as_bytes(),
                            "expired",
                            detail,
                            payload_cap,
                            now_ms,
                        ),
                    )
                })
                .collect::<Vec<_>>();
            total += letters.len();
            self.finish(&login, &[], &letters)?;
        }
        Ok(total)
    }

    pub fn stats(&self) -> OutboxStats {
        let index = self.index();
        OutboxStats {
            records: index.records,
            bytes: index.bytes,
            oldest_enqueued_ms: index
                .logins
                .values()
                .filter_map(|q| q.front().map(|(_, at, _)| *at))
                .min(),
            dead_letters: index.dead,
            logins: index.logins.len(),
        }
    }

    /// Dead letters with id above `after`, oldest first.
    pub fn dead_letters(&self, after: u64, limit: usize) -> Result<Vec<DeadLetter>, OutboxError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(DEAD)?;
        let mut out = Vec::new();
        for row in table.range(after.saturating_add(1)..)?.take(limit) {
            out.push(serde_json::from_slice(row?.1.value())?);
        }
        Ok(out)
    }

    pub fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, OutboxError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(DEAD)?;
        Ok(match table.get(id)? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        })
    }

    /// Deletes the given dead letters (all when `ids` is `None`); returns how many.
    pub fn purge_dead(&self, ids: Option<&[u64]>) -> Result<u64, OutboxError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate);
        let removed = {
            let mut table = tx.open_table(DEAD)?;
            match ids {
                None => {
                    let n = table.len()?;
                    table.retain(|_, _| false)?;
                    n
                }
                Some(ids) => {
                    let mut n = 0;
                    for id in ids {
                        n += u64::from(table.remove(*id)?.is_some());
                    }
                    n
                }
            }
        };
        tx.commit()?;
        let mut index = self.index();
        index.dead = index.dead.saturating_sub(removed);
        Ok(removed)
    }
}

/// Stores the next sequence number, never lowering it (commits may finish out of order).
fn raise_next_seq(tx: &redb::WriteTransaction, seq: u64) -> Result<(), OutboxError> {
    let mut meta = tx.open_table(META)?;
    let stored = meta.get("next_seq")?.map_or(0, |v| v.value());
    if seq > stored {
        meta.insert("next_seq", seq)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
