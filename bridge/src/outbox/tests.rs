use super::*;

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

fn record(login: &str, ts: i64) -> Entry {
    Entry::Record {
        pending: Box::new(pending(login, ts)),
        key: format!("t:{login}:{ts}"),
    }
}

#[test]
fn records_survive_reopening_in_order_per_login() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.redb");
    {
        let o = Outbox::open(&path, 600).unwrap();
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
    let o = Outbox::open(&path, 600).unwrap();
    assert_eq!(o.stats().records, 3);
    let a: Vec<i64> = o
        .peek("a", 10)
        .unwrap()
        .iter()
        .map(|(_, p)| p.location.timestamp)
        .collect();
    assert_eq!(a, vec![1, 3]);
}

#[test]
fn a_key_seen_before_is_a_duplicate_even_after_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let o = Outbox::open(&dir.path().join("o.redb"), 600).unwrap();
    o.commit(vec![record("a", 1)], 10).unwrap();
    let seqs: Vec<u64> = o.peek("a", 10).unwrap().iter().map(|(s, _)| *s).collect();
    o.finish("a", &seqs, &[]).unwrap();
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
    let o = Outbox::open(&dir.path().join("o.redb"), 1).unwrap();
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

#[test]
fn rejected_records_become_dead_letters_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let o = Outbox::open(&dir.path().join("o.redb"), 600).unwrap();
    o.commit(vec![record("a", 1), record("a", 2)], 10).unwrap();
    let rows = o.peek("a", 10).unwrap();
    let letter = DeadLetter::new(
        "ati/a/status",
        b"{}",
        "twinzo_rejected",
        "no".into(),
        100,
        11,
    );
    o.finish("a", &[rows[0].0], &[(rows[1].0, letter)]).unwrap();
    let stats = o.stats();
    assert_eq!((stats.records, stats.dead_letters), (0, 1));
    let letters = o.dead_letters(0, 10).unwrap();
    assert_eq!(letters[0].reason, "twinzo_rejected");
    assert_eq!(o.dead_letter(letters[0].id).unwrap().unwrap().detail, "no");
    assert_eq!(o.purge_dead(None).unwrap(), 1);
    assert_eq!(o.stats().dead_letters, 0);
}

#[test]
fn ready_logins_follow_size_and_the_flush_cutoff() {
    let dir = tempfile::tempdir().unwrap();
    let o = Outbox::open(&dir.path().join("o.redb"), 600).unwrap();
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
    let o = Outbox::open(&dir.path().join("o.redb"), 600).unwrap();
    o.commit(vec![record("a", 1), record("a", 5000)], 10)
        .unwrap();
    assert_eq!(o.expire(1000, 6000, 100).unwrap(), 1);
    assert_eq!(o.stats().records, 1);
    assert_eq!(o.dead_letters(0, 10).unwrap()[0].reason, "expired");
}

#[test]
fn stats_track_bytes_and_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let o = Outbox::open(&dir.path().join("o.redb"), 600).unwrap();
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
    let back = Pending::decode(&p.encode().unwrap()).unwrap();
    assert_eq!(back, p);
    assert!(
        Pending::decode(&[1, 0]).is_err(),
        "a truncated record is an error, not a panic"
    );
}
