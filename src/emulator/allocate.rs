//! Allocation: what runs between the 202 and the terminal status. Picks the hub (custom through
//! the webhook with the shared [`crate::webhook::client`] and DPS outcome rules; hashed, static and
//! geoLatency locally), applies the reprovision policy against the device's previous assignment
//! (dps-protocol.md §6: substatus, twin migrated or reset, old hub cleaned), writes the twin to
//! the hub, stores the record and finishes the operation.

use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{bump, hub, now_rfc3339, Device, Emulator, OpState, Record, Via};
use crate::dps::allocation::{DeviceContext, EnrollmentRecord, RequestTemplate};
use crate::dps::json::Json;
use crate::dps::outcome::Context;
use crate::dps::wire::RegistrationState;
use crate::dps::{Registration, Status};
use crate::scenario::{Allocation, HubOptions};

/// What the device's enrollment offers.
struct Offer<'a> {
    record: &'a EnrollmentRecord,
    individual: bool,
    hubs: &'a [String],
    /// The AllocationRequest with the enrollment serialised once (for `hubs` as offered).
    template: &'a RequestTemplate,
    /// Where its custom allocation goes.
    webhook: Option<&'a Arc<crate::webhook::client::WebhookClient>>,
    twin: Option<&'a Value>,
    device_id: String,
    disabled: bool,
}

impl Emulator {
    /// What the device's enrollment offers (from the enrollments it authenticated against: a
    /// registration under way keeps them even if the service API changes them meanwhile).
    fn offer(device: &Device) -> Offer<'_> {
        let live = &device.live;
        let e = live
            .enrollment
            .resolve(&device.registration_id)
            .expect("an authenticated device has an enrollment");
        let resolved = live.resolved(e.via);
        Offer {
            record: e.record,
            individual: matches!(e.via, Via::Individual(_)),
            hubs: e.offered_hubs,
            template: resolved.template,
            webhook: resolved.webhook,
            twin: e.initial_twin,
            device_id: e.device_id.to_owned(),
            disabled: e.disabled,
        }
    }

    /// Runs one allocation to its terminal state.
    pub(super) async fn allocate(
        self: Arc<Self>,
        op_id: String,
        device: Device,
        payload: Option<Value>,
    ) {
        let started = std::time::Instant::now();
        if !self.opts.assignment_delay.is_zero() {
            tokio::time::sleep(self.opts.assignment_delay).await;
        }
        let lc = device.registration_id.to_ascii_lowercase();
        let previous = {
            let st = self.state.lock().expect("state lock");
            st.registrations.get(&lc).cloned()
        };
        let before = previous.as_ref().and_then(|r| r.assigned.clone());
        let offer = Self::offer(&device);
        let registration = if offer.disabled {
            Registration {
                status: Some(Status::Disabled),
                ..Registration::default()
            }
        } else {
            // "Never reprovision": only the current hub is eligible (§5.2).
            let linked: Vec<String> = match &before {
                Some((hub, _)) if !offer.record.reprovision_policy.update_hub_assignment => {
                    vec![hub.clone()]
                }
                _ => offer.hubs.to_vec(),
            };
            match self.opts.allocation {
                Allocation::Custom => {
                    self.custom(&offer, &device, &linked, before.as_ref(), payload.as_ref())
                        .await
                }
                policy => match self.pick(policy, &linked, &lc) {
                    Some(hub) => Registration {
                        status: Some(Status::Assigned),
                        assigned_hub: Some(hub.into()),
                        device_id: Some(offer.device_id.clone()),
                        initial_twin: offer.twin.map(Json::from_value),
                        ..Registration::default()
                    },
                    None => Registration::failed(
                        crate::dps::codes::CUSTOM_ALLOCATION_HUB_NOT_SPECIFIED,
                        "No IoT hub is eligible for allocation",
                    ),
                },
            }
        };
        let now = now_rfc3339();
        let created = previous
            .as_ref()
            .and_then(|r| r.state.created_date_time_utc.clone())
            .unwrap_or_else(|| now.clone());
        let mut state = RegistrationState {
            registration_id: device.registration_id.clone(),
            created_date_time_utc: Some(created),
            status: registration
                .status
                .unwrap_or(Status::Failed)
                .as_str()
                .to_owned(),
            error_code: registration.error_code,
            error_message: registration.error_message.clone(),
            last_updated_date_time_utc: Some(now.clone()),
            etag: Some(etag()),
            ..RegistrationState::default()
        };
        let mut assigned = before.clone();
        if let (Some(Status::Assigned), Some(hub_name)) =
            (registration.status, &registration.assigned_hub)
        {
            let device_id = registration
                .device_id
                .clone()
                .unwrap_or_else(|| offer.device_id.clone());
            let policy = offer.record.reprovision_policy;
            let substatus = self.place(
                hub_name,
                &device_id,
                before.as_ref(),
                policy.migrate_device_data,
                registration.initial_twin.as_ref(),
                offer.record.capabilities.iot_edge,
                &now,
            );
            state.assigned_hub = Some(hub_name.to_string());
            state.device_id = Some(device_id.clone());
            state.substatus = Some(substatus.into());
            state.payload = registration.payload.as_ref().map(Json::value);
            assigned = Some((hub_name.to_string(), device_id));
        }
        match registration.status {
            Some(Status::Assigned) => bump(&self.counters.assigned),
            Some(Status::Disabled) => bump(&self.counters.disabled),
            _ => bump(&self.counters.failed),
        }
        if self.log {
            let what = match (&state.assigned_hub, state.error_code) {
                (Some(h), _) => format!("{} {h}", state.substatus.as_deref().unwrap_or("")),
                (None, Some(c)) => format!("{c} {}", state.error_message.as_deref().unwrap_or("")),
                _ => String::new(),
            };
            eprintln!(
                "{now} {} {} {what} ({} ms)",
                super::log_safe(&device.registration_id),
                state.status,
                started.elapsed().as_millis()
            );
        }
        {
            let mut st = self.state.lock().expect("state lock");
            let pin = previous
                .and_then(|r| r.secondary)
                .or(Some(device.secondary));
            st.registrations.insert(
                lc,
                Record {
                    state,
                    assigned,
                    secondary: pin,
                },
            );
            if let Some(op) = st.operations.get_mut(&op_id) {
                op.state = OpState::Done;
            }
            st.finished
                .push_back((std::time::Instant::now(), op_id.clone()));
        }
        self.persist();
    }

    async fn custom(
        &self,
        offer: &Offer<'_>,
        device: &Device,
        linked: &[String],
        before: Option<&(String, String)>,
        payload: Option<&Value>,
    ) -> Registration {
        let Some(client) = offer.webhook else {
            return Registration::failed(
                crate::dps::codes::CUSTOM_ALLOCATION_FAILED,
                "Custom allocation failed: no webhook is configured",
            );
        };
        let payload_json = payload.map(Value::to_string);
        let device_context = DeviceContext {
            registration_id: &device.registration_id,
            current_hub: before.map(|b| b.0.as_str()),
            current_device_id: before.map(|b| b.1.as_str()),
            payload_json: payload_json.as_deref(),
        };
        // The enrollment is serialised once per run; only "never reprovision" (a one-hub offer)
        // needs its own template.
        let body = if linked == offer.hubs {
            offer.template.body(&device_context)
        } else {
            RequestTemplate::new(offer.record, offer.individual, linked).body(&device_context)
        };
        let ctx = Context {
            linked_hubs: linked,
            device_id: &offer.device_id,
            enrollment_twin: offer.twin,
            recent: None,
        };
        client
            .allocate(&self.rules, &body, &ctx, tokio::time::Instant::now())
            .await
            .registration
    }

    /// hashed / static / geoLatency over the eligible hubs.
    fn pick(&self, policy: Allocation, linked: &[String], lc_id: &str) -> Option<String> {
        let eligible: Vec<&HubOptions> = self
            .opts
            .hubs
            .iter()
            .filter(|h| linked.iter().any(|l| l.eq_ignore_ascii_case(&h.host)))
            .collect();
        match policy {
            Allocation::Static => eligible.first().map(|h| h.host.clone()),
            Allocation::Hashed => weighted(&eligible_applied(&eligible), lc_id),
            Allocation::GeoLatency => {
                let applied = eligible_applied(&eligible);
                let best = applied.iter().map(|h| h.latency).min()?;
                let ties: Vec<&HubOptions> =
                    applied.into_iter().filter(|h| h.latency == best).collect();
                weighted(&ties, lc_id)
            }
            Allocation::Custom => None,
        }
    }

    /// Writes the device's twin to its hub and returns the substatus (dps-protocol.md §6).
    #[allow(clippy::too_many_arguments)]
    fn place(
        &self,
        hub_name: &str,
        device_id: &str,
        before: Option<&(String, String)>,
        migrate: bool,
        initial: Option<&Json>,
        iot_edge: bool,
        now: &str,
    ) -> &'static str {
        let mut hubs = self.hubs.lock().expect("hubs lock");
        let key = hub_name.to_ascii_lowercase();
        let shared = hubs
            .entry(key.clone())
            .or_insert_with(|| hub::Hub::new(hub_name))
            .intern(initial);
        let fresh = || hub::DeviceTwin {
            initial: shared.clone(),
            iot_edge,
            updated: now.to_owned(),
        };
        let (substatus, twin) = match before {
            None => ("initialAssignment", fresh()),
            Some((old, old_id)) if old.eq_ignore_ascii_case(hub_name) => {
                let kept = hubs.get(&key).and_then(|h| h.devices.get(old_id)).cloned();
                (
                    "reprovisionedToInitialAssignment",
                    kept.unwrap_or_else(fresh),
                )
            }
            Some((old, old_id)) => {
                let moved = hubs
                    .get_mut(&old.to_ascii_lowercase())
                    .and_then(|h| h.devices.remove(old_id));
                if migrate {
                    ("deviceDataMigrated", moved.unwrap_or_else(fresh))
                } else {
                    ("deviceDataReset", fresh())
                }
            }
        };
        hubs.entry(key)
            .or_insert_with(|| hub::Hub::new(hub_name))
            .devices
            .insert(device_id.to_owned(), twin);
        substatus
    }
}

fn eligible_applied<'a>(hubs: &[&'a HubOptions]) -> Vec<&'a HubOptions> {
    hubs.iter()
        .copied()
        .filter(|h| h.apply_allocation_policy)
        .collect()
}

/// Weighted choice by SHA-256 of the lower-cased registration ID: deterministic per device, in
/// proportion to `allocationWeight`. Azure's hash is UNCONFIRMED; this is our choice.
fn weighted(hubs: &[&HubOptions], lc_id: &str) -> Option<String> {
    let total: u64 = hubs.iter().map(|h| u64::from(h.weight)).sum();
    if total == 0 {
        return None;
    }
    let d = Sha256::digest(lc_id.as_bytes());
    let x = u64::from_be_bytes(d[..8].try_into().expect("8 bytes")) % total;
    let mut acc = 0;
    for h in hubs {
        acc += u64::from(h.weight);
        if x < acc {
            return Some(h.host.clone());
        }
    }
    None
}

/// base64 of a quoted Cosmos-style etag, as DPS shows them.
fn etag() -> String {
    use base64::Engine as _;
    let r: [u8; 8] = rand::random();
    let h = hex::encode(r);
    base64::engine::general_purpose::STANDARD.encode(format!(
        "\"{}-0000-0300-0000-{}\"",
        &h[..8],
        &h[4..16]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn weighted_hash_is_deterministic_and_proportional() {
        let a = HubOptions {
            host: "a".into(),
            weight: 1,
            apply_allocation_policy: true,
            latency: Duration::ZERO,
        };
        let b = HubOptions {
            host: "b".into(),
            weight: 3,
            ..a
        };
        let hubs = [&a, &b];
        let n = 4000;
        let to_b = (0..n)
            .filter(|i| weighted(&hubs, &format!("dev{i}")).as_deref() == Some("b"))
            .count();
        assert!((2800..3200).contains(&to_b), "{to_b}");
        assert_eq!(weighted(&hubs, "dev1"), weighted(&hubs, "dev1"));
    }
}
