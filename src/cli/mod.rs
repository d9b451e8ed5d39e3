//! Command-line interface: parses arguments (clap derive), builds the runtime, dispatches, and
//! maps results to exit codes. Errors are reported here with context (`anyhow`); the library
//! modules return typed errors.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};

/// `println!` that never panics: a closed standard output (`loadtest run … | head`) drops the
/// rest of the text, and the command goes on to its exit code (the report is written anyway).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

mod banner;
mod conclude;
mod docs;
mod dps;
mod lifecycle;
mod options;
mod plan;
mod webhook;

use crate::conformance::{self, snapshot::Comparison};
use crate::device::keys::GroupKey;
use crate::driver::Stop;
use crate::run::{self, Overrides};
use crate::scenario::{Flags, Scenario};
use crate::threshold::Selection;
use crate::webhook::policy::Policy;
use banner::banner;
use conclude::{conclude, conclude_run, Output};
use dps::{dps_serve, DpsServeArgs};
use options::{
    parse_policy, parse_run_id, parse_selection, parse_shard, parse_start_at, Color, LimitArgs,
};

/// Exit code: every expectation met.
pub const EXIT_PASS: u8 = 0;
/// Exit code: an expectation failed.
pub const EXIT_FAIL: u8 = 1;
/// Exit code: usage, scenario or runtime error (including a target that never answered).
pub const EXIT_ERROR: u8 = 2;
/// Exit code: a threshold failed (k6's code), expectations and snapshot otherwise fine.
pub const EXIT_THRESHOLD: u8 = 99;
/// Exit code: interrupted by Ctrl-C (the report is still written).
pub const EXIT_INTERRUPTED: u8 = 130;

const EXIT_CODES: &str = "\
Exit codes:
  0    every expectation, threshold and (check) snapshot passed
  1    an expectation failed, requests went unanswered or unsent, or (check) the transcript
       differs from its snapshot or has none yet
  2    usage, scenario or runtime error (including a target that never answered)
  99   a threshold failed (or stopped the run with abort_on_fail); everything else passed
  130  interrupted by Ctrl-C (the report is still written, every request accounted for)";

/// Load and conformance tests for Azure IoT DPS custom allocation webhooks.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Colour in the snapshot diff: auto (on a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    color: Color,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario: drive its devices at its rate, check every outcome, write a report.
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
    /// Conformance gate: exercise every class, compare the outcome transcript with its snapshot,
    /// evaluate thresholds.
    #[command(after_help = EXIT_CODES)]
    Check(CheckArgs),
    /// Device keys derived from an enrollment-group key.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The reference webhook (the seed documents' allocation functions).
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// The DPS emulator (MQTT over TLS, HTTPS, custom allocation, IoT hub twins).
    #[command(subcommand)]
    Dps(DpsCommand),
    /// Reports: merge the reports of a sharded run.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Capacity search: stepped open-loop rates until the SLO (the scenario's thresholds and
    /// expectations) fails; prints the knee, the binding limit and the onboarding time.
    Plan(plan::PlanArgs),
    /// Create or update the scenario's enrollment group and individual enrollments on a DPS
    /// (DPS_SERVICE_CONNECTION_STRING): custom allocation to its webhook, hubs, twin, status.
    Setup(lifecycle::SetupArgs),
    /// Delete the scenario population's registration records from DPS and their device
    /// identities from the hubs (bulk, paced, resumable); nothing else.
    Cleanup(lifecycle::CleanupArgs),
    /// Shell completions: `loadtest completions bash > /etc/bash_completion.d/loadtest`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// The man page (roff): `loadtest man > loadtest.1 && man ./loadtest.1`.
    Man,
}

#[derive(Debug, Subcommand)]
enum ReportCommand {
    /// Merge the report directories of `run --shard i/n` into one report (histograms added
    /// exactly, counters summed, expectations and thresholds evaluated on the whole).
    #[command(after_help = EXIT_CODES)]
    Merge {
        /// Shard report directories.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where to write the merged report.
        #[arg(long)]
        out: PathBuf,
        /// The scenario (default: the `scenario_file` recorded in the first report).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Which thresholds to evaluate on the merged run: all, counts, none.
        #[arg(long, value_parser = parse_selection, default_value = "all")]
        thresholds: Selection,
        /// Merge even when shards are missing; the report's shard field says `partial`.
        #[arg(long)]
        allow_partial: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DpsCommand {
    /// Serve the emulator until Ctrl-C: prints the ID scope, endpoints, CA file and the hubs'
    /// connection strings, then one line per registration.
    Serve(DpsServeArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Scenario file (TOML).
    scenario: PathBuf,
    /// Webhook URL (overrides target.url; a `?code=` function key is never printed).
    #[arg(long)]
    url: Option<String>,
    /// Arrivals per second (open loop), or `max` for a closed loop.
    #[arg(long)]
    rate: Option<String>,
    /// Connections (closed loop: concurrent workers).
    #[arg(long)]
    connections: Option<u32>,
    /// Run length, e.g. 30s, 2m (overrides load.duration and load.count).
    #[arg(long)]
    duration: Option<String>,
    /// Number of requests (overrides load.duration and load.count).
    #[arg(long)]
    count: Option<u64>,
    /// Report directory (default: reports/<scenario>-<UTC timestamp>/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// No live progress line.
    #[arg(long)]
    no_progress: bool,
    /// Quiet: no banner, no progress, and only the verdict line (or the JSON) on stdout.
    #[arg(short, long)]
    quiet: bool,
    /// What stdout gets at the end: the text summary, or summary.json itself.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Also write one JSON line per completed second here while the run goes (counts, rate,
    /// errors, timeouts, 429s, p50/p99), for any other tool to follow.
    #[arg(long)]
    ndjson: Option<PathBuf>,
    /// Serve the live counters and latency at http://ADDR/metrics (OpenMetrics text) for
    /// Prometheus, e.g. 127.0.0.1:9464 (port 0: any; the address is printed).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Keep serving /metrics this long after the run ends, so that a last scrape sees the final
    /// counts (they then equal summary.json's).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    metrics_linger: std::time::Duration,
    /// Seed of the load order (overrides the scenario's `seed`).
    #[arg(long)]
    seed: Option<u64>,
    /// Also write a JUnit XML report here.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Run shard I of N (0-based): a disjoint slice of the population at 1/N of the rate; merge
    /// the shards' reports with `loadtest report merge`.
    #[arg(long, value_parser = parse_shard)]
    shard: Option<(u32, u32)>,
    /// Start the schedule at this wall-clock time (RFC 3339, e.g. 2026-12-02T10:00:00Z): shards
    /// given the same time share one schedule; a shard that starts late shows it as schedule lag.
    #[arg(long, value_parser = parse_start_at)]
    start_at: Option<std::time::SystemTime>,
    /// The run's id in summary.json (`report merge` refuses shards of different runs). Default:
    /// derived from the scenario, the shard count and --start-at.
    #[arg(long, value_parser = parse_run_id)]
    run_id: Option<String>,
    /// Which thresholds to evaluate: all, counts (skip latency, service-time, schedule-lag and
    /// throughput thresholds, whose verdict depends on how busy the machine is), none.
    #[arg(long, value_parser = parse_selection, default_value = "all")]
    thresholds: Selection,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Scenario file (TOML).
    scenario: PathBuf,
    /// Webhook URL (overrides target.url; a `?code=` function key is never printed).
    #[arg(long)]
    url: Option<String>,
    /// Accept this run's transcript as the snapshot.
    #[arg(long)]
    update_snapshots: bool,
    /// Snapshot file (default: `[check] snapshot`, else snapshots/<scenario name>.snap).
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// Also write a JUnit XML report here.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Report directory (default: reports/<scenario>-check-<UTC timestamp>/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the load order (the transcript does not depend on it).
    #[arg(long)]
    seed: Option<u64>,
    /// No live progress line.
    #[arg(long)]
    no_progress: bool,
    /// Which thresholds to evaluate: all, counts (skip latency, service-time, schedule-lag and
    /// throughput thresholds, whose verdict depends on how busy the machine is), none.
    #[arg(long, value_parser = parse_selection, default_value = "all")]
    thresholds: Selection,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Print `ID : DEVICEKEY` for each registration ID (as the seed's shell example does).
    Derive {
        /// The enrollment group's primary (or secondary) key, base64.
        #[arg(long, env = "DPS_GROUP_KEY", hide_env_values = true)]
        group_key: String,
        /// Registration IDs.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Write `registration_id,device_key` CSV for a scenario's whole population.
    Export {
        /// Scenario file.
        scenario: PathBuf,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum WebhookCommand {
    /// Serve the reference webhook until Ctrl-C.
    Serve {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:7071")]
        addr: SocketAddr,
        /// Seed function to behave like: howto-2018, tutorial-2020, tutorial-current.
        #[arg(long, value_parser = parse_policy)]
        policy: Option<Policy>,
        /// Take the policy and the per-class faults from this scenario.
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Serve https: a development CA and certificate (SAN localhost, 127.0.0.1, ::1) are
        /// generated into this directory once; trust `DIR/ca.pem` (a scenario's `target.ca`).
        #[arg(long)]
        tls_dir: Option<PathBuf>,
        /// Serve Prometheus metrics (OpenMetrics text) at http://ADDR/metrics: answers by status,
        /// requests in flight.
        #[arg(long)]
        metrics_addr: Option<SocketAddr>,
        #[command(flatten)]
        limits: LimitArgs,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::from(EXIT_PASS);
            }
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Run(a) => run_command(a).await,
        Command::Completions { shell } => docs::completions(shell).map(|()| EXIT_PASS),
        Command::Man => docs::man().map(|()| EXIT_PASS),
        Command::Check(a) => check_command(a, cli.color).await,
        Command::Keys(KeysCommand::Derive { group_key, ids }) => {
            let g = GroupKey::new(&group_key).context("--group-key")?;
            let mut out = std::io::stdout().lock();
            for id in ids {
                writeln!(out, "{id} : {}", g.derive(&id))?;
            }
            Ok(EXIT_PASS)
        }
        Command::Keys(KeysCommand::Export { scenario, out }) => {
            let s = Scenario::load(&scenario)?;
            let csv = export_keys(&s)?;
            match out {
                Some(p) => {
                    std::fs::write(&p, csv).with_context(|| format!("writing {}", p.display()))?
                }
                None => std::io::stdout().lock().write_all(csv.as_bytes())?,
            }
            Ok(EXIT_PASS)
        }
        Command::Webhook(WebhookCommand::Serve {
            addr,
            policy,
            scenario,
            tls_dir,
            metrics_addr,
            limits,
        }) => {
            webhook::serve(
                addr,
                policy,
                scenario,
                tls_dir,
                metrics_addr,
                limits.limits(),
            )
            .await
        }
        Command::Dps(DpsCommand::Serve(a)) => dps_serve(a).await,
        Command::Plan(a) => plan::plan_command(a).await,
        Command::Setup(a) => lifecycle::setup_command(a).await,
        Command::Cleanup(a) => lifecycle::cleanup_command(a).await,
        Command::Report(ReportCommand::Merge {
            dirs,
            out,
            scenario,
            thresholds,
            allow_partial,
        }) => {
            let summary = crate::report::merge::merge(
                &dirs,
                scenario.as_deref(),
                &out,
                thresholds,
                allow_partial,
            )?;
            conclude(&summary, &out, None)
        }
    }
}

async fn run_command(a: RunArgs) -> anyhow::Result<u8> {
    let flags = Flags {
        url: a.url,
        rate: a.rate,
        connections: a.connections,
        duration: a.duration,
        count: a.count,
        seed: a.seed,
        shard: a.shard,
        ..Flags::default()
    };
    let s = Scenario::load_with(&a.scenario, &flags)?;
    let o = Overrides {
        out: a.out,
        progress: !(a.no_progress || a.quiet),
        thresholds: a.thresholds,
        run_id: a.run_id,
        start_at: a.start_at,
        ndjson: a.ndjson,
        metrics_addr: a.metrics_addr,
        metrics_linger: a.metrics_linger,
    };
    let stop = on_ctrl_c(s.load.grace)?;
    if a.quiet {
        banner::warnings(&s);
    } else {
        banner("run", &s);
    }
    if let Some(wait) = a
        .start_at
        .and_then(|at| at.duration_since(std::time::SystemTime::now()).ok())
    {
        eprintln!(
            "waiting {:.1} s for --start-at {} (Ctrl-C ends the wait and writes an empty report)",
            wait.as_secs_f64(),
            humantime::format_rfc3339_millis(a.start_at.unwrap_or_else(std::time::SystemTime::now))
        );
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.requested() => {}
        }
    }
    let finished = run::run(&s, &s.load, &o, stop, None).await?;
    conclude_run(
        &finished.summary,
        &finished.dir,
        a.junit.as_deref(),
        a.output,
        a.quiet,
    )
}

async fn check_command(a: CheckArgs, color: Color) -> anyhow::Result<u8> {
    let flags = Flags {
        url: a.url,
        seed: a.seed,
        ..Flags::default()
    };
    let s = Scenario::load_with(&a.scenario, &flags)?;
    let o = Overrides {
        out: a.out,
        progress: !a.no_progress,
        thresholds: a.thresholds,
        ..Overrides::default()
    };
    let stop = on_ctrl_c(s.load.grace)?;
    banner("check", &s);
    let opts = conformance::CheckOptions {
        update: a.update_snapshots,
        snapshot: a.snapshot,
    };
    let checked = conformance::check(&s, &o, &opts, stop).await?;
    let pending = conformance::snapshot::pending_path(&checked.snapshot);
    match &checked.comparison {
        None => eprintln!(
            "snapshot {} not compared: the run did not exercise every sampled device",
            checked.snapshot.display()
        ),
        Some(Comparison::Match) => {}
        Some(Comparison::Updated { created }) => say!(
            "snapshot {} {}",
            checked.snapshot.display(),
            if *created { "created" } else { "updated" }
        ),
        Some(Comparison::Missing) => eprintln!(
            "no snapshot at {}; this run's transcript is in {} (accept it with --update-snapshots, or `cargo insta accept`)",
            checked.snapshot.display(),
            pending.display()
        ),
        Some(Comparison::Drift { summary, diff }) => {
            let diff = if color.on_stderr() {
                conformance::snapshot::colourise(diff)
            } else {
                diff.clone()
            };
            eprintln!(
                "\nsnapshot drift: the outcomes differ from {}\n{summary}\n{diff}\nthis run's transcript is in {}; accept it with --update-snapshots (or `cargo insta review`)",
                checked.snapshot.display(),
                pending.display()
            );
        }
    }
    let f = &checked.finished;
    conclude(&f.summary, &f.dir, a.junit.as_deref())
}

/// Ctrl-C: the first stops scheduling, the second abandons in-flight requests. The handler is
/// registered before this returns (so a SIGINT right after the banner is never the default
/// action that kills the process without a report).
fn on_ctrl_c(grace: Duration) -> anyhow::Result<Stop> {
    let stop = Stop::default();
    let on_signal = stop.clone();
    #[cfg(unix)]
    let mut signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("installing the Ctrl-C handler")?;
    tokio::spawn(async move {
        loop {
            #[cfg(unix)]
            let got = signal.recv().await.is_some();
            #[cfg(not(unix))]
            let got = tokio::signal::ctrl_c().await.is_ok();
            if !got {
                break;
            }
            on_signal.request();
            if on_signal.level() == 1 {
                eprintln!("\nstopping: no new requests; waiting up to {grace:?} for those in flight (Ctrl-C again to abandon them)");
            }
        }
    });
    Ok(stop)
}

/// `registration_id,device_key` for every registration ID of the population, once each (a class
/// that re-registers the same IDs adds no rows), in class order.
fn export_keys(s: &Scenario) -> anyhow::Result<String> {
    let mut seen = std::collections::HashSet::new();
    let mut csv = String::from("registration_id,device_key\n");
    for c in &s.classes {
        for n in c.range.0..=c.range.1 {
            let id = c.template.render(n);
            if !seen.insert(id.to_ascii_lowercase()) {
                continue;
            }
            let Some(e) = s.enrollment.resolve(&id) else {
                bail!("device {id} has no enrollment");
            };
            csv.push_str(&id);
            csv.push(',');
            csv.push_str(&e.device_key_base64(&id));
            csv.push('\n');
        }
    }
    Ok(csv)
}
