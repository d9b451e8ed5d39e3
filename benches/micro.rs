//! Micro benchmarks of the per-request hot path in webhook mode: key derivation (with the HMAC key
//! schedule prepared once, against a naive per-device re-keying baseline), AllocationRequest body
//! building, and response classification + expectation check.
//!
//!   cargo bench --bench micro

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use hmac::Mac;
use loadtest::check;
use loadtest::device::keys::{GroupKey, HmacSha256};
use loadtest::device::template::IdTemplate;
use loadtest::dps::allocation::{
    Attestation, Capabilities, CustomAllocationDefinition, DeviceContext, EnrollmentRecord,
    ReprovisionPolicy, RequestTemplate,
};
use loadtest::dps::outcome::{Answer, Context, Decision, Rules};
use loadtest::dps::Status;
use loadtest::scenario::Expect;

const GROUP: &str =
    "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA==";

fn keys(c: &mut Criterion) {
    let g = GroupKey::new(GROUP).unwrap();
    c.bench_function("derive_device_key (prepared group key)", |b| {
        b.iter(|| g.derive(black_box("breakroom499-contoso-tstrsd-007")))
    });
    use base64::Engine as _;
    c.bench_function(
        "derive_device_key (naive: decode + re-key each time)",
        |b| {
            b.iter(|| {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(black_box(GROUP))
                    .unwrap();
                let mut mac = HmacSha256::new_from_slice(&raw).unwrap();
                mac.update(black_box(b"breakroom499-contoso-tstrsd-007"));
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
            })
        },
    );
}

fn body(c: &mut Criterion) {
    let hubs = vec![
        "contoso-toasters-hub-1098.azure-devices.net".to_owned(),
        "contoso-heatpumps-hub-1098.azure-devices.net".to_owned(),
    ];
    let record = EnrollmentRecord {
        enrollment_group_id: Some("contoso-custom-allocated-devices".into()),
        registration_id: None,
        device_id: None,
        attestation: Attestation {
            kind: "symmetricKey".into(),
        },
        capabilities: Capabilities { iot_edge: false },
        etag: "\"0000f176-0000-0700-0000-62eaad1e0000\"".into(),
        provisioning_status: "enabled".into(),
        reprovision_policy: ReprovisionPolicy::default(),
        created_date_time_utc: "2022-08-03T17:15:10.8464255Z".into(),
        last_updated_date_time_utc: "2022-08-03T17:15:10.8464255Z".into(),
        allocation_policy: "custom".into(),
        iot_hubs: hubs.clone(),
        custom_allocation_definition: CustomAllocationDefinition {
            webhook_url: "https://x/api/HttpTrigger1?****".into(),
            api_version: "2021-10-01".into(),
        },
    };
    let template = RequestTemplate::new(&record, false, &hubs);
    let ids = IdTemplate::parse("breakroom{n}-contoso-tstrsd-007").unwrap();
    let payload =
        r#"{"MyDeviceFirmwareVersion":"12.0.2.5","MyDeviceProvisioningVersion":"1.0.0.0"}"#;
    let mut n = 0u64;
    c.bench_function("allocation_request_body (render id + body)", |b| {
        b.iter(|| {
            n += 1;
            let id = ids.render(n);
            template.body(&DeviceContext {
                registration_id: &id,
                current_hub: None,
                current_device_id: None,
                payload_json: Some(payload),
            })
        })
    });
}

fn classify(c: &mut Criterion) {
    let hubs = vec![
        "contoso-toasters-hub-1098.azure-devices.net".to_owned(),
        "contoso-heatpumps-hub-1098.azure-devices.net".to_owned(),
    ];
    let body = br#"{"iotHubHostName":"contoso-toasters-hub-1098.azure-devices.net","initialTwin":{"properties":{"desired":{"state":"ready","darknessSetting":"medium"}},"tags":{"deviceType":"toaster"}}}"#;
    let rules = Rules::default();
    let expect = Expect {
        status: Status::Assigned,
        hub: Some(hubs[0].clone()),
        device_id: None,
        error_code: None,
        error_message: None,
        twin_tags: Some(serde_json::json!({"deviceType":"toaster"})),
        twin_desired: Some(serde_json::json!({"state":"ready","darknessSetting":"medium"})),
        payload: None,
        substatus: None,
        substatus_again: None,
    };
    c.bench_function("classify_and_check (200 + twin)", |b| {
        b.iter(|| {
            let ctx = Context {
                linked_hubs: &hubs,
                device_id: "d",
                enrollment_twin: None,
                recent: None,
            };
            match rules.decide(
                Answer::Response {
                    status: 200,
                    body: black_box(body),
                },
                &ctx,
                0,
            ) {
                Decision::Final(r) => check::compare(&expect, &r).len(),
                Decision::Retry => 99,
            }
        })
    });
    c.bench_function("classify_and_check (400 -> 400207)", |b| {
        let e = Expect {
            status: Status::Failed,
            hub: None,
            twin_tags: None,
            twin_desired: None,
            error_code: Some(400_207),
            ..expect.clone()
        };
        b.iter(|| {
            let ctx = Context {
                linked_hubs: &hubs,
                device_id: "d",
                enrollment_twin: None,
                recent: None,
            };
            match rules.decide(
                Answer::Response {
                    status: 400,
                    body: black_box(b"Unrecognized device registration."),
                },
                &ctx,
                0,
            ) {
                Decision::Final(r) => check::compare(&e, &r).len(),
                Decision::Retry => 99,
            }
        })
    });
}

criterion_group!(benches, keys, body, classify);
criterion_main!(benches);
