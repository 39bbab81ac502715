use super::*;
use crate::config::{DeviceConfig, Secret, UnknownDevices};
use crate::outbox::Pending;

fn ingest(config: &Config) -> Ingest {
    Ingest::new(config, Arc::new(Directory::new(config)), State::new(0))
}

fn base() -> Config {
    let mut c = Config::default();
    c.twinzo.sector_id = Some(4);
    c.twinzo.device_password = Secret::new("device-password-1234");
    c
}

fn record(p: Prepared) -> (Pending, String) {
    match p {
        Prepared::Entry(Entry::Record { bytes, key, .. }) => {
            (Pending::decode(&bytes).unwrap(), key)
        }
        other => panic!("expected a record, got {other:?}"),
    }
}

#[test]
fn ati_status_becomes_a_twinzo_location_in_millimetres() {
    let mut i = ingest(&base());
    let p = br#"{"sherpa_name":"tugger-01","pose":[12.5,40.25,1.57],"battery_status":79.4,"timestamp":"2024-11-01T10:00:00Z"}"#;
    let (pending, key) = record(i.prepare("ati/tugger-01/status", p, 5));
    assert_eq!(pending.login, "tugger-01");
    let l = &pending.location;
    assert_eq!(
        (l.x, l.y, l.sector_id, l.battery, l.timestamp),
        (12_500.0, 40_250.0, 4, Some(79), 1_730_455_200_000)
    );
    assert!(!l.is_moving, "first record: no displacement known");
    assert_eq!(key, "t:tugger-01:1730455200000");
}

#[test]
fn moving_follows_displacement_above_the_threshold() {
    let mut i = ingest(&base());
    let at = |x: f64, t: i64| format!(r#"{{"sherpa_name":"t","pose":[{x},0,0],"timestamp":{t}}}"#);
    record(i.prepare("ati/t/status", at(1.0, 1_700_000_000_000).as_bytes(), 0));
    let (p, _) = record(i.prepare("ati/t/status", at(1.01, 1_700_000_000_100).as_bytes(), 0));
    assert!(!p.location.is_moving, "1 cm is below the 5 cm threshold");
    let (p, _) = record(i.prepare("ati/t/status", at(1.5, 1_700_000_000_200).as_bytes(), 0));
    assert!(p.location.is_moving);
}

#[test]
fn message_id_is_the_dedup_key_when_present() {
    let mut i = ingest(&base());
    let p = br#"{"sherpa_name":"t","pose":[1,2,3],"message_id":"m-1"}"#;
    assert_eq!(record(i.prepare("ati/t/status", p, 0)).1, "m:t:m-1");
}

#[test]
fn unknown_device_under_reject_policy_is_a_dead_letter() {
    let mut c = base();
    c.twinzo.unknown_devices = UnknownDevices::Reject;
    c.devices.push(DeviceConfig {
        id: "known".into(),
        login: None,
        sector_id: None,
        password: None,
    });
    let mut i = ingest(&c);
    match i.prepare(
        "ati/x/status",
        br#"{"sherpa_name":"stranger","pose":[1,2,3]}"#,
        0,
    ) {
        Prepared::Entry(Entry::Dead(l)) => assert_eq!(l.reason, "unknown_device"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        i.prepare(
            "ati/x/status",
            br#"{"sherpa_name":"known","pose":[1,2,3]}"#,
            0
        ),
        Prepared::Entry(Entry::Record { .. })
    ));
}

#[test]
fn malformed_message_is_a_dead_letter_with_its_reason() {
    let mut i = ingest(&base());
    match i.prepare("ati/x/status", b"{oops", 0) {
        Prepared::Entry(Entry::Dead(l)) => {
            assert_eq!(
                (l.reason.as_str(), l.topic.as_str(), l.payload.as_str()),
                ("not_json", "ati/x/status", "{oops")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn topics_outside_forwarded_routes_are_not_routed() {
    let mut i = ingest(&base());
    assert!(matches!(
        i.prepare("ati_fm/trips/info", b"{}", 0),
        Prepared::NotRouted
    ));
    assert!(matches!(
        i.prepare(
            "ati_fm/sherpa/status",
            br#"{"sherpa_name":"a","pose":[1,2,3]}"#,
            0
        ),
        Prepared::Entry(_)
    ));
}

#[test]
fn min_interval_throttles_per_device() {
    let mut c = base();
    c.batch.min_interval_ms = 1000;
    let mut i = ingest(&c);
    let at = |t: i64| format!(r#"{{"sherpa_name":"t","pose":[1,2,3],"timestamp":{t}}}"#);
    assert!(matches!(
        i.prepare("ati/t/status", at(1_700_000_000_000).as_bytes(), 0),
        Prepared::Entry(_)
    ));
    assert!(matches!(
        i.prepare("ati/t/status", at(1_700_000_000_500).as_bytes(), 0),
        Prepared::Skip("throttled")
    ));
    assert!(matches!(
        i.prepare("ati/t/status", at(1_700_000_001_000).as_bytes(), 0),
        Prepared::Entry(_)
    ));
}
