//! Validation of `[enrollment]` and `[[individual_enrollments]]`: keys, hubs, statuses and the
//! enrollment records DPS sends to the webhook (without keys). Part of the raw → typed pass.

use std::collections::HashSet;

use serde_json::Value;
use toml::Spanned;

use super::error::ScenarioError;
use super::validate::{table_json, Validator};
use super::{raw, Class, Enrollment, Group, Individual};
use crate::device::template::IdTemplate;
use crate::dps::allocation::{
    mask_url, Attestation, Capabilities, CustomAllocationDefinition, EnrollmentRecord,
    ReprovisionPolicy,
};

type Result<T> = std::result::Result<T, ScenarioError>;

const DEFAULT_CREATED: &str = "2022-08-03T17:15:10.8464255Z";

impl Validator<'_> {
    pub(super) fn enrollment(
        &self,
        e: Option<Spanned<raw::Enrollment>>,
        individuals: Vec<raw::Individual>,
        webhook_url: &str,
        classes: &[Class],
        name_span: std::ops::Range<usize>,
    ) -> Result<Enrollment> {
        let span = e.as_ref().map_or(name_span, |e| e.span());
        let e = e.map(Spanned::into_inner);
        let api_version = e
            .as_ref()
            .and_then(|e| e.api_version.clone())
            .unwrap_or_else(|| "2021-10-01".into());
        let created = e
            .as_ref()
            .and_then(|e| e.created.clone())
            .unwrap_or_else(|| DEFAULT_CREATED.into());
        let iot_hubs = e
            .as_ref()
            .and_then(|e| e.iot_hubs.as_ref())
            .map(|h| h.get_ref().clone());
        let linked_hubs = e
            .as_ref()
            .and_then(|e| e.linked_hubs.as_ref())
            .map(|h| h.get_ref().clone());
        if iot_hubs.as_ref().is_some_and(Vec::is_empty)
            || linked_hubs.as_ref().is_some_and(Vec::is_empty)
        {
            let s = e
                .as_ref()
                .and_then(|e| e.iot_hubs.as_ref().or(e.linked_hubs.as_ref()))
                .map_or(span, |h| h.span());
            return self.err(
                s,
                "enrollment.iot_hubs",
                "name at least one IoT hub (an empty list allocates nothing)",
            );
        }
        let (iot_hubs, linked_hubs) = match (iot_hubs, linked_hubs) {
            (Some(i), Some(l)) => {
                if let Some(h) = i.iter().find(|h| !l.contains(h)) {
                    let s = e
                        .as_ref()
                        .and_then(|e| e.iot_hubs.as_ref())
                        .map_or(span, |h| h.span());
                    return self.err(
                        s,
                        "enrollment.iot_hubs",
                        format!("`{h}` is not one of enrollment.linked_hubs"),
                    );
                }
                (i, l)
            }
            (Some(i), None) => (i.clone(), i),
            (None, Some(l)) => (l.clone(), l),
            (None, None) => {
                return self.err(
                    span,
                    "enrollment.iot_hubs",
                    "name at least one IoT hub (iot_hubs or linked_hubs)",
                )
            }
        };
        let definition = CustomAllocationDefinition {
            webhook_url: mask_url(webhook_url),
            api_version,
        };
        let record = |group_id: Option<String>,
                      reg: Option<String>,
                      device_id: Option<String>,
                      status: String,
                      reprov: Option<raw::Reprovision>,
                      edge: Option<bool>,
                      hubs: Vec<String>,
                      etag_seed: &str| EnrollmentRecord {
            enrollment_group_id: group_id,
            registration_id: reg,
            device_id,
            attestation: Attestation {
                kind: "symmetricKey".into(),
            },
            capabilities: Capabilities {
                iot_edge: edge.unwrap_or(false),
            },
            etag: etag(etag_seed),
            provisioning_status: status,
            reprovision_policy: reprov.map_or_else(ReprovisionPolicy::default, |r| {
                ReprovisionPolicy {
                    update_hub_assignment: r.update_hub_assignment,
                    migrate_device_data: r.migrate_device_data,
                }
            }),
            created_date_time_utc: created.clone(),
            last_updated_date_time_utc: created.clone(),
            allocation_policy: "custom".into(),
            iot_hubs: hubs,
            custom_allocation_definition: definition.clone(),
        };

        let mut seen = HashSet::new();
        let mut ind = Vec::new();
        for i in individuals {
            let reg = i.registration_id.get_ref().clone();
            if IdTemplate::parse(&reg)
                .map(|t| t.has_placeholder())
                .unwrap_or(true)
            {
                return self.err(
                    i.registration_id.span(),
                    "individual_enrollments.registration_id",
                    "must be one valid registration ID (letters, digits, `-._:`)",
                );
            }
            if !seen.insert(reg.to_ascii_lowercase()) {
                return self.err(
                    i.registration_id.span(),
                    "individual_enrollments.registration_id",
                    format!("`{reg}` is enrolled twice"),
                );
            }
            let primary_key = self.key(&i.primary_key, "individual_enrollments.primary_key")?;
            let secondary_key = i
                .secondary_key
                .as_ref()
                .map(|k| self.key(k, "individual_enrollments.secondary_key"))
                .transpose()?;
            let status = self.status(
                &i.provisioning_status,
                "individual_enrollments.provisioning_status",
            )?;
            let hubs = i
                .iot_hubs
                .as_ref()
                .map_or_else(|| iot_hubs.clone(), |h| h.get_ref().clone());
            let device_id = i.device_id.clone().unwrap_or_else(|| reg.clone());
            ind.push(Individual {
                record: record(
                    None,
                    Some(reg.clone()),
                    i.device_id.clone(),
                    status.clone(),
                    i.reprovision,
                    i.iot_edge,
                    hubs.clone(),
                    &reg,
                ),
                registration_id: reg,
                primary_key,
                secondary_key,
                device_id,
                initial_twin: i.initial_twin.as_ref().map(twin_json),
                offered_hubs: hubs,
            });
        }

        let group = match &e {
            Some(e) if e.group_id.is_some() || e.primary_key.is_some() => {
                let Some(gid) = &e.group_id else {
                    return self.err(
                        span,
                        "enrollment.group_id",
                        "an enrollment group needs a group_id",
                    );
                };
                let Some(pk) = &e.primary_key else {
                    return self.err(
                        gid.span(),
                        "enrollment.primary_key",
                        "an enrollment group needs a primary_key (e.g. \"${DPS_GROUP_KEY}\")",
                    );
                };
                let primary_key = self.key(pk, "enrollment.primary_key")?;
                let secondary_key = e
                    .secondary_key
                    .as_ref()
                    .map(|k| self.key(k, "enrollment.secondary_key"))
                    .transpose()?;
                let status =
                    self.status(&e.provisioning_status, "enrollment.provisioning_status")?;
                Some(Group {
                    record: record(
                        Some(gid.get_ref().clone()),
                        None,
                        None,
                        status,
                        e.reprovision,
                        e.iot_edge,
                        iot_hubs.clone(),
                        gid.get_ref(),
                    ),
                    primary_key,
                    secondary_key,
                    initial_twin: e.initial_twin.as_ref().map(twin_json),
                    offered_hubs: iot_hubs,
                })
            }
            _ => None,
        };
        // Every key was checked above, so this cannot fail; the span is the enrollment's.
        let enrollment = match Enrollment::new(group, ind, linked_hubs) {
            Ok(e) => e,
            Err(e) => return self.err(span, "enrollment.primary_key", e.to_string()),
        };
        if enrollment.group.is_none() {
            // Every device must then be covered by an individual enrollment.
            for c in classes {
                for n in c.range.0..=c.range.1.min(c.range.0 + 10_000) {
                    let id = c.template.render(n);
                    if enrollment.individual(&id).is_none() {
                        return self.err(span, "enrollment.group_id", format!("device `{id}` (class `{}`) has no individual enrollment and there is no enrollment group", c.name));
                    }
                }
            }
        }
        Ok(enrollment)
    }
}

fn twin_json(t: &raw::Twin) -> Value {
    let mut v = serde_json::Map::new();
    if let Some(tags) = &t.tags {
        v.insert("tags".into(), table_json(tags));
    }
    if let Some(d) = &t.desired {
        v.insert(
            "properties".into(),
            serde_json::json!({ "desired": table_json(d) }),
        );
    }
    Value::Object(v)
}

/// A stable Cosmos-style etag derived from a name (quoted, as DPS sends it).
fn etag(seed: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(seed.as_bytes());
    let hex = hex::encode(&h[..10]);
    format!("\"{}-0000-0700-0000-{}\"", &hex[..8], &hex[8..20])
}
