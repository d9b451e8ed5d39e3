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
