use std::path::{Path, PathBuf};

use crate::util::{run, scenario, summary, tempdir};

/// contoso.toml with its `[thresholds]` replaced (and `edit` applied), written into `dir`.
fn contoso_with(dir: &Path, thresholds: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(scenario("contoso.toml")).unwrap();
    let head = text.split("[thresholds]").next().unwrap();
    let file = dir.join("contoso.toml");
    std::fs::write(&file, edit(format!("{head}[thresholds]\n{thresholds}\n"))).unwrap();
    file
}

#[test]
fn a_failed_threshold_exits_99_in_run_and_check_with_the_measured_value() {
    let dir = tempdir();
    let file = contoso_with(
        dir.path(),
        "\"latency.p99\" = \"< 1us\"\n\"error_rate\" = \"< 0.001\"",
        |t| t,
    );
    let out = dir.path().join("run");
    let junit = dir.path().join("run.xml");
    // `< 1us` can never pass, whatever the machine: the verdict does not depend on its speed.
    let r = run(&[
        "run",
        file.to_str().unwrap(),
        "--thresholds",
        "all",
        "--no-progress",
        "--count",
        "300",
        "--rate",
        "1000",
        "--out",
        out.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 99, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("FAIL  latency.p99 < 1us  (measured "),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("ok    error_rate < 0.001"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("1 of 2 thresholds failed"),
        "{}",
        r.stdout
    );
    let v = summary(&out);
    assert_eq!(v["verdict"], "fail");
    assert_eq!(v["thresholds"][0]["passed"], false);
    assert_eq!(v["thresholds"][1]["passed"], true);
    crate::junit::assert_valid(&junit, 1);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("type=\"threshold\""), "{xml}");
    assert!(xml.contains("; threshold latency.p99 &lt; 1us\""), "{xml}");
    assert!(std::fs::read_to_string(out.join("summary.md"))
        .unwrap()
        .contains("| `latency.p99 < 1us` |"));

    // `check` evaluates the same thresholds; its snapshot still matches.
    let snap = Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots/contoso.snap");
    let out = dir.path().join("check");
    let r = run(&[
        "check",
        file.to_str().unwrap(),
        "--thresholds",
        "all",
        "--no-progress",
        "--snapshot",
        snap.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 99, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(summary(&out)["snapshot"]["status"], "match");
}

#[test]
fn abort_on_fail_stops_the_run_once_the_threshold_cannot_pass() {
    let dir = tempdir();
    // Heat pumps answer after 100 ms; the maximum latency can never come back under 50 ms.
    let file = contoso_with(
        dir.path(),
        "\"latency.max\" = { threshold = \"< 50ms\", abort_on_fail = true }",
        |t| {
            t.replace("count = 4000\n[devices.expect]\nstatus = \"assigned\"\nhub = \"contoso-heatpumps", "count = 4000\nfault = { delay = \"100ms\" }\n[devices.expect]\nstatus = \"assigned\"\nhub = \"contoso-heatpumps")
        },
    );
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("delay = \"100ms\""));
    let out = dir.path().join("report");
    // 8,400 devices at 500/s would take 17 s.
    let r = run(&[
        "run",
        file.to_str().unwrap(),
        "--thresholds",
        "all",
        "--no-progress",
        "--rate",
        "500",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 99, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("stopped early: threshold `latency.max < 50ms`"),
        "{}",
        r.stdout
    );
    let v = summary(&out);
    assert_eq!(v["aborted_by"], "latency.max < 50ms");
    assert_eq!(v["interrupted"], false);
    // Stopped before the end of the schedule: what was not sent is accounted for.
    assert!(
        v["requests"]["not_sent"].as_u64().unwrap() > 0,
        "{}",
        v["requests"]
    );
}

#[test]
fn timing_thresholds_can_be_left_out_and_are_reported_skipped() {
    let dir = tempdir();
    let file = contoso_with(
        dir.path(),
        "\"latency.p99\" = \"< 1us\"\n\"error_rate\" = \"< 0.001\"",
        |t| t,
    );
    let out = dir.path().join("run");
    let junit = dir.path().join("run.xml");
    let r = run(&[
        "run",
        file.to_str().unwrap(),
        "--thresholds",
        "counts",
        "--no-progress",
        "--count",
        "100",
        "--rate",
        "1000",
        "--out",
        out.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("skip  latency.p99 < 1us  (measured skipped (--thresholds counts))"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("ok    error_rate < 0.001"),
        "{}",
        r.stdout
    );
    let v = summary(&out);
    assert_eq!(v["thresholds"][0]["skipped"], true);
    assert_eq!(v["thresholds"][1]["skipped"], false);
    crate::junit::assert_valid(&junit, 0);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("skipped=\"1\""), "{xml}");
    assert!(xml.contains("<skipped message="), "{xml}");
    // `none` leaves out every threshold; a bad value is a usage error.
    let r = run(&[
        "run",
        file.to_str().unwrap(),
        "--thresholds",
        "none",
        "--no-progress",
        "--count",
        "10",
        "--out",
        dir.path().join("none").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let r = run(&["run", file.to_str().unwrap(), "--thresholds", "some"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("choose from: all, counts, none"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_misspelt_metric_is_a_scenario_error_with_its_line() {
    let dir = tempdir();
    let file = contoso_with(dir.path(), "\"latncy.p99\" = \"< 250ms\"", |t| t);
    let line = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("\"latncy"))
        .unwrap()
        + 1;
    for cmd in ["run", "check"] {
        let r = run(&[cmd, file.to_str().unwrap(), "--no-progress"]);
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(
            r.stderr.contains(&format!(
                "contoso.toml:{line}:1: thresholds.latncy.p99: unknown metric `latncy.p99`; metrics: latency.<agg>"
            )),
            "{}",
            r.stderr
        );
    }
}
