//! Azure's real Python device SDK (`azure-iot-device` 2.14.0, unpatched) registers against
//! `loadtest dps serve` over MQTT/TLS on 127.0.0.1:8883 (the SDK's fixed port), trusting only the
//! printed CA. The twins are then read back through the hubs' twin API.
//!
//! The interpreter: `$LOADTEST_PYTHON`, else `.venv/bin/python` (what `.ci/run` creates), else a
//! venv this test creates under `target/` from tests/requirements.txt (PyPI).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::util::dps::{GROUP_KEY, HEATPUMPS, SCOPE, TOASTERS};
use crate::util::{bin, tempdir};

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("LOADTEST_PYTHON") {
        return p.into();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join(".venv/bin/python");
    if venv.exists() && has_sdk(&venv) {
        return venv;
    }
    let own = root.join("target/sdk-venv");
    let py = own.join("bin/python");
    if !(py.exists() && has_sdk(&py)) {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&own)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(&py)
                .args(["-m", "pip", "install", "--quiet", "-r"])
                .arg(root.join("tests/requirements.txt"))
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            ok,
            "could not create a venv with tests/requirements.txt (needs python3 and PyPI)"
        );
    }
    py
}

fn has_sdk(py: &Path) -> bool {
    Command::new(py)
        .args(["-c", "import azure.iot.device"])
        .status()
        .is_ok_and(|s| s.success())
}

struct Dps {
    child: std::process::Child,
    ca: PathBuf,
    https: String,
    hubs: Vec<(String, String)>,
}

impl Drop for Dps {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(scenario: &Path, tls_dir: &Path) -> Dps {
    serve_on(scenario, tls_dir, "127.0.0.1:8883")
}

fn serve_on(scenario: &Path, tls_dir: &Path, mqtt: &str) -> Dps {
    let mut child = bin()
        .args(["dps", "serve"])
        .arg(scenario)
        .args(["--mqtt", mqtt, "--https", "127.0.0.1:0", "--tls-dir"])
        .arg(tls_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut ca, mut https, mut hubs) = (None, None, Vec::new());
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(p) = line.trim().strip_prefix("CA (trust it): ") {
            ca = Some(PathBuf::from(p));
        } else if let Some(u) = line.trim().strip_prefix("HTTPS:") {
            https = Some(u.trim().to_owned());
        } else if let Some(rest) = line.trim().strip_prefix("hub ") {
            let (host, cs) = rest.split_once(": ").unwrap();
            hubs.push((host.to_owned(), cs.to_owned()));
        } else if line.starts_with("Ctrl-C stops it.") {
            break;
        }
    }
    // Keep draining stdout so the emulator never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Dps {
        child,
        ca: ca.expect("the CA path is printed"),
        https: https.expect("the HTTPS endpoint is printed"),
        hubs,
    }
}

fn register(py: &Path, dps: &Dps, cases: &str) -> Vec<Value> {
    register_with(py, dps, cases, &[])
}

fn register_with(py: &Path, dps: &Dps, cases: &str, env: &[(&str, &str)]) -> Vec<Value> {
    let mut child = Command::new(py)
        .envs(env.iter().copied())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/register.py"))
        .arg(&dps.ca)
        .args([SCOPE, GROUP_KEY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cases.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "register.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Reads a twin over HTTPS with the CA, selecting the hub by Host header.
fn twin(dps: &Dps, host: &str, device: &str) -> Value {
    let (_, cs) = dps.hubs.iter().find(|(h, _)| h == host).unwrap();
    let key = cs.split("SharedAccessKey=").nth(1).unwrap();
    let sas = loadtest::sas::service_token(
        host,
        "iothubowner",
        key,
        loadtest::emulator::unix_now() + 600,
    )
    .unwrap();
    let (status, v) = https(
        dps,
        "GET",
        &format!("/twins/{device}?api-version=2021-04-12"),
        host,
        &sas,
    );
    assert_eq!(status, 200, "{v}");
    v
}

/// One HTTPS request to the emulator, trusting only its CA.
fn https(dps: &Dps, method: &str, path: &str, host: &str, auth: &str) -> (u16, Value) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use http_body_util::{BodyExt, Full};
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_file_iter(&dps.ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, Full<bytes::Bytes>>(https);
        let port = dps.https.rsplit(':').next().unwrap();
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("https://localhost:{port}{path}"))
            .header("Host", host)
            .header("Authorization", auth)
            .body(Full::new(bytes::Bytes::new()))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    })
}

/// MQTT over WebSockets: the Python SDK with `websockets=True` upgrades on the emulator's HTTPS
/// listener (`wss://localhost/$iothub/websocket`, subprotocol `mqtt`; the SDK's fixed port 443 is
/// redirected to the listener's port at paho's socket, see tests/sdk/register.py) and runs the
/// same MQTT session: a toaster and a heat pump land on their hubs, an unknown device fails
/// (the SDK raises on `failed`), a wrong key is refused.
#[test]
fn the_python_sdk_provisions_over_websockets() {
    let py = python();
    let dir = tempdir();
    let dps = serve_on(
        &crate::util::scenario("contoso.toml"),
        &dir.path().join("tls"),
        "127.0.0.1:0",
    );
    let port = dps.https.rsplit(':').next().unwrap().to_owned();
    let results = register_with(
        &py,
        &dps,
        "breakroom12-contoso-tstrsd-007\n\
         mainbuilding3-contoso-hpsd-088\n\
         lobby3-contoso-kettle-001\n\
         breakroom7-contoso-tstrsd-007 NXZgydIn9ntUpXfBsWFfaxJqAYVfgGQsshvA5GboGJI=\n",
        &[("LOADTEST_SDK_WEBSOCKETS_PORT", &port)],
    );
    let by_id = |id: &str| results.iter().find(|r| r["id"] == id).unwrap().clone();
    let toaster = by_id("breakroom12-contoso-tstrsd-007");
    assert_eq!(
        (&toaster["status"], &toaster["hub"]),
        (&Value::from("assigned"), &Value::from(TOASTERS)),
        "{toaster}"
    );
    let heatpump = by_id("mainbuilding3-contoso-hpsd-088");
    assert_eq!(
        (&heatpump["status"], &heatpump["hub"]),
        (&Value::from("assigned"), &Value::from(HEATPUMPS)),
        "{heatpump}"
    );
    let t = twin(&dps, TOASTERS, "breakroom12-contoso-tstrsd-007");
    assert_eq!(t["tags"], serde_json::json!({"deviceType": "toaster"}));
    let kettle = by_id("lobby3-contoso-kettle-001");
    assert!(
        kettle["error"]
            .as_str()
            .unwrap()
            .contains("failed registration status"),
        "{kettle}"
    );
    let wrong = by_id("breakroom7-contoso-tstrsd-007");
    assert_eq!(wrong["status"], "error", "{wrong}");
}

#[test]
fn the_python_sdk_provisions_against_the_emulator() {
    let py = python();
    let dir = tempdir();
    // contoso.toml, plus: the reference webhook returns the device's payload, and an individual
    // enrollment that is disabled.
    let text = std::fs::read_to_string(crate::util::scenario("contoso.toml"))
        .unwrap()
        .replace("policy = \"tutorial-current\"", "policy = \"tutorial-current\"\necho_payload = true")
        + "\n[[individual_enrollments]]\nregistration_id = \"switched-off-contoso-tstrsd-007\"\n\
           primary_key = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\nprovisioning_status = \"disabled\"\n";
    let file = dir.path().join("contoso-sdk.toml");
    std::fs::write(&file, text).unwrap();
    let dps = serve(&file, &dir.path().join("tls"));
    let results = register(
        &py,
        &dps,
        "breakroom499-contoso-tstrsd-007 - {\"MyDeviceFirmwareVersion\":\"12.0.2.5\",\"MyDeviceProvisioningVersion\":\"1.0.0.0\"}\n\
         mainbuilding167-contoso-hpsd-088 - {\"MyDeviceFirmwareVersion\":\"12.0.2.5\"}\n\
         lobby3-contoso-kettle-001\n\
         breakroom7-contoso-tstrsd-007 NXZgydIn9ntUpXfBsWFfaxJqAYVfgGQsshvA5GboGJI=\n\
         switched-off-contoso-tstrsd-007 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
    );
    let by_id = |id: &str| results.iter().find(|r| r["id"] == id).unwrap().clone();

    let toaster = by_id("breakroom499-contoso-tstrsd-007");
    assert_eq!(toaster["status"], "assigned", "{toaster}");
    assert_eq!(toaster["hub"], TOASTERS);
    assert_eq!(toaster["device_id"], "breakroom499-contoso-tstrsd-007");
    assert_eq!(toaster["substatus"], "initialAssignment");
    let echoed: Value = serde_json::from_str(toaster["payload"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["MyDeviceFirmwareVersion"], "12.0.2.5");
    let heatpump = by_id("mainbuilding167-contoso-hpsd-088");
    assert_eq!(
        (&heatpump["status"], &heatpump["hub"]),
        (&Value::from("assigned"), &Value::from(HEATPUMPS)),
        "{heatpump}"
    );

    // The seed's initial twins, read back from each hub.
    let t = twin(&dps, TOASTERS, "breakroom499-contoso-tstrsd-007");
    assert_eq!(t["tags"], serde_json::json!({"deviceType": "toaster"}));
    assert_eq!(t["properties"]["desired"]["state"], "ready");
    assert_eq!(t["properties"]["desired"]["darknessSetting"], "medium");
    let h = twin(&dps, HEATPUMPS, "mainbuilding167-contoso-hpsd-088");
    assert_eq!(h["tags"], serde_json::json!({"deviceType": "heatpump"}));
    assert_eq!(h["properties"]["desired"]["temperatureSetting"], "65");

    // Unrecognised: the SDK raises ServiceError on the failed status (it does not expose the
    // state); the device's status lookup shows 400207 and the webhook's status code.
    let kettle = by_id("lobby3-contoso-kettle-001");
    assert!(
        kettle["error"]
            .as_str()
            .unwrap()
            .contains("ServiceError: Query Status operation returned a failed registration status"),
        "{kettle}"
    );
    let id = "lobby3-contoso-kettle-001";
    let key = loadtest::device::keys::GroupKey::new(GROUP_KEY)
        .unwrap()
        .derive(id);
    let auth = loadtest::sas::device_token(
        SCOPE,
        id,
        &key,
        loadtest::emulator::unix_now() + 600,
        loadtest::sas::SrEncoding::Upper,
        None,
    )
    .unwrap();
    let (status, state) = https(
        &dps,
        "POST",
        &format!("/{SCOPE}/registrations/{id}"),
        "localhost",
        &auth,
    );
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["errorCode"], 400207);
    assert_eq!(
        state["errorMessage"],
        "Custom allocation failed with status code: 400"
    );
    // A wrong key is refused at CONNECT (CONNACK 5).
    let wrong = by_id("breakroom7-contoso-tstrsd-007");
    assert!(
        wrong["error"]
            .as_str()
            .unwrap()
            .contains("UnauthorizedError"),
        "{wrong}"
    );
    // A disabled individual enrollment is reported disabled.
    let off = by_id("switched-off-contoso-tstrsd-007");
    assert!(
        off["error"].as_str().unwrap().contains("ServiceError"),
        "{off}"
    );
    let id = "switched-off-contoso-tstrsd-007";
    let auth = loadtest::sas::device_token(
        SCOPE,
        id,
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        loadtest::emulator::unix_now() + 600,
        loadtest::sas::SrEncoding::Upper,
        None,
    )
    .unwrap();
    let (status, state) = https(
        &dps,
        "POST",
        &format!("/{SCOPE}/registrations/{id}"),
        "localhost",
        &auth,
    );
    assert_eq!(
        (status, &state["status"]),
        (200, &Value::from("disabled")),
        "{state}"
    );
}

/// Open file descriptors this process may have (from /proc/self/limits).
fn fd_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(1024)
}

/// 10,000 idle connections (fewer if this process may not open that many descriptors) neither
/// stall nor crash the emulator: a device still registers while they are open, and each is
/// closed once its connect timeout passes.
#[test]
fn ten_thousand_idle_connections() {
    let dir = tempdir();
    let mut child = bin()
        .args([
            "dps",
            "serve",
            "--mqtt",
            "127.0.0.1:0",
            "--mqtt-plain",
            "127.0.0.1:0",
            "--no-https",
            "--connect-timeout",
            "3s",
            "--tls-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut plain = None;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(a) = line.trim().strip_prefix("MQTT (plain):") {
            plain = Some(a.trim().parse::<std::net::SocketAddr>().unwrap());
        }
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let addr = plain.unwrap();
    let n = 10_000.min(fd_limit().saturating_sub(300));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut idle = Vec::with_capacity(n);
        for _ in 0..n {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // A real registration goes through meanwhile.
        let id = "breakroom77-contoso-tstrsd-007";
        let t = crate::util::dps::token(
            id,
            &crate::util::dps::device_key(id),
            loadtest::sas::SrEncoding::Upper,
            None,
        );
        let mut m =
            crate::util::dps::Mqtt::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        m.send(crate::util::dps::connect_packet(id, &t, true, 60))
            .await;
        assert!(matches!(
            m.recv().await,
            Some(rumqttc::mqttbytes::v4::Packet::ConnAck(_))
        ));
        m.subscribe().await;
        assert_eq!(m.register(b"").await.status, "assigned");
        // Every idle connection is closed by the server after the 3 s connect timeout.
        tokio::time::sleep(std::time::Duration::from_secs(4)).await;
        let mut closed = 0;
        for mut s in idle {
            use tokio::io::AsyncReadExt;
            let mut b = [0u8; 1];
            if matches!(
                tokio::time::timeout(std::time::Duration::from_secs(2), s.read(&mut b)).await,
                Ok(Ok(0)) | Ok(Err(_))
            ) {
                closed += 1;
            }
        }
        assert_eq!(closed, n, "every idle connection was closed");
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "the emulator is still running"
    );
    let _ = child.kill();
    let _ = child.wait();
}
