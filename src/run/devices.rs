//! Setting up a device-mode run: the endpoint (the embedded emulator started in-process on
//! `127.0.0.1:0`, or the scenario's), TLS trust (the emulator's CA, a PEM file, the Mozilla roots
//! for Azure), the ID scope, and the twin reader with the hubs' connection strings. It lives
//! here, in the command layer, because it wires the emulator to the drivers: neither of those
//! imports the other.

use std::path::Path;
use std::sync::Arc;

use crate::dial::Dialer;
use crate::driver::device::twin::TwinReader;
use crate::driver::device::Endpoint;
use crate::emulator::serve::{self, Options, Running};
use crate::emulator::tls;
use crate::scenario::{Mode, Scenario, Trust};

/// What a device-mode run needs.
#[derive(Debug)]
pub(crate) struct Setup {
    /// Where devices connect: one per lane of the embedded emulator, else one.
    pub endpoints: Vec<Endpoint>,
    /// Twin verification, when on and possible.
    pub twins: Option<TwinReader>,
    /// The embedded emulator, if started (stop it after the run).
    pub emulator: Option<Running>,
}

/// Why a device-mode run cannot start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SetupError {
    /// The emulator could not start.
    #[error("the embedded DPS emulator could not start: {0}")]
    Emulator(#[from] serve::ServeError),
    /// TLS trust.
    #[error("{0}")]
    Tls(String),
    /// Twin verification.
    #[error("twin verification: {0}")]
    Twins(String),
}

/// The devices' TLS client. Each device is a new client, so no session is resumed across devices
/// (a shared cache would let device 2 skip the handshake device 1 paid for: 140 µs of CPU per
/// registration less than a real fleet costs). It offers TLS 1.3 with AES-128-GCM/SHA-256 and a
/// P-256 key share first, as embedded TLS stacks commonly do (and SHA-256 has CPU support where
/// SHA-384 has none: ~70 µs less per handshake here), with the other suites and groups after.
/// With `chain_cache` (the default) a certificate chain verified in the last minute is accepted
/// without verifying it again (`tls::chain_cache`): the server's side of every handshake is
/// unchanged and each connection still checks the server's signature, but the generator does not
/// repeat, for each of thousands of devices, a chain check whose answer it already has (one
/// ECDSA verification, about 10% of a TLS registration's CPU in one process).
fn client_config(
    roots: rustls::RootCertStore,
    chain_cache: bool,
) -> Result<Arc<rustls::ClientConfig>, SetupError> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    provider
        .kx_groups
        .sort_by_key(|g| g.name() != rustls::NamedGroup::secp256r1);
    let provider = Arc::new(provider);
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| SetupError::Tls(e.to_string()))?;
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = if chain_cache {
        Arc::new(tls::chain_cache::ChainCache::new(verifier))
    } else {
        verifier
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SetupError::Tls(e.to_string()))?
        .dangerous() // a verifier of our own: WebPKI's, remembering what it accepted
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

fn pem_roots(path: &Path) -> Result<rustls::RootCertStore, SetupError> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| SetupError::Tls(format!("{}: {e}", path.display())))?;
    for c in certs {
        let c = c.map_err(|e| SetupError::Tls(format!("{}: {e}", path.display())))?;
        roots
            .add(c)
            .map_err(|e| SetupError::Tls(format!("{}: {e}", path.display())))?;
    }
    Ok(roots)
}

fn mozilla_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// The dialer for `host:port`: the scenario's source addresses of the destination's family
/// (loopback IPv4 targets spread over 16 addresses unless told otherwise). A name that does not
/// resolve here gets the kernel's choice; its connects will report the failure.
async fn dialer(d: &crate::scenario::DeviceTarget, host: &str, port: u16) -> Arc<Dialer> {
    let sources = match crate::dial::resolve(host, port).await {
        Ok(dest) => d.source_addrs.for_destination(dest.ip()),
        Err(_) => Vec::new(),
    };
    Arc::new(Dialer::new(sources))
}

/// Starts what the scenario needs; the embedded emulator listens once per lane (one endpoint
/// each, in lane order).
pub(crate) async fn prepare(
    s: &Scenario,
    lanes: &[tokio::runtime::Handle],
) -> Result<Setup, SetupError> {
    let d = &s.target.device;
    let plain = d.tls == Trust::Plain;
    if let Some((host, port)) = &d.endpoint {
        let tls = match &d.tls {
            Trust::Plain => None,
            Trust::System | Trust::Emulator => {
                Some(client_config(mozilla_roots(), d.tls_chain_cache)?)
            }
            Trust::Pem(p) => Some(client_config(pem_roots(p)?, d.tls_chain_cache)?),
        };
        let strings: Vec<String> = d
            .hub_connection_strings
            .iter()
            .map(|c| c.expose().to_owned())
            .collect();
        let twins = (d.verify_twins && !strings.is_empty())
            .then(|| TwinReader::new(&strings, None, d.twin_rate))
            .transpose()
            .map_err(SetupError::Twins)?;
        return Ok(Setup {
            endpoints: vec![Endpoint {
                host: host.clone(),
                port: *port,
                tls,
                id_scope: d
                    .id_scope
                    .clone()
                    .unwrap_or_else(|| s.emulator.id_scope.clone()),
                dialer: dialer(d, host, *port).await,
                connect_timeout: d.connect_timeout,
                connect_retries: d.connect_retries,
                websocket: s.target.mode == Mode::MqttWs,
            }],
            twins,
            emulator: None,
        });
    }
    let any = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let mqtt = s.target.mode == Mode::Mqtt;
    let opts = Options {
        mqtt: (mqtt && !plain).then_some(any).flatten(),
        mqtt_plain: (mqtt && plain).then_some(any).flatten(),
        https: (!mqtt && !plain).then_some(any).flatten(),
        http_plain: any,
        tls: Some(tls::Source::Generated(tls::default_dir())),
        log: false,
        connect_timeout: crate::emulator::mqtt::CONNECT_TIMEOUT,
        limits: crate::emulator::serve::Limits::default(),
        lanes: lanes.to_vec(),
    };
    let running = serve::start(s, &opts).await?;
    let a = &running.addrs;
    let port_of = |a: &serve::Addrs| {
        match (mqtt, plain) {
            (true, false) => a.mqtt,
            (true, true) => a.mqtt_plain,
            (false, false) => a.https,
            (false, true) => a.http_plain,
        }
        .expect("the listener was requested")
        .port()
    };
    let ports: Vec<u16> = if running.lanes.is_empty() {
        vec![port_of(a)]
    } else {
        running.lanes.iter().map(port_of).collect()
    };
    let tls = match (&d.tls, &running.ca) {
        (Trust::Plain, _) => None,
        (Trust::Pem(p), _) => Some(client_config(pem_roots(p)?, d.tls_chain_cache)?),
        (_, Some(ca)) => Some(client_config(pem_roots(ca)?, d.tls_chain_cache)?),
        (_, None) => None,
    };
    let strings: Vec<String> = if d.hub_connection_strings.is_empty() {
        running
            .emulator
            .connection_strings()
            .into_iter()
            .map(|(_, cs)| cs)
            .collect()
    } else {
        d.hub_connection_strings
            .iter()
            .map(|c| c.expose().to_owned())
            .collect()
    };
    let via = a.http_plain.map(|h| format!("http://{h}"));
    let twins = d
        .verify_twins
        .then(|| TwinReader::new(&strings, via, d.twin_rate))
        .transpose()
        .map_err(SetupError::Twins)?;
    let id_scope = d
        .id_scope
        .clone()
        .unwrap_or_else(|| running.emulator.id_scope().to_owned());
    let dialer = dialer(d, "127.0.0.1", ports[0]).await;
    let endpoints = ports
        .into_iter()
        .map(|port| Endpoint {
            host: "127.0.0.1".into(),
            port,
            tls: tls.clone(),
            id_scope: id_scope.clone(),
            dialer: dialer.clone(),
            connect_timeout: d.connect_timeout,
            connect_retries: d.connect_retries,
            websocket: s.target.mode == Mode::MqttWs,
        })
        .collect();
    Ok(Setup {
        endpoints,
        twins,
        emulator: Some(running),
    })
}
