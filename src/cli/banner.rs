//! What `run`, `check` and `plan` print before they start: the banner (scenario, mode, target with
//! secrets masked, rate) and, for connection-per-device load, warnings when this machine rather
//! than the target will be the limit (open-file limit, listen queue). Prints to stderr; measures
//! nothing.

use crate::scenario::{Mode, Rate, Scenario};

pub(super) fn banner(command: &str, s: &Scenario) {
    let rate = match s.load.rate {
        Rate::Max => format!("closed loop, {} connections", s.load.connections),
        Rate::PerSecond(r) if s.load.stages.is_empty() => format!("{r}/s"),
        Rate::PerSecond(_) => format!("{} rate stages", s.load.stages.len()),
    };
    let length = match (s.load.duration, s.load.count) {
        (Some(d), Some(n)) => format!(" for {} or {n} requests", humantime::format_duration(d)),
        (Some(d), None) => format!(" for {}", humantime::format_duration(d)),
        (None, Some(n)) => format!(", {n} requests"),
        (None, None) => format!(", {} devices", s.population_sizes().iter().sum::<u64>()),
    };
    eprintln!(
        "loadtest {command}: scenario {} ({} mode) against {}, {rate}{length}",
        s.name,
        s.target.mode.name(),
        s.target_display()
    );
    warnings(s);
}

/// Connection-per-device load: says when this machine, not the target, will be the limit (also
/// under `--quiet`).
pub(super) fn warnings(s: &Scenario) {
    if s.target.mode != Mode::Webhook {
        let embedded = s.target.device.endpoint.is_none();
        let per_device = if embedded { 2 } else { 1 };
        let limit = crate::listen::raise_nofile();
        let open = u64::from(s.load.max_in_flight.max(s.load.connections)) * per_device;
        let rate = match s.load.rate {
            Rate::PerSecond(r) => Some(r),
            Rate::Max => None,
        };
        let dest = s.target.device.endpoint.as_ref().map_or(
            std::net::IpAddr::from([127, 0, 0, 1]),
            |(host, _)| {
                host.parse().unwrap_or(if host == "localhost" {
                    std::net::IpAddr::from([127, 0, 0, 1])
                } else {
                    std::net::IpAddr::from([0, 0, 0, 0])
                })
            },
        );
        let sources = s.target.device.source_addrs.for_destination(dest).len();
        let warnings = [
            crate::listen::nofile_warning(open, limit),
            rate.filter(|_| embedded)
                .and_then(crate::listen::backlog_warning),
            rate.filter(|_| matches!(s.target.mode, Mode::Mqtt | Mode::MqttWs))
                .and_then(|r| {
                    let tw = crate::dial::TimeWait::of_host(dest.is_loopback());
                    crate::dial::port_warning(r, sources, tw)
                }),
        ];
        for w in warnings.into_iter().flatten() {
            eprintln!("warning: {w}");
        }
    }
}
