//! Accepting connections, for every server of ours (the emulator's MQTT and HTTP listeners, the
//! reference webhook): a cap on connections served at once (beyond it new ones wait in the
//! kernel's queue, and a line on stderr says so, at most every 10 s), a back-off when `accept`
//! fails (out of file descriptors) instead of a busy loop, `TCP_NODELAY`; and the HTTP/1 settings
//! that keep a slow or idle client from holding a connection for as long as it likes.
//!
//! It only accepts and hands over: what a connection speaks is the caller's.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// What a listener allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// HTTP: the time a client has to send a request's headers; the same clock runs while a
    /// kept-alive connection waits for its next request, so it also bounds idleness.
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// An HTTP/1 connection builder with these limits (keep-alive on).
    pub(crate) fn http1(&self) -> hyper::server::conn::http1::Builder {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .keep_alive(true);
        b
    }
}

/// Accepts on `listener` until `shutdown` resolves; each connection runs `serve(stream)` in a task
/// of its own, holding one of `limits.max_connections` slots. `name` labels the log line. The
/// connections still running are returned (dropping the set aborts them).
pub(crate) async fn accept<F, Fut>(
    listener: TcpListener,
    name: &str,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    mut serve: F,
) -> JoinSet<()>
where
    F: FnMut(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut conns = JoinSet::new();
    let mut warned: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    eprintln!(
                        "{name}: {} connections open, the limit; new connections wait until one closes",
                        limits.max_connections
                    );
                    warned = Some(Instant::now());
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors or similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let conn = serve(stream);
                conns.spawn(async move {
                    conn.await;
                    drop(permit);
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    conns
}
