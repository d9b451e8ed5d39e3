//! `loadtest run`: one scenario end to end. Applies command-line overrides, starts the embedded
//! reference webhook when no URL is given, runs the engine, writes the report directory and
//! returns the summary. Exit-code policy lives in `cli.rs`; measuring lives in `driver/`.

pub(crate) mod devices;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::device::Population;
use crate::driver::device::DeviceExecutor;
use crate::driver::webhook::{SetupError, WebhookExecutor};
use crate::driver::{Pacing, Plan, Stop, Watch};
use crate::lanes::Lanes;
use crate::metrics::Metrics;
use crate::pacing::Schedule;
use crate::progress::Progress;
use crate::report::Summary;
use crate::scenario::{Load, Mode, Rate, Scenario};
use crate::threshold::{RunView, Selection, Threshold};
use crate::webhook::server;

/// How a run is reported (the scenario's own values come from [`Scenario`], flags included).
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    /// `--out`: the report directory itself.
    pub out: Option<PathBuf>,
    /// Show the live progress bar (on a terminal).
    pub progress: bool,
    /// `--thresholds`: which thresholds are evaluated.
    pub thresholds: Selection,
    /// `--run-id`: the id every shard of the run carries (default: derived, see [`run_id`]).
    pub run_id: Option<String>,
    /// `--start-at`: the wall-clock instant the schedule starts at. Shards given the same one
    /// share one schedule: a shard that starts late sends its overdue requests at once and shows
    /// its lateness as schedule lag. (The caller waits for it; a run that begins late keeps it.)
    pub start_at: Option<SystemTime>,
    /// `--ndjson FILE`: one JSON line per completed second, written while the run goes.
    pub ndjson: Option<PathBuf>,
    /// `--metrics-addr`: serve `/metrics` for Prometheus while the run goes.
    pub metrics_addr: Option<SocketAddr>,
    /// `--metrics-linger`: keep serving this long after the run (for a last scrape).
    pub metrics_linger: std::time::Duration,
}

/// The run id when none is given: the scenario hash, the shard count and `--start-at`, hashed
/// (12 hex digits). Every shard of one run derives the same id; two runs of one scenario are told
/// apart by `--start-at` or an explicit `--run-id`.
pub(crate) fn run_id(s: &Scenario, start_at: Option<SystemTime>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(s.hash.as_bytes());
    h.update(s.shard.map_or(1, |(_, n)| n).to_le_bytes());
    if let Some(t) = start_at {
        let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        h.update(since.as_millis().to_le_bytes());
    }
    hex::encode(&h.finalize()[..6])
}

/// A run could not be carried out.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    /// A device target that cannot be used.
    #[error("{0}")]
    Usage(String),
    /// The webhook URL or key cannot be used.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The embedded webhook could not start.
    #[error("could not start the embedded reference webhook on {addr}: {source}")]
    Embedded {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A device-mode run could not be set up.
    #[error(transparent)]
    Devices(#[from] devices::SetupError),
    /// `--metrics-addr` could not be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The lanes' threads could not start.
    #[error("could not start the runtime lanes: {0}")]
    Lanes(std::io::Error),
    /// The report could not be written.
    #[error("could not write the report to {}: {source}", path.display())]
    Report {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A finished run.
#[derive(Debug)]
pub(crate) struct Finished {
    /// The summary (also in `dir/summary.json`).
    pub summary: Summary,
    /// The report directory.
    pub dir: PathBuf,
    /// The measurements (conformance mode reads its observations).
    pub metrics: Metrics,
}

/// Runs a validated scenario at `load` (its own, or a shape `check` and `plan` derive from it)
/// and writes its report. With `sample` (conformance mode) exactly that population is exercised
/// and every exchange is kept for the transcript.
pub(crate) async fn run(
    s: &Scenario,
    load: &Load,
    o: &Overrides,
    stop: Stop,
    sample: Option<Population>,
) -> Result<Finished, RunError> {
    let observe = sample.is_some();
    let population = Arc::new(match (sample, s.shard) {
        (Some(p), _) => p,
        (None, Some((i, n))) => s.population().shard(i, n),
        (None, None) => s.population(),
    });
    // One pass per round unless the load says otherwise.
    let passes = population.len() as u64 * u64::from(load.rounds);
    let default_count = load.count.or(if load.duration.is_none() {
        Some(passes)
    } else {
        None
    });
    let (pacing, target_rate, total, planned) = match load.rate {
        Rate::PerSecond(rate) => {
            let schedule = Schedule::new(rate, &load.stages, load.duration, default_count);
            let total = schedule.total();
            let planned = total
                .checked_sub(1)
                .and_then(|last| schedule.offset(last))
                .map(|d| load.duration.map_or(d, |full| full.max(d)));
            let rate = if load.stages.is_empty() {
                rate
            } else {
                total as f64 / load.duration.map_or(1.0, |d| d.as_secs_f64())
            };
            (Pacing::Open(schedule), Some(rate), Some(total), planned)
        }
        Rate::Max => (
            Pacing::Closed {
                workers: load.connections,
                duration: load.duration,
                count: default_count,
            },
            None,
            default_count,
            load.duration,
        ),
    };
    // With `--start-at` the schedule's zero is that instant, however late this process is.
    let (started, origin) = match o.start_at {
        None => (SystemTime::now(), None),
        Some(at) => {
            let late = SystemTime::now().duration_since(at).unwrap_or_default();
            let now = tokio::time::Instant::now();
            (at, Some(now.checked_sub(late).unwrap_or(now)))
        }
    };
    // Requests (and, in device modes, the embedded emulator's connections) run on lanes.
    let lanes = match load.lanes {
        Some(0) => Lanes::default(),
        n => {
            Lanes::start(n.map_or_else(Lanes::per_core, |n| n as usize)).map_err(RunError::Lanes)?
        }
    };
    let plan = Plan {
        granularity: load.granularity_in(s.target.mode),
        lanes: lanes.handles().to_vec(),
        pacing,
        max_in_flight: load.max_in_flight,
        grace: load.grace,
        examples: s.report.examples,
        observe,
        // A check's transcript must cover the whole sample, so only `run` stops early.
        watch: if observe {
            None
        } else {
            abort_watch(s, o.thresholds)
        },
        interval_log: Some(s.classes.iter().map(|c| c.name.clone()).collect()),
        origin,
    };
    let mut progress = Progress::new(total, planned, o.progress);
    if let Some(path) = &o.ndjson {
        progress = progress
            .with_ndjson(path)
            .map_err(|source| RunError::Report {
                path: path.clone(),
                source,
            })?;
    }
    let exporter = match o.metrics_addr {
        None => None,
        Some(addr) => {
            let info = vec![
                ("scenario", s.name.clone()),
                ("mode", s.target.mode.name().to_owned()),
                (
                    "run_id",
                    o.run_id.clone().unwrap_or_else(|| run_id(s, o.start_at)),
                ),
                (
                    "shard",
                    s.shard
                        .map_or("1/1".to_owned(), |(i, n)| format!("{i}/{n}")),
                ),
            ];
            let classes = s.classes.iter().map(|c| c.name.clone()).collect();
            let e = crate::progress::exporter::Exporter::start(addr, info, classes)
                .await
                .map_err(|source| RunError::Metrics { addr, source })?;
            eprintln!("metrics: http://{}/metrics", e.addr);
            let e = Arc::new(e);
            progress = progress.with_exporter(e.clone());
            Some(e)
        }
    };
    let live = progress.clone();
    let classes = s.classes.len();
    let outcome = match s.target.mode {
        Mode::Webhook => {
            let embedded = server::spawn_embedded(s.embedded_webhook())
                .await
                .map_err(|(addr, source)| RunError::Embedded { addr, source })?;
            let url = match (&s.target.url, &embedded) {
                (Some(u), _) => u.expose().to_owned(),
                (None, Some(h)) => format!("http://{}/api/HttpTrigger1?code=embedded", h.addr),
                (None, None) => unreachable!("an embedded server is started when no URL is set"),
            };
            let exec = Arc::new(WebhookExecutor::new(s, &url)?.observing(observe));
            let out = crate::driver::run(exec, population, plan, classes, stop, progress).await;
            if let Some(h) = embedded {
                h.stop().await;
            }
            out
        }
        Mode::Mqtt | Mode::MqttWs | Mode::Https => {
            let setup = devices::prepare(s, lanes.handles()).await?;
            let exec =
                DeviceExecutor::new(s, setup.endpoints, population.len() as u64, setup.twins)
                    .map_err(RunError::Usage)?
                    .observing(observe);
            let out =
                crate::driver::run(Arc::new(exec), population, plan, classes, stop, progress).await;
            if let Some(e) = setup.emulator {
                e.stop().await;
            }
            out
        }
    };
    drop(lanes);
    let mut summary = Summary::build(s, &outcome, started, target_rate);
    summary.run_id = o.run_id.clone().unwrap_or_else(|| run_id(s, o.start_at));
    let view = RunView {
        metrics: &outcome.metrics,
        not_sent: outcome.not_sent(),
        elapsed_s: outcome.elapsed.as_secs_f64(),
    };
    summary.set_thresholds(
        s.thresholds
            .iter()
            .map(|t| (t.verdict(&view, o.thresholds), t.abort_on_fail))
            .collect(),
        outcome.aborted.clone(),
    );
    let dir = o.out.clone().unwrap_or_else(|| {
        let name = if observe {
            format!("{}-check", s.name)
        } else {
            s.name.clone()
        };
        report_dir(&s.report.out, &name, started)
    });
    summary.write(&dir).map_err(|source| RunError::Report {
        path: dir.clone(),
        source,
    })?;
    let elapsed = outcome.elapsed;
    let mut metrics = outcome.metrics;
    let overall = &metrics.overall;
    let timeline = metrics
        .intervals
        .as_mut()
        .map(|l| {
            l.close(elapsed, overall);
            l.timeline.clone()
        })
        .unwrap_or_default();
    // The last, partial second and any second the collector had not written yet.
    live.write_seconds(&timeline);
    live.publish(&metrics);
    crate::report::write_html(&dir, &summary, &metrics, &timeline, s, None).map_err(|source| {
        RunError::Report {
            path: dir.clone(),
            source,
        }
    })?;
    crate::report::hdr::write(&dir, &mut metrics, started).map_err(|source| RunError::Report {
        path: dir.clone(),
        source,
    })?;
    if let Some(e) = exporter {
        if !o.metrics_linger.is_zero() {
            eprintln!(
                "metrics: still served for {:?} (--metrics-linger)",
                o.metrics_linger
            );
            tokio::time::sleep(o.metrics_linger).await;
        }
        e.stop();
    }
    Ok(Finished {
        summary,
        dir,
        metrics,
    })
}

/// The early-stop check for thresholds with `abort_on_fail`.
fn abort_watch(s: &Scenario, selection: Selection) -> Option<Watch> {
    let watched: Vec<Threshold> = s
        .thresholds
        .iter()
        .filter(|t| t.abort_on_fail && selection.includes(t))
        .cloned()
        .collect();
    if watched.is_empty() {
        return None;
    }
    Some(Watch(Arc::new(move |m, remaining| {
        let view = RunView {
            metrics: m,
            not_sent: 0,
            elapsed_s: m.start().elapsed().as_secs_f64(),
        };
        watched
            .iter()
            .find(|t| t.failed_for_good(&view, remaining))
            .map(|t| t.name.clone())
    })))
}

/// `<out>/<scenario>-<UTC timestamp>`, with a numeric suffix if that exists already.
fn report_dir(out: &std::path::Path, name: &str, at: SystemTime) -> PathBuf {
    let stamp: String = humantime::format_rfc3339_seconds(at)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let base = out.join(format!("{name}-{stamp}"));
    let mut dir = base.clone();
    let mut n = 2;
    while dir.exists() {
        dir = PathBuf::from(format!("{}-{n}", base.display()));
        n += 1;
    }
    dir
}
