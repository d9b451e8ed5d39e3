//! The live views of a run: the console ([`console`]: a multi-line view on a terminal, a line
//! every 10 s elsewhere; off with `--no-progress`/`-q`), whose rate and percentiles are those of
//! the last completed second, not averages since the start; `run --ndjson FILE`, one JSON line per
//! completed second for any other tool; and `run --metrics-addr`, a Prometheus endpoint
//! ([`exporter`]). Reads metrics; never changes them.

mod console;
pub(crate) mod exporter;

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::metrics::intervals::Second;
use crate::metrics::Metrics;

/// A progress display, possibly hidden, and the per-second NDJSON file, if asked for.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    console: Option<Arc<console::Console>>,
    /// Requests scheduled (when known) and the planned length (open loop, or a duration).
    total: Option<u64>,
    planned: Option<Duration>,
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
    /// The console for `total` requests over `planned` (a spinner when the count is unknown);
    /// nothing when not `enabled`.
    pub(crate) fn new(total: Option<u64>, planned: Option<Duration>, enabled: bool) -> Self {
        Self {
            console: console::Console::new(total, planned, enabled).map(Arc::new),
            total,
            planned,
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
        if let Some(c) = &self.console {
            c.update(m, rows, in_flight, self.total, self.planned);
        }
    }

    /// Removes the terminal view.
    pub(crate) fn finish(&self) {
        if let Some(c) = &self.console {
            c.finish();
        }
    }
}
