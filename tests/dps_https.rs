//! The emulator's HTTPS side: DPS device routes and the IoT Hub twin read.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use loadtest::sas::SrEncoding;
use serde_json::Value;

use crate::util::dps::*;

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn call(
    client: &Http,
    method: &str,
    url: &str,
    auth: Option<&str>,
    host: Option<&str>,
    body: &[u8],
) -> (u16, Option<String>, String, Value) {
    let mut req = Request::builder().method(method).uri(url);
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    if let Some(h) = host {
        req = req.header("Host", h);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::copy_from_slice(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {bytes:?}"));
    (status, retry, ct, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_poll_status_and_twin_read() {
    let (r, _dir) = start(&scenario_file("contoso.toml")).await;
    let base = format!("http://{}", r.addrs.http_plain.unwrap());
    let client: Http = Client::builder(TokioExecutor::new()).build_http();
    let id = "breakroom499-contoso-tstrsd-007";
    let auth = token(id, &device_key(id), SrEncoding::Lower, Some("registration"));
    // The path as SDK-C sends it: URL-encoded segments.
    let reg = format!("{base}/{SCOPE}/registrations/{id}/register?api-version=2021-06-01");
    let (status, retry, ct, v) = call(&client, "PUT", &reg, Some(&auth), None, br#"{"registrationId":"breakroom499-contoso-tstrsd-007","payload":{"MyDeviceFirmwareVersion":"12.0.2.5"}}"#).await;
    assert_eq!((status, retry.as_deref()), (202, Some("3")), "{v}");
    assert_eq!(ct, "application/json; charset=utf-8");
    assert_eq!(v["status"], "assigning");
    let op = v["operationId"].as_str().unwrap().to_owned();
    let poll = format!("{base}/{SCOPE}/registrations/{id}/operations/{op}?api-version=2019-03-31");
    let mut done = Value::Null;
    for _ in 0..100 {
        let (status, retry, _, v) = call(&client, "GET", &poll, Some(&auth), None, b"{}").await;
        if status == 200 {
            done = v;
            break;
        }
        assert_eq!((status, retry.as_deref()), (202, Some("3")));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(done["status"], "assigned", "{done}");
    assert_eq!(done["registrationState"]["assignedHub"], TOASTERS);
    // Status lookup: the state without the wrapper.
    let lookup = format!("{base}/{SCOPE}/registrations/{id}?api-version=2019-03-31");
    let (status, _, _, v) = call(&client, "POST", &lookup, Some(&auth), None, b"{}").await;
    assert_eq!((status, &v["deviceId"]), (200, &Value::from(id)));
    // Bad credentials, unknown operation, unknown route.
    let bad = token(id, GROUP_KEY, SrEncoding::Upper, None);
    let (status, _, _, v) = call(&client, "PUT", &reg, Some(&bad), None, b"").await;
    assert_eq!((status, &v["errorCode"]), (401, &Value::from(401002)));
    assert!(
        v["trackingId"].is_string() && v["message"].is_string() && v["timestampUtc"].is_string()
    );
    let (status, _, _, _) = call(&client, "PUT", &reg, None, None, b"").await;
    assert_eq!(status, 401);
    let missing = format!("{base}/{SCOPE}/registrations/{id}/operations/nope");
    assert_eq!(
        call(&client, "GET", &missing, Some(&auth), None, b"")
            .await
            .0,
        404
    );
    assert_eq!(
        call(
            &client,
            "GET",
            &format!("{base}/elsewhere"),
            None,
            None,
            b""
        )
        .await
        .0,
        404
    );
    let (status, _, _, stats) =
        call(&client, "GET", &format!("{base}/stats"), None, None, b"").await;
    assert_eq!(status, 200);
    assert_eq!(stats["registrations"], 1, "{stats}");
    assert_eq!(stats["assigned"], 1, "{stats}");
    assert!(stats["refused"].as_u64().unwrap() >= 2, "{stats}");

    // The twin on the toasters hub, read with a service SAS from the generated connection string.
    let strings = r.emulator.connection_strings();
    let (_, cs) = strings.iter().find(|(h, _)| h == TOASTERS).unwrap();
    let key = cs.split("SharedAccessKey=").nth(1).unwrap();
    let sas = loadtest::sas::service_token(
        TOASTERS,
        "iothubowner",
        key,
        loadtest::emulator::unix_now() + 600,
    )
    .unwrap();
    let twin_url = format!("{base}/twins/{id}?api-version=2021-04-12");
    let (status, _, _, twin) =
        call(&client, "GET", &twin_url, Some(&sas), Some(TOASTERS), b"").await;
    assert_eq!(status, 200, "{twin}");
    assert_eq!(twin["tags"], serde_json::json!({"deviceType": "toaster"}));
    assert_eq!(twin["properties"]["desired"]["darknessSetting"], "medium");
    assert_eq!(twin["properties"]["desired"]["state"], "ready");
    // Not on the other hub; a SAS for the other hub, a wrong key, or none are refused.
    let other = loadtest::sas::service_token(
        HEATPUMPS,
        "iothubowner",
        key,
        loadtest::emulator::unix_now() + 600,
    )
    .unwrap();
    assert_eq!(
        call(&client, "GET", &twin_url, Some(&other), Some(TOASTERS), b"")
            .await
            .0,
        401
    );
    assert_eq!(
        call(&client, "GET", &twin_url, None, Some(TOASTERS), b"")
            .await
            .0,
        401
    );
    let wrong = loadtest::sas::service_token(
        TOASTERS,
        "iothubowner",
        GROUP_KEY,
        loadtest::emulator::unix_now() + 600,
    )
    .unwrap();
    assert_eq!(
        call(&client, "GET", &twin_url, Some(&wrong), Some(TOASTERS), b"")
            .await
            .0,
        401
    );
    let (_, hp) = strings.iter().find(|(h, _)| h == HEATPUMPS).unwrap();
    let hp_key = hp.split("SharedAccessKey=").nth(1).unwrap();
    let hp_sas = loadtest::sas::service_token(
        HEATPUMPS,
        "iothubowner",
        hp_key,
        loadtest::emulator::unix_now() + 600,
    )
    .unwrap();
    assert_eq!(
        call(
            &client,
            "GET",
            &twin_url,
            Some(&hp_sas),
            Some(HEATPUMPS),
            b""
        )
        .await
        .0,
        404
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_serves_over_tls() {
    let (r, dir) = start(&scenario_file("contoso.toml")).await;
    let ca = std::fs::read(dir.path().join("tls/ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    {
        use rustls::pki_types::pem::PemObject as _;
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
            roots.add(c.unwrap()).unwrap();
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
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
    let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(https);
    let id = "mainbuilding167-contoso-hpsd-088";
    let port = r.addrs.https.unwrap().port();
    let url = format!("https://localhost:{port}/{SCOPE}/registrations/{id}/register");
    let req = Request::put(url)
        .header(
            "Authorization",
            token(id, &device_key(id), SrEncoding::Raw, None),
        )
        .header("UserAgent", "prov_device_client/1.0")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    r.stop().await;
}
