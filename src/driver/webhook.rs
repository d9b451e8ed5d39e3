//! Webhook mode: each request is one device registration as DPS performs it against a custom
//! allocation webhook: POST the exact AllocationRequest, follow DPS's retry schedule on >= 429,
//! map the final answer with [`crate::dps::outcome`], and check it against the class expectation.
//!
//! HTTP is a hyper 1.x client with a keep-alive pool; `https://` goes through rustls. Per-run constants (enrollment JSON, linked
//! hubs, payloads) are serialised once in [`Offer`]s; a request only renders its ID and body.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::time::Instant;

use super::{Executor, Job};
use crate::check;
use crate::conformance::transcript::Observation;
use crate::dps::allocation::{DeviceContext, EnrollmentRecord, RequestTemplate};
use crate::dps::outcome::{Answer, Context, Decision, Rules};
use crate::dps::{Registration, Status};
use crate::metrics::{End, Sample};
use crate::scenario::{Class, Scenario};

/// Largest webhook response read (larger bodies are a transport error).
const MAX_RESPONSE: usize = 1 << 20;
const FUNCTIONS_KEY: HeaderName = HeaderName::from_static("x-functions-key");

/// What one enrollment offers the webhook for one class.
#[derive(Debug)]
struct Offer {
    request: RequestTemplate,
    linked: Vec<String>,
    enrollment_twin: Option<Value>,
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
        }
    }
}

#[derive(Debug)]
struct ClassPlan {
    class: Class,
    group: Option<Offer>,
}

#[derive(Debug)]
struct IndividualPlan {
    offer: Offer,
    device_id: String,
    disabled: bool,
}

/// The webhook-mode executor.
#[derive(Debug)]
pub struct WebhookExecutor {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: Uri,
    function_key: Option<HeaderValue>,
    timeout: Duration,
    rules: Rules,
    classes: Vec<ClassPlan>,
    /// Lower-cased registration ID → individual enrollment (DPS lets it win over the group).
    individuals: HashMap<String, IndividualPlan>,
    /// Keep each exchange for the conformance transcript.
    observe: bool,
}

/// The webhook URL could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Not a valid URI.
    #[error("the webhook URL is not valid: {0}")]
    Url(String),
    /// Not a valid header value.
    #[error("the function key cannot be sent as a header (it contains invalid characters)")]
    FunctionKey,
}

impl WebhookExecutor {
    /// Prepares everything constant for the run. `url` is the effective webhook URL.
    pub fn new(s: &Scenario, url: &str) -> Result<Self, SetupError> {
        let uri: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| SetupError::Url(e.to_string()))?;
        let function_key = s
            .target
            .function_key
            .as_ref()
            .map(|k| HeaderValue::from_str(k.expose()).map_err(|_| SetupError::FunctionKey))
            .transpose()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(s.target.timeout));
        connector.enforce_http(false);
        // https:// (a deployed Azure Function) is verified against the Mozilla roots (webpki-roots),
        // so results do not depend on the machine's certificate store.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(s.load.connections.max(s.load.max_in_flight) as usize)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
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
            })
            .collect::<Vec<_>>();
        let mut individuals = HashMap::new();
        for i in &s.enrollment.individuals {
            let Some(class) = s.classes.iter().find(|c| {
                c.template
                    .matches(&i.registration_id)
                    .is_some_and(|n| (c.range.0..=c.range.1).contains(&n))
            }) else {
                continue;
            };
            individuals.insert(
                i.registration_id.to_ascii_lowercase(),
                IndividualPlan {
                    offer: Offer::new(
                        &i.record,
                        true,
                        &i.offered_hubs,
                        class,
                        i.initial_twin.as_ref(),
                    ),
                    device_id: i.device_id.clone(),
                    disabled: i.disabled,
                },
            );
        }
        Ok(Self {
            client,
            uri,
            function_key,
            timeout: s.target.timeout,
            rules: s.rules.clone(),
            classes,
            individuals,
            observe: false,
        })
    }

    /// Keeps each request's full exchange in its sample (conformance mode).
    pub fn observing(mut self, on: bool) -> Self {
        self.observe = on;
        self
    }

    async fn call(&self, body: Bytes) -> (Option<(u16, Bytes)>, End, Option<String>) {
        let mut req = Request::post(self.uri.clone()).header(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if let Some(k) = &self.function_key {
            req = req.header(FUNCTIONS_KEY, k.clone());
        }
        let req = req
            .body(Full::new(body))
            .expect("a POST with a valid URI is a valid request");
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| describe(&e))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| describe(e.as_ref()))?;
            Ok::<_, String>((status, body.to_bytes()))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(r)) => (Some(r), End::Answered, None),
            Ok(Err(e)) => (None, End::Transport, Some(e)),
            Err(_) => (
                None,
                End::TimedOut,
                Some(format!("no answer within {:?}", self.timeout)),
            ),
        }
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

/// A transport error as one line: the error and its causes, e.g.
/// `client error (Connect): tcp connect error: Connection refused (os error 111)`; rustls errors
/// are labelled `TLS handshake failed: …`.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    let mut tls = false;
    while let Some(s) = src {
        tls |= is_tls(s);
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    if tls {
        out.insert_str(0, "TLS handshake failed: ");
    }
    out
}

/// True when the error is a rustls error, possibly inside (nested) `io::Error`s.
fn is_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.is::<rustls::Error>() {
        return true;
    }
    match e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        Some(inner) => is_tls(inner),
        None => false,
    }
}

impl Executor for WebhookExecutor {
    async fn execute(&self, job: Job) -> Sample {
        let plan = &self.classes[job.device.class as usize];
        let id = plan.class.template.render(job.device.n);
        let individual = if self.individuals.is_empty() {
            None
        } else {
            self.individuals.get(&id.to_ascii_lowercase())
        };
        let (offer, device_id) = match (individual, &plan.group) {
            (Some(i), _) => (&i.offer, i.device_id.as_str()),
            (None, Some(g)) => (g, id.as_str()),
            (None, None) => unreachable!("validation guarantees every device has an enrollment"),
        };
        let sent = Instant::now();
        let mut exchange = None;
        let (registration, end, error, attempts) = if individual.is_some_and(|i| i.disabled) {
            // DPS answers `disabled` without calling the webhook.
            (
                Registration {
                    status: Some(Status::Disabled),
                    ..Registration::default()
                },
                End::Answered,
                None,
                0,
            )
        } else {
            let body = Bytes::from(offer.request.body(&device_context(&plan.class, &id)));
            let ctx = Context {
                linked_hubs: &offer.linked,
                device_id,
                enrollment_twin: offer.enrollment_twin.as_ref(),
            };
            let mut retries = 0;
            loop {
                let (response, end, error) = self.call(body.clone()).await;
                let answer = match (&response, end) {
                    (Some((status, body)), _) => Answer::Response {
                        status: *status,
                        body,
                    },
                    (None, End::TimedOut) => Answer::TimedOut,
                    (None, _) => Answer::Transport,
                };
                let decision = self.rules.decide(answer, &ctx, retries);
                if self.observe {
                    exchange = Some((body.clone(), response));
                }
                match decision {
                    Decision::Final(r) => break (r, end, error, retries + 1),
                    Decision::Retry => {
                        retries += 1;
                        tokio::time::sleep(self.rules.retry.delay(retries).unwrap_or_default())
                            .await;
                    }
                }
            }
        };
        let done = Instant::now();
        let mismatches = check::compare(&plan.class.expect, &registration);
        let observed = self.observe.then(|| {
            let (request, response) = exchange.map_or((None, None), |(b, r)| (Some(b), r));
            Box::new(Observation {
                registration_id: id.clone(),
                registration: registration.clone(),
                request,
                response,
                attempts,
            })
        });
        Sample {
            class: job.device.class,
            intended: job.intended,
            sent,
            done,
            end,
            outcome: registration.key(),
            attempts,
            mismatch: (!mismatches.is_empty()).then(|| Box::new((id, mismatches))),
            error,
            hub: registration.assigned_hub,
            observed,
        }
    }
}
