//! The service side of DPS and IoT Hub as protocol facts (service-apis.md): the DPS service API's
//! routes and documents (enrollment groups, individual enrollments, registration records), the
//! IoT Hub registry's (device identities, bulk import of up to 100), their error bodies, and the
//! conversions between an enrollment document and the enrollment the resolver uses. The emulator
//! serves these shapes and `loadtest setup`/`cleanup` send them: one copy for both. Pure.
//!
//! UNCONFIRMED where the references are silent, our choices: a PUT without `If-Match` creates or
//! overwrites (an `If-Match` that does not match is 412); registration-state query pages are
//! continued by an `x-ms-continuation` token that is the next offset.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::allocation::{
    mask_url, Attestation, Capabilities, CustomAllocationDefinition, EnrollmentRecord,
    ReprovisionPolicy,
};
use super::enrollment::{Group, Individual};
use crate::secret::Secret;

/// The DPS service API version these shapes follow.
pub const DPS_API_VERSION: &str = "2021-10-01";
/// The IoT Hub registry API version.
pub const HUB_API_VERSION: &str = "2021-04-12";
/// The shared access policy of a DPS service connection string.
pub const DPS_POLICY: &str = "provisioningserviceowner";
/// Devices per bulk registry call at most.
pub const BULK_MAX: usize = 100;

/// A service request, matched by method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceRoute {
    /// `PUT|GET|DELETE /enrollmentGroups/{id}`.
    Group {
        /// The method.
        method: Method,
        /// The group ID.
        id: String,
    },
    /// `PUT|GET|DELETE /enrollments/{registrationId}`.
    Individual {
        /// The method.
        method: Method,
        /// The registration ID.
        id: String,
    },
    /// `GET|DELETE /registrations/{id}`.
    Registration {
        /// The method.
        method: Method,
        /// The registration ID.
        id: String,
    },
    /// `POST /registrations/{groupId}/query`.
    GroupRegistrations {
        /// The group ID.
        group: String,
    },
    /// IoT Hub `GET|PUT|DELETE /devices/{id}`.
    Device {
        /// The method.
        method: Method,
        /// The device ID.
        id: String,
    },
    /// IoT Hub `GET /devices` (list) and `POST /devices` (bulk import).
    Devices {
        /// The method.
        method: Method,
    },
}

/// The methods the service routes take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
    /// POST.
    Post,
}

/// Matches a service route (query ignored, segments URL-decoded).
pub fn route(method: &str, path: &str) -> Option<ServiceRoute> {
    let m = match method {
        "GET" => Method::Get,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "POST" => Method::Post,
        _ => return None,
    };
    // `/devices/` is the list (the Node SDK asks for it that way).
    let path = path.split('?').next().unwrap_or(path);
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let seg = super::wire::segments(path);
    let seg: Vec<&str> = seg.iter().map(String::as_str).collect();
    let one = |s: &str| s.to_owned();
    Some(match (m, seg.as_slice()) {
        (Method::Get | Method::Put | Method::Delete, ["enrollmentGroups", id]) => {
            ServiceRoute::Group {
                method: m,
                id: one(id),
            }
        }
        (Method::Get | Method::Put | Method::Delete, ["enrollments", id]) => {
            ServiceRoute::Individual {
                method: m,
                id: one(id),
            }
        }
        (Method::Get | Method::Delete, ["registrations", id]) => ServiceRoute::Registration {
            method: m,
            id: one(id),
        },
        (Method::Post, ["registrations", group, "query"]) => {
            ServiceRoute::GroupRegistrations { group: one(group) }
        }
        (Method::Get | Method::Put | Method::Delete, ["devices", id]) => ServiceRoute::Device {
            method: m,
            id: one(id),
        },
        (Method::Get | Method::Post, ["devices"]) => ServiceRoute::Devices { method: m },
        _ => return None,
    })
}

/// `attestation` of a symmetric-key enrollment, with its keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttestationDoc {
    /// `symmetricKey`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The keys (DPS generates them when absent; so does the emulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetric_key: Option<SymmetricKey>,
}

/// `symmetricKey`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SymmetricKey {
    /// Primary key, base64.
    #[serde(default)]
    pub primary_key: Option<String>,
    /// Secondary key, base64.
    #[serde(default)]
    pub secondary_key: Option<String>,
}

/// `customAllocationDefinition` as the service API takes it (the URL with its function key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomAllocationDoc {
    /// The webhook URL.
    pub webhook_url: String,
    /// The enrollment schema version sent to it.
    pub api_version: String,
}

/// `reprovisionPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReprovisionDoc {
    /// Re-evaluate the hub on re-registration.
    pub update_hub_assignment: bool,
    /// Migrate twin and device data when the hub changes.
    pub migrate_device_data: bool,
}

/// An enrollment document: an `EnrollmentGroup` (with `enrollmentGroupId`) or an
/// `IndividualEnrollment` (with `registrationId`), as PUT and as GET returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentDoc {
    /// Group: its ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_group_id: Option<String>,
    /// Individual: the registration ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_id: Option<String>,
    /// Individual: the device ID (default: the registration ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Attestation with keys.
    pub attestation: AttestationDoc,
    /// `capabilities`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Value>,
    /// Hubs this enrollment may be assigned to (empty: every linked hub).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub iot_hubs: Vec<String>,
    /// `custom`, `hashed`, `static`, `geoLatency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_policy: Option<String>,
    /// The webhook, for `custom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_allocation_definition: Option<CustomAllocationDoc>,
    /// `reprovisionPolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprovision_policy: Option<ReprovisionDoc>,
    /// `initialTwin` (`tags`, `properties.desired`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_twin: Option<Value>,
    /// `enabled` / `disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_status: Option<String>,
    /// Set by the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Set by the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date_time_utc: Option<String>,
    /// Set by the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_date_time_utc: Option<String>,
}

impl EnrollmentDoc {
    /// The document with its keys and the webhook URL's query masked (for `--dry-run` and logs).
    pub fn masked(&self) -> Self {
        let mut d = self.clone();
        if let Some(k) = &mut d.attestation.symmetric_key {
            for key in [&mut k.primary_key, &mut k.secondary_key]
                .into_iter()
                .flatten()
            {
                *key = "****".into();
            }
        }
        if let Some(c) = &mut d.custom_allocation_definition {
            c.webhook_url = mask_url(&c.webhook_url);
        }
        d
    }

    /// Why a document cannot be stored (the service's 400 message), if so.
    pub fn invalid(&self) -> Option<String> {
        if self.attestation.kind != "symmetricKey" {
            return Some(format!(
                "attestation type `{}` is not supported here (symmetricKey only)",
                self.attestation.kind
            ));
        }
        let policy = self.allocation_policy.as_deref().unwrap_or("hashed");
        if policy.eq_ignore_ascii_case("custom") {
            match &self.custom_allocation_definition {
                None => {
                    return Some(
                        "A CustomAllocationDefinition is required when the allocation policy is set to 'Custom'"
                            .into(),
                    )
                }
                Some(c) if !(c.webhook_url.starts_with("https://") || c.webhook_url.starts_with("http://")) => {
                    return Some(format!("webhookUrl `{}` is not an http(s) URL", mask_url(&c.webhook_url)))
                }
                Some(_) => {}
            }
        }
        if let Some(s) = &self.provisioning_status {
            if !s.eq_ignore_ascii_case("enabled") && !s.eq_ignore_ascii_case("disabled") {
                return Some(format!("provisioningStatus `{s}`: enabled or disabled"));
            }
        }
        None
    }

    fn record(&self, individual: bool) -> EnrollmentRecord {
        EnrollmentRecord {
            enrollment_group_id: (!individual)
                .then(|| self.enrollment_group_id.clone())
                .flatten(),
            registration_id: individual.then(|| self.registration_id.clone()).flatten(),
            device_id: self.device_id.clone(),
            attestation: Attestation {
                kind: "symmetricKey".into(),
            },
            capabilities: Capabilities {
                iot_edge: self
                    .capabilities
                    .as_ref()
                    .and_then(|c| c.get("iotEdge"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            },
            etag: self.etag.clone().unwrap_or_default(),
            provisioning_status: self
                .provisioning_status
                .clone()
                .unwrap_or_else(|| "enabled".into()),
            reprovision_policy: self.reprovision_policy.map_or_else(
                ReprovisionPolicy::default,
                |r| ReprovisionPolicy {
                    update_hub_assignment: r.update_hub_assignment,
                    migrate_device_data: r.migrate_device_data,
                },
            ),
            created_date_time_utc: self.created_date_time_utc.clone().unwrap_or_default(),
            last_updated_date_time_utc: self.last_updated_date_time_utc.clone().unwrap_or_default(),
            allocation_policy: self
                .allocation_policy
                .clone()
                .unwrap_or_else(|| "custom".into()),
            iot_hubs: self.iot_hubs.clone(),
            custom_allocation_definition: self.custom_allocation_definition.as_ref().map_or_else(
                || CustomAllocationDefinition {
                    webhook_url: String::new(),
                    api_version: String::new(),
                },
                |c| CustomAllocationDefinition {
                    webhook_url: mask_url(&c.webhook_url),
                    api_version: c.api_version.clone(),
                },
            ),
        }
    }

    fn keys(&self) -> (Secret, Option<Secret>) {
        let k = self.attestation.symmetric_key.as_ref();
        (
            Secret::new(k.and_then(|k| k.primary_key.clone()).unwrap_or_default()),
            k.and_then(|k| k.secondary_key.clone()).map(Secret::new),
        )
    }

    fn offered(&self, linked: &[String]) -> Vec<String> {
        if self.iot_hubs.is_empty() {
            linked.to_vec()
        } else {
            self.iot_hubs.clone()
        }
    }

    /// The enrollment group the resolver uses (keys decoded by [`super::enrollment::Enrollment`]).
    pub fn group(&self, linked: &[String]) -> Group {
        let (primary_key, secondary_key) = self.keys();
        Group {
            record: self.record(false),
            primary_key,
            secondary_key,
            initial_twin: self.initial_twin.clone(),
            offered_hubs: self.offered(linked),
        }
    }

    /// The individual enrollment the resolver uses.
    pub fn individual(&self, linked: &[String]) -> Individual {
        let (primary_key, secondary_key) = self.keys();
        let id = self.registration_id.clone().unwrap_or_default();
        Individual {
            device_id: self.device_id.clone().unwrap_or_else(|| id.clone()),
            registration_id: id,
            record: self.record(true),
            primary_key,
            secondary_key,
            initial_twin: self.initial_twin.clone(),
            offered_hubs: self.offered(linked),
        }
    }

    /// The document of a resolver group: `webhook_url` is the full URL (with its key).
    pub fn of_group(g: &Group, webhook_url: &str) -> Self {
        Self::of(
            &g.record,
            (&g.primary_key, g.secondary_key.as_ref()),
            g.initial_twin.as_ref(),
            &g.offered_hubs,
            webhook_url,
        )
    }

    /// The document of a resolver individual enrollment.
    pub fn of_individual(i: &Individual, webhook_url: &str) -> Self {
        Self {
            registration_id: Some(i.registration_id.clone()),
            device_id: Some(i.device_id.clone()),
            ..Self::of(
                &i.record,
                (&i.primary_key, i.secondary_key.as_ref()),
                i.initial_twin.as_ref(),
                &i.offered_hubs,
                webhook_url,
            )
        }
    }

    fn of(
        r: &EnrollmentRecord,
        keys: (&Secret, Option<&Secret>),
        twin: Option<&Value>,
        hubs: &[String],
        webhook_url: &str,
    ) -> Self {
        Self {
            enrollment_group_id: r.enrollment_group_id.clone(),
            registration_id: None,
            device_id: None,
            attestation: AttestationDoc {
                kind: "symmetricKey".into(),
                symmetric_key: Some(SymmetricKey {
                    primary_key: Some(keys.0.expose().to_owned()),
                    secondary_key: keys.1.map(|k| k.expose().to_owned()),
                }),
            },
            capabilities: Some(serde_json::json!({ "iotEdge": r.capabilities.iot_edge })),
            iot_hubs: hubs.to_vec(),
            allocation_policy: Some(r.allocation_policy.clone()),
            custom_allocation_definition: Some(CustomAllocationDoc {
                webhook_url: webhook_url.to_owned(),
                api_version: r.custom_allocation_definition.api_version.clone(),
            }),
            reprovision_policy: Some(ReprovisionDoc {
                update_hub_assignment: r.reprovision_policy.update_hub_assignment,
                migrate_device_data: r.reprovision_policy.migrate_device_data,
            }),
            initial_twin: twin.cloned(),
            provisioning_status: Some(r.provisioning_status.clone()),
            etag: None,
            created_date_time_utc: None,
            last_updated_date_time_utc: None,
        }
    }
}

/// A DPS service error body (`ProvisioningServiceErrorDetails`).
pub fn dps_error(code: u32, message: &str, tracking_id: &str, now: &str) -> Value {
    serde_json::json!({
        "errorCode": code,
        "trackingId": tracking_id,
        "message": message,
        "timestampUtc": now,
        "info": {},
    })
}

/// An IoT Hub error body: `{"Message":"ErrorCode:<Code>;<text>","ExceptionMessage":"Tracking ID:…"}`.
pub fn hub_error(code: &str, message: &str, tracking_id: &str, now: &str) -> Value {
    serde_json::json!({
        "Message": format!("ErrorCode:{code};{message}"),
        "ExceptionMessage": format!("Tracking ID:{tracking_id}-G:0-TimeStamp:{now}"),
    })
}

/// One entry of a bulk registry call (`ExportImportDevice`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportDevice {
    /// Device ID.
    pub id: String,
    /// `create`, `update`, `createOrUpdate`, `delete`, `deleteIfMatchETag`, …
    pub import_mode: String,
    /// For the `…IfMatchETag` modes.
    #[serde(default, rename = "eTag", skip_serializing_if = "Option::is_none")]
    pub e_tag: Option<String>,
}

/// The answer to a bulk registry call (`BulkRegistryOperationResult`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkResult {
    /// Every entry succeeded.
    pub is_successful: bool,
    /// The entries that did not.
    pub errors: Vec<BulkError>,
    /// Warnings (none here).
    pub warnings: Vec<Value>,
}

/// One failed entry of a bulk call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkError {
    /// Device ID.
    pub device_id: String,
    /// e.g. `DeviceNotFound`.
    pub error_code: String,
    /// The text.
    pub error_status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route("PUT", "/enrollmentGroups/contoso?api-version=2021-10-01"),
            Some(ServiceRoute::Group {
                method: Method::Put,
                id: "contoso".into()
            })
        );
        assert_eq!(
            route("POST", "/registrations/g/query"),
            Some(ServiceRoute::GroupRegistrations { group: "g".into() })
        );
        assert_eq!(
            route("DELETE", "/devices/a%20b"),
            Some(ServiceRoute::Device {
                method: Method::Delete,
                id: "a b".into()
            })
        );
        assert_eq!(
            route("POST", "/devices"),
            Some(ServiceRoute::Devices {
                method: Method::Post
            })
        );
        // The device API's status lookup is not a service route.
        assert_eq!(route("POST", "/0ne00000A0A/registrations/d"), None);
    }

    #[test]
    fn a_document_round_trips_and_masks_its_secrets() {
        let text = r#"{"enrollmentGroupId":"g","attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"cHJpbWFyeQ==","secondaryKey":"c2Vjb25kYXJ5"}},
            "allocationPolicy":"custom","customAllocationDefinition":{"webhookUrl":"https://f.example/api/x?code=SECRET","apiVersion":"2021-10-01"},
            "iotHubs":["h1"],"reprovisionPolicy":{"updateHubAssignment":true,"migrateDeviceData":false},"provisioningStatus":"enabled"}"#;
        let d: EnrollmentDoc = serde_json::from_str(text).unwrap();
        assert_eq!(d.invalid(), None);
        let g = d.group(&["h1".into(), "h2".into()]);
        assert_eq!(g.offered_hubs, vec!["h1".to_owned()]);
        assert_eq!(
            g.record.custom_allocation_definition.webhook_url,
            "https://f.example/api/x?****"
        );
        assert!(!g.record.reprovision_policy.migrate_device_data);
        let back = EnrollmentDoc::of_group(&g, "https://f.example/api/x?code=SECRET");
        assert_eq!(back.attestation, d.attestation);
        let shown = serde_json::to_string(&back.masked()).unwrap();
        assert!(
            !shown.contains("SECRET") && !shown.contains("cHJpbWFyeQ=="),
            "{shown}"
        );
        let no_webhook = EnrollmentDoc {
            custom_allocation_definition: None,
            ..d
        };
        assert!(no_webhook
            .invalid()
            .unwrap()
            .contains("CustomAllocationDefinition"));
    }
}
