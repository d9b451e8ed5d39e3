//! `loadtest plan --simulate`: builds the onboarding-storm [`Model`] from a scenario and the
//! webhook capacity (measured by the search, or given), runs it (`simulate.rs`), and renders the
//! prediction: text with a chart for the terminal, `simulation.json`, and an SVG for the plan's
//! report. Chooses the model's limits; does no simulating itself.
//!
//! Against the embedded emulator (device modes without `[target] endpoint`) the limits are the
//! emulator's own (`[emulator] throttle`, `admission`, `retry_after`, `immediate`), so the
//! prediction can be checked against a run; otherwise they are Azure's from `[capacity]` (DPS
//! quota × instances, the hubs' identity registry), with DPS's 202 `retry-after` of 3 s.

use std::fmt::Write as _;
use std::time::Duration;

use crate::capacity;
use crate::dps::session::Polling;
use crate::scenario::{Mode, Scenario, Trust};
use crate::simulate::{Arrival, Model, Prediction, Stage};

/// What `plan --simulate` takes besides the scenario.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StormArgs {
    /// How the fleet arrives.
    pub arrival: Arrival,
    /// Registrations/s one webhook instance carries; `None` = unlimited.
    pub webhook_per_s: Option<f64>,
    /// Time one webhook call takes, seconds.
    pub webhook_latency_s: f64,
    /// One request's round trip (default: 1 ms to the embedded emulator, 50 ms to Azure).
    pub rtt: Option<Duration>,
}

/// True when the scenario's devices register with the emulator started in-process.
fn embedded(s: &Scenario) -> bool {
    s.target.mode != Mode::Webhook && s.target.device.endpoint.is_none()
}

/// The model of onboarding `fleet` devices of scenario `s`.
pub(crate) fn model(s: &Scenario, fleet: u64, a: &StormArgs, within: Duration) -> Model {
    let d = &s.target.device;
    let polling = Polling {
        floor: d.poll_floor,
        cap: d.poll_cap,
        backoff_initial: d.backoff_initial,
        backoff_max: d.backoff_max,
    };
    let l = &s.capacity.limits;
    let webhook = Stage {
        name: "webhook".into(),
        per_second: a
            .webhook_per_s
            .filter(|r| r.is_finite())
            .map(|r| r * f64::from(l.webhook_instances.max(1))),
        latency_s: a.webhook_latency_s,
    };
    let horizon_s = (30.0 * 86_400.0_f64).max(2.0 * within.as_secs_f64());
    if embedded(s) {
        let e = &s.emulator;
        let rtt = a.rtt.map_or(0.001, |d| d.as_secs_f64());
        Model {
            fleet,
            arrival: a.arrival,
            connect_s: rtt * if d.tls == Trust::Plain { 2.0 } else { 4.0 },
            rtt_s: rtt,
            quota_per_minute: e.throttle.map(|t| f64::from(t.registrations_per_minute)),
            admission_per_second: e.admission.registrations_per_second.map(f64::from),
            in_progress: Some(f64::from(e.admission.in_progress)),
            admission_retry_after: e.admission.retry_after,
            stages: vec![Stage {
                latency_s: webhook.latency_s + e.assignment_delay.as_secs_f64(),
                ..webhook
            }],
            poll_retry_after: e.retry_after,
            immediate: e.immediate && matches!(s.target.mode, Mode::Mqtt | Mode::MqttWs),
            polling,
            horizon_s,
        }
    } else {
        let rtt = a.rtt.map_or(0.05, |d| d.as_secs_f64());
        let registry =
            l.registry_per_second(l.hub_tier) * f64::from(l.hub_units) * f64::from(l.hubs.max(1));
        Model {
            fleet,
            arrival: a.arrival,
            // TCP, TLS and CONNACK: three round trips.
            connect_s: 3.0 * rtt,
            rtt_s: rtt,
            quota_per_minute: Some(l.dps_registrations_per_minute * f64::from(l.dps_instances)),
            admission_per_second: None,
            in_progress: None,
            admission_retry_after: 1,
            stages: vec![
                webhook,
                Stage {
                    name: "hub registry".into(),
                    per_second: Some(registry),
                    latency_s: 0.0,
                },
            ],
            poll_retry_after: 3,
            immediate: false,
            polling,
            horizon_s,
        }
    }
}

fn arrival_text(a: Arrival) -> String {
    match a {
        Arrival::Burst => "all at once".into(),
        Arrival::Ramp(d) => format!("evenly over {}", capacity::human(d)),
    }
}

/// The prediction as text: a summary and a chart of devices onboarded over time.
pub(crate) fn text(p: &Prediction) -> String {
    let m = &p.model;
    let mut o = String::new();
    let mut limits = Vec::new();
    if let Some(q) = m.quota_per_minute {
        limits.push(format!("DPS quota {q:.0} registrations/min"));
    }
    if let Some(r) = m.admission_per_second {
        limits.push(format!("admission {r:.0}/s"));
    }
    for s in &m.stages {
        if let Some(r) = s.per_second {
            limits.push(format!("{} {r:.1}/s", s.name));
        }
    }
    let _ = writeln!(
        o,
        "Onboarding storm (simulated, no sockets): {} devices arriving {} against {}.",
        m.fleet,
        arrival_text(m.arrival),
        if limits.is_empty() {
            "no limits".into()
        } else {
            limits.join(", ")
        }
    );
    match p.fleet_s {
        Some(t) => {
            let _ = writeln!(o, "  100 % onboarded after {}", capacity::human(t));
        }
        None => {
            let _ = writeln!(
                o,
                "  only {} of {} onboarded within the {} simulated",
                p.onboarded,
                m.fleet,
                capacity::human(m.horizon_s)
            );
        }
    }
    let _ = writeln!(
        o,
        "  time to onboard per device: p50 {}, p99 {}, slowest {}",
        seconds(p.p50_s),
        seconds(p.p99_s),
        seconds(p.max_s)
    );
    let _ = writeln!(
        o,
        "  429 answers {}, registers sent {}, polls {}, peak concurrency {} devices; binding limit: {}",
        p.throttled, p.registers, p.polls, p.peak_concurrency, p.binding
    );
    o.push_str(&chart(&p.curve, m.fleet as f64));
    o
}

/// `850 ms`, `12.3 s`, else `capacity::human`.
fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else {
        capacity::human(s)
    }
}

/// Devices onboarded over time, as 8 rows of 60 columns.
fn chart(curve: &[(f64, f64)], fleet: f64) -> String {
    const W: usize = 60;
    const H: usize = 8;
    let Some(end) = curve.last().map(|c| c.0).filter(|e| *e > 0.0) else {
        return String::new();
    };
    // The share onboarded at the end of each column.
    let cols: Vec<f64> = (0..W)
        .map(|c| {
            let t = end * (c + 1) as f64 / W as f64;
            // Linear between the curve's points.
            let i = curve.partition_point(|p| p.0 <= t);
            let n = match (i.checked_sub(1).map(|j| curve[j]), curve.get(i)) {
                (Some(a), Some(b)) if b.0 > a.0 => a.1 + (b.1 - a.1) * (t - a.0) / (b.0 - a.0),
                (Some(a), _) => a.1,
                (None, _) => 0.0,
            };
            n / fleet.max(1.0)
        })
        .collect();
    let mut o = String::new();
    for r in (0..H).rev() {
        let level = (r as f64 + 0.5) / H as f64;
        let label = if r == H - 1 {
            "100%"
        } else if r == 0 {
            "  0%"
        } else {
            "    "
        };
        let row: String = cols
            .iter()
            .map(|v| if *v >= level { '#' } else { ' ' })
            .collect();
        let _ = writeln!(o, "  {label} |{row}");
    }
    let _ = writeln!(o, "       +{}", "-".repeat(W));
    let _ = writeln!(o, "        0{:>w$}", capacity::human(end), w = W - 1);
    o
}

/// The prediction as an SVG line (devices onboarded over time) for the plan's report.
pub(crate) fn svg(p: &Prediction) -> String {
    let (w, h) = (640.0, 240.0);
    let end = p.curve.last().map_or(1.0, |c| c.0).max(1e-9);
    let fleet = (p.model.fleet as f64).max(1.0);
    let points: Vec<String> = p
        .curve
        .iter()
        .map(|(t, n)| {
            format!(
                "{:.1},{:.1}",
                40.0 + t / end * (w - 60.0),
                h - 30.0 - n / fleet * (h - 50.0)
            )
        })
        .collect();
    format!(
        "<h2>Onboarding storm (simulated)</h2><svg width={w} height={h} role=img aria-label=\"devices onboarded over time\"><line x1=40 y1={y0} x2={x1} y2={y0} stroke=#888 /><line x1=40 y1=20 x2=40 y2={y0} stroke=#888 /><text x=4 y=24 font-size=11>{fleet:.0}</text><text x=30 y={yl} font-size=11>0</text><text x={xe} y={yl} font-size=11>{}</text><polyline fill=none stroke=#1f77b4 stroke-width=2 points=\"{}\"/></svg><pre>{}</pre>",
        capacity::human(end),
        points.join(" "),
        text(p).replace('<', "&lt;"),
        y0 = h - 30.0,
        x1 = w - 20.0,
        yl = h - 14.0,
        xe = w - 80.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_rises_to_the_fleet() {
        let c = chart(&[(0.0, 0.0), (5.0, 50.0), (10.0, 100.0)], 100.0);
        let rows: Vec<&str> = c.lines().collect();
        assert_eq!(rows.len(), 10, "{c}");
        // The top row is filled only at the end, the bottom one from early on.
        assert!(
            rows[0].trim_end().ends_with('#') && !rows[0].contains("|#"),
            "{c}"
        );
        let filled = |r: &str| r.matches('#').count();
        assert!(filled(rows[7]) > 50 && filled(rows[0]) < 10, "{c}");
        assert!(
            (0..7).all(|i| filled(rows[i]) <= filled(rows[i + 1])),
            "{c}"
        );
        assert!(rows[9].trim_end().ends_with("10 s"), "{c}");
    }
}
