//! A client of a custom-allocation webhook, as DPS is one: POST the AllocationRequest, follow
//! DPS's retry schedule on >= 429, and map the final answer with [`crate::dps::outcome`].
//!
//! Used by the webhook-mode driver (which measures it) and by the DPS emulator (which calls the
//! configured webhook the way DPS does). HTTP is a hyper 1.x client with a keep-alive pool;
//! `https://` goes through rustls with the Mozilla roots. Nothing here checks expectations.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;

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

/// One HTTP/1.1 connection's request handle.
type Sender = SendRequest<Full<Bytes>>;

/// POSTs over HTTP/1.1 keep-alive connections of its own pool. Hand-written over hyper's
/// connection API rather than hyper-util's pooled client: each call there checks a connection
/// out through a pool keyed by a hashed authority, behind a lock, with connector and timeout
/// futures moved around per request; this pool is a stack of ready connections (with lanes,
/// each lane's connections are its own tasks), which is what a generator that must cost no more
/// per request than wrk needs.
#[derive(Debug)]
struct Http {
    /// `host:port` to connect to.
    authority: String,
    /// The `Host` header.
    host: HeaderValue,
    /// Origin-form target (`/api/HttpTrigger1?code=…`).
    path: Uri,
    /// Server name and TLS client configuration for `https://`.
    tls: Option<(
        rustls::pki_types::ServerName<'static>,
        Arc<rustls::ClientConfig>,
    )>,
    function_key: Option<HeaderValue>,
    /// Idle connections by the thread that opened them (with lanes: by lane, so that a request
    /// and its connection's task share a thread), most recently used last.
    idle: Mutex<Vec<(std::thread::ThreadId, Vec<Sender>)>>,
    /// Idle connections kept at most.
    max_idle: usize,
}

impl Http {
    /// A ready connection: an idle one, or a new one.
    async fn checkout(&self) -> Result<(Sender, bool), Failure> {
        let me = std::thread::current().id();
        loop {
            let idle = {
                let mut pools = self.idle.lock().expect("pool lock");
                pools
                    .iter_mut()
                    .find(|(t, _)| *t == me)
                    .and_then(|(_, p)| p.pop())
            };
            match idle {
                Some(s) if s.is_ready() => return Ok((s, true)),
                Some(_) => continue,
                None => return self.connect().await.map(|s| (s, false)),
            }
        }
    }

    fn checkin(&self, s: Sender) {
        let me = std::thread::current().id();
        let mut pools = self.idle.lock().expect("pool lock");
        let i = match pools.iter().position(|(t, _)| *t == me) {
            Some(i) => i,
            None => {
                pools.push((me, Vec::new()));
                pools.len() - 1
            }
        };
        let pool = &mut pools[i].1;
        if pool.len() < self.max_idle {
            pool.push(s);
        }
    }

    async fn connect(&self) -> Result<Sender, Failure> {
        let tcp = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| {
                Failure::new(
                    End::Transport,
                    Source::Network,
                    format!("tcp connect error: {e}"),
                )
            })?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(tcp).await,
            Some((name, config)) => {
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(Failure::tls_handshake)?;
                handshake(tls).await
            }
        }
    }
}

/// HTTP/1.1 over `io`; the connection is driven by its own task (on this runtime: with lanes,
/// this lane).
async fn handshake<S>(io: S) -> Result<Sender, Failure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        // One write per request (head and body in one buffer): one send, not a writev of two.
        .writev(false)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| failure(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
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
        let function_key = function_key
            .map(|k| HeaderValue::from_str(k).map_err(|_| SetupError::FunctionKey))
            .transpose()?;
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
        let host_header = HeaderValue::from_str(
            uri.authority()
                .map_or(host.as_str(), hyper::http::uri::Authority::as_str),
        )
        .map_err(|e| SetupError::Url(e.to_string()))?;
        let path: Uri = uri
            .path_and_query()
            .map_or("/", hyper::http::uri::PathAndQuery::as_str)
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| SetupError::Url(e.to_string()))?;
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
            transport: Transport::Http(Arc::new(Http {
                authority,
                host: host_header,
                path,
                tls,
                function_key,
                idle: Mutex::new(Vec::new()),
                max_idle: pool.max(1),
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
        let http = match &self.transport {
            Transport::Http(h) => h,
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
        let request = |body: Bytes| {
            let mut req = Request::post(http.path.clone())
                .header(HOST, http.host.clone())
                .header(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/json; charset=utf-8"),
                );
            if let Some(k) = &http.function_key {
                req = req.header(FUNCTIONS_KEY, k.clone());
            }
            req.body(Full::new(body))
                .expect("a POST with a valid path is a valid request")
        };
        let exchange = async {
            let (mut sender, reused) = http.checkout().await?;
            let resp = match sender.send_request(request(body.clone())).await {
                Ok(r) => r,
                // A kept-alive connection the server closed meanwhile: once more on a new one
                // (the request never reached the webhook), as pooled HTTP clients do.
                Err(e)
                    if reused
                        && (e.is_canceled() || e.is_closed() || e.is_incomplete_message()) =>
                {
                    sender = http.connect().await?;
                    sender
                        .send_request(request(body))
                        .await
                        .map_err(|e| failure(&e))?
                }
                Err(e) => return Err(failure(&e)),
            };
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| failure(e.as_ref()))?;
            http.checkin(sender);
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
            let (answer, end, _) = c.call(Bytes::from_static(b"{}")).await;
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
            let (answer, end, failure) = c.call(Bytes::from_static(b"{}")).await;
            assert_eq!(end, End::Answered, "{failure:?}");
            assert_eq!(answer.unwrap().0, 200);
            // Let the close reach the client before the next call checks the pool.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn only_http_and_https_urls_are_taken() {
        let e = WebhookClient::new("ftp://x/y", None, Duration::from_secs(1), 1, None).unwrap_err();
        assert!(e.to_string().contains("http or https"), "{e}");
    }
}
