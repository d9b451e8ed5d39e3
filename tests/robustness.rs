use std::io::Write as _;
use std::time::Duration;

use crate::util::{bin, run, run_file, scenario, summary, tempdir};

#[test]
fn malformed_scenario_names_file_line_column_and_key() {
    let dir = tempdir();
    let path = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(scenario("contoso.toml"))
        .unwrap()
        .replace("rate = 2000 ", "rate = \"fast\" ");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("rate = \"fast\""))
        .unwrap()
        + 1;
    let r = run(&["run", path.to_str().unwrap(), "--no-progress"]);
    assert_eq!(r.code, 2);
    let want = format!("{}:{line}:8: load.rate:", path.display());
    assert!(r.stderr.contains(&want), "{}", r.stderr);

    std::fs::write(&path, text.replace("[load]", "[load]\nratee = 5")).unwrap();
    let r = run(&["run", path.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("load.ratee: unknown field `ratee`, expected one of"),
        "{}",
        r.stderr
    );
}

#[test]
fn unreachable_target_is_a_clear_error_with_a_full_report() {
    // Port 1 on loopback: privileged, so no test's server can be there (a port that was free a
    // moment ago can be taken by a parallel test's listener).
    let port = 1;
    let dir = tempdir();
    let out = dir.path().join("r");
    let url = format!("http://127.0.0.1:{port}/api/HttpTrigger1?code=k");
    let r = run(&[
        "run",
        scenario("contoso.toml").to_str().unwrap(),
        "--url",
        &url,
        // No abort_on_fail stop: how many were sent before it would depend on the machine.
        "--thresholds",
        "none",
        "--count",
        "50",
        "--rate",
        "500",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stderr.contains("never answered") && r.stderr.to_lowercase().contains("connect"),
        "{}",
        r.stderr
    );
    let v = summary(&out);
    assert_eq!(v["requests"]["failed"], 50, "{}", v["requests"]);
    assert_eq!(v["errors"][0]["source"], "network", "{}", v["errors"]);
    // Failure first: the cause opens the text, the markdown and the HTML.
    let first = r.stdout.lines().next().unwrap_or("");
    assert!(
        first.starts_with("FAIL: the target never answered (50 requests sent); 50 × [network]"),
        "{first}"
    );
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("\n- the target never answered"), "{md}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<li>the target never answered"), "html");
    assert_eq!(v["requests"]["completed"], 0);
    assert_eq!(v["verdict"], "fail");
}

#[test]
fn ctrl_c_stops_and_accounts_for_every_scheduled_request() {
    let dir = tempdir();
    let out = dir.path().join("r");
    let mut child = bin()
        .args([
            "run",
            scenario("contoso.toml").to_str().unwrap(),
            "--rate",
            "200",
            "--duration",
            "30s",
            "--no-progress",
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The banner comes after the Ctrl-C handler is installed; then let it send for a moment.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut banner = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut banner).unwrap();
    assert!(
        banner.starts_with("loadtest run: scenario contoso"),
        "{banner}"
    );
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    std::thread::sleep(Duration::from_millis(500));
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(130));
    let v = summary(&out);
    assert_eq!(v["interrupted"], true);
    assert_eq!(v["requests"]["scheduled"], 6000);
    let sent = v["requests"]["sent"].as_u64().unwrap();
    // 30 s at 200/s were scheduled; the run stopped long before.
    assert!(sent < 6000, "{sent}");
    assert_eq!(v["requests"]["not_sent"].as_u64().unwrap(), 6000 - sent);
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("- interrupted (Ctrl-C)"), "{md}");
}

#[test]
fn help_documents_exit_codes() {
    let r = run(&["run", "--help"]);
    assert_eq!(r.code, 0);
    for code in ["0 ", "1 ", "2 ", "130"] {
        assert!(r.stdout.contains(&format!("  {code}")), "{}", r.stdout);
    }
}

/// `https://` goes through rustls: against a plain-HTTP listener the handshake fails, and that is
/// a classified transport error with a clear message, not a hang or a panic.
#[test]
fn https_targets_use_tls_and_report_handshake_failures() {
    let hook = crate::util::Webhook::start(&[]);
    let url = hook.base.replace("http://", "https://") + "/api/HttpTrigger1?code=k";
    let dir = tempdir();
    let out = dir.path().join("r");
    let r = run(&[
        "run",
        scenario("contoso.toml").to_str().unwrap(),
        "--url",
        &url,
        // No abort_on_fail stop: how many were sent before it would depend on the machine.
        "--thresholds",
        "none",
        "--count",
        "5",
        "--rate",
        "100",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let v = summary(&out);
    assert_eq!(v["requests"]["failed"], 5);
    assert_eq!(v["errors"][0]["source"], "tls", "{}", v["errors"]);
    let msg = v["errors"][0]["message"].as_str().unwrap().to_lowercase();
    assert!(
        msg.contains("tls")
            || msg.contains("ssl")
            || msg.contains("handshake")
            || msg.contains("record"),
        "{msg}"
    );
    let r = run(&[
        "run",
        scenario("contoso.toml").to_str().unwrap(),
        "--url",
        "ftp://x/y?code=secret",
    ]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("is not an http:// or https:// URL") && !r.stderr.contains("secret"),
        "{}",
        r.stderr
    );
}

/// A flag gets the same checks as the key it overrides, and the error names the flag.
#[test]
fn bad_flag_values_are_refused_like_bad_keys() {
    let s = scenario("contoso.toml");
    let s = s.to_str().unwrap();
    for (flag, value, want) in [
        ("--connections", "0", "--connections: must be at least 1"),
        ("--count", "0", "--count: must be at least 1"),
        (
            "--rate",
            "1e-30",
            "--rate: a number of requests per second from 0.001",
        ),
        ("--rate", "fast", "--rate: a number of requests per second"),
        ("--duration", "soon", "--duration: `soon` is not a duration"),
    ] {
        let r = run(&["run", s, flag, value, "--no-progress"]);
        assert_eq!(r.code, 2, "{flag} {value}: {}", r.stderr);
        assert!(r.stderr.contains(want), "{flag} {value}: {}", r.stderr);
    }
    // The file's key gets the same rule, located in the file.
    let dir = tempdir();
    let path = dir.path().join("slow.toml");
    let text = std::fs::read_to_string(scenario("contoso.toml"))
        .unwrap()
        .replace("rate = 2000 ", "rate = 1e-20 ");
    std::fs::write(&path, &text).unwrap();
    let r = run(&["run", path.to_str().unwrap(), "--no-progress"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("slow.toml:")
            && r.stderr
                .contains("load.rate: a number of requests per second from 0.001"),
        "{}",
        r.stderr
    );
}

/// `loadtest run … | head`: a closed standard output is no panic; the report is still written.
#[test]
fn a_closed_stdout_is_no_panic() {
    let dir = tempdir();
    let out = dir.path().join("r");
    let mut child = bin()
        .args([
            "run",
            scenario("contoso.toml").to_str().unwrap(),
            "--thresholds",
            "counts",
            "--count",
            "20",
            "--no-progress",
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out_err = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out_err.stderr);
    assert_eq!(out_err.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    summary(&out);
}

/// Scenario inputs that used to crash, exhaust memory or slip through: each is exit 2 with the
/// file, line and key, checked before anything is allocated for the population.
#[test]
fn hostile_scenarios_are_refused_with_their_location() {
    let base = r#"name = "t"
[target]
mode = "MODE"
HUBCS
[enrollment]
group_id = "g"
primary_key = "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA=="
iot_hubs = HUBS
[[devices]]
class = "toaster"
id = "t{n}-contoso-tstrsd-007"
count = COUNT
expect = { status = "assigned" }
"#;
    let make = |mode: &str, hubs: &str, count: &str, cs: &str| {
        base.replace("MODE", mode)
            .replace("HUBS", hubs)
            .replace("COUNT", count)
            .replace("HUBCS", cs)
    };
    let ok_hubs = r#"["a.azure-devices.net"]"#;
    let cases = [
        (
            make("webhook", ok_hubs, "9223372036854775807", ""),
            "t.toml:12:9: devices[0].count: the scenario's population would be 9223372036854775807 devices; at most 10000000",
        ),
        (
            make("webhook", ok_hubs, "1000000000000", ""),
            "at most 10000000",
        ),
        (
            make("webhook", "[]", "3", ""),
            "t.toml:8:12: enrollment.iot_hubs: name at least one IoT hub",
        ),
        (
            make(
                "mqtt",
                ok_hubs,
                "3",
                r#"hub_connection_strings = ["HostName=a.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=not*base64"]"#,
            ),
            "target.hub_connection_strings: SharedAccessKey: the key is not valid base64",
        ),
    ];
    let dir = tempdir();
    let path = dir.path().join("t.toml");
    for (text, want) in cases {
        std::fs::write(&path, &text).unwrap();
        for cmd in ["run", "plan"] {
            let r =
                run(&[cmd, path.to_str().unwrap(), "--no-progress"]
                    [..if cmd == "run" { 3 } else { 2 }]);
            assert_eq!(r.code, 2, "{cmd} {want}: {}", r.stderr);
            assert!(
                r.stderr.contains(want),
                "{cmd}: want {want:?} in {}",
                r.stderr
            );
        }
    }
    // A huge malformed line is quoted in part only.
    let mut text = make("webhook", ok_hubs, "3", "");
    text.push_str(&format!("[load]\nrate = \"{}\"\n", "x".repeat(1_000_000)));
    std::fs::write(&path, &text).unwrap();
    let r = run(&["run", path.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.len() < 2_000, "{} bytes of error", r.stderr.len());
}

/// A target that accepts and never answers: every request still in flight when the grace period
/// ends is in the latency histogram (at its elapsed time), in its class's row and in the errors.
#[test]
fn abandoned_requests_are_counted_everywhere() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().take(20) {
            held.push(s);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let dir = tempdir();
    let file = dir.path().join("silent.toml");
    std::fs::write(
        &file,
        format!(
            r#"name = "silent"
[target]
url = "http://{addr}/api/HttpTrigger1"
timeout = "1h"
[enrollment]
group_id = "g"
primary_key = "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA=="
iot_hubs = ["a.azure-devices.net"]
[[devices]]
class = "toaster"
id = "t{{n}}-contoso-tstrsd-007"
count = 20
expect = {{ status = "assigned" }}
[load]
rate = 100
grace = "1s"
"#
        ),
    )
    .unwrap();
    let out = dir.path().join("r");
    let r = run_file(&file, &out);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let v = summary(&out);
    let req = &v["requests"];
    assert_eq!(req["timed_out"], 20, "{req}");
    assert_eq!(req["abandoned"], 20, "{req}");
    let c = crate::util::class(&v, "toaster");
    assert_eq!(c["requests"], 20, "{c}");
    assert_eq!(c["failed"], 20, "the expectation is unmet: {c}");
    // Recorded at their elapsed time: at least the 1 s grace period.
    assert!(
        v["latency_us"]["p50"].as_u64().unwrap() >= 1_000_000,
        "{}",
        v["latency_us"]
    );
    assert!(
        v["duration_s"].as_f64().unwrap() >= 1.0,
        "{}",
        v["duration_s"]
    );
    let e = &v["errors"][0];
    assert_eq!(e["source"], "timeout", "{e}");
    assert_eq!(e["count"], 20, "{e}");
    assert!(e["message"].as_str().unwrap().contains("abandoned"), "{e}");
    drop(hold);
}
