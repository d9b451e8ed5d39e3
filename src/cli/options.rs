//! Small value types and parsers of the command line: `--color`, the servers' connection limits,
//! `--shard`, `--thresholds`, `--policy`. No dispatch here.

use std::io::IsTerminal as _;
use std::time::Duration;

use clap::Args;

use crate::threshold::Selection;
use crate::webhook::policy::Policy;

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Color {
    Auto,
    Always,
    Never,
}

impl Color {
    /// Whether to colour what goes to standard error.
    pub(super) fn on_stderr(self) -> bool {
        match self {
            Color::Always => true,
            Color::Never => false,
            // https://no-color.org: any non-empty NO_COLOR turns colour off.
            Color::Auto => {
                std::io::stderr().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

/// Connection limits of a server (`dps serve`, `webhook serve`).
#[derive(Debug, Args)]
pub(super) struct LimitArgs {
    /// Connections served at once; beyond that new ones wait (a line on stderr says so).
    #[arg(long, default_value_t = 10_000)]
    pub(super) max_connections: usize,
    /// Time an HTTP client has to send a request's headers (and an idle kept-alive connection
    /// stays open), e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(super) header_timeout: Duration,
}

impl LimitArgs {
    pub(super) fn limits(&self) -> crate::emulator::serve::Limits {
        crate::emulator::serve::Limits {
            max_connections: self.max_connections,
            header_read_timeout: self.header_timeout,
        }
    }
}

pub(super) fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{s}` is not I/N with 0 <= I < N, e.g. 0/3");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (u32, u32) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

/// `--start-at`: an RFC 3339 time (any offset), at most a day ahead: a schedule that far off is a
/// typo, not a plan.
pub(super) fn parse_start_at(s: &str) -> Result<std::time::SystemTime, String> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
        format!("`{s}` is not an RFC 3339 time such as 2026-12-02T10:00:00Z ({e})")
    })?;
    let at = std::time::SystemTime::from(t);
    let day = std::time::Duration::from_secs(86_400);
    if at > std::time::SystemTime::now() + day {
        return Err(format!("`{s}` is more than a day ahead"));
    }
    Ok(at)
}

/// `--run-id`: 1 to 64 of `[A-Za-z0-9._-]` (it names the run in reports and file names).
pub(super) fn parse_run_id(s: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!("`{s}` is not 1 to 64 of A-Z a-z 0-9 . _ -"))
    }
}

pub(super) fn parse_selection(s: &str) -> Result<Selection, String> {
    Selection::parse(s).ok_or_else(|| {
        format!(
            "unknown threshold selection `{s}`; choose from: {}",
            Selection::NAMES.join(", ")
        )
    })
}

pub(super) fn parse_policy(s: &str) -> Result<Policy, String> {
    Policy::parse(s).ok_or_else(|| {
        format!(
            "unknown policy `{s}`; choose from: {}",
            Policy::NAMES.join(", ")
        )
    })
}
