//! Capacity math: how fast a fleet can be onboarded through one set-up, which limit binds, and
//! how many DPS instances, IoT Hub units and webhook instances would lift each limit. Limits come
//! from the documentation (dps-protocol.md §8), each with its source and date, and can be
//! overridden in the scenario's `[capacity]`. Pure arithmetic; nothing here measures.

use std::time::Duration;

use serde::Serialize;

/// IoT Hub tier (identity-registry throttle per unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HubTier {
    /// Free, B1, S1 (also B2, S2 for the registry): 100 operations/min/unit.
    S1,
    /// B2, S2: 100 operations/min/unit.
    S2,
    /// B3, S3: 5,000 operations/min/unit.
    S3,
}

impl HubTier {
    /// Parses `S1`, `S2`, `S3` (also `B1`…`B3`, `F1`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "S1" | "B1" | "F1" | "FREE" => HubTier::S1,
            "S2" | "B2" => HubTier::S2,
            "S3" | "B3" => HubTier::S3,
            _ => return None,
        })
    }

    /// New device connections per second for `units` units (S1: 100/s or 12/s/unit, whichever
    /// is higher; S2: 120/s/unit; S3: 6,000/s/unit).
    pub fn connections_per_second(self, units: u32) -> f64 {
        let u = f64::from(units);
        match self {
            HubTier::S1 => (12.0 * u).max(100.0),
            HubTier::S2 => 120.0 * u,
            HubTier::S3 => 6000.0 * u,
        }
    }
}

/// The limits assumed, overridable in `[capacity]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Limits {
    /// DPS device registrations per minute per DPS instance.
    pub dps_registrations_per_minute: f64,
    /// DPS instances.
    pub dps_instances: u32,
    /// IoT Hub tier.
    pub hub_tier: HubTier,
    /// Units per hub.
    pub hub_units: u32,
    /// Hubs the devices are spread over.
    pub hubs: u32,
    /// Webhook instances (the measured rate is per instance).
    pub webhook_instances: u32,
    /// What each tier offers (S1, S2, S3): unit cap, registry quota, price (`[capacity.tiers]`
    /// overrides any of them; default [`TIERS`]).
    pub tiers: [TierOffer; 3],
}

impl Limits {
    /// What `tier` offers under these limits.
    pub(crate) fn offer(&self, tier: HubTier) -> &TierOffer {
        self.tiers
            .iter()
            .find(|t| t.tier == tier)
            .expect("every tier has an offer")
    }

    /// Identity-registry operations per second of one unit of `tier`.
    pub(crate) fn registry_per_second(&self, tier: HubTier) -> f64 {
        self.offer(tier).registry_per_minute / 60.0
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            dps_registrations_per_minute: 1000.0,
            dps_instances: 1,
            hub_tier: HubTier::S1,
            hub_units: 1,
            hubs: 1,
            webhook_instances: 1,
            tiers: TIERS,
        }
    }
}

/// The documented limits and where they come from (shown in reports).
pub(crate) const SOURCES: &[(&str, &str)] = &[
    (
        "DPS device registrations: 1,000/min per service (adjustable); operations 1,000/min; polls 5 per 10 s per device",
        "Azure IoT DPS quotas and limits, learn.microsoft.com/azure/iot-dps/about-iot-dps#quotas-and-limits (include iot-dps-limits.md, version of 2026-04-24; the 2018 version said 200/min)",
    ),
    (
        "IoT Hub identity-registry operations: 100/min/unit (Free, B1/S1, B2/S2), 5,000/min/unit (B3/S3)",
        "IoT Hub quotas and throttling, learn.microsoft.com/azure/iot-hub/iot-hub-devguide-quotas-throttling (current in 2026)",
    ),
    (
        "IoT Hub new device connections: S1 100/s or 12/s/unit whichever is higher, S2 120/s/unit, S3 6,000/s/unit",
        "IoT Hub quotas and throttling (same page)",
    ),
];

/// The estimate for a fleet.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Estimate {
    /// Devices to onboard.
    pub fleet: u64,
    /// Registrations/s the webhook set-up sustains (measured).
    pub webhook_per_s: f64,
    /// Registrations/s DPS allows.
    pub dps_per_s: f64,
    /// Registrations/s the hubs' identity registries allow.
    pub hubs_per_s: f64,
    /// New device connections/s the hubs allow (each provisioned device then connects).
    pub connections_per_s: f64,
    /// Which limit binds: `webhook`, `dps` or `hub registry`.
    pub binding: String,
    /// The onboarding rate (the smallest of the three), per second.
    pub rate_per_s: f64,
    /// Time to onboard the fleet at that rate, seconds.
    pub onboard_s: f64,
    /// To lift every limit to the highest of the rates: DPS instances needed.
    pub dps_instances_needed: u32,
    /// … IoT Hub units per hub needed.
    pub hub_units_needed: u32,
    /// … webhook instances needed.
    pub webhook_instances_needed: u32,
    /// Time to onboard at that highest rate, seconds.
    pub onboard_unbound_s: f64,
    /// The limits assumed.
    pub limits: Limits,
}

/// Estimates onboarding `fleet` devices with a webhook that sustains `webhook_per_s` per instance.
pub(crate) fn estimate(fleet: u64, webhook_per_s: f64, limits: &Limits) -> Estimate {
    let webhook = webhook_per_s * f64::from(limits.webhook_instances);
    let dps = limits.dps_registrations_per_minute / 60.0 * f64::from(limits.dps_instances);
    let hubs = limits.registry_per_second(limits.hub_tier)
        * f64::from(limits.hub_units)
        * f64::from(limits.hubs.max(1));
    let connections =
        limits.hub_tier.connections_per_second(limits.hub_units) * f64::from(limits.hubs.max(1));
    let (binding, rate) = [
        ("webhook", webhook),
        ("dps", dps),
        ("hub registry", hubs),
        ("hub connections", connections),
    ]
    .into_iter()
    .min_by(|a, b| a.1.total_cmp(&b.1))
    .expect("four candidates");
    let top = webhook.max(dps).max(hubs).max(connections);
    let per_instance_dps = limits.dps_registrations_per_minute / 60.0;
    let per_unit_hubs = limits.registry_per_second(limits.hub_tier) * f64::from(limits.hubs.max(1));
    let ceil = |x: f64| x.ceil().max(1.0) as u32;
    Estimate {
        fleet,
        webhook_per_s: webhook,
        dps_per_s: dps,
        hubs_per_s: hubs,
        connections_per_s: connections,
        binding: binding.into(),
        rate_per_s: rate,
        onboard_s: if rate > 0.0 {
            fleet as f64 / rate
        } else {
            f64::INFINITY
        },
        dps_instances_needed: ceil(top / per_instance_dps),
        hub_units_needed: ceil(top / per_unit_hubs),
        webhook_instances_needed: if webhook_per_s > 0.0 {
            ceil(top / webhook_per_s)
        } else {
            0
        },
        onboard_unbound_s: if top > 0.0 {
            fleet as f64 / top
        } else {
            f64::INFINITY
        },
        limits: limits.clone(),
    }
}

/// What one IoT Hub tier offers: the most units one hub may have, the identity-registry quota
/// per unit, and the unit price.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TierOffer {
    /// The tier.
    pub tier: HubTier,
    /// Units one hub may have (S1/S2: 200, S3: 10).
    pub max_units: u32,
    /// Identity-registry operations per minute per unit (S1/S2: 100, S3: 5,000).
    pub registry_per_minute: f64,
    /// Price of one unit per month, USD.
    pub usd_per_unit_month: f64,
}

/// The tiers a plan chooses from, with caps and list prices. UNCONFIRMED prices: Azure list prices
/// for the US regions as the project last read them; they change, and regions differ. Override
/// them, the unit caps or the registry quotas with `[capacity.tiers]`, e.g.
/// `S1 = { usd_per_unit_month = 30 }`.
pub(crate) const TIERS: [TierOffer; 3] = [
    TierOffer {
        tier: HubTier::S1,
        max_units: 200,
        registry_per_minute: 100.0,
        usd_per_unit_month: 25.0,
    },
    TierOffer {
        tier: HubTier::S2,
        max_units: 200,
        registry_per_minute: 100.0,
        usd_per_unit_month: 250.0,
    },
    TierOffer {
        tier: HubTier::S3,
        max_units: 10,
        registry_per_minute: 5000.0,
        usd_per_unit_month: 2500.0,
    },
];

/// Where [`TIERS`] comes from.
pub(crate) const TIER_SOURCE: &str = "unit caps: IoT Hub scaling, learn.microsoft.com/azure/iot-hub/iot-hub-scaling (S1/S2 up to 200 units per hub, S3 up to 10; read 2026); \
prices: azure.microsoft.com/pricing/details/iot-hub (S1 $25, S2 $250, S3 $2,500 per unit-month, US list prices, UNCONFIRMED as of 2026-12; regions differ)";

/// One way to onboard a fleet in time: hubs of one tier, the DPS throughput, the webhook
/// instances, and the monthly hub cost.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HubOption {
    /// The tier.
    pub tier: HubTier,
    /// Hubs.
    pub hubs: u32,
    /// Units per hub (within the tier's cap).
    pub units_per_hub: u32,
    /// Monthly hub cost, USD.
    pub usd_per_month: f64,
    /// Registrations/s these hubs allow (identity registry and new connections).
    pub hubs_per_s: f64,
}

/// How to onboard `fleet` devices within `within`: the registrations/s it takes, the cheapest
/// hub set-up per tier, and the DPS and webhook side.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sizing {
    /// Devices.
    pub fleet: u64,
    /// The deadline, seconds.
    pub within_s: f64,
    /// Registrations per second needed.
    pub rate_per_s: f64,
    /// Per tier, the fewest units that carry the rate (cheapest first).
    pub options: Vec<HubOption>,
    /// DPS registrations per minute needed (the default quota is 1,000/min per instance).
    pub dps_per_minute: f64,
    /// DPS instances at the default quota (each a separate ID scope baked into devices).
    pub dps_instances: u32,
    /// Webhook instances at the measured rate per instance.
    pub webhook_instances: u32,
    /// The tier figures used, where `[capacity.tiers]` changed them from [`TIERS`].
    pub tiers_overridden: Vec<TierOffer>,
}

/// Sizes hubs, DPS and webhook so that `fleet` devices onboard within `within_s` seconds, given a
/// webhook that sustains `webhook_per_s` per instance and at least `min_hubs` hubs.
pub(crate) fn size(fleet: u64, within_s: f64, webhook_per_s: f64, limits: &Limits) -> Sizing {
    let rate = fleet as f64 / within_s.max(1.0);
    let min_hubs = limits.hubs.max(1);
    let mut options: Vec<HubOption> = limits
        .tiers
        .iter()
        .map(|t| {
            // Both hub limits must carry the rate: the identity registry and new connections.
            let carries = |hubs: u32, units: u32| {
                let h = f64::from(hubs);
                (t.registry_per_minute / 60.0 * f64::from(units) * h)
                    .min(t.tier.connections_per_second(units) * h)
            };
            let mut hubs = min_hubs;
            loop {
                if let Some(units) = (1..=t.max_units).find(|u| carries(hubs, *u) >= rate) {
                    break HubOption {
                        tier: t.tier,
                        hubs,
                        units_per_hub: units,
                        usd_per_month: f64::from(hubs * units) * t.usd_per_unit_month,
                        hubs_per_s: carries(hubs, units),
                    };
                }
                // More hubs: as many as the cap leaves short, at least one more.
                let per_hub = carries(1, t.max_units).max(1e-9);
                hubs = hubs.max((rate / per_hub).ceil() as u32).max(hubs + 1);
            }
        })
        .collect();
    options.sort_by(|a, b| a.usd_per_month.total_cmp(&b.usd_per_month));
    let per_instance = limits.dps_registrations_per_minute / 60.0;
    Sizing {
        fleet,
        within_s,
        rate_per_s: rate,
        options,
        dps_per_minute: rate * 60.0,
        dps_instances: (rate / per_instance).ceil().max(1.0) as u32,
        webhook_instances: if webhook_per_s > 0.0 {
            (rate / webhook_per_s).ceil().max(1.0) as u32
        } else {
            0
        },
        tiers_overridden: limits
            .tiers
            .iter()
            .zip(TIERS)
            .filter(|(t, d)| **t != *d)
            .map(|(t, _)| *t)
            .collect(),
    }
}

/// `3 h 12 min`, `45 s`.
pub(crate) fn human(secs: f64) -> String {
    if !secs.is_finite() {
        return "never".into();
    }
    let d = Duration::from_secs_f64(secs.max(0.0));
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{:.1} days", secs / 86_400.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_limit_binds_and_the_fix_is_counted() {
        // A webhook at 200/s, DPS at 1,000/min (16.7/s), two S1 hubs of one unit (3.3/s).
        let l = Limits {
            hubs: 2,
            ..Limits::default()
        };
        let e = estimate(1_000_000, 200.0, &l);
        assert_eq!(e.binding, "hub registry");
        assert!((e.rate_per_s - 200.0 / 60.0).abs() < 1e-9);
        assert_eq!(
            e.onboard_s.round(),
            (1_000_000.0 * 60.0 / 200.0_f64).round()
        );
        // To run at the webhook's 200/s: 12 DPS instances, 60 S1 units per hub, 1 webhook.
        assert_eq!(e.dps_instances_needed, 12);
        assert_eq!(e.hub_units_needed, 60);
        assert_eq!(e.webhook_instances_needed, 1);
        let s3 = estimate(
            1_000_000,
            200.0,
            &Limits {
                hub_tier: HubTier::S3,
                hubs: 2,
                ..Limits::default()
            },
        );
        assert_eq!(s3.binding, "dps");
        assert_eq!(human(3600.0 * 5.5), "5 h 30 min");
    }

    /// A million devices in a day: every option stays within its tier's unit cap (the old plan
    /// said "601 units per hub"), the cheapest comes first, and each carries the rate.
    #[test]
    fn sizing_stays_within_every_tier_cap() {
        let z = size(1_000_000, 86_400.0, 500.0, &Limits::default());
        assert!((z.rate_per_s - 1_000_000.0 / 86_400.0).abs() < 1e-9);
        assert_eq!(z.options.len(), 3);
        for o in &z.options {
            let cap = TIERS.iter().find(|t| t.tier == o.tier).unwrap().max_units;
            assert!(o.units_per_hub <= cap, "{o:?}");
            assert!(o.hubs_per_s >= z.rate_per_s, "{o:?}");
        }
        assert!(z
            .options
            .windows(2)
            .all(|w| w[0].usd_per_month <= w[1].usd_per_month));
        // 11.6/s needs 7 S1 units (1.67/s each) in one hub, or one S3 unit (83/s).
        let s1 = z.options.iter().find(|o| o.tier == HubTier::S1).unwrap();
        assert_eq!((s1.hubs, s1.units_per_hub), (1, 7));
        let s3 = z.options.iter().find(|o| o.tier == HubTier::S3).unwrap();
        assert_eq!((s3.hubs, s3.units_per_hub), (1, 1));
        assert_eq!(
            z.dps_instances, 1,
            "694/min fits the default 1,000/min quota"
        );
        assert_eq!(z.webhook_instances, 1);
        // Ten million in an hour (2,778/s): S1 needs more hubs than one at its 200-unit cap.
        let big = size(10_000_000, 3600.0, 500.0, &Limits::default());
        let s1 = big.options.iter().find(|o| o.tier == HubTier::S1).unwrap();
        assert!(s1.hubs > 1 && s1.units_per_hub <= 200, "{s1:?}");
        assert_eq!(big.dps_instances, 167);
        assert_eq!(big.webhook_instances, 6);
        // Overridden prices reorder the options: a free S3 comes first.
        let mut tiers = TIERS;
        tiers[2].usd_per_unit_month = 0.0;
        let cheap_s3 = size(
            1_000_000,
            86_400.0,
            500.0,
            &Limits {
                tiers,
                ..Limits::default()
            },
        );
        assert_eq!(cheap_s3.options[0].tier, HubTier::S3);
        assert_eq!(cheap_s3.options[0].usd_per_month, 0.0);
    }
}
