//! Servers that cannot be held hostage: 500 clients that send half a request and then nothing are
//! attached to `webhook serve` and to `dps serve`'s HTTP listener; valid requests are still
//! answered, and the server closes the slow connections once their header-read time is up; an
//! MQTT client with keep-alive 0 and a half-sent packet is dropped too.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::util::dps::{connect_packet, device_key, register_device, scenario_file, token};
use crate::util::{run, scenario, summary, tempdir, DpsProcess, Webhook};

/// `n` connections, each with the start of a request and no end of headers.
fn slow_clients(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"POST /api/HttpTrigger1 HTTP/1.1\r\nHost: x\r\nContent-")
                .unwrap();
            s
        })
        .collect()
}

/// Every connection is closed by the server (EOF or reset) before `deadline`, a bound against a
/// hang, far above the header timeout.
fn all_closed(conns: Vec<TcpStream>, deadline: Duration) {
    let started = Instant::now();
    for mut c in conns {
        let left = deadline.saturating_sub(started.elapsed());
        assert!(!left.is_zero(), "a slow client is still attached");
        c.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 512];
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {} // e.g. a 408 before the close
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    panic!("a slow client is still attached after {deadline:?}")
                }
                Err(_) => break, // reset
            }
        }
    }
}

#[test]
fn the_reference_webhook_serves_while_500_slow_clients_hang() {
    let hook = Webhook::start(&["--header-timeout", "2s"]);
    let addr = hook.base.trim_start_matches("http://").to_owned();
    let slow = slow_clients(&addr, 500);
    let dir = tempdir();
    let out = dir.path().join("r");
    let url = format!("{}/api/HttpTrigger1?code=k", hook.base);
    let r = run(&[
        "run",
        scenario("contoso.toml").to_str().unwrap(),
        "--url",
        &url,
        "--count",
        "100",
        "--rate",
        "200",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(summary(&out)["requests"]["completed"], 100);
    all_closed(slow, Duration::from_secs(120));
}

/// `dps serve` as its own process, plain HTTP and MQTT, a 2 s header timeout, stderr captured.
fn emulator() -> DpsProcess {
    DpsProcess::start(
        &[
            "--mqtt",
            "127.0.0.1:0",
            "--mqtt-plain",
            "127.0.0.1:0",
            "--no-https",
            "--http-plain",
            "127.0.0.1:0",
            "--header-timeout",
            "2s",
        ],
        true,
    )
}

/// One raw HTTP/1.1 exchange: the status line and the body.
fn http(addr: &str, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.lines().next().unwrap_or("").to_owned();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[test]
fn the_emulator_serves_while_500_slow_clients_hang() {
    let mut emu = emulator();
    let addr = emu.http_plain.clone().unwrap();
    let slow = slow_clients(&addr, 500);
    // A valid request still gets its answer.
    let (status, body) = http(
        &addr,
        "GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(body.contains("\"registrations\""), "{body}");
    all_closed(slow, Duration::from_secs(120));
    emu.kill();
}

/// DPS accepts registration IDs of 1 to 128 letters, digits and `-._:`; anything else is refused
/// with 400 and DPS error JSON, and what the network sent never reaches the log unescaped.
#[test]
fn the_emulator_refuses_ids_dps_refuses_and_logs_them_escaped() {
    let mut emu = emulator();
    let (addr, log) = (emu.http_plain.clone().unwrap(), emu.stderr.clone().unwrap());
    let long = "a".repeat(129);
    for id in [
        "a%2Fb",
        "..%2F..",
        "nul%00x",
        "x%0A2026-01-01T00%3A00%3A00Z%20forged%20assigned",
        "sp%20ace",
        "caf%C3%A9",
        long.as_str(),
    ] {
        let (status, body) = http(
            &addr,
            &format!(
                "PUT /0ne00000A0A/registrations/{id}/register?api-version=2019-03-31 HTTP/1.1\r\nHost: x\r\nAuthorization: SharedAccessSignature sr=x&sig=y&se=1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            ),
        );
        assert!(status.starts_with("HTTP/1.1 400"), "{id}: {status}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["errorCode"], 400004, "{id}: {body}");
        assert!(
            v["trackingId"].is_string() && v["timestampUtc"].is_string(),
            "{body}"
        );
    }
    // A valid ID with a bad token is still a 401.
    let (status, _) = http(
        &addr,
        "PUT /0ne00000A0A/registrations/ok-1/register HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
    emu.kill();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("2026-01-01T00:00:00Z forged")),
        "a forged log line: {text}"
    );
    assert!(text.contains("\\n2026-01-01T00:00:00Z forged"), "{text}");
}

/// CONNACK 1 (unacceptable protocol version) for a genuine MQTT 5 CONNECT and for level 5 in a
/// 3.1.1 layout; a 3.1.1 CONNECT with a bad password still gets CONNACK 5.
#[test]
fn the_emulator_answers_other_mqtt_versions_with_connack_1() {
    let mut emu = emulator();
    let mqtt = emu.mqtt_plain.clone().unwrap();
    let connack = |packet: &[u8]| -> Vec<u8> {
        let mut s = TcpStream::connect(&mqtt).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(packet).unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        buf.to_vec()
    };
    // MQTT 5: level 5, flags (clean start), keep-alive 60, properties length 0, client id "a".
    let v5 = [
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 1, b'a',
    ];
    assert_eq!(connack(&v5), [0x20, 2, 0, 1]);
    // Level 5 in the 3.1.1 layout (no properties).
    let v5_as_v4 = [
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 1, b'a',
    ];
    assert_eq!(connack(&v5_as_v4), [0x20, 2, 0, 1]);
    // 3.1.1 with a username and a wrong password: not authorised.
    let user = b"0ne00000A0A/registrations/a/api-version=2019-03-31";
    let mut v4 = vec![
        0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 60, 0, 1, b'a',
    ];
    v4.extend_from_slice(&(user.len() as u16).to_be_bytes());
    v4.extend_from_slice(user);
    v4.extend_from_slice(&[0, 1, b'x']);
    v4[1] = (v4.len() - 2) as u8;
    assert_eq!(connack(&v4), [0x20, 2, 0, 5]);
    emu.kill();
}

/// Keep-alive 0 is no licence to hang: a half-sent packet on such a connection is dropped after
/// 30 × the connect timeout (here 1 s × 30 = 30 s), and the server serves others meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_zero_and_a_half_sent_packet_is_not_held_forever() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = loadtest::emulator::serve::Options::loopback(dir.path().join("tls"));
    opts.connect_timeout = Duration::from_secs(1);
    let r = loadtest::emulator::serve::start(&scenario_file("contoso.toml"), &opts)
        .await
        .unwrap();
    let id = "breakroom7-contoso-tstrsd-007";
    let t = token(id, &device_key(id), loadtest::sas::SrEncoding::Upper, None);
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut sock = tokio::net::TcpStream::connect(r.addrs.mqtt_plain.unwrap())
        .await
        .unwrap();
    let mut out = bytes::BytesMut::new();
    connect_packet(id, &t, true, 0)
        .write(&mut out, usize::MAX)
        .unwrap();
    sock.write_all(&out).await.unwrap();
    let mut connack = [0u8; 4];
    sock.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK 0");
    // The first bytes of a PUBLISH, and then nothing.
    sock.write_all(&[0x30, 0x40, 0x00]).await.unwrap();
    let op = register_device(&r, "breakroom8-contoso-tstrsd-007", b"").await;
    assert_eq!(op.status, "assigned");
    // Closed by the server (EOF or reset), well before this bound against a hang.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(120), sock.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the server closes the connection");
    r.stop().await;
}
