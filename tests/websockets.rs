//! MQTT over WebSockets (`mode = "mqtt-ws"`): the driver upgrades on `/$iothub/websocket` with
//! subprotocol `mqtt`, over TLS (`wss`, the emulator's HTTPS listener) and plain (`ws`, its plain
//! HTTP listener), and runs the same MQTT registration; toasters and heat pumps land on their
//! hubs with their twins, an unknown device fails 400207, a wrong key is refused. An upgrade that
//! does not offer `mqtt` gets 400 with a DPS error body.

use std::io::{Read, Write};

use crate::util::{class, run_file, summary, tempdir, DpsProcess};

fn scenario(target: &str) -> String {
    format!(
        r#"name = "ws"
[target]
mode = "mqtt-ws"
{target}
[emulator]
retry_after = 1
[enrollment]
group_id = "contoso-custom-allocated-devices"
primary_key = "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA=="
iot_hubs = ["contoso-toasters-hub-1098.azure-devices.net", "contoso-heatpumps-hub-1098.azure-devices.net"]
[[devices]]
class = "toaster"
id = "breakroom{{n}}-contoso-tstrsd-007"
count = 20
expect = {{ status = "assigned", hub = "contoso-toasters-hub-1098.azure-devices.net", twin = {{ tags = {{ deviceType = "toaster" }} }} }}
[[devices]]
class = "heatpump"
id = "mainbuilding{{n}}-contoso-hpsd-088"
count = 20
expect = {{ status = "assigned", hub = "contoso-heatpumps-hub-1098.azure-devices.net" }}
[[devices]]
class = "unknown"
id = "lobby{{n}}-contoso-kettle-001"
count = 5
expect = {{ status = "failed", error_code = 400207 }}
[load]
rate = 100
"#
    )
}

fn run_scenario(text: &str) -> serde_json::Value {
    let dir = tempdir();
    let file = dir.path().join("ws.toml");
    std::fs::write(&file, text).unwrap();
    let out = dir.path().join("r");
    let r = run_file(&file, &out);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    summary(&out)
}

#[test]
fn the_mqtt_ws_driver_registers_over_wss_and_ws() {
    for target in ["", "tls = \"plain\""] {
        let v = run_scenario(&scenario(target));
        assert_eq!(v["mode"], "mqtt-ws");
        assert_eq!(v["expectations"]["passed"], 45, "{target}: {v}");
        assert_eq!(class(&v, "toaster")["outcomes"]["assigned"], 20);
        assert_eq!(class(&v, "heatpump")["outcomes"]["assigned"], 20);
        assert_eq!(class(&v, "unknown")["outcomes"]["failed:400207"], 5);
        assert!(v["phases"]["twins_checked"].as_u64().unwrap() >= 20, "{v}");
        // The connect phase holds TCP, TLS, the upgrade and CONNACK.
        assert!(
            v["phases"]["connect_us"]["p50"].as_u64().unwrap() > 0,
            "{v}"
        );
        let scheme = if target.is_empty() { "wss" } else { "ws" };
        assert!(v["target"].as_str().unwrap().contains(scheme), "{v}");
    }
}

/// Against `dps serve` as its own process: its plain HTTP listener carries `ws`, a wrong key is
/// refused (CONNACK 5 → 401002), and an upgrade without the `mqtt` subprotocol is refused with
/// 400 and a DPS error body.
#[test]
fn dps_serve_takes_websockets_and_refuses_a_bad_upgrade() {
    let mut e = DpsProcess::start(
        &[
            "--mqtt",
            "127.0.0.1:0",
            "--http-plain",
            "127.0.0.1:0",
            "--no-https",
        ],
        false,
    );
    let http = e.http_plain.clone().unwrap();
    let (host, port) = http.rsplit_once(':').unwrap();
    let text = scenario(&format!(
        "endpoint = \"{host}:{port}\"\ntls = \"plain\"\nverify_twins = false"
    ))
    .replace(", twin = { tags = { deviceType = \"toaster\" } }", "");
    let v = run_scenario(&text);
    assert_eq!(v["expectations"]["passed"], 45, "{v}");
    // A wrong key: the emulator refuses the CONNECT (401002).
    let wrong = text
        .replace(
            "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA==",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .replace("count = 20", "count = 2");
    let dir = tempdir();
    let file = dir.path().join("wrong.toml");
    std::fs::write(&file, wrong).unwrap();
    let out = dir.path().join("r");
    let r = run_file(&file, &out);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let w = summary(&out);
    assert!(
        class(&w, "toaster")["outcomes"]
            .to_string()
            .contains("401002"),
        "{w}"
    );
    // No `mqtt` subprotocol: 400 with the DPS error shape.
    let mut s = std::net::TcpStream::connect(&http).unwrap();
    write!(
        s,
        "GET /$iothub/websocket HTTP/1.1\r\nHost: {http}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: chat\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("\"errorCode\":400004") && answer.contains("mqtt"),
        "{answer}"
    );
    e.kill();
}
