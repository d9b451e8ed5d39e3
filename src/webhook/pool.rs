//! The webhook client's connections: a pool of kept-alive [`http1::Conn`]s per thread, each
//! with a timer armed lazily, and one POST on them that ends by a deadline. Knows nothing of DPS:
//! [`super::client`] decides what a POST means.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::time::Instant;

use super::http1;
use crate::outcome::{End, Failure, Source};

/// The server name and client configuration of an `https://` webhook.
pub(super) type Tls = (
    rustls::pki_types::ServerName<'static>,
    Arc<rustls::ClientConfig>,
);

/// Largest webhook response read (larger bodies are a transport error).
const MAX_RESPONSE: usize = 1 << 20;

/// POSTs over HTTP/1.1 keep-alive connections of its own pool: a stack of idle connections per
/// thread (with lanes: per lane, so that a request and its connection share a thread). A request
/// owns its connection while it runs; there is no connection task.
#[derive(Debug)]
pub(super) struct Http {
    /// `host:port` to connect to.
    authority: String,
    /// The request line and headers up to `content-length`, rendered once (the function key
    /// is in it: never logged).
    head: Vec<u8>,
    /// Server name and TLS client configuration for `https://`.
    tls: Option<Tls>,
    /// Idle connections by the thread that last used them, most recently used last; boxed, so
    /// that checking one out and in moves a pointer, not the connection and its buffers.
    #[allow(clippy::vec_box)] // the point: a pointer moves in and out, not the connection
    idle: Mutex<Vec<(u64, Vec<Box<Pooled>>)>>,
    /// Idle connections kept at most (per thread).
    max_idle: usize,
}

/// A kept-alive connection and its timer. The timer is armed lazily: it stays registered at the
/// deadline of an earlier request (never later than the current one's), and only when it fires
/// is it moved to the request running then, if that one still has time. A request therefore
/// costs no timer registration: with tokio's per-request `timeout` that was a twelfth of the
/// generator's CPU per request (benches/vs-wrk.sh), and a connection's timer now fires about
/// once per timeout period.
struct Pooled {
    conn: http1::Conn,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl std::fmt::Debug for Pooled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pooled")
    }
}

/// This thread's number (what `std::thread::current().id()` tells, without cloning the thread
/// handle twice per request).
fn thread_key() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local!(static KEY: u64 = NEXT.fetch_add(1, Ordering::Relaxed));
    KEY.with(|k| *k)
}

/// Why a POST got no answer.
pub(super) enum Unanswered {
    /// Not within the deadline.
    TimedOut,
    /// A transport failure.
    Failed(Failure),
    /// A kept-alive connection was found closed before the answer.
    Closed(Failure),
}

impl Pooled {
    /// One exchange that must end by `deadline`.
    async fn exchange(
        &mut self,
        head: &[u8],
        body: &[u8],
        deadline: Instant,
    ) -> Result<http1::Response, Unanswered> {
        let Pooled { conn, timer } = self;
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        let work = conn.post(head, body, MAX_RESPONSE);
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                r = &mut work => {
                    return r.map_err(|e| match e {
                        http1::Error::Closed(_) => Unanswered::Closed(Http::failure(e)),
                        e => Unanswered::Failed(Http::failure(e)),
                    })
                }
                () = timer.as_mut() => {
                    if Instant::now() >= deadline {
                        return Err(Unanswered::TimedOut);
                    }
                    timer.as_mut().reset(deadline);
                }
            }
        }
    }
}

impl Http {
    /// A pool for `authority` (`host:port`), sending `head` before each body, over TLS if
    /// `tls`, keeping at most `max_idle` idle connections per thread.
    pub(super) fn new(authority: String, head: Vec<u8>, tls: Option<Tls>, max_idle: usize) -> Self {
        Self {
            authority,
            head,
            tls,
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    /// An idle connection of this thread, if any.
    fn idle(&self) -> Option<Box<Pooled>> {
        let me = thread_key();
        let mut pools = self.idle.lock().expect("pool lock");
        pools
            .iter_mut()
            .find(|(t, _)| *t == me)
            .and_then(|(_, p)| p.pop())
    }

    fn checkin(&self, c: Box<Pooled>) {
        let me = thread_key();
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
            pool.push(c);
        }
    }

    /// A new connection, opened by `deadline`.
    async fn connect(&self, deadline: Instant) -> Result<Box<Pooled>, Unanswered> {
        let open = async {
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
                None => Ok(http1::Conn::new(tcp)),
                Some((name, config)) => {
                    let tls = tokio_rustls::TlsConnector::from(config.clone())
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(Failure::tls_handshake)?;
                    Ok(http1::Conn::new(tls))
                }
            }
        };
        match tokio::time::timeout_at(deadline, open).await {
            Ok(Ok(conn)) => Ok(Box::new(Pooled {
                conn,
                timer: Box::pin(tokio::time::sleep_until(deadline)),
            })),
            Ok(Err(f)) => Err(Unanswered::Failed(f)),
            Err(_) => Err(Unanswered::TimedOut),
        }
    }

    /// One POST on a pooled connection, answered by `deadline`; a kept-alive connection the
    /// server closed meanwhile is replaced once (the request never reached the webhook), as
    /// pooled HTTP clients do.
    pub(super) async fn post(
        &self,
        body: &[u8],
        deadline: Instant,
    ) -> Result<(u16, Bytes), Unanswered> {
        let (mut c, reused) = match self.idle() {
            Some(c) => (c, true),
            None => (self.connect(deadline).await?, false),
        };
        let answer = match c.exchange(&self.head, body, deadline).await {
            Err(Unanswered::Closed(_)) if reused => {
                c = self.connect(deadline).await?;
                c.exchange(&self.head, body, deadline).await
            }
            other => other,
        }?;
        if answer.keep_alive {
            self.checkin(c);
        }
        Ok((answer.status, answer.body))
    }

    fn failure(e: http1::Error) -> Failure {
        let tls = matches!(&e, http1::Error::Io(io) if is_tls(io));
        let source = if tls { Source::Tls } else { Source::Network };
        Failure::new(End::Transport, source, e.to_string())
    }
}

/// True when the error is a rustls error, possibly inside (nested) `io::Error`s.
pub(super) fn is_tls(e: &(dyn std::error::Error + 'static)) -> bool {
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
