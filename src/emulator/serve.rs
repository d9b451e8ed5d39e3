//! Starting and stopping the emulator's listeners: MQTT over TLS, opt-in MQTT over plain TCP,
//! HTTPS, opt-in plain HTTP, and the embedded reference webhook when the scenario names no
//! webhook URL. Used by `loadtest dps serve` and, in-process on `127.0.0.1:0`, by registration
//! runs. Each connection is its own task; a TLS handshake and the MQTT CONNECT each get
//! `connect_timeout` (10 s by default).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use crate::listen::Limits;
use tokio_rustls::TlsAcceptor;

use super::{mqtt, tls, AuthError, Emulator};
use crate::scenario::{Scenario, WebhookTransport};
use crate::webhook::server;

/// Where to listen.
#[derive(Debug, Clone)]
pub struct Options {
    /// MQTT over TLS.
    pub mqtt: Option<SocketAddr>,
    /// MQTT over plain TCP (load runs).
    pub mqtt_plain: Option<SocketAddr>,
    /// HTTPS.
    pub https: Option<SocketAddr>,
    /// Plain HTTP (load runs).
    pub http_plain: Option<SocketAddr>,
    /// Certificates (needed when `mqtt` or `https` is set).
    pub tls: Option<tls::Source>,
    /// One log line per registration on stderr.
    pub log: bool,
    /// Time a new MQTT connection has to send CONNECT (and a TLS client to finish its handshake).
    pub connect_timeout: Duration,
    /// Connections at once per listener; HTTP header-read and keep-alive idle time.
    pub limits: Limits,
    /// Runtimes to serve on: each requested listener is bound once per lane (its own port,
    /// [`Running::lanes`]) and served there, so that a lane's devices and their server ends
    /// share a thread. Empty: one listener each, on the caller's runtime.
    pub lanes: Vec<tokio::runtime::Handle>,
}

impl Options {
    /// Every listener on `127.0.0.1:0` with certificates generated into `tls_dir`.
    pub fn loopback(tls_dir: PathBuf) -> Self {
        let any = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        Self {
            mqtt: any,
            mqtt_plain: any,
            https: any,
            http_plain: any,
            tls: Some(tls::Source::Generated(tls_dir)),
            log: false,
            connect_timeout: mqtt::CONNECT_TIMEOUT,
            limits: Limits::default(),
            lanes: Vec::new(),
        }
    }
}

/// The emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] AuthError),
    /// Certificates.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Bound addresses.
#[derive(Debug, Clone, Default)]
pub struct Addrs {
    /// MQTT over TLS.
    pub mqtt: Option<SocketAddr>,
    /// MQTT over plain TCP.
    pub mqtt_plain: Option<SocketAddr>,
    /// HTTPS.
    pub https: Option<SocketAddr>,
    /// Plain HTTP.
    pub http_plain: Option<SocketAddr>,
    /// The embedded reference webhook, if started.
    pub webhook: Option<SocketAddr>,
}

/// A running emulator; [`Running::stop`] ends it (dropping it aborts the listeners too).
#[derive(Debug)]
pub struct Running {
    /// The service core (counters, connection strings).
    pub emulator: Arc<Emulator>,
    /// Where it listens.
    pub addrs: Addrs,
    /// The CA devices should trust, when TLS is on.
    pub ca: Option<PathBuf>,
    /// With [`Options::lanes`]: each lane's listeners (lane 0's are `addrs`'s).
    pub lanes: Vec<Addrs>,
    tasks: JoinSet<()>,
    webhook: Option<server::Handle>,
}

impl Running {
    /// Stops the listeners and their connections, and the embedded webhook.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
        // Allocations already under way finish (and persist, with `[emulator] persist`) before
        // the emulator is gone, so that a later emulator on the same store never sees its file
        // overwritten by this one's late write. Bounded: the webhook has its own timeout.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.emulator.in_progress() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        if let Some(w) = self.webhook.take() {
            w.stop().await;
        }
    }
}

#[derive(Clone, Copy)]
enum Proto {
    Mqtt,
    Http,
}

/// Starts the emulator for a scenario.
pub async fn start(s: &Scenario, opts: &Options) -> Result<Running, ServeError> {
    let mut addrs = Addrs::default();
    let embedded = s.embedded_webhook();
    let in_process = s.emulator.webhook == WebhookTransport::InProcess;
    let (webhook, in_process_config) = match embedded {
        Some(config) if in_process => (None, Some(config)),
        other => (
            server::spawn_embedded(other)
                .await
                .map_err(|(addr, source)| ServeError::Bind { addr, source })?,
            None,
        ),
    };
    addrs.webhook = webhook.as_ref().map(|w| w.addr);
    let url = match (&s.target.url, &webhook) {
        (Some(u), _) => Some(u.expose().to_owned()),
        (None, Some(w)) => Some(format!("http://{}/api/HttpTrigger1", w.addr)),
        (None, None) => None,
    };
    let target = match (url.as_deref(), in_process_config) {
        (Some(u), _) => super::Webhook::Url(u),
        (None, Some(config)) => super::Webhook::InProcess(config),
        (None, None) => super::Webhook::None,
    };
    let emulator = Arc::new(Emulator::new(s, target, opts.log)?);
    let needs_tls = opts.mqtt.is_some() || opts.https.is_some();
    let tls = match (&opts.tls, needs_tls) {
        (_, false) => None,
        (Some(src), true) => Some(tls::load(src)?),
        (None, true) => Some(tls::load(&tls::Source::Generated(tls::default_dir()))?),
    };
    let acceptor = tls.as_ref().map(|t| TlsAcceptor::from(t.config.clone()));
    let mut tasks = JoinSet::new();
    let on: Vec<Option<&tokio::runtime::Handle>> = if opts.lanes.is_empty() {
        vec![None]
    } else {
        opts.lanes.iter().map(Some).collect()
    };
    let mut lanes = Vec::with_capacity(on.len());
    for lane in on {
        let mut bound_here = Addrs {
            webhook: addrs.webhook,
            ..Addrs::default()
        };
        for (addr, proto, secure, slot) in [
            (opts.mqtt, Proto::Mqtt, true, 0),
            (opts.mqtt_plain, Proto::Mqtt, false, 1),
            (opts.https, Proto::Http, true, 2),
            (opts.http_plain, Proto::Http, false, 3),
        ] {
            let Some(addr) = addr else { continue };
            let (listener, _) =
                crate::listen::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| ServeError::Bind { addr, source })?;
            let bound = match slot {
                0 => &mut bound_here.mqtt,
                1 => &mut bound_here.mqtt_plain,
                2 => &mut bound_here.https,
                _ => &mut bound_here.http_plain,
            };
            *bound = Some(local);
            let acceptor = if secure { acceptor.clone() } else { None };
            // The listener is registered with the reactor of the runtime it is made on. Bound
            // here, on the caller's runtime, and polled on a lane, every connection a device
            // opened woke the caller's runtime thread to wake the lane (about 5,500 thread
            // wakes a second at 8,000 registrations/s); it is handed over unregistered and
            // registered by the lane that accepts on it.
            let listener = listener
                .into_std()
                .map_err(|source| ServeError::Bind { addr, source })?;
            let (emulator, timeout, limits) = (emulator.clone(), opts.connect_timeout, opts.limits);
            let serving = async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => {
                        accept_loop(listener, emulator, proto, acceptor, timeout, limits).await
                    }
                    Err(e) => eprintln!("DPS emulator: listening on {local}: {e}"),
                }
            };
            match lane {
                Some(h) => tasks.spawn_on(serving, h),
                None => tasks.spawn(serving),
            };
        }
        lanes.push(bound_here);
    }
    let addrs = lanes[0].clone();
    let lanes = if opts.lanes.is_empty() {
        Vec::new()
    } else {
        lanes
    };
    Ok(Running {
        emulator,
        addrs,
        lanes,
        ca: tls.map(|t| t.ca),
        tasks,
        webhook,
    })
}

async fn accept_loop(
    listener: TcpListener,
    emulator: Arc<Emulator>,
    proto: Proto,
    acceptor: Option<TlsAcceptor>,
    timeout: Duration,
    limits: Limits,
) {
    let name = match (proto, acceptor.is_some()) {
        (Proto::Mqtt, true) => "DPS emulator MQTT (TLS)",
        (Proto::Mqtt, false) => "DPS emulator MQTT (plain)",
        (Proto::Http, true) => "DPS emulator HTTPS",
        (Proto::Http, false) => "DPS emulator HTTP (plain)",
    };
    // Connections live in the returned set: aborting this task aborts them all.
    let _conns = crate::listen::accept(listener, name, limits, std::future::pending(), |stream| {
        let (emulator, acceptor) = (emulator.clone(), acceptor.clone());
        async move {
            match acceptor {
                // Boxed: a TLS handshake holds rustls' connection state, and a future is as large
                // as its largest state; this one is held for every open connection and copied
                // when spawned, plain ones included.
                Some(a) => {
                    Box::pin(async move {
                        if let Ok(Ok(tls)) = tokio::time::timeout(timeout, a.accept(stream)).await {
                            connection(emulator, proto, tls, timeout, limits).await;
                        }
                    })
                    .await;
                }
                None => connection(emulator, proto, stream, timeout, limits).await,
            }
        }
    })
    .await;
}

async fn connection<S>(
    emulator: Arc<Emulator>,
    proto: Proto,
    io: S,
    timeout: Duration,
    limits: Limits,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match proto {
        Proto::Mqtt => {
            let _ = mqtt::serve(emulator, io, timeout).await;
        }
        Proto::Http => {
            let service =
                hyper::service::service_fn(move |req| super::https::handle(emulator.clone(), req));
            // Upgrades: MQTT over WebSockets on `/$iothub/websocket`. Boxed, as hyper's
            // connection state would otherwise size every MQTT connection's future too.
            let _ = Box::pin(
                limits
                    .http1()
                    .serve_connection(TokioIo::new(io), service)
                    .with_upgrades(),
            )
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use bytes::BytesMut;
    use rumqttc::mqttbytes::v4::Connect;

    use super::*;

    /// A lane accepts on its listeners by itself: they are registered with the lane's reactor,
    /// not that of the runtime that bound them. Here that runtime is idle (a current-thread
    /// runtime outside `block_on` drives nothing), and a device still gets its CONNACK; with the
    /// listener left on the binding runtime the connection would never be accepted.
    #[test]
    fn lanes_accept_while_the_binding_runtime_is_idle() {
        let lanes = crate::lanes::Lanes::start(1).unwrap();
        let caller = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let s = Scenario::load(std::path::Path::new("scenarios/contoso.toml")).unwrap();
        let opts = Options {
            mqtt: None,
            https: None,
            http_plain: None,
            tls: None,
            lanes: lanes.handles().to_vec(),
            ..Options::loopback(std::env::temp_dir())
        };
        let running = caller.block_on(start(&s, &opts)).unwrap();
        let addr = running.lanes[0].mqtt_plain.unwrap();
        let mut device = std::net::TcpStream::connect(addr).unwrap();
        device
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut connect = BytesMut::new();
        Connect::new("dev1").write(&mut connect).unwrap();
        device.write_all(&connect).unwrap();
        let mut first = [0u8; 1];
        device
            .read_exact(&mut first)
            .expect("the lane accepted the connection and answered CONNECT");
        assert_eq!(first[0], 0x20, "a CONNACK");
        drop(device);
        caller.block_on(running.stop());
    }
}
