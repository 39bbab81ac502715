use std::path::Path;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn minimal() -> Vec<(&'static str, &'static str)> {
    vec![
        ("BRIDGE_MQTT__USERNAME", "bridge"),
        ("BRIDGE_MQTT__PASSWORD", "a-long-bridge-password"),
        ("BRIDGE_TWINZO__CLIENT", "acme"),
        ("BRIDGE_TWINZO__DEVICE_PASSWORD", "device-password-1234"),
        ("BRIDGE_TWINZO__SECTOR_ID", "3"),
    ]
}

fn problems(pairs: &[(&str, &str)], file: Option<&str>) -> Vec<Problem> {
    let dir = tempfile::tempdir().unwrap();
    let path = file.map(|text| {
        let p = dir.path().join("bridge.toml");
        std::fs::write(&p, text).unwrap();
        p
    });
    match Config::load_from(path.as_deref(), env(pairs)) {
        Ok(_) => Vec::new(),
        Err(ConfigError(p)) => p,
    }
}

#[test]
fn environment_overrides_nest_with_double_underscore() {
    let mut pairs = minimal();
    pairs.push(("BRIDGE_MQTT__URL", "wss://broker.example.com/mqtt"));
    pairs.push(("BRIDGE_HTTP__LISTEN", "127.0.0.1:9999"));
    pairs.push(("BRIDGE_ATI__TIMESTAMP", "received"));
    pairs.push(("BRIDGE_LOG__FORMAT", "json"));
    let c = Config::load_from(None, env(&pairs)).unwrap();
    assert_eq!(c.mqtt.url, "wss://broker.example.com/mqtt");
    assert_eq!(c.http.listen, "127.0.0.1:9999");
    assert_eq!(c.ati.timestamp, TimestampSource::Received);
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.twinzo.sector_id, Some(3));
}

#[test]
fn numeric_secrets_stay_strings() {
    let mut pairs = minimal();
    pairs.push(("BRIDGE_TWINZO__DEVICE_PASSWORD", "12345678901234567890"));
    pairs.retain(|(k, v)| *k != "BRIDGE_TWINZO__DEVICE_PASSWORD" || v.starts_with('1'));
    let c = Config::load_from(None, env(&pairs)).unwrap();
    assert_eq!(c.twinzo.device_password.expose(), "12345678901234567890");
}

#[test]
fn railway_port_sets_the_listen_address_unless_given() {
    let mut pairs = minimal();
    pairs.push(("PORT", "7000"));
    assert_eq!(
        Config::load_from(None, env(&pairs)).unwrap().http.listen,
        "0.0.0.0:7000"
    );
    pairs.push(("BRIDGE_HTTP__LISTEN", "127.0.0.1:1"));
    assert_eq!(
        Config::load_from(None, env(&pairs)).unwrap().http.listen,
        "127.0.0.1:1"
    );
}

#[test]
fn every_problem_names_its_key_and_origin() {
    let p = problems(&[("BRIDGE_MQTT__URL", "http://broker:9001")], None);
    let keys: Vec<(&str, &str)> = p
        .iter()
        .map(|p| (p.key.as_str(), p.origin.as_str()))
        .collect();
    assert!(keys.contains(&("mqtt.url", "BRIDGE_MQTT__URL")), "{keys:?}");
    assert!(keys.contains(&("mqtt.password", "default")), "{keys:?}");
    assert!(keys.contains(&("twinzo.client", "default")), "{keys:?}");
    assert!(keys.contains(&("twinzo.sector_id", "default")), "{keys:?}");
    let url = p.iter().find(|p| p.key == "mqtt.url").unwrap();
    assert!(
        url.to_string()
            .starts_with("config error: mqtt.url (BRIDGE_MQTT__URL): unsupported scheme"),
        "{url}"
    );
}

#[test]
fn file_values_name_the_file() {
    let mut pairs = minimal();
    pairs.retain(|(k, _)| *k != "BRIDGE_TWINZO__SECTOR_ID");
    let p = problems(
        &pairs,
        Some("[mqtt]\nurl = \"ftp://x\"\n[twinzo]\nsector_id = 2\n"),
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "mqtt.url");
    assert!(p[0].origin.ends_with("bridge.toml"), "{}", p[0].origin);
}

#[test]
fn type_errors_and_unknown_keys_are_reported() {
    let p = problems(&minimal(), Some("[batch]\nmax_size = \"many\"\n"));
    assert_eq!(p[0].key, "batch.max_size", "{p:?}");
    let p = problems(&minimal(), Some("[mqtt]\nurll = \"ws://x\"\n"));
    assert!(p[0].message.contains("urll"), "{p:?}");
    let p = problems(&[("BRIDGE_TWINZO__AUTH", "magic")], None);
    assert!(
        p.iter()
            .any(|p| p.key == "twinzo.auth" && p.origin == "BRIDGE_TWINZO__AUTH"),
        "{p:?}"
    );
}

#[test]
fn unknown_route_format_is_refused() {
    let p = problems(
        &minimal(),
        Some("[[routes]]\nfilter = \"x/#\"\nformat = \"csv\"\n"),
    );
    assert!(p[0].key.starts_with("routes"), "{p:?}");
    assert!(p[0].message.contains("csv"), "{p:?}");
}

#[test]
fn a_shared_group_needs_a_client_id_of_its_own() {
    let mut pairs = minimal();
    pairs.push(("BRIDGE_MQTT__SHARED_GROUP", "bridges"));
    let p = problems(&pairs, None);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "mqtt.client_id");
    assert!(p[0].message.contains("own client id"), "{p:?}");
    pairs.push(("BRIDGE_MQTT__CLIENT_ID", "bridge-a"));
    assert_eq!(problems(&pairs, None), Vec::new());
}

#[test]
fn api_key_mode_needs_key_and_guids() {
    let p = problems(
        &[
            ("BRIDGE_TWINZO__AUTH", "api_key"),
            ("BRIDGE_TWINZO__CLIENT_GUID", "nope"),
        ],
        None,
    );
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    for k in ["twinzo.api_key", "twinzo.client_guid", "twinzo.branch_guid"] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    assert!(
        !keys.contains(&"twinzo.client"),
        "device-mode key asked in api_key mode"
    );
}

#[test]
fn tls_scheme_with_missing_ca_file_is_refused() {
    let mut pairs = minimal();
    pairs.push(("BRIDGE_MQTT__URL", "wss://broker/mqtt"));
    pairs.push(("BRIDGE_MQTT__CA_FILE", "/nonexistent/ca.pem"));
    let p = problems(&pairs, None);
    assert_eq!(p[0].key, "mqtt.ca_file", "{p:?}");
}

#[test]
fn missing_config_file_is_one_clear_problem() {
    let p = Config::load_from(Some(Path::new("/nonexistent/bridge.toml")), env(&minimal()))
        .unwrap_err();
    assert_eq!(p.0.len(), 1);
    assert!(p.to_string().contains("no such file"));
}

#[test]
fn masked_output_hides_every_secret() {
    let mut pairs = minimal();
    pairs.push(("BRIDGE_TWINZO__API_KEY", "key-that-is-secret"));
    pairs.push(("BRIDGE_HTTP__AUTH_TOKEN", "token-that-is-secret"));
    let c = Config::load_from(None, env(&pairs)).unwrap();
    let text = c.to_masked_toml();
    for secret in c.secrets() {
        assert!(!text.contains(secret), "{secret} leaked");
        assert!(
            !format!("{c:?}").contains(secret),
            "{secret} leaked in Debug"
        );
    }
    assert!(text.contains("password = \"****\""));
}

#[test]
fn example_config_is_valid_and_documents_every_section() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let c = Config::load_from(Some(&path), Vec::new()).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    for section in [
        "[mqtt]",
        "[ati]",
        "[twinzo]",
        "[[devices]]",
        "[[sectors]]",
        "[[routes]]",
        "[batch]",
        "[retry]",
        "[outbox]",
        "[http]",
        "[log]",
        "[shutdown]",
    ] {
        assert!(text.contains(section), "{section} not documented");
    }
    assert!(!c.forward_routes().is_empty());
}
