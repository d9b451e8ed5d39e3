//! Scenarios: what to run, against what, and what to expect. Loaded in two stages (rule 5 of the
//! style guide): `raw.rs` mirrors the TOML, `validate.rs` builds these typed values. Nothing past
//! this module re-parses strings. Secrets are [`Secret`]s and never print.
//!
//! The schema is documented key by key in `scenarios/README.md`.

mod classes;
mod device;
mod emulator;

pub use device::{DeviceTarget, SourceAddrs, Trust};
pub use emulator::{Allocation, EmulatorOptions, HubOptions, Throttle, WebhookTransport};
mod enrollment;
mod error;
pub mod flags;
mod gate;
mod raw;
mod validate;
pub use flags::{Flags, SearchFlags};

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::ScenarioError;

use crate::device::template::IdTemplate;
use crate::device::Population;
use crate::dps::outcome::Rules;
use crate::threshold::Threshold;
use crate::webhook::fault::Fault;
use crate::webhook::policy::Policy;

pub use crate::secret::Secret;

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The file it came from.
    pub path: PathBuf,
    /// Short name (`[A-Za-z0-9._-]`), used in report paths.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Seed of the population order.
    pub seed: u64,
    /// What is driven.
    pub target: Target,
    /// The embedded reference webhook's policy (used when `target.url` is unset).
    pub policy: Policy,
    /// The embedded reference webhook also returns the device's payload (`[webhook] echo_payload`).
    pub echo_payload: bool,
    /// How DPS maps webhook answers.
    pub rules: Rules,
    /// Enrollments.
    pub enrollment: Enrollment,
    /// Device classes.
    pub classes: Vec<Class>,
    /// Load shape.
    pub load: Load,
    /// Report options.
    pub report: ReportOptions,
    /// How `loadtest check` exercises the classes.
    pub check: CheckOptions,
    /// Pass/fail criteria on the measurements.
    pub thresholds: Vec<Threshold>,
    /// How the embedded DPS emulator behaves.
    pub emulator: EmulatorOptions,
    /// Capacity math: fleet size and the limits assumed (`[capacity]`).
    pub capacity: CapacityOptions,
    /// `--shard I/N` (0-based I): this process runs a disjoint slice of the population; the
    /// load above is already this shard's share.
    pub shard: Option<(u32, u32)>,
    /// SHA-256 (hex) of the scenario file's text and the flags that override it (all but
    /// `--shard`): shards of one run carry the same hash, so `report merge` can tell a shard of
    /// another scenario (or of the same file run at another rate) from one of this run.
    pub hash: String,
}

/// `[capacity]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CapacityOptions {
    /// Devices to onboard (default: the population).
    pub fleet: Option<u64>,
    /// The limits assumed.
    pub limits: crate::capacity::Limits,
}

/// `[check]`: how `loadtest check` exercises the classes.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOptions {
    /// Devices per class, evenly spread over the class's range; `None` = all.
    pub sample: Option<u64>,
    /// Arrivals per second.
    pub rate: f64,
    /// Snapshot file; default `snapshots/<name>.snap`.
    pub snapshot: Option<PathBuf>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            sample: Some(gate::DEFAULT_SAMPLE),
            rate: gate::DEFAULT_RATE,
            snapshot: None,
        }
    }
}

/// Where requests go.
#[derive(Debug, Clone)]
pub struct Target {
    /// What is driven.
    pub mode: Mode,
    /// Webhook URL (may contain `?code=`); `None` = the embedded reference webhook.
    pub url: Option<Secret>,
    /// Sent as `x-functions-key` when set.
    pub function_key: Option<Secret>,
    /// `https://` webhooks: a PEM file of CA certificates trusted besides the Mozilla roots (a
    /// private CA, `func start --useHttps`, `webhook serve --tls-dir`).
    pub ca: Option<PathBuf>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Device registration modes (`mqtt`, `https`).
    pub device: DeviceTarget,
}

/// What a run drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// POST AllocationRequests to the webhook, as DPS does.
    Webhook,
    /// Register devices over MQTT.
    Mqtt,
    /// Register devices over MQTT over WebSockets (`/$iothub/websocket` on the HTTPS port).
    MqttWs,
    /// Register devices over HTTPS.
    Https,
}

impl Mode {
    /// The scenario name of the mode.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Webhook => "webhook",
            Mode::Mqtt => "mqtt",
            Mode::MqttWs => "mqtt-ws",
            Mode::Https => "https",
        }
    }
}

pub use crate::dps::enrollment::{Enrollee, Enrollment, Group, Individual, Via, WhichKey};

/// A device class.
#[derive(Debug, Clone)]
pub struct Class {
    /// Name, unique in the scenario.
    pub name: String,
    /// ID template.
    pub template: IdTemplate,
    /// Inclusive range of `{n}`.
    pub range: (u64, u64),
    /// Custom payload, serialised once.
    pub payload_json: Option<String>,
    /// Reprovisioning context (`currentIotHubHostName`, `currentDeviceId`).
    pub current: Option<Current>,
    /// What each device of the class must get.
    pub expect: Expect,
    /// Fault the embedded reference webhook applies to this class.
    pub fault: Option<Fault>,
}

/// Reprovisioning context of a class.
#[derive(Debug, Clone)]
pub struct Current {
    /// `currentIotHubHostName`.
    pub hub: String,
    /// `currentDeviceId`; `None` = the registration ID.
    pub device_id: Option<String>,
}

pub use crate::check::Expect;

/// Requests per second, or a closed loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Open loop at this many arrivals per second (start rate when stages are given).
    PerSecond(f64),
    /// Closed loop: `connections` workers send back to back.
    Max,
}

pub use crate::pacing::Stage;

/// The load shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    /// Rate or closed loop.
    pub rate: Rate,
    /// Connections (closed loop: workers; open loop: idle pool size).
    pub connections: u32,
    /// Run length; `None` = until `count`.
    pub duration: Option<Duration>,
    /// Request count; `None` = as many as the schedule yields.
    pub count: Option<u64>,
    /// Ramp stages at the start of the run (open loop only).
    pub stages: Vec<Stage>,
    /// Maximum requests in flight; the pacer waits (and records the lag) beyond it.
    pub max_in_flight: u32,
    /// How long in-flight requests may finish after the schedule ends or Ctrl-C.
    pub grace: Duration,
    /// Passes over the population (device modes: later rounds are re-registrations).
    pub rounds: u32,
    /// The capacity search of `loadtest plan`.
    pub search: Search,
    /// Device modes: single-threaded runtimes requests are spread over (`None` = one per core;
    /// 0 = the shared work-stealing runtime).
    pub lanes: Option<u32>,
    /// Open loop: the pacer wakes at most this often (`None` = 1 ms in device modes, 0 in
    /// webhook mode: each request released at its intended start).
    pub granularity: Option<Duration>,
}

impl Load {
    /// The pacer's granularity in `mode`.
    pub fn granularity_in(&self, mode: Mode) -> Duration {
        self.granularity.unwrap_or(match mode {
            Mode::Webhook => Duration::ZERO,
            Mode::Mqtt | Mode::MqttWs | Mode::Https => Duration::from_millis(1),
        })
    }
}

impl Load {
    /// A flat open-loop shape derived from this one (`check`'s sample, `plan`'s steps): `rate`
    /// per second, no stages, for `duration` or `count`; everything else as validated.
    pub fn flat(&self, rate: f64, duration: Option<Duration>, count: Option<u64>) -> Load {
        Load {
            rate: Rate::PerSecond(rate),
            stages: Vec::new(),
            duration,
            count,
            ..self.clone()
        }
    }
}

/// `[load] search`: stepped open-loop rates for `loadtest plan`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Search {
    /// First rate (per second).
    pub start: f64,
    /// Next rate = rate × factor (when `step` is unset).
    pub factor: f64,
    /// Next rate = rate + step, if set.
    pub step: Option<f64>,
    /// Time each rate is held.
    pub hold: Duration,
    /// Highest rate tried.
    pub max: f64,
}

impl Default for Search {
    fn default() -> Self {
        Self {
            start: 100.0,
            factor: 2.0,
            step: None,
            hold: Duration::from_secs(5),
            // A ceiling one generator on one machine can offer without measuring itself.
            max: 20_000.0,
        }
    }
}

/// Report options.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Parent directory of report directories.
    pub out: PathBuf,
    /// Mismatch examples kept per class and field.
    pub examples: usize,
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        Self::load_with(path, &Flags::default())
    }

    /// Reads a scenario file (`-`: standard input), applies the command line's flags to it, and
    /// validates the whole.
    pub fn load_with(path: &Path, flags: &Flags) -> Result<Self, ScenarioError> {
        let text = if path == Path::new("-") {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(path)
        };
        let text = text.map_err(|source| ScenarioError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_with(path, &text, flags)
    }

    /// Validates scenario text (`path` is used in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ScenarioError> {
        Self::parse_with(path, text, &Flags::default())
    }

    /// Validates scenario text with the command line's flags applied.
    pub fn parse_with(path: &Path, text: &str, flags: &Flags) -> Result<Self, ScenarioError> {
        validate::validate(path, text, flags)
    }

    /// The device population (seeded shuffle of all classes).
    pub fn population(&self) -> Population {
        Population::new(
            &self.classes.iter().map(|c| c.range).collect::<Vec<_>>(),
            self.seed,
        )
    }

    /// The target URL with secrets masked, for reports: `?code=…` and user info are hidden.
    pub fn target_display(&self) -> String {
        if self.target.mode != Mode::Webhook {
            let d = &self.target.device;
            let scheme = match (self.target.mode, &d.tls) {
                (Mode::Mqtt, Trust::Plain) => "mqtt",
                (Mode::Mqtt, _) => "mqtts",
                (Mode::MqttWs, Trust::Plain) => "ws",
                (Mode::MqttWs, _) => "wss",
                (_, Trust::Plain) => "http",
                _ => "https",
            };
            return match &d.endpoint {
                Some((h, p)) => format!("{scheme}://{h}:{p}"),
                None => format!("embedded DPS emulator ({scheme})"),
            };
        }
        match &self.target.url {
            Some(u) => mask_secrets_in_url(u.expose()),
            None => format!("embedded reference webhook ({})", self.policy.name()),
        }
    }

    /// The embedded reference webhook this scenario needs: `None` when `target.url` names one.
    pub fn embedded_webhook(&self) -> Option<crate::webhook::server::Config> {
        self.target
            .url
            .is_none()
            .then(|| crate::webhook::server::Config {
                policy: self.policy,
                faults: self.fault_rules(),
                echo_payload: self.echo_payload,
                limits: crate::listen::Limits::default(),
            })
    }

    /// Fault rules for the reference webhook, from the classes that declare one.
    pub fn fault_rules(&self) -> Vec<crate::webhook::fault::Rule> {
        self.classes
            .iter()
            .filter_map(|c| {
                c.fault.clone().map(|fault| crate::webhook::fault::Rule {
                    ids: c.template.clone(),
                    fault,
                })
            })
            .collect()
    }
}

/// A webhook URL must be `http://` or `https://` with a host; the error never shows secrets.
pub fn check_url(url: &str) -> Result<(), String> {
    match url.parse::<hyper::Uri>() {
        Ok(u)
            if matches!(u.scheme_str(), Some("http" | "https"))
                && u.host().is_some_and(|h| !h.is_empty()) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "`{}` is not an http:// or https:// URL",
            mask_secrets_in_url(url)
        )),
    }
}

/// Masks query values and user info of a URL: `http://h/api/f?code=***`.
pub fn mask_secrets_in_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((_, host))
                if !rest.split('/').next().unwrap_or("").is_empty()
                    && rest.find('@') < rest.find('/').or(Some(rest.len())) =>
            {
                format!("{scheme}://***@{host}")
            }
            _ => base.to_owned(),
        },
        None => base.to_owned(),
    };
    match query {
        Some(q) => {
            let masked: Vec<String> = q
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) => format!("{k}=***"),
                    None => kv.to_owned(),
                })
                .collect();
            format!("{base}?{}", masked.join("&"))
        }
        None => base,
    }
}

impl Scenario {
    /// Devices per class.
    /// Distinct devices expected to be assigned: classes that expect `assigned` and are not
    /// re-registrations of another class's devices (`current` set). What a capacity plan onboards.
    pub fn fleet_to_assign(&self) -> u64 {
        self.classes
            .iter()
            .filter(|c| c.expect.status == crate::dps::Status::Assigned && c.current.is_none())
            .map(|c| c.range.1 - c.range.0 + 1)
            .sum()
    }

    /// Devices per class.
    pub fn population_sizes(&self) -> Vec<u64> {
        self.classes
            .iter()
            .map(|c| c.range.1 - c.range.0 + 1)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking() {
        assert_eq!(
            mask_secrets_in_url("http://127.0.0.1:7071/api/HttpTrigger1?code=abc=="),
            "http://127.0.0.1:7071/api/HttpTrigger1?code=***"
        );
        assert_eq!(mask_secrets_in_url("https://u:p@h/x"), "https://***@h/x");
        assert_eq!(mask_secrets_in_url("http://h/x"), "http://h/x");
        assert_eq!(format!("{:?}", Secret::new("k")), "<redacted>");
    }
}
