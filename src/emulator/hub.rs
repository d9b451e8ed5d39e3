//! The emulated IoT hubs: one in-memory device registry per linked hub, holding each assigned
//! device's twin, and the hub's `iothubowner` key so the twin API can be read with a service SAS
//! exactly as on a real hub (dps-protocol.md §9). No MQTT/AMQP device side: devices never connect
//! to these hubs, only DPS writes and verifiers read.

use super::shards::Sharded;
use crate::dps::json::Json;
use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The policy name of the generated connection strings.
pub const POLICY: &str = "iothubowner";

/// One hub.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hub {
    /// Host name.
    pub host: String,
    /// `iothubowner` key, base64.
    pub key: String,
    /// Device ID → twin.
    pub devices: Sharded<DeviceTwin>,
    /// Distinct initial twins, shared by the devices that got them (memory stays small with
    /// hundreds of thousands of devices carrying the same twin).
    #[serde(skip)]
    interned: HashMap<String, Arc<Value>>,
}

/// A device on a hub: what its twin is made from. The full twin JSON is built when read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceTwin {
    /// The initial twin (`tags`, `properties.desired`).
    pub initial: Option<Arc<Value>>,
    /// `capabilities.iotEdge`.
    pub iot_edge: bool,
    /// When the desired properties were set.
    pub updated: String,
}

impl DeviceTwin {
    /// The twin as the hub's twin API returns it.
    pub fn render(&self, device_id: &str) -> Value {
        new_twin(
            device_id,
            self.initial.as_deref(),
            self.iot_edge,
            &self.updated,
        )
    }
}

impl Hub {
    /// A hub with a fresh random key.
    pub fn new(host: &str) -> Self {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        Self {
            host: host.to_owned(),
            key: B64.encode(key),
            devices: Sharded::default(),
            interned: HashMap::new(),
        }
    }

    /// The shared copy of an initial twin, keyed by its text (a fleet's twins repeat: each is
    /// parsed once per hub).
    pub fn intern(&mut self, twin: Option<&Json>) -> Option<Arc<Value>> {
        let t = twin?;
        if let Some(v) = self.interned.get(t.as_str()) {
            return Some(v.clone());
        }
        let v = Arc::new(t.value());
        self.interned.insert(t.as_str().to_owned(), v.clone());
        Some(v)
    }

    /// `HostName=…;SharedAccessKeyName=iothubowner;SharedAccessKey=…`.
    pub fn connection_string(&self) -> String {
        format!(
            "HostName={};SharedAccessKeyName={POLICY};SharedAccessKey={}",
            self.host, self.key
        )
    }

    /// Checks a service SAS for this hub: `sr` is the host name, `skn` the policy, signed with its
    /// key, not expired (with `skew`).
    pub fn authorize(&self, token: &str, now: u64, skew: u64) -> Result<(), &'static str> {
        crate::sas::verify_service_token(token, &self.host, POLICY, &self.key, now, skew)
    }
}

/// A fresh device twin as the hub's twin API returns it, with the initial twin's tags and
/// desired properties.
pub fn new_twin(device_id: &str, initial: Option<&Value>, iot_edge: bool, now: &str) -> Value {
    let tags = initial
        .and_then(|t| t.get("tags"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut desired = initial
        .and_then(|t| t.pointer("/properties/desired"))
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    desired["$metadata"] = json!({ "$lastUpdated": now });
    desired["$version"] = json!(1);
    json!({
        "deviceId": device_id,
        "etag": "AAAAAAAAAAE=",
        "deviceEtag": "MA==",
        "status": "enabled",
        "statusUpdateTime": "0001-01-01T00:00:00Z",
        "connectionState": "Disconnected",
        "lastActivityTime": "0001-01-01T00:00:00Z",
        "cloudToDeviceMessageCount": 0,
        "authenticationType": "sas",
        "x509Thumbprint": { "primaryThumbprint": null, "secondaryThumbprint": null },
        "modelId": "",
        "version": 2,
        "tags": tags,
        "properties": {
            "desired": desired,
            "reported": { "$metadata": { "$lastUpdated": now }, "$version": 1 }
        },
        "capabilities": { "iotEdge": iot_edge }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sas::service_token;

    #[test]
    fn service_sas_accepted_only_for_this_hub_and_key() {
        let hub = Hub::new("h1.azure-devices.net");
        let tok = |host: &str, key: &str, se: u64| service_token(host, POLICY, key, se).unwrap();
        let ok = tok("h1.azure-devices.net", &hub.key, 2_000_000_000);
        assert_eq!(hub.authorize(&ok, 1_000, 0), Ok(()));
        let other = tok("h2.azure-devices.net", &hub.key, 2_000_000_000);
        assert!(hub.authorize(&other, 1_000, 0).is_err());
        let expired = tok("h1.azure-devices.net", &hub.key, 10);
        assert_eq!(
            hub.authorize(&expired, 1_000, 0),
            Err("the token has expired")
        );
        let wrong = tok(
            "h1.azure-devices.net",
            &B64.encode([1u8; 32]),
            2_000_000_000,
        );
        assert!(hub.authorize(&wrong, 1_000, 0).is_err());
        assert!(hub.connection_string().starts_with(
            "HostName=h1.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey="
        ));
    }

    #[test]
    fn twin_carries_tags_and_desired() {
        let t = new_twin(
            "d",
            Some(&json!({"tags": {"a": 1}, "properties": {"desired": {"s": "on"}}})),
            false,
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(t["tags"], json!({"a": 1}));
        assert_eq!(t["properties"]["desired"]["s"], "on");
        assert_eq!(t["properties"]["desired"]["$version"], 1);
    }
}
