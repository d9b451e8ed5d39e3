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

/// The accept queue asked for: bursts of thousands of device connections would overflow the
/// default 1,024 (or a small `somaxconn`) and cost each dropped SYN a 1 s (then 3 s) retransmission,
/// which the generator would measure as the target's latency.
pub(crate) const BACKLOG: u32 = 65_535;

/// Binds `addr` (address reuse on) with a [`BACKLOG`]-deep accept queue. The kernel silently caps
/// the queue at `net.core.somaxconn`; the effective depth is returned so that callers can say so.
pub(crate) fn bind(addr: std::net::SocketAddr) -> std::io::Result<(TcpListener, u32)> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(BACKLOG)?;
    Ok((listener, effective_backlog()))
}

/// The accept-queue depth a [`bind`] gets: [`BACKLOG`] capped by `net.core.somaxconn`.
pub(crate) fn effective_backlog() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map_or(BACKLOG, |cap| cap.min(BACKLOG))
}

/// A warning when `net.core.somaxconn` caps the accept queue below what a connection-per-device
/// load at `rate` per second needs to ride out a 1 s stall (`None` when it does not).
pub(crate) fn backlog_warning(rate: f64) -> Option<String> {
    let have = effective_backlog();
    (f64::from(have) < rate.min(f64::from(BACKLOG))).then(|| {
        format!(
            "the listen queue is capped at {have} by net.core.somaxconn, below the {rate:.0} connections a second of this load opens; \
             bursts will be dropped by the kernel (seen as connect timeouts). Raise it: sysctl -w net.core.somaxconn={BACKLOG}"
        )
    })
}

/// Raises this process's open-file limit to its hard limit (connection-per-device load holds a
/// descriptor per device, twice when the emulator runs in the same process) and returns it.
pub(crate) fn raise_nofile() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or_else(|_| {
        rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
    })
}

/// A warning when `open` descriptors at once would not fit under the open-file limit `limit`.
pub(crate) fn nofile_warning(open: u64, limit: u64) -> Option<String> {
    (open + 64 > limit).then(|| {
        format!(
            "up to {open} connections may be open at once but the open-file limit is {limit} (the hard limit); \
             beyond it connections fail with \"too many open files\". Raise it (ulimit -Hn, or LimitNOFILE= for a service) or lower load.max_in_flight"
        )
    })
}

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
        // Finished connections leave the set now: under a full accept queue `accept` is always
        // ready and would otherwise keep winning the select below over `join_next`.
        while conns.try_join_next().is_some() {}
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
                // Boxed: a connection's future is ~9 KB (an MQTT session with its buffers), and
                // spawning moves a future by value through several frames; a pointer moves
                // instead (memmove was 3.5% of bench-mqtt's CPU with the three per-registration
                // spawns unboxed, 2.2% boxed).
                let conn = Box::pin(serve(stream));
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
