//! `loadtest webhook serve`: the reference webhook as its own process (http, or https with a
//! generated development CA), until Ctrl-C. Wires the CLI's values to `webhook::server`; the
//! webhook's behaviour lives there.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;

use super::EXIT_PASS;
use crate::scenario::Scenario;
use crate::webhook::policy::Policy;
use crate::webhook::server;

pub(super) async fn serve(
    addr: SocketAddr,
    policy: Option<Policy>,
    scenario: Option<PathBuf>,
    tls_dir: Option<PathBuf>,
    metrics_addr: Option<SocketAddr>,
    limits: crate::emulator::serve::Limits,
) -> anyhow::Result<u8> {
    let s = scenario.as_deref().map(Scenario::load).transpose()?;
    let policy = policy
        .or(s.as_ref().map(|s| s.policy))
        .unwrap_or(Policy::TutorialCurrent);
    let faults = s.as_ref().map(Scenario::fault_rules).unwrap_or_default();
    let (listener, _) = crate::listen::bind(addr).with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    let tls = tls_dir
        .map(|d| crate::tls::load(&crate::tls::Source::Generated(d)))
        .transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // One write, and its failure ignored: whoever started us may read the first line and close
    // the pipe, and a server must not die of that.
    let mut banner = format!("reference webhook listening on {scheme}://{local} (policy {}, {} fault rules); Ctrl-C stops it\n", policy.name(), faults.len());
    if let Some(t) = &tls {
        banner.push_str(&format!(
            "  CA (trust it, e.g. target.ca): {}\n",
            t.ca.display()
        ));
    }
    let stats = std::sync::Arc::new(server::Stats::default());
    let _metrics = match metrics_addr {
        Some(addr) => {
            let mut registry = prometheus_client::registry::Registry::default();
            registry.register_collector(Box::new(stats.clone()));
            let (at, task) = crate::progress::exporter::serve(addr, registry)
                .with_context(|| format!("binding --metrics-addr {addr}"))?;
            banner.push_str(&format!("  metrics: http://{at}/metrics\n"));
            Some(AbortOnDrop(task))
        }
        None => None,
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes());
        let _ = out.flush();
    }
    let tls = tls.map(|t| tokio_rustls::TlsAcceptor::from(t.config));
    let echo_payload = s.as_ref().is_some_and(|s| s.echo_payload);
    let config = server::Config {
        policy,
        faults,
        echo_payload,
        limits,
    };
    server::run(listener, config, tls, stats, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(EXIT_PASS)
}

/// Stops a background task when dropped (the metrics endpoint ends with the server).
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
