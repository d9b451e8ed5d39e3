//! Validation of `[emulator]`: how the embedded DPS emulator behaves where the scenario's
//! enrollment does not say (ID scope, allocation policy, hub weights, timing, quotas).
//! Defaults and the UNCONFIRMED choices behind them are documented in scenarios/README.md.

use std::path::PathBuf;
use std::time::Duration;

use super::error::ScenarioError;
use super::raw;
use super::validate::Validator;
use super::{Allocation, EmulatorOptions, HubOptions, Throttle};

type Result<T> = std::result::Result<T, ScenarioError>;

impl Validator<'_> {
    pub(super) fn emulator(
        &self,
        e: &Option<raw::Emulator>,
        linked: &[String],
    ) -> Result<EmulatorOptions> {
        let mut o = EmulatorOptions::default();
        let Some(e) = e else {
            o.hubs = linked.iter().map(|h| HubOptions::new(h)).collect();
            return Ok(o);
        };
        if let Some(s) = &e.id_scope {
            let v = s.get_ref();
            if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric()) {
                return self.err(
                    s.span(),
                    "emulator.id_scope",
                    "letters and digits only, e.g. \"0ne00000A0A\"",
                );
            }
            o.id_scope = v.clone();
        }
        if let Some(a) = &e.allocation {
            o.allocation = match a.get_ref().as_str() {
                "custom" => Allocation::Custom,
                "hashed" => Allocation::Hashed,
                "static" => Allocation::Static,
                "geoLatency" => Allocation::GeoLatency,
                other => {
                    return self.err(
                        a.span(),
                        "emulator.allocation",
                        format!(
                        "unknown policy `{other}`; choose from: custom, hashed, static, geoLatency"
                    ),
                    )
                }
            };
        }
        if let Some(r) = &e.retry_after {
            if !(1..=300).contains(r.get_ref()) {
                return self.err(
                    r.span(),
                    "emulator.retry_after",
                    "seconds between 1 and 300 (SDK-C replaces anything else with 1)",
                );
            }
            o.retry_after = *r.get_ref();
        }
        if let Some(d) = &e.assignment_delay {
            o.assignment_delay = self.duration(d, "emulator.assignment_delay")?;
        }
        if let Some(d) = &e.sas_skew {
            o.sas_skew = self.duration(d, "emulator.sas_skew")?;
        }
        o.immediate = e.immediate.unwrap_or(false);
        o.key_pinning = e.key_pinning.unwrap_or(true);
        o.persist = e.persist.as_ref().map(PathBuf::from);
        if let Some(t) = &e.throttle {
            let mut th = Throttle::default();
            if let Some(r) = &t.registrations_per_minute {
                if *r.get_ref() == 0 {
                    return self.err(
                        r.span(),
                        "emulator.throttle.registrations_per_minute",
                        "must be at least 1",
                    );
                }
                th.registrations_per_minute = *r.get_ref();
            }
            if let Some(p) = &t.polls_per_10s {
                if *p.get_ref() == 0 {
                    return self.err(
                        p.span(),
                        "emulator.throttle.polls_per_10s",
                        "must be at least 1",
                    );
                }
                th.polls_per_10s = *p.get_ref();
            }
            o.throttle = Some(th);
        }
        o.hubs = linked.iter().map(|h| HubOptions::new(h)).collect();
        for h in &e.hubs {
            let host = h.host.get_ref();
            let Some(slot) = o
                .hubs
                .iter_mut()
                .find(|x| x.host.eq_ignore_ascii_case(host))
            else {
                return self.err(
                    h.host.span(),
                    "emulator.hubs.host",
                    format!(
                        "`{host}` is not a linked hub; linked: {}",
                        linked.join(", ")
                    ),
                );
            };
            if let Some(w) = &h.weight {
                if !(1..=1000).contains(w.get_ref()) {
                    return self.err(
                        w.span(),
                        "emulator.hubs.weight",
                        "allocationWeight is 1 to 1000",
                    );
                }
                slot.weight = *w.get_ref();
            }
            slot.apply_allocation_policy = h.apply_allocation_policy.unwrap_or(true);
            if let Some(l) = &h.latency {
                slot.latency = self.duration(l, "emulator.hubs.latency")?;
            }
        }
        Ok(o)
    }
}

impl HubOptions {
    fn new(host: &str) -> Self {
        Self {
            host: host.to_owned(),
            weight: 1,
            apply_allocation_policy: true,
            latency: Duration::ZERO,
        }
    }
}
