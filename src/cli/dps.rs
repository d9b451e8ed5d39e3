//! `loadtest dps serve`: starts the DPS emulator with a scenario's (or the built-in Contoso)
//! configuration, prints its endpoints, CA and hub connection strings, and serves until Ctrl-C.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use super::EXIT_PASS;
use crate::scenario::Scenario;

#[derive(Debug, Args)]
pub(super) struct DpsServeArgs {
    /// Scenario (enrollment, hubs, webhook, `[emulator]`); default: the built-in Contoso set-up
    /// (scenarios/contoso.toml) with the embedded reference webhook.
    scenario: Option<PathBuf>,
    /// Same as SCENARIO: a standalone emulator configuration is a scenario file.
    #[arg(long, conflicts_with = "scenario")]
    config: Option<PathBuf>,
    /// MQTT over TLS.
    #[arg(long, default_value = "127.0.0.1:8883")]
    mqtt: SocketAddr,
    /// Also MQTT over plain TCP (for load runs), e.g. 127.0.0.1:1883.
    #[arg(long)]
    mqtt_plain: Option<SocketAddr>,
    /// HTTPS (DPS device API and the hubs' twin API).
    #[arg(long, default_value = "127.0.0.1:443")]
    https: SocketAddr,
    /// Also plain HTTP (for load runs).
    #[arg(long)]
    http_plain: Option<SocketAddr>,
    /// No HTTPS listener.
    #[arg(long)]
    no_https: bool,
    /// Directory of the generated development CA and server certificate (created on first use).
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// Your own server certificate chain (PEM), instead of the generated one.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Answer MQTT register requests with the terminal status at once.
    #[arg(long)]
    immediate: bool,
    /// Time a new connection has to finish TLS and send CONNECT, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    /// Start with no enrollments: devices are unknown until the DPS service API (e.g.
    /// `loadtest setup`) creates theirs.
    #[arg(long)]
    no_enrollments: bool,
    /// Serve Prometheus metrics (OpenMetrics text) at http://ADDR/metrics: registrations, polls,
    /// 429s, admission refusals, terminal statuses, registrations in progress.
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    #[command(flatten)]
    limits: super::options::LimitArgs,
}

/// The built-in emulator configuration: the Contoso scenario.
const DEFAULT_DPS_SCENARIO: &str = include_str!("../../scenarios/contoso.toml");

pub(super) async fn dps_serve(a: DpsServeArgs) -> anyhow::Result<u8> {
    let flags = crate::scenario::Flags {
        immediate: a.immediate,
        ..Default::default()
    };
    let s = match a.scenario.as_ref().or(a.config.as_ref()) {
        Some(p) => Scenario::load_with(p, &flags)?,
        None => Scenario::parse_with(
            Path::new("(built-in) scenarios/contoso.toml"),
            DEFAULT_DPS_SCENARIO,
            &flags,
        )?,
    };
    let tls = match (a.tls_cert, a.tls_key) {
        (Some(cert), Some(key)) => crate::emulator::tls::Source::Files { cert, key },
        _ => crate::emulator::tls::Source::Generated(
            a.tls_dir.unwrap_or_else(crate::emulator::tls::default_dir),
        ),
    };
    let opts = crate::emulator::serve::Options {
        mqtt: Some(a.mqtt),
        mqtt_plain: a.mqtt_plain,
        https: (!a.no_https).then_some(a.https),
        http_plain: a.http_plain,
        tls: Some(tls),
        log: true,
        connect_timeout: a.connect_timeout,
        limits: a.limits.limits(),
        lanes: Vec::new(),
    };
    let running = match crate::emulator::serve::start(&s, &opts).await {
        Ok(r) => r,
        Err(e @ crate::emulator::serve::ServeError::Bind { .. }) => bail!(
            "starting the DPS emulator: {e} (ports below 1024 need root: try --https 127.0.0.1:8443)"
        ),
        Err(e) => bail!("starting the DPS emulator: {e}"),
    };
    let e = &running.emulator;
    if a.no_enrollments {
        e.clear_enrollments();
    }
    let metrics = match a.metrics_addr {
        Some(addr) => {
            let mut registry = prometheus_client::registry::Registry::default();
            registry.register_collector(Box::new(crate::emulator::Exported(e.clone())));
            match crate::progress::exporter::serve(addr, registry) {
                Ok((at, task)) => Some((at, super::webhook::AbortOnDrop(task))),
                Err(err) => {
                    running.stop().await;
                    bail!("binding --metrics-addr {addr}: {err}");
                }
            }
        }
        None => None,
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "DPS emulator for scenario {} ({} allocation)",
        s.name,
        e.options().allocation.name()
    )?;
    writeln!(out, "  ID scope:      {}", e.id_scope())?;
    let ad = &running.addrs;
    if let Some(x) = ad.mqtt {
        writeln!(out, "  MQTT (TLS):    {x}")?;
    }
    if let Some(x) = ad.mqtt_plain {
        writeln!(out, "  MQTT (plain):  {x}")?;
    }
    if let Some(x) = ad.https {
        writeln!(out, "  HTTPS:         https://{x}")?;
    }
    if let Some(x) = ad.http_plain {
        writeln!(out, "  HTTP (plain):  http://{x}")?;
    }
    if let Some(x) = ad.webhook {
        writeln!(
            out,
            "  webhook:       embedded reference webhook on http://{x} ({})",
            s.policy.name()
        )?;
    } else if s.target.url.is_none() {
        writeln!(
            out,
            "  webhook:       embedded reference webhook, called in-process ({}; [emulator] webhook = \"http\" serves it on loopback HTTP)",
            s.policy.name()
        )?;
    } else {
        writeln!(out, "  webhook:       {}", s.target_display())?;
    }
    if let Some(ca) = &running.ca {
        writeln!(out, "  CA (trust it): {}", ca.display())?;
    }
    if let Some((at, _)) = &metrics {
        writeln!(out, "  metrics:       http://{at}/metrics")?;
    }
    writeln!(
        out,
        "  DPS service:   {} (service API on the HTTPS port{})",
        e.service_connection_string(),
        if a.no_enrollments {
            "; no enrollments yet"
        } else {
            ""
        }
    )?;
    for (host, cs) in e.connection_strings() {
        writeln!(out, "  hub {host}: {cs}")?;
    }
    writeln!(
        out,
        "  limits:        accept queue {} (net.core.somaxconn caps {}), open files {}",
        crate::listen::effective_backlog(),
        crate::listen::BACKLOG,
        crate::listen::raise_nofile()
    )?;
    writeln!(out, "Ctrl-C stops it.")?;
    out.flush()?;
    drop(out);
    let _ = tokio::signal::ctrl_c().await;
    let c = &e.counters;
    let n = |x: &std::sync::atomic::AtomicU64| x.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "stopped: {} registrations ({} assigned, {} failed, {} disabled), {} polls, {} throttled, {} refused",
        n(&c.registrations), n(&c.assigned), n(&c.failed), n(&c.disabled), n(&c.polls), n(&c.throttled), n(&c.refused)
    );
    running.stop().await;
    Ok(EXIT_PASS)
}
