//! Device-registration modes: each request is one synthetic device registering the way a real
//! device does (dps-protocol.md §3.8): SAS token from its derived key, connect, register with its
//! payload, poll until a terminal status, disconnect; then, outside the measured latency, its
//! twin is read from the assigned hub and checked.
//!
//! This file holds what both transports share (device identities and keys, expectations, the
//! classification of failures, per-phase timings); [`mqtt`] and [`https`] speak the wire; [`twin`]
//! reads twins. Protocol facts come from [`crate::dps::wire`], the same module the emulator uses.

pub(crate) mod https;
pub(crate) mod mqtt;
pub(crate) mod twin;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Ended, Executor, Job};
use crate::check::{self, Mismatch};
use crate::dps::json::Json;
use crate::dps::session::Counts;
pub(crate) use crate::dps::session::Polling;
use crate::dps::wire::RegistrationState;
use crate::dps::{Registration, Status};
use crate::metrics::{End, Phases, Sample};
use crate::outcome::{Failure, Source};
use crate::sas::{self, SrEncoding};
use crate::scenario::{Class, DeviceTarget, Enrollment, Expect, Mode, Scenario};

/// `ClientVersion` sent in the MQTT username.
pub(crate) const CLIENT_VERSION: &str = concat!("loadtest/", env!("CARGO_PKG_VERSION"));
/// Lifetime of the SAS tokens devices sign (what SDK-Py uses).
const TOKEN_TTL: u64 = 3600;

/// Where and how devices connect.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// Host name (also the TLS server name).
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS client configuration; `None` = plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// ID scope.
    pub id_scope: String,
    /// Opens the TCP connections (spread over source addresses).
    pub dialer: Arc<crate::dial::Dialer>,
    /// One connect attempt's limit (TCP + TLS + CONNACK).
    pub connect_timeout: Duration,
    /// Connect attempts after a first that failed on the network or timed out.
    pub connect_retries: u32,
    /// MQTT over WebSockets: upgrade on `/$iothub/websocket` before CONNECT.
    pub websocket: bool,
}

/// One device's registration as a transport gets it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Registering<'a> {
    /// Where to connect.
    pub endpoint: &'a Endpoint,
    /// Registration ID.
    pub id: &'a str,
    /// Its SAS token.
    pub token: &'a str,
    /// The register body.
    pub body: &'a [u8],
    /// Polling and back-off.
    pub polling: Polling,
}

/// How one registration ended, before checking.
#[derive(Debug, Default)]
pub(crate) struct Attempt {
    /// The terminal state, when one arrived.
    pub state: Option<RegistrationState>,
    /// Why no terminal state arrived.
    pub failure: Option<Failure>,
    /// Phase timings.
    pub phases: Phases,
    /// Requests sent (register + polls + retries).
    pub requests: u32,
}

impl Attempt {
    /// A failure.
    pub(crate) fn fail(mut self, f: Failure) -> Self {
        self.failure = Some(f);
        self
    }

    /// The session's counts and result; `registered` is when the register request went out.
    pub(crate) fn finish(
        mut self,
        counts: Counts,
        outcome: Result<RegistrationState, Failure>,
        registered: Instant,
    ) -> Self {
        self.requests = counts.requests;
        self.phases.polls = counts.polls;
        self.phases.throttled = counts.throttled;
        self.phases.retry_wait = counts.retry_wait;
        match outcome {
            Ok(st) => {
                self.phases.dps = Some(registered.elapsed());
                self.state = Some(st);
            }
            Err(f) => self.failure = Some(f),
        }
        self
    }
}

struct ClassPlan {
    class: Class,
    /// The expectation without twin fields (those are checked on the hub).
    state_expect: Expect,
}

/// The device-mode executor.
pub(crate) struct DeviceExecutor {
    mode: Mode,
    /// By lane (a job on lane `l` uses `endpoints[l % len]`).
    endpoints: Vec<Endpoint>,
    /// Which enrollment (and so which key) each device registers with.
    enrollment: Enrollment,
    classes: Vec<ClassPlan>,
    population: u64,
    timeout: Duration,
    polling: Polling,
    twins: Option<twin::TwinReader>,
    https: Option<https::Client>,
    observe: bool,
}

impl std::fmt::Debug for DeviceExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceExecutor")
            .field("mode", &self.mode)
            .field(
                "endpoint",
                &format!("{}:{}", self.endpoints[0].host, self.endpoints[0].port),
            )
            .finish_non_exhaustive()
    }
}

impl DeviceExecutor {
    /// Prepares the run. `endpoints` are by lane (at least one); `population` is the population
    /// size (later passes are re-registrations); `twins` reads twins when verification is on.
    pub(crate) fn new(
        s: &Scenario,
        endpoints: Vec<Endpoint>,
        population: u64,
        twins: Option<twin::TwinReader>,
    ) -> Result<Self, String> {
        let d: &DeviceTarget = &s.target.device;
        let classes = s
            .classes
            .iter()
            .map(|c| {
                let mut state_expect = c.expect.clone();
                state_expect.twin_tags = None;
                state_expect.twin_desired = None;
                ClassPlan {
                    class: c.clone(),
                    state_expect,
                }
            })
            .collect();
        let Some(endpoint) = endpoints.first() else {
            return Err("no endpoint to register with".into());
        };
        let https = (s.target.mode == Mode::Https).then(|| {
            https::Client::new(
                endpoint,
                s.load.connections.max(s.load.max_in_flight) as usize,
            )
        });
        Ok(Self {
            mode: s.target.mode,
            endpoints,
            enrollment: s.enrollment.clone(),
            classes,
            population: population.max(1),
            timeout: d.device_timeout,
            polling: Polling {
                floor: d.poll_floor,
                cap: d.poll_cap,
                backoff_initial: d.backoff_initial,
                backoff_max: d.backoff_max,
            },
            twins,
            https,
            observe: false,
        })
    }

    /// Keeps each registration's request and terminal answer for the conformance transcript.
    pub(crate) fn observing(mut self, on: bool) -> Self {
        self.observe = on;
        self
    }

    /// The device's SAS token (upper-case `sr`, `skn=registration`, as the docs and SDK-C#
    /// send), signed with its individual key or its key derived from the group's prepared HMAC.
    fn token_of(&self, id: &str) -> Option<String> {
        let se = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + TOKEN_TTL;
        let sign = |key: &[u8]| {
            sas::device_token_with_key(
                &self.endpoints[0].id_scope,
                id,
                key,
                se,
                SrEncoding::Upper,
                Some("registration"),
            )
        };
        self.enrollment.resolve(id).map(|e| sign(&e.device_key(id)))
    }
}

impl Executor for DeviceExecutor {
    fn abandoned(&self, job: &Job, sent: Instant, done: Instant) -> Sample {
        let plan = &self.classes[job.device.class as usize];
        let id = plan.class.template.render(job.device.n);
        super::abandoned_sample(job, id, &plan.state_expect, sent, done)
    }

    async fn execute(&self, job: Job, sent: Instant) -> Sample {
        let plan = &self.classes[job.device.class as usize];
        let id = plan.class.template.render(job.device.n);
        let round = job.index / self.population;
        let body = crate::dps::wire::register_body(&id, plan.class.payload_json.as_deref());
        let attempt = match self.token_of(&id) {
            None => Attempt::default().fail(Failure::generator("no key for this device")),
            Some(token) => {
                let r = Registering {
                    endpoint: &self.endpoints[job.lane % self.endpoints.len()],
                    id: &id,
                    token: &token,
                    body: &body,
                    polling: self.polling,
                };
                let run = async {
                    match &self.https {
                        Some(c) => c.register(&r).await,
                        None => mqtt::register(&r).await,
                    }
                };
                match tokio::time::timeout(self.timeout, run).await {
                    Ok(a) => a,
                    Err(_) => Attempt::default().fail(Failure::new(
                        End::TimedOut,
                        Source::Timeout,
                        format!("no terminal status within {:?}", self.timeout),
                    )),
                }
            }
        };
        let done = Instant::now();
        let mut phases = attempt.phases;
        let (registration, end, error) = match (&attempt.state, attempt.failure) {
            (Some(st), _) => (to_registration(st), End::Answered, None),
            (None, Some(f)) => (
                Registration {
                    status: f.code.map(|_| Status::Failed),
                    error_code: f.code,
                    error_message: Some(f.message.clone()),
                    ..Registration::default()
                },
                f.end,
                Some(f),
            ),
            (None, None) => (
                Registration::default(),
                End::Transport,
                Some(Failure::target("no answer")),
            ),
        };
        let mut mismatches: Vec<Mismatch> = check::compare(&plan.state_expect, &registration);
        let expected_sub = if round == 0 {
            plan.class.expect.substatus.as_deref()
        } else {
            plan.class.expect.substatus_again.as_deref()
        };
        if let Some(m) = check::substatus(
            expected_sub,
            attempt.state.as_ref().and_then(|s| s.substatus.as_deref()),
        ) {
            mismatches.push(m);
        }
        let wants_twin =
            plan.class.expect.twin_tags.is_some() || plan.class.expect.twin_desired.is_some();
        if let (Some(reader), Some(st), true) = (&self.twins, &attempt.state, wants_twin) {
            if let (Some(hub), Some(device)) = (&st.assigned_hub, &st.device_id) {
                match reader.read(hub, device).await {
                    Ok(twin) => {
                        phases.twin_checked = true;
                        mismatches.extend(check::twin(&plan.class.expect, &twin));
                    }
                    Err(e) => {
                        phases.twin_checked = true;
                        mismatches.push(Mismatch {
                            field: check::Field::Twin,
                            expected: "a readable twin".into(),
                            actual: serde_json::Value::String(e).to_string(),
                        });
                    }
                }
            }
        }
        let response = attempt.state.as_ref().filter(|_| self.observe).map(|st| {
            let json = serde_json::to_vec(st).expect("a registration state serialises");
            (200, bytes::Bytes::from(json))
        });
        Ended {
            id,
            registration,
            end,
            error,
            attempts: attempt.requests,
            mismatches,
            request: self.observe.then(|| bytes::Bytes::from(body)),
            response,
            phases: Some(phases),
            throttled: 0,
        }
        .sample(&job, sent, done, self.observe)
    }
}

fn to_registration(st: &RegistrationState) -> Registration {
    Registration {
        status: Status::parse(&st.status),
        assigned_hub: st.assigned_hub.as_deref().map(Into::into),
        device_id: st.device_id.clone(),
        error_code: st.error_code,
        error_message: st.error_message.clone(),
        initial_twin: None,
        payload: st.payload.as_ref().map(Json::from_value),
    }
}
