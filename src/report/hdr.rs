//! HdrHistogram files beside `summary.json`: `latency.hgrm`, the percentile distribution of the
//! latency from the intended start in the text format the public HdrHistogram plotter reads
//! (values in milliseconds), and `latency.hlog`, the per-second interval log
//! ([`crate::metrics::intervals`]).

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;

use crate::metrics::Metrics;

/// The `.hgrm` text of a µs histogram, in milliseconds (5 ticks per half distance, like
/// `outputPercentileDistribution`).
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    if h.is_empty() {
        return out;
    }
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let value = h.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0;
        if q < 1.0 {
            let _ = writeln!(
                out,
                "{value:12.3} {q:14.12} {total:10} {:14.2}",
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(out, "{value:12.3} {q:14.12} {total:10}");
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / 1000.0,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        // 2^ceil(log2(2 * 10^significant digits)), as the Java implementation sizes them.
        (2.0 * 10f64.powi(i32::from(h.sigfig())))
            .log2()
            .ceil()
            .exp2() as u64
    );
    out
}

/// Writes `latency.hgrm` and `latency.hlog` into `dir` (the interval log is taken out of the
/// metrics).
pub fn write(dir: &Path, m: &mut Metrics, started: std::time::SystemTime) -> std::io::Result<()> {
    std::fs::write(dir.join("latency.hgrm"), hgrm(&m.overall.latency))?;
    if let Some(log) = m.intervals.take() {
        std::fs::write(dir.join("latency.hlog"), log.finish(started))?;
    }
    Ok(())
}
