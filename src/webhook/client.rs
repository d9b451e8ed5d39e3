//! A client of a custom-allocation webhook, as DPS is one: POST the AllocationRequest, follow
//! DPS's retry schedule on >= 429, and map the final answer with [`crate::dps::outcome`].
//!
//! Used by the webhook-mode driver (which measures it) and by the DPS emulator (which calls the
//! configured webhook the way DPS does). HTTP is a hyper 1.x client with a keep-alive pool;
//! `https://` goes through rustls with the Mozilla roots. Nothing here checks expectations.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::dps::outcome::{Answer, Context, Decision, Rules};
use crate::dps::Registration;
use crate::outcome::{End, Failure, Source};

/// Largest webhook response read (larger bodies are a transport error).
const MAX_RESPONSE: usize = 1 << 20;
const FUNCTIONS_KEY: HeaderName = HeaderName::from_static("x-functions-key");

/// The webhook URL could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SetupError {
    /// Not a valid URI.
    #[error("the webhook URL is not valid: {0}")]
    Url(String),
    /// Not a valid header value.
    #[error("the function key cannot be sent as a header (it contains invalid characters)")]
    FunctionKey,
    /// `target.ca` cannot be used.
    #[error("target.ca: {0}")]
    Ca(String),
}

/// The webhook, ready to be called.
#[derive(Debug, Clone)]
pub(crate) struct WebhookClient {
    transport: Transport,
    timeout: Duration,
}

#[derive(Debug, Clone)]
struct Http {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: Uri,
    function_key: Option<HeaderValue>,
}

#[derive(Debug, Clone)]
enum Transport {
    /// POSTs over HTTP(S).
    Http(Box<Http>),
    /// The embedded reference webhook in this process: the same body in, the same status and
    /// body out (and the same delay), without a loopback HTTP exchange per call.
    InProcess(std::sync::Arc<crate::webhook::server::Responder>),
}

/// One allocation: the final result and how it was reached.
#[derive(Debug, Clone)]
pub(crate) struct Allocation {
    /// What DPS reports to the device.
    pub registration: Registration,
    /// How the last call ended.
    pub end: End,
    /// Transport error of the last call, if any.
    pub error: Option<Failure>,
    /// Calls made (1 + retries).
    pub attempts: u32,
    /// The last answer (status, body), if one arrived.
    pub last: Option<(u16, Bytes)>,
    /// Answers that were 429 (throttled), retried or final.
    pub throttled: u32,
}

impl WebhookClient {
    /// A client for `url`; `function_key` is sent as `x-functions-key`; `pool` idle connections
    /// are kept.
    pub(crate) fn new(
        url: &str,
        function_key: Option<&str>,
        timeout: Duration,
        pool: usize,
        ca: Option<&std::path::Path>,
    ) -> Result<Self, SetupError> {
        let uri: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| SetupError::Url(e.to_string()))?;
        let function_key = function_key
            .map(|k| HeaderValue::from_str(k).map_err(|_| SetupError::FunctionKey))
            .transpose()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        connector.enforce_http(false);
        // https:// (a deployed Azure Function) is verified against the Mozilla roots (webpki-roots),
        // so results do not depend on the machine's certificate store, plus `ca` if given.
        let tls = crate::tls::client_config(ca).map_err(|e| SetupError::Ca(e.to_string()))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        // One write per request (head and body flattened into one buffer): a small copy instead of
        // a writev of two iovecs. Not yet shown to matter in benches/vs-wrk.sh (noisy here).
        let client = Client::builder(TokioExecutor::new())
            .http1_writev(false)
            .pool_max_idle_per_host(pool)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            transport: Transport::Http(Box::new(Http {
                client,
                uri,
                function_key,
            })),
            timeout,
        })
    }

    /// The embedded reference webhook, called in-process; `timeout` applies as over HTTP.
    pub(crate) fn in_process(config: crate::webhook::server::Config, timeout: Duration) -> Self {
        Self {
            transport: Transport::InProcess(std::sync::Arc::new(
                crate::webhook::server::Responder::new(config),
            )),
            timeout,
        }
    }

    /// Calls the webhook until DPS would stop: the first answer that is final under `rules`, or
    /// the last retry.
    pub(crate) async fn allocate(
        &self,
        rules: &Rules,
        body: Bytes,
        ctx: &Context<'_>,
    ) -> Allocation {
        let mut retries = 0;
        let mut throttled = 0;
        loop {
            let (response, end, error) = self.call(body.clone()).await;
            throttled += u32::from(matches!(response, Some((429, _))));
            let answer = match (&response, end) {
                (Some((status, body)), _) => Answer::Response {
                    status: *status,
                    body,
                },
                (None, End::TimedOut) => Answer::TimedOut,
                (None, _) => Answer::Transport,
            };
            match rules.decide(answer, ctx, retries) {
                Decision::Final(registration) => {
                    return Allocation {
                        registration,
                        end,
                        error,
                        attempts: retries + 1,
                        last: response,
                        throttled,
                    }
                }
                Decision::Retry => {
                    retries += 1;
                    tokio::time::sleep(rules.retry.delay(retries).unwrap_or_default()).await;
                }
            }
        }
    }

    /// One POST: the answer, how it ended, and the transport error if any.
    pub(crate) async fn call(&self, body: Bytes) -> (Option<(u16, Bytes)>, End, Option<Failure>) {
        let (client, uri, function_key) = match &self.transport {
            Transport::Http(h) => (&h.client, &h.uri, &h.function_key),
            Transport::InProcess(responder) => {
                return match tokio::time::timeout(self.timeout, responder.answer(&body)).await {
                    Ok(reply) => (
                        Some((reply.status, Bytes::from(reply.body))),
                        End::Answered,
                        None,
                    ),
                    Err(_) => (None, End::TimedOut, Some(self.timed_out())),
                };
            }
        };
        let mut req = Request::post(uri.clone()).header(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if let Some(k) = function_key {
            req = req.header(FUNCTIONS_KEY, k.clone());
        }
        let req = req
            .body(Full::new(body))
            .expect("a POST with a valid URI is a valid request");
        let exchange = async {
            let resp = client.request(req).await.map_err(|e| failure(&e))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| failure(e.as_ref()))?;
            Ok::<_, Failure>((status, body.to_bytes()))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(r)) => (Some(r), End::Answered, None),
            Ok(Err(f)) => (None, End::Transport, Some(f)),
            Err(_) => (None, End::TimedOut, Some(self.timed_out())),
        }
    }

    fn timed_out(&self) -> Failure {
        Failure::new(
            End::TimedOut,
            Source::Timeout,
            format!("no answer within {:?}", self.timeout),
        )
    }
}

/// A transport error as a [`Failure`]: TLS when rustls is anywhere in its causes, else network;
/// the message is [`describe`]'s.
pub(crate) fn failure(e: &(dyn std::error::Error + 'static)) -> Failure {
    let mut tls = false;
    let mut src = Some(e);
    while let Some(s) = src {
        tls |= is_tls(s);
        src = s.source();
    }
    let source = if tls { Source::Tls } else { Source::Network };
    Failure::new(End::Transport, source, describe(e))
}

/// A transport error as one line: the error and its causes, e.g.
/// `client error (Connect): tcp connect error: Connection refused (os error 111)`; rustls errors
/// are labelled `TLS handshake failed: …`.
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
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
