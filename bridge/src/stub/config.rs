//! Configuration of the Twinzo stand-in: the `stub` command's flags, its optional TOML file,
//! and the [`StubConfig`] they merge into.
//!
//! Flags override the file; `--device` and `--device-glob` add to the file's lists. The file
//! takes the same fields as the flags, plus per-device passwords and sectors:
//!
//! ```toml
//! listen = "127.0.0.1:8090"
//! client = "demo"
//! api_key = "local-key"
//! device_password = "secret"
//! device_globs = ["sim-*"]
//! token_ttl_secs = 86400
//! latency_ms = 0
//! devices = ["tugger-01", { login = "tugger-02", password = "other", sector_id = 2 }]
//!
//! [[sectors]]
//! id = 1
//! title = "Hall A"
//! width_mm = 100000
//! height_mm = 60000
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use uuid::Uuid;

/// Address the stand-in listens on when neither a flag nor the file names one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8090";
/// Client GUID returned by authenticate unless configured.
pub const DEFAULT_CLIENT_GUID: Uuid = Uuid::from_u128(0x3f2b_7a10_5c4e_4d1a_9b8e_0c6f_2a7d_1e01);
/// Branch GUID returned by authenticate unless configured.
pub const DEFAULT_BRANCH_GUID: Uuid = Uuid::from_u128(0x8c1d_4e22_7f3a_4b5c_a6d7_1e8f_9a0b_2c02);

/// Flags of `twinzo-bridge stub`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StubArgs {
    /// Address to listen on [default: 127.0.0.1:8090]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// TOML file with the same fields as these flags (flags win)
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Client name accepted by authenticate [default: demo]
    #[arg(long, value_name = "NAME")]
    pub client: Option<String>,

    /// Client GUID returned by authenticate and expected in the `Client` header
    #[arg(long, value_name = "GUID")]
    pub client_guid: Option<Uuid>,

    /// Branch GUID returned by authenticate and expected in the `Branch` header
    #[arg(long, value_name = "GUID")]
    pub branch_guid: Option<Uuid>,

    /// API key for `/v3/localization/batch`; without one, API-key requests get 401
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,

    /// A device login that exists (repeatable)
    #[arg(long = "device", value_name = "LOGIN")]
    pub devices: Vec<String>,

    /// Logins matching this pattern exist: `sim-*`, `*-01`, `*` (repeatable)
    #[arg(long = "device-glob", value_name = "PATTERN")]
    pub device_globs: Vec<String>,

    /// Password of every device without its own (needed for device mode)
    #[arg(long, value_name = "PASSWORD")]
    pub device_password: Option<String>,

    /// Lifetime of issued tokens in seconds [default: 86400]
    #[arg(long, value_name = "SECS")]
    pub token_ttl: Option<u64>,

    /// Delay added to every Twinzo response, in milliseconds [default: 0]
    #[arg(long, value_name = "MS")]
    pub latency_ms: Option<u64>,
}

/// Everything the stand-in needs to serve; built from [`StubArgs`] or directly in tests.
#[derive(Debug, Clone)]
pub struct StubConfig {
    /// Client name that authenticate accepts (compared without case).
    pub client: String,
    pub client_guid: Uuid,
    pub branch_guid: Uuid,
    /// `None` refuses every API-key request with 401.
    pub api_key: Option<String>,
    /// Password of the devices that have none of their own.
    pub device_password: Option<String>,
    pub devices: Vec<StubDevice>,
    /// Patterns with a leading and/or trailing `*`; a matching login exists.
    pub device_globs: Vec<String>,
    pub sectors: Vec<StubSector>,
    pub token_ttl: Duration,
    pub latency: Duration,
    /// The oldest accepted locations are forgotten past this many.
    pub max_accepted: usize,
    /// How many localization request bodies `/_stub/requests` keeps.
    pub max_recorded_requests: usize,
}

/// A device known by its exact login.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StubDevice {
    pub login: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub sector_id: Option<i32>,
    #[serde(default)]
    pub title: Option<String>,
}

/// A sector served by `GET /v3/sectors`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StubSector {
    pub id: i32,
    pub title: String,
    pub width_mm: f32,
    pub height_mm: f32,
}

impl StubDevice {
    pub fn new(login: impl Into<String>) -> Self {
        Self {
            login: login.into(),
            password: None,
            sector_id: None,
            title: None,
        }
    }
}

/// Test-friendly defaults: client `demo`, API key `stub-api-key`, password `stub-password`,
/// devices `tugger-01` and `tugger-02`, any `sim-*` login, one sector of 100 m x 60 m.
impl Default for StubConfig {
    fn default() -> Self {
        Self {
            client: "demo".to_owned(),
            client_guid: DEFAULT_CLIENT_GUID,
            branch_guid: DEFAULT_BRANCH_GUID,
            api_key: Some("stub-api-key".to_owned()),
            device_password: Some("stub-password".to_owned()),
            devices: vec![StubDevice::new("tugger-01"), StubDevice::new("tugger-02")],
            device_globs: vec!["sim-*".to_owned()],
            sectors: vec![default_sector()],
            token_ttl: Duration::from_secs(86_400),
            latency: Duration::ZERO,
            max_accepted: 1_000_000,
            max_recorded_requests: 1_000,
        }
    }
}

fn default_sector() -> StubSector {
    StubSector {
        id: 1,
        title: "Hall A".to_owned(),
        width_mm: 100_000.0,
        height_mm: 60_000.0,
    }
}

/// A stand-in configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StubConfigError {
    #[error("cannot read stub config {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid stub config {path}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// The TOML file: every field optional, unknown keys refused so typos are not silent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StubFile {
    listen: Option<SocketAddr>,
    client: Option<String>,
    client_guid: Option<String>,
    branch_guid: Option<String>,
    api_key: Option<String>,
    device_password: Option<String>,
    #[serde(default)]
    devices: Vec<FileDevice>,
    #[serde(default)]
    device_globs: Vec<String>,
    #[serde(default)]
    sectors: Vec<StubSector>,
    token_ttl_secs: Option<u64>,
    latency_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FileDevice {
    Login(String),
    Full(StubDevice),
}

impl StubConfig {
    /// Merges the file named by `--config` (if any) with the flags; returns the config and
    /// the address to listen on.
    pub fn from_args(args: &StubArgs) -> Result<(Self, SocketAddr), StubConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => StubFile::default(),
        };
        let defaults = Self::default();

        let mut devices: Vec<StubDevice> = file
            .devices
            .into_iter()
            .map(|d| match d {
                FileDevice::Login(login) => StubDevice::new(login),
                FileDevice::Full(device) => device,
            })
            .collect();
        devices.extend(args.devices.iter().map(StubDevice::new));
        let mut device_globs = file.device_globs;
        device_globs.extend(args.device_globs.iter().cloned());
        let sectors = if file.sectors.is_empty() {
            vec![default_sector()]
        } else {
            file.sectors
        };

        let listen = match args.listen.or(file.listen) {
            Some(addr) => addr,
            None => DEFAULT_LISTEN
                .parse()
                .expect("default listen address parses"),
        };
        let config = Self {
            client: args
                .client
                .clone()
                .or(file.client)
                .unwrap_or(defaults.client),
            client_guid: match args.client_guid {
                Some(guid) => guid,
                None => parse_guid("client_guid", file.client_guid)?.unwrap_or(DEFAULT_CLIENT_GUID),
            },
            branch_guid: match args.branch_guid {
                Some(guid) => guid,
                None => parse_guid("branch_guid", file.branch_guid)?.unwrap_or(DEFAULT_BRANCH_GUID),
            },
            api_key: args.api_key.clone().or(file.api_key),
            device_password: args.device_password.clone().or(file.device_password),
            devices,
            device_globs,
            sectors,
            token_ttl: Duration::from_secs(
                args.token_ttl.or(file.token_ttl_secs).unwrap_or(86_400),
            ),
            latency: Duration::from_millis(args.latency_ms.or(file.latency_ms).unwrap_or(0)),
            ..defaults
        };
        config.validate()?;
        Ok((config, listen))
    }

    /// Checks what serde cannot: non-empty names, supported patterns, a usable TTL.
    pub fn validate(&self) -> Result<(), StubConfigError> {
        let invalid = |key, reason: &str| StubConfigError::Invalid {
            key,
            reason: reason.to_owned(),
        };
        if self.client.trim().is_empty() {
            return Err(invalid("client", "must not be empty"));
        }
        if self.devices.iter().any(|d| d.login.trim().is_empty()) {
            return Err(invalid("devices", "a device login must not be empty"));
        }
        if let Some(glob) = self.device_globs.iter().find(|g| !glob_is_supported(g)) {
            return Err(StubConfigError::Invalid {
                key: "device_globs",
                reason: format!("{glob:?}: only a leading and/or trailing * is supported"),
            });
        }
        if self.token_ttl.is_zero() {
            return Err(invalid("token_ttl", "must be at least one second"));
        }
        if self.api_key.as_deref().is_some_and(str::is_empty) {
            return Err(invalid("api_key", "must not be empty when set"));
        }
        Ok(())
    }
}

fn read_file(path: &Path) -> Result<StubFile, StubConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| StubConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| StubConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

fn parse_guid(key: &'static str, value: Option<String>) -> Result<Option<Uuid>, StubConfigError> {
    value
        .map(|v| Uuid::parse_str(&v))
        .transpose()
        .map_err(|err| StubConfigError::Invalid {
            key,
            reason: format!("not a GUID: {err}"),
        })
}

fn glob_is_supported(glob: &str) -> bool {
    let inner = glob.strip_prefix('*').unwrap_or(glob);
    let inner = inner.strip_suffix('*').unwrap_or(inner);
    !glob.is_empty() && !inner.contains('*')
}

/// Whether `login` matches a pattern with an optional leading and trailing `*`.
pub(crate) fn glob_matches(glob: &str, login: &str) -> bool {
    match (glob.strip_prefix('*'), glob.strip_suffix('*')) {
        _ if glob == "*" => true,
        (Some(rest), _) if rest.ends_with('*') => login.contains(&rest[..rest.len() - 1]),
        (Some(suffix), _) => login.ends_with(suffix),
        (None, Some(prefix)) => login.starts_with(prefix),
        (None, None) => login == glob,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_prefix_suffix_and_infix() {
        let cases = [
            ("sim-*", "sim-7", true),
            ("sim-*", "tugger-1", false),
            ("*-01", "tugger-01", true),
            ("*-01", "tugger-02", false),
            ("*ug*", "tugger-01", true),
            ("*", "anything", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ];
        for (glob, login, expected) in cases {
            assert_eq!(glob_matches(glob, login), expected, "{glob} vs {login}");
        }
    }

    #[test]
    fn globs_with_an_inner_star_are_refused() {
        assert!(!glob_is_supported("a*b"));
        assert!(!glob_is_supported(""));
        assert!(glob_is_supported("*mid*"));
    }

    #[test]
    fn flags_override_the_file_and_add_devices() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stub.toml");
        std::fs::write(
            &path,
            r#"
listen = "127.0.0.1:9999"
client = "acme"
api_key = "from-file"
devices = ["a", { login = "b", password = "pw-b", sector_id = 3 }]
token_ttl_secs = 60
"#,
        )
        .unwrap();
        let args = StubArgs {
            config: Some(path),
            api_key: Some("from-flag".to_owned()),
            devices: vec!["c".to_owned()],
            ..StubArgs::default()
        };

        let (config, listen) = StubConfig::from_args(&args).unwrap();

        assert_eq!(listen, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(config.client, "acme");
        assert_eq!(config.api_key.as_deref(), Some("from-flag"));
        let logins: Vec<_> = config.devices.iter().map(|d| d.login.as_str()).collect();
        assert_eq!(logins, ["a", "b", "c"]);
        assert_eq!(config.devices[1].password.as_deref(), Some("pw-b"));
        assert_eq!(config.token_ttl, Duration::from_secs(60));
        assert!(config.device_password.is_none());
    }

    #[test]
    fn cli_without_file_has_no_api_key_and_default_listen() {
        let (config, listen) = StubConfig::from_args(&StubArgs::default()).unwrap();

        assert_eq!(listen, DEFAULT_LISTEN.parse().unwrap());
        assert!(config.api_key.is_none());
        assert!(config.devices.is_empty());
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stub.toml");
        std::fs::write(&path, "api_keys = \"typo\"\n").unwrap();
        let args = StubArgs {
            config: Some(path),
            ..StubArgs::default()
        };

        let err = StubConfig::from_args(&args).unwrap_err();

        assert!(matches!(err, StubConfigError::Parse { .. }), "{err:?}");
    }
}
