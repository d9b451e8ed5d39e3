//! `[emulator]`: how the embedded DPS emulator behaves where the scenario's enrollment does not
//! say (ID scope, allocation policy, hub weights, timing, quotas), its types and validation; also
//! the validation of `[capacity]` and `[load] search`. Defaults and the UNCONFIRMED choices
//! behind them are documented in scenarios/README.md.

use std::path::PathBuf;
use std::time::Duration;

use super::error::ScenarioError;
use super::raw;
use super::validate::Validator;

type Result<T> = std::result::Result<T, ScenarioError>;

/// `[emulator]`: the DPS emulator's own settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EmulatorOptions {
    /// ID scope devices must use.
    pub id_scope: String,
    /// Allocation policy of every enrollment.
    pub allocation: Allocation,
    /// `retry-after` in 202 answers, seconds.
    pub retry_after: u32,
    /// Time allocation takes before it starts (on top of the webhook's own time).
    pub assignment_delay: Duration,
    /// Answer the register request with the terminal 200 (MQTT); HTTPS still answers 202.
    pub immediate: bool,
    /// The linked hubs with their allocation settings.
    pub hubs: Vec<HubOptions>,
    /// DPS quotas, when emulated.
    pub throttle: Option<Throttle>,
    /// What the emulator accepts before it answers 429 (overload, as DPS does when busy).
    pub admission: Admission,
    /// Keep registrations in this file across restarts.
    pub persist: Option<PathBuf>,
    /// After a device registered with one key (primary/secondary), refuse the other.
    pub key_pinning: bool,
    /// Accepted clock skew on SAS expiry.
    pub sas_skew: Duration,
    /// How the emulator reaches the embedded reference webhook (a scenario's own `target.url`
    /// is always called over HTTP).
    pub webhook: WebhookTransport,
}

/// `[emulator] webhook`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookTransport {
    /// Called in this process: the same request body and the same answer, without a loopback
    /// HTTP exchange per registration (the default: that exchange measures the harness).
    InProcess,
    /// Served on a loopback HTTP port and POSTed to, as DPS reaches a function.
    Http,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        Self {
            id_scope: "0ne00000A0A".into(),
            allocation: Allocation::Custom,
            retry_after: 3,
            assignment_delay: Duration::ZERO,
            immediate: false,
            hubs: Vec::new(),
            throttle: None,
            admission: Admission::default(),
            persist: None,
            key_pinning: true,
            sas_skew: Duration::from_secs(300),
            webhook: WebhookTransport::InProcess,
        }
    }
}

/// DPS allocation policies (dps-protocol.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// POST the AllocationRequest to the webhook.
    Custom,
    /// Weighted hash of the registration ID.
    Hashed,
    /// The enrollment's single hub.
    Static,
    /// The lowest-latency hub.
    GeoLatency,
}

impl Allocation {
    /// The REST name.
    pub fn name(self) -> &'static str {
        match self {
            Allocation::Custom => "custom",
            Allocation::Hashed => "hashed",
            Allocation::Static => "static",
            Allocation::GeoLatency => "geoLatency",
        }
    }
}

/// A linked hub as the emulator's allocation sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct HubOptions {
    /// Host name.
    pub host: String,
    /// `allocationWeight` (1–1000).
    pub weight: u32,
    /// `applyAllocationPolicy`: false = never chosen by hashed/geoLatency allocation.
    pub apply_allocation_policy: bool,
    /// Latency used by `geoLatency`.
    pub latency: Duration,
}

/// Emulated DPS quotas (dps-protocol.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// Registrations per minute per service (1,000 today).
    pub registrations_per_minute: u32,
    /// Polls per 10 seconds per device (5).
    pub polls_per_10s: u32,
}

/// Admission control (`[emulator] admission`): beyond these the emulator answers a register with
/// 429 and `retry-after` (over MQTT on the response topic, over HTTPS as the status), as DPS does
/// when it is busy, instead of letting connections queue until the kernel drops them. UNCONFIRMED
/// how DPS picks its ceilings; these are ours, documented in scenarios/README.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// New registrations accepted per second (a token bucket of one second's burst); `None` = no
    /// rate ceiling.
    pub registrations_per_second: Option<u32>,
    /// Registrations being allocated at once (register received, allocation not finished).
    pub in_progress: u32,
    /// `retry-after` seconds in the 429.
    pub retry_after: u32,
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            registrations_per_second: None,
            in_progress: 20_000,
            retry_after: 1,
        }
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            registrations_per_minute: 1000,
            polls_per_10s: 5,
        }
    }
}

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
        if let Some(w) = &e.webhook {
            o.webhook = match w.get_ref().as_str() {
                "in-process" => WebhookTransport::InProcess,
                "http" => WebhookTransport::Http,
                other => {
                    return self.err(
                        w.span(),
                        "emulator.webhook",
                        format!("`{other}`: choose \"in-process\" or \"http\""),
                    )
                }
            };
        }
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
        if let Some(a) = &e.admission {
            let at_least_1 = |v: &Option<toml::Spanned<u32>>, key: &str| match v {
                Some(x) if *x.get_ref() == 0 => self.err(x.span(), key, "must be at least 1"),
                Some(x) => Ok(Some(*x.get_ref())),
                None => Ok(None),
            };
            let d = Admission::default();
            o.admission = Admission {
                registrations_per_second: at_least_1(
                    &a.registrations_per_second,
                    "emulator.admission.registrations_per_second",
                )?,
                in_progress: at_least_1(&a.in_progress, "emulator.admission.in_progress")?
                    .unwrap_or(d.in_progress),
                retry_after: at_least_1(&a.retry_after, "emulator.admission.retry_after")?
                    .unwrap_or(d.retry_after),
            };
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

impl Validator<'_> {
    pub(super) fn capacity(
        &self,
        c: &Option<raw::Capacity>,
        enrollment: &super::Enrollment,
    ) -> Result<super::CapacityOptions> {
        let hubs = enrollment
            .group
            .as_ref()
            .map_or(enrollment.linked_hubs.len(), |g| g.offered_hubs.len())
            .max(1) as u32;
        let mut limits = crate::capacity::Limits {
            hubs,
            ..crate::capacity::Limits::default()
        };
        let Some(c) = c else {
            return Ok(super::CapacityOptions {
                fleet: None,
                limits,
            });
        };
        if let Some(r) = &c.dps_registrations_per_minute {
            if r.get_ref().is_nan() || *r.get_ref() <= 0.0 {
                return self.err(
                    r.span(),
                    "capacity.dps_registrations_per_minute",
                    "a positive number",
                );
            }
            limits.dps_registrations_per_minute = *r.get_ref();
        }
        if let Some(t) = &c.hub_tier {
            limits.hub_tier = match crate::capacity::HubTier::parse(t.get_ref()) {
                Some(x) => x,
                None => {
                    return self.err(
                        t.span(),
                        "capacity.hub_tier",
                        "choose from: S1, S2, S3 (B1-B3, F1)",
                    )
                }
            };
        }
        limits.dps_instances = c.dps_instances.unwrap_or(1).max(1);
        limits.hub_units = c.hub_units.unwrap_or(1).max(1);
        limits.webhook_instances = c.webhook_instances.unwrap_or(1).max(1);
        if let Some(t) = &c.tiers {
            for (i, (name, o)) in [("S1", &t.s1), ("S2", &t.s2), ("S3", &t.s3)]
                .into_iter()
                .enumerate()
            {
                let Some(o) = o else { continue };
                let offer = &mut limits.tiers[i];
                let field = format!("capacity.tiers.{name}");
                let bad = |what: &str| self.err(o.span(), &field, what);
                let v = o.get_ref();
                if let Some(n) = v.max_units {
                    if n == 0 {
                        return bad("max_units: at least 1");
                    }
                    offer.max_units = n;
                }
                if let Some(r) = v.registry_per_minute {
                    if !r.is_finite() || r <= 0.0 {
                        return bad("registry_per_minute: a positive number");
                    }
                    offer.registry_per_minute = r;
                }
                if let Some(p) = v.usd_per_unit_month {
                    if !p.is_finite() || p < 0.0 {
                        return bad("usd_per_unit_month: a number of 0 or more");
                    }
                    offer.usd_per_unit_month = p;
                }
            }
        }
        Ok(super::CapacityOptions {
            fleet: c.fleet,
            limits,
        })
    }
}

impl Validator<'_> {
    pub(super) fn search(&self, s: &Option<raw::Search>) -> Result<super::Search> {
        let mut out = super::Search::default();
        let Some(s) = s else { return Ok(out) };
        let pos = |v: &Option<toml::Spanned<f64>>, key: &str| -> Result<Option<f64>> {
            match v {
                Some(x) if !(*x.get_ref() > 0.0 && x.get_ref().is_finite()) => {
                    self.err(x.span(), key, "a positive number")
                }
                Some(x) => Ok(Some(*x.get_ref())),
                None => Ok(None),
            }
        };
        if let Some(v) = pos(&s.start, "load.search.start")? {
            out.start = v;
        }
        if let Some(v) = pos(&s.factor, "load.search.factor")? {
            if v <= 1.0 {
                return self.err(
                    s.factor.as_ref().map_or(0..0, |f| f.span()),
                    "load.search.factor",
                    "must be greater than 1",
                );
            }
            out.factor = v;
        }
        out.step = pos(&s.step, "load.search.step")?;
        if let Some(v) = pos(&s.max, "load.search.max")? {
            out.max = v;
        }
        if let Some(h) = &s.hold {
            out.hold = self.duration(h, "load.search.hold")?;
            if out.hold.is_zero() {
                return self.err(h.span(), "load.search.hold", "must be greater than zero");
            }
        }
        Ok(out)
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
