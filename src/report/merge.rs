//! `loadtest report merge DIR... --out DIR`: one report from the reports of a sharded run
//! (`--shard i/n` on several machines or processes). Counters are summed, histograms are added
//! from each shard's `histograms.json` (exact: HdrHistograms of equal configuration add without
//! loss), expectations and thresholds are evaluated again on the merged measurements (never
//! per shard), and the usual files are written. The interval logs are concatenated.

use std::collections::BTreeMap;
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
) -> Result<Summary, MergeError> {
    let shards = dirs
        .iter()
        .map(|d| read(d))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(first) = shards.first() else {
        return Err(MergeError::Mismatch("no report directories given".into()));
    };
    for s in &shards[1..] {
        for key in ["scenario", "mode", "seed"] {
            if s.summary[key] != first.summary[key] {
                return Err(MergeError::Mismatch(format!(
                    "{} and {} are not shards of one run: {key} differs ({} vs {})",
                    first.dir.display(),
                    s.dir.display(),
                    first.summary[key],
                    s.summary[key]
                )));
            }
        }
    }
    let mut seen = Vec::new();
    for s in &shards {
        if let Some(sh) = s.summary["shard"].as_str() {
            if seen.contains(&sh.to_owned()) {
                return Err(MergeError::Mismatch(format!("shard {sh} is given twice")));
            }
            seen.push(sh.to_owned());
        }
    }
    let path = match scenario {
        Some(p) => p.to_owned(),
        None => PathBuf::from(first.summary["scenario_file"].as_str().unwrap_or_default()),
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
        m.timed_out += u(&r["timed_out"]).saturating_sub(u(&r["abandoned"]));
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
                for e in f["examples"].as_array().into_iter().flatten() {
                    if fs.examples.len() < s.report.examples {
                        let t = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                        fs.examples
                            .push((t("registration_id"), t("expected"), t("actual")));
                    }
                }
            }
            let hist = |name: &str| sh.histograms.get(&format!("class/{i}/{name}"));
            add(&mut st.histos.latency, hist("latency"));
            add(&mut st.histos.service, hist("service"));
            add(&mut st.histos.lag, hist("lag"));
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
    summary.shard = Some(format!("merged {}", shards.len()));
    let view = RunView {
        metrics: &outcome.metrics,
        abandoned: outcome.abandoned,
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
    let mut hlog = format!(
        "#[loadtest merged interval log of {} shards: each shard's intervals, relative to its own start]\n",
        shards.len()
    )
    .into_bytes();
    for sh in &shards {
        if let Some(log) = &sh.hlog {
            hlog.extend_from_slice(format!("#[shard {}]\n", sh.summary["shard"]).as_bytes());
            hlog.extend(
                log.split(|b| *b == b'\n')
                    .filter(|l| l.starts_with(b"Tag="))
                    .flat_map(|l| {
                        let mut v = l.to_vec();
                        v.push(b'\n');
                        v
                    }),
            );
        }
    }
    std::fs::write(out.join("latency.hlog"), hlog).map_err(io(out))?;
    Ok(summary)
}
