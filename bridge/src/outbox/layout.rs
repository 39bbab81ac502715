//! How the outbox lies on disk: its tables, the byte layout of their rows, and the migration
//! from the first layout.
//!
//! Records are stored a row per login per commit (at most 64 records a row): at a thousand
//! messages per commit from a hundred robots, that is one B-tree insert (and later one
//! removal) per ten records instead of one per record. Dedup keys are stored a row per commit.

use std::collections::BTreeMap;
use std::hash::{BuildHasherDefault, Hasher};

use redb::{ReadableTable, TableDefinition, TableHandle};

use super::OutboxError;

/// Rows of records, by the sequence number of their first record. A row is its records one
/// after the other, each as its sequence number (8 bytes, little endian), its length (4
/// bytes) and its bytes ([`super::Pending::encode`]).
pub(super) const ROWS: TableDefinition<u64, &[u8]> = TableDefinition::new("rows");
/// Dedup keys, a row per commit, oldest first: the commit's time (8 bytes, little endian)
/// then its keys' 128-bit hashes (16 bytes each).
pub(super) const SEEN_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("seen_log");
pub(super) const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The tables of the first layout (a row per record keyed by login, dedup keys in two
/// string-keyed tables), migrated at open.
pub(super) const OLD_PENDING: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("pending");
pub(super) const OLD_SEEN: TableDefinition<&str, u64> = TableDefinition::new("seen");
pub(super) const OLD_SEEN_ORDER: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("seen_order");

fn corrupt(what: &str) -> OutboxError {
    OutboxError::Corrupt(serde::de::Error::custom(format!("truncated {what}")))
}

/// A row of records from `(seq, record bytes)` pairs.
pub(super) fn encode_row<'a>(records: impl IntoIterator<Item = (u64, &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (seq, bytes) in records {
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// The `(seq, record bytes)` pairs of a row.
pub(super) fn decode_row(mut bytes: &[u8]) -> Result<Vec<(u64, &[u8])>, OutboxError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (seq, rest) = bytes.split_at_checked(8).ok_or_else(|| corrupt("row"))?;
        let (len, rest) = rest.split_at_checked(4).ok_or_else(|| corrupt("row"))?;
        let seq = u64::from_le_bytes(seq.try_into().map_err(|_| corrupt("row"))?);
        let len = u32::from_le_bytes(len.try_into().map_err(|_| corrupt("row"))?) as usize;
        let (record, rest) = rest.split_at_checked(len).ok_or_else(|| corrupt("row"))?;
        out.push((seq, record));
        bytes = rest;
    }
    Ok(out)
}

/// The bytes a record takes in its row besides its own.
pub(super) const RECORD_OVERHEAD: u32 = 12;

pub(super) fn encode_seen(at_ms: u64, hashes: &[u128]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 16 * hashes.len());
    out.extend_from_slice(&at_ms.to_le_bytes());
    for h in hashes {
        out.extend_from_slice(&h.to_le_bytes());
    }
    out
}

/// A `SEEN_LOG` row's time and hashes (a truncated row yields what it holds).
pub(super) fn decode_seen(bytes: &[u8]) -> (u64, impl Iterator<Item = u128> + '_) {
    let at = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    let hashes = bytes
        .get(8..)
        .unwrap_or_default()
        .chunks_exact(16)
        .filter_map(|c| c.try_into().ok().map(u128::from_le_bytes));
    (at, hashes)
}

/// The stored form of a dedup key.
pub(super) fn key_hash(key: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key.as_bytes())
}

/// A set of integers that are hashes or sequence numbers already, so hashing them again with
/// SipHash (the standard set's default) is wasted work on the commit path.
pub(super) type IntSet<T> = std::collections::HashSet<T, BuildHasherDefault<IntHasher>>;

/// Folds an integer key into 64 bits: a 128-bit hash is halved, a sequence number is spread
/// by a multiplication so that consecutive numbers differ in the high bits too.
#[derive(Default)]
pub(super) struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(SPREAD);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(SPREAD);
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = (n as u64) ^ ((n >> 64) as u64);
    }
}

/// 2^64 divided by the golden ratio, odd: a multiplication by it spreads consecutive keys.
const SPREAD: u64 = 0x9E37_79B9_7F4A_7C15;

/// The text of stored bytes; they were text when stored, so the lossy path is for a damaged
/// file only (`from_utf8_lossy` alone was about a quarter of reading a record).
pub(super) fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Moves the rows of the first layout, if any, into the current tables and drops the old ones.
pub(super) fn migrate_first_layout(tx: &redb::WriteTransaction) -> Result<(), OutboxError> {
    let names: Vec<String> = tx.list_tables()?.map(|t| t.name().to_string()).collect();
    if !names.iter().any(|n| n == "pending") {
        return Ok(());
    }
    // Numbering starts at 1, as in `Outbox::open`.
    let mut seq = tx
        .open_table(META)?
        .get("next_seq")?
        .map_or(1, |v| v.value())
        .max(1);
    {
        // A row per record; in login order, then by the old sequence, so order is kept.
        let old = tx.open_table(OLD_PENDING)?;
        let mut rows = tx.open_table(ROWS)?;
        for row in old.iter()? {
            let (_, value) = row?;
            let record = super::Pending::decode_first_layout(value.value())?.encode();
            rows.insert(seq, encode_row([(seq, record.as_slice())]).as_slice())?;
            seq += 1;
        }
        // A dedup row per commit time, oldest first, as the current layout writes them.
        let mut by_time: BTreeMap<u64, Vec<u128>> = BTreeMap::new();
        for row in tx.open_table(OLD_SEEN)?.iter()? {
            let (key, at) = row?;
            by_time
                .entry(at.value())
                .or_default()
                .push(key_hash(key.value()));
        }
        let mut log = tx.open_table(SEEN_LOG)?;
        for (row, (at, hashes)) in by_time.into_iter().enumerate() {
            log.insert(row as u64, encode_seen(at, &hashes).as_slice())?;
        }
    }
    raise_next_seq(tx, seq)?;
    tx.delete_table(OLD_PENDING)?;
    tx.delete_table(OLD_SEEN)?;
    tx.delete_table(OLD_SEEN_ORDER)?;
    Ok(())
}

/// Stores the next sequence number, never lowering it (commits may finish out of order).
pub(super) fn raise_next_seq(tx: &redb::WriteTransaction, seq: u64) -> Result<(), OutboxError> {
    let mut meta = tx.open_table(META)?;
    let stored = meta.get("next_seq")?.map_or(0, |v| v.value());
    if seq > stored {
        meta.insert("next_seq", seq)?;
    }
    Ok(())
}
