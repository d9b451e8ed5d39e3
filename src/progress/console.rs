//! The live console of a run: on a terminal, a compact multi-line view (indicatif) redrawn as the
//! run goes; elsewhere (a CI log, a pipe) one plain line every 10 s. Both show elapsed/planned
//! time, the last completed second's achieved rate and p50/p99 (from the interval histograms, not
//! averages since the start), requests in flight, outcomes and errors by kind. Text only; reads
//! metrics, never changes them.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::metrics::intervals::Second;
use crate::metrics::Metrics;

/// Where the view goes.
#[derive(Debug)]
pub(super) enum Console {
    /// A terminal: the bar and its lines, redrawn.
    Terminal(ProgressBar),
    /// Not a terminal: a line every [`LOG_EVERY`] of the run.
    Log {
        /// When (since the schedule's zero) the next line is due.
        next: Mutex<Duration>,
    },
}

/// How often the non-terminal view writes a line.
pub(super) const LOG_EVERY: Duration = Duration::from_secs(10);

/// What the view shows, from the metrics at one instant.
struct View {
    elapsed: Duration,
    planned: Option<Duration>,
    ended: u64,
    total: Option<u64>,
    last: Option<(f64, f64, f64)>,
    in_flight: u64,
    unmet: u64,
    outcomes: Vec<(String, u64)>,
    errors: Vec<(String, u64)>,
    timed_out: u64,
    throttled: u64,
}

fn hms(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

impl View {
    fn of(m: &Metrics, rows: &[Second], in_flight: u64, planned: Option<Duration>) -> Self {
        let mut outcomes: Vec<(String, u64)> = m
            .outcomes
            .iter()
            .map(|(k, n)| (k.to_string(), *n))
            .collect();
        outcomes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut by_source = std::collections::BTreeMap::<&str, u64>::new();
        for ((source, _), n) in &m.errors {
            *by_source.entry(source.as_str()).or_default() += n;
        }
        Self {
            elapsed: m.elapsed(),
            planned,
            ended: m.samples,
            total: None,
            last: rows.last().map(|r| {
                (
                    r.ended as f64 / r.length_s.max(0.001),
                    r.p50_us as f64 / 1000.0,
                    r.p99_us as f64 / 1000.0,
                )
            }),
            in_flight,
            unmet: m.classes.iter().map(|c| c.failed).sum(),
            outcomes,
            errors: by_source
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            timed_out: m.timed_out,
            throttled: m
                .phases
                .as_ref()
                .map_or_else(|| rows.iter().map(|r| r.throttled).sum(), |p| p.throttled),
        }
    }

    fn last_second(&self) -> String {
        match self.last {
            Some((rate, p50, p99)) => {
                format!("last 1 s {rate:.0}/s  p50 {p50:.1} ms  p99 {p99:.1} ms")
            }
            None => "last 1 s: first second running".into(),
        }
    }

    fn list(items: &[(String, u64)], none: &str, at_most: usize) -> String {
        if items.is_empty() {
            return none.into();
        }
        let mut s: Vec<String> = items
            .iter()
            .take(at_most)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        if items.len() > at_most {
            s.push(format!("+{} more", items.len() - at_most));
        }
        s.join("  ")
    }

    /// The terminal's lines under the bar.
    fn lines(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "  {}  in flight {}", self.last_second(), self.in_flight);
        let _ = writeln!(
            o,
            "  outcomes  {}  (unmet expectations {})",
            Self::list(&self.outcomes, "none yet", 4),
            self.unmet
        );
        let _ = write!(
            o,
            "  errors    {}  timed out {}  429s {}",
            Self::list(&self.errors, "none", 4),
            self.timed_out,
            self.throttled
        );
        o
    }

    /// The one line of the non-terminal view.
    fn line(&self) -> String {
        let planned = self
            .planned
            .map_or_else(String::new, |p| format!("/{}", hms(p)));
        let total = self.total.map_or_else(String::new, |t| format!("/{t}"));
        format!(
            "progress {}{planned}: {}{total} ended, {}, in flight {}, outcomes {}, unmet {}, errors {}, timed out {}, 429s {}",
            hms(self.elapsed),
            self.ended,
            self.last_second(),
            self.in_flight,
            Self::list(&self.outcomes, "none", 4),
            self.unmet,
            Self::list(&self.errors, "none", 4),
            self.timed_out,
            self.throttled
        )
    }
}

impl Console {
    /// The view for this process's stderr: `None` when disabled.
    pub(super) fn new(
        total: Option<u64>,
        planned: Option<Duration>,
        enabled: bool,
    ) -> Option<Self> {
        if !enabled {
            return None;
        }
        if !std::io::stderr().is_terminal() {
            return Some(Console::Log {
                next: Mutex::new(LOG_EVERY),
            });
        }
        let planned = planned.map_or_else(String::new, |p| format!(" / {}", hms(p)));
        let bar = match total {
            Some(t) => {
                ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr_with_hz(4))
                    .with_style(
                        ProgressStyle::with_template(&format!(
                        "{{elapsed_precise}}{planned} [{{bar:30}}] {{pos}}/{{len}} ended\n{{msg}}"
                    ))
                        .expect("valid template")
                        .progress_chars("=> "),
                    )
            }
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4))
                .with_style(
                    ProgressStyle::with_template(&format!(
                        "{{elapsed_precise}}{planned} {{spinner}} {{pos}} ended\n{{msg}}"
                    ))
                    .expect("valid template"),
                ),
        };
        Some(Console::Terminal(bar))
    }

    /// Redraws (terminal) or, every [`LOG_EVERY`], writes a line.
    pub(super) fn update(
        &self,
        m: &Metrics,
        rows: &[Second],
        in_flight: u64,
        total: Option<u64>,
        planned: Option<Duration>,
    ) {
        let view = || View {
            total,
            ..View::of(m, rows, in_flight, planned)
        };
        match self {
            Console::Terminal(bar) => {
                bar.set_position(m.samples);
                bar.set_message(view().lines());
            }
            Console::Log { next } => {
                let mut next = next
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let elapsed = m.elapsed();
                if elapsed >= *next {
                    while *next <= elapsed {
                        *next += LOG_EVERY;
                    }
                    eprintln!("{}", view().line());
                }
            }
        }
    }

    /// Removes the terminal view.
    pub(super) fn finish(&self) {
        if let Console::Terminal(bar) = self {
            bar.finish_and_clear();
        }
    }
}
