//! The emulator's IoT hub registry API (service-apis.md): device identities by ID (get, put,
//! delete), listing, and bulk import of up to 100 per call, with the registry's error shapes. The
//! hub and its SAS are picked by [`super::service`]; this only applies a request to one hub's
//! devices.

use serde_json::{json, Value};

use super::hub::{DeviceTwin, Hub};
use super::now_rfc3339;
use super::service::{ServiceReply, ServiceRequest};
use crate::dps::service::{BulkError, BulkResult, ImportDevice, Method, BULK_MAX};

/// A device identity as the registry returns it (no keys: DPS-provisioned devices carry theirs).
fn identity(id: &str, d: &DeviceTwin) -> Value {
    json!({
        "deviceId": id,
        "generationId": format!("{:018}", id.len()),
        "etag": "AAAAAAAAAAE=",
        "connectionState": "Disconnected",
        "status": "enabled",
        "statusReason": null,
        "connectionStateUpdatedTime": "0001-01-01T00:00:00Z",
        "statusUpdatedTime": d.updated,
        "lastActivityTime": "0001-01-01T00:00:00Z",
        "cloudToDeviceMessageCount": 0,
        "authentication": {
            "symmetricKey": { "primaryKey": null, "secondaryKey": null },
            "x509Thumbprint": { "primaryThumbprint": null, "secondaryThumbprint": null },
            "type": "sas"
        },
        "capabilities": { "iotEdge": d.iot_edge }
    })
}

fn not_found(id: &str) -> ServiceReply {
    ServiceReply::hub(
        404,
        "DeviceNotFound",
        &format!("Device {id} not registered"),
    )
}

fn created(body: &[u8]) -> DeviceTwin {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    DeviceTwin {
        initial: None,
        iot_edge: v
            .pointer("/capabilities/iotEdge")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        updated: now_rfc3339(),
    }
}

/// One device identity: get, put (create if missing) or delete; the bool tells whether the hub
/// changed.
pub(super) fn device(
    hub: &mut Hub,
    method: Method,
    id: &str,
    r: &ServiceRequest<'_>,
) -> (ServiceReply, bool) {
    match method {
        Method::Get => match hub.devices.get(id) {
            Some(d) => (ServiceReply::json(200, &identity(id, d)), false),
            None => (not_found(id), false),
        },
        Method::Put => {
            let d = hub
                .devices
                .entry(id.to_owned())
                .or_insert_with(|| created(r.body));
            (ServiceReply::json(200, &identity(id, d)), true)
        }
        Method::Delete => match hub.devices.remove(id) {
            Some(_) => (ServiceReply::empty(204), true),
            None => (not_found(id), false),
        },
        Method::Post => (
            ServiceReply::hub(405, "InvalidOperation", "Method not allowed"),
            false,
        ),
    }
}

/// The registry: list (`top`, at most 1,000) or bulk import of up to [`BULK_MAX`] devices; the
/// bool tells whether the hub changed.
pub(super) fn devices(
    hub: &mut Hub,
    method: Method,
    r: &ServiceRequest<'_>,
) -> (ServiceReply, bool) {
    match method {
        Method::Get => {
            let mut all: Vec<_> = hub.devices.iter().collect();
            all.sort_unstable_by_key(|(id, _)| *id);
            let list: Vec<Value> = all
                .into_iter()
                .take(r.top.unwrap_or(1000).min(1000))
                .map(|(id, d)| identity(id, d))
                .collect();
            (ServiceReply::json(200, &list), false)
        }
        Method::Post => {
            let batch: Vec<ImportDevice> = match serde_json::from_slice(r.body) {
                Ok(b) => b,
                Err(e) => {
                    return (
                        ServiceReply::hub(
                            400,
                            "ArgumentInvalid",
                            &format!("The body is not an array of devices: {e}"),
                        ),
                        false,
                    )
                }
            };
            if batch.len() > BULK_MAX {
                return (
                    ServiceReply::hub(
                        400,
                        "TooManyDevices",
                        &format!(
                            "Too many devices: {} in one call, at most {BULK_MAX}",
                            batch.len()
                        ),
                    ),
                    false,
                );
            }
            let mut errors = Vec::new();
            let mut changed = false;
            for d in &batch {
                let mode = d.import_mode.to_ascii_lowercase();
                let ok = match mode.as_str() {
                    "delete" | "deleteifmatchetag" => hub.devices.remove(&d.id).is_some(),
                    "create"
                    | "createorupdate"
                    | "createorupdateifmatchetag"
                    | "update"
                    | "updateifmatchetag" => {
                        hub.devices
                            .entry(d.id.clone())
                            .or_insert_with(|| created(b"{}"));
                        true
                    }
                    _ => {
                        errors.push(BulkError {
                            device_id: d.id.clone(),
                            error_code: "ArgumentInvalid".into(),
                            error_status: format!("unknown importMode `{}`", d.import_mode),
                        });
                        continue;
                    }
                };
                if ok {
                    changed = true;
                } else {
                    errors.push(BulkError {
                        device_id: d.id.clone(),
                        error_code: "DeviceNotFound".into(),
                        error_status: format!("Device {} not registered", d.id),
                    });
                }
            }
            let result = BulkResult {
                is_successful: errors.is_empty(),
                errors,
                warnings: Vec::new(),
            };
            let status = if result.is_successful { 200 } else { 400 };
            (ServiceReply::json(status, &result), changed)
        }
        Method::Put | Method::Delete => (
            ServiceReply::hub(405, "InvalidOperation", "Method not allowed"),
            false,
        ),
    }
}
