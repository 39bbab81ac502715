//! What the stand-in knows and remembers, with no I/O: the devices, issued tokens, accepted
//! locations (duplicates flagged), counters and the last localization request bodies.
//!
//! A duplicate is a location whose login and `Timestamp` were already stored; it is answered
//! with `Action: "Update"` and recorded again with `duplicate: true`. Past
//! `max_accepted` entries the oldest accepted locations are forgotten (duplicate detection
//! still remembers them); counters are never trimmed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde_json::{json, Value};

use super::config::{glob_matches, StubConfig, StubDevice};
use super::contract::{Credentials, Location};
use super::records::{AcceptedLocation, RecordedRequest, StubStats};
use super::responses::{AuthOutcome, DeviceOutcome, LocationOutcome};

struct Token {
    login: String,
    expires_at_ms: i64,
}

/// A device that exists; its config entry (password, sector) if it has one rather than
/// existing by a pattern only.
pub(crate) struct KnownDevice<'a> {
    pub entry: Option<&'a StubDevice>,
}

const TOKEN_PURGE_THRESHOLD: usize = 10_000;

pub(crate) struct StubState {
    config: StubConfig,
    token_ttl: Duration,
    removed: HashSet<String>,
    added: Vec<StubDevice>,
    tokens: HashMap<String, Token>,
    accepted: VecDeque<AcceptedLocation>,
    seen: HashMap<String, HashSet<i64>>,
    last_seen: HashMap<String, AcceptedLocation>,
    device_ids: HashMap<String, i32>,
    requests: VecDeque<RecordedRequest>,
    stats: StubStats,
}

impl StubState {
    pub fn new(config: StubConfig) -> Self {
        Self {
            token_ttl: config.token_ttl,
            config,
            removed: HashSet::new(),
            added: Vec::new(),
            tokens: HashMap::new(),
            accepted: VecDeque::new(),
            seen: HashMap::new(),
            last_seen: HashMap::new(),
            device_ids: HashMap::new(),
            requests: VecDeque::new(),
            stats: StubStats::default(),
        }
    }

    pub fn config(&self) -> &StubConfig {
        &self.config
    }

    /// Forgets what was received and counted and undoes device changes; issued tokens stay
    /// valid so a running client is not logged out by a test's reset.
    pub fn reset(&mut self) {
        self.token_ttl = self.config.token_ttl;
        self.removed.clear();
        self.added.clear();
        self.accepted.clear();
        self.seen.clear();
        self.last_seen.clear();
        self.requests.clear();
        self.stats = StubStats::default();
    }

    pub fn set_token_ttl(&mut self, ttl: Duration) {
        self.token_ttl = ttl;
    }

    pub fn device(&self, login: &str) -> Option<KnownDevice<'_>> {
        if self.removed.contains(login) {
            return None;
        }
        let entry = self
            .added
            .iter()
            .rev()
            .chain(self.config.devices.iter())
            .find(|d| d.login == login);
        let by_glob = self
            .config
            .device_globs
            .iter()
            .any(|g| glob_matches(g, login));
        (entry.is_some() || by_glob).then_some(KnownDevice { entry })
    }

    pub fn add_device(&mut self, device: StubDevice) {
        self.removed.remove(&device.login);
        self.added.push(device);
    }

    pub fn remove_device(&mut self, login: &str) {
        self.added.retain(|d| d.login != login);
        self.removed.insert(login.to_owned());
    }

    pub fn authenticate(&mut self, creds: &Credentials, now_ms: i64) -> AuthOutcome {
        let outcome = self.check_credentials(creds, now_ms);
        if outcome.success {
            self.stats.auth_ok += 1;
        } else {
            self.stats.auth_failed += 1;
        }
        outcome
    }

    fn check_credentials(&mut self, creds: &Credentials, now_ms: i64) -> AuthOutcome {
        let client_ok = creds
            .client
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case(&self.config.client));
        if !client_ok {
            return AuthOutcome::refused("Invalid client.");
        }
        let password = self.device(&creds.login).and_then(|d| {
            d.entry
                .and_then(|e| e.password.clone())
                .or_else(|| self.config.device_password.clone())
        });
        if password.as_deref() != Some(creds.password.as_str()) {
            return AuthOutcome::refused("Invalid login or password.");
        }

        if self.tokens.len() >= TOKEN_PURGE_THRESHOLD {
            self.tokens.retain(|_, t| t.expires_at_ms > now_ms);
        }
        let token = new_token();
        let ttl_ms = i64::try_from(self.token_ttl.as_millis()).unwrap_or(i64::MAX);
        let expiration = now_ms.saturating_add(ttl_ms);
        self.tokens.insert(
            token.clone(),
            Token {
                login: creds.login.clone(),
                expires_at_ms: expiration,
            },
        );
        AuthOutcome {
            token: Some(token),
            expiration,
            created: now_ms,
            client: Some(self.config.client_guid.to_string()),
            branch: Some(self.config.branch_guid.to_string()),
            success: true,
            error_message: None,
        }
    }

    /// The login a token was issued to, while it has not expired.
    pub fn token_login(&self, token: &str, now_ms: i64) -> Option<&str> {
        self.tokens
            .get(token)
            .filter(|t| now_ms < t.expires_at_ms)
            .map(|t| t.login.as_str())
    }

    /// Stores a device's locations and builds its answer.
    pub fn store(
        &mut self,
        login: &str,
        mode: &'static str,
        locations: &[Location],
        now_ms: i64,
    ) -> DeviceOutcome {
        if self.device(login).is_none() {
            self.stats.unknown_devices += 1;
            return DeviceOutcome::unknown_device(login);
        }
        let seen = self.seen.entry(login.to_owned()).or_default();
        let mut outcomes = Vec::with_capacity(locations.len());
        for loc in locations {
            let duplicate = !seen.insert(loc.timestamp);
            let accepted = AcceptedLocation {
                login: login.to_owned(),
                timestamp: loc.timestamp,
                sector_id: loc.sector_id,
                x: loc.x,
                y: loc.y,
                z: loc.z,
                battery: loc.battery,
                is_moving: loc.is_moving,
                interval: loc.interval,
                mode,
                duplicate,
                received_at_ms: now_ms,
            };
            self.stats.accepted += 1;
            self.stats.duplicates += u64::from(duplicate);
            if self.accepted.len() >= self.config.max_accepted {
                self.accepted.pop_front();
            }
            self.accepted.push_back(accepted.clone());
            self.last_seen.insert(login.to_owned(), accepted);
            outcomes.push(LocationOutcome {
                timestamp: loc.timestamp,
                action: if duplicate { "Update" } else { "Create" },
                success: true,
                error_message: None,
            });
        }
        DeviceOutcome {
            login: login.to_owned(),
            success: true,
            error_message: None,
            locations: outcomes,
        }
    }

    pub fn accepted(&self) -> Vec<AcceptedLocation> {
        self.accepted.iter().cloned().collect()
    }

    pub fn accepted_from(&self, from: usize) -> Vec<AcceptedLocation> {
        self.accepted.iter().skip(from).cloned().collect()
    }

    pub fn stats(&self) -> StubStats {
        self.stats.clone()
    }

    pub fn stats_mut(&mut self) -> &mut StubStats {
        &mut self.stats
    }

    pub fn count_status(&mut self, status: u16) {
        *self.stats.requests_by_status.entry(status).or_default() += 1;
    }

    /// Whether localization requests are kept (`max_recorded_requests` above 0).
    pub fn records_requests(&self) -> bool {
        self.config.max_recorded_requests > 0
    }

    pub fn record_request(&mut self, request: RecordedRequest) {
        if self.config.max_recorded_requests == 0 {
            return;
        }
        if self.requests.len() >= self.config.max_recorded_requests {
            self.requests.pop_front();
        }
        self.requests.push_back(request);
    }

    /// The last `n` recorded localization requests, oldest first.
    pub fn requests(&self, n: usize) -> Vec<RecordedRequest> {
        let skip = self.requests.len().saturating_sub(n);
        self.requests.iter().skip(skip).cloned().collect()
    }

    /// `GET /v3/devices/login/{login}`: the device with its last accepted position.
    pub fn device_json(&mut self, login: &str) -> Option<Value> {
        let known = self.device(login)?;
        let title = known
            .entry
            .and_then(|e| e.title.clone())
            .unwrap_or_else(|| login.to_owned());
        let configured_sector = known.entry.and_then(|e| e.sector_id);
        let next_id = i32::try_from(self.device_ids.len() + 1).unwrap_or(i32::MAX);
        let id = *self.device_ids.entry(login.to_owned()).or_insert(next_id);
        let last = self.last_seen.get(login);
        let default_sector = self.config.sectors.first().map(|s| s.id);
        Some(json!({
            "Id": id,
            "Login": login,
            "Title": title,
            "Mac": null,
            "BranchId": 1,
            "SectorId": last.map(|l| l.sector_id).or(configured_sector).or(default_sector),
            "X": last.map(|l| l.x),
            "Y": last.map(|l| l.y),
            "IsMoving": last.and_then(|l| l.is_moving).unwrap_or(false),
            "Battery": last.and_then(|l| l.battery),
            "LastTimeOnline": last.map(|l| l.received_at_ms),
            "DeviceTypeId": 1,
            "Position": true,
            "Geofence": false,
        }))
    }

    /// `GET /v3/sectors`.
    pub fn sectors_json(&self) -> Value {
        let sectors: Vec<Value> = self
            .config
            .sectors
            .iter()
            .map(|s| {
                json!({
                    "Id": s.id,
                    "BranchId": 1,
                    "Title": s.title,
                    "SectorWidth": s.width_mm,
                    "SectorHeight": s.height_mm,
                    "BarrierWidth": 0.0,
                    "BarrierHeight": 0.0,
                    "Modified": 0,
                    "Configuration": null,
                    "Areas": [],
                    "Barriers": [],
                    "Beacons": [],
                    "Sensors": [],
                    "GpsItems": [],
                })
            })
            .collect();
        Value::Array(sectors)
    }
}

fn new_token() -> String {
    let bytes: [u8; 24] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stub::records::{MODE_BATCH, MODE_DEVICE};

    fn location(timestamp: i64) -> Location {
        Location {
            timestamp,
            sector_id: 1,
            x: 1.0,
            y: 2.0,
            z: 0.0,
            battery: None,
            is_moving: None,
            interval: None,
        }
    }

    fn creds(login: &str, password: &str) -> Credentials {
        Credentials {
            client: Some("DEMO".to_owned()),
            login: login.to_owned(),
            password: password.to_owned(),
        }
    }

    #[test]
    fn tokens_expire_at_their_expiration() {
        let mut state = StubState::new(StubConfig::default());
        state.set_token_ttl(Duration::from_millis(500));

        let auth = state.authenticate(&creds("tugger-01", "stub-password"), 1_000);
        let token = auth.token.unwrap();

        assert_eq!(auth.expiration, 1_500);
        assert_eq!(state.token_login(&token, 1_499), Some("tugger-01"));
        assert_eq!(state.token_login(&token, 1_500), None);
    }

    #[test]
    fn wrong_password_unknown_login_and_client_are_refused() {
        let mut state = StubState::new(StubConfig::default());

        assert!(!state.authenticate(&creds("tugger-01", "nope"), 0).success);
        assert!(
            !state
                .authenticate(&creds("ghost", "stub-password"), 0)
                .success
        );
        let mut other_client = creds("tugger-01", "stub-password");
        other_client.client = Some("acme".to_owned());
        assert!(!state.authenticate(&other_client, 0).success);
        assert!(
            state
                .authenticate(&creds("sim-9", "stub-password"), 0)
                .success
        );
        assert_eq!((state.stats().auth_ok, state.stats().auth_failed), (1, 3));
    }

    #[test]
    fn repeated_timestamps_are_updates_and_flagged() {
        let mut state = StubState::new(StubConfig::default());

        state.store("tugger-01", MODE_DEVICE, &[location(1)], 10);
        let outcome = state.store("tugger-01", MODE_BATCH, &[location(1), location(2)], 11);

        let actions: Vec<_> = outcome.locations.iter().map(|l| l.action).collect();
        assert_eq!(actions, ["Update", "Create"]);
        let flags: Vec<_> = state.accepted().iter().map(|a| a.duplicate).collect();
        assert_eq!(flags, [false, true, false]);
        assert_eq!((state.stats().accepted, state.stats().duplicates), (3, 1));
    }

    #[test]
    fn removed_devices_no_longer_exist_until_reset() {
        let mut state = StubState::new(StubConfig::default());
        state.remove_device("tugger-01");

        let outcome = state.store("tugger-01", MODE_DEVICE, &[location(1)], 0);

        assert!(!outcome.success);
        assert_eq!(
            outcome.error_message.as_deref(),
            Some("Device tugger-01 does not exist.")
        );
        state.reset();
        assert!(state.device("tugger-01").is_some());
    }

    #[test]
    fn the_oldest_accepted_locations_are_dropped_past_the_cap() {
        let config = StubConfig {
            max_accepted: 2,
            ..StubConfig::default()
        };
        let mut state = StubState::new(config);

        state.store(
            "tugger-01",
            MODE_DEVICE,
            &[location(1), location(2), location(3)],
            0,
        );

        let kept: Vec<_> = state.accepted().iter().map(|a| a.timestamp).collect();
        assert_eq!(kept, [2, 3]);
        assert_eq!(state.stats().accepted, 3);
    }
}
