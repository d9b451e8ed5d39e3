//! The custom-allocation webhook wire format (dps-protocol.md §5.2, §5.3): the AllocationRequest
//! body DPS POSTs and the AllocationResponse the webhook returns.
//!
//! The enrollment object and `linkedHubs` are constant for a run, so [`RequestTemplate`] serialises
//! them once and each request only writes its `deviceRuntimeContext`. The output is the exact body
//! DPS sends: keys are never included (`attestation` has only `type`, `symmetricKey` is `{}`).

use serde::{Deserialize, Serialize};

/// `reprovisionPolicy` of an enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReprovisionPolicy {
    /// Re-evaluate the hub on re-registration.
    pub update_hub_assignment: bool,
    /// Migrate twin and device data when the hub changes.
    pub migrate_device_data: bool,
}

impl Default for ReprovisionPolicy {
    fn default() -> Self {
        // "Reprovision and migrate data" is the default for new enrollments (§6).
        Self {
            update_hub_assignment: true,
            migrate_device_data: true,
        }
    }
}

/// The enrollment as DPS describes it to the webhook (group or individual).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentRecord {
    /// Group: `enrollmentGroupId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrollment_group_id: Option<String>,
    /// Individual: `registrationId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_id: Option<String>,
    /// Individual: optional `deviceId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// `{"type":"symmetricKey"}`; keys are never sent.
    pub attestation: Attestation,
    /// `{"iotEdge":false}`.
    pub capabilities: Capabilities,
    /// A quoted Cosmos-style etag.
    pub etag: String,
    /// `enabled` / `disabled`.
    pub provisioning_status: String,
    /// Reprovision policy.
    pub reprovision_policy: ReprovisionPolicy,
    /// Creation time (fixed per scenario so transcripts are stable).
    pub created_date_time_utc: String,
    /// Last update time.
    pub last_updated_date_time_utc: String,
    /// Always `custom` here.
    pub allocation_policy: String,
    /// The enrollment's selected hubs.
    pub iot_hubs: Vec<String>,
    /// Webhook URL (function key masked as `****`) and apiVersion.
    pub custom_allocation_definition: CustomAllocationDefinition,
}

impl EnrollmentRecord {
    /// `provisioningStatus` is `disabled`: DPS answers `disabled` and never calls the webhook.
    pub fn is_disabled(&self) -> bool {
        self.provisioning_status.eq_ignore_ascii_case("disabled")
    }
}

/// `attestation` as sent to the webhook.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attestation {
    /// `symmetricKey`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// Device capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// IoT Edge device.
    pub iot_edge: bool,
}

/// `customAllocationDefinition`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomAllocationDefinition {
    /// The URL with its query masked, as DPS echoes it (`…/api/HttpTrigger1?****`).
    pub webhook_url: String,
    /// Schema version of the enrollment objects.
    pub api_version: String,
}

/// Masks a webhook URL the way DPS echoes it: the whole query becomes `****`.
pub fn mask_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?****"),
        None => url.to_owned(),
    }
}

/// The `deviceRuntimeContext` of one registration.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceContext<'a> {
    /// `registrationId`.
    pub registration_id: &'a str,
    /// `currentIotHubHostName`, only when the device was assigned before.
    pub current_hub: Option<&'a str>,
    /// `currentDeviceId`, only when the device was assigned before.
    pub current_device_id: Option<&'a str>,
    /// The device's custom payload, already serialised as JSON.
    pub payload_json: Option<&'a str>,
}

/// A pre-serialised AllocationRequest for one enrollment and its linked hubs.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    head: String,
    tail: String,
}

impl RequestTemplate {
    /// Builds the template. `individual` selects `individualEnrollment` over `enrollmentGroup`.
    pub fn new(enrollment: &EnrollmentRecord, individual: bool, linked_hubs: &[String]) -> Self {
        let field = if individual {
            "individualEnrollment"
        } else {
            "enrollmentGroup"
        };
        let enrollment = serde_json::to_string(enrollment).expect("enrollment serialises");
        let hubs = serde_json::to_string(linked_hubs).expect("hubs serialise");
        Self {
            head: format!(
                "{{\"{field}\":{enrollment},\"deviceRuntimeContext\":{{\"registrationId\":"
            ),
            tail: format!("}},\"linkedHubs\":{hubs}}}"),
        }
    }

    /// Writes the full body for one device (field order as in the seed's request log).
    pub fn body(&self, ctx: &DeviceContext<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head.len() + self.tail.len() + 160);
        out.extend_from_slice(self.head.as_bytes());
        crate::dps::json::write_str(&mut out, ctx.registration_id);
        if let Some(hub) = ctx.current_hub {
            out.extend_from_slice(b",\"currentIotHubHostName\":");
            crate::dps::json::write_str(&mut out, hub);
            out.extend_from_slice(b",\"currentDeviceId\":");
            crate::dps::json::write_str(
                &mut out,
                ctx.current_device_id.unwrap_or(ctx.registration_id),
            );
        }
        out.extend_from_slice(b",\"symmetricKey\":{}");
        if let Some(p) = ctx.payload_json {
            out.extend_from_slice(b",\"payload\":");
            out.extend_from_slice(p.as_bytes());
        }
        out.extend_from_slice(self.tail.as_bytes());
        out
    }
}

/// The AllocationResponse (§5.3), borrowing the body it was read from: the twin and payload
/// stay JSON text until someone needs them (see [`super::json`]). Both spellings of the hub
/// field are accepted; `null` reads as absent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationResponse<'a> {
    /// The chosen hub; `None` when missing or null.
    #[serde(default, borrow, alias = "iotHubHostname")]
    pub iot_hub_host_name: Option<std::borrow::Cow<'a, str>>,
    /// Optional `{tags, properties:{desired}}`.
    #[serde(default, borrow)]
    pub initial_twin: Option<&'a serde_json::value::RawValue>,
    /// Optional payload echoed to the device.
    #[serde(default, borrow)]
    pub payload: Option<&'a serde_json::value::RawValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_group() -> EnrollmentRecord {
        EnrollmentRecord {
            enrollment_group_id: Some("contoso-custom-allocated-devices".into()),
            registration_id: None,
            device_id: None,
            attestation: Attestation { kind: "symmetricKey".into() },
            capabilities: Capabilities { iot_edge: false },
            etag: "\"0000f176-0000-0700-0000-62eaad1e0000\"".into(),
            provisioning_status: "enabled".into(),
            reprovision_policy: ReprovisionPolicy::default(),
            created_date_time_utc: "2022-08-03T17:15:10.8464255Z".into(),
            last_updated_date_time_utc: "2022-08-03T17:15:10.8464255Z".into(),
            allocation_policy: "custom".into(),
            iot_hubs: vec!["contoso-toasters-hub-1098.azure-devices.net".into(), "contoso-heatpumps-hub-1098.azure-devices.net".into()],
            custom_allocation_definition: CustomAllocationDefinition {
                webhook_url: mask_url("https://contoso-function-app-1098.azurewebsites.net/api/HttpTrigger1?code=secret"),
                api_version: "2021-10-01".into(),
            },
        }
    }

    /// The body must equal, byte for byte, the request logged in the current seed (002).
    #[test]
    fn reproduces_the_seed_request_log() {
        let e = seed_group();
        let t = RequestTemplate::new(&e, false, &e.iot_hubs);
        let body = t.body(&DeviceContext {
            registration_id: "breakroom499-contoso-tstrsd-007",
            current_hub: Some("contoso-toasters-hub-1098.azure-devices.net"),
            current_device_id: Some("breakroom499-contoso-tstrsd-007"),
            payload_json: Some(
                r#"{"MyDeviceFirmwareVersion":"12.0.2.5","MyDeviceProvisioningVersion":"1.0.0.0"}"#,
            ),
        });
        let logged = r#"{"enrollmentGroup":{"enrollmentGroupId":"contoso-custom-allocated-devices","attestation":{"type":"symmetricKey"},"capabilities":{"iotEdge":false},"etag":"\"0000f176-0000-0700-0000-62eaad1e0000\"","provisioningStatus":"enabled","reprovisionPolicy":{"updateHubAssignment":true,"migrateDeviceData":true},"createdDateTimeUtc":"2022-08-03T17:15:10.8464255Z","lastUpdatedDateTimeUtc":"2022-08-03T17:15:10.8464255Z","allocationPolicy":"custom","iotHubs":["contoso-toasters-hub-1098.azure-devices.net","contoso-heatpumps-hub-1098.azure-devices.net"],"customAllocationDefinition":{"webhookUrl":"https://contoso-function-app-1098.azurewebsites.net/api/HttpTrigger1?****","apiVersion":"2021-10-01"}},"deviceRuntimeContext":{"registrationId":"breakroom499-contoso-tstrsd-007","currentIotHubHostName":"contoso-toasters-hub-1098.azure-devices.net","currentDeviceId":"breakroom499-contoso-tstrsd-007","symmetricKey":{},"payload":{"MyDeviceFirmwareVersion":"12.0.2.5","MyDeviceProvisioningVersion":"1.0.0.0"}},"linkedHubs":["contoso-toasters-hub-1098.azure-devices.net","contoso-heatpumps-hub-1098.azure-devices.net"]}"#;
        assert_eq!(std::str::from_utf8(&body).unwrap(), logged);
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for s in [
            "breakroom499-contoso-tstrsd-007",
            "",
            "a\"b",
            "back\\slash",
            "tab\there",
            "nul\u{0}",
            "del\u{7f}",
            "caf\u{e9} \u{1f600}",
            "line\nbreak",
        ] {
            let mut out = Vec::new();
            crate::dps::json::write_str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn initial_registration_has_no_current_hub_nor_payload() {
        let e = seed_group();
        let t = RequestTemplate::new(&e, true, &e.iot_hubs[..1]);
        let v: serde_json::Value = serde_json::from_slice(&t.body(&DeviceContext {
            registration_id: "a\"b",
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(
            v["deviceRuntimeContext"],
            serde_json::json!({"registrationId": "a\"b", "symmetricKey": {}})
        );
        assert!(v.get("individualEnrollment").is_some() && v.get("enrollmentGroup").is_none());
        assert_eq!(
            v["linkedHubs"],
            serde_json::json!(["contoso-toasters-hub-1098.azure-devices.net"])
        );
    }

    #[test]
    fn response_accepts_both_spellings() {
        let a: AllocationResponse = serde_json::from_str(r#"{"iotHubHostName":"h"}"#).unwrap();
        let b: AllocationResponse =
            serde_json::from_str(r#"{"iotHubHostname":"h","payload":{"x":1}}"#).unwrap();
        assert_eq!(a.iot_hub_host_name.as_deref(), Some("h"));
        assert_eq!(b.iot_hub_host_name.as_deref(), Some("h"));
        assert_eq!(b.payload.map(|p| p.get()), Some(r#"{"x":1}"#));
        let n: AllocationResponse =
            serde_json::from_str(r#"{"iotHubHostName":null,"initialTwin":null}"#).unwrap();
        assert_eq!(n.iot_hub_host_name, None);
        assert!(n.initial_twin.is_none());
    }
}
