use crate::util::{class, run, scenario, summary, tempdir, Webhook};

fn run_scenario(file: &str, extra: &[&str]) -> (crate::util::Run, serde_json::Value) {
    let dir = tempdir();
    let out = dir.path().join("report");
    let s = scenario(file);
    let mut args = vec![
        "run",
        s.to_str().unwrap(),
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let r = run(&args);
    let v = summary(&out);
    (r, v)
}

#[test]
fn contoso_embedded_passes_with_the_per_class_table() {
    let (r, v) = run_scenario("contoso.toml", &["--count", "1200", "--rate", "3000"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("class")
            && r.stdout.contains("toaster-reprovision")
            && r.stdout.contains("verdict: PASS"),
        "{}",
        r.stdout
    );
    assert_eq!(v["verdict"], "pass");
    assert_eq!(v["requests"]["completed"], 1200);
    assert_eq!(
        class(&v, "toaster")["hubs"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["contoso-toasters-hub-1098.azure-devices.net"]
    );
    assert_eq!(
        class(&v, "heatpump")["hubs"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["contoso-heatpumps-hub-1098.azure-devices.net"]
    );
    assert!(
        class(&v, "unrecognised")["outcomes"]["failed:400207"]
            .as_u64()
            .unwrap()
            > 0
    );
    // Shuffled interleaving: every class is hit in the first 1,200 of 8,400 devices.
    for c in v["classes"].as_array().unwrap() {
        assert!(c["requests"].as_u64().unwrap() > 0, "{c}");
    }
}

#[test]
fn older_seeds_behave_as_their_documents_say() {
    let (r, v) = run_scenario(
        "contoso-tutorial-2020.toml",
        &["--count", "400", "--rate", "2000"],
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(
        class(&v, "heatpump")["outcomes"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["failed:400207"]
    );
    assert_eq!(
        class(&v, "toaster")["outcomes"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["assigned"]
    );
    let (r, v) = run_scenario(
        "contoso-howto-2018.toml",
        &["--count", "400", "--rate", "2000"],
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(v["verdict"], "pass");
}

/// The troubleshooting table against the reference webhook in its own process, by URL, with a
/// function key that must never be printed or written.
#[test]
fn external_webhook_every_troubleshooting_row() {
    let faults = scenario("contoso-faults.toml");
    let hook = Webhook::start(&["--scenario", faults.to_str().unwrap()]);
    let secret = "TOPSECRET-function-key-77";
    let url = format!("{}/api/HttpTrigger1?code={secret}", hook.base);
    let (r, v) = run_scenario("contoso-faults.toml", &["--url", &url]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let only = |name: &str| -> String {
        let o = class(&v, name)["outcomes"].as_object().unwrap().clone();
        assert_eq!(o.len(), 1, "{name}: {o:?}");
        o.keys().next().unwrap().clone()
    };
    assert_eq!(only("assigned"), "assigned");
    assert_eq!(only("hub-null"), "failed:400208");
    assert_eq!(only("hub-empty"), "failed:400208");
    assert_eq!(only("unauthorized"), "failed:400209");
    assert_eq!(only("throttled-then-assigned"), "assigned");
    assert_eq!(only("throttled-gives-up"), "failed:400207");
    assert_eq!(only("server-error"), "failed:400207");
    assert_eq!(only("forbidden"), "failed:400207");
    assert_eq!(only("hub-not-linked"), "failed:400207");
    assert_eq!(only("malformed"), "failed:400207");
    assert_eq!(only("timeout"), "failed:400207");
    assert_eq!(only("disabled"), "disabled");
    assert_eq!(only("individual"), "assigned");
    // >= 429 is retried 10 times: 11 attempts each for the two give-up classes (20 devices each),
    // 3 for the recovering class, none for the disabled device.
    let attempts = v["requests"]["attempts"].as_u64().unwrap();
    assert_eq!(attempts, 20 * 11 * 2 + 20 * 3 + (222 - 20 * 3 - 1));
    assert_eq!(v["requests"]["timed_out"], 10);
    // Retries take DPS's (scaled) schedule: 1+10+...+82 ms = 415 ms before giving up.
    assert!(
        class(&v, "throttled-gives-up")["latency_us"]["p50"]
            .as_u64()
            .unwrap()
            >= 415_000
    );
    // The function key never leaks.
    assert!(!r.stdout.contains(secret) && !r.stderr.contains(secret));
    assert!(!v.to_string().contains(secret), "the summary leaks the key");
    assert!(
        v["target"]
            .as_str()
            .unwrap()
            .ends_with("/api/HttpTrigger1?code=***"),
        "{}",
        v["target"]
    );
}

/// A webhook that changed behaviour fails the run (exit 1) and the report says where.
#[test]
fn a_changed_webhook_fails_with_the_differences() {
    let hook = Webhook::start(&["--policy", "tutorial-2020"]);
    let url = format!("{}/api/HttpTrigger1", hook.base);
    let (r, v) = run_scenario(
        "contoso.toml",
        &["--url", &url, "--count", "300", "--rate", "2000"],
    );
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(v["verdict"], "fail");
    let toaster = class(&v, "toaster");
    assert_eq!(toaster["passed"], 0);
    let fields: Vec<&str> = toaster["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"status") && fields.contains(&"hub"),
        "{fields:?}"
    );
    assert!(
        r.stdout.contains("differ in hub") && r.stdout.contains("verdict: FAIL"),
        "{}",
        r.stdout
    );
    // Each field's mismatches are summarised as (expected, actual) pairs with counts that add up
    // to the field's count, and the examples are capped per field and in the text overall.
    let examples = v["classes"][0]["mismatches"].as_array().unwrap().len();
    for c in v["classes"].as_array().unwrap() {
        for m in c["mismatches"].as_array().unwrap() {
            let pairs: u64 = m["common"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["count"].as_u64().unwrap())
                .sum();
            assert_eq!(
                pairs + m["other"].as_u64().unwrap(),
                m["count"].as_u64().unwrap(),
                "{m}"
            );
            assert!(m["examples"].as_array().unwrap().len() <= 5, "{m}");
        }
    }
    let status = toaster["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["field"] == "status")
        .unwrap();
    assert_eq!(status["common"][0]["expected"], "\"assigned\"", "{status}");
    assert_eq!(
        status["common"][0]["count"], status["count"],
        "one wrong value, counted once"
    );
    assert!(examples > 0);
    let ids = r
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("e.g."))
        .map(|l| l.split(", ").count())
        .sum::<usize>();
    assert!((1..=10).contains(&ids), "{ids} examples\n{}", r.stdout);
    assert!(
        r.stdout.contains("more examples in summary.json"),
        "{}",
        r.stdout
    );
    // The verdict and its cause come before the first mismatch.
    let verdict = r.stdout.find("FAIL:").expect("a cause line");
    let first = r.stdout.find("differ in").unwrap();
    assert!(verdict < first, "{}", r.stdout);
    // Long values are clipped in the text (a twin can be kilobytes).
    assert!(
        r.stdout.lines().all(|l| l.chars().count() < 400),
        "{}",
        r.stdout
    );
}

/// `latency.hgrm` and `latency.hlog` read back with the hdrhistogram crate give the summary's
/// counts and percentiles.
#[test]
fn hdr_histogram_files_agree_with_the_summary() {
    use base64::Engine as _;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::Histogram;
    let tmp = tempdir();
    let out = tmp.path().join("report");
    let s = scenario("contoso.toml");
    let r = run(&[
        "run",
        s.to_str().unwrap(),
        "--no-progress",
        "--count",
        "3000",
        "--rate",
        "1500",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = summary(&out);
    let log = std::fs::read(out.join("latency.hlog")).unwrap();
    let mut total: Histogram<u64> = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    let mut classes = 0u64;
    let mut d = Deserializer::new();
    for e in IntervalLogIterator::new(&log) {
        if let Ok(LogEntry::Interval(i)) = e {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(i.encoded_histogram())
                .unwrap();
            let h: Histogram<u64> = d.deserialize(&mut bytes.as_slice()).unwrap();
            match i.tag().map(|t| t.as_str().to_owned()).as_deref() {
                Some("latency") => total.add(&h).unwrap(),
                Some(t) if t.starts_with("latency.") => classes += h.len(),
                _ => {}
            }
        }
    }
    assert_eq!(total.len(), 3000);
    assert_eq!(classes, 3000, "per-class intervals add up too");
    let p99 = total.highest_equivalent(total.value_at_quantile(0.99));
    assert_eq!(p99, v["latency_us"]["p99"].as_u64().unwrap());
    assert_eq!(total.max(), v["latency_us"]["max"].as_u64().unwrap());
    let hgrm = std::fs::read_to_string(out.join("latency.hgrm")).unwrap();
    assert!(hgrm.contains("Total count    =         3000"), "{hgrm}");
    let last = hgrm
        .lines()
        .rfind(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap();
    assert!(last.contains("1.000000000000"), "{last}");
}

/// An https webhook behind a private CA: `webhook serve --tls-dir` generates one; a scenario
/// that names it in `target.ca` passes, one that does not fails as a TLS error (exit 2), never as
/// a wrong answer.
#[test]
fn an_https_webhook_behind_a_private_ca_is_trusted_through_target_ca() {
    let dir = tempdir();
    let tls = dir.path().join("tls");
    let hook = Webhook::start(&["--tls-dir", tls.to_str().unwrap()]);
    assert!(hook.base.starts_with("https://127.0.0.1:"), "{}", hook.base);
    let url = format!("{}/api/HttpTrigger1", hook.base);
    let ca = tls.join("ca.pem");
    assert!(ca.exists());
    let text = std::fs::read_to_string(scenario("contoso.toml")).unwrap();
    let trusted = dir.path().join("trusted.toml");
    std::fs::write(
        &trusted,
        text.replacen(
            "[target]\n",
            &format!("[target]\nca = \"{}\"\n", ca.display()),
            1,
        ),
    )
    .unwrap();
    let run_it = |file: &std::path::Path, out: &str| {
        let out = dir.path().join(out);
        let r = run(&[
            "run",
            file.to_str().unwrap(),
            "--url",
            &url,
            "--count",
            "40",
            "--no-progress",
            "--out",
            out.to_str().unwrap(),
        ]);
        (r, summary(&out))
    };
    let (r, v) = run_it(&trusted, "trusted");
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(v["requests"]["completed"], 40);
    let (r, v) = run_it(&scenario("contoso.toml"), "untrusted");
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(v["requests"]["completed"], 0);
    let errors = v["errors"].to_string();
    assert!(errors.contains("\"source\":\"tls\""), "{errors}");
    // A CA file that is not PEM is refused up front.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        text.replacen("[target]\n", "[target]\nca = \"Cargo.toml\"\n", 1),
    )
    .unwrap();
    let r = run(&[
        "run",
        bad.to_str().unwrap(),
        "--url",
        &url,
        "--count",
        "1",
        "--no-progress",
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("target.ca"), "{}", r.stderr);
}
