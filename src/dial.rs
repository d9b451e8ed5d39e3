//! Opening client TCP connections for connection-per-device load. Each connection binds the next
//! of a set of local source addresses (round-robin), with `IP_BIND_ADDRESS_NO_PORT` so that the
//! kernel picks the port at connect time and shares it across destinations: N addresses give N
//! times the ~28,000 ephemeral ports, which the TIME_WAIT a closing device leaves behind would
//! otherwise use up within seconds at thousands of connections a second (emqtt-bench's
//! `--ifaddr`). No protocol here, and no timeouts: the caller bounds the whole connect.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpSocket, TcpStream};

/// Opens connections from a rotating set of local addresses.
#[derive(Debug, Default)]
pub(crate) struct Dialer {
    sources: Vec<IpAddr>,
    next: AtomicUsize,
}

impl Dialer {
    /// Connections bind these in turn; none = the kernel picks the source address.
    pub(crate) fn new(sources: Vec<IpAddr>) -> Self {
        Self {
            sources,
            next: AtomicUsize::new(0),
        }
    }

    fn pick(&self, dest: SocketAddr) -> Option<IpAddr> {
        if self.sources.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.sources.len();
        Some(self.sources[i]).filter(|s| s.is_ipv4() == dest.is_ipv4())
    }

    /// Connects to `dest` (no Nagle: MQTT and HTTP requests are whole writes).
    pub(crate) async fn connect(&self, dest: SocketAddr) -> io::Result<TcpStream> {
        let socket = match dest {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_nodelay(true)?;
        if let Some(src) = self.pick(dest) {
            #[cfg(target_os = "linux")]
            if src.is_ipv4() {
                nix::sys::socket::setsockopt(
                    &socket,
                    nix::sys::socket::sockopt::IpBindAddressNoPort,
                    &true,
                )
                .map_err(io::Error::from)?;
            }
            socket.bind(SocketAddr::new(src, 0))?;
        }
        socket.connect(dest).await
    }
}

/// `host:port` as a socket address: an IP literal without a lookup, a name through the resolver
/// (its first address).
pub(crate) async fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address")))
}

/// The ephemeral port range (`net.ipv4.ip_local_port_range`), as a count of ports.
fn ephemeral_ports() -> u64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().map(|n| n.parse::<u64>().ok());
            let (lo, hi) = (it.next()??, it.next()??);
            hi.checked_sub(lo).map(|d| d + 1)
        })
        .unwrap_or(28_232)
}

/// How long the kernel keeps a closed connection's local port from a new connection to the same
/// destination, and how many such ports it keeps at most.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TimeWait {
    /// Seconds a port stays taken after its connection closed.
    pub hold_secs: f64,
    /// TIME_WAIT sockets kept at most (`net.ipv4.tcp_max_tw_buckets`); beyond it the kernel
    /// drops the state and the port is free at once.
    pub cap: u64,
}

fn sysctl(name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl TimeWait {
    /// This host's, towards a loopback destination or not. TIME_WAIT lasts 60 s, but with
    /// timestamps on and `net.ipv4.tcp_tw_reuse` (1, or 2 — the default — on loopback) a new
    /// connect may take the port over once `tcp_tw_reuse_delay` (1 s) has passed since the last
    /// segment, counted in whole seconds: 2 s.
    pub(crate) fn of_host(loopback: bool) -> Self {
        let reuse = match sysctl("tcp_tw_reuse").unwrap_or(2) {
            1 => true,
            2 => loopback,
            _ => false,
        };
        let timestamps = sysctl("tcp_timestamps").unwrap_or(1) != 0;
        let hold_secs = if reuse && timestamps {
            sysctl("tcp_tw_reuse_delay").unwrap_or(1000) as f64 / 1000.0 + 1.0
        } else {
            60.0
        };
        Self {
            hold_secs,
            cap: sysctl("tcp_max_tw_buckets").unwrap_or(262_144),
        }
    }
}

/// A warning when `rate` new connections a second to one destination, each leaving its local
/// port taken as `tw` says, would use up the ephemeral ports of `sources` source addresses (0 =
/// the kernel's one).
pub(crate) fn port_warning(rate: f64, sources: usize, tw: TimeWait) -> Option<String> {
    let per_source = ephemeral_ports();
    let ports = per_source * sources.max(1) as u64;
    let held = (rate * tw.hold_secs).min(tw.cap as f64);
    (held > ports as f64 * 0.8).then(|| {
        let needed = (held / (per_source as f64 * 0.8)).ceil() as u64;
        format!(
            "{rate}/s new connections hold about {held:.0} local ports in TIME_WAIT ({} s each), but {} source address(es) have {ports}: connects may fail with EADDRNOTAVAIL. Set target.source_addrs = {needed} (on loopback) or lower the rate",
            tw.hold_secs,
            sources.max(1)
        )
    })
}

/// Whether a connect error means the generator ran out of local ports (or file descriptors),
/// not that the target refused: the run warns about it apart.
pub(crate) fn generator_limit(e: &io::Error) -> Option<&'static str> {
    match e.raw_os_error() {
        Some(99) => Some(
            "no free local port (EADDRNOTAVAIL): spread connections over more target.source_addrs",
        ),
        Some(24) => Some("too many open files (EMFILE): raise the open-file limit"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_rotate_over_the_source_addresses() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dest = listener.local_addr().unwrap();
        let sources: Vec<IpAddr> = ["127.0.0.2", "127.0.0.3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let d = Dialer::new(sources.clone());
        let mut seen = Vec::new();
        for _ in 0..4 {
            let c = d.connect(dest).await.unwrap();
            seen.push(c.local_addr().unwrap().ip());
            let _ = listener.accept().await.unwrap();
        }
        assert_eq!(seen, [sources[0], sources[1], sources[0], sources[1]]);
        // No sources: the kernel's choice (127.0.0.1 towards 127.0.0.1).
        let c = Dialer::default().connect(dest).await.unwrap();
        assert_eq!(c.local_addr().unwrap().ip(), dest.ip());
    }

    #[test]
    fn the_port_warning_counts_source_addresses_and_what_the_kernel_holds() {
        let ports = ephemeral_ports() as f64;
        let minute = TimeWait {
            hold_secs: 60.0,
            cap: u64::MAX,
        };
        assert!(port_warning(ports / 60.0, 0, minute).is_some());
        assert!(port_warning(ports / 60.0, 16, minute).is_none());
        assert!(port_warning(ports / 600.0, 1, minute).is_none());
        // Reused after 2 s (tcp_tw_reuse): 16 addresses carry 20 times the rate of one.
        let reuse = TimeWait {
            hold_secs: 2.0,
            cap: u64::MAX,
        };
        assert!(port_warning(ports / 2.0, 1, reuse).is_some());
        assert!(port_warning(ports / 2.0 * 10.0, 16, reuse).is_none());
        // The kernel keeps at most `cap` TIME_WAIT sockets.
        let capped = TimeWait {
            hold_secs: 60.0,
            cap: ports as u64 / 2,
        };
        assert!(port_warning(ports, 1, capped).is_none());
        let w = port_warning(ports / 30.0, 1, minute).unwrap();
        assert!(
            w.contains("(60 s each)") && w.contains("source_addrs = 3"),
            "{w}"
        );
    }

    #[test]
    fn this_host_reuses_ports_on_loopback_by_default() {
        // The defaults (tcp_tw_reuse 2, timestamps on) when /proc says nothing else.
        let tw = TimeWait::of_host(true);
        let reuse = sysctl("tcp_tw_reuse").unwrap_or(2);
        let timestamps = sysctl("tcp_timestamps").unwrap_or(1);
        if (reuse == 1 || reuse == 2) && timestamps != 0 {
            assert!(tw.hold_secs < 60.0, "{tw:?}");
        } else {
            assert_eq!(tw.hold_secs, 60.0);
        }
        if reuse != 1 {
            assert_eq!(TimeWait::of_host(false).hold_secs, 60.0);
        }
    }

    #[tokio::test]
    async fn names_and_literals_resolve() {
        assert_eq!(
            resolve("127.0.0.1", 5).await.unwrap(),
            "127.0.0.1:5".parse().unwrap()
        );
        assert_eq!(
            resolve("[::1]", 5).await.unwrap(),
            "[::1]:5".parse().unwrap()
        );
        assert!(resolve("localhost", 5).await.unwrap().ip().is_loopback());
    }
}
