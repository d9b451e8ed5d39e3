//! Test helpers: the `loadtest` binary as a subprocess, the reference webhook as a separate
//! process on 127.0.0.1:0, report reading and schema validation.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

pub mod dps;

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_loadtest"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary to completion. `run`, `check` and `plan` get `--thresholds counts` unless the
/// test chooses: a latency or throughput threshold depends on how busy the machine is, so no
/// test's verdict may rest on one (those tests pass `--thresholds all` with limits that cannot
/// fail, or cannot pass, whatever the machine does).
pub fn run(args: &[&str]) -> Run {
    let mut args = args.to_vec();
    if deterministic(&args) {
        let at = if args[0] == "report" { 2 } else { 1 };
        args.splice(at..at, ["--thresholds", "counts"]);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = bin()
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .expect("loadtest runs");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into(),
        stderr: String::from_utf8_lossy(&stderr).into(),
    }
}

/// `loadtest run FILE --no-progress --out OUT`, as [`run`] runs it.
pub fn run_file(file: &Path, out: &Path) -> Run {
    run(&[
        "run",
        file.to_str().unwrap(),
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ])
}

/// True for a command that evaluates thresholds and does not choose its selection itself.
pub fn deterministic(args: &[&str]) -> bool {
    (matches!(args.first(), Some(&("run" | "check" | "plan")))
        || args.starts_with(&["report", "merge"]))
        && !args.contains(&"--help")
        && !args.contains(&"--thresholds")
}

/// The reference webhook in its own process; killed on drop.
pub struct Webhook {
    child: Child,
    pub base: String,
    /// With `--metrics-addr`: the `host:port` of its `/metrics`.
    pub metrics: Option<String>,
}

impl Webhook {
    pub fn start(args: &[&str]) -> Self {
        let mut child = bin()
            .args(["webhook", "serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("webhook starts");
        let mut line = String::new();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        reader.read_line(&mut line).unwrap();
        let mut metrics = None;
        if args.contains(&"--metrics-addr") {
            let mut more = String::new();
            while reader.read_line(&mut more).unwrap() > 0 {
                if let Some(m) = more.trim().strip_prefix("metrics: http://") {
                    metrics = Some(m.trim_end_matches("/metrics").to_owned());
                    break;
                }
                more.clear();
            }
        }
        // Keep draining stdout: the server must never write into a closed or full pipe.
        std::thread::spawn(move || for _ in reader.lines() {});
        let start = line
            .find("http://")
            .or_else(|| line.find("https://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"));
        let base = line[start..].split_whitespace().next().unwrap().to_owned();
        Self {
            child,
            base,
            metrics,
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn summary(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json written");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_valid(&v);
    assert_accounted(&v);
    v
}

/// summary.json satisfies the committed JSON Schema.
pub fn assert_valid(v: &Value) {
    let schema: Value =
        serde_json::from_str(include_str!("../../reports/schema/summary.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(v)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "summary.json violates the schema: {errors:#?}"
    );
}

/// scheduled = completed + failed + timed_out + not_sent, and sent + not_sent = scheduled.
pub fn assert_accounted(v: &Value) {
    let r = &v["requests"];
    let n = |k: &str| r[k].as_u64().unwrap();
    assert_eq!(
        n("scheduled"),
        n("completed") + n("failed") + n("timed_out") + n("not_sent"),
        "{r}"
    );
    assert_eq!(n("scheduled"), n("sent") + n("not_sent"), "{r}");
}

pub fn class<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no class {name}"))
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `loadtest dps serve` in its own process, with the listeners `args` asks for; the addresses it
/// prints are read back. Killed on drop.
pub struct DpsProcess {
    child: Child,
    /// `MQTT (TLS):` host:port.
    pub mqtt_tls: Option<String>,
    /// `MQTT (plain):` host:port.
    pub mqtt_plain: Option<String>,
    /// `HTTP (plain):` host:port.
    pub http_plain: Option<String>,
    /// `metrics:` host:port (with `--metrics-addr`).
    pub metrics: Option<String>,
    /// `HTTPS:` host:port.
    pub https: Option<String>,
    /// The DPS service connection string.
    pub service: Option<String>,
    /// `(hub host, connection string)` of each hub.
    pub hubs: Vec<(String, String)>,
    /// Its standard error, when captured.
    pub stderr: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl DpsProcess {
    /// Starts it with certificates in a fresh directory; `capture` sends stderr to a file.
    pub fn start(args: &[&str], capture: bool) -> Self {
        let dir = tempdir();
        let stderr = capture.then(|| dir.path().join("stderr.log"));
        let mut child = bin()
            .args(["dps", "serve"])
            .args(args)
            .arg("--tls-dir")
            .arg(dir.path().join("tls"))
            .stdout(Stdio::piped())
            .stderr(match &stderr {
                Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
                None => Stdio::null(),
            })
            .spawn()
            .expect("dps serve starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut mqtt_tls, mut mqtt_plain, mut http_plain) = (None, None, None);
        let mut metrics = None;
        let (mut https, mut service, mut hubs) = (None, None, Vec::new());
        for line in lines.by_ref() {
            let line = line.unwrap();
            let field = |prefix: &str| {
                line.trim()
                    .strip_prefix(prefix)
                    .map(|a| a.trim().trim_start_matches("http://").to_owned())
            };
            mqtt_tls = mqtt_tls.or(field("MQTT (TLS):"));
            mqtt_plain = mqtt_plain.or(field("MQTT (plain):"));
            http_plain = http_plain.or(field("HTTP (plain):"));
            metrics =
                metrics.or(field("metrics:").map(|m| m.trim_end_matches("/metrics").to_owned()));
            https = https.or(field("HTTPS:").map(|h| h.trim_start_matches("https://").to_owned()));
            service = service
                .or(field("DPS service:")
                    .and_then(|s| s.split_whitespace().next().map(str::to_owned)));
            if let Some(rest) = line.trim().strip_prefix("hub ") {
                if let Some((host, cs)) = rest.split_once(": ") {
                    hubs.push((host.to_owned(), cs.to_owned()));
                }
            }
            if line.starts_with("Ctrl-C") {
                break;
            }
        }
        // Keep draining stdout so the emulator never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            mqtt_tls,
            mqtt_plain,
            http_plain,
            metrics,
            https,
            service,
            hubs,
            stderr,
            _dir: dir,
        }
    }

    /// The CA file it generated.
    pub fn ca(&self) -> PathBuf {
        self._dir.path().join("tls/ca.pem")
    }

    /// Ends it (and waits).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DpsProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
