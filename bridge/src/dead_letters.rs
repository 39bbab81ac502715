//! `twinzo-bridge dead-letters list|show|replay|purge`: the messages and records set aside.
//!
//! The outbox file is locked by a running bridge, so these commands run while it is stopped
//! (on Railway: scale to zero or use a one-off shell with the service stopped). `replay`
//! reads each dead letter's topic and payload through the current configuration again (after
//! a fix to the device table, a format or credentials), queues what now passes, and removes
//! the replayed letters; what fails again becomes a new dead letter with the new reason.

use crate::config::Config;
use crate::devices::Directory;
use crate::outbox::{DeadLetter, Entry, Outbox};
use crate::pipeline::{Ingest, Prepared};
use crate::state::State;
use crate::twinzo::client::now_ms;

/// Prints one line per dead letter.
pub fn list(outbox: &Outbox, after: u64, limit: usize) -> anyhow::Result<String> {
    let letters = outbox.dead_letters(after, limit)?;
    let mut out = format!(
        "{:>8}  {:<24}  {:<16}  {:<32}  detail\n",
        "id", "at (UTC)", "reason", "topic"
    );
    for l in &letters {
        let at = chrono::DateTime::from_timestamp_millis(l.at_ms)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        out.push_str(&format!(
            "{:>8}  {:<24}  {:<16}  {:<32}  {}\n",
            l.id,
            at,
            l.reason,
            crate::normalize::truncate(&l.topic, 32),
            crate::normalize::truncate(&l.detail, 80)
        ));
    }
    out.push_str(&format!(
        "{} shown, {} in store\n",
        letters.len(),
        outbox.stats().dead_letters
    ));
    Ok(out)
}

/// One dead letter in full, as JSON.
pub fn show(outbox: &Outbox, id: u64) -> anyhow::Result<String> {
    match outbox.dead_letter(id)? {
        Some(letter) => Ok(serde_json::to_string_pretty(&letter)?),
        None => anyhow::bail!("no dead letter {id}"),
    }
}

/// What a replay did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    pub queued: usize,
    pub failed_again: usize,
    pub skipped: usize,
}

/// Replays the given dead letters (all when `ids` is empty).
pub fn replay(outbox: &Outbox, config: &Config, ids: &[u64]) -> anyhow::Result<Replayed> {
    let letters: Vec<DeadLetter> = if ids.is_empty() {
        outbox.dead_letters(0, usize::MAX)?
    } else {
        ids.iter()
            .filter_map(|id| outbox.dead_letter(*id).transpose())
            .collect::<Result<_, _>>()?
    };
    let directory = std::sync::Arc::new(Directory::new(config));
    let mut ingest = Ingest::new(config, directory, State::new(0));
    let now = now_ms();
    let mut done = Replayed::default();
    let mut entries = Vec::new();
    for letter in &letters {
        match ingest.prepare(&letter.topic, letter.payload.as_bytes(), now) {
            // A replay must not be taken for a redelivery: give it a key of its own.
            Prepared::Entry(Entry::Record {
                login,
                enqueued_at_ms,
                bytes,
                key,
            }) => {
                entries.push(Entry::Record {
                    login,
                    enqueued_at_ms,
                    bytes,
                    key: format!("replay:{}:{key}", letter.id),
                });
                done.queued += 1;
            }
            Prepared::Entry(dead @ Entry::Dead(_)) => {
                entries.push(dead);
                done.failed_again += 1;
            }
            Prepared::Skip(_) | Prepared::NotRouted => done.skipped += 1,
        }
    }
    outbox.commit(entries, now)?;
    let replayed: Vec<u64> = letters.iter().map(|l| l.id).collect();
    outbox.purge_dead(Some(&replayed))?;
    Ok(done)
}
