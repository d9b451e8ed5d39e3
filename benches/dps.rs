//! Registrations per second of the DPS emulator on plain TCP (`cargo bench --bench dps`).
//!
//! One process: the emulator, its embedded reference webhook and N raw MQTT clients share the
//! machine, so the number is a floor for the emulator alone. Each registration is what a device
//! does: TCP connect, CONNECT (SAS verified), SUBSCRIBE, register, poll until terminal,
//! DISCONNECT. Two modes: `immediate` (terminal status in the register answer) and the normal
//! 202-then-poll flow with the client polling 5 ms after each 202 (ignoring retry-after).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use loadtest::device::keys::GroupKey;
use loadtest::dps::wire;
use loadtest::emulator::serve::{self, Options};
use loadtest::sas::{device_token, SrEncoding};
use loadtest::scenario::Scenario;
use rumqttc::mqttbytes::v4::{Connect, Login, Packet, Publish, Subscribe};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLIENTS: usize = 64;
const SECONDS: u64 = 5;

async fn send(s: &mut TcpStream, p: Packet) {
    let mut out = BytesMut::new();
    p.write(&mut out, usize::MAX).unwrap();
    s.write_all(&out).await.unwrap();
}

async fn recv(s: &mut TcpStream, buf: &mut BytesMut) -> Packet {
    loop {
        match Packet::read(buf, 1 << 20) {
            Ok(p) => return p,
            Err(CodecError::InsufficientBytes(_)) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(s.read_buf(buf).await.unwrap() > 0, "server closed");
    }
}

async fn response(s: &mut TcpStream, buf: &mut BytesMut) -> (u16, serde_json::Value) {
    loop {
        if let Packet::Publish(p) = recv(s, buf).await {
            let (status, _, _) = wire::parse_response(&p.topic).unwrap();
            return (status, serde_json::from_slice(&p.payload).unwrap());
        }
    }
}

async fn one(addr: std::net::SocketAddr, keys: &GroupKey, n: u64) -> bool {
    let id = format!("breakroom{}-contoso-tstrsd-007", n % 4000 + 1);
    let key = keys.derive(&id);
    let tok = device_token(
        "0ne00000A0A",
        &id,
        &key,
        4_000_000_000,
        SrEncoding::Upper,
        None,
    )
    .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = BytesMut::new();
    let mut c = Connect::new(id.as_str());
    c.login = Some(Login::new(wire::username("0ne00000A0A", &id, "bench"), tok));
    send(&mut s, Packet::Connect(c)).await;
    recv(&mut s, &mut buf).await;
    let mut sub = Subscribe::new(wire::RESPONSE_FILTER, QoS::AtLeastOnce);
    sub.pkid = 1;
    send(&mut s, Packet::Subscribe(sub)).await;
    recv(&mut s, &mut buf).await;
    send(
        &mut s,
        Packet::Publish(Publish::new(
            wire::register_topic("1"),
            QoS::AtMostOnce,
            Vec::new(),
        )),
    )
    .await;
    let (mut status, mut v) = response(&mut s, &mut buf).await;
    while status == 202 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let op = v["operationId"].as_str().unwrap().to_owned();
        send(
            &mut s,
            Packet::Publish(Publish::new(
                wire::poll_topic("2", &op),
                QoS::AtMostOnce,
                b" ".to_vec(),
            )),
        )
        .await;
        (status, v) = response(&mut s, &mut buf).await;
    }
    send(&mut s, Packet::Disconnect).await;
    status == 200 && v["status"] == "assigned"
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for immediate in [true, false] {
            let mut s = Scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/contoso.toml")).unwrap();
            s.emulator.immediate = immediate;
            let dir = tempfile::tempdir().unwrap();
            let mut opts = Options::loopback(dir.path().to_owned());
            opts.mqtt = None;
            opts.https = None;
            opts.http_plain = None;
            let running = serve::start(&s, &opts).await.unwrap();
            let addr = running.addrs.mqtt_plain.unwrap();
            let keys = Arc::new(GroupKey::new(s.enrollment.group.as_ref().unwrap().primary_key.expose()).unwrap());
            let done = Arc::new(AtomicU64::new(0));
            let next = Arc::new(AtomicU64::new(0));
            let deadline = Instant::now() + Duration::from_secs(SECONDS);
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..CLIENTS {
                let (keys, done, next) = (keys.clone(), done.clone(), next.clone());
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < deadline {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if one(addr, &keys, n).await {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            let secs = started.elapsed().as_secs_f64();
            let n = done.load(Ordering::Relaxed);
            println!(
                "dps emulator, plain TCP, {} mode, {CLIENTS} concurrent devices: {n} registrations in {secs:.2} s = {:.0} registrations/s",
                if immediate { "immediate" } else { "202 + poll" },
                n as f64 / secs
            );
            running.stop().await;
        }
    });
}
