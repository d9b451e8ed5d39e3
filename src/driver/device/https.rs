//! One device registration over HTTPS with hyper (dps-protocol.md §4): `PUT
//! /{scope}/registrations/{id}/register` (202 expected), then `GET …/operations/{id}` after
//! `Retry-After` until 200; the SAS token in `Authorization`; one keep-alive pool for all devices
//! (DPS allows connection reuse). The register/poll/back-off logic is [`Session`]'s (shared with
//! the MQTT transport); failures are classified like the MQTT driver's.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use hyper::Request;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as Hyper;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use super::{Attempt, Endpoint, Registering, CLIENT_VERSION};
use crate::dps::session::{Answer, Request as SessionRequest, Session, Step};
use crate::dps::wire;
use crate::outcome::{End, Failure, Source};

/// The shared HTTP client.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    inner: Hyper<HttpsConnector<HttpConnector>, Full<Bytes>>,
    scheme: &'static str,
}

impl Client {
    /// A pooled client for the endpoint's TLS settings (each registration names its endpoint).
    pub(crate) fn new(ep: &Endpoint, pool: usize) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let connector = match &ep.tls {
            Some(cfg) => builder
                .with_tls_config(Arc::unwrap_or_clone(cfg.clone()))
                .https_or_http()
                .enable_http1()
                .wrap_connector(http),
            None => builder
                .with_webpki_roots()
                .https_or_http()
                .enable_http1()
                .wrap_connector(http),
        };
        Self {
            inner: Hyper::builder(TokioExecutor::new())
                .pool_max_idle_per_host(pool)
                .build(connector),
            scheme: if ep.tls.is_some() { "https" } else { "http" },
        }
    }

    async fn send(
        &self,
        method: &str,
        url: &str,
        token: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Option<u32>, Bytes), Failure> {
        let req = Request::builder()
            .method(method)
            .uri(url)
            .header(AUTHORIZATION, token)
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            )
            .header(USER_AGENT, CLIENT_VERSION)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure::generator(e.to_string()))?;
        let resp = self
            .inner
            .request(req)
            .await
            .map_err(|e| crate::webhook::client::failure(&e))?;
        let status = resp.status().as_u16();
        let retry = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let body = Limited::new(resp.into_body(), wire::MAX_MESSAGE)
            .collect()
            .await
            .map_err(|e| {
                Failure::new(
                    End::Transport,
                    Source::Network,
                    format!("reading the answer: {e}"),
                )
            })?
            .to_bytes();
        Ok((status, retry, body))
    }

    /// Registers one device. The registration logic is the [`Session`]'s; this only moves its
    /// requests and answers over HTTP.
    pub(crate) async fn register(&self, r: &Registering<'_>) -> Attempt {
        let (ep, id, body) = (r.endpoint, r.id, r.body);
        let a = Attempt::default();
        let started = Instant::now();
        let (mut session, mut request) = Session::start(r.polling, "HTTP ");
        let mut first_response = None;
        let outcome = loop {
            let (method, path, payload) = match &request {
                SessionRequest::Register { .. } => {
                    ("PUT", wire::register_path(&ep.id_scope, id), body.to_vec())
                }
                SessionRequest::Poll { operation_id, .. } => (
                    "GET",
                    wire::operation_path(&ep.id_scope, id, operation_id),
                    Vec::new(),
                ),
            };
            // The registration's own endpoint: with lanes, its lane's listener.
            let url = format!("{}://{}:{}{path}", self.scheme, ep.host, ep.port);
            let (status, retry_after, bytes) = match self.send(method, &url, r.token, payload).await
            {
                Ok(r) => r,
                Err(f) => break Err(f),
            };
            first_response.get_or_insert_with(|| started.elapsed());
            match session.on_answer(Answer {
                status,
                rid: None,
                retry_after,
                body: &bytes,
            }) {
                Step::Ignore => unreachable!("answers without a $rid are always ours"),
                Step::Send(wait, r) => {
                    tokio::time::sleep(wait).await;
                    request = r;
                }
                Step::Done(result) => break result,
            }
        };
        let mut a = a;
        a.phases.first_response = first_response;
        a.finish(session.counts, outcome, started)
    }
}
