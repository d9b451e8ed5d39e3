//! Admission control end to end: an emulator with more registrations than it admits answers 429
//! with `retry-after` (as DPS does when throttling) instead of letting devices time out; the
//! devices back off and retry, the driver counts the 429s in its phases, and `dps serve` counts
//! what it shed in `/stats` and `/metrics`.

use crate::devices::{device_scenario, stats};
use crate::util::{run, scenario, summary, tempdir, DpsProcess};

/// Admission control: an emulator that is busy (here at most one registration being allocated,
/// each taking 2 s) answers the others 429 with `retry-after`, as DPS does, instead of letting
/// them time out; the devices back off, retry and are all assigned, and both sides count the 429s.
/// (Three devices scheduled 10 ms apart would have to arrive 2 s apart to see no 429.)
#[test]
fn a_busy_emulator_answers_429_and_devices_retry_until_assigned() {
    let dir = tempdir();
    let text = std::fs::read_to_string(scenario("contoso-mqtt.toml")).unwrap();
    let text = text.split("\n[thresholds]").next().unwrap().replacen(
        "[emulator]\nretry_after = 1",
        "[emulator]\nretry_after = 1\nassignment_delay = \"2s\"\nadmission = { in_progress = 1, retry_after = 1 }",
        1,
    );
    assert!(
        text.contains("admission"),
        "the scenario has an [emulator] table"
    );
    let file = dir.path().join("busy.toml");
    std::fs::write(&file, text).unwrap();
    let out = dir.path().join("report");
    let r = run(&[
        "run",
        file.to_str().unwrap(),
        "--count",
        "3",
        "--rate",
        "100",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let v = summary(&out);
    assert_eq!(v["requests"]["completed"], 3, "{}", v["requests"]);
    assert_eq!(v["expectations"]["failed"], 0, "{}", v["expectations"]);
    let throttled = v["phases"]["throttled_429"].as_u64().unwrap();
    assert!(
        throttled >= 2,
        "at least two devices were told to come back: {throttled}"
    );
    assert!(v["phases"]["throttled_devices"].as_u64().unwrap() >= 2);
}

/// `GET /metrics` on `addr`: the body.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned()
}

/// `dps serve` counts what admission control shed in `GET /stats` and in `--metrics-addr`'s
/// `/metrics`.
#[test]
fn admission_refusals_are_counted_in_stats() {
    let dir = tempdir();
    let text = std::fs::read_to_string(scenario("contoso-mqtt.toml")).unwrap();
    let text = text.split("\n[thresholds]").next().unwrap().replacen(
        "[emulator]\nretry_after = 1",
        "[emulator]\nretry_after = 1\nassignment_delay = \"2s\"\nadmission = { in_progress = 1 }",
        1,
    );
    let file = dir.path().join("busy.toml");
    std::fs::write(&file, &text).unwrap();
    let mut e = DpsProcess::start(
        &[
            "--config",
            file.to_str().unwrap(),
            "--mqtt",
            "127.0.0.1:0",
            "--mqtt-plain",
            "127.0.0.1:0",
            "--http-plain",
            "127.0.0.1:0",
            "--no-https",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        false,
    );
    let http = e.http_plain.clone().unwrap();
    let metrics = e
        .metrics
        .clone()
        .expect("dps serve prints its metrics address");
    let target = format!(
        "endpoint = \"{}\"\ntls = \"plain\"\nverify_twins = false",
        e.mqtt_plain.clone().unwrap()
    );
    let file = device_scenario(dir.path(), &target, 3);
    let out = dir.path().join("r");
    // The devices' 2 s timeout is shorter than this emulator's 2 s allocations plus back-off: the
    // verdict does not matter here, what the emulator counted does.
    let _ = run(&[
        "run",
        file.to_str().unwrap(),
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    let s = stats(&http);
    let m = scrape(&metrics);
    e.kill();
    assert!(s["admission_refused"].as_u64().unwrap() >= 1, "{s}");
    // The Prometheus endpoint says what /stats says (nothing runs between the two reads).
    for (series, key) in [
        ("dps_emulator_registrations_total", "registrations"),
        ("dps_emulator_throttled_total", "throttled"),
        ("dps_emulator_admission_refused_total", "admission_refused"),
        (
            "dps_emulator_terminal_total{status=\"assigned\"}",
            "assigned",
        ),
    ] {
        let v = m.lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
        assert_eq!(v, s[key].as_u64(), "{series} in\n{m}");
    }
    assert!(m.contains("dps_emulator_in_progress "), "{m}");
    assert!(
        s["throttled"].as_u64().unwrap() >= s["admission_refused"].as_u64().unwrap(),
        "{s}"
    );
}
