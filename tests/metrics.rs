//! `run --metrics-addr`: the `/metrics` endpoint while a run goes and after it (with
//! `--metrics-linger`): its counters equal `summary.json`'s, read directly and through a real
//! Prometheus server scraping it (Debian's `prometheus`, installed by `.ci/run`; outside CI a
//! machine without it skips that half and says so).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{bin, scenario, summary, tempdir};

/// `GET path` on `addr` over HTTP/1.1: (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // Chunked or not, the OpenMetrics lines are what we read.
    (status, body.to_owned())
}

/// The value of the sample `name{labels}` (labels exactly as printed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

/// Starts a webhook-mode run of `requests` requests with `/metrics` on a free port, lingering
/// `linger`; returns the child and the metrics address once printed.
fn start_run(out: &Path, requests: u32, linger: &str) -> (Child, String) {
    let mut child = bin()
        .args([
            "run",
            scenario("contoso.toml").to_str().unwrap(),
            "--rate",
            "200",
            "--count",
            &requests.to_string(),
            "--thresholds",
            "counts",
            "--no-progress",
            "--metrics-addr",
            "127.0.0.1:0",
            "--metrics-linger",
            linger,
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut addr = None;
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        if let Some(rest) = line.strip_prefix("metrics: http://") {
            addr = Some(rest.trim().trim_end_matches("/metrics").to_owned());
            break;
        }
        line.clear();
    }
    std::thread::spawn(move || for _ in reader.lines() {});
    (child, addr.expect("the run prints its metrics address"))
}

fn wait_for_summary(out: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !out.join("summary.json").exists() {
        assert!(Instant::now() < deadline, "the run finishes");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The report is complete once report.html (written after summary.json) is there.
    while !out.join("latency.hgrm").exists() {
        assert!(Instant::now() < deadline, "the report is written");
        std::thread::sleep(Duration::from_millis(50));
    }
    summary(out)
}

/// The summary's counters as the endpoint names them.
fn expected(v: &Value) -> Vec<(String, f64)> {
    let r = &v["requests"];
    let mut out = vec![
        (
            "loadtest_ended_total{end=\"answered\"}".to_owned(),
            r["completed"].as_f64().unwrap(),
        ),
        (
            "loadtest_ended_total{end=\"transport\"}".to_owned(),
            r["failed"].as_f64().unwrap(),
        ),
        (
            "loadtest_ended_total{end=\"timed_out\"}".to_owned(),
            r["timed_out"].as_f64().unwrap(),
        ),
        (
            "loadtest_latency_seconds_count".to_owned(),
            (r["completed"].as_u64().unwrap()
                + r["failed"].as_u64().unwrap()
                + r["timed_out"].as_u64().unwrap()) as f64,
        ),
    ];
    for c in v["classes"].as_array().unwrap() {
        let class = c["name"].as_str().unwrap();
        for (outcome, n) in c["outcomes"].as_object().unwrap() {
            out.push((
                format!("loadtest_requests_total{{class=\"{class}\",outcome=\"{outcome}\"}}"),
                n.as_f64().unwrap(),
            ));
        }
        out.push((
            format!("loadtest_expectations_total{{class=\"{class}\",result=\"met\"}}"),
            c["passed"].as_f64().unwrap(),
        ));
    }
    out
}

#[test]
fn the_endpoint_counts_what_the_summary_reports() {
    let dir = tempdir();
    let out = dir.path().join("r");
    let (mut child, addr) = start_run(&out, 600, "20s");
    // While the run goes: a valid exposition with the run's labels.
    let (status, text) = get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        text.contains("loadtest_run_info{scenario=\"contoso\",mode=\"webhook\""),
        "{text}"
    );
    assert!(
        text.contains("# TYPE loadtest_latency_seconds histogram"),
        "{text}"
    );
    assert_eq!(get(&addr, "/other").0, 404);
    // After it, during the linger: the final counts, and nothing left in flight.
    let v = wait_for_summary(&out);
    let (_, text) = get(&addr, "/metrics");
    assert_eq!(sample(&text, "loadtest_in_flight"), Some(0.0), "{text}");
    for (series, want) in expected(&v) {
        assert_eq!(sample(&text, &series), Some(want), "{series}\n{text}");
    }
    assert_eq!(
        sample(&text, "loadtest_latency_seconds_bucket{le=\"+Inf\"}"),
        Some(600.0),
        "{text}"
    );
    if let Some(prom) = prometheus_binary() {
        scraped_by_prometheus(&prom, &addr, &v, dir.path());
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `webhook serve --metrics-addr`: after a run against it, `webhook_requests_total` by status
/// adds up to the requests the run's summary says were answered, each status as often as the
/// run saw it, and nothing is in flight.
#[test]
fn webhook_serve_counts_its_answers() {
    let dir = tempdir();
    let hook = crate::util::Webhook::start(&[
        "--scenario",
        scenario("contoso.toml").to_str().unwrap(),
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let metrics = hook
        .metrics
        .clone()
        .expect("webhook serve prints its metrics address");
    let (_, before) = get(&metrics, "/metrics");
    assert!(
        before.contains("# TYPE webhook_requests counter"),
        "{before}"
    );
    let out = dir.path().join("r");
    let r = crate::util::run(&[
        "run",
        scenario("contoso.toml").to_str().unwrap(),
        "--url",
        &format!("{}/api/HttpTrigger1", hook.base),
        "--rate",
        "200",
        "--count",
        "300",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(r.code == 0 || r.code == 1, "{}", r.stderr);
    let v = summary(&out);
    let (_, text) = get(&metrics, "/metrics");
    let total: f64 = text
        .lines()
        .filter(|l| l.starts_with("webhook_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        total,
        v["requests"]["completed"].as_f64().unwrap(),
        "{text}"
    );
    assert!(
        sample(&text, "webhook_requests_total{code=\"200\"}").unwrap() > 0.0,
        "{text}"
    );
    assert_eq!(sample(&text, "webhook_in_flight"), Some(0.0), "{text}");
}

/// The Prometheus server to test against: `$LOADTEST_PROMETHEUS` or `prometheus` on the PATH.
/// Under CI (`CI` set) it must exist; elsewhere its absence skips that half of the test.
fn prometheus_binary() -> Option<String> {
    let name = std::env::var("LOADTEST_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
    let found = std::process::Command::new(&name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs prometheus (.ci/run); `{name}` is not runnable"
        );
        eprintln!("skip: no `{name}` here: the real-Prometheus half is not run");
        return None;
    }
    Some(name)
}

/// A real Prometheus scrapes the endpoint every second; its HTTP API must then report the
/// summary's counts.
fn scraped_by_prometheus(prom: &str, target: &str, v: &Value, dir: &Path) {
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let web = listen.local_addr().unwrap().to_string();
    drop(listen);
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: loadtest\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let mut server = std::process::Command::new(prom)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let want = v["requests"]["completed"].as_f64().unwrap();
    let query = |q: &str| -> Option<f64> {
        let path = format!("/api/v1/query?query={q}");
        let (status, body) = std::net::TcpStream::connect(&web)
            .ok()
            .map(|_| get(&web, &path))?;
        if status != 200 {
            return None;
        }
        // Chunked bodies carry a size line first; the JSON object is what we parse.
        let json = &body[body.find('{')?..=body.rfind('}')?];
        let v: Value = serde_json::from_str(json).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    // Up to 15 s for the server to start and scrape the final counts.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut got = None;
    while Instant::now() < deadline {
        got = query("loadtest_ended_total%7Bend%3D%22answered%22%7D");
        if got == Some(want) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let met = query("sum(loadtest_expectations_total%7Bresult%3D%22met%22%7D)");
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(got, Some(want), "Prometheus's answered count");
    assert_eq!(
        met,
        Some(v["expectations"]["passed"].as_f64().unwrap()),
        "Prometheus's met expectations"
    );
}
