//! The emulator's counters: registrations, polls, throttled and refused requests, terminal
//! outcomes. Shown by `GET /stats`, the Ctrl-C line of `loadtest dps serve`, its
//! `--metrics-addr` endpoint ([`Exported`]), and benchmarks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use crate::progress::exporter::{counters, gauge};

/// Counters for the log and the stats line.
#[derive(Debug, Default)]
pub struct Counters {
    /// Register requests accepted.
    pub registrations: AtomicU64,
    /// Poll requests answered.
    pub polls: AtomicU64,
    /// Requests answered 429 (quotas and admission control).
    pub throttled: AtomicU64,
    /// Of them, register requests shed by admission control (the emulator was busy).
    pub admission_refused: AtomicU64,
    /// Devices refused at authentication.
    pub refused: AtomicU64,
    /// Terminal `assigned`.
    pub assigned: AtomicU64,
    /// Terminal `failed`.
    pub failed: AtomicU64,
    /// Terminal `disabled`.
    pub disabled: AtomicU64,
}

impl Counters {
    /// The counters as a JSON object (`GET /stats`).
    pub fn json(&self) -> String {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "registrations": n(&self.registrations),
            "polls": n(&self.polls),
            "throttled": n(&self.throttled),
            "admission_refused": n(&self.admission_refused),
            "refused": n(&self.refused),
            "assigned": n(&self.assigned),
            "failed": n(&self.failed),
            "disabled": n(&self.disabled),
        })
        .to_string()
    }
}

/// The emulator's counters at `GET /metrics` (`dps serve --metrics-addr`), read at each scrape:
/// `dps_emulator_registrations_total`, `_polls_total`, `_throttled_total`,
/// `_admission_refused_total`, `_auth_refused_total`, `_terminal_total{status}` and the gauge
/// `dps_emulator_in_progress` (registrations being allocated).
#[derive(Debug)]
pub struct Exported(pub Arc<super::Emulator>);

impl Collector for Exported {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.0.counters;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let one = |v: u64| vec![(Vec::new(), v)];
        for (name, help, v) in [
            (
                "dps_emulator_registrations",
                "Register requests accepted.",
                n(&c.registrations),
            ),
            ("dps_emulator_polls", "Poll requests answered.", n(&c.polls)),
            (
                "dps_emulator_throttled",
                "Requests answered 429 (quotas and admission control).",
                n(&c.throttled),
            ),
            (
                "dps_emulator_admission_refused",
                "Of the 429s, registers shed by admission control.",
                n(&c.admission_refused),
            ),
            (
                "dps_emulator_auth_refused",
                "Devices refused at authentication.",
                n(&c.refused),
            ),
        ] {
            counters(&mut encoder, name, help, &one(v))?;
        }
        let terminal: Vec<_> = [
            ("assigned", &c.assigned),
            ("failed", &c.failed),
            ("disabled", &c.disabled),
        ]
        .into_iter()
        .map(|(s, v)| (vec![("status", s.to_owned())], n(v)))
        .collect();
        counters(
            &mut encoder,
            "dps_emulator_terminal",
            "Registrations ended, by terminal status.",
            &terminal,
        )?;
        gauge(
            &mut encoder,
            "dps_emulator_in_progress",
            "Registrations being allocated now.",
            n(&self.0.in_progress) as f64,
        )
    }
}
