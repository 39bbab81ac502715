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
//! and a key seen within `dedup_window_secs` of the newest key, among the newest
//! `dedup_max_keys`, is dropped at commit. The window is measured from the newest commit, not
//! the wall clock, so a bridge that was down for hours still recognises the redeliveries that
//! greet it. The keys (128-bit hashes) are looked up in memory and logged in `seen_log` in the
//! same transaction as their records, so they survive a restart. Duplicates can still reach
//! Twinzo when the bridge dies after Twinzo accepted a batch and before the deletion committed
//! (the batch is sent again; Twinzo answers `Update` for a timestamp it has), and in
//! `ati.timestamp = "received"` mode for messages without a message id, whose redelivery gets
//! a new time.
//!
//! # Bounds
//! Above `max_records` the ingest stops acknowledging: the broker keeps the rest in our durable
//! session (`max_queued_messages`). With `max_age_secs` set, older records move to dead letters
//! with reason `expired`. Depth, bytes and the oldest age are in [`OutboxStats`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use crate::config::OutboxConfig;
use crate::twinzo::Location;

mod layout;
mod record;

pub(crate) use record::Stored;

use layout::{
    decode_row, decode_seen, encode_row, encode_seen, key_hash, migrate_first_layout,
    raise_next_seq, IntSet, DEAD, META, RECORD_OVERHEAD, ROWS, SEEN_LOG,
};

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
    /// Stored after the binary head as it came (see `outbox/record.rs`).
    #[serde(skip)]
    pub payload: String,
    pub enqueued_at_ms: i64,
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
    /// A record already in its stored form (`outbox/record.rs`), encoded where it was read.
    Record {
        login: String,
        enqueued_at_ms: i64,
        bytes: Vec<u8>,
        key: String,
    },
    Dead(DeadLetter),
}

impl Entry {
    /// A record built whole, encoded.
    #[cfg(test)]
    pub(crate) fn record(pending: &Pending, key: String) -> Entry {
        Entry::Record {
            login: pending.login.clone(),
            enqueued_at_ms: pending.enqueued_at_ms,
            bytes: pending.encode(),
            key,
        }
    }
}

/// What became of one login's records after a request to Twinzo.
#[derive(Debug, Clone, Default)]
pub struct Settled {
    pub login: String,
    /// Accepted: removed.
    pub delivered: Vec<u64>,
    /// Refused: moved to dead letters.
    pub rejected: Vec<(u64, Refusal)>,
}

/// Why a record is set aside. [`Outbox::finish`] makes the dead letter from it and the stored
/// record, in the transaction that removes the record, so the sender never holds payloads.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// A dead letter reason code (`twinzo_rejected`, `expired`, a Twinzo error code...).
    pub reason: String,
    pub detail: String,
}

impl Settled {
    /// The records leaving the outbox, delivered or rejected.
    fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        let rejected = self.rejected.iter().map(|(seq, _)| *seq);
        self.delivered.iter().copied().chain(rejected)
    }
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

/// How long dedup keys are remembered: the keys committed within `window_secs` of the newest,
/// and at most `max_keys` of them (the newest). Kept in memory (about 30 bytes a key) and
/// logged in the store, so they survive a restart.
#[derive(Debug, Clone, Copy)]
pub struct Dedup {
    pub window_secs: u64,
    pub max_keys: usize,
}

impl From<&OutboxConfig> for Dedup {
    fn from(config: &OutboxConfig) -> Self {
        Dedup {
            window_secs: config.dedup_window_secs,
            max_keys: config.dedup_max_keys,
        }
    }
}

#[derive(Default)]
struct Index {
    logins: BTreeMap<String, Queue>,
    records: u64,
    bytes: u64,
    dead: u64,
    next_seq: u64,
}

/// Records per row at most: a row is read whole by every request that takes part of it, and
/// rewritten when partly settled, so a burst from one robot must not make one huge row.
const ROW_MAX: usize = 64;

/// A record ready to store: its enqueue time and its bytes.
type Encoded = (i64, Vec<u8>);

/// One login's records, in order.
#[derive(Default)]
struct Queue {
    /// Each record's (seq, enqueued ms, bytes).
    records: VecDeque<(u64, i64, u32)>,
    /// The rows holding them: row id (its first record's seq) and how many are left in it.
    rows: BTreeMap<u64, u32>,
}

impl Queue {
    fn len(&self) -> usize {
        self.records.len()
    }

    fn front(&self) -> Option<&(u64, i64, u32)> {
        self.records.front()
    }

    fn iter(&self) -> impl Iterator<Item = &(u64, i64, u32)> {
        self.records.iter()
    }

    /// The row a record is in.
    fn row_of(&self, seq: u64) -> Option<u64> {
        self.rows.range(..=seq).next_back().map(|(row, _)| *row)
    }
}

/// The dedup keys of the window, mirrored from `SEEN_LOG`.
#[derive(Default)]
struct Seen {
    keys: IntSet<u128>,
    newest_ms: u64,
    next_row: u64,
}

/// The store. Methods block on disk I/O: call them from `spawn_blocking`.
pub struct Outbox {
    db: Database,
    index: Mutex<Index>,
    /// Held through a whole commit: commits run one at a time.
    seen: Mutex<Seen>,
    dedup: Dedup,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Outbox {
    /// Opens (or creates) the store and rebuilds the in-memory index from it.
    pub fn open(path: &Path, dedup: Dedup) -> Result<Outbox, OutboxError> {
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
        let mut tx = db.begin_write()?;
        tx.set_durability(Durability::Immediate);
        migrate_first_layout(&tx)?;
        let mut index = Index::default();
        let mut seen = Seen::default();
        {
            let rows = tx.open_table(ROWS)?;
            for row in rows.iter()? {
                let (key, value) = row?;
                let mut login = None;
                let mut entries = Vec::new();
                for (seq, bytes) in decode_row(value.value())? {
                    let (record_login, enqueued_at_ms) = Pending::decode_head(bytes)?;
                    let size = bytes.len() as u32 + RECORD_OVERHEAD;
                    entries.push((seq, enqueued_at_ms, size));
                    // A row holds one login's records.
                    login.get_or_insert(record_login);
                }
                let Some(login) = login else {
                    continue;
                };
                for &(seq, _, size) in &entries {
                    index.records += 1;
                    index.bytes += u64::from(size);
                    index.next_seq = index.next_seq.max(seq + 1);
                }
                let queue = index.logins.entry(login).or_default();
                queue.rows.insert(key.value(), entries.len() as u32);
                queue.records.extend(entries);
            }
            let dead = tx.open_table(DEAD)?;
            index.dead = dead.len()?;
            if let Some(row) = dead.last()? {
                index.next_seq = index.next_seq.max(row.0.value() + 1);
            }
            let meta = tx.open_table(META)?;
            // Numbering starts at 1: dead letters are listed "after" an id, from 0.
            index.next_seq = index
                .next_seq
                .max(meta.get("next_seq")?.map_or(1, |v| v.value()))
                .max(1);
            let log = tx.open_table(SEEN_LOG)?;
            if let Some((row, value)) = log.last()? {
                seen.next_row = row.value() + 1;
                seen.newest_ms = decode_seen(value.value()).0;
            }
            let cutoff = seen
                .newest_ms
                .saturating_sub(dedup.window_secs.saturating_mul(1000));
            for row in log.iter()? {
                let (_, value) = row?;
                let (at, hashes) = decode_seen(value.value());
                if at >= cutoff {
                    seen.keys.extend(hashes);
                }
            }
        }
        tx.commit()?;
        Ok(Outbox {
            db,
            index: Mutex::new(index),
            seen: Mutex::new(seen),
            dedup,
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        lock(&self.index)
    }

    /// Commits records and dead letters in one durable transaction, dropping duplicates.
    pub fn commit(&self, entries: Vec<Entry>, now_ms: i64) -> Result<Committed, OutboxError> {
        let mut done = Committed::default();
        if entries.is_empty() {
            return Ok(done);
        }
        let mut seen = lock(&self.seen);
        let now = (now_ms.max(0) as u64).max(seen.newest_ms);
        // Sequence numbers are taken up front so the index is not locked during the fsync
        // (the sender and the HTTP server read it meanwhile); a duplicate leaves a gap.
        let mut seq = {
            let mut index = self.index();
            let base = index.next_seq;
            index.next_seq += entries.len() as u64;
            base
        };
        // The records of this commit by login, in arrival order: a row each.
        let mut groups: Vec<(String, Vec<Encoded>)> = Vec::new();
        let mut group_of: HashMap<String, usize> = HashMap::new();
        // Keys new in this commit; they join `seen` only once it is durable.
        let mut fresh: IntSet<u128> = IntSet::default();
        let mut logged: Vec<u128> = Vec::new();
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate);
        let forgotten = {
            let mut rows = tx.open_table(ROWS)?;
            let mut log = tx.open_table(SEEN_LOG)?;
            let mut dead = tx.open_table(DEAD)?;
            for entry in entries {
                match entry {
                    Entry::Record {
                        login,
                        enqueued_at_ms: at,
                        bytes,
                        key,
                    } => {
                        let hash = key_hash(&key);
                        if seen.keys.contains(&hash) || !fresh.insert(hash) {
                            done.duplicates += 1;
                            continue;
                        }
                        logged.push(hash);
                        let group = *group_of.entry(login).or_insert_with_key(|login| {
                            groups.push((login.clone(), Vec::new()));
                            groups.len() - 1
                        });
                        groups[group].1.push((at, bytes));
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
            for (_, records) in &groups {
                for chunk in records.chunks(ROW_MAX) {
                    let row = encode_row(
                        chunk
                            .iter()
                            .enumerate()
                            .map(|(i, (_, bytes))| (seq + i as u64, bytes.as_slice())),
                    );
                    rows.insert(seq, row.as_slice())?;
                    seq += chunk.len() as u64;
                }
            }
            raise_next_seq(&tx, seq)?;
            if !logged.is_empty() {
                log.insert(seen.next_row, encode_seen(now, &logged).as_slice())?;
            }
            let over = (seen.keys.len() + fresh.len()).saturating_sub(self.dedup.max_keys);
            self.prune_seen(&mut log, now, over, fresh.len())?
        };
        tx.commit()?;

        if !logged.is_empty() {
            seen.next_row += 1;
        }
        seen.newest_ms = now;
        // Forgotten first: a key can be both in an expired row and new again in this one.
        for hash in forgotten {
            seen.keys.remove(&hash);
        }
        seen.keys.extend(fresh);
        drop(seen);
        let mut index = self.index();
        index.dead += done.dead as u64;
        // The rows' sequence numbers follow the dead letters', as assigned above.
        let mut seq = seq - done.stored as u64;
        for (login, records) in groups {
            let queue = index.logins.entry(login).or_default();
            let mut added = 0;
            for chunk in records.chunks(ROW_MAX) {
                queue.rows.insert(seq, chunk.len() as u32);
                for (at, bytes) in chunk {
                    let size = bytes.len() as u32 + RECORD_OVERHEAD;
                    queue.records.push_back((seq, *at, size));
                    added += u64::from(size);
                    seq += 1;
                }
            }
            index.bytes += added;
        }
        index.records += done.stored as u64;
        Ok(done)
    }

    /// Removes the oldest dedup rows from the log: those older than the window (counted back
    /// from the newest key), then more while over the key limit by `over`. Returns their keys,
    /// to be forgotten once the transaction commits. Stops after `added` + 1024 keys, so the
    /// log shrinks faster than it grows and one commit never pays for a long backlog.
    fn prune_seen(
        &self,
        log: &mut redb::Table<u64, &[u8]>,
        newest: u64,
        over: usize,
        added: usize,
    ) -> Result<Vec<u128>, OutboxError> {
        let cutoff = newest.saturating_sub(self.dedup.window_secs.saturating_mul(1000));
        let mut forgotten = Vec::new();
        while forgotten.len() < added + 1024 {
            let row = match log.first()? {
                Some((row, value)) => {
                    let (at, _) = decode_seen(value.value());
                    if at >= cutoff && forgotten.len() >= over {
                        break;
                    }
                    row.value()
                }
                None => break,
            };
            if let Some(value) = log.remove(row)? {
                forgotten.extend(decode_seen(value.value()).1);
            }
        }
        Ok(forgotten)
    }

    /// Up to `max` of the login's oldest records, in order, whole.
    #[cfg(test)]
    fn peek(&self, login: &str, max: usize) -> Result<Vec<(u64, Pending)>, OutboxError> {
        self.read_front(login, max, Pending::decode)
    }

    /// The locations of up to `max` of the login's oldest records, in order: what a request
    /// to Twinzo carries, read without copying names and payloads.
    pub fn peek_locations(
        &self,
        login: &str,
        max: usize,
    ) -> Result<Vec<(u64, Location)>, OutboxError> {
        self.read_front(login, max, Pending::decode_location)
    }

    /// Up to `max` of the login's oldest records, in order, each read by `decode`.
    fn read_front<T>(
        &self,
        login: &str,
        max: usize,
        decode: fn(&[u8]) -> Result<T, OutboxError>,
    ) -> Result<Vec<(u64, T)>, OutboxError> {
        // The wanted records, by row.
        let mut wanted: Vec<(u64, Vec<u64>)> = Vec::new();
        {
            let index = self.index();
            let Some(queue) = index.logins.get(login) else {
                return Ok(Vec::new());
            };
            for &(seq, _, _) in queue.iter().take(max) {
                let row = queue.row_of(seq).unwrap_or(seq);
                match wanted.last_mut() {
                    Some((r, seqs)) if *r == row => seqs.push(seq),
                    _ => wanted.push((row, vec![seq])),
                }
            }
        }
        let tx = self.db.begin_read()?;
        let table = tx.open_table(ROWS)?;
        let mut out = Vec::with_capacity(max);
        for (row, seqs) in wanted {
            let Some(value) = table.get(row)? else {
                continue;
            };
            for (seq, bytes) in decode_row(value.value())? {
                if seqs.contains(&seq) {
                    out.push((seq, decode(bytes)?));
                }
            }
        }
        Ok(out)
    }

    /// Removes delivered records and moves rejected ones to dead letters (their payloads cut
    /// to `payload_cap`, dated `now_ms`), for any number of logins in one transaction.
    /// Returns the number of dead letters written.
    pub fn finish(
        &self,
        settled: &[Settled],
        payload_cap: usize,
        now_ms: i64,
    ) -> Result<usize, OutboxError> {
        let rejected_count: usize = settled.iter().map(|s| s.rejected.len()).sum();
        let leaving: usize = settled
            .iter()
            .map(|s| s.delivered.len() + s.rejected.len())
            .sum();
        if leaving == 0 {
            return Ok(0);
        }
        // Per row touched: the records leaving it, and whether that empties it.
        let mut touched: BTreeMap<u64, (IntSet<u64>, bool)> = BTreeMap::new();
        let (mut seq, empties) = {
            let mut index = self.index();
            let base = index.next_seq;
            index.next_seq += rejected_count as u64;
            for s in settled {
                let Some(queue) = index.logins.get(&s.login) else {
                    continue;
                };
                let mut rows: BTreeMap<u64, IntSet<u64>> = BTreeMap::new();
                for seq in s.seqs() {
                    if let Some(row) = queue.row_of(seq) {
                        rows.entry(row).or_default().insert(seq);
                    }
                }
                for (row, gone) in rows {
                    let left = queue.rows.get(&row).copied().unwrap_or(0);
                    let empties = gone.len() >= left as usize;
                    touched.insert(row, (gone, empties));
                }
            }
            (base, index.records <= leaving as u64)
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
        let refused: BTreeMap<u64, &Refusal> = settled
            .iter()
            .flat_map(|s| &s.rejected)
            .map(|(seq, why)| (*seq, why))
            .collect();
        let mut letters: Vec<(u64, DeadLetter)> = Vec::new();
        {
            let mut rows = tx.open_table(ROWS)?;
            for (&row, (leaving, empties)) in &touched {
                let has_refused = leaving.iter().any(|seq| refused.contains_key(seq));
                if *empties && !has_refused {
                    rows.remove(row)?;
                    continue;
                }
                // A row partly settled keeps the rest of its records; a refused record is
                // read once more, for its dead letter.
                let rest = match rows.get(row)? {
                    Some(value) => {
                        let records = decode_row(value.value())?;
                        for (seq, bytes) in &records {
                            if let Some(why) = refused.get(seq) {
                                let p = Pending::decode(bytes)?;
                                let letter = DeadLetter::new(
                                    &p.topic,
                                    p.payload.as_bytes(),
                                    &why.reason,
                                    why.detail.clone(),
                                    payload_cap,
                                    now_ms,
                                );
                                letters.push((*seq, letter));
                            }
                        }
                        (!*empties).then(|| {
                            encode_row(
                                records
                                    .into_iter()
                                    .filter(|(seq, _)| !leaving.contains(seq)),
                            )
                        })
                    }
                    None => continue,
                };
                match rest {
                    Some(rest) => rows.insert(row, rest.as_slice())?,
                    None => rows.remove(row)?,
                };
            }
            // Dead letters are numbered in the order their records arrived.
            letters.sort_by_key(|(record, _)| *record);
            let mut dead = tx.open_table(DEAD)?;
            for (_, letter) in &mut letters {
                letter.id = seq;
                dead.insert(seq, serde_json::to_vec(letter)?.as_slice())?;
                seq += 1;
            }
            raise_next_seq(&tx, seq)?;
        }
        tx.commit()?;

        let mut index = self.index();
        index.dead += letters.len() as u64;
        for s in settled {
            let leaving: IntSet<u64> = s.seqs().collect();
            let (mut freed, mut removed) = (0u64, 0u64);
            if let Some(queue) = index.logins.get_mut(&s.login) {
                // The rows this login's records left, as planned above.
                let mine: Vec<u64> = queue
                    .rows
                    .keys()
                    .copied()
                    .filter(|row| touched.contains_key(row))
                    .collect();
                for row in mine {
                    let (gone, empties) = &touched[&row];
                    if *empties {
                        queue.rows.remove(&row);
                    } else if let Some(left) = queue.rows.get_mut(&row) {
                        *left = left.saturating_sub(gone.len() as u32);
                    }
                }
                queue.records.retain(|(seq, _, size)| {
                    let keep = !leaving.contains(seq);
                    if !keep {
                        freed += u64::from(*size);
                        removed += 1;
                    }
                    keep
                });
                if queue.records.is_empty() {
                    index.logins.remove(&s.login);
                }
            }
            index.records -= removed;
            index.bytes -= freed;
        }
        Ok(letters.len())
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
        let due: Vec<Settled> = {
            let index = self.index();
            index
                .logins
                .iter()
                .map(|(login, q)| Settled {
                    login: login.clone(),
                    delivered: Vec::new(),
                    rejected: q
                        .iter()
                        .take_while(|(_, at, _)| *at < cutoff_ms)
                        .map(|&(seq, at, _)| {
                            let detail = format!(
                                "not delivered within outbox.max_age_secs (enqueued at {at})"
                            );
                            let reason = "expired".to_string();
                            (seq, Refusal { reason, detail })
                        })
                        .collect(),
                })
                .filter(|s| !s.rejected.is_empty())
                .collect()
        };
        let mut total = 0;
        for settled in due {
            total += self.finish(&[settled], payload_cap, now_ms)?;
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

#[cfg(test)]
mod tests;
