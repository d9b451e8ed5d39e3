//! `loadtest plan`: the capacity search. Stepped open-loop rates (start, then × factor or + step,
//! each held for `hold`) until a step fails its SLO: the scenario's thresholds and expectations,
//! no unanswered requests, no 429s, and at least 90 % of the offered rate achieved. The knee is the
//! highest passing rate; Little's law gives the concurrency the target held there; the capacity
//! math (`capacity.rs`) turns the knee into onboarding time and the binding limit.
//!
//! Each step is an ordinary run with its own report under the plan directory; this module only
//! chooses the rates, judges the steps and writes `plan.json`, `plan.md` and `report.html`. With
//! `--simulate`, `storm.rs` then simulates the fleet's onboarding at the knee (or at a given
//! webhook rate, without a search).

pub(crate) mod storm;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::capacity::{self, Estimate};
use crate::driver::Stop;
use crate::report::{html, Summary};
use crate::run::{self, Overrides, RunError};
use crate::scenario::Scenario;
use crate::simulate::{self, Prediction};
use crate::threshold::Selection;
use storm::StormArgs;

/// One step of the search.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Step {
    /// Offered rate, per second.
    pub rate: f64,
    /// Achieved answers per second.
    pub achieved: f64,
    /// Latency percentiles (µs).
    pub p50_us: u64,
    /// p99 (µs).
    pub p99_us: u64,
    /// Mean latency (µs).
    pub mean_us: f64,
    /// Passed the SLO.
    pub passed: bool,
    /// Why not (empty when passed).
    pub why: Vec<String>,
    /// The step's report directory.
    pub report: String,
}

/// The search result.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Plan {
    /// Scenario name.
    pub scenario: String,
    /// Every step, in order.
    pub steps: Vec<Step>,
    /// The highest passing rate.
    pub knee: Option<f64>,
    /// Achieved throughput at the knee.
    pub knee_throughput: Option<f64>,
    /// Little's law at the knee: throughput × mean latency.
    pub concurrency_at_knee: Option<f64>,
    /// The first failing rate and why.
    pub first_failure: Option<(f64, Vec<String>)>,
    /// Capacity estimate from the knee.
    pub capacity: Option<Estimate>,
    /// Hubs × units per tier, DPS and webhook instances to onboard the fleet within `--within`.
    pub sizing: Option<capacity::Sizing>,
    /// No step failed: the knee is only a lower bound (the search stopped at its maximum).
    pub bounded: bool,
    /// The onboarding-storm simulation (`--simulate`).
    pub simulation: Option<Prediction>,
}

/// Why a step fails the SLO (empty = pass). The achieved-rate criterion is a timing one: it is
/// left out with the timing thresholds (`--thresholds counts|none`).
fn judge(s: &Summary, offered: f64, selection: Selection) -> Vec<String> {
    let mut why = Vec::new();
    for t in s.thresholds.iter().filter(|t| !t.passed) {
        why.push(format!("threshold {} (measured {})", t.name, t.measured));
    }
    if s.expectations.failed > 0 {
        why.push(format!(
            "{} answers did not meet their expectation",
            s.expectations.failed
        ));
    }
    let r = &s.requests;
    let unanswered = r.failed + r.timed_out + r.not_sent;
    if unanswered > 0 {
        why.push(format!(
            "{unanswered} requests unanswered ({} errors, {} timed out, {} not sent)",
            r.failed, r.timed_out, r.not_sent
        ));
    }
    if let Some(p) = &s.phases {
        if p.throttled_429 > 0 {
            why.push(format!("{} answers were 429 (throttled)", p.throttled_429));
        }
    }
    if selection == Selection::All && s.throughput_per_s < 0.9 * offered {
        why.push(format!(
            "achieved {:.1}/s of {offered:.1}/s offered",
            s.throughput_per_s
        ));
    }
    why
}

/// `--out`, else `reports/<scenario>-plan-<UTC timestamp>/`.
fn plan_dir(s: &Scenario, o: &Overrides) -> PathBuf {
    o.out.clone().unwrap_or_else(|| {
        let stamp: String = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .chars()
            .filter(|c| *c != '-' && *c != ':')
            .collect();
        s.report.out.join(format!("{}-plan-{stamp}", s.name))
    })
}

/// Runs the search (and with `storm`, the simulation). `o` carries `--url`, `--out` (the plan directory) and progress.
pub(crate) async fn plan(
    s: &Scenario,
    o: &Overrides,
    fleet: Option<u64>,
    within: std::time::Duration,
    storm: Option<StormArgs>,
    stop: Stop,
) -> Result<(Plan, PathBuf), RunError> {
    let search = s.load.search;
    let dir = plan_dir(s, o);
    let fleet = fleet
        .or(s.capacity.fleet)
        .unwrap_or_else(|| s.fleet_to_assign());
    // A given webhook rate: no search, only the simulation.
    if let Some((a, rate)) = storm.and_then(|a| Some((a, a.webhook_per_s?))) {
        let p = simulate::simulate(&storm::model(s, fleet, &a, within));
        // The given rate stands in for the knee (an unlimited webhook: the sizing's own).
        let rate = if rate.is_finite() { rate } else { 0.0 };
        let plan = Plan {
            scenario: s.name.clone(),
            steps: Vec::new(),
            knee: None,
            knee_throughput: None,
            concurrency_at_knee: None,
            first_failure: None,
            capacity: (rate > 0.0).then(|| capacity::estimate(fleet, rate, &s.capacity.limits)),
            sizing: Some(capacity::size(
                fleet,
                within.as_secs_f64(),
                rate,
                &s.capacity.limits,
            )),
            bounded: false,
            simulation: Some(p),
        };
        write(&dir, &plan).map_err(|source| RunError::Report {
            path: dir.clone(),
            source,
        })?;
        return Ok((plan, dir));
    }
    let mut steps = Vec::new();
    let mut rate = search.start;
    let mut knee: Option<(f64, f64, f64)> = None;
    let mut first_failure = None;
    let mut n = 0;
    while rate <= search.max && stop.level() == 0 {
        n += 1;
        // Abort-on-fail stays on: a step that cannot pass ends early.
        let load = s.load.flat(rate, Some(search.hold), None);
        let report = dir.join(format!("step-{n:02}-{rate:.0}per-s"));
        let so = Overrides {
            out: Some(report.clone()),
            progress: false,
            ..o.clone()
        };
        let f = run::run(s, &load, &so, stop.clone(), None).await?;
        let summary = f.summary;
        let why = judge(&summary, rate, o.thresholds);
        let passed = why.is_empty();
        let _ = writeln!(
            std::io::stdout().lock(),
            "step {n}: {rate:.1}/s offered, {:.1}/s achieved, p50 {:.2} ms, p99 {:.2} ms: {}",
            summary.throughput_per_s,
            summary.latency_us.p50 as f64 / 1000.0,
            summary.latency_us.p99 as f64 / 1000.0,
            if passed {
                "pass".to_owned()
            } else {
                format!("FAIL: {}", why.join("; "))
            }
        );
        steps.push(Step {
            rate,
            achieved: summary.throughput_per_s,
            p50_us: summary.latency_us.p50,
            p99_us: summary.latency_us.p99,
            mean_us: summary.latency_us.mean,
            passed,
            why: why.clone(),
            report: report.display().to_string(),
        });
        if !passed {
            first_failure = Some((rate, why));
            break;
        }
        knee = Some((rate, summary.throughput_per_s, summary.latency_us.mean));
        rate = match search.step {
            Some(st) => rate + st,
            None => rate * search.factor,
        };
    }
    let simulation = storm.zip(knee).map(|(a, k)| {
        let a = StormArgs {
            webhook_per_s: Some(k.1),
            webhook_latency_s: k.2 / 1e6,
            ..a
        };
        simulate::simulate(&storm::model(s, fleet, &a, within))
    });
    let first_failure_rate = first_failure.as_ref().map(|(r, _)| *r);
    let plan = Plan {
        scenario: s.name.clone(),
        steps,
        knee: knee.map(|k| k.0),
        knee_throughput: knee.map(|k| k.1),
        concurrency_at_knee: knee.map(|k| k.1 * k.2 / 1e6),
        first_failure,
        capacity: knee.map(|k| capacity::estimate(fleet, k.1, &s.capacity.limits)),
        sizing: knee.map(|k| capacity::size(fleet, within.as_secs_f64(), k.1, &s.capacity.limits)),
        bounded: first_failure_rate.is_none(),
        simulation,
    };
    write(&dir, &plan).map_err(|source| RunError::Report {
        path: dir.clone(),
        source,
    })?;
    Ok((plan, dir))
}

/// The plan as markdown (also printed).
pub(crate) fn markdown(p: &Plan) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "## loadtest plan `{}`\n", p.scenario);
    if !p.steps.is_empty() {
        let _ = writeln!(
            o,
            "| offered /s | achieved /s | p50 ms | p99 ms | result |\n|---:|---:|---:|---:|---|"
        );
    }
    for s in &p.steps {
        let res = if s.passed {
            "pass".to_owned()
        } else {
            format!("fail: {}", s.why.join("; "))
        };
        let _ = writeln!(
            o,
            "| {:.1} | {:.1} | {:.2} | {:.2} | {res} |",
            s.rate,
            s.achieved,
            s.p50_us as f64 / 1000.0,
            s.p99_us as f64 / 1000.0
        );
    }
    match (p.knee, p.knee_throughput, p.concurrency_at_knee) {
        _ if p.steps.is_empty() => {
            let _ = writeln!(
                o,
                "No search: the sizing and the simulation use the given webhook rate."
            );
        }
        (Some(k), Some(t), Some(c)) => {
            let bound = if p.bounded { "≥ " } else { "" };
            let _ = writeln!(
                o,
                "\nKnee: **{bound}{k:.1}/s offered** ({t:.1}/s achieved, {:.0}/min); Little's law: {c:.1} requests in flight at the knee.",
                t * 60.0
            );
            if p.bounded {
                let _ = writeln!(
                    o,
                    "No step failed up to the search's maximum: the knee is a lower bound, not a measurement (raise `--max`)."
                );
            }
        }
        _ => {
            let _ = writeln!(
                o,
                "\nNo rate passed: the first step already failed its SLO."
            );
        }
    }
    if let Some((r, why)) = &p.first_failure {
        let _ = writeln!(o, "First failing rate: **{r:.1}/s**: {}.", why.join("; "));
    }
    if let Some(e) = &p.capacity {
        let cap = e.limits.offer(e.limits.hub_tier).max_units;
        // Within the tier's cap per hub: beyond it, more hubs of at most `cap` units.
        let total_units = e.hub_units_needed.saturating_mul(e.limits.hubs.max(1));
        let hub_setup = if e.hub_units_needed <= cap {
            format!(
                "{} hub(s) of {} {:?} unit(s)",
                e.limits.hubs.max(1),
                e.hub_units_needed,
                e.limits.hub_tier
            )
        } else {
            let hubs = total_units.div_ceil(cap);
            format!(
                "{hubs} hubs of {} {:?} units (the tier allows {cap} per hub)",
                total_units.div_ceil(hubs),
                e.limits.hub_tier
            )
        };
        let _ = writeln!(
            o,
            "\nOnboarding {} devices as configured: binding limit **{}** at {:.1}/s → **{}** (webhook {:.1}/s, DPS {:.1}/s, hub registry {:.1}/s). At the fastest of them, {:.1}/s, it takes {} DPS instance(s), {hub_setup} and {} webhook instance(s) → {}.",
            e.fleet, e.binding, e.rate_per_s, capacity::human(e.onboard_s), e.webhook_per_s, e.dps_per_s, e.hubs_per_s,
            e.webhook_per_s.max(e.dps_per_s).max(e.hubs_per_s).max(e.connections_per_s), e.dps_instances_needed,
            e.webhook_instances_needed, capacity::human(e.onboard_unbound_s)
        );
    }
    if let Some(z) = &p.sizing {
        let _ = writeln!(
            o,
            "\nTo onboard {} devices within {} ({:.1} registrations/s):\n",
            z.fleet,
            capacity::human(z.within_s),
            z.rate_per_s
        );
        let _ = writeln!(o, "| IoT Hub tier | hubs | units per hub | registrations/s | USD per month |\n|---|---:|---:|---:|---:|");
        for h in &z.options {
            let _ = writeln!(
                o,
                "| {:?} | {} | {} | {:.1} | {:.0} |",
                h.tier, h.hubs, h.units_per_hub, h.hubs_per_s, h.usd_per_month
            );
        }
        let _ = writeln!(
            o,
            "\nDPS: {:.0} registrations/min. At the default quota of 1,000/min per instance that is **{} DPS instance(s)**, each a separate ID scope that devices carry; or one instance with its quota raised by an Azure support request (one ID scope). Webhook: **{} instance(s)** at the knee's rate.",
            z.dps_per_minute, z.dps_instances, z.webhook_instances
        );
        let _ = writeln!(o, "\nSources: {}.", capacity::TIER_SOURCE);
        for t in &z.tiers_overridden {
            let _ = writeln!(
                o,
                "Overridden in [capacity.tiers]: {:?} at most {} units per hub, {} registry operations/min per unit, USD {} per unit-month.",
                t.tier, t.max_units, t.registry_per_minute, t.usd_per_unit_month
            );
        }
    }
    if let Some(p) = &p.simulation {
        let _ = writeln!(o, "\n```text\n{}```", storm::text(p));
    }
    o
}

/// The plan for a terminal: the markdown without its markup (tables as aligned columns).
pub(crate) fn text(p: &Plan) -> String {
    let md = markdown(p);
    let mut out = String::new();
    let mut table: Vec<Vec<String>> = Vec::new();
    let flush = |table: &mut Vec<Vec<String>>, out: &mut String| {
        if table.is_empty() {
            return;
        }
        let cols = table.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|i| {
                table
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for r in table.iter() {
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect();
            let _ = writeln!(out, "  {}", line.join("  ").trim_end());
        }
        table.clear();
    };
    for line in md.lines() {
        if line.starts_with("```") {
            continue;
        }
        if let Some(row) = line.strip_prefix('|') {
            let cells: Vec<String> = row
                .trim_end_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect();
            if !cells
                .iter()
                .all(|c| c.chars().all(|ch| matches!(ch, '-' | ':')))
            {
                table.push(cells);
            }
            continue;
        }
        flush(&mut table, &mut out);
        let plain = line
            .trim_start_matches("## ")
            .replace("**", "")
            .replace('`', "");
        let _ = writeln!(out, "{plain}");
    }
    flush(&mut table, &mut out);
    out
}

fn write(dir: &Path, p: &Plan) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("plan.json"),
        serde_json::to_vec_pretty(p).expect("the plan serialises"),
    )?;
    if let Some(sim) = &p.simulation {
        std::fs::write(
            dir.join("simulation.json"),
            serde_json::to_vec_pretty(sim).expect("the simulation serialises"),
        )?;
    }
    let md = markdown(p);
    std::fs::write(dir.join("plan.md"), &md)?;
    let curve: Vec<(f64, f64, u64, bool)> = p
        .steps
        .iter()
        .map(|s| (s.rate, s.achieved, s.p99_us, s.passed))
        .collect();
    let mut body = format!(
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>loadtest plan {}</title><style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.25em .6em}}</style></head><body><h1>Capacity plan: {}</h1>{}",
        p.scenario, p.scenario, html::curve_svg(&curve)
    );
    body.push_str("<table><tr><th>offered /s</th><th>achieved /s</th><th>p50 ms</th><th>p99 ms</th><th>result</th></tr>");
    for s in &p.steps {
        let _ = write!(
            body,
            "<tr><td>{:.1}</td><td>{:.1}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td></tr>",
            s.rate,
            s.achieved,
            s.p50_us as f64 / 1000.0,
            s.p99_us as f64 / 1000.0,
            if s.passed {
                "pass".into()
            } else {
                format!("fail: {}", s.why.join("; ")).replace('<', "&lt;")
            }
        );
    }
    body.push_str("</table>");
    // The simulation's text block is in its own section below.
    let text: String = md
        .split("\n```")
        .next()
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter(|l| !l.starts_with('|'))
        .map(|l| format!("<p>{}</p>", l.replace("**", "")))
        .collect();
    body.push_str(&text);
    if let Some(sim) = &p.simulation {
        body.push_str(&storm::svg(sim));
    }
    if let Some(e) = &p.capacity {
        body.push_str(&html::capacity_section(
            e,
            "The webhook rate is the achieved throughput at the knee of this search.",
        ));
    }
    body.push_str("</body></html>");
    std::fs::write(dir.join("report.html"), body)
}
