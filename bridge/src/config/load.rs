//! Loading and validating the configuration: the figment layers (defaults, the file, Railway's
//! `PORT`, the `BRIDGE_` variables), every semantic check, and where each value came from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use figment::providers::{Format as _, Serialized, Toml};
use figment::Figment;

use super::*;
use crate::mqtt::BrokerUrl;

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    /// Where the value came from (`BRIDGE_MQTT__URL`, `config.toml`, `default`).
    pub origin: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "config error: {} ({}): {}",
            self.key, self.origin, self.message
        )
    }
}

/// Everything wrong with a configuration; `Display` gives one line per problem.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError(pub Vec<Problem>);

impl Config {
    /// Loads the file (when given) and the environment, then validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(path, std::env::vars())
    }

    /// Like [`Config::load`] with an explicit environment, for tests.
    pub fn load_from(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let env: BTreeMap<String, String> = env.into_iter().collect();
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = path {
            if !path.is_file() {
                return Err(ConfigError(vec![Problem {
                    key: "--config".into(),
                    origin: "command line".into(),
                    message: format!("no such file: {}", path.display()),
                }]));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // Railway gives the HTTP port as PORT; an explicit BRIDGE_HTTP__LISTEN wins.
        if let Some(port) = env.get("PORT") {
            figment = figment.merge(Serialized::default(
                "http.listen",
                format!("0.0.0.0:{port}"),
            ));
        }
        let vars: Vec<(String, String)> = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        figment = figment.merge(bridge_env(vars));

        let config: Config = figment
            .extract()
            .map_err(|e| figment_problems(&figment, e))?;
        let problems = config.problems(&|key| origin_of(&figment, key));
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError(problems))
        }
    }

    /// Every semantic problem, each with the origin of its key.
    fn problems(&self, origin: &dyn Fn(&str) -> String) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |key: &str, message: String| {
            out.push(Problem {
                key: key.into(),
                origin: origin(key),
                message,
            });
        };

        match BrokerUrl::parse(&self.mqtt.url) {
            Ok(url) if url.is_tls() && self.mqtt.ca_file.as_ref().is_some_and(|p| !p.is_file()) => {
                bad("mqtt.ca_file", "no such file".into());
            }
            Ok(url) if self.mqtt.tls.is_some_and(|tls| tls != url.is_tls()) => {
                let want = if url.is_tls() {
                    "needs TLS: use ws:// or mqtt://"
                } else {
                    "is clear text"
                };
                bad(
                    "mqtt.tls",
                    format!("{} {want}, or drop mqtt.tls", url.display()),
                );
            }
            Ok(_) => {}
            Err(e) => bad("mqtt.url", e),
        }
        if self.mqtt.username.is_empty() {
            bad(
                "mqtt.username",
                "required (the broker has no anonymous access)".into(),
            );
        }
        if self.mqtt.password.is_empty() {
            bad("mqtt.password", "required".into());
        }
        if self.mqtt.client_id.is_empty() || self.mqtt.client_id.len() > 128 {
            bad("mqtt.client_id", "must be 1 to 128 characters".into());
        }
        if self.mqtt.max_packet_bytes < 1024 {
            bad("mqtt.max_packet_bytes", "must be at least 1024".into());
        }
        if self.mqtt.shared_group.contains(['/', '+', '#']) {
            bad(
                "mqtt.shared_group",
                "must not contain '/', '+' or '#'".into(),
            );
        }
        // Members with one client id would take the session from each other in turn.
        if !self.mqtt.shared_group.is_empty()
            && self.mqtt.client_id == MqttConfig::default().client_id
        {
            bad(
                "mqtt.client_id",
                "give each member of a shared group its own client id".into(),
            );
        }
        if !self.mqtt.default_routes && self.routes.is_empty() {
            bad(
                "routes",
                "no topic is forwarded: enable mqtt.default_routes or add routes".into(),
            );
        }
        for (i, route) in self.routes.iter().enumerate() {
            if let Err(e) = crate::route::validate_filter(&route.filter) {
                bad(&format!("routes[{i}].filter"), e);
            }
            match (&route.format, &route.fields) {
                (Format::Fields, None) => {
                    bad(
                        &format!("routes[{i}].fields"),
                        "required for format \"fields\"".into(),
                    );
                }
                (Format::Fields, Some(map)) => {
                    for (name, ptr) in map.pointers() {
                        if !(ptr.is_empty() || ptr.starts_with('/')) {
                            bad(
                                &format!("routes[{i}].fields.{name}"),
                                "not a JSON pointer".into(),
                            );
                        }
                    }
                    if map.device.is_none() && route.device_from_topic.is_none() {
                        bad(
                            &format!("routes[{i}].fields.device"),
                            "required unless device_from_topic is set".into(),
                        );
                    }
                }
                _ => {}
            }
        }

        match url::Url::parse(&self.twinzo.base_url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(_) => bad(
                "twinzo.base_url",
                "must be an http:// or https:// URL".into(),
            ),
            Err(e) => bad("twinzo.base_url", format!("not a URL: {e}")),
        }
        match self.twinzo.auth {
            AuthMode::Device => {
                if self.twinzo.client.is_empty() {
                    bad("twinzo.client", "required in device mode".into());
                }
                let every_device_has_one = self.devices.iter().all(|d| d.password.is_some());
                if self.twinzo.device_password.is_empty()
                    && (self.devices.is_empty()
                        || !every_device_has_one
                        || self.twinzo.unknown_devices == UnknownDevices::Forward)
                {
                    bad("twinzo.device_password", "required in device mode".into());
                }
            }
            AuthMode::ApiKey => {
                if self.twinzo.api_key.is_empty() {
                    bad("twinzo.api_key", "required in api_key mode".into());
                }
                for key in ["client_guid", "branch_guid"] {
                    let v = if key == "client_guid" {
                        &self.twinzo.client_guid
                    } else {
                        &self.twinzo.branch_guid
                    };
                    if uuid::Uuid::parse_str(v).is_err() {
                        bad(
                            &format!("twinzo.{key}"),
                            "required in api_key mode, a GUID".into(),
                        );
                    }
                }
            }
        }
        let sector_ids: Vec<i32> = self.sectors.iter().map(|s| s.id).collect();
        if self.twinzo.sector_id.is_none()
            && (self.devices.iter().any(|d| d.sector_id.is_none())
                || self.twinzo.unknown_devices == UnknownDevices::Forward)
        {
            bad(
                "twinzo.sector_id",
                "required unless every device has its own sector".into(),
            );
        }
        if self.twinzo.request_timeout_secs == 0 {
            bad("twinzo.request_timeout_secs", "must be at least 1".into());
        }
        if self.twinzo.max_concurrent_requests == 0 {
            bad(
                "twinzo.max_concurrent_requests",
                "must be at least 1".into(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (i, d) in self.devices.iter().enumerate() {
            if d.id.is_empty() {
                bad(&format!("devices[{i}].id"), "must not be empty".into());
            }
            if !seen.insert(d.id.as_str()) {
                bad(
                    &format!("devices[{i}].id"),
                    format!("duplicate device {:?}", d.id),
                );
            }
        }
        for (i, s) in self.sectors.iter().enumerate() {
            if sector_ids.iter().filter(|&&id| id == s.id).count() > 1 {
                bad(
                    &format!("sectors[{i}].id"),
                    format!("duplicate sector {}", s.id),
                );
            }
            let t = s.affine();
            if [t.a, t.b, t.c, t.d, t.tx, t.ty]
                .iter()
                .any(|v| !v.is_finite())
                || (t.a * t.d - t.b * t.c).abs() < 1e-9
            {
                bad(
                    &format!("sectors[{i}].transform"),
                    "must be finite and invertible".into(),
                );
            }
        }

        if self.batch.max_size == 0 || self.batch.max_size > 1000 {
            bad("batch.max_size", "must be 1 to 1000".into());
        }
        if !(self.batch.moving_threshold_m.is_finite() && self.batch.moving_threshold_m >= 0.0) {
            bad(
                "batch.moving_threshold_m",
                "must be a non-negative number".into(),
            );
        }
        if self.retry.min_delay_ms == 0 || self.retry.max_delay_ms < self.retry.min_delay_ms {
            bad(
                "retry.max_delay_ms",
                "need 0 < min_delay_ms <= max_delay_ms".into(),
            );
        }
        if !(self.retry.factor >= 1.0 && self.retry.factor.is_finite()) {
            bad("retry.factor", "must be at least 1".into());
        }
        if self.outbox.max_records == 0 {
            bad("outbox.max_records", "must be at least 1".into());
        }
        if self.outbox.path.as_os_str().is_empty() {
            bad("outbox.path", "must not be empty".into());
        }
        if self.http.listen.parse::<SocketAddr>().is_err() {
            bad("http.listen", "must be IP:PORT, e.g. 0.0.0.0:8080".into());
        }
        out
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// The routes forwarded to Twinzo: the ATI defaults (when enabled) then the configured ones.
    pub fn forward_routes(&self) -> Vec<RouteConfig> {
        let mut routes = Vec::new();
        if self.mqtt.default_routes {
            for filter in ["ati/+/status", "ati_fm/sherpa/status"] {
                routes.push(RouteConfig {
                    filter: filter.into(),
                    format: Format::Ati,
                    device_from_topic: None,
                    fields: None,
                });
            }
        }
        routes.extend(self.routes.iter().cloned());
        routes
    }

    /// Every secret value, for tests and log scrubbing.
    pub fn secrets(&self) -> Vec<&str> {
        let mut all = vec![
            self.mqtt.password.expose(),
            self.twinzo.device_password.expose(),
            self.twinzo.api_key.expose(),
            self.http.auth_token.expose(),
        ];
        all.extend(
            self.devices
                .iter()
                .filter_map(|d| d.password.as_ref().map(Secret::expose)),
        );
        all.retain(|s| !s.is_empty());
        all
    }
}

impl FieldMap {
    fn pointers(&self) -> Vec<(&'static str, &str)> {
        let mut all = vec![("x", self.x.as_str()), ("y", self.y.as_str())];
        let optional = [
            ("device", &self.device),
            ("z", &self.z),
            ("heading", &self.heading),
            ("battery", &self.battery),
            ("moving", &self.moving),
            ("timestamp", &self.timestamp),
            ("message_id", &self.message_id),
            ("mode", &self.mode),
            ("error", &self.error),
        ];
        all.extend(
            optional
                .iter()
                .filter_map(|(n, p)| p.as_deref().map(|p| (*n, p))),
        );
        all
    }
}

/// The `BRIDGE_` environment provider, fed from a snapshot so tests need not touch the process
/// environment.
fn bridge_env(vars: Vec<(String, String)>) -> EnvSnapshot {
    EnvSnapshot(vars)
}

struct EnvSnapshot(Vec<(String, String)>);

impl figment::Provider for EnvSnapshot {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("environment variable")
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        use figment::value::{Dict, Value};
        let mut root = Dict::new();
        for (name, value) in &self.0 {
            let Some(rest) = name.strip_prefix("BRIDGE_") else {
                continue;
            };
            if rest.is_empty() || rest == "CONFIG" {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
            let parsed: Value = value.parse().unwrap_or_else(|_| Value::from(value.clone()));
            insert_path(&mut root, &path, parsed);
        }
        Ok(figment::Profile::Default.collect(root))
    }
}

fn insert_path(dict: &mut figment::value::Dict, path: &[String], value: figment::value::Value) {
    use figment::value::{Dict, Value};
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [head, rest @ ..] => {
            let entry = dict
                .entry(head.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// Names the source of a key: the env variable, the file, or the built-in default.
fn origin_of(figment: &Figment, key: &str) -> String {
    let lookup = key.split('[').next().unwrap_or(key);
    describe_origin(figment.find_metadata(lookup), key)
}

fn describe_origin(meta: Option<&figment::Metadata>, key: &str) -> String {
    match meta {
        Some(meta) if meta.name.contains("environment") => env_name(key),
        Some(meta) => match &meta.source {
            Some(figment::Source::File(path)) => path.display().to_string(),
            Some(figment::Source::Custom(name)) => name.clone(),
            _ => "default".into(),
        },
        None => "default".into(),
    }
}

fn env_name(key: &str) -> String {
    let key = key.split('[').next().unwrap_or(key);
    format!("BRIDGE_{}", key.to_uppercase().replace('.', "__"))
}

fn figment_problems(figment: &Figment, err: figment::Error) -> ConfigError {
    let problems = err
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                "(root)".to_string()
            } else {
                e.path.join(".")
            };
            let origin = match &e.metadata {
                Some(meta) => describe_origin(Some(meta), &key),
                None => origin_of(figment, &key),
            };
            Problem {
                key,
                origin,
                message: e.kind.to_string(),
            }
        })
        .collect();
    ConfigError(problems)
}
