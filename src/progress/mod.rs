//! The live views of a run: the progress line on a terminal (indicatif; quiet with
//! `--no-progress`/`-q` or when stderr is not a terminal), whose rate and p99 are those of the
//! last completed second, not averages since the start; `run --ndjson FILE`, one JSON line per
//! completed second for any other tool; and `run --metrics-addr`, a Prometheus endpoint
//! ([`exporter`]). Reads metrics; never changes them.

pub(crate) mod exporter;

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use crate::metrics::intervals::Second;
use crate::metrics::Metrics;

/// A progress display, possibly hidden, and the per-second NDJSON file, if asked for.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    ndjson: Option<Arc<Mutex<Ndjson>>>,
    exporter: Option<Arc<exporter::Exporter>>,
}

#[derive(Debug)]
struct Ndjson {
    out: std::io::BufWriter<std::fs::File>,
    /// Timeline rows already written.
    written: usize,
    /// A write failed: no more lines (the run goes on).
    broken: bool,
}

impl Ndjson {
    /// Writes the rows not yet written (`ended` so far is the running total).
    fn write(&mut self, rows: &[Second]) -> std::io::Result<()> {
        if self.broken {
            return Ok(());
        }
        let mut total: u64 = rows[..self.written.min(rows.len())]
            .iter()
            .map(|r| r.ended)
            .sum();
        for r in rows.iter().skip(self.written) {
            total += r.ended;
            let line = serde_json::json!({
                "second": r.second,
                "length_s": r.length_s,
                "ended": r.ended,
                "per_s": r.ended as f64 / r.length_s.max(0.001),
                "failed": r.failed,
                "timed_out": r.timed_out,
                "throttled_429": r.throttled,
                "p50_us": r.p50_us,
                "p99_us": r.p99_us,
                "total_ended": total,
            });
            writeln!(self.out, "{line}")?;
        }
        self.written = rows.len();
        self.out.flush()
    }
}

impl Progress {
    /// A bar of `total` requests (a spinner when unknown), shown only on a terminal.
    pub(crate) fn new(total: Option<u64>, enabled: bool) -> Self {
        if !enabled || !std::io::stderr().is_terminal() {
            return Self {
                bar: None,
                ndjson: None,
                exporter: None,
            };
        }
        let bar = match total {
            Some(t) => {
                ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr_with_hz(4))
                    .with_style(
                        ProgressStyle::with_template(
                            "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    )
            }
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4))
                .with_style(
                    ProgressStyle::with_template("{elapsed_precise} {spinner} {pos} {msg}")
                        .expect("valid template"),
                ),
        };
        Self {
            bar: Some(bar),
            ndjson: None,
            exporter: None,
        }
    }

    /// Also writes one JSON line per completed second to `path` (created or truncated).
    pub(crate) fn with_ndjson(mut self, path: &std::path::Path) -> std::io::Result<Self> {
        let out = std::io::BufWriter::new(std::fs::File::create(path)?);
        self.ndjson = Some(Arc::new(Mutex::new(Ndjson {
            out,
            written: 0,
            broken: false,
        })));
        Ok(self)
    }

    /// Refreshes what the exporter serves from the final metrics (after the last second closed).
    pub(crate) fn publish(&self, m: &Metrics) {
        if let Some(e) = &self.exporter {
            e.update(m, 0);
        }
    }

    /// Also refreshes what `exporter` serves on each update.
    pub(crate) fn with_exporter(mut self, exporter: Arc<exporter::Exporter>) -> Self {
        self.exporter = Some(exporter);
        self
    }

    /// Writes the seconds not written yet (the run calls it once more after the last, partial
    /// second is closed). A write error stops the file, never the run.
    pub(crate) fn write_seconds(&self, rows: &[Second]) {
        if let Some(n) = &self.ndjson {
            let mut n = n.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Err(e) = n.write(rows) {
                eprintln!("warning: --ndjson: {e}; no more lines are written");
                n.broken = true;
            }
        }
    }

    /// Redraws from the current metrics: rate and p99 of the last completed second.
    pub(crate) fn update(&self, m: &Metrics, in_flight: u64) {
        let rows = m
            .intervals
            .as_ref()
            .map_or(&[][..], |l| l.timeline.as_slice());
        self.write_seconds(rows);
        if let Some(e) = &self.exporter {
            e.update(m, in_flight);
        }
        let Some(bar) = &self.bar else { return };
        bar.set_position(m.samples);
        let failed: u64 = m.classes.iter().map(|c| c.failed).sum();
        let last = match rows.last() {
            Some(r) => format!(
                "last 1 s: {:.0}/s p99 {:.1} ms",
                r.ended as f64 / r.length_s.max(0.001),
                r.p99_us as f64 / 1000.0
            ),
            None => "first second running".to_owned(),
        };
        bar.set_message(format!(
            "{last}  unmet {failed}  no answer {}  429s {}",
            m.failed + m.timed_out,
            m.phases.as_ref().map_or(0, |p| p.throttled)
        ));
    }

    /// Removes the bar.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
