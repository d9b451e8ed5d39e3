//! The serde mirror of a scenario file: exactly the TOML, `deny_unknown_fields` everywhere, spans
//! kept on every value that validation may reject so its error can point at the line.
//! Nothing here is interpreted; `validate.rs` turns it into typed values.

#![allow(missing_docs)]

use serde::Deserialize;
use toml::Spanned as S;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Scenario {
    pub name: S<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub target: Target,
    #[serde(default)]
    pub webhook: Webhook,
    #[serde(default)]
    pub dps: Dps,
    #[serde(default)]
    pub enrollment: Option<S<Enrollment>>,
    #[serde(default)]
    pub individual_enrollments: Vec<Individual>,
    #[serde(default)]
    pub devices: Vec<Class>,
    #[serde(default)]
    pub load: Load,
    #[serde(default)]
    pub report: Report,
    #[serde(default)]
    pub check: Option<Check>,
    #[serde(default)]
    pub emulator: Option<Emulator>,
    #[serde(default)]
    pub capacity: Option<Capacity>,
    /// Free-form; accepted here, validated from the document's spans (`gate.rs`).
    #[serde(default)]
    #[allow(dead_code)]
    pub thresholds: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Check {
    pub sample: Option<S<Sample>>,
    pub rate: Option<S<f64>>,
    pub snapshot: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Sample {
    Count(u64),
    Word(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Target {
    pub mode: Option<S<String>>,
    pub url: Option<S<String>>,
    pub function_key: Option<S<String>>,
    pub ca: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub endpoint: Option<S<String>>,
    pub id_scope: Option<S<String>>,
    pub tls: Option<S<String>>,
    pub hub_connection_strings: Option<Vec<S<String>>>,
    pub device_timeout: Option<S<String>>,
    pub poll_floor: Option<S<String>>,
    pub poll_cap: Option<S<String>>,
    pub backoff_initial: Option<S<String>>,
    pub backoff_max: Option<S<String>>,
    pub verify_twins: Option<bool>,
    pub twin_rate: Option<S<f64>>,
    pub source_addrs: Option<S<SourceAddrs>>,
    pub connect_timeout: Option<S<String>>,
    pub connect_retries: Option<u32>,
    pub tls_chain_cache: Option<bool>,
}

/// `source_addrs = 8`, `["127.0.0.2", "127.0.0.3"]` or `false`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum SourceAddrs {
    Count(i64),
    List(Vec<String>),
    Switch(bool),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Webhook {
    pub policy: Option<S<String>>,
    pub echo_payload: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Dps {
    pub retry_scale: Option<S<f64>>,
    pub retry_count: Option<u32>,
    pub retry_initial: Option<S<String>>,
    pub retry_increment: Option<S<String>>,
    pub no_answer: Option<S<String>>,
    pub no_answer_code: Option<u32>,
    pub unlinked_hub_code: Option<u32>,
    pub malformed_code: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Enrollment {
    pub group_id: Option<S<String>>,
    pub primary_key: Option<S<String>>,
    pub secondary_key: Option<S<String>>,
    pub api_version: Option<String>,
    pub iot_hubs: Option<S<Vec<String>>>,
    pub linked_hubs: Option<S<Vec<String>>>,
    pub reprovision: Option<Reprovision>,
    pub iot_edge: Option<bool>,
    pub provisioning_status: Option<S<String>>,
    pub initial_twin: Option<Twin>,
    pub created: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Reprovision {
    pub update_hub_assignment: bool,
    pub migrate_device_data: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Individual {
    pub registration_id: S<String>,
    pub primary_key: S<String>,
    pub secondary_key: Option<S<String>>,
    pub device_id: Option<String>,
    pub provisioning_status: Option<S<String>>,
    pub iot_hubs: Option<S<Vec<String>>>,
    pub initial_twin: Option<Twin>,
    pub reprovision: Option<Reprovision>,
    pub iot_edge: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Class {
    pub class: S<String>,
    pub id: S<String>,
    pub count: Option<S<u64>>,
    pub range: Option<S<[u64; 2]>>,
    pub payload: Option<S<toml::Table>>,
    pub current: Option<Current>,
    pub expect: S<Expect>,
    pub fault: Option<S<Fault>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Current {
    pub hub: String,
    pub device_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Expect {
    pub status: S<String>,
    pub hub: Option<String>,
    pub device_id: Option<String>,
    pub error_code: Option<u32>,
    pub error_message: Option<String>,
    pub twin: Option<Twin>,
    pub payload: Option<toml::Table>,
    pub substatus: Option<S<String>>,
    pub substatus_again: Option<S<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Twin {
    pub tags: Option<toml::Table>,
    pub desired: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Fault {
    pub status: Option<S<u16>>,
    pub body: Option<String>,
    pub hub: Option<S<String>>,
    pub malformed: Option<bool>,
    pub delay: Option<S<String>>,
    pub fraction: Option<S<f64>>,
    pub first_calls: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Rate {
    PerSecond(f64),
    Word(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Load {
    pub rate: Option<S<Rate>>,
    pub connections: Option<S<u32>>,
    pub duration: Option<S<String>>,
    pub count: Option<S<u64>>,
    pub stages: Option<Vec<Stage>>,
    pub max_in_flight: Option<S<u32>>,
    pub grace: Option<S<String>>,
    pub rounds: Option<S<u32>>,
    pub search: Option<Search>,
    pub lanes: Option<S<u32>>,
    pub granularity: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Search {
    pub start: Option<S<f64>>,
    pub factor: Option<S<f64>>,
    pub step: Option<S<f64>>,
    pub hold: Option<S<String>>,
    pub max: Option<S<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Stage {
    pub to: S<f64>,
    pub over: S<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Report {
    pub out: Option<String>,
    pub examples: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Emulator {
    pub id_scope: Option<S<String>>,
    pub allocation: Option<S<String>>,
    pub retry_after: Option<S<u32>>,
    pub assignment_delay: Option<S<String>>,
    pub immediate: Option<bool>,
    #[serde(default)]
    pub hubs: Vec<EmulatorHub>,
    pub throttle: Option<Throttle>,
    pub admission: Option<Admission>,
    pub persist: Option<String>,
    pub key_pinning: Option<bool>,
    pub sas_skew: Option<S<String>>,
    pub webhook: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmulatorHub {
    pub host: S<String>,
    pub weight: Option<S<u32>>,
    pub apply_allocation_policy: Option<bool>,
    pub latency: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Throttle {
    pub registrations_per_minute: Option<S<u32>>,
    pub polls_per_10s: Option<S<u32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Admission {
    pub registrations_per_second: Option<S<u32>>,
    pub in_progress: Option<S<u32>>,
    pub retry_after: Option<S<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Capacity {
    pub fleet: Option<u64>,
    pub dps_registrations_per_minute: Option<S<f64>>,
    pub dps_instances: Option<u32>,
    pub hub_tier: Option<S<String>>,
    pub hub_units: Option<u32>,
    pub webhook_instances: Option<u32>,
    pub tiers: Option<Tiers>,
}

/// `[capacity.tiers]`: overrides of what each IoT Hub tier offers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Tiers {
    #[serde(rename = "S1")]
    pub s1: Option<S<TierOffer>>,
    #[serde(rename = "S2")]
    pub s2: Option<S<TierOffer>>,
    #[serde(rename = "S3")]
    pub s3: Option<S<TierOffer>>,
}

/// One tier's overrides.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TierOffer {
    pub max_units: Option<u32>,
    pub registry_per_minute: Option<f64>,
    pub usd_per_unit_month: Option<f64>,
}
