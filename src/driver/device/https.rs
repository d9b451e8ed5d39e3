//! One device registration over HTTPS with hyper (dps-protocol.md §4): `PUT
//! /{scope}/registrations/{id}/register` (202 expected), then `GET …/operations/{id}` after
//! `Retry-After` until 200; the SAS token in `Authorization`; one keep-alive pool for all devices
//! (DPS allows connection reuse). Failures are classified like the MQTT driver's.

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

use super::{Attempt, Endpoint, Polling, CLIENT_VERSION};
use crate::dps::wire::{self, OperationStatus};
use crate::metrics::End;
use crate::sas::url_encode;

/// The shared HTTP client.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Hyper<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
}

impl Client {
    /// A pooled client for the endpoint.
    pub fn new(ep: &Endpoint, pool: usize) -> Self {
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
        let scheme = if ep.tls.is_some() { "https" } else { "http" };
        Self {
            inner: Hyper::builder(TokioExecutor::new())
                .pool_max_idle_per_host(pool)
                .build(connector),
            base: format!("{scheme}://{}:{}", ep.host, ep.port),
        }
    }

    async fn send(
        &self,
        method: &str,
        url: &str,
        token: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Option<u32>, Bytes), (End, String)> {
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
            .map_err(|e| (End::Transport, format!("[generator] {e}")))?;
        let resp = self.inner.request(req).await.map_err(|e| {
            let text = crate::webhook::client::describe(&e);
            let kind = if text.starts_with("TLS") {
                "[tls]"
            } else {
                "[network]"
            };
            (End::Transport, format!("{kind} {text}"))
        })?;
        let status = resp.status().as_u16();
        let retry = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let body = Limited::new(resp.into_body(), wire::MAX_MESSAGE)
            .collect()
            .await
            .map_err(|e| (End::Transport, format!("[network] reading the answer: {e}")))?
            .to_bytes();
        Ok((status, retry, body))
    }

    /// Registers one device.
    pub async fn register(
        &self,
        ep: &Endpoint,
        id: &str,
        token: &str,
        body: &[u8],
        polling: &Polling,
    ) -> Attempt {
        let mut a = Attempt::default();
        let path = format!(
            "{}/{}/registrations/{}",
            self.base,
            url_encode(&ep.id_scope),
            url_encode(id)
        );
        let register_url = format!("{path}/register?api-version={}", wire::API_VERSION);
        let started = Instant::now();
        let mut url = register_url.clone();
        let mut method = "PUT";
        let mut payload = body.to_vec();
        let mut throttled_in_a_row = 0;
        loop {
            a.requests += 1;
            let (status, retry_after, bytes) =
                match self.send(method, &url, token, payload.clone()).await {
                    Ok(r) => r,
                    Err((end, msg)) => return a.fail(end, msg, None),
                };
            if a.phases.first_response.is_none() {
                a.phases.first_response = Some(started.elapsed());
            }
            match status {
                200 | 202 => {
                    let op: OperationStatus = match serde_json::from_slice(&bytes) {
                        Ok(op) => op,
                        Err(e) => {
                            return a.fail(
                                End::Answered,
                                format!("[target] malformed response JSON: {e}"),
                                None,
                            )
                        }
                    };
                    if status == 200 || op.status != "assigning" {
                        a.phases.dps = Some(started.elapsed());
                        a.state = op.registration_state;
                        if a.state.is_none() {
                            return a.fail(
                                End::Answered,
                                "[target] terminal response without registrationState".into(),
                                None,
                            );
                        }
                        return a;
                    }
                    throttled_in_a_row = 0;
                    let wait = polling.after(retry_after);
                    a.phases.retry_wait += wait;
                    tokio::time::sleep(wait).await;
                    url = format!(
                        "{path}/operations/{}?api-version={}",
                        url_encode(&op.operation_id),
                        wire::API_VERSION
                    );
                    method = "GET";
                    payload = Vec::new();
                    a.phases.polls += 1;
                }
                s if s == 429 || s >= 500 => {
                    a.phases.throttled += u32::from(s == 429);
                    let wait = polling.throttled(retry_after, throttled_in_a_row);
                    throttled_in_a_row += 1;
                    a.phases.retry_wait += wait;
                    tokio::time::sleep(wait).await;
                }
                _ => {
                    let detail: serde_json::Value =
                        serde_json::from_slice(&bytes).unwrap_or_default();
                    let code = detail["errorCode"].as_u64().map(|c| c as u32);
                    return a.fail(
                        End::Answered,
                        format!(
                            "[target] HTTP {status}: {}",
                            detail["message"].as_str().unwrap_or("error")
                        ),
                        code,
                    );
                }
            }
        }
    }
}
