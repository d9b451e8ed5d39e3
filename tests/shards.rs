//! Sharded runs: three `--shard i/3` processes merged with `loadtest report merge` equal one
//! unsharded run (counts, outcomes, hubs), and the merged percentiles are exactly those of the
//! shards' histograms added together.

use std::process::Stdio;

use base64::Engine as _;
use hdrhistogram::Histogram;

use crate::util::{bin, run, scenario, summary, tempdir};

fn histogram(dir: &std::path::Path, name: &str) -> Histogram<u64> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.join("histograms.json")).unwrap()).unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(map[name].as_str().unwrap())
        .unwrap();
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .unwrap()
}

/// `(absolute start in seconds, tag, count)` of every interval of a report's `latency.hlog`.
fn intervals(dir: &std::path::Path) -> Vec<(f64, String, u64)> {
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    let log = std::fs::read(dir.join("latency.hlog")).unwrap();
    let mut base = None;
    let mut out = Vec::new();
    for e in IntervalLogIterator::new(&log) {
        match e.expect("a valid interval log") {
            LogEntry::StartTime(t) => {
                base.get_or_insert(t.as_secs_f64());
            }
            LogEntry::BaseTime(t) => base = Some(t.as_secs_f64()),
            LogEntry::Interval(h) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(h.encoded_histogram())
                    .unwrap();
                let hist: Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
                    .deserialize(&mut bytes.as_slice())
                    .unwrap();
                out.push((
                    base.expect("StartTime/BaseTime before the intervals")
                        + h.start_timestamp().as_secs_f64(),
                    h.tag().map(|t| t.as_str().to_owned()).unwrap_or_default(),
                    hist.len(),
                ));
            }
        }
    }
    out
}

#[test]
fn three_shards_merged_equal_one_run() {
    let dir = tempdir();
    let s = scenario("contoso.toml");
    let s = s.to_str().unwrap();
    let common = ["--count", "3000", "--rate", "1500", "--no-progress"];
    // The shards run at the same time, as on three machines.
    let shards: Vec<_> = (0..3)
        .map(|i| {
            let out = dir.path().join(format!("shard{i}"));
            let child = bin()
                .args([
                    "run",
                    s,
                    "--thresholds",
                    "counts",
                    "--shard",
                    &format!("{i}/3"),
                    "--out",
                    out.to_str().unwrap(),
                ])
                .args(common)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            (child, out)
        })
        .collect();
    let mut dirs = Vec::new();
    for (mut child, out) in shards {
        assert!(child.wait().unwrap().success());
        let v = summary(&out);
        assert_eq!(v["requests"]["scheduled"], 1000);
        assert_eq!(v["target_rate_per_s"], 500.0);
        dirs.push(out);
    }
    let whole = dir.path().join("whole");
    let mut args = vec!["run", s, "--out", whole.to_str().unwrap()];
    args.extend(common);
    assert_eq!(run(&args).code, 0);
    let merged = dir.path().join("merged");
    let mut args = vec!["report", "merge"];
    args.extend(dirs.iter().map(|d| d.to_str().unwrap()));
    args.extend(["--out", merged.to_str().unwrap()]);
    let r = run(&args);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    let (a, m) = (summary(&whole), summary(&merged));
    assert_eq!(m["shard"], "merged 3");
    assert_eq!(a["requests"], m["requests"]);
    assert_eq!(a["outcomes"], m["outcomes"]);
    assert_eq!(a["expectations"], m["expectations"]);
    assert_eq!(m["target_rate_per_s"], 1500.0);
    for (x, y) in a["classes"]
        .as_array()
        .unwrap()
        .iter()
        .zip(m["classes"].as_array().unwrap())
    {
        for k in ["name", "requests", "passed", "failed", "outcomes", "hubs"] {
            assert_eq!(x[k], y[k], "{k}");
        }
    }
    // Exact: the merged percentiles are those of the shards' histograms added up.
    let mut union: Histogram<u64> = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    for d in &dirs {
        union.add(histogram(d, "latency")).unwrap();
    }
    assert_eq!(union.len(), 3000);
    for (q, key) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p999")] {
        let want = union.highest_equivalent(union.value_at_quantile(q));
        assert_eq!(m["latency_us"][key].as_u64().unwrap(), want, "{key}");
    }
    assert_eq!(m["latency_us"]["max"].as_u64().unwrap(), union.max());
    assert_eq!(histogram(&merged, "latency").len(), 3000);
    // The thresholds were evaluated on the merged run, not per shard.
    assert_eq!(
        m["thresholds"].as_array().unwrap().len(),
        a["thresholds"].as_array().unwrap().len()
    );
    // The merged interval log is one valid log on one time base: every window of it holds what
    // the shards recorded in that window, and all of it holds every request.
    let merged_iv = intervals(&merged);
    let shard_iv: Vec<_> = dirs.iter().flat_map(|d| intervals(d)).collect();
    let count = |iv: &[(f64, String, u64)], from: f64, to: f64| -> u64 {
        iv.iter()
            .filter(|(t, tag, _)| tag == "latency" && *t >= from - 1e-3 && *t < to - 1e-3)
            .map(|(_, _, n)| n)
            .sum()
    };
    assert_eq!(count(&merged_iv, 0.0, f64::MAX), 3000);
    let first = merged_iv
        .iter()
        .map(|(t, _, _)| *t)
        .fold(f64::MAX, f64::min);
    for w in 0..4 {
        let (from, to) = (first + f64::from(w), first + f64::from(w + 1));
        assert_eq!(
            count(&merged_iv, from, to),
            count(&shard_iv, from, to),
            "window {w}"
        );
    }
    // A missing shard is refused, named; --allow-partial merges what is there, marked partial.
    let partial = dir.path().join("partial");
    let r = run(&[
        "report",
        "merge",
        dirs[0].to_str().unwrap(),
        dirs[1].to_str().unwrap(),
        "--out",
        partial.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(r.stderr.contains("shards 2/3 are missing"), "{}", r.stderr);
    let r = run(&[
        "report",
        "merge",
        dirs[0].to_str().unwrap(),
        dirs[1].to_str().unwrap(),
        "--allow-partial",
        "--out",
        partial.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(summary(&partial)["shard"], "merged 2 of 3 (partial)");
    // A shard given twice, and a report that is no shard, are refused.
    let r = run(&[
        "report",
        "merge",
        dirs[0].to_str().unwrap(),
        dirs[0].to_str().unwrap(),
        dirs[1].to_str().unwrap(),
        dirs[2].to_str().unwrap(),
        "--out",
        dir.path().join("twice").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("shard 0/3 is given twice"),
        "{}",
        r.stderr
    );
    let r = run(&[
        "report",
        "merge",
        whole.to_str().unwrap(),
        "--out",
        dir.path().join("whole-merged").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("is not a shard of a sharded run"),
        "{}",
        r.stderr
    );
    // The scenario is found from another folder: summary.json names it by absolute path.
    assert!(
        std::path::Path::new(a["scenario_file"].as_str().unwrap()).is_absolute(),
        "{}",
        a["scenario_file"]
    );
    let elsewhere = bin()
        .current_dir(dir.path())
        .args(["report", "merge", "--thresholds", "counts"])
        .args(&dirs)
        .args(["--out", "from-elsewhere"])
        .output()
        .unwrap();
    assert!(
        elsewhere.status.success(),
        "{}",
        String::from_utf8_lossy(&elsewhere.stderr)
    );
    // Shards of different runs are refused.
    let other = dir.path().join("other");
    let t = scenario("contoso-howto-2018.toml");
    assert_eq!(
        run(&[
            "run",
            t.to_str().unwrap(),
            "--count",
            "10",
            "--no-progress",
            "--out",
            other.to_str().unwrap()
        ])
        .code,
        0
    );
    let r = run(&[
        "report",
        "merge",
        dirs[0].to_str().unwrap(),
        other.to_str().unwrap(),
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("are not shards of one run"),
        "{}",
        r.stderr
    );
}

/// Each shard's summary names its run (id, scenario hash, index and count); shards of another
/// run of the same scenario (another `--run-id`) or of the same file at another rate are refused
/// as foreign; `--start-at` gives shards one schedule, so a shard that starts late shows it as
/// schedule lag and the same run id is derived on every machine.
#[test]
fn shards_name_their_run_and_share_a_start_time() {
    let dir = tempdir();
    let s = scenario("contoso.toml");
    let s = s.to_str().unwrap();
    let shard = |i: u32, extra: &[&str]| {
        let out = dir
            .path()
            .join(format!("s{i}-{}", extra.join("_").replace(['/', ':'], "")));
        let mut args = vec![
            "run",
            s,
            "--count",
            "40",
            "--rate",
            "400",
            "--no-progress",
            "--out",
            out.to_str().unwrap(),
        ];
        let label = format!("{i}/2");
        args.extend(["--shard", &label]);
        args.extend(extra);
        let r = run(&args);
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        out
    };
    let (a, b) = (shard(0, &[]), shard(1, &[]));
    let (va, vb) = (summary(&a), summary(&b));
    assert_eq!(
        (va["shard_index"].as_u64(), vb["shard_index"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(va["shard_count"], 2);
    assert_eq!(
        va["run_id"], vb["run_id"],
        "one run id derived on every shard"
    );
    assert_eq!(va["scenario_hash"].as_str().unwrap().len(), 64);
    assert_eq!(va["scenario_hash"], vb["scenario_hash"]);

    let merge = |dirs: &[&std::path::Path], name: &str| {
        let out = dir.path().join(name);
        let mut args = vec!["report", "merge"];
        args.extend(dirs.iter().map(|d| d.to_str().unwrap()));
        args.extend(["--out", out.to_str().unwrap()]);
        (run(&args), out)
    };
    let (r, m) = merge(&[&a, &b], "m");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let vm = summary(&m);
    assert_eq!(vm["run_id"], va["run_id"]);
    assert_eq!(vm["shard_count"], 2);
    assert!(vm["shard_index"].is_null());

    // Another run of the same scenario, told apart by --run-id: foreign.
    let other = shard(1, &["--run-id", "nightly-2"]);
    assert_eq!(summary(&other)["run_id"], "nightly-2");
    let (r, _) = merge(&[&a, &other], "m2");
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("the run id differs"), "{}", r.stderr);
    // The same file at another rate is another scenario.
    let out = dir.path().join("fast");
    let r = run(&[
        "run",
        s,
        "--count",
        "40",
        "--rate",
        "800",
        "--no-progress",
        "--shard",
        "1/2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (r, _) = merge(&[&a, &out], "m3");
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("the scenario (its text or overriding flags) differs"),
        "{}",
        r.stderr
    );

    // --start-at 30 s ago: the schedule began then, so every request of this late shard is at
    // least ~29.9 s behind it (40 requests at 200/s span 0.2 s). Lateness only grows with load.
    let at = std::time::SystemTime::now() - std::time::Duration::from_secs(30);
    let at = humantime::format_rfc3339_millis(at).to_string();
    let late0 = shard(0, &["--start-at", &at]);
    let late1 = shard(1, &["--start-at", &at]);
    let (v0, v1) = (summary(&late0), summary(&late1));
    assert_eq!(v0["started_at"], at.as_str());
    assert_eq!(v0["run_id"], v1["run_id"]);
    assert_ne!(
        v0["run_id"], va["run_id"],
        "--start-at makes it another run"
    );
    let lag_min = v1["schedule_lag_us"]["p50"].as_f64().unwrap();
    assert!(lag_min >= 29_000_000.0, "lag p50 {lag_min} µs");
    let (r, m) = merge(&[&late0, &late1], "late");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(summary(&m)["requests"]["scheduled"], 40);
    // Both shards' interval logs start at the shared time.
    let t0 = humantime::parse_rfc3339(&at).unwrap();
    let t0 = t0
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for (start, _, _) in intervals(&m) {
        assert!(start >= t0 - 0.001, "{start} < {t0}");
    }

    // A time in the future is waited for; an unparsable one is refused.
    let soon = std::time::SystemTime::now() + std::time::Duration::from_millis(1500);
    let soon_s = humantime::format_rfc3339_millis(soon).to_string();
    let before = std::time::SystemTime::now();
    let waited = shard(0, &["--start-at", &soon_s]);
    assert!(std::time::SystemTime::now() >= soon);
    assert!(before < soon);
    assert_eq!(summary(&waited)["started_at"], soon_s.as_str());
    let r = run(&["run", s, "--start-at", "tomorrow", "--count", "1"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("is not an RFC 3339 time"), "{}", r.stderr);
}
