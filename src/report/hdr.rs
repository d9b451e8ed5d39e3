//! HdrHistogram files beside `summary.json`: `latency.hgrm`, the percentile distribution of the
//! latency from the intended start in the text format the public HdrHistogram plotter reads
//! (values in milliseconds); `latency.hlog`, the per-second interval log
//! ([`crate::metrics::intervals`]); and `histograms.json`, every final histogram V2-deflate
//! encoded (base64) by name, which `loadtest report merge` adds up exactly.

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;

use crate::metrics::Metrics;

/// The `.hgrm` text of a µs histogram, in milliseconds (5 ticks per half distance, like
/// `outputPercentileDistribution`).
pub(crate) fn hgrm(h: &Histogram<u64>) -> String {
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

/// Every final histogram of a run by name: `latency`, `service`, `lag`,
/// `class/<index>/{latency,service,lag}`, `phase/{connect,first_response,dps,retry_wait,polls}`.
pub(crate) fn named(m: &Metrics) -> Vec<(String, &Histogram<u64>)> {
    let mut v: Vec<(String, &Histogram<u64>)> = vec![
        ("latency".into(), &m.overall.latency),
        ("service".into(), &m.overall.service),
        ("lag".into(), &m.overall.lag),
    ];
    for i in (0..m.classes.len()).filter(|&i| m.class_has_histos(i)) {
        let h = m.class_histos(i);
        v.push((format!("class/{i}/latency"), &h.latency));
        v.push((format!("class/{i}/service"), &h.service));
        v.push((format!("class/{i}/lag"), &h.lag));
    }
    if let Some(p) = &m.phases {
        v.push(("phase/connect".into(), &p.connect));
        v.push(("phase/first_response".into(), &p.first_response));
        v.push(("phase/dps".into(), &p.dps));
        v.push(("phase/retry_wait".into(), &p.retry_wait));
        v.push(("phase/polls".into(), &p.polls));
    }
    v
}

/// `histograms.json`: name → base64 of the V2-deflate encoding.
pub(crate) fn encode_all(m: &Metrics) -> String {
    use base64::Engine as _;
    use hdrhistogram::serialization::{Serializer as _, V2DeflateSerializer};
    let mut ser = V2DeflateSerializer::new();
    let mut map = serde_json::Map::new();
    for (name, h) in named(m) {
        let mut buf = Vec::new();
        ser.serialize(h, &mut buf)
            .expect("serialising to memory does not fail");
        map.insert(
            name,
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(buf)),
        );
    }
    serde_json::to_string_pretty(&map).expect("a map serialises")
}

/// Decodes one entry of `histograms.json`.
pub(crate) fn decode(b64: &str) -> Result<Histogram<u64>, String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| e.to_string())?;
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| e.to_string())
}

/// Writes `latency.hgrm`, `latency.hlog` and `histograms.json` into `dir` (the interval log is
/// taken out of the metrics).
pub(crate) fn write(
    dir: &Path,
    m: &mut Metrics,
    started: std::time::SystemTime,
) -> std::io::Result<()> {
    std::fs::write(dir.join("latency.hgrm"), hgrm(&m.overall.latency))?;
    std::fs::write(dir.join("histograms.json"), encode_all(m))?;
    if let Some(log) = m.intervals.take() {
        std::fs::write(dir.join("latency.hlog"), log.finish(started, &m.overall))?;
    }
    Ok(())
}
