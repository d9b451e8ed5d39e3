//! The report model: one serde [`Summary`] built from a run's measurements, written as
//! `summary.json` (contract: `reports/schema/summary.schema.json`) and rendered as text
//! ([`text`]), markdown ([`markdown`]) and JUnit XML ([`junit`]). Writers only render the model; nothing here measures or decides.
//! No secret reaches the model: the target is stored masked.

mod class;
pub(crate) mod hdr;
pub(crate) mod html;
pub(crate) mod junit;
pub(crate) mod markdown;
pub(crate) mod merge;
pub(crate) mod text;

use crate::outcome::Source;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::driver::Outcome;
use crate::scenario::Scenario;
pub(crate) use class::{ClassSummary, Example};

/// Version of the `summary.json` layout.
pub(crate) const SCHEMA_VERSION: u32 = 3;

/// The run summary.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    /// Layout version.
    pub schema_version: u32,
    /// `loadtest` version.
    pub tool_version: String,
    /// Scenario name.
    pub scenario: String,
    /// Scenario file.
    pub scenario_file: String,
    /// `webhook` (later `mqtt`, `https`).
    pub mode: String,
    /// Target with secrets masked.
    pub target: String,
    /// Population seed.
    pub seed: u64,
    /// `i/n` when this run is one shard of a sharded run; `merged n` after `report merge`.
    pub shard: Option<String>,
    /// The run this report belongs to (every shard of it carries the same id).
    pub run_id: String,
    /// SHA-256 of the scenario text and its overriding flags (all but `--shard`).
    pub scenario_hash: String,
    /// I of `--shard I/N`; `None` unsharded or merged.
    pub shard_index: Option<u32>,
    /// N of `--shard I/N` (1 unsharded; the run's N when merged).
    pub shard_count: u32,
    /// Start (UTC, RFC 3339).
    pub started_at: String,
    /// Measured seconds.
    pub duration_s: f64,
    /// Stopped by Ctrl-C.
    pub interrupted: bool,
    /// Request accounting.
    pub requests: Requests,
    /// Answered requests per second.
    pub throughput_per_s: f64,
    /// Scheduled rate (open loop) or null (closed loop).
    pub target_rate_per_s: Option<f64>,
    /// Closed-loop connections or open-loop pool size.
    pub connections: u32,
    /// done − intended.
    pub latency_us: Stats,
    /// done − first send.
    pub service_time_us: Stats,
    /// first send − intended.
    pub schedule_lag_us: Stats,
    /// Outcome counts (`assigned`, `failed:400207`, …).
    pub outcomes: BTreeMap<String, u64>,
    /// Per class.
    pub classes: Vec<ClassSummary>,
    /// Expectation totals.
    pub expectations: Expectations,
    /// Failures by source and message.
    pub errors: Vec<ErrorCount>,
    /// Device modes: per-phase statistics; null in webhook mode.
    pub phases: Option<PhaseSummary>,
    /// Threshold verdicts, in scenario order.
    pub thresholds: Vec<ThresholdResult>,
    /// The threshold that stopped the run early (`abort_on_fail`), if any.
    pub aborted_by: Option<String>,
    /// `loadtest check` only: the transcript compared with its snapshot.
    pub snapshot: Option<SnapshotResult>,
    /// `pass` or `fail`: expectations, thresholds and snapshot together.
    pub verdict: String,
    /// Sent but never finished (inside `requests.timed_out`; fails the expectations).
    #[serde(skip)]
    abandoned: u64,
    /// Requests that produced a sample.
    #[serde(skip)]
    samples: u64,
}

/// Per-phase statistics of device registrations (µs, polls as counts).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PhaseSummary {
    /// TCP + TLS + CONNACK (MQTT only).
    pub connect_us: Stats,
    /// Register request → first response.
    pub first_response_us: Stats,
    /// Register request → terminal status (what DPS spent).
    pub dps_us: Stats,
    /// Waiting on `retry-after` and 429 back-off.
    pub retry_wait_us: Stats,
    /// Polls per device.
    pub polls: Stats,
    /// 429 answers, all devices.
    pub throttled_429: u64,
    /// Devices that saw a 429.
    pub throttled_devices: u64,
    /// Twins read from the hubs and checked.
    pub twins_checked: u64,
    /// Connect attempts after the first (`target.connect_retries`).
    pub connect_retries: u64,
    /// Connect attempts that ran past `target.connect_timeout`.
    pub connect_timeouts: u64,
}

/// One threshold's verdict.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ThresholdResult {
    /// As written: `latency.p99 < 250ms`.
    pub name: String,
    /// Measured value for display, or `no data`.
    pub measured: String,
    /// Passed (a skipped threshold counts as passed).
    pub passed: bool,
    /// Not evaluated (`--thresholds counts|none`).
    pub skipped: bool,
    /// Stops the run once it cannot pass.
    pub abort_on_fail: bool,
}

/// The snapshot comparison of `loadtest check`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SnapshotResult {
    /// The snapshot file.
    pub path: String,
    /// `match`, `missing`, `drift` or `updated`.
    pub status: String,
    /// Changed classes and sections (drift only).
    pub changes: Option<String>,
    /// Unified diff, snapshot → this run (drift only).
    pub diff: Option<String>,
}

/// Scheduled = completed + failed + timed_out + not_sent.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Requests {
    /// Planned.
    pub scheduled: u64,
    /// Started.
    pub sent: u64,
    /// An answer arrived (whatever it said).
    pub completed: u64,
    /// Transport error, no answer.
    pub failed: u64,
    /// No answer in time (including requests abandoned at the end of the grace period).
    pub timed_out: u64,
    /// Never started.
    pub not_sent: u64,
    /// HTTP attempts, retries included.
    pub attempts: u64,
    /// Sent but still unfinished when the grace period ended (inside `timed_out`).
    pub abandoned: u64,
}

/// Latency statistics in µs.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Stats {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl Stats {
    /// The statistics of `h` (zeros when empty).
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self {
                p50: 0,
                p90: 0,
                p99: 0,
                p999: 0,
                max: 0,
                mean: 0.0,
            };
        }
        let q = |x| h.highest_equivalent(h.value_at_quantile(x));
        Self {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

/// Expectation totals.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Expectations {
    /// Met.
    pub passed: u64,
    /// Not met.
    pub failed: u64,
}

/// A transport error and its count.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ErrorCount {
    /// Where it came from: `target`, `network`, `tls`, `generator`, `timeout`.
    pub source: Source,
    /// What happened.
    pub message: String,
    /// Count.
    pub count: u64,
}

impl ErrorCount {
    /// `[source] message`, as the text reports show it.
    pub(crate) fn label(&self) -> String {
        format!("[{}] {}", self.source, self.message)
    }
}

impl Summary {
    /// Builds the summary of a finished run.
    pub(crate) fn build(
        s: &Scenario,
        o: &Outcome,
        started_at: std::time::SystemTime,
        target_rate: Option<f64>,
    ) -> Self {
        let m = &o.metrics;
        let per_class = s.population_sizes();
        let classes: Vec<ClassSummary> = s
            .classes
            .iter()
            .zip(&m.classes)
            .zip(per_class)
            .enumerate()
            .map(|(i, ((c, st), devices))| {
                ClassSummary::build(&c.name, devices, st, m.class_histos(i))
            })
            .collect();
        let passed = classes.iter().map(|c| c.passed).sum();
        let failed = classes.iter().map(|c| c.failed).sum();
        let requests = Requests {
            scheduled: o.scheduled,
            sent: o.sent,
            completed: m.completed,
            failed: m.failed,
            // Abandoned requests are among them (recorded as timed out at the end of the grace).
            timed_out: m.timed_out,
            not_sent: o.not_sent(),
            attempts: m.attempts,
            abandoned: o.abandoned,
        };
        let secs = o.elapsed.as_secs_f64();
        let mut summary = Summary {
            schema_version: SCHEMA_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").into(),
            scenario: s.name.clone(),
            // Absolute, so that `report merge` finds it from any folder.
            // ("-": read from standard input; `report merge` then needs --scenario.)
            scenario_file: if s.path == std::path::Path::new("-") {
                "-".into()
            } else {
                std::path::absolute(&s.path)
                    .unwrap_or_else(|_| s.path.clone())
                    .display()
                    .to_string()
            },
            mode: s.target.mode.name().into(),
            target: s.target_display(),
            seed: s.seed,
            shard: s.shard.map(|(i, n)| format!("{i}/{n}")),
            run_id: String::new(),
            scenario_hash: s.hash.clone(),
            shard_index: s.shard.map(|(i, _)| i),
            shard_count: s.shard.map_or(1, |(_, n)| n),
            started_at: humantime::format_rfc3339_millis(started_at).to_string(),
            duration_s: round3(secs),
            interrupted: o.interrupted,
            requests,
            throughput_per_s: if secs > 0.0 {
                round3(m.completed as f64 / secs)
            } else {
                0.0
            },
            target_rate_per_s: target_rate.map(round3),
            connections: s.load.connections,
            latency_us: Stats::of(&m.overall.latency),
            service_time_us: Stats::of(&m.overall.service),
            schedule_lag_us: Stats::of(&m.overall.lag),
            outcomes: m
                .outcomes
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            classes,
            expectations: Expectations { passed, failed },
            errors: m
                .errors
                .iter()
                .map(|((source, message), count)| ErrorCount {
                    source: *source,
                    message: message.clone(),
                    count: *count,
                })
                .collect(),
            phases: m.phases.as_ref().map(|p| PhaseSummary {
                connect_us: Stats::of(&p.connect),
                first_response_us: Stats::of(&p.first_response),
                dps_us: Stats::of(&p.dps),
                retry_wait_us: Stats::of(&p.retry_wait),
                polls: Stats::of(&p.polls),
                throttled_429: p.throttled,
                throttled_devices: p.throttled_devices,
                twins_checked: p.twins_checked,
                connect_retries: p.connect_retries,
                connect_timeouts: p.connect_timeouts,
            }),
            thresholds: Vec::new(),
            aborted_by: None,
            snapshot: None,
            verdict: String::new(),
            abandoned: o.abandoned,
            samples: m.samples,
        };
        summary.decide();
        summary
    }

    fn decide(&mut self) {
        let ok = self.expectations_met() && self.thresholds_met() && self.snapshot_matched();
        self.verdict = if ok { "pass" } else { "fail" }.into();
    }

    /// Every answer met its class's expectation and every scheduled request was answered.
    pub(crate) fn expectations_met(&self) -> bool {
        // Requests left unsent because a threshold stopped the run are the threshold's failure.
        self.expectations.failed == 0
            && (self.requests.not_sent == 0 || self.aborted_by.is_some())
            && self.abandoned == 0
            && self.samples > 0
    }

    /// Requests sent but still unfinished when the grace period ended.
    pub(crate) fn abandoned(&self) -> u64 {
        self.abandoned
    }

    /// Why the run did not pass, most decisive first (empty when it passed): interrupted,
    /// stopped by a threshold, the target never answered, the top error kinds with counts,
    /// requests left unfinished, expectations, thresholds, snapshot. Every report opens with it.
    pub(crate) fn causes(&self) -> Vec<String> {
        let mut why = Vec::new();
        let r = &self.requests;
        if self.interrupted {
            why.push("interrupted (Ctrl-C)".to_owned());
        }
        if let Some(a) = &self.aborted_by {
            why.push(format!("stopped early by threshold `{a}` (abort_on_fail)"));
        }
        if r.sent > 0 && r.completed == 0 {
            why.push(format!(
                "the target never answered ({} requests sent)",
                r.sent
            ));
        }
        for e in self.errors.iter().take(3) {
            why.push(format!("{} × {}", e.count, e.label()));
        }
        if self.errors.len() > 3 {
            why.push(format!("{} more error kinds", self.errors.len() - 3));
        }
        let unfinished = r.timed_out + r.not_sent;
        if unfinished > 0 {
            why.push(format!(
                "{} requests unfinished ({} timed out, {} not sent)",
                unfinished, r.timed_out, r.not_sent
            ));
        }
        if self.expectations.failed > 0 {
            why.push(format!(
                "{} of {} answers did not meet their expectation",
                self.expectations.failed,
                self.expectations.passed + self.expectations.failed
            ));
        }
        for t in self.thresholds.iter().filter(|t| !t.passed) {
            why.push(format!(
                "threshold `{}` failed (measured {})",
                t.name, t.measured
            ));
        }
        if let Some(snap) = self.snapshot.as_ref().filter(|_| !self.snapshot_matched()) {
            why.push(format!("snapshot {}", snap.status));
        }
        if self.passed() {
            why.clear();
        }
        why
    }

    /// Every threshold passed and none aborted the run.
    pub(crate) fn thresholds_met(&self) -> bool {
        self.aborted_by.is_none() && self.thresholds.iter().all(|t| t.passed)
    }

    /// The snapshot matched (or was updated, or this is not `loadtest check`).
    pub(crate) fn snapshot_matched(&self) -> bool {
        self.snapshot
            .as_ref()
            .is_none_or(|s| s.status == "match" || s.status == "updated")
    }

    /// Records threshold verdicts and re-decides the verdict.
    pub(crate) fn set_thresholds(
        &mut self,
        verdicts: Vec<(crate::threshold::Verdict, bool)>,
        aborted_by: Option<String>,
    ) {
        self.thresholds = verdicts
            .into_iter()
            .map(|(v, abort_on_fail)| ThresholdResult {
                name: v.name,
                measured: v.measured,
                passed: v.passed,
                skipped: v.skipped,
                abort_on_fail,
            })
            .collect();
        self.aborted_by = aborted_by;
        self.decide();
    }

    /// Records the snapshot comparison and re-decides the verdict.
    pub(crate) fn set_snapshot(&mut self, snapshot: SnapshotResult) {
        self.snapshot = Some(snapshot);
        self.decide();
    }

    /// True when the verdict is `pass`.
    pub(crate) fn passed(&self) -> bool {
        self.verdict == "pass"
    }

    /// Writes `summary.json` and `summary.md` into `dir` (created if needed) and returns the
    /// path of `summary.json`.
    pub(crate) fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("summary.json");
        let tmp = dir.join(".summary.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).expect("the summary serialises"),
        )?;
        std::fs::rename(&tmp, &path)?;
        std::fs::write(dir.join("summary.md"), markdown::render(self))?;
        Ok(path)
    }
}

/// Writes `report.html` for a run: charts from the metrics, the capacity section from `capacity`
/// (or the run's own throughput when not given).
pub(crate) fn write_html(
    dir: &Path,
    s: &Summary,
    m: &crate::metrics::Metrics,
    timeline: &[crate::metrics::intervals::Second],
    scenario: &Scenario,
    capacity: Option<String>,
) -> std::io::Result<()> {
    use plotters::style::RGBColor;
    let spectrum = html::spectrum_svg(&[
        (
            "latency (from the intended start)",
            &m.overall.latency,
            RGBColor(214, 39, 40),
        ),
        ("service time", &m.overall.service, RGBColor(31, 119, 180)),
        ("schedule lag", &m.overall.lag, RGBColor(44, 160, 44)),
    ]);
    let capacity = capacity.unwrap_or_else(|| {
        let fleet = scenario
            .capacity
            .fleet
            .unwrap_or_else(|| scenario.population_sizes().iter().sum());
        let e = crate::capacity::estimate(fleet, s.throughput_per_s, &scenario.capacity.limits);
        html::capacity_section(
            &e,
            "The webhook rate below is this run's achieved throughput, not its limit: run `loadtest plan` to find the knee.",
        )
    });
    std::fs::write(
        dir.join("report.html"),
        html::render(s, &spectrum, &html::timeline_svg(timeline), &capacity),
    )
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
