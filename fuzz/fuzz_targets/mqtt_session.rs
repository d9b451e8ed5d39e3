//! The emulator's MQTT connection handler fed arbitrary bytes (a CONNECT with a valid SAS token
//! is prepended half of the time, so PUBLISH/SUBSCRIBE handling is reached): it must end the
//! connection or answer, never panic.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use loadtest::emulator::Emulator;
use loadtest::scenario::Scenario;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SCENARIO: &str = include_str!("../../scenarios/contoso.toml");

fn emulator() -> Arc<Emulator> {
    static E: OnceLock<Arc<Emulator>> = OnceLock::new();
    E.get_or_init(|| {
        let mut s = Scenario::parse(std::path::Path::new("contoso.toml"), SCENARIO).unwrap();
        // No webhook: custom allocation fails fast with 400207 instead of calling out.
        s.emulator.immediate = true;
        Arc::new(Emulator::new(&s, None, false).unwrap())
    })
    .clone()
}

fn connect_packet() -> Vec<u8> {
    use loadtest::dps::wire;
    let id = "breakroom1-contoso-tstrsd-007";
    let key = loadtest::device::keys::GroupKey::new(
        "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA==",
    )
    .unwrap()
    .derive(id);
    let token = loadtest::sas::device_token(
        "0ne00000A0A",
        id,
        &key,
        4_000_000_000,
        loadtest::sas::SrEncoding::Upper,
        None,
    )
    .unwrap();
    let mut c = rumqttc::mqttbytes::v4::Connect::new(id);
    c.login = Some(rumqttc::mqttbytes::v4::Login::new(
        wire::username("0ne00000A0A", id, "fuzz"),
        token,
    ));
    let mut out = bytes::BytesMut::new();
    rumqttc::mqttbytes::v4::Packet::Connect(c)
        .write(&mut out, usize::MAX)
        .unwrap();
    out.to_vec()
}

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut input = Vec::new();
    if data.first().is_some_and(|b| b & 1 == 1) {
        input.extend(connect_packet());
    }
    input.extend_from_slice(data);
    rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let task = tokio::spawn(loadtest::emulator::mqtt::serve(
            emulator(),
            server,
            Duration::from_millis(5),
        ));
        let _ = client.write_all(&input).await;
        let _ = client.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_millis(200), client.read_to_end(&mut sink)).await;
        let _ = tokio::time::timeout(Duration::from_millis(200), task).await;
    });
});
