//! Emulator test helpers: an in-process emulator on 127.0.0.1:0, a raw MQTT 3.1.1 client (the
//! packets are built by hand with the `mqttbytes` codec so every flag the SDKs differ in can be
//! set), device keys and SAS tokens.

use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use loadtest::device::keys::GroupKey;
use loadtest::dps::wire::{self, OperationStatus};
use loadtest::emulator::serve::{self, Options, Running};
use loadtest::sas::{device_token, SrEncoding};
use loadtest::scenario::Scenario;
use rumqttc::mqttbytes::v4::{Connect, Login, Packet, PubAck, Publish, Subscribe};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub const GROUP_KEY: &str =
    "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA==";
pub const SCOPE: &str = "0ne00000A0A";
pub const TOASTERS: &str = "contoso-toasters-hub-1098.azure-devices.net";
pub const HEATPUMPS: &str = "contoso-heatpumps-hub-1098.azure-devices.net";

pub fn scenario_file(name: &str) -> Scenario {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name);
    Scenario::load(&p).unwrap()
}

pub fn scenario_text(text: &str) -> Scenario {
    Scenario::parse(Path::new("test.toml"), text).unwrap()
}

/// Starts the emulator on loopback; the returned directory holds its certificates.
pub async fn start(s: &Scenario) -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = Options::loopback(dir.path().join("tls"));
    opts.connect_timeout = Duration::from_secs(2);
    (serve::start(s, &opts).await.unwrap(), dir)
}

pub fn device_key(id: &str) -> String {
    GroupKey::new(GROUP_KEY).unwrap().derive(id)
}

pub fn token(id: &str, key: &str, enc: SrEncoding, skn: Option<&str>) -> String {
    device_token(
        SCOPE,
        id,
        key,
        loadtest::emulator::unix_now() + 3600,
        enc,
        skn,
    )
    .unwrap()
}

pub struct Mqtt<S> {
    io: S,
    buf: BytesMut,
    pkid: u16,
}

pub type Plain = Mqtt<TcpStream>;

impl<S: AsyncRead + AsyncWrite + Unpin> Mqtt<S> {
    pub fn new(io: S) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            pkid: 0,
        }
    }

    pub async fn send(&mut self, p: Packet) {
        let mut out = BytesMut::new();
        p.write(&mut out, usize::MAX).unwrap();
        self.io.write_all(&out).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    /// The next packet, or `None` when the server closed the connection (10 s at most).
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match Packet::read(&mut self.buf, 1 << 20) {
                    Ok(p) => return Some(p),
                    Err(CodecError::InsufficientBytes(_)) => {}
                    Err(e) => panic!("server sent a bad packet: {e}"),
                }
                match self.io.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the server answers within 10 s")
    }

    pub fn next_pkid(&mut self) -> u16 {
        self.pkid += 1;
        self.pkid
    }

    pub async fn subscribe(&mut self) {
        let mut s = Subscribe::new(wire::RESPONSE_FILTER, QoS::AtLeastOnce);
        s.pkid = self.next_pkid();
        self.send(Packet::Subscribe(s)).await;
        match self.recv().await {
            Some(Packet::SubAck(a)) => assert_eq!(
                format!("{:?}", a.return_codes),
                "[Success(AtLeastOnce)]",
                "SUBACK grants QoS 1"
            ),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Publishes a request and returns the response (status, rid, retry-after, body). With QoS 1,
    /// checks that PUBACK arrives first and acknowledges the response.
    pub async fn request(
        &mut self,
        topic: &str,
        qos: QoS,
        body: &[u8],
    ) -> (u16, String, Option<u32>, serde_json::Value) {
        let mut p = Publish::new(topic, qos, body.to_vec());
        if qos != QoS::AtMostOnce {
            p.pkid = self.next_pkid();
        }
        let pkid = p.pkid;
        self.send(Packet::Publish(p)).await;
        if qos != QoS::AtMostOnce {
            match self.recv().await {
                Some(Packet::PubAck(a)) => assert_eq!(a.pkid, pkid),
                other => panic!("expected PUBACK first, got {other:?}"),
            }
        }
        match self.recv().await {
            Some(Packet::Publish(r)) => {
                assert_eq!(r.qos, QoS::AtLeastOnce, "responses are QoS 1");
                assert_ne!(r.pkid, 0);
                self.send(Packet::PubAck(PubAck::new(r.pkid))).await;
                let (status, rid, retry) = wire::parse_response(&r.topic)
                    .unwrap_or_else(|| panic!("bad response topic {}", r.topic));
                let body = serde_json::from_slice(&r.payload)
                    .unwrap_or_else(|_| panic!("response body is not JSON: {:?}", r.payload));
                (status, rid, retry, body)
            }
            other => panic!("expected a response PUBLISH, got {other:?}"),
        }
    }

    /// Registers and polls (with 50 ms waits, ignoring retry-after) until a terminal status.
    pub async fn register(&mut self, body: &[u8]) -> OperationStatus {
        let (status, rid, retry, v) = self
            .request(&wire::register_topic("r1"), QoS::AtLeastOnce, body)
            .await;
        assert_eq!(rid, "r1");
        if status == 200 {
            return serde_json::from_value(v).unwrap();
        }
        assert_eq!(status, 202, "{v}");
        assert!(retry.is_some(), "202 carries retry-after");
        let mut op: OperationStatus = serde_json::from_value(v).unwrap();
        assert_eq!(op.status, "assigning");
        assert!(
            op.registration_state.is_none(),
            "the first 202 has no registrationState"
        );
        for n in 0..400 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let (status, _, _, v) = self
                .request(
                    &wire::poll_topic(&format!("p{n}"), &op.operation_id),
                    QoS::AtLeastOnce,
                    b" ",
                )
                .await;
            op = serde_json::from_value(v.clone()).unwrap_or_else(|_| panic!("{v}"));
            if status == 200 {
                return op;
            }
            assert_eq!(status, 202, "{v}");
            assert_eq!(op.status, "assigning");
        }
        panic!("no terminal status after 20 s");
    }
}

pub fn connect_packet(id: &str, token: &str, clean: bool, keep_alive: u16) -> Packet {
    let mut c = Connect::new(id);
    c.clean_session = clean;
    c.keep_alive = keep_alive;
    c.login = Some(Login::new(
        wire::username(SCOPE, id, "loadtest-tests/1"),
        token,
    ));
    Packet::Connect(c)
}

/// Connects over plain TCP and returns the client and the CONNACK's (code, session present).
pub async fn connect(
    r: &Running,
    id: &str,
    token: &str,
    clean: bool,
    keep_alive: u16,
) -> (Plain, String, bool) {
    let mut m = Mqtt::new(
        TcpStream::connect(r.addrs.mqtt_plain.unwrap())
            .await
            .unwrap(),
    );
    m.send(connect_packet(id, token, clean, keep_alive)).await;
    match m.recv().await {
        Some(Packet::ConnAck(a)) => {
            let code = format!("{:?}", a.code);
            (m, code, a.session_present)
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// Connects, subscribes and registers one group device with its derived key.
pub async fn register_device(r: &Running, id: &str, body: &[u8]) -> OperationStatus {
    let t = token(id, &device_key(id), SrEncoding::Upper, Some("registration"));
    let (mut m, code, _) = connect(r, id, &t, true, 60).await;
    assert_eq!(code, "Success");
    m.subscribe().await;
    m.register(body).await
}
