//! Shell completions and the man page come from the CLI definition itself.

use crate::util::run;

#[test]
fn completions_and_man_page_name_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let r = run(&["completions", shell]);
        assert_eq!(r.code, 0, "{shell}: {}", r.stderr);
        for cmd in ["run", "check", "plan", "report", "dps", "webhook", "keys"] {
            assert!(r.stdout.contains(cmd), "{shell} completions lack {cmd}");
        }
        assert!(
            r.stdout.contains("--start-at"),
            "{shell}: flags are completed too"
        );
    }
    let r = run(&["completions", "tcsh"]);
    assert_eq!(r.code, 2, "an unknown shell is a usage error");
    let man = run(&["man"]);
    assert_eq!(man.code, 0);
    assert!(
        man.stdout.starts_with(".ie") || man.stdout.contains(".TH loadtest 1"),
        "{}",
        &man.stdout[..200.min(man.stdout.len())]
    );
    assert!(man.stdout.contains(".TH loadtest 1"));
    assert!(
        man.stdout.contains("Exit codes"),
        "the exit codes are in the page"
    );
}

/// `run -` reads the scenario from stdin; `--output json` prints summary.json itself on stdout
/// (nothing else); `-q` prints only the verdict line.
#[test]
fn scenario_from_stdin_json_output_and_quiet() {
    use std::io::Write as _;
    use std::process::Stdio;
    let dir = crate::util::tempdir();
    let text = std::fs::read_to_string(crate::util::scenario("contoso.toml")).unwrap();
    let out = dir.path().join("r");
    let mut child = crate::util::bin()
        .args([
            "run",
            "-",
            "--count",
            "20",
            "--thresholds",
            "counts",
            "--output",
            "json",
            "--out",
        ])
        .arg(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let printed: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("stdout is JSON only");
    let written = crate::util::summary(&out);
    assert_eq!(printed, written);
    assert_eq!(printed["scenario_file"], "-");
    assert_eq!(printed["requests"]["scheduled"], 20);

    let q = crate::util::run(&[
        "run",
        crate::util::scenario("contoso.toml").to_str().unwrap(),
        "--count",
        "10",
        "-q",
        "--out",
        dir.path().join("q").to_str().unwrap(),
    ]);
    assert_eq!(q.code, 0, "{}", q.stderr);
    assert_eq!(q.stdout.trim().lines().count(), 1, "{}", q.stdout);
    assert!(q.stdout.starts_with("verdict: PASS"), "{}", q.stdout);
    assert!(
        !q.stderr.contains("loadtest run: scenario"),
        "no banner: {}",
        q.stderr
    );
}

/// `--ndjson FILE`: one JSON line per second of the run; together they account for every
/// request that ended, the running total ends at the summary's, and the last (partial) second
/// says how much of it the run covered.
#[test]
fn ndjson_has_a_line_per_second_that_adds_up() {
    let dir = crate::util::tempdir();
    let file = dir.path().join("seconds.ndjson");
    let out = dir.path().join("r");
    let r = crate::util::run(&[
        "run",
        crate::util::scenario("contoso.toml").to_str().unwrap(),
        "--rate",
        "1000",
        "--count",
        "2500",
        "--no-progress",
        "--ndjson",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert!(!lines.is_empty());
    let v = crate::util::summary(&out);
    let req = &v["requests"];
    let ended = req["completed"].as_u64().unwrap()
        + req["failed"].as_u64().unwrap()
        + req["timed_out"].as_u64().unwrap();
    let sum: u64 = lines.iter().map(|l| l["ended"].as_u64().unwrap()).sum();
    assert_eq!(sum, ended);
    assert_eq!(lines.last().unwrap()["total_ended"], ended);
    let seconds: Vec<u64> = lines
        .iter()
        .map(|l| l["second"].as_u64().unwrap())
        .collect();
    assert!(seconds.windows(2).all(|w| w[0] < w[1]), "{seconds:?}");
    let last = lines.last().unwrap()["length_s"].as_f64().unwrap();
    assert!(last > 0.0 && last <= 1.0, "{last}");
}
