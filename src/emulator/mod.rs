//! The DPS emulator: what the Device Provisioning Service does between a device's register
//! request and its terminal status, configured from a scenario (enrollments, linked hubs,
//! `[emulator]` options), with no cloud.
//!
//! This file is the service core, independent of transport: register/poll/status-lookup answers
//! ([`Reply`]), quotas and admission, over the registration store (its records, operations and
//! persistence are `store.rs`'s, kept under this file's one lock). Authentication is `auth.rs`'s,
//! the enrollments as they stand `enrollments.rs`'s, allocation `allocate.rs`'s (custom through
//! the shared webhook client and DPS outcome rules, plus hashed/static/geoLatency), twins live in
//! `hub.rs`, the service API in `service.rs` (the hubs' registry API in `registry.rs`), and the
//! wire protocols in `mqtt.rs` and `https.rs` only translate packets to these calls.

mod allocate;
mod auth;
mod counters;
mod enrollments;
mod registry;
pub mod service;
pub use counters::Exported;
pub mod https;
pub mod hub;
pub mod mqtt;
mod reply;
pub mod serve;
mod shards;
mod store;
pub use crate::tls;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::dps::wire::{OperationStatus, RegistrationState};
use crate::dps::{codes, outcome::Rules};
use crate::scenario::{EmulatorOptions, Scenario};
use crate::secret::Secret;
use crate::webhook::client::WebhookClient;
pub use auth::{AuthError, Device};
pub use counters::Counters;
use enrollments::Live;
use hub::Hub;
pub use reply::Reply;
pub use store::OPERATION_RETENTION;
use store::{OpState, Operation, Record, State};

use codes::{HUB_DEVICE_NOT_FOUND, NOT_FOUND, THROTTLED};

use crate::dps::enrollment::Via;

/// A value from the network as it may go into the log: control characters (a `%0A` in a URL
/// would start a forged line), quotes and non-ASCII are escaped, and it is cut at 200 characters.
pub(crate) fn log_safe(s: &str) -> String {
    let mut out: String = s.chars().take(200).flat_map(char::escape_default).collect();
    if s.chars().nth(200).is_some() {
        out.push('…');
    }
    out
}

/// The emulator.
pub struct Emulator {
    opts: EmulatorOptions,
    rules: Rules,
    /// The enrollments as they stand (swapped whole by the service API).
    live: RwLock<Arc<Live>>,
    /// How webhook clients for URLs the service API sets up are made.
    webhook_settings: WebhookSettings,
    linked_hubs: Vec<String>,
    /// The DPS service API's `provisioningserviceowner` key, base64.
    service_key: String,
    /// Service-API writers take turns (read the enrollments, build the next, swap).
    service_lock: Mutex<()>,
    state: Mutex<State>,
    hubs: Mutex<HashMap<String, Hub>>,
    /// Counters.
    pub counters: Counters,
    log: bool,
    /// Registrations being allocated now (admission control's `in_progress`).
    in_progress: AtomicU64,
    /// Admission control's `registrations_per_second`, when set.
    admission_rate: Option<governor::DefaultDirectRateLimiter>,
}

/// Leaves the in-progress count when an allocation task ends, however it ends.
struct Leave(Arc<Emulator>);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("id_scope", &self.opts.id_scope)
            .finish_non_exhaustive()
    }
}

/// Where the emulator's custom allocation goes.
#[derive(Debug)]
pub(crate) enum Webhook<'a> {
    /// No webhook: custom allocation fails with 400209... as DPS does.
    None,
    /// POST to this URL.
    Url(&'a str),
    /// The embedded reference webhook, in this process.
    InProcess(crate::webhook::server::Config),
}

/// What a webhook client for a URL set through the service API is made with (the scenario's
/// `[target]` timeout and CA; a function key rides in the URL's `?code=`).
#[derive(Debug, Clone)]
struct WebhookSettings {
    timeout: Duration,
    ca: Option<std::path::PathBuf>,
}

impl WebhookSettings {
    fn client(&self, url: &str, function_key: Option<&Secret>) -> Result<WebhookClient, String> {
        WebhookClient::new(
            url,
            function_key.map(Secret::expose),
            self.timeout,
            64,
            self.ca.as_deref(),
        )
        .map_err(|e| e.to_string())
    }
}

impl Emulator {
    /// Builds the emulator for a scenario. `webhook` is where custom allocation goes: a URL it
    /// POSTs to (the scenario's `target.url`, or the embedded reference webhook the caller
    /// started), or the embedded reference webhook called in-process. With `persist` set,
    /// earlier registrations and hubs are loaded.
    pub(crate) fn new(s: &Scenario, webhook: Webhook<'_>, log: bool) -> Result<Self, AuthError> {
        let settings = WebhookSettings {
            timeout: s.target.timeout,
            ca: s.target.ca.clone(),
        };
        // The scenario's enrollments all call the configured webhook, under its URL (or, called
        // in-process, under a placeholder one).
        let (url, client) = match webhook {
            Webhook::None => (None, None),
            Webhook::InProcess(config) => (
                Some(enrollments::IN_PROCESS_URL.to_owned()),
                Some(WebhookClient::in_process(config, s.target.timeout)),
            ),
            Webhook::Url(u) => (
                Some(u.to_owned()),
                Some(
                    settings
                        .client(u, s.target.function_key.as_ref())
                        .map_err(AuthError::Config)?,
                ),
            ),
        };
        let webhooks: HashMap<String, Arc<WebhookClient>> =
            url.clone().zip(client.map(Arc::new)).into_iter().collect();
        let shown = url.unwrap_or_default();
        let dated = |mut d: crate::dps::service::EnrollmentDoc,
                     etag: &str,
                     r: &crate::dps::allocation::EnrollmentRecord| {
            d.etag = Some(etag.to_owned());
            d.created_date_time_utc = Some(r.created_date_time_utc.clone());
            d.last_updated_date_time_utc = Some(r.last_updated_date_time_utc.clone());
            d
        };
        let group_doc = s.enrollment.group.as_ref().map(|g| {
            dated(
                crate::dps::service::EnrollmentDoc::of_group(g, &shown),
                &g.record.etag,
                &g.record,
            )
        });
        let individual_docs = s
            .enrollment
            .individuals
            .iter()
            .map(|i| {
                dated(
                    crate::dps::service::EnrollmentDoc::of_individual(i, &shown),
                    &i.record.etag,
                    &i.record,
                )
            })
            .collect();
        let live = Live::new(
            group_doc,
            individual_docs,
            &s.enrollment.linked_hubs,
            webhooks,
        )
        .map_err(AuthError::Config)?;
        let mut hubs: HashMap<String, Hub> = s
            .emulator
            .hubs
            .iter()
            .map(|h| (h.host.to_ascii_lowercase(), Hub::new(&h.host)))
            .collect();
        let mut state = State::default();
        if let Some(path) = &s.emulator.persist {
            if let Some(saved) = store::load(path).map_err(AuthError::Config)? {
                state.registrations = saved.registrations;
                for (k, h) in saved.hubs {
                    hubs.insert(k, h);
                }
            }
        }
        let mut service_key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut service_key);
        Ok(Self {
            opts: s.emulator.clone(),
            rules: s.rules.clone(),
            live: RwLock::new(Arc::new(live)),
            webhook_settings: settings,
            linked_hubs: s.enrollment.linked_hubs.clone(),
            service_lock: Mutex::new(()),
            service_key: base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                service_key,
            ),
            state: Mutex::new(state),
            hubs: Mutex::new(hubs),
            counters: Counters::default(),
            log,
            in_progress: AtomicU64::new(0),
            admission_rate: s
                .emulator
                .admission
                .registrations_per_second
                .and_then(std::num::NonZeroU32::new)
                .map(|r| governor::RateLimiter::direct(governor::Quota::per_second(r))),
        })
    }

    /// The enrollments as they stand now.
    fn live(&self) -> Arc<Live> {
        self.live
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Starts with no enrollments: every device is unknown until the service API creates its
    /// enrollment (`dps serve --no-enrollments`, for `loadtest setup`).
    pub fn clear_enrollments(&self) {
        let webhooks = self.live().webhooks.clone();
        let empty = Live::new(None, Vec::new(), &self.linked_hubs, webhooks)
            .expect("no enrollments, no keys to decode");
        *self
            .live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(empty);
    }

    /// Saves registrations and hubs when `[emulator] persist` is set (a failure is a warning:
    /// the emulator goes on).
    fn persist(&self) {
        if let Some(path) = &self.opts.persist {
            let snapshot = || {
                let regs = self.state.lock().expect("state lock").registrations.clone();
                let hubs = self.hubs.lock().expect("hubs lock").clone();
                (regs, hubs)
            };
            if let Err(e) = store::save(path, snapshot) {
                eprintln!(
                    "warning: could not persist registrations to {}: {e}",
                    path.display()
                );
            }
        }
    }

    /// Registrations being allocated now.
    pub fn in_progress(&self) -> u64 {
        self.in_progress.load(Ordering::Relaxed)
    }

    /// The ID scope.
    pub fn id_scope(&self) -> &str {
        &self.opts.id_scope
    }

    /// The options.
    pub fn options(&self) -> &EmulatorOptions {
        &self.opts
    }

    /// `(host, connection string)` of every hub, sorted.
    pub fn connection_strings(&self) -> Vec<(String, String)> {
        let hubs = self.hubs.lock().expect("hubs lock");
        let mut v: Vec<_> = hubs
            .values()
            .map(|h| (h.host.clone(), h.connection_string()))
            .collect();
        v.sort();
        v
    }

    /// Admission control: a 429 with `retry-after` when too many registrations are being
    /// allocated or arrive faster than the configured rate (DPS sheds load this way when busy).
    fn admit(&self) -> Option<Reply> {
        let a = &self.opts.admission;
        let busy = self.in_progress.load(Ordering::Relaxed) >= u64::from(a.in_progress);
        let why = if busy {
            "The service is busy: too many registrations in progress; retry after the given time"
        } else if self
            .admission_rate
            .as_ref()
            .is_some_and(|l| l.check().is_err())
        {
            "The service is busy: too many registrations per second; retry after the given time"
        } else {
            return None;
        };
        self.counters
            .admission_refused
            .fetch_add(1, Ordering::Relaxed);
        self.counters.throttled.fetch_add(1, Ordering::Relaxed);
        Some(Reply::error(429, THROTTLED, why, Some(a.retry_after)))
    }

    /// A register request: 202 `assigning`, or with `[emulator] immediate` the terminal 200 where
    /// the transport allows it (`terminal_allowed`: MQTT yes; HTTPS no, SDK-C# needs a 202).
    pub async fn register(
        self: &Arc<Self>,
        device: Device,
        payload: Option<Value>,
        terminal_allowed: bool,
    ) -> Reply {
        if let Some(busy) = self.admit() {
            return busy;
        }
        let op_id = format!("5.{:016x}.{}", rand::random::<u64>(), random_id());
        {
            let mut st = self.state.lock().expect("state lock");
            if let Some(t) = self.opts.throttle {
                let now = Instant::now();
                let window = Duration::from_secs(60);
                while st
                    .registrations_window
                    .front()
                    .is_some_and(|t0| now.duration_since(*t0) >= window)
                {
                    st.registrations_window.pop_front();
                }
                if st.registrations_window.len() >= t.registrations_per_minute as usize {
                    let wait = st.registrations_window.front().map_or(1, |t0| {
                        (window - now.duration_since(*t0)).as_secs().max(1) as u32
                    });
                    drop(st);
                    self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                    return Reply::error(429, THROTTLED, "Too many registrations: the service's registrations-per-minute quota is used up", Some(wait));
                }
                st.registrations_window.push_back(now);
            }
            let now = Instant::now();
            while st
                .finished
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > OPERATION_RETENTION)
            {
                if let Some((_, old)) = st.finished.pop_front() {
                    st.operations.remove(&old);
                }
            }
            st.operations.insert(
                op_id.clone(),
                Operation {
                    registration_lc: device.registration_id.to_ascii_lowercase(),
                    state: OpState::Running,
                    polls: VecDeque::new(),
                },
            );
        }
        self.counters.registrations.fetch_add(1, Ordering::Relaxed);
        self.in_progress.fetch_add(1, Ordering::Relaxed);
        let leave = Leave(self.clone());
        let id = op_id.clone();
        let task = tokio::spawn(async move {
            let emulator = leave.0.clone();
            // Boxed, so that the spawn moves a pointer, not the ~3 KB allocation future.
            Box::pin(emulator.allocate(id, device, payload)).await;
            drop(leave);
        });
        if self.opts.immediate {
            let _ = task.await;
            if terminal_allowed {
                return self.operation_reply(&op_id);
            }
        }
        Reply::json(
            202,
            &OperationStatus {
                operation_id: op_id,
                status: "assigning".into(),
                registration_state: None,
            },
            Some(self.opts.retry_after),
        )
    }

    /// An operation-status poll.
    pub fn poll(&self, device: &Device, operation_id: &str) -> Reply {
        self.counters.polls.fetch_add(1, Ordering::Relaxed);
        let lc = device.registration_id.to_ascii_lowercase();
        {
            let mut st = self.state.lock().expect("state lock");
            let Some(op) = st
                .operations
                .get_mut(operation_id)
                .filter(|o| o.registration_lc == lc)
            else {
                return Reply::error(404, NOT_FOUND, "Operation not found", None);
            };
            if let Some(t) = self.opts.throttle {
                let now = Instant::now();
                while op
                    .polls
                    .front()
                    .is_some_and(|t0| now.duration_since(*t0) >= Duration::from_secs(10))
                {
                    op.polls.pop_front();
                }
                if op.polls.len() >= t.polls_per_10s as usize {
                    drop(st);
                    self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                    return Reply::error(
                        429,
                        THROTTLED,
                        "Too many polls: 5 operation-status requests per 10 seconds per device",
                        Some(self.opts.retry_after),
                    );
                }
                op.polls.push_back(now);
            }
        }
        self.operation_reply(operation_id)
    }

    fn operation_reply(&self, operation_id: &str) -> Reply {
        let st = self.state.lock().expect("state lock");
        let Some(op) = st.operations.get(operation_id) else {
            return Reply::error(404, NOT_FOUND, "Operation not found", None);
        };
        match &op.state {
            OpState::Running => {
                let id = st
                    .registrations
                    .get(&op.registration_lc)
                    .map_or(op.registration_lc.clone(), |r| {
                        r.state.registration_id.clone()
                    });
                Reply::json(
                    202,
                    &OperationStatus {
                        operation_id: operation_id.to_owned(),
                        status: "assigning".into(),
                        registration_state: Some(RegistrationState {
                            registration_id: id,
                            status: "assigning".into(),
                            ..RegistrationState::default()
                        }),
                    },
                    Some(self.opts.retry_after),
                )
            }
            OpState::Done => match st.registrations.get(&op.registration_lc) {
                Some(r) => Reply::json(
                    200,
                    &OperationStatus {
                        operation_id: operation_id.to_owned(),
                        status: r.state.status.clone(),
                        registration_state: Some(r.state.clone()),
                    },
                    None,
                ),
                None => Reply::error(404, NOT_FOUND, "Operation not found", None),
            },
        }
    }

    /// Device Registration Status Lookup: the last registration state, no wrapper.
    pub fn status(&self, device: &Device) -> Reply {
        let st = self.state.lock().expect("state lock");
        match st
            .registrations
            .get(&device.registration_id.to_ascii_lowercase())
        {
            Some(r) => Reply::json(200, &r.state, None),
            None => Reply::error(404, NOT_FOUND, "Registration not found", None),
        }
    }

    /// IoT Hub twin read, authorised by a service SAS for `host`.
    pub fn twin(&self, host: &str, device_id: &str, token: Option<&str>) -> Reply {
        let hubs = self.hubs.lock().expect("hubs lock");
        let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
        let Some(hub) = hubs.get(&host) else {
            return Reply::error(
                404,
                HUB_DEVICE_NOT_FOUND,
                &format!("IoT hub {host} not found"),
                None,
            );
        };
        if let Err(why) = token
            .ok_or("no Authorization header")
            .and_then(|t| hub.authorize(t, unix_now(), self.opts.sas_skew.as_secs()))
        {
            return Reply::error(
                401,
                codes::UNAUTHORIZED,
                &format!("Unauthorized: {why}"),
                None,
            );
        }
        match hub.devices.get(device_id) {
            Some(t) => Reply::json(200, &t.render(device_id), None),
            None => Reply::error(
                404,
                HUB_DEVICE_NOT_FOUND,
                &format!("Device {device_id} not found"),
                None,
            ),
        }
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// RFC 3339 UTC with 7 fractional digits, as DPS writes its timestamps.
pub fn now_rfc3339() -> String {
    let s = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
    // 2026-01-01T00:00:00.123456789Z → .1234567Z
    match s.find('.') {
        Some(i) if s.len() > i + 8 => format!("{}Z", &s[..i + 8]),
        _ => s,
    }
}

/// A random UUID-shaped identifier (16 random bytes in UUID form, as before: no version bits).
pub fn random_id() -> String {
    uuid::Uuid::from_bytes(rand::random())
        .hyphenated()
        .to_string()
}

/// Counter shortcut.
fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}
