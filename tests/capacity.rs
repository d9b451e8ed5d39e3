//! Capacity planning: the knee search against a webhook whose capacity is known, and the
//! self-contained HTML report.

use crate::util::{run, run_file, scenario, summary, tempdir};

/// A step of the search fails when its SLO fails. Here the SLO is a count, `requests < 300`, so the
/// knee is known exactly whatever the machine's speed: each step holds its rate for 2 s, so 50/s
/// sends 100 requests, 100/s sends 200 (pass) and 200/s sends 400 (fail). (A timing SLO would make
/// the verdict depend on how busy the machine is; `benches/` measures real knees.)
const KNEE: &str = r#"name = "knee"
[target]
timeout = "30s"
[enrollment]
group_id = "g"
primary_key = "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA=="
iot_hubs = ["contoso-toasters-hub-1098.azure-devices.net", "contoso-heatpumps-hub-1098.azure-devices.net"]
[[devices]]
class = "toaster"
id = "breakroom{n}-contoso-tstrsd-007"
count = 100000
fault = { delay = "20ms" }
expect = { status = "assigned", hub = "contoso-toasters-hub-1098.azure-devices.net" }
[load]
grace = "60s"
search = { start = 50, factor = 2, hold = "2s", max = 5000 }
[thresholds]
"latency.p99" = "< 1h"
"requests" = "< 300"
"#;

#[test]
fn the_knee_search_stops_at_the_first_failing_step() {
    let dir = tempdir();
    let file = dir.path().join("knee.toml");
    std::fs::write(&file, KNEE).unwrap();
    let out = dir.path().join("plan");
    let r = run(&[
        "plan",
        file.to_str().unwrap(),
        "--fleet",
        "1000000",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("plan.json")).unwrap()).unwrap();
    assert_eq!(plan["knee"].as_f64().unwrap(), 100.0, "{plan}");
    assert_eq!(plan["first_failure"][0].as_f64().unwrap(), 200.0, "{plan}");
    let why = plan["first_failure"][1].to_string();
    assert!(why.contains("requests < 300"), "{why}");
    assert_eq!(plan["steps"].as_array().unwrap().len(), 3, "{plan}");
    // Little's law at the knee: a positive, finite number in flight (its size is the machine's).
    let little = plan["concurrency_at_knee"].as_f64().unwrap();
    assert!(little > 0.0 && little.is_finite(), "{little}");
    let cap = &plan["capacity"];
    assert_eq!(cap["fleet"], 1_000_000);
    assert_eq!(cap["binding"], "hub registry");
    assert!(
        r.stdout.contains("Knee: 100.0/s offered") && !r.stdout.contains("**"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("binding limit hub registry"),
        "{}",
        r.stdout
    );
    // A step failed: the knee is measured, not a bound.
    assert_eq!(plan["bounded"], false);
    assert!(!r.stdout.contains("lower bound"), "{}", r.stdout);
    // The sizing for a day: within every tier's unit cap, with a cost.
    let options = plan["sizing"]["options"].as_array().unwrap();
    assert_eq!(options.len(), 3);
    for o in options {
        let cap = if o["tier"] == "S3" { 10 } else { 200 };
        assert!(o["units_per_hub"].as_u64().unwrap() <= cap, "{o}");
        assert!(o["usd_per_month"].as_f64().unwrap() > 0.0, "{o}");
    }
    assert!(
        r.stdout.contains("USD per month") && r.stdout.contains("support request"),
        "{}",
        r.stdout
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("<svg") && html.contains("Capacity search"),
        "the curve is drawn"
    );
    // Every step left a full report.
    for s in plan["steps"].as_array().unwrap() {
        summary(std::path::Path::new(s["report"].as_str().unwrap()));
    }
}

#[test]
fn report_html_is_self_contained_with_its_charts() {
    let dir = tempdir();
    let out = dir.path().join("report");
    let s = scenario("contoso.toml");
    let r = run(&[
        "run",
        s.to_str().unwrap(),
        "--count",
        "3000",
        "--rate",
        "1500",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for needle in [
        "Latency by percentile",
        "Throughput, errors and latency over time",
        "timeouts/s",
        "429/s",
        "Expectations and outcomes per class",
        "toaster-reprovision",
        "Thresholds",
        "Capacity",
        "learn.microsoft.com/azure/iot-dps/about-iot-dps",
    ] {
        assert!(html.contains(needle), "missing {needle}");
    }
    assert!(html.matches("<svg").count() >= 2, "two charts");
    for external in [
        "<script",
        "src=\"http",
        "href=\"http",
        "@import",
        "url(http",
    ] {
        assert!(!html.contains(external), "external reference {external}");
    }
}

/// A search in which no step fails reports its knee as a lower bound, and the default fleet is
/// the distinct devices the scenario expects to be assigned (contoso: 4,000 toasters and 4,000
/// heat pumps; not the 200 unrecognised devices nor the 200 re-registering toasters).
#[test]
fn a_knee_without_a_failing_step_is_a_lower_bound() {
    let dir = crate::util::tempdir();
    let out = dir.path().join("plan");
    let s = crate::util::scenario("contoso.toml");
    let r = crate::util::run(&[
        "plan",
        s.to_str().unwrap(),
        "--start",
        "100",
        "--max",
        "100",
        "--hold",
        "1s",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("plan.json")).unwrap()).unwrap();
    assert_eq!(plan["bounded"], true);
    assert!(r.stdout.contains("Knee: ≥ 100.0/s offered"), "{}", r.stdout);
    assert!(r.stdout.contains("lower bound"), "{}", r.stdout);
    assert_eq!(plan["capacity"]["fleet"], 8000);
    assert_eq!(plan["sizing"]["fleet"], 8000);
}

/// Thousands of devices against the emulator with its admission ceiling scaled down to 200
/// registrations/s: 3,000 devices arriving over 3 s (1,000/s) are refused, retry after the 429's
/// `retry-after` and get through at the ceiling's pace, about 15 s in all. The same scenario's
/// `plan --simulate` (no sockets) must predict the measured time to onboard (per device, arrival to
/// assigned: p50, p99, the slowest) within 10 %. The ceiling, not this machine, sets the pace: the
/// emulator needs a few percent of one core for 200/s, so a busy machine moves the result by
/// milliseconds in seconds.
const STORM: &str = r#"name = "storm"
[target]
mode = "mqtt"
tls = "plain"
verify_twins = false
device_timeout = "120s"
[emulator]
immediate = true
admission = { registrations_per_second = 200, retry_after = 1 }
[enrollment]
group_id = "g"
primary_key = "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA=="
iot_hubs = ["contoso-toasters-hub-1098.azure-devices.net", "contoso-heatpumps-hub-1098.azure-devices.net"]
[webhook]
policy = "tutorial-current"
[[devices]]
class = "toaster"
id = "breakroom{n}-contoso-tstrsd-007"
count = 3000
expect = { status = "assigned", hub = "contoso-toasters-hub-1098.azure-devices.net" }
[load]
rate = 1000
count = 3000
max_in_flight = 4000
grace = "60s"
"#;

#[test]
fn the_onboarding_simulation_predicts_a_throttled_run_within_ten_percent() {
    let dir = tempdir();
    let file = dir.path().join("storm.toml");
    std::fs::write(&file, STORM).unwrap();
    let out = dir.path().join("run");
    let r = run_file(&file, &out);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let measured = summary(&out);
    assert_eq!(measured["expectations"]["passed"], 3000, "{measured}");
    let throttled = measured["phases"]["throttled_429"].as_u64().unwrap();
    assert!(
        throttled > 3000,
        "the ceiling refused registers: {throttled}"
    );
    let plan = dir.path().join("plan");
    let p = run(&[
        "plan",
        file.to_str().unwrap(),
        "--simulate",
        "--webhook-rate",
        "inf",
        "--arrival",
        "ramp:3s",
        "--fleet",
        "3000",
        "--out",
        plan.to_str().unwrap(),
    ]);
    assert_eq!(p.code, 0, "{}\n{}", p.stdout, p.stderr);
    let sim: serde_json::Value =
        serde_json::from_slice(&std::fs::read(plan.join("simulation.json")).unwrap()).unwrap();
    assert_eq!(sim["complete"], true, "{sim}");
    assert_eq!(sim["binding"], "admission rate", "{sim}");
    let lat = &measured["latency_us"];
    let mut report = String::new();
    let mut off = Vec::new();
    for (q, key) in [("p50", "p50_s"), ("p99", "p99_s"), ("max", "max_s")] {
        let m = lat[q].as_f64().unwrap() / 1e6;
        let s = sim[key].as_f64().unwrap();
        report.push_str(&format!("{q}: measured {m:.2} s, simulated {s:.2} s\n"));
        if (s - m).abs() > 0.1 * m {
            off.push(q);
        }
    }
    report.push_str(&format!(
        "429s: measured {throttled}, simulated {}\n",
        sim["throttled"]
    ));
    eprintln!("{report}");
    assert!(off.is_empty(), "more than 10 % off: {off:?}\n{report}");
    assert!(
        p.stdout.contains("binding limit: admission rate"),
        "{}",
        p.stdout
    );
}

/// `plan --simulate --webhook-rate` needs no search: a million devices within a day get a sizing
/// within every tier's cap with its cost and dated sources, and `[capacity.tiers]` overrides what a
/// tier offers (here a cheaper S3 of at most 4 units, which then comes first) and says so; a bad
/// override names the file, line and field.
#[test]
fn tier_figures_can_be_overridden_and_the_plan_says_so() {
    let dir = tempdir();
    let base = r#"name = "tiers"
[enrollment]
group_id = "g"
primary_key = "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA=="
iot_hubs = ["contoso-toasters-hub-1098.azure-devices.net"]
[[devices]]
class = "toaster"
id = "breakroom{n}-contoso-tstrsd-007"
count = 100
expect = { status = "assigned" }
"#;
    let file = dir.path().join("tiers.toml");
    std::fs::write(
        &file,
        format!("{base}[capacity.tiers]\nS3 = {{ usd_per_unit_month = 1, max_units = 4 }}\n"),
    )
    .unwrap();
    let out = dir.path().join("plan");
    let r = run(&[
        "plan",
        file.to_str().unwrap(),
        "--simulate",
        "--webhook-rate",
        "500",
        "--fleet",
        "1000000",
        "--within",
        "24h",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("plan.json")).unwrap()).unwrap();
    assert!(plan["steps"].as_array().unwrap().is_empty(), "no search");
    let options = plan["sizing"]["options"].as_array().unwrap();
    assert_eq!(options[0]["tier"], "S3", "{plan}");
    assert_eq!(options[0]["usd_per_month"], 1.0, "{plan}");
    for o in options {
        let cap = if o["tier"] == "S3" { 4 } else { 200 };
        assert!(o["units_per_hub"].as_u64().unwrap() <= cap, "{o}");
    }
    assert!(
        r.stdout
            .contains("Overridden in [capacity.tiers]: S3 at most 4 units"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("UNCONFIRMED as of 2026-12"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("Onboarding storm (simulated"),
        "{}",
        r.stdout
    );
    assert!(out.join("simulation.json").exists());
    std::fs::write(
        &file,
        format!("{base}[capacity.tiers]\nS1 = {{ max_units = 0 }}\n"),
    )
    .unwrap();
    let bad = run(&[
        "plan",
        file.to_str().unwrap(),
        "--simulate",
        "--webhook-rate",
        "500",
    ]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("tiers.toml")
            && bad.stderr.contains(":12")
            && bad.stderr.contains("capacity.tiers.S1"),
        "{}",
        bad.stderr
    );
}
