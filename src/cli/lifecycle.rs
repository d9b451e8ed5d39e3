//! `loadtest setup` and `loadtest cleanup`: their arguments, the credentials and client they are
//! given, and what they print. The work is `lifecycle`'s.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::EXIT_PASS;
use crate::lifecycle::cleanup::{self, Options};
use crate::lifecycle::setup::{self, Action};
use crate::lifecycle::{dps_credentials, Credentials, ServiceClient};
use crate::scenario::{Flags, Scenario};

/// Where the service calls go.
#[derive(Debug, Args)]
pub(super) struct ServiceArgs {
    /// The DPS service connection string (default: $DPS_SERVICE_CONNECTION_STRING); the key is
    /// never printed.
    #[arg(long)]
    connection_string: Option<String>,
    /// Connect to this host:port instead of each service's host name (the emulator's HTTPS
    /// listener); the host names stay in `Host` and in the SAS tokens.
    #[arg(long)]
    endpoint: Option<String>,
    /// PEM file of CA certificates trusted besides the Mozilla roots (e.g. the emulator's CA).
    #[arg(long)]
    ca: Option<PathBuf>,
}

impl ServiceArgs {
    fn open(&self) -> anyhow::Result<(Credentials, ServiceClient)> {
        let dps = dps_credentials(self.connection_string.as_deref())?;
        let client = ServiceClient::new(self.endpoint.clone(), self.ca.as_deref())?;
        Ok((dps, client))
    }
}

#[derive(Debug, Args)]
pub(super) struct SetupArgs {
    /// Scenario file (TOML).
    scenario: PathBuf,
    /// The webhook URL DPS calls (overrides target.url; a `?code=` key is masked in output).
    #[arg(long)]
    url: Option<String>,
    /// Print the JSON that would be sent (keys masked) and send nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    service: ServiceArgs,
}

pub(super) async fn setup_command(a: SetupArgs) -> anyhow::Result<u8> {
    let flags = Flags {
        url: a.url,
        ..Flags::default()
    };
    let s = Scenario::load_with(&a.scenario, &flags)?;
    let Some(url) = s.target.url.as_ref().map(|u| u.expose().to_owned()) else {
        anyhow::bail!(
            "{}: setup needs the webhook URL DPS will call: set [target] url (e.g. \"${{WEBHOOK_URL}}\") or pass --url",
            a.scenario.display()
        );
    };
    let (dps, client) = a.service.open()?;
    let (done, text) = setup::setup(&s, &dps, (!a.dry_run).then_some(&client), &url)
        .await
        .with_context(|| format!("setting up scenario {} on {}", s.name, dps.host))?;
    if !text.is_empty() {
        say!("{}", text.trim_end());
    }
    for (id, action) in &done {
        let what = match action {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Unchanged => "unchanged",
            Action::WouldSend => "would be created or updated (--dry-run)",
        };
        say!("enrollment {id}: {what}");
    }
    say!(
        "DPS {}: custom allocation to {} (the hubs {} must be linked to this DPS instance; that is the resource's configuration, not the service API's)",
        dps.host,
        crate::dps::allocation::mask_url(&url),
        s.enrollment.linked_hubs.join(", ")
    );
    Ok(EXIT_PASS)
}

#[derive(Debug, Args)]
pub(super) struct CleanupArgs {
    /// Scenario file (TOML).
    scenario: PathBuf,
    /// An IoT Hub connection string with registry write rights (repeat per hub; default: the
    /// scenario's target.hub_connection_strings).
    #[arg(long = "hub")]
    hubs: Vec<String>,
    /// Registry operations per minute (default: the [capacity] tier's quota per unit × units;
    /// S1: 100/min/unit).
    #[arg(long)]
    registry_rate: Option<u32>,
    /// DPS service operations per minute (default 1,000).
    #[arg(long, default_value_t = 1000)]
    dps_rate: u32,
    /// Where the resumable progress (cleanup.json) is kept (default: reports/<scenario>-cleanup/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// List and count what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    service: ServiceArgs,
}

pub(super) async fn cleanup_command(a: CleanupArgs) -> anyhow::Result<u8> {
    let s = Scenario::load(&a.scenario)?;
    let (dps, client) = a.service.open()?;
    let strings: Vec<String> = if a.hubs.is_empty() {
        s.target
            .device
            .hub_connection_strings
            .iter()
            .map(|c| c.expose().to_owned())
            .collect()
    } else {
        a.hubs.clone()
    };
    let hubs = strings
        .iter()
        .map(|cs| Credentials::parse(cs, "a hub connection string"))
        .collect::<Result<Vec<_>, _>>()?;
    let l = &s.capacity.limits;
    let registry = a.registry_rate.unwrap_or_else(|| {
        (l.offer(l.hub_tier).registry_per_minute * f64::from(l.hub_units)).max(1.0) as u32
    });
    let o = Options {
        dry_run: a.dry_run,
        registry_per_minute: registry,
        dps_per_minute: a.dps_rate,
        dir: a
            .out
            .unwrap_or_else(|| s.report.out.join(format!("{}-cleanup", s.name))),
    };
    let bar = (!a.dry_run && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(indicatif::ProgressBar::new_spinner);
    let p = cleanup::cleanup(&s, &dps, &hubs, &client, &o, |p| {
        if let Some(b) = &bar {
            let ids: usize = p.hubs_done.values().sum();
            b.set_message(format!(
                "{ids} identities, {}/{} registration records",
                p.dps_done,
                p.items.len()
            ));
            b.tick();
        }
    })
    .await
    .with_context(|| {
        format!(
            "cleaning up scenario {} (progress in {})",
            s.name,
            o.dir.display()
        )
    })?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let on_hubs: usize = p.items.iter().filter(|i| i.assigned.is_some()).count();
    let known: Vec<String> = hubs.iter().map(|h| h.host.to_ascii_lowercase()).collect();
    let uncovered = p
        .items
        .iter()
        .filter(|i| i.assigned.as_ref().is_some_and(|(h, _)| !known.contains(h)))
        .count();
    if a.dry_run {
        say!(
            "would delete {} registration records and {on_hubs} device identities ({uncovered} on hubs without a connection string would be left) at {registry} registry and {} DPS operations/min",
            p.items.len(),
            a.dps_rate
        );
        return Ok(EXIT_PASS);
    }
    say!(
        "deleted {} registration records ({} already gone) and {} device identities ({} already gone, {} left on hubs without a connection string); progress: {}",
        p.records_deleted,
        p.records_absent,
        p.identities_deleted,
        p.identities_absent,
        p.identities_skipped,
        o.dir.join("cleanup.json").display()
    );
    Ok(EXIT_PASS)
}
