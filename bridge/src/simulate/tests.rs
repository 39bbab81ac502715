use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::*;

const T0: i64 = 1_738_311_302_000;

fn fleet(config: FleetConfig) -> Fleet {
    Fleet::new(config)
}

fn json(payload: &[u8]) -> Value {
    serde_json::from_slice(payload).expect("payload is JSON")
}

/// `n` messages of robot `idx`, one simulated second apart at rate 1.
fn messages(f: &mut Fleet, idx: usize, n: usize) -> Vec<(String, Value)> {
    (0..n)
        .map(|i| {
            let (topic, payload) = f.next_message_at(idx, T0 + i as i64 * 1000);
            (topic, json(&payload))
        })
        .collect()
}

#[test]
fn ati_status_has_every_field_with_the_right_types() {
    let mut f = fleet(FleetConfig {
        seed: 1,
        ..FleetConfig::default()
    });
    let (topic, payload) = f.next_message_at(1, T0);
    assert_eq!(topic, "ati/sim-02/status");
    let m = json(&payload);
    assert_eq!(m["sherpa_name"], "sim-02");
    assert_eq!(m["mode"], "fleet");
    assert_eq!(m["error"], "");
    assert_eq!(m["disabled"], false);
    assert_eq!(m["disabled_reason"], "");
    assert_eq!(m["pose"].as_array().unwrap().len(), 3);
    let battery = m["battery_status"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&battery));
    assert!(m["trip_id"].is_null() || m["trip_id"].is_u64());
    assert_eq!(m["timestamp"], "2025-01-31T08:15:02.000Z");
    let id = uuid::Uuid::parse_str(m["message_id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 4);
}

#[test]
fn six_value_poses_put_the_heading_last() {
    let mut f = fleet(FleetConfig {
        pose: PoseShape::Six,
        seed: 2,
        ..FleetConfig::default()
    });
    for (_, m) in messages(&mut f, 0, 20) {
        let pose: Vec<f64> = serde_json::from_value(m["pose"].clone()).unwrap();
        assert_eq!(pose.len(), 6);
        assert_eq!(&pose[2..5], &[0.0, 0.0, 0.0]);
        assert!(pose[5].abs() <= std::f64::consts::PI);
    }
}

#[test]
fn same_seed_gives_the_same_messages() {
    let config = FleetConfig {
        path: PathKind::Region,
        error_rate: 0.5,
        seed: 42,
        ..Default::default()
    };
    let mut a = fleet(config.clone());
    let mut b = fleet(config);
    for i in 0..200 {
        assert_eq!(
            a.next_message_at(i % 5, T0 + i as i64),
            b.next_message_at(i % 5, T0 + i as i64)
        );
    }
    let mut c = fleet(FleetConfig {
        seed: 43,
        ..FleetConfig::default()
    });
    let mut d = fleet(FleetConfig {
        seed: 44,
        ..FleetConfig::default()
    });
    assert_ne!(c.next_message_at(0, T0), d.next_message_at(0, T0));
}

#[test]
fn timestamps_increase_strictly_per_robot_even_when_the_clock_does_not() {
    let mut f = fleet(FleetConfig::default());
    let stamps: Vec<String> = (0..5)
        .map(|_| {
            json(&f.next_message_at(0, T0).1)["timestamp"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(stamps[0], "2025-01-31T08:15:02.000Z");
    assert_eq!(stamps[4], "2025-01-31T08:15:02.004Z");
    // Another robot has its own clock.
    assert_eq!(
        json(&f.next_message_at(1, T0).1)["timestamp"],
        "2025-01-31T08:15:02.000Z"
    );
    // Wall-clock messages are increasing too.
    let a = json(&f.next_message(2).1)["timestamp"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = json(&f.next_message(2).1)["timestamp"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(b > a, "{a} then {b}");
}

#[test]
fn robot_names_are_numbered_with_at_least_two_digits() {
    let f = fleet(FleetConfig {
        robots: 3,
        ..FleetConfig::default()
    });
    assert_eq!((f.robot_name(0), f.robot_name(2)), ("sim-01", "sim-03"));
    let f = fleet(FleetConfig {
        robots: 120,
        robot_prefix: "tug-".into(),
        ..Default::default()
    });
    assert_eq!((f.robot_name(0), f.robot_name(119)), ("tug-001", "tug-120"));
    assert_eq!(f.len(), 120);
}

#[test]
fn robots_stay_in_the_region_and_move_at_their_speed() {
    for path in [PathKind::Loop, PathKind::Region] {
        let mut f = fleet(FleetConfig {
            path,
            seed: 9,
            ..FleetConfig::default()
        });
        let poses: Vec<(f64, f64)> = messages(&mut f, 3, 300)
            .iter()
            .map(|(_, m)| {
                (
                    m["pose"][0].as_f64().unwrap(),
                    m["pose"][1].as_f64().unwrap(),
                )
            })
            .collect();
        for w in poses.windows(2) {
            let step = (w[1].0 - w[0].0).hypot(w[1].1 - w[0].1);
            assert!(
                step <= 1.2 + 0.01,
                "{path:?}: step of {step} m in one second"
            );
        }
        assert!(poses
            .iter()
            .all(|p| (0.0..=40.0).contains(&p.0) && (0.0..=25.0).contains(&p.1)));
        let moved = poses.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(moved > 200, "{path:?}: moved in only {moved} of 300 steps");
    }
}

#[test]
fn battery_drains_while_driving_then_charges_at_the_charger() {
    for path in [PathKind::Loop, PathKind::Region] {
        let mut f = fleet(FleetConfig {
            path,
            seed: 5,
            ..FleetConfig::default()
        });
        let all = messages(&mut f, 0, 3000);
        let battery: Vec<f64> = all
            .iter()
            .map(|(_, m)| m["battery_status"].as_f64().unwrap())
            .collect();
        assert!(battery.iter().all(|b| (0.0..=100.0).contains(b)));
        let low = battery
            .iter()
            .position(|&b| b < 25.0)
            .expect("battery runs low");
        let charged = battery[low..]
            .iter()
            .position(|&b| b >= 95.0)
            .expect("battery charges");
        // While charging the robot stands still and has no trip.
        let charging = &all[low + charged - 5];
        assert!(charging.1["trip_id"].is_null(), "{path:?}: {}", charging.1);
        assert_eq!(charging.1["pose"], all[low + charged - 6].1["pose"]);
    }
}

#[test]
fn trips_and_legs_advance_and_are_unique_across_robots() {
    let mut f = fleet(FleetConfig {
        path: PathKind::Region,
        seed: 3,
        ..FleetConfig::default()
    });
    let mut trips: BTreeMap<u64, usize> = BTreeMap::new();
    for idx in 0..5 {
        for (_, m) in messages(&mut f, idx, 400) {
            if let Some(trip) = m["trip_id"].as_u64() {
                let owner = *trips.entry(trip).or_insert(idx);
                assert_eq!(owner, idx, "trip {trip} used by two robots");
            }
        }
    }
    assert!(trips.len() >= 10, "only {} trips", trips.len());
}

#[test]
fn flaky_robots_fail_and_recover() {
    let mut f = fleet(FleetConfig {
        error_rate: 1.0,
        seed: 8,
        ..FleetConfig::default()
    });
    let modes: Vec<(String, Value)> = (0..5)
        .flat_map(|idx| messages(&mut f, idx, 1200))
        .map(|(_, m)| (m["mode"].as_str().unwrap().to_owned(), m))
        .collect();
    let errors: Vec<&Value> = modes
        .iter()
        .filter(|m| m.0 == "error")
        .map(|m| &m.1)
        .collect();
    let disconnected: Vec<&Value> = modes
        .iter()
        .filter(|m| m.0 == "disconnected")
        .map(|m| &m.1)
        .collect();
    assert!(!errors.is_empty() && !disconnected.is_empty());
    assert!(errors
        .iter()
        .all(|m| !m["error"].as_str().unwrap().is_empty()));
    assert!(disconnected
        .iter()
        .all(|m| m["disabled"] == true && m["disabled_reason"] == "stale_heartbeat"));
    let fleet_share = modes.iter().filter(|m| m.0 == "fleet").count() as f64 / modes.len() as f64;
    assert!(fleet_share > 0.7, "mostly fleet, got {fleet_share}");

    let calm = fleet(FleetConfig {
        error_rate: 0.0,
        ..FleetConfig::default()
    });
    let mut calm = calm;
    assert!(messages(&mut calm, 0, 1000)
        .iter()
        .all(|(_, m)| m["mode"] == "fleet"));
}

#[test]
fn unknown_battery_sends_minus_one() {
    let mut f = fleet(FleetConfig {
        unknown_battery: true,
        ..FleetConfig::default()
    });
    assert_eq!(json(&f.next_message_at(0, T0).1)["battery_status"], -1.0);
}

#[test]
fn vda5050_alternates_state_and_visualization_with_v2_fields() {
    let config = FleetConfig {
        format: Format::Vda5050,
        manufacturer: "acme".into(),
        ..Default::default()
    };
    let mut f = fleet(config);
    let all = messages(&mut f, 0, 4);
    assert_eq!(all[0].0, "uagv/v2/acme/sim-01/state");
    assert_eq!(all[1].0, "uagv/v2/acme/sim-01/visualization");
    assert_eq!(all[2].0, "uagv/v2/acme/sim-01/state");

    let state = &all[2].1;
    assert_eq!(state["headerId"], 1);
    assert_eq!(state["manufacturer"], "acme");
    assert_eq!(state["serialNumber"], "sim-01");
    assert_eq!(state["version"], "2.0.0");
    assert_eq!(state["timestamp"], "2025-01-31T08:15:04.000Z");
    assert_eq!(state["agvPosition"]["mapId"], "map-1");
    assert_eq!(state["agvPosition"]["positionInitialized"], true);
    assert!(state["agvPosition"]["theta"].is_f64());
    assert!(state["batteryState"]["batteryCharge"].is_f64());
    assert_eq!(state["batteryState"]["charging"], false);
    assert_eq!(state["driving"], true);
    assert_eq!(state["operatingMode"], "AUTOMATIC");
    assert_eq!(state["errors"], serde_json::json!([]));

    let vis = &all[3].1;
    assert_eq!(vis["headerId"], 1);
    assert!(vis["agvPosition"]["x"].is_f64());
    assert!(vis.get("batteryState").is_none());
}

#[test]
fn vda5050_faults_show_as_errors_or_uninitialized_positions() {
    let config = FleetConfig {
        format: Format::Vda5050,
        error_rate: 1.0,
        seed: 4,
        ..Default::default()
    };
    let mut f = fleet(config);
    let states: Vec<Value> = messages(&mut f, 0, 4000)
        .into_iter()
        .filter(|(topic, _)| topic.ends_with("/state"))
        .map(|(_, m)| m)
        .collect();
    assert!(states
        .iter()
        .any(|s| s["errors"][0]["errorLevel"] == "FATAL"));
    assert!(states
        .iter()
        .any(|s| s["agvPosition"]["positionInitialized"] == false));
}

#[test]
fn args_default_like_the_issue_says() {
    let args = SimulateArgs::try_from_args(["--url", "ws://localhost:9001/mqtt"]).unwrap();
    assert_eq!(args.robots, 5);
    assert_eq!(args.rate, 1.0);
    assert_eq!(args.qos, 1);
    assert_eq!(args.topic_template, "ati/{robot}/status");
    assert_eq!(
        args.region,
        Region {
            x0: 0.0,
            y0: 0.0,
            x1: 40.0,
            y1: 25.0
        }
    );
    assert_eq!(
        (args.path, args.pose, args.format),
        (PathKind::Loop, PoseShape::Three, Format::Ati)
    );
    assert_eq!(args.count, None);
    assert_eq!(args.drain_timeout, Duration::from_secs(10));

    let args = SimulateArgs::try_from_args([
        "--url",
        "mqtt://h",
        "--pose",
        "6",
        "--format",
        "vda5050",
        "--path",
        "region",
        "--qos",
        "0",
        "--duration",
        "1.5",
        "--region",
        "-10,-5,10,5",
    ])
    .unwrap();
    assert_eq!(
        (args.pose, args.format, args.path, args.qos),
        (PoseShape::Six, Format::Vda5050, PathKind::Region, 0)
    );
    assert_eq!(args.duration, Some(Duration::from_millis(1500)));

    for bad in [
        &["--url", "mqtt://h", "--qos", "2"][..],
        &["--url", "mqtt://h", "--pose", "4"],
        &["--url", "mqtt://h", "--rate", "0"],
        &["--url", "mqtt://h", "--count", "0"],
        &["--url", "mqtt://h", "--error-rate", "1.5"],
        &["--url", "mqtt://h", "--region", "0,0,40"],
    ] {
        assert!(SimulateArgs::try_from_args(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn the_password_never_prints() {
    let args = SimulateArgs::try_from_args([
        "--url",
        "mqtt://h",
        "--username",
        "u",
        "--password",
        "hunter2",
    ])
    .unwrap();
    assert!(!format!("{args:?}").contains("hunter2"));
    assert_eq!(args.credentials().unwrap(), Some(("u", "hunter2")));
}

#[test]
fn report_prints_one_line() {
    let mut per_robot = BTreeMap::new();
    per_robot.insert("sim-01".to_owned(), 50);
    per_robot.insert("sim-02".to_owned(), 50);
    let mut report = SimReport {
        sent: 100,
        failed: 0,
        per_robot,
        elapsed: Duration::from_secs(2),
    };
    assert_eq!(
        report.to_string(),
        "sent 100 messages, 0 failed, from 2 robots in 2.00 s (50.0 msg/s, 50 per robot)"
    );
    report.per_robot.insert("sim-03".to_owned(), 49);
    assert!(report.to_string().ends_with("49 to 50 per robot)"));
}

#[tokio::test]
async fn bad_input_fails_before_connecting() {
    let run_with = |extra: &[&str]| {
        let mut argv = vec!["--url", "mqtt://127.0.0.1:1"];
        argv.extend_from_slice(extra);
        let args = SimulateArgs::try_from_args(argv).unwrap();
        run(args, CancellationToken::new())
    };
    let err = run_with(&["--password", "p"]).await.unwrap_err();
    assert_eq!(err.to_string(), "--password needs --username");
    let err = run_with(&["--topic-template", "ati/+/status"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("without wildcards"), "{err}");
}

#[tokio::test]
async fn an_unreachable_broker_fails_after_the_connect_timeout() {
    let args = SimulateArgs::try_from_args([
        "--url",
        "mqtt://127.0.0.1:1",
        "--connect-timeout",
        "0.5",
        "--count",
        "1",
    ])
    .unwrap();
    let err = run(args, CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("could not connect to the broker within 0.5 s"),
        "{err}"
    );
    assert!(err.contains("refused"), "{err}");
}

#[tokio::test]
async fn shutdown_before_connecting_reports_nothing_sent() {
    let args = SimulateArgs::try_from_args(["--url", "mqtt://127.0.0.1:1"]).unwrap();
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    let report = run(args, shutdown).await.unwrap();
    assert_eq!((report.sent, report.failed), (0, 0));
    assert_eq!(report.per_robot.len(), 5);
}
