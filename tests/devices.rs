//! Device-registration modes end to end through the CLI: every troubleshooting outcome as the
//! device sees it over each transport, reprovisioning rounds, and the failure classes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::util::{bin, class, run, run_file, scenario, summary, tempdir, DpsProcess};

/// contoso-faults.toml in a device mode: quick polls, no thresholds (they count webhook retries);
/// the emulator reaches the embedded webhook over `webhook` ("in-process" or "http").
fn faults_in(dir: &Path, mode: &str, webhook: &str) -> PathBuf {
    let text = std::fs::read_to_string(scenario("contoso-faults.toml")).unwrap();
    let text = text.split("\n[thresholds]").next().unwrap().to_owned();
    let text = text.replacen(
        "[target]\n",
        &format!("[target]\nmode = \"{mode}\"\npoll_cap = \"50ms\"\ndevice_timeout = \"20s\"\n"),
        1,
    ) + &format!("\n[emulator]\nretry_after = 1\nwebhook = \"{webhook}\"\n");
    let file = dir.join(format!("faults-{mode}.toml"));
    std::fs::write(&file, text).unwrap();
    file
}

/// Both transports, and both ways the emulator reaches the embedded webhook: the same faults
/// (500, 429, a delay past the timeout, null hub, 401) give the same outcomes over loopback HTTP
/// and in-process.
#[test]
fn every_troubleshooting_outcome_as_devices_see_it_over_mqtt_and_https() {
    for (mode, webhook) in [("mqtt", "http"), ("https", "in-process")] {
        let dir = tempdir();
        let file = faults_in(dir.path(), mode, webhook);
        let out = dir.path().join("report");
        let r = run(&[
            "run",
            file.to_str().unwrap(),
            "--no-progress",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(r.code, 0, "{mode}\n{}\n{}", r.stdout, r.stderr);
        let v = summary(&out);
        assert_eq!(v["mode"], mode);
        let devices: u64 = v["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["devices"].as_u64().unwrap())
            .sum();
        assert!(devices >= 200, "a few hundred devices: {devices}");
        for (name, key) in [
            ("assigned", "assigned"),
            ("hub-null", "failed:400208"),
            ("unauthorized", "failed:400209"),
            ("server-error", "failed:400207"),
            ("throttled-then-assigned", "assigned"),
            ("throttled-gives-up", "failed:400207"),
            ("timeout", "failed:400207"),
            ("disabled", "disabled"),
            ("individual", "assigned"),
        ] {
            let c = class(&v, name);
            assert_eq!(c["failed"], 0, "{mode} {name}: {c}");
            assert!(
                c["outcomes"][key].as_u64().unwrap() > 0,
                "{mode} {name}: {c}"
            );
        }
        let p = &v["phases"];
        assert!(p["dps_us"]["p50"].as_u64().unwrap() > 0, "{p}");
        assert!(
            p["twins_checked"].as_u64().unwrap() > 0,
            "twins read back: {p}"
        );
        if mode == "mqtt" {
            assert!(p["connect_us"]["p50"].as_u64().unwrap() > 0, "{p}");
        }
    }
}

#[test]
fn a_second_round_expects_the_reprovision_substatus() {
    let dir = tempdir();
    let text = std::fs::read_to_string(scenario("contoso-mqtt.toml"))
        .unwrap()
        .replace("count = 4000\n", "count = 40\n")
        .replace("count = 200\n", "count = 10\n")
        .replace(
            "substatus = \"initialAssignment\"\n",
            "substatus = \"initialAssignment\"\nsubstatus_again = \"reprovisionedToInitialAssignment\"\n",
        )
        .replace("count = 1000 ", "rounds = 2 ")
        .replace("poll_cap = \"5s\"", "poll_cap = \"50ms\"");
    assert!(text.contains("rounds = 2"), "{text}");
    let file = dir.path().join("rounds.toml");
    std::fs::write(&file, text).unwrap();
    let out = dir.path().join("report");
    let r = run(&[
        "run",
        file.to_str().unwrap(),
        "--no-progress",
        "--rate",
        "100",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let v = summary(&out);
    assert_eq!(v["requests"]["completed"], 180, "two rounds of 90 devices");
    assert_eq!(class(&v, "toaster")["passed"], 80);
}

/// `loadtest dps serve` as a separate process: MQTT over TLS and plain, plain HTTP (`/stats`).
fn emulator() -> DpsProcess {
    DpsProcess::start(
        &[
            "--mqtt",
            "127.0.0.1:0",
            "--mqtt-plain",
            "127.0.0.1:0",
            "--http-plain",
            "127.0.0.1:0",
            "--no-https",
        ],
        false,
    )
}

/// The emulator's `GET /stats` counters.
pub(crate) fn stats(http: &str) -> Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(http).unwrap();
    write!(
        s,
        "GET /stats HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("{}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
}

pub(crate) fn device_scenario(dir: &Path, target: &str, count: u32) -> PathBuf {
    let text = format!(
        r#"name = "robustness"
[target]
mode = "mqtt"
{target}
device_timeout = "2s"
poll_cap = "100ms"
[enrollment]
group_id = "contoso-custom-allocated-devices"
primary_key = "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA=="
iot_hubs = ["contoso-toasters-hub-1098.azure-devices.net", "contoso-heatpumps-hub-1098.azure-devices.net"]
[[devices]]
class = "toaster"
id = "breakroom{{n}}-contoso-tstrsd-007"
count = {count}
expect = {{ status = "assigned", hub = "contoso-toasters-hub-1098.azure-devices.net" }}
[load]
rate = 50
grace = "3s"
"#
    );
    let file = dir.join("robustness.toml");
    std::fs::write(&file, text).unwrap();
    file
}

fn errors(v: &Value) -> String {
    v["errors"].to_string()
}

/// An error of this source whose message contains `text` was counted.
fn has_error(v: &Value, source: &str, text: &str) -> bool {
    v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["source"] == source && e["message"].as_str().unwrap().contains(text))
}

#[test]
fn the_emulator_dying_halfway_is_counted_as_connection_errors() {
    let mut emu = emulator();
    let (addr, http) = (
        emu.mqtt_plain.clone().unwrap(),
        emu.http_plain.clone().unwrap(),
    );
    let dir = tempdir();
    let file = device_scenario(
        dir.path(),
        &format!("endpoint = \"{addr}\"\ntls = \"plain\"\nverify_twins = false"),
        200,
    );
    let out = dir.path().join("report");
    let mut driver = bin()
        .args([
            "run",
            file.to_str().unwrap(),
            "--no-progress",
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill it once it has served some devices (however fast this machine is), long before the
    // 4 s schedule ends.
    let waited = std::time::Instant::now();
    while stats(&http)["assigned"].as_u64().unwrap() < 25 {
        assert!(
            waited.elapsed() < Duration::from_secs(120),
            "no device registered"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    emu.kill();
    let status = driver.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let v = summary(&out);
    let r = &v["requests"];
    assert_eq!(r["scheduled"], 200);
    assert!(r["completed"].as_u64().unwrap() > 0, "{r}");
    assert!(r["failed"].as_u64().unwrap() > 0, "{r}");
    assert!(has_error(&v, "network", ""), "{}", errors(&v));
}

#[test]
fn tls_refusal_and_silence_are_classified_never_hung() {
    // An unknown CA: the emulator's TLS port trusted through the system roots.
    let mut emu = emulator();
    let tls_addr = emu.mqtt_tls.clone().unwrap();
    let dir = tempdir();
    let file = device_scenario(
        dir.path(),
        &format!("endpoint = \"{tls_addr}\"\ntls = \"system\"\nverify_twins = false"),
        5,
    );
    let out = dir.path().join("tls");
    let r = run_file(&file, &out);
    assert_eq!(r.code, 2, "no device got an answer: {}", r.stderr);
    assert!(
        has_error(&summary(&out), "tls", "TLS handshake failed"),
        "{}",
        errors(&summary(&out))
    );
    // CONNACK refused: the wrong ID scope.
    emu.kill();
    let mut emu = emulator();
    let addr = emu.mqtt_plain.clone().unwrap();
    let file = device_scenario(
        dir.path(),
        &format!("endpoint = \"{addr}\"\ntls = \"plain\"\nid_scope = \"0ne99999999\"\nverify_twins = false"),
        5,
    );
    let out = dir.path().join("refused");
    let r = run_file(&file, &out);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = summary(&out);
    assert_eq!(class(&v, "toaster")["outcomes"]["failed:401002"], 5, "{v}");
    assert!(
        r.stdout.contains("CONNACK refused: NotAuthorized"),
        "{}",
        r.stdout
    );
    emu.kill();
    // A server that accepts and never answers: the per-device timeout classifies it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let keep = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().take(5) {
            held.push(s);
        }
        std::thread::sleep(Duration::from_secs(4));
    });
    let file = device_scenario(
        dir.path(),
        &format!("endpoint = \"{silent_addr}\"\ntls = \"plain\"\nverify_twins = false"),
        5,
    );
    let out = dir.path().join("silent");
    let started = std::time::Instant::now();
    let r = run_file(&file, &out);
    assert!(started.elapsed() < Duration::from_secs(120), "never hangs");
    assert_eq!(r.code, 2, "{}", r.stderr);
    let v = summary(&out);
    assert_eq!(v["requests"]["timed_out"], 5, "{}", v["requests"]);
    assert!(
        has_error(&v, "timeout", "no terminal status"),
        "{}",
        errors(&v)
    );
    let _ = keep.join();
}

/// A server that accepts and never sends CONNACK, with `connect_timeout` and `connect_retries`
/// set: every attempt times out, is retried, and both are counted as their own phase; the
/// connections come from the two configured source addresses in turn.
#[test]
fn connect_timeouts_and_retries_are_their_own_phase_from_spread_sources() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let peers = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().take(12) {
            held.push(s.unwrap());
        }
        let ips: std::collections::BTreeSet<String> = held
            .iter()
            .map(|s| s.peer_addr().unwrap().ip().to_string())
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        ips
    });
    let dir = tempdir();
    let file = device_scenario(
        dir.path(),
        &format!(
            "endpoint = \"{silent_addr}\"\ntls = \"plain\"\nverify_twins = false\nconnect_timeout = \"200ms\"\nconnect_retries = 2\nsource_addrs = [\"127.0.0.2\", \"127.0.0.3\"]"
        ),
        4,
    );
    let out = dir.path().join("retried");
    let r = run_file(&file, &out);
    assert_eq!(r.code, 2, "no device got an answer: {}", r.stderr);
    let v = summary(&out);
    assert_eq!(v["requests"]["timed_out"], 4, "{}", v["requests"]);
    assert_eq!(v["phases"]["connect_timeouts"], 12, "{}", v["phases"]);
    assert_eq!(v["phases"]["connect_retries"], 8, "{}", v["phases"]);
    assert!(
        has_error(&v, "network", "connect timed out (200ms)"),
        "{}",
        errors(&v)
    );
    assert!(
        r.stdout
            .contains("connect attempts: 12 timed out, 8 retried"),
        "{}",
        r.stdout
    );
    let ips = peers.join().unwrap();
    assert_eq!(
        ips.into_iter().collect::<Vec<_>>(),
        ["127.0.0.2", "127.0.0.3"]
    );
}

/// A fake DPS that accepts the device, then answers its register request with `answer`
/// (topic status, payload, and whether to use the device's `$rid`).
fn fake_dps(answer: (u16, &'static [u8], bool)) -> std::net::SocketAddr {
    use bytes::BytesMut;
    use rumqttc::mqttbytes::v4::{
        ConnAck, ConnectReturnCode, Packet, Publish, SubAck, SubscribeReasonCode,
    };
    use rumqttc::mqttbytes::QoS;
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(3) {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = BytesMut::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let packet = loop {
                        match Packet::read(&mut buf, 1 << 20) {
                            Ok(p) => break Some(p),
                            Err(_) => match s.read(&mut chunk) {
                                Ok(0) | Err(_) => break None,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            },
                        }
                    };
                    let Some(packet) = packet else { return };
                    let reply = match packet {
                        Packet::Connect(_) => Some(Packet::ConnAck(ConnAck::new(
                            ConnectReturnCode::Success,
                            false,
                        ))),
                        Packet::Subscribe(sub) => Some(Packet::SubAck(SubAck::new(
                            sub.pkid,
                            vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)],
                        ))),
                        Packet::Publish(p) => {
                            let rid = p.topic.split("$rid=").nth(1).unwrap_or("1").to_owned();
                            let rid = if answer.2 { rid } else { format!("{rid}999") };
                            let mut r = Publish::new(
                                format!("$dps/registrations/res/{}/?$rid={rid}", answer.0),
                                QoS::AtMostOnce,
                                answer.1.to_vec(),
                            );
                            r.pkid = 0;
                            if p.qos != QoS::AtMostOnce {
                                let mut out = BytesMut::new();
                                Packet::PubAck(rumqttc::mqttbytes::v4::PubAck::new(p.pkid))
                                    .write(&mut out, usize::MAX)
                                    .unwrap();
                                let _ = s.write_all(&out);
                            }
                            Some(Packet::Publish(r))
                        }
                        _ => None,
                    };
                    if let Some(r) = reply {
                        let mut out = BytesMut::new();
                        r.write(&mut out, usize::MAX).unwrap();
                        if s.write_all(&out).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn unauthorised_malformed_and_stray_answers_are_classified() {
    let dir = tempdir();
    for (answer, expect_code, expect_text) in [
        (
            (401, br#"{"errorCode":401002,"trackingId":"t","message":"Unauthorized","timestampUtc":"x"}"#.as_slice(), true),
            1,
            "res/401: Unauthorized",
        ),
        ((200, b"{not json".as_slice(), true), 1, "malformed response JSON"),
        ((200, br#"{"operationId":"1","status":"assigned"}"#.as_slice(), false), 2, "no terminal status"),
    ] {
        let addr = fake_dps(answer);
        let file = device_scenario(dir.path(), &format!("endpoint = \"{addr}\"\ntls = \"plain\"\nverify_twins = false"), 1);
        let out = dir.path().join(format!("r{}", answer.0));
        let started = std::time::Instant::now();
        let r = run(&["run", file.to_str().unwrap(), "--no-progress", "--out", out.to_str().unwrap()]);
        assert!(started.elapsed() < Duration::from_secs(120), "never hangs");
        assert_eq!(r.code, expect_code, "{expect_text}: {}\n{}", r.stdout, r.stderr);
        let v = summary(&out);
        let all = format!("{}{}", errors(&v), r.stdout);
        assert!(all.contains(expect_text), "{expect_text}: {all}");
    }
}

#[test]
fn a_host_name_mismatch_is_a_tls_failure() {
    // The emulator listens on 127.0.0.2, which its certificate does not name.
    let dir = tempdir();
    let mut emu = DpsProcess::start(&["--mqtt", "127.0.0.2:0", "--no-https"], false);
    let (addr, ca) = (emu.mqtt_tls.clone(), emu.ca());
    let file = device_scenario(
        dir.path(),
        &format!(
            "endpoint = \"{}\"\ntls = \"{}\"\nverify_twins = false",
            addr.unwrap(),
            ca.display()
        ),
        2,
    );
    let out = dir.path().join("report");
    let r = run_file(&file, &out);
    emu.kill();
    assert_eq!(r.code, 2, "{}", r.stderr);
    let v = summary(&out);
    assert!(has_error(&v, "tls", "not valid for name"), "{}", errors(&v));
}
