//! A client of a custom-allocation webhook, as DPS is one: POST the AllocationRequest, follow
//! DPS's retry schedule on >= 429, and map the final answer with [`crate::dps::outcome`].
//!
//! Used by the webhook-mode driver (which measures it) and by the DPS emulator (which calls the
//! configured webhook the way DPS does). Requests go over [`super::pool`]'s kept-alive
//! connections; `https://` goes through rustls with the Mozilla roots. Nothing here checks
//! expectations.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::Uri;
use tokio::time::Instant;

use super::pool::{is_tls, Http, Unanswered};
use crate::dps::outcome::{Answer, Context, Decision, Rules};
use crate::dps::Registration;
use crate::outcome::{End, Failure, Source};

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
enum Transport {
    /// POSTs over HTTP(S).
    Http(Arc<Http>),
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
        // Header values are checked as hyper would (no CR, LF or other controls).
        if function_key.is_some_and(|k| HeaderValue::from_str(k).is_err()) {
            return Err(SetupError::FunctionKey);
        }
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => {
                return Err(SetupError::Url(format!(
                    "the scheme must be http or https, not {}",
                    other.unwrap_or("(none)")
                )))
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| SetupError::Url("no host".into()))?
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let host_header = uri
            .authority()
            .map_or(host.as_str(), hyper::http::uri::Authority::as_str);
        HeaderValue::from_str(host_header).map_err(|e| SetupError::Url(e.to_string()))?;
        let path = uri
            .path_and_query()
            .map_or("/", hyper::http::uri::PathAndQuery::as_str);
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nhost: {host_header}\r\ncontent-type: application/json; charset=utf-8\r\n"
        );
        if let Some(k) = function_key {
            head.push_str("x-functions-key: ");
            head.push_str(k);
            head.push_str("\r\n");
        }
        // https:// (a deployed Azure Function) is verified against the Mozilla roots (webpki-roots),
        // so results do not depend on the machine's certificate store, plus `ca` if given.
        let tls = if https {
            let mut config = (*crate::tls::client_config(ca)
                .map_err(|e| SetupError::Ca(e.to_string()))?)
            .clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name =
                rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                    .map_err(|e| SetupError::Url(format!("{host}: {e}")))?;
            Some((name, Arc::new(config)))
        } else {
            None
        };
        Ok(Self {
            transport: Transport::Http(Arc::new(Http::new(
                authority,
                head.into_bytes(),
                tls,
                pool.max(1),
            ))),
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
    /// the last retry. `started`: when the first call starts (its timeout runs from there).
    pub(crate) async fn allocate(
        &self,
        rules: &Rules,
        body: &[u8],
        ctx: &Context<'_>,
        mut started: Instant,
    ) -> Allocation {
        let mut retries = 0;
        let mut throttled = 0;
        loop {
            let (response, end, error) = self.call(body, started).await;
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
                    started = Instant::now();
                }
            }
        }
    }

    /// One POST, its timeout running from `started`: the answer, how it ended, and the transport
    /// error if any.
    pub(crate) async fn call(
        &self,
        body: &[u8],
        started: Instant,
    ) -> (Option<(u16, Bytes)>, End, Option<Failure>) {
        let http = match &self.transport {
            Transport::Http(h) => h,
            Transport::InProcess(responder) => {
                return match tokio::time::timeout_at(started + self.timeout, responder.answer(body))
                    .await
                {
                    Ok(reply) => (
                        Some((reply.status, Bytes::from(reply.body))),
                        End::Answered,
                        None,
                    ),
                    Err(_) => (None, End::TimedOut, Some(self.timed_out())),
                };
            }
        };
        match http.post(body, started + self.timeout).await {
            Ok(r) => (Some(r), End::Answered, None),
            Err(Unanswered::Failed(f) | Unanswered::Closed(f)) => (None, End::Transport, Some(f)),
            Err(Unanswered::TimedOut) => (None, End::TimedOut, Some(self.timed_out())),
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A server that answers `per_connection` requests on each connection, then closes it
    /// without saying so (as a webhook host dropping idle keep-alive connections does); returns
    /// its address and how many connections it accepted.
    async fn server(per_connection: usize) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    for _ in 0..per_connection {
                        let mut got = Vec::new();
                        // Head and the small body arrive in one write.
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            let n = s.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            got.extend_from_slice(&buf[..n]);
                        }
                        let body = br#"{"iotHubHostName":"a"}"#;
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        let _ = s.write_all(head.as_bytes()).await;
                        let _ = s.write_all(body).await;
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn client(addr: std::net::SocketAddr) -> WebhookClient {
        WebhookClient::new(
            &format!("http://{addr}/api/HttpTrigger1?code=k"),
            Some("key"),
            Duration::from_secs(5),
            4,
            None,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn connections_are_kept_alive_and_reused() {
        let (addr, accepted) = server(100).await;
        let c = client(addr);
        for _ in 0..5 {
            let (answer, end, _) = c.call(b"{}", tokio::time::Instant::now()).await;
            assert_eq!(end, End::Answered);
            assert_eq!(answer.unwrap().0, 200);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_dropped_is_replaced_not_failed() {
        let (addr, accepted) = server(1).await;
        let c = client(addr);
        for _ in 0..3 {
            let (answer, end, failure) = c.call(b"{}", tokio::time::Instant::now()).await;
            assert_eq!(end, End::Answered, "{failure:?}");
            assert_eq!(answer.unwrap().0, 200);
            // Let the close reach the client before the next call checks the pool.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_kept_alive_connection_times_out_at_its_own_deadline() {
        // One answer, then silence on the same connection (and on any other).
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let mut answered = false;
            while let Ok((mut s, _)) = l.accept().await {
                let answer = !answered;
                answered = true;
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let _ = s.read(&mut buf).await;
                    if answer {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                            .await;
                    }
                    // Hold the connection open, reading whatever comes.
                    while s.read(&mut buf).await.unwrap_or(0) > 0 {}
                });
            }
        });
        let c = WebhookClient::new(
            &format!("http://{addr}/api/HttpTrigger1"),
            None,
            Duration::from_millis(300),
            4,
            None,
        )
        .unwrap();
        let (answer, end, _) = c.call(b"{}", tokio::time::Instant::now()).await;
        assert_eq!((answer.map(|a| a.0), end), (Some(200), End::Answered));
        // The connection's timer still points at the first request's deadline, 100 ms into the
        // second one: it must move on to the second request's own, not end it there.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t = tokio::time::Instant::now();
        let (answer, end, failure) = c.call(b"{}", tokio::time::Instant::now()).await;
        let took = t.elapsed();
        assert!(answer.is_none());
        assert_eq!(end, End::TimedOut, "{failure:?}");
        assert!(took >= Duration::from_millis(290), "ended early: {took:?}");
        assert!(took < Duration::from_secs(5), "ended late: {took:?}");
    }

    #[tokio::test]
    async fn only_http_and_https_urls_are_taken() {
        let e = WebhookClient::new("ftp://x/y", None, Duration::from_secs(1), 1, None).unwrap_err();
        assert!(e.to_string().contains("http or https"), "{e}");
    }
}
