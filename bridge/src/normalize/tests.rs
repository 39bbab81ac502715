use super::*;
use crate::config::{FieldMap, Format, TimestampSource};

fn reader(format: Format) -> Reader {
    Reader {
        format,
        device_from_topic: None,
        timestamp: TimestampSource::Payload,
        fields: None,
        max_payload_bytes: 4096,
    }
}

fn record(outcome: Result<Outcome, Malformed>) -> Record {
    match outcome {
        Ok(Outcome::Record(r)) => r,
        other => panic!("expected a record, got {other:?}"),
    }
}

const RECEIVED: i64 = 1_700_000_000_000;

#[test]
fn ati_three_value_pose_is_x_y_heading() {
    let p = br#"{"sherpa_name":"tugger-01","mode":"Fleet","error":"","disabled":false,"pose":[12.5,40.25,1.57],
        "battery_status":79.0,"trip_id":1001,"timestamp":"2024-11-01T10:00:00.250Z","message_id":"abc"}"#;
    let r = record(reader(Format::Ati).read("ati/tugger-01/status", p, RECEIVED));
    assert_eq!(r.device, "tugger-01");
    assert_eq!((r.x, r.y, r.z, r.heading), (12.5, 40.25, 0.0, Some(1.57)));
    assert_eq!(r.battery, Some(79.0));
    assert_eq!(r.mode.as_deref(), Some("fleet"));
    assert_eq!(r.error, None);
    assert_eq!(r.measured_at_ms, 1_730_455_200_250);
    assert_eq!(r.message_id.as_deref(), Some("abc"));
}

#[test]
fn ati_six_value_pose_is_x_y_z_roll_pitch_yaw() {
    let p = br#"{"sherpa_name":"t2","pose":[1,2,0.5,0.1,0.2,3.0],"battery_status":-1}"#;
    let r = record(reader(Format::Ati).read("ati/t2/status", p, RECEIVED));
    assert_eq!((r.x, r.y, r.z, r.heading), (1.0, 2.0, 0.5, Some(3.0)));
    assert_eq!(r.battery, None, "-1 means unknown");
    assert_eq!(r.measured_at_ms, RECEIVED, "no payload time: receive time");
}

#[test]
fn ati_receive_time_mode_ignores_the_payload_clock() {
    let mut rd = reader(Format::Ati);
    rd.timestamp = TimestampSource::Received;
    let p = br#"{"sherpa_name":"t","pose":[1,2,3],"timestamp":"2020-01-01T00:00:00Z"}"#;
    assert_eq!(
        record(rd.read("ati/t/status", p, RECEIVED)).measured_at_ms,
        RECEIVED
    );
}

#[test]
fn ati_timestamp_without_offset_is_utc() {
    let p = br#"{"sherpa_name":"t","pose":[1,2,3],"timestamp":"2024-11-01T10:00:00.5"}"#;
    assert_eq!(
        record(reader(Format::Ati).read("x", p, RECEIVED)).measured_at_ms,
        1_730_455_200_500
    );
}

#[test]
fn ati_disabled_robot_reports_its_reason_as_error() {
    let p =
        br#"{"sherpa_name":"t","pose":[1,2,3],"disabled":true,"disabled_reason":"emergency_stop"}"#;
    let r = record(reader(Format::Ati).read("x", p, RECEIVED));
    assert_eq!(r.error.as_deref(), Some("disabled: emergency_stop"));
}

#[test]
fn device_can_come_from_a_topic_segment() {
    let mut rd = reader(Format::Ati);
    rd.device_from_topic = Some(1);
    let p = br#"{"sherpa_name":"ignored","pose":[1,2,3]}"#;
    assert_eq!(
        record(rd.read("ati/from-topic/status", p, RECEIVED)).device,
        "from-topic"
    );
    assert_eq!(
        rd.read("ati", p, RECEIVED).unwrap_err().code(),
        "missing_field"
    );
}

#[test]
fn malformed_payloads_get_their_reason() {
    let cases: Vec<(&[u8], &str)> = vec![
        (b"\xff\xfe", "not_utf8"),
        (b"not json", "not_json"),
        (b"[1,2]", "not_json"),
        (br#"{"pose":[1,2,3]}"#, "missing_field"),
        (br#"{"sherpa_name":"t"}"#, "missing_field"),
        (br#"{"sherpa_name":"t","pose":[1,2]}"#, "wrong_type"),
        (br#"{"sherpa_name":"t","pose":"1,2,3"}"#, "wrong_type"),
        (br#"{"sherpa_name":"t","pose":[1,"2",3]}"#, "wrong_type"),
        (br#"{"sherpa_name":7,"pose":[1,2,3]}"#, "wrong_type"),
        (br#"{"sherpa_name":"t","pose":[NaN,2,3]}"#, "not_finite"),
        (
            br#"{"sherpa_name":"t","pose":[1,Infinity,3]}"#,
            "not_finite",
        ),
        (
            br#"{"sherpa_name":"t","pose":[1,2,3],"battery_status":-Infinity}"#,
            "not_finite",
        ),
        (
            br#"{"sherpa_name":"t","pose":[1,2,3],"timestamp":"yesterday"}"#,
            "bad_timestamp",
        ),
        (
            br#"{"sherpa_name":"t","pose":[1,2,3],"battery_status":"full"}"#,
            "wrong_type",
        ),
    ];
    for (payload, code) in cases {
        let err = reader(Format::Ati)
            .read("ati/t/status", payload, RECEIVED)
            .unwrap_err();
        assert_eq!(
            err.code(),
            code,
            "{:?}: {err}",
            String::from_utf8_lossy(payload)
        );
    }
}

#[test]
fn non_finite_error_names_the_field() {
    let err = reader(Format::Ati)
        .read("x", br#"{"sherpa_name":"t","pose":[1,NaN,3]}"#, 0)
        .unwrap_err();
    assert_eq!(err.to_string(), "field pose[1] is not a finite number");
}

#[test]
fn nan_inside_a_string_is_just_text() {
    let p = br#"{"sherpa_name":"NaN-bot","pose":[1,2,3],"error":"Infinity \" NaN"}"#;
    let r = record(reader(Format::Ati).read("x", p, RECEIVED));
    assert_eq!(r.device, "NaN-bot");
    assert_eq!(r.error.as_deref(), Some("Infinity \" NaN"));
}

#[test]
fn oversized_payload_is_refused_before_parsing() {
    let big = vec![b' '; 5000];
    assert_eq!(
        reader(Format::Ati).read("x", &big, 0).unwrap_err().code(),
        "oversized"
    );
}

#[test]
fn vda5050_v2_state_is_read() {
    let p = br#"{"headerId":7,"timestamp":"2024-11-01T10:00:00Z","version":"2.0.0","manufacturer":"KIT",
        "serialNumber":"0001","agvPosition":{"x":3.5,"y":-1.25,"theta":0.5,"mapId":"hall","positionInitialized":true},
        "batteryState":{"batteryCharge":55.4,"charging":false},"driving":true,"operatingMode":"AUTOMATIC",
        "errors":[{"errorType":"obstacle","errorLevel":"WARNING"}]}"#;
    let r = record(reader(Format::Vda5050).read("uagv/v2/KIT/0001/state", p, RECEIVED));
    assert_eq!(r.device, "KIT/0001");
    assert_eq!((r.x, r.y, r.heading), (3.5, -1.25, Some(0.5)));
    assert_eq!((r.battery, r.moving), (Some(55.4), Some(true)));
    assert_eq!(r.mode.as_deref(), Some("automatic"));
    assert_eq!(r.error.as_deref(), Some("obstacle"));
    assert_eq!(r.measured_at_ms, 1_730_455_200_000);
}

#[test]
fn vda5050_v3_names_are_read() {
    let p = br#"{"headerId":1,"timestamp":"2024-11-01T10:00:00Z","manufacturer":"KIT","serialNumber":"0002",
        "mobileRobotPosition":{"x":1,"y":2,"theta":0,"localized":true},"powerSupply":{"stateOfCharge":80},"driving":false}"#;
    let r = record(reader(Format::Vda5050).read("vda5050/v3/KIT/0002/state", p, RECEIVED));
    assert_eq!(
        (r.device.as_str(), r.x, r.y, r.battery, r.moving),
        ("KIT/0002", 1.0, 2.0, Some(80.0), Some(false))
    );
}

#[test]
fn vda5050_without_a_usable_position_is_skipped() {
    let rd = reader(Format::Vda5050);
    let v2 = br#"{"manufacturer":"K","serialNumber":"1","agvPosition":{"x":1,"y":2,"theta":0,"positionInitialized":false}}"#;
    let v3 = br#"{"manufacturer":"K","serialNumber":"1","mobileRobotPosition":{"x":1,"y":2,"localized":false}}"#;
    let none = br#"{"manufacturer":"K","serialNumber":"1","driving":false}"#;
    assert_eq!(
        rd.read("uagv/v2/K/1/state", v2, 0),
        Ok(Outcome::Skip("position_not_initialized"))
    );
    assert_eq!(
        rd.read("vda5050/v3/K/1/state", v3, 0),
        Ok(Outcome::Skip("position_not_initialized"))
    );
    assert_eq!(
        rd.read("uagv/v2/K/1/visualization", none, 0),
        Ok(Outcome::Skip("no_position"))
    );
    assert_eq!(
        rd.read(
            "uagv/v2/K/1/connection",
            br#"{"connectionState":"ONLINE"}"#,
            0
        ),
        Ok(Outcome::Skip("no_position"))
    );
}

#[test]
fn vda5050_device_falls_back_to_the_topic() {
    let p = br#"{"agvPosition":{"x":1,"y":2,"theta":0,"positionInitialized":true}}"#;
    assert_eq!(
        record(reader(Format::Vda5050).read("uagv/v2/ACME/77/visualization", p, 0)).device,
        "ACME/77"
    );
}

#[test]
fn field_map_reads_nested_shapes() {
    let mut rd = reader(Format::Fields);
    rd.fields = Some(FieldMap {
        device: Some("/event/amrId".into()),
        x: "/event/location/current/x".into(),
        y: "/event/location/current/y".into(),
        z: Some("/event/location/current/z".into()),
        battery: Some("/event/batteryPercentage".into()),
        moving: Some("/event/moving".into()),
        timestamp: Some("/event/ts".into()),
        ..FieldMap::default()
    });
    let p = br#"{"event":{"amrId":42,"location":{"current":{"x":1.5,"y":2.5,"z":0.1}},"batteryPercentage":64.6,"moving":true,"ts":1730455200}}"#;
    let r = record(rd.read("plant/amr", p, RECEIVED));
    assert_eq!(r.device, "42");
    assert_eq!(
        (r.x, r.y, r.z, r.battery, r.moving),
        (1.5, 2.5, 0.1, Some(64.6), Some(true))
    );
    assert_eq!(
        r.measured_at_ms, 1_730_455_200_000,
        "seconds are scaled to ms"
    );
    let missing = br#"{"event":{"amrId":"a","location":{"current":{"y":1}}}}"#;
    assert_eq!(
        rd.read("plant/amr", missing, 0).unwrap_err(),
        Malformed::Missing("/event/location/current/x".into())
    );
}

/// The quick ATI parse reads what the general one reads, or declines.
fn ati_paths_agree(text: &str) -> Option<ati::Fields> {
    let quick = ati::Fields::parse(text)?;
    let general = ati::Fields::from_map(parse_object(text.as_bytes()).expect("an object"));
    assert_eq!(quick, general, "{text}");
    Some(quick)
}

#[test]
fn quick_ati_parse_declines_what_only_the_general_one_explains() {
    for text in [
        r#"["bot", [1, 2, 3]]"#,
        r#"{"sherpa_name":"a","sherpa_name":"b","pose":[1,2,3]}"#,
        r#"{"sherpa_name":"a","pose":[NaN,2,3]}"#,
        r#"{"sherpa_name":"a","pose":[1,2,3]} trailing"#,
        "not json",
    ] {
        assert!(ati::Fields::parse(text).is_none(), "{text}");
    }
    let nested =
        r#"{"sherpa_name":"a","pose":[1,2,3],"extra":{"deep":[{"x":1}]},"mode":null,"error":7}"#;
    assert!(ati_paths_agree(nested).is_some());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn readers_never_panic_on_bytes(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            for format in [Format::Ati, Format::Vda5050, Format::Fields] {
                let mut rd = reader(format);
                rd.fields = Some(FieldMap { device: Some("/d".into()), x: "/x".into(), y: "/y".into(), ..FieldMap::default() });
                let _ = rd.read("uagv/v2/a/b/state", &payload, 0);
            }
        }

        #[test]
        fn readers_never_panic_on_json_like_text(
            name in "[a-z0-9-]{0,8}",
            pose in proptest::collection::vec(prop_oneof![
                any::<f64>().prop_map(|f| f.to_string()),
                Just("NaN".to_string()), Just("-Infinity".to_string()), Just("\"x\"".to_string()), Just("null".to_string())
            ], 0..8),
            battery in prop_oneof![any::<f64>().prop_map(|f| f.to_string()), Just("true".to_string()), Just("-1".to_string())],
            ts in prop_oneof![Just("\"2024-01-01T00:00:00Z\"".to_string()), any::<i64>().prop_map(|i| i.to_string()), Just("\"\u{1F600}\"".to_string())],
        ) {
            let text = format!(r#"{{"sherpa_name":"{name}","pose":[{}],"battery_status":{battery},"timestamp":{ts},
                "agvPosition":{{"x":{b},"y":1,"positionInitialized":true}},"manufacturer":"m","serialNumber":"{name}"}}"#,
                pose.join(","), b = pose.first().cloned().unwrap_or_else(|| "0".into()));
            if serde_json::from_str::<serde_json::Value>(&text).is_ok() {
                prop_assert!(ati_paths_agree(&text).is_some());
            }
            for format in [Format::Ati, Format::Vda5050] {
                if let Ok(Outcome::Record(r)) = reader(format).read("uagv/v2/m/s/state", text.as_bytes(), 0) {
                    prop_assert!(r.x.is_finite() && r.y.is_finite() && r.z.is_finite());
                    prop_assert!(r.battery.is_none_or(|b| (0.0..=100.0).contains(&b)));
                }
            }
        }
    }
}
