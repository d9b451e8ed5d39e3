//! `loadtest completions <shell>` and `loadtest man`: shell completion scripts (clap_complete) and
//! the man page (clap_mangen), both generated from the one CLI definition so they never drift.
//! Writes to stdout only; knows nothing about what the commands do.

use std::io::Write as _;

use clap::CommandFactory as _;

use super::Cli;

/// Writes the completion script for `shell` to stdout.
pub(super) fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut cmd, "loadtest", &mut out);
    out.flush()?;
    Ok(())
}

/// Writes the man page (roff, section 1) to stdout: `loadtest man > loadtest.1`.
pub(super) fn man() -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    out.flush()?;
    Ok(())
}
