//! The device table: which Twinzo login, sector, transform and password a robot uses.
//!
//! With no entry for a device, `twinzo.unknown_devices` decides: `forward` uses the device id
//! as login with the default sector and password, `reject` sets the message aside as a dead
//! letter with reason `unknown_device`.

use std::collections::HashMap;

use crate::config::{Config, Secret, UnknownDevices};
use crate::transform::Affine;

/// Where one robot's records go.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub login: String,
    pub sector_id: i32,
    pub transform: Affine,
}

/// Resolves devices to targets and logins to passwords.
#[derive(Debug, Clone)]
pub struct Directory {
    devices: HashMap<String, Target>,
    passwords: HashMap<String, Secret>,
    default_password: Secret,
    default_sector: Option<i32>,
    sectors: HashMap<i32, Affine>,
    unknown: UnknownDevices,
}

impl Directory {
    pub fn new(config: &Config) -> Self {
        let sectors: HashMap<i32, Affine> =
            config.sectors.iter().map(|s| (s.id, s.affine())).collect();
        let transform = |id: i32| sectors.get(&id).copied().unwrap_or(Affine::METRES_TO_MM);
        let default_sector = config.twinzo.sector_id;
        let mut devices = HashMap::new();
        let mut passwords = HashMap::new();
        for d in &config.devices {
            let login = d.login.clone().unwrap_or_else(|| d.id.clone());
            // Validation guarantees a sector for every device (its own or the default).
            let sector_id = d.sector_id.or(default_sector).unwrap_or_default();
            if let Some(p) = &d.password {
                passwords.insert(login.clone(), p.clone());
            }
            devices.insert(
                d.id.clone(),
                Target {
                    login,
                    sector_id,
                    transform: transform(sector_id),
                },
            );
        }
        Directory {
            devices,
            passwords,
            default_password: config.twinzo.device_password.clone(),
            default_sector,
            sectors,
            unknown: config.twinzo.unknown_devices,
        }
    }

    /// The device's target, or `None` when it is unknown and unknown devices are rejected.
    pub fn target(&self, device: &str) -> Option<Target> {
        if let Some(t) = self.devices.get(device) {
            return Some(t.clone());
        }
        match (self.unknown, self.default_sector) {
            (UnknownDevices::Forward, Some(sector_id)) => Some(Target {
                login: device.to_string(),
                sector_id,
                transform: self
                    .sectors
                    .get(&sector_id)
                    .copied()
                    .unwrap_or(Affine::METRES_TO_MM),
            }),
            _ => None,
        }
    }

    /// The password a login authenticates with (device mode).
    pub fn password(&self, login: &str) -> &Secret {
        self.passwords.get(login).unwrap_or(&self.default_password)
    }

    /// Configured logins, for `check` and the readiness probe.
    pub fn configured_logins(&self) -> Vec<String> {
        let mut logins: Vec<String> = self.devices.values().map(|t| t.login.clone()).collect();
        logins.sort();
        logins.dedup();
        logins
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DeviceConfig, SectorConfig};

    fn config(unknown: UnknownDevices) -> Config {
        let mut c = Config::default();
        c.twinzo.sector_id = Some(1);
        c.twinzo.device_password = Secret::new("default-password-123");
        c.twinzo.unknown_devices = unknown;
        c.devices.push(DeviceConfig {
            id: "tugger-01".into(),
            login: Some("ati-tugger-01".into()),
            sector_id: Some(2),
            password: Some(Secret::new("own-password-1234")),
        });
        c.sectors.push(SectorConfig {
            id: 2,
            transform: None,
            scale: None,
            flip_y: true,
            offset_mm: Some([0.0, 30_000.0]),
        });
        c
    }

    #[test]
    fn configured_device_uses_its_login_sector_and_password() {
        let dir = Directory::new(&config(UnknownDevices::Reject));
        let t = dir.target("tugger-01").unwrap();
        assert_eq!((t.login.as_str(), t.sector_id), ("ati-tugger-01", 2));
        assert_eq!(t.transform.apply(1.0, 0.0), (1000.0, 30_000.0));
        assert_eq!(dir.password("ati-tugger-01").expose(), "own-password-1234");
    }

    #[test]
    fn unknown_device_follows_the_policy() {
        let forward = Directory::new(&config(UnknownDevices::Forward));
        let t = forward.target("sim-07").unwrap();
        assert_eq!(
            (t.login.as_str(), t.sector_id, t.transform),
            ("sim-07", 1, Affine::METRES_TO_MM)
        );
        assert_eq!(forward.password("sim-07").expose(), "default-password-123");

        let reject = Directory::new(&config(UnknownDevices::Reject));
        assert_eq!(reject.target("sim-07"), None);
    }
}
