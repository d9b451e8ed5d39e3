//! `loadtest plan`: the capacity search (stepped open-loop rates until the SLO fails) and the
//! onboarding simulation at its knee, printed and written as a plan report. The search and the
//! simulation are `crate::plan`'s; this only maps arguments and the verdict to an exit code.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use super::options::parse_selection;
use super::{banner, on_ctrl_c, EXIT_FAIL, EXIT_INTERRUPTED, EXIT_PASS};
use crate::run::Overrides;
use crate::scenario::{Flags, Scenario, SearchFlags};
use crate::threshold::Selection;

#[derive(Debug, Args)]
pub(super) struct PlanArgs {
    /// Scenario file (TOML).
    scenario: PathBuf,
    /// Webhook URL (overrides target.url).
    #[arg(long)]
    url: Option<String>,
    /// Devices to onboard (default: `[capacity] fleet`, else the distinct devices the scenario
    /// expects to be assigned).
    #[arg(long)]
    fleet: Option<u64>,
    /// Onboard the fleet within this time, e.g. 24h: the plan sizes hubs, DPS and webhooks for it.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    within: std::time::Duration,
    /// First rate per second (overrides `[load] search.start`).
    #[arg(long)]
    start: Option<f64>,
    /// Multiply the rate by this after each passing step.
    #[arg(long)]
    factor: Option<f64>,
    /// Add this to the rate after each passing step (instead of --factor).
    #[arg(long)]
    step: Option<f64>,
    /// How long each rate is held, e.g. 5s.
    #[arg(long)]
    hold: Option<String>,
    /// Highest rate tried.
    #[arg(long)]
    max: Option<f64>,
    /// Plan directory (default: reports/<scenario>-plan-<UTC timestamp>/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Which thresholds to evaluate: all, counts (skip latency, service-time, schedule-lag and
    /// throughput thresholds, whose verdict depends on how busy the machine is), none.
    #[arg(long, value_parser = parse_selection, default_value = "all")]
    thresholds: Selection,
    /// Then simulate the fleet's onboarding (no sockets): devices arriving on `--arrival`, retrying
    /// as the device SDKs do, against the DPS quota, the hubs' registry and the webhook at the
    /// knee (or at `--webhook-rate`, without a search).
    #[arg(long)]
    simulate: bool,
    /// How the fleet arrives in the simulation: `burst` (all at once, after an outage) or
    /// `ramp:DURATION` (evenly, e.g. ramp:2h).
    #[arg(long, default_value = "burst", value_parser = crate::simulate::Arrival::parse, requires = "simulate")]
    arrival: crate::simulate::Arrival,
    /// Registrations/s one webhook instance carries (`inf`: unlimited); skips the search.
    #[arg(long, requires = "simulate")]
    webhook_rate: Option<f64>,
    /// Webhook call latency in the simulation with --webhook-rate, e.g. 20ms.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration, requires = "webhook_rate")]
    webhook_latency: std::time::Duration,
    /// One request's round trip in the simulation (default 1 ms to the embedded emulator, 50 ms
    /// to Azure).
    #[arg(long, value_parser = humantime::parse_duration, requires = "simulate")]
    rtt: Option<std::time::Duration>,
}

pub(super) async fn plan_command(a: PlanArgs) -> anyhow::Result<u8> {
    let flags = Flags {
        url: a.url,
        search: SearchFlags {
            start: a.start,
            factor: a.factor,
            step: a.step,
            hold: a.hold,
            max: a.max,
        },
        ..Flags::default()
    };
    let s = Scenario::load_with(&a.scenario, &flags)?;
    let o = Overrides {
        out: a.out,
        progress: false,
        thresholds: a.thresholds,
        ..Overrides::default()
    };
    let stop = on_ctrl_c(s.load.grace)?;
    banner("plan", &s);
    let storm = a.simulate.then_some(crate::plan::storm::StormArgs {
        arrival: a.arrival,
        webhook_per_s: a.webhook_rate,
        webhook_latency_s: a.webhook_latency.as_secs_f64(),
        rtt: a.rtt,
    });
    if a.webhook_rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        bail!("--webhook-rate must be a positive number of registrations per second (or inf)");
    }
    let (plan, dir) = crate::plan::plan(&s, &o, a.fleet, a.within, storm, stop.clone()).await?;
    say!("\n{}", crate::plan::text(&plan).trim_end());
    say!("plan: {}", dir.join("report.html").display());
    Ok(if stop.level() > 0 {
        EXIT_INTERRUPTED
    } else if let Some(sim) = plan.simulation.as_ref().filter(|_| plan.steps.is_empty()) {
        if sim.complete {
            EXIT_PASS
        } else {
            EXIT_FAIL
        }
    } else if plan.knee.is_some() {
        EXIT_PASS
    } else {
        EXIT_FAIL
    })
}
