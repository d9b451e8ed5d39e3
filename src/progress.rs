//! The live progress line on a terminal (indicatif). Quiet when `--no-progress` is given or
//! stderr is not a terminal. Reads metrics; never changes them.

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::metrics::Metrics;

/// A progress display, possibly hidden.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar of `total` requests (a spinner when unknown), shown only on a terminal.
    pub(crate) fn new(total: Option<u64>, enabled: bool) -> Self {
        if !enabled || !std::io::stderr().is_terminal() {
            return Self { bar: None };
        }
        let bar = match total {
            Some(t) => {
                ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr_with_hz(4))
                    .with_style(
                        ProgressStyle::with_template(
                            "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    )
            }
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4))
                .with_style(
                    ProgressStyle::with_template("{elapsed_precise} {spinner} {pos} {msg}")
                        .expect("valid template"),
                ),
        };
        Self { bar: Some(bar) }
    }

    /// Redraws from the current metrics.
    pub(crate) fn update(&self, m: &Metrics) {
        let Some(bar) = &self.bar else { return };
        bar.set_position(m.samples);
        let secs = m.start().elapsed().as_secs_f64().max(1e-3);
        let failed: u64 = m.classes.iter().map(|c| c.failed).sum();
        bar.set_message(format!(
            "{:.0}/s  p99 {:.1} ms  unmet {}  no answer {}",
            m.samples as f64 / secs,
            m.overall.latency.value_at_quantile(0.99) as f64 / 1000.0,
            failed,
            m.failed + m.timed_out
        ));
    }

    /// Removes the bar.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
