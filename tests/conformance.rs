use std::path::{Path, PathBuf};

use crate::util::{run, scenario, summary, tempdir, Webhook};

fn repo_snapshot(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("snapshots")
        .join(name)
}

/// `loadtest check` with a report directory and JUnit file inside `dir`.
fn check(dir: &Path, file: &str, extra: &[&str]) -> (crate::util::Run, PathBuf) {
    let out = dir.join("report");
    let junit = dir.join("junit.xml");
    let s = scenario(file);
    let mut args = vec![
        "check",
        s.to_str().unwrap(),
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    (run(&args), out)
}

#[test]
fn shipped_snapshots_pass_and_nothing_is_written_beside_them() {
    for file in [
        "contoso.toml",
        "contoso-tutorial-2020.toml",
        "contoso-howto-2018.toml",
        "contoso-faults.toml",
        "contoso-mqtt.toml",
        "contoso-https.toml",
    ] {
        let dir = tempdir();
        let (r, out) = check(dir.path(), file, &[]);
        assert_eq!(r.code, 0, "{file}\n{}\n{}", r.stdout, r.stderr);
        let v = summary(&out);
        assert_eq!(v["snapshot"]["status"], "match", "{file}");
        assert_eq!(v["verdict"], "pass");
        let name = file.trim_end_matches(".toml");
        assert!(!repo_snapshot(&format!("{name}.snap.new")).exists());
        // The committed snapshot's body is exactly this run's transcript.
        let snap = std::fs::read_to_string(repo_snapshot(&format!("{name}.snap"))).unwrap();
        let transcript = std::fs::read_to_string(out.join("transcript.txt")).unwrap();
        assert_eq!(body(&snap), transcript.trim_end(), "{file}");
        crate::junit::assert_valid(&dir.path().join("junit.xml"), 0);
        assert!(std::fs::read_to_string(out.join("summary.md"))
            .unwrap()
            .contains(": ✅ pass"));
    }
}

fn body(snap: &str) -> &str {
    snap.splitn(3, "---\n").nth(2).unwrap().trim_end()
}

#[test]
fn snapshot_files_round_trip_through_insta() {
    let snap = insta::Snapshot::from_file(&repo_snapshot("contoso.snap")).unwrap();
    assert_eq!(snap.metadata().source(), Some("loadtest check"));
    assert_eq!(snap.metadata().expression(), Some("contoso.toml"));
    let text = snap.contents().as_text().unwrap().to_string();
    let file = std::fs::read_to_string(repo_snapshot("contoso.snap")).unwrap();
    assert_eq!(text, body(&file));
    assert!(text.contains("=== class toaster ==="));
}

#[test]
fn transcripts_do_not_depend_on_the_load_order() {
    let (a, b) = (tempdir(), tempdir());
    let (ra, out_a) = check(a.path(), "contoso.toml", &["--seed", "1"]);
    let (rb, out_b) = check(b.path(), "contoso.toml", &["--seed", "2"]);
    assert_eq!((ra.code, rb.code), (0, 0), "{}{}", ra.stderr, rb.stderr);
    let ta = std::fs::read(out_a.join("transcript.txt")).unwrap();
    let tb = std::fs::read(out_b.join("transcript.txt")).unwrap();
    assert_eq!(ta, tb);
    assert_eq!(summary(&out_a)["seed"], 1);
    assert_eq!(summary(&out_b)["seed"], 2);
}

#[test]
fn another_webhook_policy_fails_with_a_diff_naming_class_hub_and_twin() {
    let dir = tempdir();
    let snap = dir.path().join("contoso.snap");
    std::fs::copy(repo_snapshot("contoso.snap"), &snap).unwrap();
    let webhook = Webhook::start(&["--policy", "tutorial-2020"]);
    let url = format!("{}/api/HttpTrigger1", webhook.base);
    let snap_arg = snap.to_str().unwrap();
    let (r, out) = check(
        dir.path(),
        "contoso.toml",
        &["--url", &url, "--snapshot", snap_arg],
    );
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let e = &r.stderr;
    // The drift summary names each changed class and section…
    assert!(
        e.contains("class toaster: expectation, outcomes, initial twins"),
        "{e}"
    );
    assert!(e.contains("class heatpump:"), "{e}");
    assert!(!e.contains("class unrecognised:"), "{e}");
    // …and the diff labels its hunks with the class and shows the hub and twin that changed.
    assert!(e.contains("@@ -") && e.contains("@@ class toaster"), "{e}");
    assert!(
        e.contains("-     25  assigned  hub=contoso-toasters-hub-1098.azure-devices.net"),
        "{e}"
    );
    assert!(
        e.contains(r#"-     25  {"properties":{"desired":{"darknessSetting":"medium","state":"ready"}},"tags":{"deviceType":"toaster"}}"#),
        "{e}"
    );
    assert!(
        e.contains(
            r#"+     25  failed:400207  message="Custom allocation failed with status code: 400""#
        ),
        "{e}"
    );
    assert!(
        !e.contains("\x1b["),
        "no colour when stderr is not a terminal"
    );
    // --color always colours the diff; NO_COLOR does not override an explicit choice, and with
    // --color never there is none.
    for (choice, coloured) in [("always", true), ("never", false)] {
        let d = tempdir();
        let s2 = d.path().join("contoso.snap");
        std::fs::copy(repo_snapshot("contoso.snap"), &s2).unwrap();
        let (r, _) = check(
            d.path(),
            "contoso.toml",
            &[
                "--url",
                &url,
                "--snapshot",
                s2.to_str().unwrap(),
                "--color",
                choice,
            ],
        );
        assert_eq!(r.code, 1);
        assert_eq!(r.stderr.contains("\x1b["), coloured, "--color {choice}");
    }
    // The new transcript waits beside the snapshot; the snapshot is untouched.
    let pending = dir.path().join("contoso.snap.new");
    let transcript = std::fs::read_to_string(out.join("transcript.txt")).unwrap();
    assert_eq!(
        body(&std::fs::read_to_string(&pending).unwrap()),
        transcript.trim_end()
    );
    assert_eq!(
        std::fs::read(&snap).unwrap(),
        std::fs::read(repo_snapshot("contoso.snap")).unwrap()
    );
    let v = summary(&out);
    assert_eq!(v["snapshot"]["status"], "drift");
    assert!(v["snapshot"]["diff"]
        .as_str()
        .unwrap()
        .contains("@@ class heatpump"));
    let junit = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    // 3 classes, 3 thresholds and the snapshot.
    crate::junit::assert_valid(&dir.path().join("junit.xml"), 7);
    assert!(junit.contains("@@ class toaster"), "{junit}");

    // Accepting the drift makes the next check pass.
    let (r, _) = check(
        dir.path(),
        "contoso.toml",
        &["--url", &url, "--snapshot", snap_arg, "--update-snapshots"],
    );
    assert_eq!(r.code, 1, "expectations still fail: {}", r.stdout);
    assert!(!pending.exists());
    assert_eq!(
        body(&std::fs::read_to_string(&snap).unwrap()),
        transcript.trim_end()
    );
}

#[test]
fn an_edited_expectation_fails_and_says_which_field() {
    let dir = tempdir();
    let text = std::fs::read_to_string(scenario("contoso.toml"))
        .unwrap()
        .replace(
            "hub = \"contoso-heatpumps-hub-1098.azure-devices.net\"\ntwin",
            "hub = \"contoso-toasters-hub-1098.azure-devices.net\"\ntwin",
        );
    let file = dir.path().join("contoso.toml");
    std::fs::write(&file, text).unwrap();
    let snap = dir.path().join("contoso.snap");
    std::fs::copy(repo_snapshot("contoso.snap"), &snap).unwrap();
    let out = dir.path().join("report");
    let r = run(&[
        "check",
        file.to_str().unwrap(),
        "--no-progress",
        "--snapshot",
        snap.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    // `check` never stops early (the transcript must cover the sample): the expectation
    // failures and the snapshot diff both show.
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("heatpump: 25 of 25 differ in hub"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains(
            r#"+     25  hub: expected "contoso-toasters-hub-1098.azure-devices.net", got "contoso-heatpumps-hub-1098.azure-devices.net""#
        ),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("class heatpump: expectation"),
        "{}",
        r.stderr
    );
    let v = summary(&out);
    assert_eq!(v["aborted_by"], serde_json::Value::Null);
    assert_eq!(v["snapshot"]["status"], "drift");
    let unexpected = v["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "unexpected < 1")
        .unwrap();
    assert_eq!(unexpected["passed"], false);
    assert_eq!(unexpected["measured"], "25");
}

#[test]
fn a_missing_snapshot_is_written_as_pending_and_fails_until_accepted() {
    let dir = tempdir();
    let snap = dir.path().join("snaps").join("new.snap");
    let arg = snap.to_str().unwrap();
    let (r, out) = check(dir.path(), "contoso-howto-2018.toml", &["--snapshot", arg]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("no snapshot at"), "{}", r.stderr);
    assert!(!snap.exists());
    let pending = insta::Snapshot::from_file(&dir.path().join("snaps/new.snap.new")).unwrap();
    let transcript = std::fs::read_to_string(out.join("transcript.txt")).unwrap();
    assert_eq!(
        pending.contents().as_text().unwrap().to_string(),
        transcript.trim_end()
    );
    assert_eq!(summary(&out)["snapshot"]["status"], "missing");
    crate::junit::assert_valid(&dir.path().join("junit.xml"), 1);

    let (r, _) = check(
        dir.path(),
        "contoso-howto-2018.toml",
        &["--snapshot", arg, "--update-snapshots"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("created"), "{}", r.stdout);
    let (r, _) = check(dir.path(), "contoso-howto-2018.toml", &["--snapshot", arg]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}
