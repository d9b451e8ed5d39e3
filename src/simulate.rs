//! The onboarding-storm simulation behind `loadtest plan --simulate`: a fleet arrives on a curve
//! (all at once after an outage, or a ramp) and registers, each device waiting between requests
//! by the drivers' own rules ([`Polling`]: a 429's `retry-after`, polls after the 202's), against
//! what limits provisioning: DPS's registrations-per-minute quota (a sliding 60 s window, kept as
//! the emulator keeps it), an admission ceiling (a token bucket of one second's burst and a cap on
//! registrations in progress, as `[emulator] admission`), then the allocation stages a registration
//! passes once accepted (the webhook, the hubs' identity registry), each a FIFO server of a rate.
//!
//! A discrete-time fluid model, not one event per device: devices are counts grouped by when they
//! arrived, so ten million cost about what a thousand do. Because every stage is FIFO at a fixed
//! rate, an accepted group's finishing time is known when it is accepted; only the refused wait in
//! a calendar. Pure arithmetic: no sockets, no clock, no randomness (a 429 with `retry-after` is
//! waited out as given, without jitter, by the drivers too). Knows nothing of scenarios: `plan`
//! builds the [`Model`].

use serde::Serialize;

use crate::dps::session::Polling;

/// How the fleet arrives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) enum Arrival {
    /// Every device at once (power returns after an outage).
    Burst,
    /// Evenly over this many seconds.
    Ramp(f64),
}

impl Arrival {
    /// `burst`, or `ramp:30m` (any humantime duration).
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        if s == "burst" {
            return Ok(Arrival::Burst);
        }
        let d = s
            .strip_prefix("ramp:")
            .ok_or_else(|| format!("`{s}`: expected `burst` or `ramp:DURATION` (e.g. ramp:30m)"))?;
        let d = humantime::parse_duration(d).map_err(|e| format!("`{s}`: {e}"))?;
        if d.is_zero() {
            return Ok(Arrival::Burst);
        }
        Ok(Arrival::Ramp(d.as_secs_f64()))
    }

    fn span_s(self) -> f64 {
        match self {
            Arrival::Burst => 0.0,
            Arrival::Ramp(d) => d,
        }
    }
}

/// One stage an accepted registration passes, in order (FIFO).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Stage {
    /// What it is (`webhook`, `hub registry`).
    pub name: String,
    /// Registrations per second it serves; `None` = unlimited.
    pub per_second: Option<f64>,
    /// Time one registration spends in it besides waiting for the rate, seconds.
    pub latency_s: f64,
}

/// What the simulation assumes.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Model {
    /// Devices.
    pub fleet: u64,
    /// How they arrive.
    pub arrival: Arrival,
    /// From a device's arrival to its register reaching DPS (connect, TLS, CONNACK), seconds.
    pub connect_s: f64,
    /// One request's round trip, seconds.
    pub rtt_s: f64,
    /// DPS registrations per minute (sliding 60 s window); `None` = no quota.
    pub quota_per_minute: Option<f64>,
    /// Admission: registrations accepted per second (one second's burst); `None` = no ceiling.
    pub admission_per_second: Option<f64>,
    /// Admission: registrations in progress at most; `None` = no cap.
    pub in_progress: Option<f64>,
    /// `retry-after` of an admission refusal, seconds.
    pub admission_retry_after: u32,
    /// The allocation stages.
    pub stages: Vec<Stage>,
    /// `retry-after` of the 202 `assigning` answer (the poll interval), seconds.
    pub poll_retry_after: u32,
    /// The register is answered with the terminal state (no polls).
    pub immediate: bool,
    /// The devices' wait rules.
    #[serde(skip)]
    pub polling: Polling,
    /// Stop after this much simulated time, seconds.
    pub horizon_s: f64,
}

/// What the simulation predicts.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Prediction {
    /// The model it ran.
    pub model: Model,
    /// The time step, seconds.
    pub step_s: f64,
    /// Devices onboarded (assigned and told so) within the horizon.
    pub onboarded: u64,
    /// Every device onboarded within the horizon.
    pub complete: bool,
    /// From the first arrival until the last device is onboarded, seconds.
    pub fleet_s: Option<f64>,
    /// Per device, arrival to onboarded: median, seconds.
    pub p50_s: f64,
    /// … 99th percentile.
    pub p99_s: f64,
    /// … the slowest device.
    pub max_s: f64,
    /// 429 answers.
    pub throttled: u64,
    /// Devices arrived and not yet onboarded, at most.
    pub peak_concurrency: u64,
    /// Registers sent, with retries.
    pub registers: u64,
    /// Operation-status polls.
    pub polls: u64,
    /// The limit that delayed devices the most (device-seconds spent waiting on it: refused by
    /// `DPS quota`, `admission rate`, `in progress`, or queued in a stage, by its name), or `none`.
    pub binding: String,
    /// (seconds, devices onboarded by then), at most 200 points.
    pub curve: Vec<(f64, f64)>,
}

/// Devices that reach DPS together: how many, and when they arrived on average.
#[derive(Debug, Clone, Copy)]
struct Group {
    arrived: f64,
    n: f64,
}

/// Groups in one calendar slot are merged per arrival cohort, so a slot holds at most this many.
const COHORTS: f64 = 64.0;
/// Below this a fluid remainder counts as no device.
const EPSILON: f64 = 1e-6;

/// Runs the model.
pub(crate) fn simulate(m: &Model) -> Prediction {
    let fleet = m.fleet as f64;
    // The step: fine enough for the shortest wait, coarse enough that a week-long storm of ten
    // million devices stays well under a second of steps per simulated hour.
    let slowest = [
        m.quota_per_minute.map(|q| q / 60.0),
        m.admission_per_second,
        m.stages
            .iter()
            .filter_map(|s| s.per_second)
            .reduce(f64::min),
    ]
    .into_iter()
    .flatten()
    .fold(f64::INFINITY, f64::min);
    let estimate = m.arrival.span_s()
        + m.connect_s
        + if slowest.is_finite() {
            fleet / slowest
        } else {
            0.0
        }
        + 60.0;
    let dt = (estimate.min(m.horizon_s) / 200_000.0).clamp(0.001, 1.0);
    let wait_s =
        |retry_after: u32| m.polling.throttled(Some(retry_after), 0, 1.0).as_secs_f64() + m.rtt_s;
    let poll_period = m.rtt_s
        + m.polling
            .after(Some(m.poll_retry_after))
            .as_secs_f64()
            .max(dt);
    let longest_wait = wait_s(m.admission_retry_after.max(61)).max(m.connect_s);
    let slots = (longest_wait / dt).ceil() as usize + 2;
    let mut calendar: Vec<Vec<(usize, Group)>> = vec![Vec::new(); slots];
    let cohort_s = (m.arrival.span_s() / COHORTS).max(dt);
    let cohort = |arrived: f64| (arrived / cohort_s) as usize;
    let book = |calendar: &mut Vec<Vec<(usize, Group)>>, at: usize, g: Group| {
        let slot = &mut calendar[at % slots];
        let c = cohort(g.arrived);
        if let Some((_, e)) = slot.iter_mut().find(|(k, _)| *k == c) {
            let n = e.n + g.n;
            e.arrived = (e.arrived * e.n + g.arrived * g.n) / n;
            e.n = n;
        } else {
            slot.push((c, g));
        }
    };
    let steps_of = |s: f64| (s / dt).round() as usize;

    let max_steps = (m.horizon_s / dt).ceil() as usize;
    // Milliseconds up to 139 years: no horizon reaches past it.
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 1 << 42, 3)
        .expect("valid histogram bounds");
    let mut onboarded_at: Vec<f64> = Vec::new();
    let mut arrived_at: Vec<f64> = Vec::new();
    let mut released_at: Vec<f64> = Vec::new();
    let mut stage_free: Vec<f64> = vec![0.0; m.stages.len()];
    let mut window: std::collections::VecDeque<(f64, f64)> = Default::default();
    let mut window_used = 0.0;
    let mut tokens = m.admission_per_second.unwrap_or(0.0);
    let mut in_progress = 0.0;
    let (mut waiting, mut arrived_total, mut accepted_total) = (0.0, 0.0, 0.0);
    let (mut throttled, mut requests, mut polls) = (0.0, 0.0, 0.0);
    // Device-seconds of delay per limit: in progress, admission rate, quota, then each stage.
    let mut delay_by = vec![0.0_f64; 3 + m.stages.len()];
    let mut last_onboard = 0.0_f64;
    let mut k = 0usize;
    let add = |v: &mut Vec<f64>, i: usize, x: f64| {
        if v.len() <= i {
            v.resize(i + 1, 0.0);
        }
        v[i] += x;
    };
    while k < max_steps {
        let t = k as f64 * dt;
        // Arrivals of this step reach DPS after `connect_s`.
        let arriving = match m.arrival {
            Arrival::Burst if k == 0 => fleet,
            Arrival::Burst => 0.0,
            Arrival::Ramp(d) => (fleet * dt / d).min(fleet - arrived_total).max(0.0),
        };
        if arriving > EPSILON {
            arrived_total += arriving;
            waiting += arriving;
            add(&mut arrived_at, k, arriving);
            let arrived = match m.arrival {
                Arrival::Burst => 0.0,
                Arrival::Ramp(_) => t + dt / 2.0,
            };
            book(
                &mut calendar,
                k + steps_of(m.connect_s),
                Group {
                    arrived,
                    n: arriving,
                },
            );
        }
        // Registrations whose allocation finished leave the in-progress count.
        if let Some(r) = released_at.get_mut(k) {
            in_progress -= std::mem::take(r);
        }
        while window.front().is_some_and(|(t0, _)| *t0 <= t - 60.0) {
            window_used -= window.pop_front().map_or(0.0, |w| w.1);
        }
        if let Some(rate) = m.admission_per_second {
            tokens = (tokens + rate * dt).min(rate);
        }
        let due = std::mem::take(&mut calendar[k % slots]);
        let total: f64 = due.iter().map(|(_, g)| g.n).sum();
        if total > EPSILON {
            requests += total;
            // The emulator's order: registrations in progress, the admission rate, the quota.
            let room = [
                m.in_progress.map(|c| (c - in_progress).max(0.0)),
                m.admission_per_second.map(|_| tokens.max(0.0)),
                m.quota_per_minute.map(|q| (q - window_used).max(0.0)),
            ];
            let mut admit = total;
            let mut binding = None;
            for (i, r) in room.iter().enumerate() {
                if let Some(r) = r {
                    if *r < admit {
                        admit = *r;
                        binding = Some(i);
                    }
                }
            }
            let refused = total - admit;
            let fraction = admit / total;
            if admit > 0.0 {
                tokens -= admit;
                in_progress += admit;
                accepted_total += admit;
                window.push_back((t, admit));
                window_used += admit;
            }
            if refused > EPSILON {
                throttled += refused;
                // As the emulator says it: whole seconds until the oldest leaves the window.
                let retry_after = match binding {
                    Some(2) => window
                        .front()
                        .map_or(1, |(t0, _)| (t0 + 60.0 - t).floor().max(1.0) as u32),
                    _ => m.admission_retry_after,
                };
                let again = k + steps_of(wait_s(retry_after)).max(1);
                if let Some(b) = binding {
                    delay_by[b] += refused * (again - k) as f64 * dt;
                }
                for (_, g) in &due {
                    book(
                        &mut calendar,
                        again,
                        Group {
                            arrived: g.arrived,
                            n: g.n * (1.0 - fraction),
                        },
                    );
                }
            }
            // The accepted pass the stages in order; FIFO at a fixed rate, so when they finish
            // is known now.
            for (_, g) in &due {
                let n = g.n * fraction;
                if n <= EPSILON {
                    continue;
                }
                let (mut start, mut end) = (t + m.rtt_s / 2.0, t + m.rtt_s / 2.0);
                for (i, s) in m.stages.iter().enumerate() {
                    match s.per_second {
                        Some(rate) => {
                            let begin = stage_free[i].max(start);
                            // Queued: on average half the group's own service time on top.
                            delay_by[3 + i] += n * (begin - start + n / rate / 2.0);
                            stage_free[i] = begin + n / rate;
                            start = begin + s.latency_s;
                            end = stage_free[i] + s.latency_s;
                        }
                        None => {
                            start += s.latency_s;
                            end += s.latency_s;
                        }
                    }
                }
                add(&mut released_at, steps_of(end).max(k + 1), n);
                // The group finishes evenly over [start, end]: recorded in pieces.
                let pieces = (((end - start) / dt).ceil() as usize).clamp(1, 16);
                for p in 0..pieces {
                    let done = start + (end - start) * (p as f64 + 0.5) / pieces as f64;
                    let told = if m.immediate {
                        done + m.rtt_s / 2.0
                    } else {
                        // The device polls every period after its 202 until one sees the end.
                        let rounds = ((done - t) / poll_period).ceil().max(1.0);
                        polls += rounds * n / pieces as f64;
                        t + rounds * poll_period
                    };
                    let share = n / pieces as f64;
                    last_onboard = last_onboard.max(told);
                    add(&mut onboarded_at, steps_of(told), share);
                    let ms = ((told - g.arrived) * 1000.0).max(1.0).round() as u64;
                    let weight = (share * 1000.0).round() as u64;
                    if weight > 0 {
                        hist.saturating_record_n(ms, weight);
                    }
                }
            }
            waiting -= admit;
        }
        k += 1;
        if arrived_total >= fleet - EPSILON && waiting <= EPSILON {
            break;
        }
    }
    let complete = accepted_total >= fleet - 0.5;
    // The curve and the peak from the per-step counts.
    let len = onboarded_at.len().max(arrived_at.len());
    let (mut arrived, mut done, mut peak) = (0.0, 0.0, 0.0_f64);
    let mut cumulative = Vec::with_capacity(len);
    for i in 0..len {
        arrived += arrived_at.get(i).copied().unwrap_or(0.0);
        done += onboarded_at.get(i).copied().unwrap_or(0.0);
        peak = peak.max(arrived - done);
        cumulative.push(done);
    }
    let every = len.div_ceil(200).max(1);
    let mut curve: Vec<(f64, f64)> = (0..len)
        .step_by(every)
        .map(|i| (i as f64 * dt, cumulative[i]))
        .collect();
    if let Some(last) = cumulative.last() {
        curve.push(((len - 1) as f64 * dt, *last));
    }
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    let names: Vec<&str> = ["in progress", "admission rate", "DPS quota"]
        .into_iter()
        .chain(m.stages.iter().map(|s| s.name.as_str()))
        .collect();
    // Less than a millisecond per device in all is no limit.
    let binding = delay_by
        .iter()
        .enumerate()
        .filter(|(_, d)| **d > fleet * 0.001)
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or("none", |(i, _)| names[i]);
    Prediction {
        model: m.clone(),
        step_s: dt,
        onboarded: accepted_total.min(fleet).round() as u64,
        complete,
        fleet_s: complete.then_some(last_onboard),
        p50_s: q(0.5),
        p99_s: q(0.99),
        max_s: hist.max() as f64 / 1000.0,
        throttled: throttled.round() as u64,
        registers: requests.round() as u64,
        polls: polls.round() as u64,
        peak_concurrency: peak.round() as u64,
        binding: binding.into(),
        curve,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const POLLING: Polling = Polling {
        floor: Duration::ZERO,
        cap: Duration::from_secs(60),
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(30),
    };

    fn model(fleet: u64) -> Model {
        Model {
            fleet,
            arrival: Arrival::Burst,
            connect_s: 0.0,
            rtt_s: 0.0,
            quota_per_minute: None,
            admission_per_second: None,
            in_progress: None,
            admission_retry_after: 1,
            stages: Vec::new(),
            poll_retry_after: 3,
            immediate: true,
            polling: POLLING,
            horizon_s: 30.0 * 86_400.0,
        }
    }

    #[test]
    fn unlimited_devices_onboard_at_once() {
        let p = simulate(&model(1000));
        assert!(p.complete);
        assert_eq!(p.onboarded, 1000);
        assert_eq!(p.throttled, 0);
        assert!(p.max_s < 0.01, "{p:?}");
        assert_eq!(p.binding, "none");
    }

    /// A token bucket of 100/s with a one-second burst, devices retrying after 1 s: 1,000 at once
    /// take about 9 s (100 at once, then 100 each second), and the refused retry every second.
    #[test]
    fn an_admission_rate_spreads_a_burst_over_retries() {
        let p = simulate(&Model {
            admission_per_second: Some(100.0),
            ..model(1000)
        });
        assert!(p.complete);
        let fleet = p.fleet_s.unwrap();
        assert!((8.5..=9.5).contains(&fleet), "{fleet}");
        assert!((4.0..=5.5).contains(&p.p50_s), "{p:?}");
        // 1000 + 900 + … + 100 registers, minus the 1000 that got through.
        assert!((4400..=4600).contains(&p.throttled), "{p:?}");
        assert_eq!(p.binding, "admission rate");
        assert_eq!(p.peak_concurrency, 900);
    }

    /// The quota is a sliding minute: 2,500 devices at 1,000/min go in three waves a minute apart,
    /// told to wait until the window frees.
    #[test]
    fn the_quota_admits_a_minute_at_a_time() {
        let p = simulate(&Model {
            quota_per_minute: Some(1000.0),
            ..model(2500)
        });
        assert!(p.complete);
        let fleet = p.fleet_s.unwrap();
        assert!((119.0..=122.0).contains(&fleet), "{fleet}");
        assert_eq!(p.binding, "DPS quota");
        // 1,500 refused at once, 500 a minute later, and retries that land as the window turns.
        assert!((1500..=3000).contains(&p.throttled), "{p:?}");
    }

    /// A webhook of 50/s binds when DPS admits faster: 500 devices take 10 s, and pollers see the
    /// end at their next poll after it.
    #[test]
    fn a_slow_stage_queues_and_polls_round_up() {
        let p = simulate(&Model {
            stages: vec![Stage {
                name: "webhook".into(),
                per_second: Some(50.0),
                latency_s: 0.0,
            }],
            immediate: false,
            poll_retry_after: 2,
            ..model(500)
        });
        assert!(p.complete);
        let fleet = p.fleet_s.unwrap();
        assert!((10.0..=12.5).contains(&fleet), "{fleet}");
        // Told at a multiple of the 2 s poll period.
        assert!(
            (fleet / 2.0 - (fleet / 2.0).round()).abs() < 0.01,
            "{fleet}"
        );
        assert_eq!(p.throttled, 0);
        assert_eq!(p.binding, "webhook");
        assert!(p.polls >= 500, "{p:?}");
    }

    /// A ramp: devices arriving over 100 s at 10/s against a 20/s ceiling wait for nothing.
    #[test]
    fn a_ramp_below_the_ceiling_is_never_refused() {
        let p = simulate(&Model {
            arrival: Arrival::Ramp(100.0),
            admission_per_second: Some(20.0),
            ..model(1000)
        });
        assert!(p.complete);
        assert_eq!(p.throttled, 0);
        assert!(p.max_s < 0.1, "{p:?}");
        assert!((99.0..=101.0).contains(&p.fleet_s.unwrap()), "{p:?}");
        assert!(p.peak_concurrency <= 2, "{p:?}");
        assert_eq!(p.binding, "none");
    }

    /// Ten million devices after an outage against the default DPS quota: a week, simulated in
    /// well under the minute even in a debug build.
    #[test]
    fn ten_million_devices_simulate() {
        let p = simulate(&Model {
            quota_per_minute: Some(1000.0),
            ..model(10_000_000)
        });
        assert!(p.complete);
        let days = p.fleet_s.unwrap() / 86_400.0;
        assert!((6.8..=7.0).contains(&days), "{days}");
        // All arrive at once; the first minute's 1,000 are through before the next step.
        assert_eq!(p.peak_concurrency, 9_999_000);
    }

    #[test]
    fn arrivals_parse() {
        assert_eq!(Arrival::parse("burst"), Ok(Arrival::Burst));
        assert_eq!(Arrival::parse("ramp:2m"), Ok(Arrival::Ramp(120.0)));
        assert!(Arrival::parse("ramp").is_err());
        assert!(Arrival::parse("ramp:soon").is_err());
    }
}
