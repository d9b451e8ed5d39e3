//! How `run`, `check` and `report merge` end: the summary on stdout (text, JSON, or only the
//! verdict line), the JUnit file, and the exit code the verdict maps to. Renders and maps; runs
//! nothing.

use std::path::Path;

use anyhow::Context as _;

use super::{EXIT_ERROR, EXIT_FAIL, EXIT_INTERRUPTED, EXIT_PASS, EXIT_THRESHOLD};
use crate::report::Summary;

/// What `run` prints at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Output {
    /// The readable summary.
    Text,
    /// `summary.json`, as written to the report directory.
    Json,
}

/// `run`'s end: the summary as `output` asks (or, quiet, only the verdict line), then
/// [`conclude_with`]'s JUnit and exit code.
pub(super) fn conclude_run(
    summary: &Summary,
    dir: &Path,
    junit: Option<&Path>,
    output: Output,
    quiet: bool,
) -> anyhow::Result<u8> {
    match output {
        Output::Json => say!("{}", serde_json::to_string_pretty(summary)?),
        Output::Text if quiet => {
            let text = crate::report::text::render(summary);
            let verdict = text.lines().rev().find(|l| l.starts_with("verdict:"));
            say!("{}", verdict.unwrap_or("verdict: see summary.json"));
        }
        Output::Text => {
            say!("{}", crate::report::text::render(summary).trim_end());
            say!("report: {}", dir.join("summary.json").display());
        }
    }
    conclude_with(summary, junit)
}

/// Prints the summary, writes JUnit, and maps the verdict to an exit code.
pub(super) fn conclude(summary: &Summary, dir: &Path, junit: Option<&Path>) -> anyhow::Result<u8> {
    say!("{}", crate::report::text::render(summary).trim_end());
    say!("report: {}", dir.join("summary.json").display());
    conclude_with(summary, junit)
}

/// Writes JUnit if asked and maps the verdict to an exit code.
fn conclude_with(summary: &Summary, junit: Option<&Path>) -> anyhow::Result<u8> {
    if let Some(path) = junit {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(path, crate::report::junit::render(summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
        say!("junit: {}", path.display());
    }
    let r = summary.requests;
    if summary.interrupted {
        return Ok(EXIT_INTERRUPTED);
    }
    if r.sent > 0 && r.completed == 0 {
        let why = summary
            .errors
            .first()
            .map_or_else(|| "every request timed out".to_owned(), |e| e.label());
        eprintln!(
            "error: the target {} never answered ({} requests sent): {why}",
            summary.target, r.sent
        );
        return Ok(EXIT_ERROR);
    }
    Ok(
        if !summary.expectations_met() || !summary.snapshot_matched() {
            EXIT_FAIL
        } else if !summary.thresholds_met() {
            EXIT_THRESHOLD
        } else {
            EXIT_PASS
        },
    )
}
