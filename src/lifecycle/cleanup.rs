//! `loadtest cleanup SCENARIO`: deletes what the scenario's devices left behind: their device
//! identities in every linked hub (bulk calls of at most 100) and their registration records in
//! DPS, paced to a registry-operation rate (default: the `[capacity]` tier's quota per unit × units)
//! and a DPS-operation rate, and resumable: the work list and how far it got are written
//! atomically to the report directory after every call, so an interrupted cleanup continues where
//! it stopped. Deletes only IDs the scenario generates (the group's registration records are
//! listed, then kept only if the population has them), never anything else. `--dry-run` lists and
//! counts, and deletes nothing.

use std::collections::{BTreeMap, HashSet};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use super::{expect, write_atomic, Credentials, LifecycleError, ServiceClient};
use crate::dps::service::{BulkResult, ImportDevice, BULK_MAX, DPS_API_VERSION, HUB_API_VERSION};
use crate::dps::wire::RegistrationState;
use crate::scenario::Scenario;

/// One registration to remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Item {
    /// Registration ID.
    pub registration_id: String,
    /// Lower-cased hub host and device ID, when it was assigned.
    pub assigned: Option<(String, String)>,
}

/// The work list and how far it got (`cleanup.json` in the report directory).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Progress {
    /// The scenario's name (a progress file of another scenario is refused).
    pub scenario: String,
    /// What to remove, in order.
    pub items: Vec<Item>,
    /// Per hub: device identities handled so far (in `items` order, among those on that hub).
    pub hubs_done: BTreeMap<String, usize>,
    /// Registration records handled so far (`items` order).
    pub dps_done: usize,
    /// Deleted / already gone / failed, per kind.
    pub identities_deleted: u64,
    /// Identities a bulk call said did not exist.
    pub identities_absent: u64,
    /// Identities on hubs without a connection string (left in place).
    pub identities_skipped: u64,
    /// Records deleted.
    pub records_deleted: u64,
    /// Records already gone.
    pub records_absent: u64,
    /// Everything was handled (a later cleanup lists afresh).
    #[serde(default)]
    pub finished: bool,
}

/// The options of a cleanup.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Only list and count.
    pub dry_run: bool,
    /// Registry operations per minute (each device of a bulk call is one).
    pub registry_per_minute: u32,
    /// DPS service operations per minute.
    pub dps_per_minute: u32,
    /// Where `cleanup.json` lives.
    pub dir: PathBuf,
}

/// A limiter of `per_minute`, with a burst of one bulk call (or of the whole minute's quota when
/// that is smaller; bulk calls are then that small).
fn limiter(per_minute: u32) -> (governor::DefaultDirectRateLimiter, usize) {
    let n = NonZeroU32::new(per_minute.max(1)).expect("at least 1");
    let burst = n.min(NonZeroU32::new(BULK_MAX as u32).expect("100"));
    (
        RateLimiter::direct(Quota::per_minute(n).allow_burst(burst)),
        burst.get() as usize,
    )
}

/// The population's registration IDs, lower-cased.
fn population(s: &Scenario) -> HashSet<String> {
    let mut ids = HashSet::new();
    for c in &s.classes {
        for n in c.range.0..=c.range.1 {
            ids.insert(c.template.render(n).to_ascii_lowercase());
        }
    }
    for i in &s.enrollment.individuals {
        ids.insert(i.registration_id.to_ascii_lowercase());
    }
    ids
}

fn item(st: &RegistrationState) -> Item {
    Item {
        registration_id: st.registration_id.clone(),
        assigned: st
            .assigned_hub
            .clone()
            .zip(st.device_id.clone())
            .map(|(h, d)| (h.to_ascii_lowercase(), d)),
    }
}

/// Lists what to remove: the group's registration records the population has, and the
/// individual enrollments' records.
async fn list(
    s: &Scenario,
    dps: &Credentials,
    client: &ServiceClient,
) -> Result<Vec<Item>, LifecycleError> {
    let ours = population(s);
    let mut items = Vec::new();
    let mut seen = HashSet::new();
    if let Some(g) = s
        .enrollment
        .group
        .as_ref()
        .and_then(|g| g.record.enrollment_group_id.clone())
    {
        let url = format!(
            "/registrations/{}/query?api-version={DPS_API_VERSION}",
            crate::sas::url_encode(&g)
        );
        let mut continuation: Option<String> = None;
        loop {
            let mut headers = vec![("x-ms-max-item-count", "100".to_owned())];
            if let Some(c) = &continuation {
                headers.push(("x-ms-continuation", c.clone()));
            }
            let a = client
                .call(
                    dps,
                    "POST",
                    &url,
                    &headers,
                    Some(br#"{"query":"*"}"#.to_vec()),
                )
                .await?;
            if a.status == 404 {
                break; // no such group: nothing registered through it
            }
            let a = expect(a, &[200], "POST", &url, &dps.host)?;
            let page: Vec<RegistrationState> = serde_json::from_slice(&a.body).map_err(|e| {
                LifecycleError::Config(format!(
                    "the registration query's answer is not a list of records: {e}"
                ))
            })?;
            for st in &page {
                let lc = st.registration_id.to_ascii_lowercase();
                if ours.contains(&lc) && seen.insert(lc) {
                    items.push(item(st));
                }
            }
            continuation = a
                .headers
                .get("x-ms-continuation")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .filter(|c| !c.is_empty());
            if continuation.is_none() || page.is_empty() {
                break;
            }
        }
    }
    for i in &s.enrollment.individuals {
        let lc = i.registration_id.to_ascii_lowercase();
        if seen.contains(&lc) {
            continue;
        }
        let url = format!(
            "/registrations/{}?api-version={DPS_API_VERSION}",
            crate::sas::url_encode(&i.registration_id)
        );
        let a = client.call(dps, "GET", &url, &[], None).await?;
        if a.status == 404 {
            continue;
        }
        let a = expect(a, &[200], "GET", &url, &dps.host)?;
        if let Ok(st) = serde_json::from_slice::<RegistrationState>(&a.body) {
            seen.insert(lc);
            items.push(item(&st));
        }
    }
    Ok(items)
}

fn load(path: &Path) -> Result<Option<Progress>, LifecycleError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| LifecycleError::Io {
                path: path.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LifecycleError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Runs the cleanup; `on_step` is told after each call (for a progress bar).
pub(crate) async fn cleanup(
    s: &Scenario,
    dps: &Credentials,
    hubs: &[Credentials],
    client: &ServiceClient,
    o: &Options,
    mut on_step: impl FnMut(&Progress),
) -> Result<Progress, LifecycleError> {
    let file = o.dir.join("cleanup.json");
    let mut p = match load(&file)? {
        Some(p) if p.scenario != s.name => {
            return Err(LifecycleError::Config(format!(
                "{} is the cleanup of scenario {}, not {}",
                file.display(),
                p.scenario,
                s.name
            )))
        }
        Some(p) if !p.finished => p,
        _ => {
            let items = list(s, dps, client).await?;
            Progress {
                scenario: s.name.clone(),
                items,
                ..Progress::default()
            }
        }
    };
    if o.dry_run {
        return Ok(p);
    }
    write_atomic(&file, &serde_json::to_vec_pretty(&p).expect("serialisable"))?;
    // Identities first: the records say where each device went.
    let (registry, chunk_size) = limiter(o.registry_per_minute);
    let mut by_hub: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for it in &p.items {
        if let Some((hub, device)) = &it.assigned {
            by_hub.entry(hub.clone()).or_default().push(device.clone());
        }
    }
    for (hub, devices) in &by_hub {
        let done = p.hubs_done.get(hub).copied().unwrap_or(0);
        let Some(who) = hubs.iter().find(|h| h.host.eq_ignore_ascii_case(hub)) else {
            if done < devices.len() {
                p.identities_skipped += (devices.len() - done) as u64;
                p.hubs_done.insert(hub.clone(), devices.len());
                write_atomic(&file, &serde_json::to_vec_pretty(&p).expect("serialisable"))?;
            }
            continue;
        };
        for chunk in devices[done.min(devices.len())..].chunks(chunk_size) {
            let n = NonZeroU32::new(chunk.len() as u32).expect("a chunk is not empty");
            let _ = registry.until_n_ready(n).await;
            let batch: Vec<ImportDevice> = chunk
                .iter()
                .map(|id| ImportDevice {
                    id: id.clone(),
                    import_mode: "delete".into(),
                    e_tag: None,
                })
                .collect();
            let url = format!("/devices?api-version={HUB_API_VERSION}");
            let a = client
                .call(
                    who,
                    "POST",
                    &url,
                    &[],
                    Some(serde_json::to_vec(&batch).expect("serialisable")),
                )
                .await?;
            let result: Option<BulkResult> = serde_json::from_slice(&a.body).ok();
            let absent = match (&result, a.status) {
                (Some(r), 200 | 400) => {
                    let other: Vec<_> = r
                        .errors
                        .iter()
                        .filter(|e| e.error_code != "DeviceNotFound")
                        .collect();
                    if let Some(e) = other.first() {
                        return Err(LifecycleError::Status {
                            method: "POST".into(),
                            path: "/devices".into(),
                            host: who.host.clone(),
                            status: a.status,
                            body: format!("{}: {} {}", e.device_id, e.error_code, e.error_status),
                        });
                    }
                    r.errors.len() as u64
                }
                _ => {
                    expect(a, &[200], "POST", &url, &who.host)?;
                    0
                }
            };
            p.identities_absent += absent;
            p.identities_deleted += chunk.len() as u64 - absent;
            *p.hubs_done.entry(hub.clone()).or_default() += chunk.len();
            write_atomic(&file, &serde_json::to_vec_pretty(&p).expect("serialisable"))?;
            on_step(&p);
        }
    }
    // Then the registration records.
    let (dps_rate, _) = limiter(o.dps_per_minute);
    while p.dps_done < p.items.len() {
        dps_rate.until_ready().await;
        let id = p.items[p.dps_done].registration_id.clone();
        let url = format!(
            "/registrations/{}?api-version={DPS_API_VERSION}",
            crate::sas::url_encode(&id)
        );
        let a = client
            .call(dps, "DELETE", &url, &[("If-Match", "*".into())], None)
            .await?;
        match a.status {
            200 | 204 => p.records_deleted += 1,
            404 => p.records_absent += 1,
            _ => {
                expect(a, &[204], "DELETE", &url, &dps.host)?;
            }
        }
        p.dps_done += 1;
        if p.dps_done % 20 == 0 || p.dps_done == p.items.len() {
            write_atomic(&file, &serde_json::to_vec_pretty(&p).expect("serialisable"))?;
        }
        on_step(&p);
    }
    p.finished = true;
    write_atomic(&file, &serde_json::to_vec_pretty(&p).expect("serialisable"))?;
    Ok(p)
}
