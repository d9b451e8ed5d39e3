//! Webhook mode: each request is one device registration as DPS performs it against a custom
//! allocation webhook: POST the exact AllocationRequest, follow DPS's retry schedule on >= 429,
//! map the final answer with [`crate::dps::outcome`], and check it against the class expectation.
//!
//! The HTTP exchange and retry loop are [`WebhookClient`]'s (shared with the emulator). Per-run
//! constants (enrollment JSON, linked hubs, payloads) are serialised once in [`Offer`]s; a
//! request only renders its ID and body.

use bytes::Bytes;
use serde_json::Value;
use tokio::time::Instant;

use super::{Ended, Executor, Job};
use crate::check;
use crate::dps::allocation::{DeviceContext, EnrollmentRecord, RequestTemplate};
use crate::dps::outcome::{Context, Recent, Rules};
use crate::dps::{Registration, Status};
use crate::metrics::{End, Sample};
use crate::outcome::Failure;
use crate::scenario::{Class, Enrollment, Scenario, Secret, Via};
pub(crate) use crate::webhook::client::SetupError;
use crate::webhook::client::WebhookClient;

/// What one enrollment offers the webhook for one class.
#[derive(Debug)]
struct Offer {
    request: RequestTemplate,
    linked: Vec<String>,
    enrollment_twin: Option<Value>,
    /// Its last answer and registration (repeated answers are read once).
    recent: Recent,
}

impl Offer {
    fn new(
        record: &EnrollmentRecord,
        individual: bool,
        offered: &[String],
        class: &Class,
        twin: Option<&Value>,
    ) -> Self {
        // "Never reprovision": the webhook is offered only the device's current hub (§5.2).
        let linked = match &class.current {
            Some(c) if !record.reprovision_policy.update_hub_assignment => vec![c.hub.clone()],
            _ => offered.to_vec(),
        };
        Self {
            request: RequestTemplate::new(record, individual, &linked),
            linked,
            enrollment_twin: twin.cloned(),
            recent: Recent::default(),
        }
    }
}

#[derive(Debug)]
struct ClassPlan {
    class: Class,
    group: Option<Offer>,
    /// The documents last checked against the class's expectation.
    checked: check::Recent,
}

/// The webhook-mode executor.
#[derive(Debug)]
pub(crate) struct WebhookExecutor {
    client: WebhookClient,
    rules: Rules,
    classes: Vec<ClassPlan>,
    /// Which enrollment each device registers through (the one resolver every side uses).
    enrollment: Enrollment,
    /// Per individual enrollment (by index), its offer for the class its ID belongs to.
    individuals: Vec<Option<Offer>>,
    /// Keep each exchange for the conformance transcript.
    observe: bool,
}

impl WebhookExecutor {
    /// Prepares everything constant for the run. `url` is the effective webhook URL.
    pub(crate) fn new(s: &Scenario, url: &str) -> Result<Self, SetupError> {
        let client = WebhookClient::new(
            url,
            s.target.function_key.as_ref().map(Secret::expose),
            s.target.timeout,
            s.load.connections.max(s.load.max_in_flight) as usize,
            s.target.ca.as_deref(),
        )?;
        let classes = s
            .classes
            .iter()
            .map(|c| ClassPlan {
                group: s.enrollment.group.as_ref().map(|g| {
                    Offer::new(
                        &g.record,
                        false,
                        &g.offered_hubs,
                        c,
                        g.initial_twin.as_ref(),
                    )
                }),
                class: c.clone(),
                checked: check::Recent::default(),
            })
            .collect::<Vec<_>>();
        let individuals = s
            .enrollment
            .individuals
            .iter()
            .map(|i| {
                let class = s.classes.iter().find(|c| {
                    c.template
                        .matches(&i.registration_id)
                        .is_some_and(|n| (c.range.0..=c.range.1).contains(&n))
                })?;
                Some(Offer::new(
                    &i.record,
                    true,
                    &i.offered_hubs,
                    class,
                    i.initial_twin.as_ref(),
                ))
            })
            .collect();
        Ok(Self {
            client,
            rules: s.rules.clone(),
            classes,
            enrollment: s.enrollment.clone(),
            individuals,
            observe: false,
        })
    }

    /// Keeps each request's full exchange in its sample (conformance mode).
    pub(crate) fn observing(mut self, on: bool) -> Self {
        self.observe = on;
        self
    }
}

fn device_context<'a>(class: &'a Class, registration_id: &'a str) -> DeviceContext<'a> {
    DeviceContext {
        registration_id,
        current_hub: class.current.as_ref().map(|c| c.hub.as_str()),
        current_device_id: class
            .current
            .as_ref()
            .map(|c| c.device_id.as_deref().unwrap_or(registration_id)),
        payload_json: class.payload_json.as_deref(),
    }
}

impl Executor for WebhookExecutor {
    fn abandoned(&self, job: &Job, sent: Instant, done: Instant) -> Sample {
        let plan = &self.classes[job.device.class as usize];
        let id = plan.class.template.render(job.device.n);
        super::abandoned_sample(job, id, &plan.class.expect, sent, done)
    }

    async fn execute(&self, job: Job, sent: Instant) -> Sample {
        let plan = &self.classes[job.device.class as usize];
        let id = plan.class.template.render(job.device.n);
        let enrollee = self.enrollment.resolve(&id);
        let offer = enrollee.as_ref().and_then(|e| match e.via {
            Via::Individual(i) => self.individuals[i].as_ref(),
            Via::Group => plan.group.as_ref(),
        });
        let mut exchange = None;
        let mut throttled = 0;
        let (registration, end, error, attempts) = match (&enrollee, offer) {
            // DPS answers `disabled` without calling the webhook, for a disabled group as for a
            // disabled individual enrollment.
            (Some(e), _) if e.disabled => (
                Registration {
                    status: Some(Status::Disabled),
                    ..Registration::default()
                },
                End::Answered,
                None,
                0,
            ),
            (Some(e), Some(offer)) => {
                let body = offer.request.body(&device_context(&plan.class, &id));
                let ctx = Context {
                    linked_hubs: &offer.linked,
                    device_id: e.device_id,
                    enrollment_twin: offer.enrollment_twin.as_ref(),
                    recent: Some(&offer.recent),
                };
                let a = self.client.allocate(&self.rules, &body, &ctx, sent).await;
                if self.observe {
                    exchange = Some((Bytes::from(body), a.last));
                }
                throttled = a.throttled;
                (a.registration, a.end, a.error, a.attempts)
            }
            // Validation guarantees every device has an enrollment; refuse rather than panic.
            _ => (
                Registration::default(),
                End::Transport,
                Some(Failure::generator("no enrollment covers this device")),
                0,
            ),
        };
        let done = Instant::now();
        let mismatches = check::compare_recent(&plan.class.expect, &registration, &plan.checked);
        let (request, response) = exchange.map_or((None, None), |(b, r)| (Some(b), r));
        Ended {
            id,
            registration,
            end,
            error,
            attempts,
            mismatches,
            request,
            response,
            phases: None,
            throttled,
        }
        .sample(&job, sent, done, self.observe)
    }
}
