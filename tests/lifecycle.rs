//! A load test's whole lifecycle against the emulator's service side: `dps serve
//! --no-enrollments` knows no device; `loadtest setup` creates the scenario's enrollment group
//! (custom allocation to a separately started reference webhook; `--dry-run` masks the keys and
//! sends nothing; a second setup changes nothing); the run registers every device; `loadtest
//! cleanup` deletes their registration records and device identities, survives being killed half
//! way and resumes, and leaves a device the scenario does not generate alone. Checked through the
//! emulator's own service and registry APIs (plain HTTP listener, service SAS).

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{bin, run, summary, tempdir, DpsProcess, Webhook};

const KEY: &str =
    "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA==";
const TOASTERS: &str = "contoso-toasters-hub-1098.azure-devices.net";
const HEATPUMPS: &str = "contoso-heatpumps-hub-1098.azure-devices.net";

fn scenario(name: &str, mqtt: &str, ca: &Path, classes: &str) -> String {
    format!(
        r#"name = "{name}"
[target]
mode = "mqtt"
endpoint = "{mqtt}"
tls = "{ca}"
verify_twins = false
[enrollment]
group_id = "contoso-custom-allocated-devices"
primary_key = "{KEY}"
api_version = "2021-10-01"
iot_hubs = ["{TOASTERS}", "{HEATPUMPS}"]
{classes}
[load]
rate = 100
"#,
        ca = ca.display()
    )
}

const CLASSES: &str = r#"[[devices]]
class = "toaster"
id = "breakroom{n}-contoso-tstrsd-007"
count = 30
expect = { status = "assigned", hub = "contoso-toasters-hub-1098.azure-devices.net" }
[[devices]]
class = "heatpump"
id = "mainbuilding{n}-contoso-hpsd-088"
count = 30
expect = { status = "assigned", hub = "contoso-heatpumps-hub-1098.azure-devices.net" }
"#;

/// Azure's Node service SDKs (tests/sdk/service.js), if installed (`npm ci` in tests/sdk, which
/// `.ci/run` does; under CI they must be there): `what` is `exercise` or `count`.
fn node_sdk(
    what: &str,
    service: &str,
    hubs: &[(String, String)],
    https: &str,
    ca: &Path,
) -> Option<Value> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk");
    if !sdk.join("node_modules/azure-iothub").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs the Node service SDKs: npm ci in tests/sdk"
        );
        eprintln!("skipping the Node service SDK checks: run npm ci in tests/sdk");
        return None;
    }
    let mut cmd = std::process::Command::new("node");
    cmd.arg(sdk.join("service.js"))
        .args([what, "contoso-custom-allocated-devices"])
        .env("DPS_CS", service)
        .env("EMULATOR", https)
        .env("CA", ca);
    for (i, (_, cs)) in hubs.iter().enumerate() {
        cmd.env(format!("HUB_CS_{i}"), cs);
    }
    let out = cmd.output().expect("node runs");
    assert!(
        out.status.success(),
        "service.js {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// A service-API call over the emulator's plain HTTP listener, signed for `host` from `cs`.
fn call(http: &str, cs: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (host, policy, key) = loadtest::sas::parse_connection_string(cs).unwrap();
    let sas =
        loadtest::sas::service_token(&host, &policy, &key, loadtest::emulator::unix_now() + 600)
            .unwrap();
    let mut s = std::net::TcpStream::connect(http).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {sas}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn setup_run_cleanup_leaves_nothing_of_the_scenario_behind() {
    let dir = tempdir();
    let hook = Webhook::start(&[]);
    let mut dps = DpsProcess::start(
        &[
            "--no-enrollments",
            "--mqtt",
            "127.0.0.1:0",
            "--https",
            "127.0.0.1:0",
            "--http-plain",
            "127.0.0.1:0",
        ],
        false,
    );
    let (mqtt, http, https) = (
        dps.mqtt_tls.clone().unwrap(),
        dps.http_plain.clone().unwrap(),
        dps.https.clone().unwrap(),
    );
    let service = dps
        .service
        .clone()
        .expect("dps serve prints the service connection string");
    let hubs = dps.hubs.clone();
    let ca = dps.ca();
    let file = dir.path().join("cycle.toml");
    std::fs::write(&file, scenario("cycle", &mqtt, &ca, CLASSES)).unwrap();
    let f = file.to_str().unwrap();
    let url = format!("{}/api/HttpTrigger1?code=sekrit-function-key", hook.base);
    let service_args = |extra: &[&str]| {
        let mut v: Vec<String> = vec![
            "--endpoint".into(),
            https.clone(),
            "--ca".into(),
            ca.to_str().unwrap().into(),
        ];
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v
    };
    let lc = |args: Vec<String>| {
        let out = bin()
            .args(&args)
            .env("DPS_SERVICE_CONNECTION_STRING", &service)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let with = |head: &[&str], extra: &[&str]| {
        let mut v: Vec<String> = head.iter().map(|s| (*s).to_owned()).collect();
        v.extend(service_args(extra));
        v
    };

    // Before setup the emulator knows no device.
    let r = run(&[
        "run",
        f,
        "--no-progress",
        "--out",
        dir.path().join("r0").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let group = "/enrollmentGroups/contoso-custom-allocated-devices?api-version=2021-10-01";
    assert_eq!(call(&http, &service, "GET", group, "").0, 404);

    // A dry run shows the document with its secrets masked and sends nothing.
    let (code, out, err) = lc(with(&["setup", f, "--url", &url, "--dry-run"], &[]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"allocationPolicy\": \"custom\"")
            && out.contains("\"primaryKey\": \"****\""),
        "{out}"
    );
    assert!(
        !out.contains(KEY) && !out.contains("sekrit") && !err.contains("sekrit"),
        "{out}{err}"
    );
    assert_eq!(
        call(&http, &service, "GET", group, "").0,
        404,
        "a dry run sends nothing"
    );

    // Setup creates it, a second setup changes nothing.
    let (code, out, err) = lc(with(&["setup", f, "--url", &url], &[]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("contoso-custom-allocated-devices: created"),
        "{out}"
    );
    let (code, out, _) = lc(with(&["setup", f, "--url", &url], &[]));
    assert_eq!(code, 0);
    assert!(
        out.contains("contoso-custom-allocated-devices: unchanged"),
        "{out}"
    );
    let (status, g) = call(&http, &service, "GET", group, "");
    assert_eq!(status, 200, "{g}");
    assert_eq!(g["customAllocationDefinition"]["webhookUrl"], url);
    assert!(g["etag"].as_str().is_some_and(|e| !e.is_empty()), "{g}");

    // The run: every device lands on its hub through the webhook setup named.
    let r = run(&[
        "run",
        f,
        "--no-progress",
        "--out",
        dir.path().join("r1").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        summary(&dir.path().join("r1"))["expectations"]["passed"],
        60
    );
    // A device the scenario does not generate, registered through the same group.
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        scenario(
            "other",
            &mqtt,
            &ca,
            "[[devices]]\nclass = \"toaster\"\nid = \"lobby{n}-contoso-tstrsd-007\"\ncount = 1\nexpect = { status = \"assigned\" }\n",
        ),
    )
    .unwrap();
    let r = run(&[
        "run",
        other.to_str().unwrap(),
        "--no-progress",
        "--out",
        dir.path().join("r2").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    // Azure's own service SDKs on every route: the group under its ETag (a stale one refused), an
    // individual enrollment's life, registration records, a hub's registry with a bulk delete.
    if let Some(x) = node_sdk("exercise", &service, &hubs, &https, &ca) {
        assert_eq!(x["group_webhook"], url, "{x}");
        assert_eq!(x["group_updated"], true, "{x}");
        assert_eq!(x["stale_update"], 412, "{x}");
        assert_eq!(x["individual_keys_generated"], true, "{x}");
        assert_eq!(
            (
                &x["individual_get"],
                &x["individual_delete"],
                &x["individual_after"]
            ),
            (&Value::from(200), &Value::from(200), &Value::from(404)),
            "{x}"
        );
        assert_eq!(x["registrations"], 61, "{x}");
        assert_eq!(
            (&x["registration_get"], &x["missing_registration"]),
            (&Value::from(200), &Value::from(404)),
            "{x}"
        );
        assert_eq!(
            (&x["device_create"], &x["device_get"], &x["device_after"]),
            (&Value::from(200), &Value::from(200), &Value::from(404)),
            "{x}"
        );
        assert_eq!(x["bulk_delete_ok"], true, "{x}");
        assert_eq!(x["hub_devices"][TOASTERS], 31, "{x}");
        assert_eq!(x["hub_devices"][HEATPUMPS], 30, "{x}");
    }

    let hub_args: Vec<String> = hubs
        .iter()
        .flat_map(|(_, cs)| ["--hub".to_owned(), cs.clone()])
        .collect();
    let hub_refs: Vec<&str> = hub_args.iter().map(String::as_str).collect();
    let progress = dir.path().join("cleanup");
    let p = progress.to_str().unwrap();
    let (code, out, err) = lc(with(&["cleanup", f, "--out", p, "--dry-run"], &hub_refs));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("would delete 60 registration records and 60 device identities"),
        "{out}"
    );

    // Killed half way: at 30 registry operations a minute the first bulk call (30 devices) goes
    // at once and the next waits a minute; the progress file says how far it got.
    let args = with(
        &["cleanup", f, "--out", p, "--registry-rate", "30"],
        &hub_refs,
    );
    let mut child = bin()
        .args(&args)
        .env("DPS_SERVICE_CONNECTION_STRING", &service)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let file_of = progress.join("cleanup.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let half = std::fs::read(&file_of)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|v| v["identities_deleted"] == 30);
        if half {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first bulk call went through"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let (status, left) = call(
        &http,
        &hubs[0].1,
        "GET",
        "/devices?api-version=2021-04-12",
        "",
    );
    let (status2, left2) = call(
        &http,
        &hubs[1].1,
        "GET",
        "/devices?api-version=2021-04-12",
        "",
    );
    assert_eq!((status, status2), (200, 200));
    let remaining = left.as_array().unwrap().len() + left2.as_array().unwrap().len();
    assert_eq!(
        remaining,
        61 - 30,
        "half deleted, the other device still there: {left} {left2}"
    );

    // Resumed: the rest, and the counts cover both runs.
    let (code, out, err) = lc(with(
        &[
            "cleanup",
            f,
            "--out",
            p,
            "--registry-rate",
            "6000",
            "--dps-rate",
            "6000",
        ],
        &hub_refs,
    ));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("deleted 60 registration records (0 already gone) and 60 device identities"),
        "{out}"
    );
    // Nothing of the scenario is left; the other device is.
    for (host, cs) in &hubs {
        let (_, devices) = call(&http, cs, "GET", "/devices?api-version=2021-04-12", "");
        let ids: Vec<&str> = devices
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["deviceId"].as_str())
            .collect();
        if host == TOASTERS {
            assert_eq!(ids, vec!["lobby1-contoso-tstrsd-007"], "{host}");
        } else {
            assert!(ids.is_empty(), "{host}: {ids:?}");
        }
    }
    let (_, regs) = call(
        &http,
        &service,
        "POST",
        "/registrations/contoso-custom-allocated-devices/query?api-version=2021-10-01",
        "{\"query\":\"*\"}",
    );
    let ids: Vec<&str> = regs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["registrationId"].as_str())
        .collect();
    assert_eq!(ids, vec!["lobby1-contoso-tstrsd-007"], "{regs}");
    let (code, out, _) = lc(with(&["cleanup", f, "--out", p, "--dry-run"], &hub_refs));
    assert_eq!(code, 0);
    assert!(out.contains("would delete 0 registration records"), "{out}");
    // The other scenario's cleanup takes its device; then the SDKs list nothing at all.
    let o = other.to_str().unwrap();
    let op = dir.path().join("cleanup-other");
    let (code, out, err) = lc(with(
        &["cleanup", o, "--out", op.to_str().unwrap()],
        &hub_refs,
    ));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted 1 registration records"), "{out}");
    if let Some(c) = node_sdk("count", &service, &hubs, &https, &ca) {
        assert_eq!(c["registrations"], 0, "{c}");
        assert_eq!(c["devices"][TOASTERS], 0, "{c}");
        assert_eq!(c["devices"][HEATPUMPS], 0, "{c}");
    }
    dps.kill();
}

/// The service side refuses bad input the way the services do: a wrong key (401 + 401002), a body
/// that is not JSON or an ID that does not match the URL (400), custom allocation without a
/// webhook (400004's message), a second enrollment group (409), a stale ETag (412), more than 100
/// devices in one bulk call (400 TooManyDevices), an unknown hub (404); and `setup` without a
/// connection string or webhook URL says what is missing.
#[test]
fn the_service_side_refuses_bad_requests() {
    let mut dps = DpsProcess::start(
        &[
            "--no-enrollments",
            "--mqtt",
            "127.0.0.1:0",
            "--http-plain",
            "127.0.0.1:0",
            "--no-https",
        ],
        false,
    );
    let http = dps.http_plain.clone().unwrap();
    let service = dps.service.clone().unwrap();
    let (_, hub) = dps.hubs[0].clone();
    let wrong = service.replace(
        &service[service.find("SharedAccessKey=").unwrap() + 16..],
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    );
    let group = |id: &str| format!("/enrollmentGroups/{id}?api-version=2021-10-01");
    let doc = |id: &str| {
        format!(
            r#"{{"enrollmentGroupId":"{id}","attestation":{{"type":"symmetricKey"}},"allocationPolicy":"custom",
            "customAllocationDefinition":{{"webhookUrl":"http://127.0.0.1:9/api/x","apiVersion":"2021-10-01"}}}}"#
        )
    };
    let (s, body) = call(&http, &wrong, "GET", &group("g"), "");
    assert_eq!(
        (s, body["errorCode"].as_u64()),
        (401, Some(401_002)),
        "{body}"
    );
    let (s, body) = call(&http, &service, "PUT", &group("g"), "{not json");
    assert_eq!(s, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("not valid JSON"),
        "{body}"
    );
    let (s, _) = call(&http, &service, "PUT", &group("other"), &doc("g"));
    assert_eq!(s, 400, "the ID must match the URL");
    let (s, body) = call(
        &http,
        &service,
        "PUT",
        &group("g"),
        r#"{"enrollmentGroupId":"g","attestation":{"type":"symmetricKey"},"allocationPolicy":"custom"}"#,
    );
    assert_eq!(s, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("CustomAllocationDefinition is required"),
        "{body}"
    );
    let (s, created) = call(&http, &service, "PUT", &group("g"), &doc("g"));
    assert_eq!(s, 200, "{created}");
    assert!(created["attestation"]["symmetricKey"]["primaryKey"]
        .as_str()
        .is_some_and(|k| k.len() > 20));
    let (s, body) = call(&http, &service, "PUT", &group("h"), &doc("h"));
    assert_eq!(
        (s, body["errorCode"].as_u64()),
        (409, Some(409_001)),
        "{body}"
    );
    // A stale ETag: the group as created, after an update changed its ETag.
    let (s, _) = call(&http, &service, "PUT", &group("g"), &doc("g"));
    assert_eq!(s, 200);
    let stale = created.to_string();
    let mut s2 = std::net::TcpStream::connect(&http).unwrap();
    let (host, policy, key) = loadtest::sas::parse_connection_string(&service).unwrap();
    let sas =
        loadtest::sas::service_token(&host, &policy, &key, loadtest::emulator::unix_now() + 600)
            .unwrap();
    write!(
        s2,
        "PUT {} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {sas}\r\nIf-Match: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{stale}",
        group("g"),
        created["etag"].as_str().unwrap(),
        stale.len()
    )
    .unwrap();
    let mut text = String::new();
    s2.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 412"), "{text}");
    // The registry: 101 devices in one bulk call, an unknown hub.
    let batch: Vec<Value> = (0..101)
        .map(|i| serde_json::json!({"id": format!("d{i}"), "importMode": "delete"}))
        .collect();
    let (s, body) = call(
        &http,
        &hub,
        "POST",
        "/devices?api-version=2021-04-12",
        &Value::from(batch).to_string(),
    );
    assert_eq!(s, 400, "{body}");
    assert!(
        body["Message"]
            .as_str()
            .unwrap()
            .starts_with("ErrorCode:TooManyDevices;"),
        "{body}"
    );
    let (s, body) = call(
        &http,
        &hub,
        "DELETE",
        "/devices/nobody?api-version=2021-04-12",
        "",
    );
    assert_eq!(s, 404);
    assert!(
        body["Message"]
            .as_str()
            .unwrap()
            .starts_with("ErrorCode:DeviceNotFound;"),
        "{body}"
    );
    let unknown = hub.replace("contoso-", "unknown-");
    let (s, _) = call(
        &http,
        &unknown,
        "GET",
        "/devices?api-version=2021-04-12",
        "",
    );
    assert_eq!(s, 404);
    dps.kill();
    // setup says what it lacks.
    let dir = tempdir();
    let file = dir.path().join("s.toml");
    std::fs::write(
        &file,
        scenario("s", "127.0.0.1:1", Path::new("/nonexistent.pem"), CLASSES)
            .replace("tls = \"/nonexistent.pem\"", "tls = \"system\""),
    )
    .unwrap();
    let out = bin()
        .args(["setup", file.to_str().unwrap()])
        .env_remove("DPS_SERVICE_CONNECTION_STRING")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("setup needs the webhook URL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bin()
        .args([
            "setup",
            file.to_str().unwrap(),
            "--url",
            "https://f.example/api/x",
        ])
        .env_remove("DPS_SERVICE_CONNECTION_STRING")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DPS_SERVICE_CONNECTION_STRING"));
}
