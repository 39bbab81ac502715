//! The command line of `twinzo-bridge simulate`: [`SimulateArgs`] and the types of its values.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::{FleetConfig, LinkError, Region};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PathKind {
    /// A rounded rectangle inside the region, robots spaced evenly along it
    Loop,
    /// Random waypoints inside the region
    Region,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// ATI sherpa status on the topic template
    Ati,
    /// VDA 5050 v2 state and visualization on uagv/v2/{manufacturer}/{robot}/...
    Vda5050,
}

/// ATI pose length: `[x, y, heading]` or `[x, y, z, roll, pitch, yaw]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoseShape {
    Three,
    Six,
}

impl FromStr for PoseShape {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "3" => Ok(PoseShape::Three),
            "6" => Ok(PoseShape::Six),
            _ => Err(format!("pose must be 3 or 6, got {s:?}")),
        }
    }
}

/// A password that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(value: impl Into<String>) -> Self {
        Password(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"****\"")
    }
}

impl FromStr for Password {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Password(s.to_owned()))
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Broker URL: mqtt://HOST:1883, mqtts://HOST:8883, ws://HOST:9001/mqtt or wss://HOST/mqtt
    #[arg(long, env = "SIM_MQTT_URL")]
    pub url: String,

    #[arg(long, env = "SIM_MQTT_USERNAME")]
    pub username: Option<String>,

    #[arg(long, env = "SIM_MQTT_PASSWORD", hide_env_values = true)]
    pub password: Option<Password>,

    /// MQTT client id [default: sim-<random>]
    #[arg(long)]
    pub client_id: Option<String>,

    /// Number of robots
    #[arg(long, default_value_t = 5, value_parser = robot_count)]
    pub robots: usize,

    /// Messages per second per robot
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    pub rate: f64,

    /// Stop after this many messages in total (all acknowledged, or reported failed)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Stop after this many seconds; with neither --count nor --duration, run until Ctrl-C
    #[arg(long, value_parser = seconds)]
    pub duration: Option<Duration>,

    /// ATI topic; {robot} is replaced by the robot name
    #[arg(long, default_value = "ati/{robot}/status")]
    pub topic_template: String,

    /// Robot names are this prefix and a number: sim-01, sim-02, ...
    #[arg(long, default_value = "sim-")]
    pub robot_prefix: String,

    #[arg(long, value_enum, default_value_t = PathKind::Loop)]
    pub path: PathKind,

    /// Area the robots drive in, metres: x0,y0,x1,y1
    #[arg(long, default_value = "0,0,40,25", allow_hyphen_values = true)]
    pub region: Region,

    /// ATI pose values: 3 ([x, y, heading]) or 6 ([x, y, z, roll, pitch, yaw])
    #[arg(long, default_value = "3")]
    pub pose: PoseShape,

    #[arg(long, value_enum, default_value_t = Format::Ati)]
    pub format: Format,

    /// VDA 5050 manufacturer (the robot name is the serial number)
    #[arg(long, default_value = "sim")]
    pub manufacturer: String,

    /// VDA 5050 mapId
    #[arg(long, default_value = "map-1")]
    pub map_id: String,

    /// Robot speed, metres per second
    #[arg(long, default_value_t = 1.2, value_parser = non_negative)]
    pub speed: f64,

    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,

    /// Seed of the simulation: same seed, same poses, modes and message ids [default: random]
    #[arg(long)]
    pub seed: Option<u64>,

    /// Fraction of robots that now and then go to `error` or `disconnected` and recover
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    pub error_rate: f64,

    /// ATI: send battery_status -1 (unknown) instead of the charge
    #[arg(long)]
    pub unknown_battery: bool,

    /// Keep the MQTT session across reconnects (clean session off); use a fixed --client-id
    #[arg(long)]
    pub durable: bool,

    /// Seconds to wait for outstanding acknowledgements at the end
    #[arg(long, default_value = "10", value_parser = seconds)]
    pub drain_timeout: Duration,

    /// Seconds to wait for the first connection before giving up
    #[arg(long, default_value = "30", value_parser = seconds)]
    pub connect_timeout: Duration,
}

impl SimulateArgs {
    /// Parses command-line style arguments (without the program name), as tests and scripts
    /// build them: `SimulateArgs::try_from_args(["--url", url, "--count", "10"])`.
    pub fn try_from_args<I, T>(args: I) -> Result<SimulateArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: SimulateArgs,
        }
        let argv = std::iter::once("simulate".into()).chain(args.into_iter().map(Into::into));
        <Cli as clap::Parser>::try_parse_from(argv).map(|cli| cli.args)
    }

    /// The simulation these arguments describe.
    pub fn fleet_config(&self, seed: u64) -> FleetConfig {
        FleetConfig {
            robots: self.robots,
            robot_prefix: self.robot_prefix.clone(),
            rate_hz: self.rate,
            path: self.path,
            region: self.region,
            speed_mps: self.speed,
            pose: self.pose,
            format: self.format,
            topic_template: self.topic_template.clone(),
            manufacturer: self.manufacturer.clone(),
            map_id: self.map_id.clone(),
            error_rate: self.error_rate,
            unknown_battery: self.unknown_battery,
            seed,
        }
    }

    pub(super) fn credentials(&self) -> Result<Option<(&str, &str)>, LinkError> {
        match (&self.username, &self.password) {
            (Some(user), password) => {
                Ok(Some((user, password.as_ref().map_or("", Password::expose))))
            }
            (None, Some(_)) => Err(LinkError::PasswordWithoutUser),
            (None, None) => Ok(None),
        }
    }
}

fn robot_count(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|n| (1..=100_000).contains(n))
        .ok_or_else(|| format!("expected 1 to 100000 robots, got {s:?}"))
}

fn positive(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .ok_or_else(|| format!("expected a positive number, got {s:?}"))
}

fn non_negative(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("expected a number of at least 0, got {s:?}"))
}

fn fraction(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| (0.0..=1.0).contains(v))
        .ok_or_else(|| format!("expected a fraction from 0 to 1, got {s:?}"))
}

fn seconds(s: &str) -> Result<Duration, String> {
    positive(s)
        .map(Duration::from_secs_f64)
        .map_err(|_| format!("expected seconds above 0, got {s:?}"))
}
