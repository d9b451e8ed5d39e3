//! The emulator's counters: registrations, polls, throttled and refused requests, terminal
//! outcomes. Shown by `GET /stats`, the Ctrl-C line of `loadtest dps serve`, and benchmarks.

use std::sync::atomic::{AtomicU64, Ordering};

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
