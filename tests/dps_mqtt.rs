//! The emulator's MQTT side against the real-clients checklist, with a raw client.

use std::time::Duration;

use loadtest::check;
use loadtest::dps::wire::{self, OperationStatus};
use loadtest::dps::{Registration, Status};
use loadtest::sas::SrEncoding;
use rumqttc::mqttbytes::v4::{Packet, Unsubscribe};
use rumqttc::mqttbytes::QoS;

use crate::util::dps::*;

fn contoso() -> loadtest::scenario::Scenario {
    scenario_file("contoso.toml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sas_encoding_with_and_without_skn_is_accepted() {
    let (r, _dir) = start(&contoso()).await;
    for (i, enc) in [SrEncoding::Upper, SrEncoding::Lower, SrEncoding::Raw]
        .into_iter()
        .enumerate()
    {
        for skn in [Some("registration"), None] {
            let id = format!("breakroom{}-contoso-tstrsd-007", 10 + i);
            let t = token(&id, &device_key(&id), enc, skn);
            let (mut m, code, present) = connect(&r, &id, &t, false, 60).await;
            assert_eq!(code, "Success", "{enc:?} {skn:?}");
            assert!(!present, "SessionPresent is always 0");
            m.subscribe().await;
            let op = m.register(br#"{"registrationId":"x"}"#).await;
            assert_eq!(op.status, "assigned", "{enc:?} {skn:?}");
        }
    }
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_rid_body_and_session_variants() {
    let (r, _dir) = start(&contoso()).await;
    let id = "breakroom499-contoso-tstrsd-007";
    let t = token(id, &device_key(id), SrEncoding::Upper, None);
    // Clean session 1 and keep-alive 0 (SDK-C).
    let (mut m, code, present) = connect(&r, id, &t, true, 0).await;
    assert_eq!((code.as_str(), present), ("Success", false));
    m.subscribe().await;
    // QoS 0 register with an integer $rid and an empty body (SDK-C#'s body, SDK-C's QoS).
    let (status, rid, retry, v) = m
        .request(&wire::register_topic("17"), QoS::AtMostOnce, b"")
        .await;
    assert_eq!((status, rid.as_str(), retry), (202, "17", Some(3)), "{v}");
    let op: OperationStatus = serde_json::from_value(v).unwrap();
    assert!(op.operation_id.len() > 10 && !op.operation_id.contains(['/', '?', '&', '#']));
    // A UUID $rid, a poll body that copies the register JSON (SDK-C), at QoS 1.
    let uuid = "7b2c1f4e-7f1c-4a8e-9f3e-1d2c3b4a5e6f";
    let mut last = (0, String::new());
    for _ in 0..100 {
        let (status, rid, _, v) = m
            .request(
                &wire::poll_topic(uuid, &op.operation_id),
                QoS::AtLeastOnce,
                br#"{"registrationId":"breakroom499-contoso-tstrsd-007"}"#,
            )
            .await;
        assert_eq!(rid, uuid);
        assert!(
            v.get("operationId").is_some(),
            "every response has operationId: {v}"
        );
        last = (status, v["status"].as_str().unwrap().to_owned());
        if status == 200 {
            let s = &v["registrationState"];
            assert_eq!(s["assignedHub"], TOASTERS);
            assert_eq!(s["deviceId"], id);
            assert_eq!(s["substatus"], "initialAssignment");
            for k in [
                "registrationId",
                "createdDateTimeUtc",
                "lastUpdatedDateTimeUtc",
                "etag",
            ] {
                assert!(s.get(k).is_some(), "assigned state has {k}: {s}");
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(last, (200, "assigned".to_owned()));
    // `"payload": null` (SDK-Py) registers the same device again: same hub, reprovision substatus.
    let op = m
        .register(br#"{"payload": null, "registrationId": "breakroom499-contoso-tstrsd-007"}"#)
        .await;
    let s = op.registration_state.unwrap();
    assert_eq!(
        s.substatus.as_deref(),
        Some("reprovisionedToInitialAssignment")
    );
    // PINGREQ, UNSUBSCRIBE, DISCONNECT.
    m.send(Packet::PingReq).await;
    assert!(matches!(m.recv().await, Some(Packet::PingResp)));
    let mut u = Unsubscribe::new(wire::RESPONSE_FILTER);
    u.pkid = m.next_pkid();
    let pkid = u.pkid;
    m.send(Packet::Unsubscribe(u)).await;
    match m.recv().await {
        Some(Packet::UnsubAck(a)) => assert_eq!(a.pkid, pkid),
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    m.send(Packet::Disconnect).await;
    assert!(m.recv().await.is_none(), "DISCONNECT closes the connection");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_refused_with_connack_5() {
    let (r, _dir) = start(&contoso()).await;
    let id = "breakroom1-contoso-tstrsd-007";
    let good = device_key(id);
    let expired =
        loadtest::sas::device_token(SCOPE, id, &good, 1_000, SrEncoding::Upper, None).unwrap();
    let other_resource = token(
        "breakroom2-contoso-tstrsd-007",
        &device_key("breakroom2-contoso-tstrsd-007"),
        SrEncoding::Upper,
        None,
    );
    let wrong_scope = loadtest::sas::device_token(
        "0ne99999999",
        id,
        &good,
        loadtest::emulator::unix_now() + 60,
        SrEncoding::Upper,
        None,
    )
    .unwrap();
    for (what, tok) in [
        (
            "the group key itself",
            token(id, GROUP_KEY, SrEncoding::Upper, None),
        ),
        ("an expired token", expired),
        ("a token for another device", other_resource),
        ("a token for another scope", wrong_scope),
        ("not a token", "hello".to_owned()),
    ] {
        let (mut m, code, _) = connect(&r, id, &tok, true, 60).await;
        assert_eq!(code, "NotAuthorized", "{what}");
        assert!(m.recv().await.is_none(), "{what}: the connection is closed");
    }
    // A username in another scope is refused the same way.
    let mut m = Plain::new(
        tokio::net::TcpStream::connect(r.addrs.mqtt_plain.unwrap())
            .await
            .unwrap(),
    );
    let mut c = rumqttc::mqttbytes::v4::Connect::new(id);
    c.login = Some(rumqttc::mqttbytes::v4::Login::new(
        format!("0ne99999999/registrations/{id}/api-version=2019-03-31"),
        token(id, &good, SrEncoding::Upper, None),
    ));
    m.send(Packet::Connect(c)).await;
    assert!(
        matches!(m.recv().await, Some(Packet::ConnAck(a)) if format!("{:?}", a.code) == "NotAuthorized")
    );
    assert!(
        r.emulator
            .counters
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 6
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_clients_only_lose_their_own_connection() {
    let (r, _dir) = start(&contoso()).await;
    let addr = r.addrs.mqtt_plain.unwrap();
    // Never sends CONNECT: closed after the connect timeout (500 ms in tests).
    let mut silent = Plain::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    // Malformed: a PUBLISH before CONNECT, and garbage.
    let mut early = Plain::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    early.send(Packet::PingReq).await;
    let mut garbage = Plain::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    garbage
        .send_raw(&[0x10, 0xff, 0xff, 0xff, 0xff, 0x7f])
        .await;
    // Oversized: a 200 KB publish after a good CONNECT.
    let id = "breakroom3-contoso-tstrsd-007";
    let t = token(id, &device_key(id), SrEncoding::Upper, None);
    let (mut big, code, _) = connect(&r, id, &t, true, 60).await;
    assert_eq!(code, "Success");
    big.send(Packet::Publish(rumqttc::mqttbytes::v4::Publish::new(
        wire::register_topic("1"),
        QoS::AtMostOnce,
        vec![b' '; 200 * 1024],
    )))
    .await;
    // Keep-alive 1 s and then silence: closed after 1.5 s.
    let id2 = "breakroom4-contoso-tstrsd-007";
    let t2 = token(id2, &device_key(id2), SrEncoding::Upper, None);
    let (mut sleepy, _, _) = connect(&r, id2, &t2, true, 1).await;
    for (name, m) in [
        ("silent", &mut silent),
        ("early", &mut early),
        ("garbage", &mut garbage),
        ("oversized", &mut big),
        ("past keep-alive", &mut sleepy),
    ] {
        assert!(m.recv().await.is_none(), "{name}: connection closed");
    }
    // The server still serves everyone else.
    let op = register_device(&r, "breakroom5-contoso-tstrsd-007", b"").await;
    assert_eq!(op.status, "assigned");
    r.stop().await;
}

/// Every row of the troubleshooting table, through the reference webhook's fault injection and
/// the emulator: the terminal state meets each class's expectation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_troubleshooting_outcome_end_to_end() {
    let s = scenario_file("contoso-faults.toml");
    let (r, _dir) = start(&s).await;
    let individuals: Vec<(String, String)> = s
        .enrollment
        .individuals
        .iter()
        .map(|i| (i.registration_id.clone(), i.primary_key.expose().to_owned()))
        .collect();
    let mut seen = Vec::new();
    for class in &s.classes {
        let id = class.template.render(class.range.0);
        let key = individuals
            .iter()
            .find(|(i, _)| i.eq_ignore_ascii_case(&id))
            .map_or_else(|| device_key(&id), |(_, k)| k.clone());
        let t = token(&id, &key, SrEncoding::Upper, None);
        let (mut m, code, _) = connect(&r, &id, &t, true, 60).await;
        assert_eq!(code, "Success", "{}", class.name);
        m.subscribe().await;
        let body = class
            .payload_json
            .as_ref()
            .map_or_else(Vec::new, |p| format!(r#"{{"payload":{p}}}"#).into_bytes());
        let op = m.register(&body).await;
        let st = op.registration_state.clone().unwrap();
        let got = Registration {
            status: Status::parse(&st.status),
            assigned_hub: st.assigned_hub.as_deref().map(Into::into),
            device_id: st.device_id.clone(),
            error_code: st.error_code,
            error_message: st.error_message.clone(),
            initial_twin: None,
            payload: st.payload.clone().map(Into::into),
        };
        let mut expect = class.expect.clone();
        // Twins are checked on the hub (twin tests); not part of registrationState.
        expect.twin_tags = None;
        expect.twin_desired = None;
        let diff = check::compare(&expect, &got);
        assert!(diff.is_empty(), "{}: {diff:?} in {st:?}", class.name);
        seen.push(op.status);
    }
    assert!(seen.contains(&"assigned".to_owned()));
    assert!(seen.contains(&"failed".to_owned()));
    assert!(seen.contains(&"disabled".to_owned()));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_answers_429_with_retry_after_and_json() {
    let mut s = contoso();
    s.emulator.throttle = Some(loadtest::scenario::Throttle {
        registrations_per_minute: 2,
        polls_per_10s: 5,
    });
    let (r, _dir) = start(&s).await;
    let id = "breakroom7-contoso-tstrsd-007";
    let t = token(id, &device_key(id), SrEncoding::Upper, None);
    let (mut m, _, _) = connect(&r, id, &t, true, 60).await;
    m.subscribe().await;
    let mut statuses = Vec::new();
    let mut op_id = String::new();
    for n in 0..3 {
        let (status, _, retry, v) = m
            .request(&wire::register_topic(&n.to_string()), QoS::AtLeastOnce, b"")
            .await;
        statuses.push(status);
        if status == 429 {
            assert!(retry.is_some_and(|s| s >= 1), "429 carries retry-after");
            assert_eq!(v["errorCode"], 429001);
            assert!(
                v["trackingId"].is_string() && v["timestampUtc"].is_string(),
                "{v}"
            );
        } else {
            op_id = v["operationId"].as_str().unwrap().to_owned();
        }
    }
    assert_eq!(statuses, [202, 202, 429]);
    let mut polls = Vec::new();
    for n in 0..6 {
        let (status, _, _, _) = m
            .request(
                &wire::poll_topic(&format!("q{n}"), &op_id),
                QoS::AtLeastOnce,
                b" ",
            )
            .await;
        polls.push(status);
    }
    assert_eq!(
        polls[5], 429,
        "the sixth poll in 10 s is throttled: {polls:?}"
    );
    assert!(
        polls[..5].iter().all(|s| *s == 200 || *s == 202),
        "{polls:?}"
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_mode_answers_the_register_with_the_terminal_status() {
    let mut s = contoso();
    s.emulator.immediate = true;
    let (r, _dir) = start(&s).await;
    let id = "lobby5-contoso-kettle-001";
    let t = token(id, &device_key(id), SrEncoding::Upper, None);
    let (mut m, _, _) = connect(&r, id, &t, true, 60).await;
    m.subscribe().await;
    let (status, _, retry, v) = m
        .request(&wire::register_topic("1"), QoS::AtLeastOnce, b"")
        .await;
    assert_eq!((status, retry), (200, None), "{v}");
    assert_eq!(v["status"], "failed");
    assert_eq!(v["registrationState"]["errorCode"], 400207);
    assert_eq!(
        v["registrationState"]["errorMessage"],
        "Custom allocation failed with status code: 400"
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_tls_12_and_13_with_an_ip_literal() {
    use std::sync::Arc;
    let (r, dir) = start(&contoso()).await;
    let ca = std::fs::read(dir.path().join("tls/ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile_certs(&ca) {
        roots.add(c).unwrap();
    }
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        for name in ["localhost", "127.0.0.1"] {
            let tcp = tokio::net::TcpStream::connect(r.addrs.mqtt.unwrap())
                .await
                .unwrap();
            let server_name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
            let tls = connector.connect(server_name, tcp).await.unwrap();
            let mut m = Mqtt::new(tls);
            let id = "mainbuilding167-contoso-hpsd-088";
            m.send(connect_packet(
                id,
                &token(id, &device_key(id), SrEncoding::Upper, None),
                true,
                60,
            ))
            .await;
            assert!(matches!(m.recv().await, Some(Packet::ConnAck(_))));
            m.subscribe().await;
            let op = m.register(b"").await;
            assert_eq!(
                op.registration_state.unwrap().assigned_hub.as_deref(),
                Some(HEATPUMPS)
            );
        }
    }
    r.stop().await;
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_pinning_refuses_the_other_key_after_a_registration() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/contoso.toml"),
    )
    .unwrap()
    .replace(
        "api_version = \"2021-10-01\"",
        "api_version = \"2021-10-01\"\nsecondary_key = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"",
    );
    let s = scenario_text(&text);
    let (r, _dir) = start(&s).await;
    let id = "breakroom9-contoso-tstrsd-007";
    let secondary =
        loadtest::device::keys::GroupKey::new("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
            .unwrap()
            .derive(id);
    let (mut m, code, _) = connect(
        &r,
        id,
        &token(id, &secondary, SrEncoding::Upper, None),
        true,
        60,
    )
    .await;
    assert_eq!(
        code, "Success",
        "the secondary key works before any registration"
    );
    m.subscribe().await;
    assert_eq!(m.register(b"").await.status, "assigned");
    let (_, code, _) = connect(
        &r,
        id,
        &token(id, &device_key(id), SrEncoding::Upper, None),
        true,
        60,
    )
    .await;
    assert_eq!(
        code, "NotAuthorized",
        "the primary key is refused after the secondary registered"
    );
    r.stop().await;
}

/// Reprovisioning across a restart (persistence): the same device, first assigned to hub A, then
/// re-registered when only hub B is eligible: migrated (twin moved) or reset (initial twin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprovisioning_migrates_or_resets_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.json");
    for (migrate, substatus) in [(true, "deviceDataMigrated"), (false, "deviceDataReset")] {
        let _ = std::fs::remove_file(&store);
        let scenario = |only: &str| {
            let text = std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/contoso.toml"),
            )
            .unwrap()
            .replace(
                "migrate_device_data = true",
                &format!("migrate_device_data = {migrate}"),
            );
            let other = if only == TOASTERS {
                HEATPUMPS
            } else {
                TOASTERS
            };
            scenario_text(&format!(
                "{text}\n[emulator]\nallocation = \"hashed\"\npersist = \"{}\"\nhubs = [{{ host = \"{other}\", apply_allocation_policy = false }}]\n",
                store.display()
            ))
        };
        let id = "breakroom42-contoso-tstrsd-007";
        let (a, _d1) = start(&scenario(TOASTERS)).await;
        let first = register_device(&a, id, b"")
            .await
            .registration_state
            .unwrap();
        assert_eq!(first.assigned_hub.as_deref(), Some(TOASTERS));
        assert_eq!(first.substatus.as_deref(), Some("initialAssignment"));
        a.stop().await;
        assert!(store.exists(), "the store is written");
        let (b, _d2) = start(&scenario(HEATPUMPS)).await;
        let second = register_device(&b, id, b"")
            .await
            .registration_state
            .unwrap();
        assert_eq!(second.assigned_hub.as_deref(), Some(HEATPUMPS), "{migrate}");
        assert_eq!(second.substatus.as_deref(), Some(substatus));
        assert_eq!(
            second.created_date_time_utc, first.created_date_time_utc,
            "the record survived the restart"
        );
        b.stop().await;
        // The device left the old hub and exists on the new one.
        let saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&store).unwrap()).unwrap();
        let hubs = &saved["hubs"];
        assert!(hubs[TOASTERS]["devices"].get(id).is_none(), "{hubs}");
        assert!(hubs[HEATPUMPS]["devices"].get(id).is_some(), "{hubs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_static_and_geo_latency_allocation() {
    let base = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/contoso.toml"),
    )
    .unwrap();
    let with = |emulator: &str| scenario_text(&format!("{base}\n[emulator]\n{emulator}\n"));
    let ids: Vec<String> = (1..=40)
        .map(|n| format!("breakroom{n}-contoso-tstrsd-007"))
        .collect();
    // geoLatency: the heat-pumps hub is nearer, so every device goes there.
    let geo = with(&format!(
        "allocation = \"geoLatency\"\nhubs = [{{ host = \"{TOASTERS}\", latency = \"50ms\" }}, {{ host = \"{HEATPUMPS}\", latency = \"10ms\" }}]"
    ));
    // static: the enrollment's first hub.
    let stat = with("allocation = \"static\"");
    // hashed with weights 1:3 and the toasters hub left out of allocation entirely, then in.
    let hashed_out = with(&format!(
        "allocation = \"hashed\"\nhubs = [{{ host = \"{TOASTERS}\", apply_allocation_policy = false }}]"
    ));
    let hashed = with(&format!(
        "allocation = \"hashed\"\nhubs = [{{ host = \"{TOASTERS}\", weight = 1 }}, {{ host = \"{HEATPUMPS}\", weight = 3 }}]"
    ));
    for (name, s, check) in [
        (
            "geoLatency",
            geo,
            Box::new(|t: usize, h: usize| t == 0 && h == 40) as Box<dyn Fn(usize, usize) -> bool>,
        ),
        ("static", stat, Box::new(|t, h| t == 40 && h == 0)),
        (
            "hashed without toasters",
            hashed_out,
            Box::new(|t, h| t == 0 && h == 40),
        ),
        (
            "hashed 1:3",
            hashed,
            Box::new(|t, h| t > 0 && h > t && t + h == 40),
        ),
    ] {
        let (r, _dir) = start(&s).await;
        let (mut t, mut h) = (0, 0);
        for id in &ids {
            let op = register_device(&r, id, b"").await;
            match op.registration_state.unwrap().assigned_hub.as_deref() {
                Some(x) if x == TOASTERS => t += 1,
                Some(x) if x == HEATPUMPS => h += 1,
                other => panic!("{name}: {other:?}"),
            }
        }
        assert!(check(t, h), "{name}: toasters {t}, heat pumps {h}");
        r.stop().await;
    }
}

/// Fields in any order (SDK-Node: sr, sig, skn, se; a docs sample: sr, skn, sig, se).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sas_fields_in_any_order() {
    let (r, _dir) = start(&contoso()).await;
    let id = "breakroom21-contoso-tstrsd-007";
    let t = token(id, &device_key(id), SrEncoding::Raw, Some("registration"));
    let fields: Vec<&str> = t
        .strip_prefix("SharedAccessSignature ")
        .unwrap()
        .split('&')
        .collect();
    let find = |k: &str| {
        fields
            .iter()
            .find(|f| f.starts_with(k))
            .unwrap()
            .to_string()
    };
    for order in [
        ["sr=", "sig=", "skn=", "se="],
        ["sr=", "skn=", "sig=", "se="],
        ["se=", "skn=", "sig=", "sr="],
    ] {
        let reordered = format!(
            "SharedAccessSignature {}",
            order.iter().map(|k| find(k)).collect::<Vec<_>>().join("&")
        );
        let (mut m, code, _) = connect(&r, id, &reordered, true, 60).await;
        assert_eq!(code, "Success", "{reordered}");
        m.send(rumqttc::mqttbytes::v4::Packet::Disconnect).await;
    }
    r.stop().await;
}
