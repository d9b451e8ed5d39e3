//! Validation of the device-registration settings in `[target]` (modes `mqtt` and `https`):
//! endpoint, ID scope, TLS trust, hub connection strings, timeouts, polling and back-off.
//! Secrets (`${DPS_GROUP_KEY}`, connection strings) are expanded here and kept as [`Secret`]s.

use std::path::PathBuf;

use super::error::ScenarioError;
use super::raw;
use super::validate::Validator;
use super::{DeviceTarget, Secret, Trust};

type Result<T> = std::result::Result<T, ScenarioError>;

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
            if !(text.contains("HostName=") && text.contains("SharedAccessKey=")) {
                return self.err(
                    cs.span(),
                    "target.hub_connection_strings",
                    "not an IoT Hub connection string (HostName=…;SharedAccessKeyName=…;SharedAccessKey=…)",
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
