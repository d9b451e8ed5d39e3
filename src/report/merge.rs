//! `loadtest report merge DIR... --out DIR`: one report from the reports of a sharded run
//! (`--shard i/n` on several machines or processes). Counters are summed, histograms are added
//! from each shard's `histograms.json` (exact: HdrHistograms of equal configuration add without
//! loss), expectations and thresholds are evaluated again on the merged measurements (never
//! per shard), and the usual files are written. The interval logs are merged onto one time base.
//! Every shard of the run must be there, once (or `--allow-partial` says the report is partial).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use serde_json::Value;

use super::{hdr, Summary};
use crate::check::Field;
use crate::dps::OutcomeKey;
use crate::driver::Outcome;
use crate::metrics::{FieldStats, Metrics, PhaseHistos};
use crate::outcome::Source;
use crate::scenario::Scenario;
use crate::threshold::{RunView, Selection};

/// The reports cannot be merged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MergeError {
    /// A file is missing or unreadable.
    #[error("{}: {source}", path.display())]
    Io {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file does not hold what a report holds.
    #[error("{}: {what}", path.display())]
    Format {
        /// Which file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The reports are not shards of one run.
    #[error("{0}")]
    Mismatch(String),
    /// The scenario could not be loaded.
    #[error(transparent)]
    Scenario(#[from] crate::scenario::ScenarioError),
}

struct Shard {
    dir: PathBuf,
    summary: Value,
    histograms: BTreeMap<String, Histogram<u64>>,
    hlog: Option<Vec<u8>>,
}

fn read(dir: &Path) -> Result<Shard, MergeError> {
    let file = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| MergeError::Io { path, source })
    };
    let bad = |name: &str, what: String| MergeError::Format {
        path: dir.join(name),
        what,
    };
    let summary: Value = serde_json::from_slice(&file("summary.json")?)
        .map_err(|e| bad("summary.json", e.to_string()))?;
    let raw: BTreeMap<String, String> = serde_json::from_slice(&file("histograms.json")?)
        .map_err(|e| bad("histograms.json", e.to_string()))?;
    let mut histograms = BTreeMap::new();
    for (k, v) in raw {
        histograms.insert(
            k.clone(),
            hdr::decode(&v).map_err(|e| bad("histograms.json", format!("{k}: {e}")))?,
        );
    }
    Ok(Shard {
        dir: dir.to_owned(),
        summary,
        histograms,
        hlog: std::fs::read(dir.join("latency.hlog")).ok(),
    })
}

/// Every shard of the run is there once: `I/N` with one N and each I from 0 to N-1. Missing
/// shards are refused unless `allow_partial`; then `Some((given, N))` marks the merge partial.
fn complete(shards: &[Shard], allow_partial: bool) -> Result<Option<(usize, u32)>, MergeError> {
    let mut of = None;
    let mut seen = std::collections::BTreeSet::new();
    for s in shards {
        let field = |k: &str| s.summary[k].as_u64().and_then(|v| u32::try_from(v).ok());
        let parsed = field("shard_index").zip(field("shard_count"));
        let Some((i, n)) = parsed.filter(|(i, n)| i < n) else {
            return Err(MergeError::Mismatch(format!(
                "{} is not a shard of a sharded run (its shard is {:?}; run with --shard I/N)",
                s.dir.display(),
                s.summary["shard"]
            )));
        };
        if *of.get_or_insert(n) != n {
            return Err(MergeError::Mismatch(format!(
                "{} is shard {i}/{n}, the others are of {}",
                s.dir.display(),
                of.unwrap_or(n)
            )));
        }
        if !seen.insert(i) {
            return Err(MergeError::Mismatch(format!(
                "shard {i}/{n} is given twice ({})",
                s.dir.display()
            )));
        }
    }
    let n = of.unwrap_or(0);
    let missing: Vec<String> = (0..n)
        .filter(|i| !seen.contains(i))
        .map(|i| format!("{i}/{n}"))
        .collect();
    if missing.is_empty() {
        return Ok(None);
    }
    if !allow_partial {
        return Err(MergeError::Mismatch(format!(
            "shards {} are missing: a merge of {} of {n} is not the run (add them, or --allow-partial to merge what is there, marked partial)",
            missing.join(", "),
            seen.len()
        )));
    }
    Ok(Some((seen.len(), n)))
}

/// One interval log of all shards: StartTime and BaseTime are the earliest shard's start, and
/// each interval keeps its encoded histogram with its timestamp moved onto that base, so that a
/// window of the merged log holds exactly what the shards recorded in that window.
fn merged_hlog(shards: &[Shard]) -> Result<Vec<u8>, MergeError> {
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    struct Line {
        at: f64,
        length: f64,
        max: f64,
        tag: String,
        encoded: String,
    }
    let mut lines = Vec::new();
    let mut start: Option<f64> = None;
    for sh in shards {
        let Some(log) = &sh.hlog else { continue };
        let (mut base, mut shard_start) = (None, None);
        for entry in IntervalLogIterator::new(log) {
            let entry = entry.map_err(|e| MergeError::Format {
                path: sh.dir.join("latency.hlog"),
                what: format!("{e:?}"),
            })?;
            match entry {
                LogEntry::StartTime(t) => shard_start = Some(t.as_secs_f64()),
                LogEntry::BaseTime(t) => base = Some(t.as_secs_f64()),
                LogEntry::Interval(h) => {
                    let base = base.or(shard_start).unwrap_or(0.0);
                    lines.push(Line {
                        at: base + h.start_timestamp().as_secs_f64(),
                        length: h.duration().as_secs_f64(),
                        max: h.max(),
                        tag: h.tag().map(|t| t.as_str().to_owned()).unwrap_or_default(),
                        encoded: h.encoded_histogram().to_owned(),
                    });
                }
            }
        }
        if let Some(t) = shard_start.or(base) {
            start = Some(start.map_or(t, |s: f64| s.min(t)));
        }
    }
    let start = start.unwrap_or(0.0);
    lines.sort_by(|a, b| a.at.total_cmp(&b.at).then_with(|| a.tag.cmp(&b.tag)));
    let mut out = format!(
        "#[loadtest merged interval log of {} shards: values in microseconds; every shard's intervals on one time base]\n\
         #[StartTime: {start:.3} (seconds since epoch)]\n\
         #[BaseTime: {start:.3} (seconds since epoch)]\n\
         \"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
        shards.len()
    );
    for l in lines {
        let tag = if l.tag.is_empty() {
            String::new()
        } else {
            format!("Tag={},", l.tag)
        };
        let _ = writeln!(
            out,
            "{tag}{:.3},{:.3},{:.3},{}",
            l.at - start,
            l.length,
            l.max,
            l.encoded
        );
    }
    Ok(out.into_bytes())
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn add(into: &mut Histogram<u64>, from: Option<&Histogram<u64>>) {
    if let Some(h) = from {
        // Same bounds and precision everywhere: adding never fails or loses precision.
        into.add(h)
            .expect("report histograms share their configuration");
    }
}

/// Merges shard report directories into `out`; returns the merged summary.
pub(crate) fn merge(
    dirs: &[PathBuf],
    scenario: Option<&Path>,
    out: &Path,
    selection: Selection,
    allow_partial: bool,
) -> Result<Summary, MergeError> {
    let shards = dirs
        .iter()
        .map(|d| read(d))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(first) = shards.first() else {
        return Err(MergeError::Mismatch("no report directories given".into()));
    };
    // Foreign shards: another scenario (or the same file with other flags), or another run.
    for s in &shards[1..] {
        for (key, what) in [
            ("scenario", "scenario"),
            ("scenario_hash", "scenario (its text or overriding flags)"),
            ("mode", "mode"),
            ("seed", "seed"),
            ("run_id", "run id"),
        ] {
            if s.summary[key] != first.summary[key] {
                return Err(MergeError::Mismatch(format!(
                    "{} and {} are not shards of one run: the {what} differs ({} vs {})",
                    first.dir.display(),
                    s.dir.display(),
                    first.summary[key],
                    s.summary[key]
                )));
            }
        }
    }
    let partial = complete(&shards, allow_partial)?;
    let path = match scenario {
        Some(p) => p.to_owned(),
        None => match first.summary["scenario_file"].as_str().unwrap_or_default() {
            "-" => {
                return Err(MergeError::Mismatch(
                    "the shards read their scenario from standard input: pass --scenario FILE"
                        .into(),
                ))
            }
            file => PathBuf::from(file),
        },
    };
    let s = Scenario::load(&path)?;
    let classes = s.classes.len();
    let mut m = Metrics::new(
        classes,
        tokio::time::Instant::now(),
        s.report.examples,
        false,
    );
    let (mut scheduled, mut sent, mut abandoned) = (0, 0, 0);
    let mut interrupted = false;
    let mut aborted = None;
    let mut elapsed = 0f64;
    let mut started: Option<SystemTime> = None;
    let mut target_rate = Some(0.0);
    for sh in &shards {
        let v = &sh.summary;
        let r = &v["requests"];
        scheduled += u(&r["scheduled"]);
        sent += u(&r["sent"]);
        abandoned += u(&r["abandoned"]);
        m.completed += u(&r["completed"]);
        m.failed += u(&r["failed"]);
        m.timed_out += u(&r["timed_out"]);
        m.attempts += u(&r["attempts"]);
        interrupted |= v["interrupted"].as_bool().unwrap_or(false);
        if aborted.is_none() {
            aborted = v["aborted_by"].as_str().map(str::to_owned);
        }
        elapsed = elapsed.max(v["duration_s"].as_f64().unwrap_or(0.0));
        if let Some(t) = v["started_at"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
        {
            started = Some(started.map_or(t, |s| s.min(t)));
        }
        target_rate = match (target_rate, v["target_rate_per_s"].as_f64()) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        for (k, n) in v["outcomes"].as_object().into_iter().flatten() {
            if let Some(key) = OutcomeKey::parse(k) {
                *m.outcomes.entry(key).or_default() += u(n);
            }
        }
        for e in v["errors"].as_array().into_iter().flatten() {
            let source = e["source"]
                .as_str()
                .and_then(Source::parse)
                .unwrap_or(Source::Target);
            let message = e["message"].as_str().unwrap_or_default().to_owned();
            *m.errors.entry((source, message)).or_default() += u(&e["count"]);
        }
        let per_class = m.per_class_histos();
        for (i, c) in v["classes"].as_array().into_iter().flatten().enumerate() {
            let Some(st) = m.classes.get_mut(i) else {
                return Err(MergeError::Mismatch(format!(
                    "{} has more classes than the scenario {}",
                    sh.dir.display(),
                    path.display()
                )));
            };
            st.requests += u(&c["requests"]);
            st.passed += u(&c["passed"]);
            st.failed += u(&c["failed"]);
            st.no_answer += u(&c["no_answer"]);
            st.retries += u(&c["retries"]);
            for (k, n) in c["outcomes"].as_object().into_iter().flatten() {
                if let Some(key) = OutcomeKey::parse(k) {
                    *st.outcomes.entry(key).or_default() += u(n);
                }
            }
            for (h, n) in c["hubs"].as_object().into_iter().flatten() {
                *st.hubs.entry(h.clone()).or_default() += u(n);
            }
            for f in c["mismatches"].as_array().into_iter().flatten() {
                let Some(field) = f["field"].as_str().and_then(Field::parse) else {
                    continue;
                };
                let fs: &mut FieldStats = st.mismatches.entry(field).or_default();
                fs.count += u(&f["count"]);
                for p in f["common"].as_array().into_iter().flatten() {
                    let t = |k: &str| p[k].as_str().unwrap_or_default();
                    fs.count_pair(t("expected"), t("actual"), u(&p["count"]));
                }
                fs.other_pairs += u(&f["other"]);
                for e in f["examples"].as_array().into_iter().flatten() {
                    if fs.examples.len() < s.report.examples {
                        let t = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                        fs.examples
                            .push((t("registration_id"), t("expected"), t("actual")));
                    }
                }
            }
            let hist = |name: &str| sh.histograms.get(&format!("class/{i}/{name}"));
            // A run of one class keeps no class histograms: they are the overall ones.
            if hist("latency").is_some() && per_class {
                let h = st.histos_mut();
                add(&mut h.latency, hist("latency"));
                add(&mut h.service, hist("service"));
                add(&mut h.lag, hist("lag"));
            }
        }
        add(&mut m.overall.latency, sh.histograms.get("latency"));
        add(&mut m.overall.service, sh.histograms.get("service"));
        add(&mut m.overall.lag, sh.histograms.get("lag"));
        if sh.histograms.contains_key("phase/dps") {
            let p = m.phases.get_or_insert_with(PhaseHistos::new);
            add(&mut p.connect, sh.histograms.get("phase/connect"));
            add(
                &mut p.first_response,
                sh.histograms.get("phase/first_response"),
            );
            add(&mut p.dps, sh.histograms.get("phase/dps"));
            add(&mut p.retry_wait, sh.histograms.get("phase/retry_wait"));
            add(&mut p.polls, sh.histograms.get("phase/polls"));
            p.throttled += u(&v["phases"]["throttled_429"]);
            p.throttled_devices += u(&v["phases"]["throttled_devices"]);
            p.twins_checked += u(&v["phases"]["twins_checked"]);
            p.connect_retries += u(&v["phases"]["connect_retries"]);
            p.connect_timeouts += u(&v["phases"]["connect_timeouts"]);
        }
    }
    m.samples = m.completed + m.failed + m.timed_out;
    let outcome = Outcome {
        metrics: m,
        scheduled,
        sent,
        abandoned,
        interrupted: interrupted && aborted.is_none(),
        elapsed: Duration::from_secs_f64(elapsed),
        aborted,
    };
    let started = started.unwrap_or_else(SystemTime::now);
    let mut summary = Summary::build(&s, &outcome, started, target_rate);
    summary.shard = Some(match partial {
        None => format!("merged {}", shards.len()),
        Some((have, of)) => format!("merged {have} of {of} (partial)"),
    });
    let text = |k: &str| first.summary[k].as_str().unwrap_or_default().to_owned();
    summary.run_id = text("run_id");
    summary.scenario_hash = text("scenario_hash");
    summary.shard_index = None;
    summary.shard_count = partial.map_or(shards.len() as u32, |(_, of)| of);
    let view = RunView {
        metrics: &outcome.metrics,
        not_sent: outcome.not_sent(),
        elapsed_s: elapsed,
    };
    summary.set_thresholds(
        s.thresholds
            .iter()
            .map(|t| (t.verdict(&view, selection), t.abort_on_fail))
            .collect(),
        outcome.aborted.clone(),
    );
    let io = |p: &Path| {
        let path = p.to_owned();
        move |source| MergeError::Io { path, source }
    };
    summary.write(out).map_err(io(out))?;
    std::fs::write(
        out.join("latency.hgrm"),
        hdr::hgrm(&outcome.metrics.overall.latency),
    )
    .map_err(io(out))?;
    super::write_html(out, &summary, &outcome.metrics, &[], &s, None).map_err(io(out))?;
    std::fs::write(
        out.join("histograms.json"),
        hdr::encode_all(&outcome.metrics),
    )
    .map_err(io(out))?;
    let hlog = merged_hlog(&shards)?;
    std::fs::write(out.join("latency.hlog"), hlog).map_err(io(out))?;
    Ok(summary)
}
