//! Per-phase timings of a device registration (connect, first response, DPS time, polls, 429s,
//! connect retries and timeouts) and their run-wide histograms. Device modes only; webhook mode
//! has no phases.

use std::time::Duration;

use hdrhistogram::Histogram;

use super::{us, HIGHEST_US};

/// Per-phase timings of one device registration.
#[derive(Debug, Clone, Default)]
pub struct Phases {
    /// TCP + TLS + CONNACK (MQTT).
    pub connect: Option<Duration>,
    /// Register request → first response.
    pub first_response: Option<Duration>,
    /// Register request → terminal status (what DPS spent).
    pub dps: Option<Duration>,
    /// Operation-status polls.
    pub polls: u32,
    /// Time spent waiting on `retry-after` (and 429 back-off).
    pub retry_wait: Duration,
    /// 429 answers.
    pub throttled: u32,
    /// The twin was read and checked.
    pub twin_checked: bool,
    /// Connect attempts after the first (`target.connect_retries`).
    pub connect_retries: u32,
    /// Connect attempts that ran past `target.connect_timeout`.
    pub connect_timeouts: u32,
}

/// Histograms of the phases (µs; polls as counts).
#[derive(Debug, Clone)]
pub struct PhaseHistos {
    /// TCP + TLS + CONNACK.
    pub connect: Histogram<u64>,
    /// Register → first response.
    pub first_response: Histogram<u64>,
    /// Register → terminal.
    pub dps: Histogram<u64>,
    /// Waiting on retry-after.
    pub retry_wait: Histogram<u64>,
    /// Polls per device.
    pub polls: Histogram<u64>,
    /// 429 answers in total.
    pub throttled: u64,
    /// Devices that saw at least one 429.
    pub throttled_devices: u64,
    /// Twins read and checked.
    pub twins_checked: u64,
    /// Connect attempts after the first.
    pub connect_retries: u64,
    /// Connect attempts that timed out.
    pub connect_timeouts: u64,
}

impl Default for PhaseHistos {
    fn default() -> Self {
        Self::new()
    }
}

impl PhaseHistos {
    /// Empty histograms.
    pub fn new() -> Self {
        let h = || Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid histogram bounds");
        Self {
            connect: h(),
            first_response: h(),
            dps: h(),
            retry_wait: h(),
            polls: Histogram::new_with_bounds(1, 100_000, 3).expect("valid histogram bounds"),
            throttled: 0,
            throttled_devices: 0,
            twins_checked: 0,
            connect_retries: 0,
            connect_timeouts: 0,
        }
    }

    pub(super) fn record(&mut self, p: &Phases) {
        let rec = |h: &mut Histogram<u64>, d: Option<Duration>| {
            if let Some(d) = d {
                h.saturating_record(us(d));
            }
        };
        rec(&mut self.connect, p.connect);
        rec(&mut self.first_response, p.first_response);
        rec(&mut self.dps, p.dps);
        self.retry_wait.saturating_record(us(p.retry_wait));
        self.polls.saturating_record(u64::from(p.polls));
        self.throttled += u64::from(p.throttled);
        self.throttled_devices += u64::from(p.throttled > 0);
        self.twins_checked += u64::from(p.twin_checked);
        self.connect_retries += u64::from(p.connect_retries);
        self.connect_timeouts += u64::from(p.connect_timeouts);
    }
}
