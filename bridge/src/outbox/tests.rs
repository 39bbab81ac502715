use super::layout::{OLD_PENDING, OLD_SEEN, OLD_SEEN_ORDER};
use super::*;
use redb::TableHandle;

fn pending(login: &str, ts: i64) -> Pending {
    Pending {
        login: login.into(),
        device: login.into(),
        location: Location {
            timestamp: ts,
            sector_id: 1,
            x: 1.0,
            y: 2.0,
            z: 0.0,
            interval: None,
            battery: Some(50),
            is_moving: false,
        },
        topic: format!("ati/{login}/status"),
        payload: "{}".into(),
        enqueued_at_ms: ts,
    }
}

fn open(path: &Path, window_secs: u64) -> Result<Outbox, OutboxError> {
    let dedup = Dedup {
        window_secs,
        max_keys: 1000,
    };
    Outbox::open(path, dedup)
}

/// The payload times of a login's waiting records, in order.
fn timestamps(o: &Outbox, login: &str) -> Vec<i64> {
    o.peek(login, 1000)
        .unwrap()
        .iter()
        .map(|(_, p)| p.location.timestamp)
        .collect()
}

/// Settles records of `login` as delivered.
fn deliver(o: &Outbox, login: &str, seqs: Vec<u64>) {
    let settled = Settled {
        login: login.into(),
        delivered: seqs,
        rejected: Vec::new(),
    };
    o.finish(&[settled], 100, 10).unwrap();
}

fn record(login: &str, ts: i64) -> Entry {
    Entry::record(&pending(login, ts), format!("t:{login}:{ts}"))
}

#[test]
fn records_survive_reopening_in_order_per_login() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.redb");
    {
        let o = open(&path, 600).unwrap();
        let done = o
            .commit(vec![record("a", 1), record("b", 2), record("a", 3)], 10)
            .unwrap();
        assert_eq!(
            done,
            Committed {
                stored: 3,
                duplicates: 0,
                dead: 0
            }
        );
    }
    let o = open(&path, 600).unwrap();
    assert_eq!(o.stats().records, 3);
    let a = timestamps(&o, "a");
    assert_eq!(a, vec![1, 3]);
}

#[test]
fn a_key_seen_before_is_a_duplicate_even_after_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let o = open(&dir.path().join("o.redb"), 600).unwrap();
    o.commit(vec![record("a", 1)], 10).unwrap();
    let seqs: Vec<u64> = o.peek("a", 10).unwrap().iter().map(|(s, _)| *s).collect();
    deliver(&o, "a", seqs);
    assert_eq!(o.stats().records, 0);
    let again = o
        .commit(vec![record("a", 1), record("a", 1), record("a", 2)], 20)
        .unwrap();
    assert_eq!(
        again,
        Committed {
            stored: 1,
            duplicates: 2,
            dead: 0
        }
    );
}

#[test]
fn dedup_window_counts_back_from_the_newest_key() {
    let dir = tempfile::tempdir().unwrap();
    let o = open(&dir.path().join("o.redb"), 1).unwrap();
    o.commit(vec![record("a", 1)], 1_000).unwrap();
    // Long after (a bridge that was down): the key is still known until newer keys push it out.
    assert_eq!(
        o.commit(vec![record("a", 1)], 1_000_000)
            .unwrap()
            .duplicates,
        1
    );
    o.commit(vec![record("a", 2)], 1_000_000).unwrap();
    assert_eq!(
        o.commit(vec![record("a", 1)], 1_000_500)
            .unwrap()
            .duplicates,
        0,
        "pruned after the window"
    );
}

fn refusal(reason: &str, detail: &str) -> Refusal {
    Refusal {
        reason: reason.into(),
        detail: detail.into(),
    }
}

#[test]
fn rejected_records_become_dead_letters_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let o = open(&dir.path().join("o.redb"), 600).unwrap();
    let mut second = pending("a", 2);
    second.payload = r#"{"pose":[1,2,3],"note":"the second"}"#.into();
    let entries = vec![record("a", 1), Entry::record(&second, "t:a:2".into())];
    o.commit(entries, 10).unwrap();
    let rows = o.peek_locations("a", 10).unwrap();
    assert_eq!(
        rows.iter().map(|(_, l)| l.timestamp).collect::<Vec<_>>(),
        [1, 2]
    );
    let written = o
        .finish(
            &[Settled {
                login: "a".into(),
                delivered: vec![rows[0].0],
                rejected: vec![(rows[1].0, refusal("twinzo_rejected", "no"))],
            }],
            20,
            11,
        )
        .unwrap();
    assert_eq!(written, 1);
    let stats = o.stats();
    assert_eq!((stats.records, stats.dead_letters), (0, 1));
    // The dead letter is made from the stored record: its topic and payload (cut to 20
    // bytes), the refusal's reason and detail, and the time given.
    let letters = o.dead_letters(0, 10).unwrap();
    let letter = o.dead_letter(letters[0].id).unwrap().unwrap();
    assert_eq!(
        (letter.reason.as_str(), letter.detail.as_str(), letter.at_ms),
        ("twinzo_rejected", "no", 11)
    );
    assert_eq!(letter.topic, "ati/a/status");
    assert_eq!(letter.payload, r#"{"pose":[1,2,3],"not"#);
    assert_eq!(letter.payload_bytes, 36);
    assert_eq!(o.purge_dead(None).unwrap(), 1);
    assert_eq!(o.stats().dead_letters, 0);
}

#[test]
fn ready_logins_follow_size_and_the_flush_cutoff() {
    let dir = tempfile::tempdir().unwrap();
    let o = open(&dir.path().join("o.redb"), 600).unwrap();
    o.commit(
        vec![
            record("young", 1000),
            record("full", 1000),
            record("full", 1001),
            record("old", 0),
        ],
        10,
    )
    .unwrap();
    let ready = o.ready(2, 500, false, |_| false);
    assert_eq!(ready, vec!["full".to_string(), "old".to_string()]);
    assert_eq!(
        o.ready(2, 500, false, |l| l == "full"),
        vec!["old".to_string()]
    );
    assert_eq!(
        o.ready(2, 1000, false, |_| false).len(),
        3,
        "the tick after young arrived"
    );
    assert_eq!(o.ready(9, 0, true, |_| false).len(), 3, "forced");
}

#[test]
fn expired_records_move_to_dead_letters_with_reason_expired() {
    let dir = tempfile::tempdir().unwrap();
    let o = open(&dir.path().join("o.redb"), 600).unwrap();
    o.commit(vec![record("a", 1), record("a", 5000)], 10)
        .unwrap();
    assert_eq!(o.expire(1000, 6000, 100).unwrap(), 1);
    assert_eq!(o.stats().records, 1);
    assert_eq!(o.dead_letters(0, 10).unwrap()[0].reason, "expired");
}

#[test]
fn stats_track_bytes_and_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let o = open(&dir.path().join("o.redb"), 600).unwrap();
    o.commit(vec![record("a", 7), record("b", 3)], 10).unwrap();
    let s = o.stats();
    assert_eq!((s.records, s.logins, s.oldest_enqueued_ms), (2, 2, Some(3)));
    assert!(s.bytes > 100);
}

#[test]
fn dead_letter_payload_is_capped_and_lossy_for_binary() {
    let l = DeadLetter::new("t", b"\xff\xfeabcdef", "not_utf8", String::new(), 4, 0);
    assert_eq!(l.payload_bytes, 8);
    assert_eq!(l.payload, "\u{fffd}\u{fffd}ab");
}

#[test]
fn stored_records_keep_their_payload_byte_for_byte() {
    let mut p = pending("a", 1);
    p.payload = r#"{"sherpa_name":"a","note":"quote \" and ünïcode"}"#.into();
    let back = Pending::decode(&p.encode()).unwrap();
    assert_eq!(back, p);
    // The optional fields both ways.
    p.location.interval = Some(250);
    p.location.battery = None;
    p.location.is_moving = true;
    p.location.x = -1234.5;
    assert_eq!(Pending::decode(&p.encode()).unwrap(), p);
    let bytes = p.encode();
    for cut in [0, 1, 3, 20, 40] {
        assert!(
            Pending::decode(&bytes[..cut]).is_err(),
            "a record cut at {cut} bytes is an error, not a panic"
        );
    }
}

/// A record as the first layout stored it: its JSON head's length, the head, the payload.
fn first_layout_bytes(p: &Pending) -> Vec<u8> {
    let head = serde_json::to_vec(p).unwrap();
    let mut out = (head.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&head);
    out.extend_from_slice(p.payload.as_bytes());
    out
}

#[test]
fn dedup_keeps_the_newest_keys_up_to_the_limit_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.redb");
    let small = Dedup {
        window_secs: 600,
        max_keys: 3,
    };
    {
        let o = Outbox::open(&path, small).unwrap();
        for ts in 1..=5 {
            o.commit(vec![record("a", ts)], ts * 10).unwrap();
        }
    }
    let o = Outbox::open(&path, small).unwrap();
    // Newest first, so the keys stored again here push out none of the ones asked about.
    let again: Vec<usize> = (1..=5)
        .rev()
        .map(|ts| o.commit(vec![record("a", ts)], 100).unwrap().duplicates)
        .collect();
    // 5, 4 and 3 are still known after reopening; 2 and 1 were forgotten (the limit is 3).
    assert_eq!(again, vec![1, 1, 1, 0, 0]);
}

#[test]
fn the_same_key_twice_in_one_commit_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let o = open(&dir.path().join("o.redb"), 600).unwrap();
    let done = o.commit(vec![record("a", 1), record("a", 1)], 10).unwrap();
    assert_eq!((done.stored, done.duplicates), (1, 1));
    assert_eq!(o.stats().records, 1);
}

#[test]
fn an_outbox_of_the_first_layout_is_migrated_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.redb");
    {
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut old = tx.open_table(OLD_PENDING).unwrap();
            for (login, seq, ts) in [("b", 7, 3), ("a", 5, 1), ("a", 9, 2)] {
                let bytes = first_layout_bytes(&pending(login, ts));
                old.insert((login, seq), bytes.as_slice()).unwrap();
            }
            let mut seen = tx.open_table(OLD_SEEN).unwrap();
            seen.insert("t:a:1", 10).unwrap();
            let mut order = tx.open_table(OLD_SEEN_ORDER).unwrap();
            order.insert((10, "t:a:1"), ()).unwrap();
            let mut meta = tx.open_table(META).unwrap();
            meta.insert("next_seq", 10).unwrap();
        }
        tx.commit().unwrap();
    }
    let o = open(&path, 600).unwrap();
    assert_eq!(o.stats().records, 3);
    let a = timestamps(&o, "a");
    assert_eq!(a, vec![1, 2], "order within a login is kept");
    assert_eq!(o.commit(vec![record("a", 1)], 20).unwrap().duplicates, 1);
    let done = o.commit(vec![record("c", 1)], 20).unwrap();
    assert_eq!(done.stored, 1);
    drop(o);
    let db = Database::open(&path).unwrap();
    let tx = db.begin_read().unwrap();
    let names: Vec<String> = tx
        .list_tables()
        .unwrap()
        .map(|t| t.name().to_string())
        .collect();
    assert!(
        !names.iter().any(|n| n == "pending" || n == "seen"),
        "{names:?}"
    );
}

#[test]
fn a_row_settled_in_parts_keeps_the_rest_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.redb");
    {
        let o = open(&path, 600).unwrap();
        // One commit, two logins interleaved: a row each.
        let entries = (1..=5)
            .flat_map(|ts| [record("a", ts), record("b", ts)])
            .collect();
        assert_eq!(o.commit(entries, 10).unwrap().stored, 10);
        let a = o.peek("a", 3).unwrap();
        o.finish(
            &[Settled {
                login: "a".into(),
                delivered: vec![a[0].0, a[1].0],
                rejected: vec![(a[2].0, refusal("twinzo_rejected", "no"))],
            }],
            100,
            10,
        )
        .unwrap();
        assert_eq!(timestamps(&o, "a"), vec![4, 5]);
    }
    let o = open(&path, 600).unwrap();
    assert_eq!(o.stats().records, 7);
    assert_eq!(o.stats().dead_letters, 1);
    assert_eq!(timestamps(&o, "a"), vec![4, 5]);
    assert_eq!(timestamps(&o, "b"), vec![1, 2, 3, 4, 5]);
    let rest: Vec<u64> = o.peek("a", 10).unwrap().iter().map(|(s, _)| *s).collect();
    deliver(&o, "a", rest);
    let bytes = o.stats().bytes;
    assert!(bytes > 0, "b's records are still counted");
    drop(o);
    let o = open(&path, 600).unwrap();
    assert_eq!(o.stats().records, 5);
    assert_eq!(o.stats().bytes, bytes, "the same count after reopening");
    assert!(timestamps(&o, "a").is_empty());
}

#[test]
fn a_burst_from_one_login_is_split_into_bounded_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.redb");
    {
        let o = open(&path, 600).unwrap();
        let entries = (1..=200).map(|ts| record("a", ts)).collect();
        assert_eq!(o.commit(entries, 10).unwrap().stored, 200);
        // Settle 100 (not a multiple of the row size), in two requests.
        for _ in 0..2 {
            let seqs = o.peek("a", 50).unwrap().iter().map(|(s, _)| *s).collect();
            deliver(&o, "a", seqs);
        }
    }
    let o = open(&path, 600).unwrap();
    let left = timestamps(&o, "a");
    assert_eq!(left, (101..=200).collect::<Vec<_>>());
    let tx = o.db.begin_read().unwrap();
    let rows = tx.open_table(ROWS).unwrap();
    for row in rows.iter().unwrap() {
        let (_, value) = row.unwrap();
        assert!(decode_row(value.value()).unwrap().len() <= ROW_MAX);
    }
}

#[test]
fn a_dead_letter_first_in_a_fresh_outbox_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let o = open(&dir.path().join("o.redb"), 600).unwrap();
    let letter = DeadLetter::new("t", b"{", "not_json", "eof".into(), 100, 1);
    o.commit(vec![Entry::Dead(letter), record("a", 1)], 10)
        .unwrap();
    let listed = o.dead_letters(0, 10).unwrap();
    assert_eq!(
        listed.len(),
        1,
        "ids start at 1, so listing after 0 shows it"
    );
    assert!(o.dead_letter(listed[0].id).unwrap().is_some());
}
