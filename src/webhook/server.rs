//! The reference webhook's HTTP server (hyper 1.x, HTTP/1.1 keep-alive). It answers a POST on any
//! path, so a function URL such as `/api/HttpTrigger1?code=…` works as-is.
//!
//! `run(listener, config, shutdown)` takes an already-bound listener (tests bind `127.0.0.1:0`)
//! and returns when `shutdown` resolves and open connections have drained (at most 2 s).
//! It never logs request bodies (they could carry device payloads).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::listen::Limits;
use crate::progress::exporter::{counters, gauge};

use super::fault::Rule;
use super::policy::{Policy, Reply};

/// DPS's maximum message size is 96 KB; accept up to 1 MiB before refusing with 413.
const MAX_BODY: usize = 1 << 20;

/// What the server does.
#[derive(Debug, Clone)]
pub struct Config {
    /// The seed function to behave like.
    pub policy: Policy,
    /// Fault rules, first match wins.
    pub faults: Vec<Rule>,
    /// Return the device's payload to it (an extension of the seed functions; off by default).
    pub echo_payload: bool,
    /// Connections at once, header-read and keep-alive idle time.
    pub limits: Limits,
}

/// The reference webhook's answers without the HTTP around them: what the server serves, and
/// what the embedded emulator calls in-process (`[emulator] webhook = "in-process"`), so both
/// give the same answer, delay and fault to the same body.
#[derive(Debug)]
pub(crate) struct Responder {
    config: Config,
    /// Calls per registration ID, kept only when a rule limits itself to the first N calls.
    /// std Mutex: never held across an await.
    calls: Mutex<HashMap<String, u32>>,
    counts_calls: bool,
}

impl Responder {
    /// A responder for `config`.
    pub(crate) fn new(config: Config) -> Self {
        let counts_calls = config.faults.iter().any(|r| r.fault.first_calls.is_some());
        Self {
            config,
            calls: Mutex::new(HashMap::new()),
            counts_calls,
        }
    }

    /// The answer to an AllocationRequest body (after the fault's delay, if one applies).
    pub(crate) async fn answer(&self, body: &[u8]) -> Reply {
        let fault = if self.config.faults.is_empty() {
            None
        } else {
            select_fault(self, body)
        };
        if let Some(delay) = fault.and_then(|r| r.fault.delay) {
            tokio::time::sleep(delay).await;
        }
        match fault.and_then(|r| r.fault.action.as_ref()) {
            Some(action) => action.reply(),
            None if self.config.echo_payload => {
                super::policy::echo_payload(self.config.policy.respond(body), body)
            }
            None => self.config.policy.respond(body),
        }
    }
}

/// What the server answered, read at each scrape of `webhook serve --metrics-addr`:
/// `webhook_requests_total{code}` and the gauge `webhook_in_flight`.
#[derive(Debug)]
pub(crate) struct Stats {
    /// Answers by HTTP status (index = status; 100–599).
    by_status: Vec<AtomicU64>,
    in_flight: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            by_status: (0..600).map(|_| AtomicU64::new(0)).collect(),
            in_flight: AtomicU64::new(0),
        }
    }
}

impl Collector for Stats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows: Vec<_> = self
            .by_status
            .iter()
            .enumerate()
            .map(|(code, n)| (code, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .map(|(code, n)| (vec![("code", code.to_string())], n))
            .collect();
        counters(
            &mut encoder,
            "webhook_requests",
            "Requests answered, by HTTP status.",
            &rows,
        )?;
        gauge(
            &mut encoder,
            "webhook_in_flight",
            "Requests being answered now.",
            self.in_flight.load(Ordering::Relaxed) as f64,
        )
    }
}

/// A server running in the background of this process.
#[derive(Debug)]
pub(crate) struct Handle {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Handle {
    /// Stops the server and waits for it.
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// The embedded reference webhook on `127.0.0.1:0`, when there is one to start (`None`: the
/// scenario names its own webhook). The error names the address that could not be bound.
pub(crate) async fn spawn_embedded(
    config: Option<Config>,
) -> Result<Option<Handle>, (SocketAddr, std::io::Error)> {
    let Some(config) = config else {
        return Ok(None);
    };
    let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
    spawn(addr, config).await.map(Some).map_err(|e| (addr, e))
}

/// Binds `addr` and serves in a background task.
pub(crate) async fn spawn(addr: SocketAddr, config: Config) -> std::io::Result<Handle> {
    let (listener, _) = crate::listen::bind(addr)?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(run(listener, config, None, Arc::default(), async move {
        let _ = rx.await;
    }));
    Ok(Handle {
        addr,
        stop: Some(tx),
        task,
    })
}

/// Serves until `shutdown` resolves; over TLS with `tls` (the handshake must finish within the
/// header-read timeout, like the request head after it); answers are counted in `stats`.
pub(crate) async fn run(
    listener: TcpListener,
    config: Config,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()>,
) {
    let state = Arc::new(Responder::new(config));
    let graceful = GracefulShutdown::new();
    let limits = state.config.limits;
    let conns = crate::listen::accept(listener, "reference webhook", limits, shutdown, |stream| {
        let (state, stats) = (state.clone(), stats.clone());
        let service = hyper::service::service_fn(move |req| {
            let (state, stats) = (state.clone(), stats.clone());
            async move {
                // Counted down also when the client goes away mid-request (the future is dropped).
                struct Leave<'a>(&'a AtomicU64);
                impl Drop for Leave<'_> {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                stats.in_flight.fetch_add(1, Ordering::Relaxed);
                let leave = Leave(&stats.in_flight);
                let r = handle(req, state).await;
                drop(leave);
                if let Ok(r) = &r {
                    if let Some(n) = stats.by_status.get(usize::from(r.status().as_u16())) {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                }
                r
            }
        });
        let tls = tls.clone();
        let watcher = graceful.watcher();
        async move {
            match tls {
                None => {
                    let conn = limits
                        .http1()
                        .serve_connection(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn).await;
                }
                Some(acceptor) => {
                    let deadline = limits.header_read_timeout;
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(deadline, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let conn = limits
                        .http1()
                        .serve_connection(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn).await;
                }
            }
        }
    })
    .await;
    // In-flight requests get 2 s to finish; whatever is still open then is aborted.
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
    drop(conns);
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "deviceRuntimeContext")]
    ctx: Option<ProbeCtx>,
}

#[derive(Deserialize)]
struct ProbeCtx {
    #[serde(rename = "registrationId")]
    registration_id: Option<String>,
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Responder>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::POST {
        return Ok(reply(Reply {
            status: 405,
            content_type: None,
            body: Vec::new(),
        }));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(reply(Reply {
                status: 413,
                content_type: None,
                body: Vec::new(),
            }))
        }
    };
    Ok(reply(state.answer(&body).await))
}

/// Only called when fault rules exist: it reads the registration ID with a parse that skips every
/// other field, so the common no-fault path parses the body once (in the policy).
fn select_fault<'a>(state: &'a Responder, body: &[u8]) -> Option<&'a Rule> {
    let id = serde_json::from_slice::<Probe>(body)
        .ok()?
        .ctx?
        .registration_id?;
    let rule = state.config.faults.iter().find(|r| r.selects(&id))?;
    if let Some(limit) = rule.fault.first_calls {
        if state.counts_calls {
            let mut calls = state.calls.lock().expect("calls lock poisoned");
            let n = calls.entry(id).or_insert(0);
            *n += 1;
            if *n > limit {
                return None;
            }
        }
    }
    Some(rule)
}

fn reply(r: Reply) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(r.body)));
    *resp.status_mut() =
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(ct) = r.content_type {
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    resp
}
