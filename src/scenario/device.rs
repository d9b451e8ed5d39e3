//! The device-registration settings in `[target]` (modes `mqtt` and `https`), their types and
//! validation: endpoint, ID scope, TLS trust, hub connection strings, timeouts, polling, back-off.
//! Secrets (`${DPS_GROUP_KEY}`, connection strings) are expanded here and kept as [`Secret`]s.

use std::path::PathBuf;
use std::time::Duration;

use super::error::ScenarioError;
use super::raw;
use super::validate::Validator;
use super::Secret;

type Result<T> = std::result::Result<T, ScenarioError>;

/// How devices reach DPS.
#[derive(Debug, Clone, PartialEq)]
pub enum Trust {
    /// The embedded emulator's generated CA.
    Emulator,
    /// The system's root certificates (real Azure).
    System,
    /// A PEM file of trusted certificates.
    Pem(PathBuf),
    /// No TLS (the emulator's plain listeners).
    Plain,
}

/// Device registration settings (`[target]` in `mqtt`/`https` mode).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceTarget {
    /// `host:port` of DPS; `None` = the embedded emulator, started in-process.
    pub endpoint: Option<(String, u16)>,
    /// ID scope; `None` = the emulator's.
    pub id_scope: Option<String>,
    /// TLS trust.
    pub tls: Trust,
    /// IoT Hub connection strings for twin verification (the emulator's own when embedded).
    pub hub_connection_strings: Vec<Secret>,
    /// A device's whole registration must end within this.
    pub device_timeout: Duration,
    /// `retry-after` is honoured but raised to at least this…
    pub poll_floor: Duration,
    /// …and lowered to at most this.
    pub poll_cap: Duration,
    /// First back-off after a 429 without `retry-after` (doubled each time, with jitter).
    pub backoff_initial: Duration,
    /// Largest back-off.
    pub backoff_max: Duration,
    /// Read each assigned device's twin from its hub and check it.
    pub verify_twins: bool,
    /// Twin reads per second at most (separate from the registration rate).
    pub twin_rate: f64,
}

impl Default for DeviceTarget {
    fn default() -> Self {
        Self {
            endpoint: None,
            id_scope: None,
            tls: Trust::Emulator,
            hub_connection_strings: Vec::new(),
            device_timeout: Duration::from_secs(60),
            poll_floor: Duration::ZERO,
            poll_cap: Duration::from_secs(60),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            verify_twins: true,
            twin_rate: 500.0,
        }
    }
}

impl Validator<'_> {
    pub(super) fn device_target(&self, t: &raw::Target) -> Result<DeviceTarget> {
        let mut d = DeviceTarget::default();
        if let Some(e) = &t.endpoint {
            let text = self.expand(e, "target.endpoint")?;
            let parsed = text
                .rsplit_once(':')
                .and_then(|(h, p)| {
                    Some((
                        h.trim_matches(['[', ']']).to_owned(),
                        p.parse::<u16>().ok()?,
                    ))
                })
                .filter(|(h, _)| !h.is_empty());
            match parsed {
                Some(hp) => d.endpoint = Some(hp),
                None => {
                    return self.err(
                        e.span(),
                        "target.endpoint",
                        format!("`{text}` is not host:port, e.g. \"global.azure-devices-provisioning.net:8883\""),
                    )
                }
            }
            // A real endpoint is trusted through the system roots unless told otherwise.
            d.tls = Trust::System;
        }
        if let Some(s) = &t.id_scope {
            d.id_scope = Some(self.expand(s, "target.id_scope")?);
        }
        if let Some(tls) = &t.tls {
            d.tls = match tls.get_ref().as_str() {
                "emulator" => Trust::Emulator,
                "system" => Trust::System,
                "plain" => Trust::Plain,
                path if path.ends_with(".pem") || path.contains('/') => Trust::Pem(PathBuf::from(path)),
                other => {
                    return self.err(
                        tls.span(),
                        "target.tls",
                        format!("`{other}`: choose from \"emulator\", \"system\", \"plain\", or a path to a PEM file"),
                    )
                }
            };
        }
        for cs in t.hub_connection_strings.iter().flatten() {
            let text = self.expand(cs, "target.hub_connection_strings")?;
            let Some((_, _, key)) = crate::sas::parse_connection_string(&text) else {
                return self.err(
                    cs.span(),
                    "target.hub_connection_strings",
                    "not an IoT Hub connection string (HostName=…;SharedAccessKeyName=…;SharedAccessKey=…)",
                );
            };
            if let Err(e) = crate::device::keys::decode_key(&key) {
                return self.err(
                    cs.span(),
                    "target.hub_connection_strings",
                    format!("SharedAccessKey: {e}"),
                );
            }
            d.hub_connection_strings.push(Secret::new(text));
        }
        let dur = |v: &Option<toml::Spanned<String>>,
                   key: &str,
                   into: &mut std::time::Duration|
         -> Result<()> {
            if let Some(s) = v {
                *into = self.duration(s, key)?;
            }
            Ok(())
        };
        dur(
            &t.device_timeout,
            "target.device_timeout",
            &mut d.device_timeout,
        )?;
        dur(&t.poll_floor, "target.poll_floor", &mut d.poll_floor)?;
        dur(&t.poll_cap, "target.poll_cap", &mut d.poll_cap)?;
        dur(
            &t.backoff_initial,
            "target.backoff_initial",
            &mut d.backoff_initial,
        )?;
        dur(&t.backoff_max, "target.backoff_max", &mut d.backoff_max)?;
        if d.device_timeout.is_zero() {
            return self.err(
                t.device_timeout.as_ref().map_or(0..0, |s| s.span()),
                "target.device_timeout",
                "must be greater than zero",
            );
        }
        if d.poll_floor > d.poll_cap {
            return self.err(
                t.poll_floor.as_ref().map_or(0..0, |s| s.span()),
                "target.poll_floor",
                "must not exceed target.poll_cap",
            );
        }
        if let Some(v) = t.verify_twins {
            d.verify_twins = v;
        }
        if let Some(r) = &t.twin_rate {
            if !(*r.get_ref() > 0.0 && r.get_ref().is_finite()) {
                return self.err(
                    r.span(),
                    "target.twin_rate",
                    "twin reads per second: a positive number",
                );
            }
            d.twin_rate = *r.get_ref();
        }
        Ok(d)
    }
}
