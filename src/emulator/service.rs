//! The emulator's service side (service-apis.md): the DPS service API (enrollment groups and
//! individual enrollments with ETags, registration records: get, delete, query by group) under
//! the `provisioningserviceowner` SAS of the connection string `dps serve` prints, and each hub's
//! registry API under its `iothubowner` SAS, the hub picked by the `Host` header (the registry's
//! own rules are in [`super::registry`]). Shapes and routes come from
//! [`crate::dps::service`]; this file only applies them to the emulator's enrollments, store and
//! hubs.
//!
//! Choices where the references are silent (UNCONFIRMED, documented in scenarios/README.md): the
//! emulator keeps one enrollment group (a PUT of another while one exists is 409); a PUT without
//! `If-Match` creates or overwrites; an enrollment changed while a device registers does not
//! change that registration; enrollments are not persisted (`[emulator] persist` keeps
//! registrations and hubs).

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::enrollments::Live;
use super::hub::Hub;
use super::registry;
use super::{now_rfc3339, random_id, unix_now, Emulator};
use crate::dps::enrollment::Via;
use crate::dps::service::{
    dps_error, hub_error, EnrollmentDoc, Method, ServiceRoute, SymmetricKey, DPS_POLICY,
};

/// The emulator's DPS service host name (the connection string's `HostName`).
pub const SERVICE_HOST: &str = "loadtest-emulator.azure-devices-provisioning.net";

/// What a service request is answered with.
#[derive(Debug)]
pub struct ServiceReply {
    /// HTTP status.
    pub status: u16,
    /// JSON body (empty for 204).
    pub body: Vec<u8>,
    /// Extra headers (`ETag`, `x-ms-continuation`, `x-ms-error-code`).
    pub headers: Vec<(&'static str, String)>,
}

impl ServiceReply {
    pub(super) fn json(status: u16, v: &impl serde::Serialize) -> Self {
        Self {
            status,
            body: serde_json::to_vec(v).expect("serialisable"),
            headers: Vec::new(),
        }
    }

    pub(super) fn empty(status: u16) -> Self {
        Self {
            status,
            body: Vec::new(),
            headers: Vec::new(),
        }
    }

    fn with(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    fn dps(status: u16, code: u32, message: &str) -> Self {
        Self::json(
            status,
            &dps_error(code, message, &random_id(), &now_rfc3339()),
        )
        .with("x-ms-error-code", code.to_string())
    }

    pub(super) fn hub(status: u16, code: &'static str, message: &str) -> Self {
        Self::json(
            status,
            &hub_error(code, message, &random_id(), &now_rfc3339()),
        )
        .with("iothub-errorcode", code.to_owned())
    }
}

/// What the service routes read from the request besides the route.
#[derive(Debug, Default)]
pub struct ServiceRequest<'a> {
    /// `Host` (the hub, for registry routes).
    pub host: &'a str,
    /// `Authorization`.
    pub auth: Option<&'a str>,
    /// `If-Match`.
    pub if_match: Option<&'a str>,
    /// `x-ms-max-item-count` (queries).
    pub max_items: Option<usize>,
    /// `x-ms-continuation` (queries).
    pub continuation: Option<&'a str>,
    /// `top` of a device list.
    pub top: Option<usize>,
    /// The body.
    pub body: &'a [u8],
}

const NOT_FOUND: u32 = crate::dps::codes::NOT_FOUND;
const BAD_REQUEST: u32 = crate::dps::codes::BAD_REQUEST;
/// Our codes for the service API's conflicts (UNCONFIRMED).
const CONFLICT: u32 = 409_001;
const PRECONDITION_FAILED: u32 = 412_001;

fn new_etag() -> String {
    let r: [u8; 8] = rand::random();
    let h = hex::encode(r);
    format!("\"{}-0000-0800-0000-{}\"", &h[..8], &h[4..16])
}

fn new_key() -> String {
    let k: [u8; 32] = rand::random();
    B64.encode(k)
}

/// `If-Match` against the stored ETag: `*` or absent pass.
fn precondition(if_match: Option<&str>, stored: Option<&str>) -> Result<(), ServiceReply> {
    match (if_match.map(str::trim), stored) {
        (None | Some("*"), _) => Ok(()),
        (Some(want), Some(have))
            if want == have || want.trim_matches('"') == have.trim_matches('"') =>
        {
            Ok(())
        }
        (Some(_), _) => Err(ServiceReply::dps(
            412,
            PRECONDITION_FAILED,
            "Precondition failed: the If-Match ETag does not match the stored one",
        )),
    }
}

impl Emulator {
    /// The DPS service connection string (`provisioningserviceowner`).
    pub fn service_connection_string(&self) -> String {
        format!(
            "HostName={SERVICE_HOST};SharedAccessKeyName={DPS_POLICY};SharedAccessKey={}",
            self.service_key
        )
    }

    fn authorize_service(&self, token: Option<&str>) -> Result<(), ServiceReply> {
        let refuse = |why: &str| {
            ServiceReply::dps(
                401,
                crate::dps::codes::UNAUTHORIZED,
                &format!("Unauthorized: {why}"),
            )
        };
        let token = token.ok_or_else(|| refuse("no Authorization header"))?;
        crate::sas::verify_service_token(
            token,
            SERVICE_HOST,
            DPS_POLICY,
            &self.service_key,
            unix_now(),
            self.opts.sas_skew.as_secs(),
        )
        .map_err(refuse)
    }

    /// Answers a service-API or registry request.
    pub fn service(self: &Arc<Self>, route: ServiceRoute, r: &ServiceRequest<'_>) -> ServiceReply {
        match route {
            ServiceRoute::Device { method, id } => {
                self.hub_call(r, |hub| registry::device(hub, method, &id, r))
            }
            ServiceRoute::Devices { method } => {
                self.hub_call(r, |hub| registry::devices(hub, method, r))
            }
            route => {
                if let Err(refused) = self.authorize_service(r.auth) {
                    return refused;
                }
                match route {
                    ServiceRoute::Group { method, id } => self.enrollment(method, &id, false, r),
                    ServiceRoute::Individual { method, id } => {
                        self.enrollment(method, &id, true, r)
                    }
                    ServiceRoute::Registration { method, id } => self.registration(method, &id),
                    ServiceRoute::GroupRegistrations { group } => self.query(&group, r),
                    ServiceRoute::Device { .. } | ServiceRoute::Devices { .. } => {
                        unreachable!("matched above")
                    }
                }
            }
        }
    }

    fn swap(&self, next: Live) {
        *self
            .live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
    }

    fn enrollment(
        &self,
        method: Method,
        id: &str,
        individual: bool,
        r: &ServiceRequest<'_>,
    ) -> ServiceReply {
        let what = if individual {
            "individual enrollment"
        } else {
            "enrollment group"
        };
        // One writer at a time: read, build the next set, swap.
        let _writer = self.service_lock.lock().expect("service lock");
        let live = self.live();
        let existing = if individual {
            live.individual_docs
                .iter()
                .position(|d| {
                    d.registration_id
                        .as_deref()
                        .is_some_and(|x| x.eq_ignore_ascii_case(id))
                })
                .map(|i| &live.individual_docs[i])
        } else {
            live.group_doc
                .as_ref()
                .filter(|d| d.enrollment_group_id.as_deref() == Some(id))
        };
        match method {
            Method::Get => match existing {
                Some(d) => {
                    ServiceReply::json(200, d).with("ETag", d.etag.clone().unwrap_or_default())
                }
                None => {
                    ServiceReply::dps(404, NOT_FOUND, &format!("The {what} `{id}` was not found"))
                }
            },
            Method::Delete => {
                let Some(d) = existing else {
                    return ServiceReply::dps(
                        404,
                        NOT_FOUND,
                        &format!("The {what} `{id}` was not found"),
                    );
                };
                if let Err(e) = precondition(r.if_match, d.etag.as_deref()) {
                    return e;
                }
                let (group, individuals) = if individual {
                    let rest = others(&live, id);
                    (live.group_doc.clone(), rest)
                } else {
                    (None, live.individual_docs.clone())
                };
                match Live::new(group, individuals, &self.linked_hubs, live.webhooks.clone()) {
                    Ok(next) => self.swap(next),
                    Err(e) => return ServiceReply::dps(400, BAD_REQUEST, &e),
                }
                ServiceReply::empty(204)
            }
            Method::Put => {
                let mut doc: EnrollmentDoc = match serde_json::from_slice(r.body) {
                    Ok(d) => d,
                    Err(e) => {
                        return ServiceReply::dps(
                            400,
                            BAD_REQUEST,
                            &format!("The {what} is not valid JSON: {e}"),
                        )
                    }
                };
                let named = if individual {
                    doc.registration_id.as_deref()
                } else {
                    doc.enrollment_group_id.as_deref()
                };
                if !named.is_some_and(|n| n.eq_ignore_ascii_case(id)) {
                    return ServiceReply::dps(
                        400,
                        BAD_REQUEST,
                        &format!("The {what}'s ID does not match the URL's `{id}`"),
                    );
                }
                if let Some(why) = doc.invalid() {
                    return ServiceReply::dps(400, BAD_REQUEST, &why);
                }
                if !individual {
                    if let Some(other) = live
                        .group_doc
                        .as_ref()
                        .and_then(|g| g.enrollment_group_id.clone())
                        .filter(|g| g != id)
                    {
                        return ServiceReply::dps(
                            409,
                            CONFLICT,
                            &format!(
                                "This emulator keeps one enrollment group: delete `{other}` first"
                            ),
                        );
                    }
                }
                if let Err(e) = precondition(r.if_match, existing.and_then(|d| d.etag.as_deref())) {
                    return e;
                }
                // DPS generates the keys a symmetric-key enrollment leaves out.
                let keys = doc.attestation.symmetric_key.get_or_insert(SymmetricKey {
                    primary_key: None,
                    secondary_key: None,
                });
                keys.primary_key.get_or_insert_with(new_key);
                keys.secondary_key.get_or_insert_with(new_key);
                let now = now_rfc3339();
                doc.created_date_time_utc = existing
                    .and_then(|d| d.created_date_time_utc.clone())
                    .or_else(|| Some(now.clone()));
                doc.last_updated_date_time_utc = Some(now);
                doc.etag = Some(new_etag());
                let mut webhooks = live.webhooks.clone();
                if let Some(c) = &doc.custom_allocation_definition {
                    if !webhooks.contains_key(&c.webhook_url) {
                        match self.webhook_settings.client(&c.webhook_url, None) {
                            Ok(client) => {
                                webhooks.insert(c.webhook_url.clone(), Arc::new(client));
                            }
                            Err(e) => {
                                return ServiceReply::dps(
                                    400,
                                    BAD_REQUEST,
                                    &format!("webhookUrl: {e}"),
                                )
                            }
                        }
                    }
                }
                let (group, individuals) = if individual {
                    let mut list = others(&live, id);
                    list.push(doc.clone());
                    (live.group_doc.clone(), list)
                } else {
                    (Some(doc.clone()), live.individual_docs.clone())
                };
                match Live::new(group, individuals, &self.linked_hubs, webhooks) {
                    Ok(next) => self.swap(next),
                    Err(e) => return ServiceReply::dps(400, BAD_REQUEST, &e),
                }
                let etag = doc.etag.clone().unwrap_or_default();
                ServiceReply::json(200, &doc).with("ETag", etag)
            }
            Method::Post => ServiceReply::dps(405, BAD_REQUEST, "Method not allowed"),
        }
    }

    fn registration(&self, method: Method, id: &str) -> ServiceReply {
        let lc = id.to_ascii_lowercase();
        let mut st = self.state.lock().expect("state lock");
        let missing = || {
            ServiceReply::dps(
                404,
                NOT_FOUND,
                &format!("The registration `{id}` was not found"),
            )
        };
        match method {
            Method::Get => match st.registrations.get(&lc) {
                Some(rec) => ServiceReply::json(200, &rec.state)
                    .with("ETag", rec.state.etag.clone().unwrap_or_default()),
                None => missing(),
            },
            Method::Delete => match st.registrations.remove(&lc) {
                Some(_) => {
                    drop(st);
                    self.persist();
                    ServiceReply::empty(204)
                }
                None => missing(),
            },
            Method::Put | Method::Post => ServiceReply::dps(405, BAD_REQUEST, "Method not allowed"),
        }
    }

    /// `POST /registrations/{group}/query`: the group's registration records, sorted by ID, a
    /// page at a time.
    fn query(&self, group: &str, r: &ServiceRequest<'_>) -> ServiceReply {
        let live = self.live();
        if live
            .group_doc
            .as_ref()
            .and_then(|g| g.enrollment_group_id.as_deref())
            != Some(group)
        {
            return ServiceReply::dps(
                404,
                NOT_FOUND,
                &format!("The enrollment group `{group}` was not found"),
            );
        }
        let st = self.state.lock().expect("state lock");
        let mut states: Vec<_> = st
            .registrations
            .values()
            .filter(|rec| {
                live.enrollment
                    .resolve(&rec.state.registration_id)
                    .is_some_and(|e| e.via == Via::Group)
            })
            .map(|rec| rec.state.clone())
            .collect();
        drop(st);
        states.sort_by(|a, b| a.registration_id.cmp(&b.registration_id));
        let from: usize = r.continuation.and_then(|c| c.parse().ok()).unwrap_or(0);
        let size = r.max_items.unwrap_or(100).clamp(1, 1000);
        let page: Vec<_> = states.iter().skip(from).take(size).collect();
        let mut reply =
            ServiceReply::json(200, &page).with("x-ms-item-type", "DeviceRegistration".into());
        if from + page.len() < states.len() {
            reply = reply.with("x-ms-continuation", (from + page.len()).to_string());
        }
        reply
    }

    /// Runs `f` on the hub the `Host` header names, after its SAS.
    fn hub_call(
        &self,
        r: &ServiceRequest<'_>,
        f: impl FnOnce(&mut Hub) -> (ServiceReply, bool),
    ) -> ServiceReply {
        let host = r
            .host
            .split(':')
            .next()
            .unwrap_or(r.host)
            .to_ascii_lowercase();
        let mut hubs = self.hubs.lock().expect("hubs lock");
        let Some(hub) = hubs.get_mut(&host) else {
            return ServiceReply::hub(404, "IotHubNotFound", &format!("IoT hub {host} not found"));
        };
        if let Err(why) = r
            .auth
            .ok_or("no Authorization header")
            .and_then(|t| hub.authorize(t, unix_now(), self.opts.sas_skew.as_secs()))
        {
            return ServiceReply::hub(
                401,
                "IotHubUnauthorizedAccess",
                &format!("Unauthorized: {why}"),
            );
        }
        let (reply, changed) = f(hub);
        drop(hubs);
        if changed {
            self.persist();
        }
        reply
    }
}

/// The individual enrollments other than `id`'s.
fn others(live: &Live, id: &str) -> Vec<EnrollmentDoc> {
    live.individual_docs
        .iter()
        .filter(|x| {
            !x.registration_id
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(id))
        })
        .cloned()
        .collect()
}
