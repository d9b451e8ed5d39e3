//! Thresholds: k6-style pass/fail criteria on a run's final histograms and counters, written in
//! the scenario as `"latency.p99{class:toaster}" = "< 250ms"`.
//!
//! This module holds the threshold model, measures it on [`Metrics`], and decides early failure
//! for `abort_on_fail`; `parse.rs` reads the syntax. Locating errors in
//! the file is the scenario validator's job; exit codes are the CLI's.
//!
//! Early failure is exact, not k6's "failing right now": a threshold aborts the run only when no
//! possible outcome of the requests still to come could make it pass (the remaining requests are
//! assumed to be the best case: instant, answered, as expected).

mod parse;

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::dps::OutcomeKey;
#[cfg(test)]
use crate::dps::Status;

use crate::metrics::{ClassStats, Histos, Metrics};
pub(crate) use parse::metric as parse_metric;

/// Which of the three timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// done − intended (`latency`).
    Latency,
    /// done − first send (`service_time`).
    Service,
    /// first send − intended (`schedule_lag`).
    Lag,
}

/// How a timing histogram is reduced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Agg {
    /// A quantile in (0, 1].
    Quantile(f64),
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Arithmetic mean.
    Mean,
}

/// A counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Requests that ended (answered, failed or timed out).
    Requests,
    /// Requests without an answer (transport error or timeout).
    Errors,
    /// Requests whose outcome did not meet the class expectation.
    Unexpected,
    /// Webhook calls beyond the first per request (DPS's ≥ 429 retries).
    Retries,
    /// Scheduled requests never sent (overall only).
    NotSent,
}

/// What a threshold measures.
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    /// A timing histogram, reduced; limits in µs.
    Time(Timing, Agg),
    /// Errors / requests.
    ErrorRate,
    /// Unexpected / requests.
    UnexpectedRate,
    /// Answered requests per second (overall only).
    Throughput,
    /// A counter.
    Count(Counter),
    /// Requests with this outcome: a count, or with `rate` a fraction of requests.
    Outcome {
        /// `assigned`, `failed:400207`, …
        key: OutcomeKey,
        /// Fraction instead of count.
        rate: bool,
    },
}

/// Comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }
}

/// One threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// As written, normalised: `latency.p99{class:toaster} < 250ms`.
    pub name: String,
    /// What is measured.
    pub metric: Metric,
    /// Class index and name (`{class:NAME}`), or all classes.
    pub class: Option<(usize, String)>,
    /// Operator.
    pub op: Op,
    /// Limit (µs for timings).
    pub limit: f64,
    /// Stop the run as soon as the threshold can no longer pass.
    pub abort_on_fail: bool,
}

/// A threshold's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The threshold's name.
    pub name: String,
    /// Measured value for display (`312.4ms`, `0.0012`, `1843.2/s`), `no data` when nothing
    /// was measured.
    pub measured: String,
    /// Measured value as a number (µs for timings), if any.
    pub value: Option<f64>,
    /// Passed.
    pub passed: bool,
    /// Not evaluated (`--thresholds`); counts as passed.
    pub skipped: bool,
}

/// Which thresholds a run evaluates (`--thresholds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Selection {
    /// Every threshold (the default).
    #[default]
    All,
    /// Only thresholds on counts and rates of outcomes: timing and throughput thresholds depend
    /// on how busy the machine is, so a CI runner whose speed varies can skip them.
    Counts,
    /// None.
    None,
}

impl Selection {
    /// The flag values.
    pub const NAMES: [&'static str; 3] = ["all", "counts", "none"];

    /// Parses `all`, `counts`, `none`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "all" => Selection::All,
            "counts" => Selection::Counts,
            "none" => Selection::None,
            _ => return None,
        })
    }

    /// Whether `t` is evaluated.
    pub fn includes(self, t: &Threshold) -> bool {
        match self {
            Selection::All => true,
            Selection::Counts => !t.metric.is_timing(),
            Selection::None => false,
        }
    }

    /// The flag as written.
    pub fn name(self) -> &'static str {
        match self {
            Selection::All => "all",
            Selection::Counts => "counts",
            Selection::None => "none",
        }
    }
}

impl Metric {
    /// Measures time (latency, service time, lag) or throughput: depends on the machine's speed.
    pub fn is_timing(&self) -> bool {
        matches!(self, Metric::Time(..) | Metric::Throughput)
    }
}

pub(crate) fn is_rate(m: &Metric) -> bool {
    matches!(
        m,
        Metric::ErrorRate | Metric::UnexpectedRate | Metric::Outcome { rate: true, .. }
    )
}

impl Threshold {
    /// Builds a threshold from its key and condition.
    pub fn new(
        path: &str,
        condition: &str,
        classes: &[&str],
        abort_on_fail: bool,
    ) -> Result<Self, String> {
        let (metric, class) = parse::metric(path, classes)?;
        let (op, limit) = parse::condition(&metric, condition)?;
        let name = format!(
            "{path} {} {}",
            op.as_str(),
            condition.trim()[op.as_str().len()..].trim()
        );
        Ok(Self {
            name,
            metric,
            class,
            op,
            limit,
            abort_on_fail,
        })
    }

    /// The final verdict.
    pub fn evaluate(&self, run: &RunView<'_>) -> Verdict {
        let value = self.measure(run, 0);
        Verdict {
            name: self.name.clone(),
            measured: value.map_or_else(|| "no data".to_owned(), |v| self.display(v)),
            value,
            passed: value.is_some_and(|v| self.op.holds(v, self.limit)),
            skipped: false,
        }
    }

    /// The verdict of a threshold that `selection` leaves out.
    pub fn skipped(&self, selection: Selection) -> Verdict {
        Verdict {
            name: self.name.clone(),
            measured: format!("skipped (--thresholds {})", selection.name()),
            value: None,
            passed: true,
            skipped: true,
        }
    }

    /// The verdict under `selection`: evaluated, or skipped.
    pub fn verdict(&self, run: &RunView<'_>, selection: Selection) -> Verdict {
        if selection.includes(self) {
            self.evaluate(run)
        } else {
            self.skipped(selection)
        }
    }

    /// True when the threshold cannot pass whatever the `remaining` requests do (`None`: an
    /// unknown number remains). Only upper bounds (`<`, `<=`) are decided early.
    pub fn failed_for_good(&self, run: &RunView<'_>, remaining: Option<u64>) -> bool {
        if !matches!(self.op, Op::Lt | Op::Le) {
            return false;
        }
        let best = match (&self.metric, remaining) {
            // Monotone in time: what has been seen stays.
            (Metric::Count(_) | Metric::Outcome { rate: false, .. }, _)
            | (Metric::Time(_, Agg::Max), _) => self.measure(run, 0),
            (_, None) => None,
            (Metric::Throughput, _) => None,
            (_, Some(r)) => self.measure(run, r),
        };
        best.is_some_and(|v| !self.op.holds(v, self.limit))
    }

    /// The measured value; `extra` more requests are assumed instant and as expected.
    fn measure(&self, run: &RunView<'_>, extra: u64) -> Option<f64> {
        let m = run.metrics;
        let scope = match &self.class {
            Some((i, _)) => Scope::Class(&m.classes[*i], m.class_histos(*i)),
            None => Scope::All(run),
        };
        let requests = scope.requests() + extra;
        let rate = |n: u64| (requests > 0).then(|| n as f64 / requests as f64);
        match &self.metric {
            Metric::Time(t, agg) => time(scope.histos(), *t, *agg, extra),
            Metric::ErrorRate => rate(scope.errors()),
            Metric::UnexpectedRate => rate(scope.unexpected()),
            Metric::Throughput => (run.elapsed_s > 0.0).then(|| m.completed as f64 / run.elapsed_s),
            Metric::Count(c) => Some(match c {
                Counter::Requests => scope.requests(),
                Counter::Errors => scope.errors(),
                Counter::Unexpected => scope.unexpected(),
                Counter::Retries => scope.retries(),
                Counter::NotSent => run.not_sent,
            } as f64),
            Metric::Outcome { key, rate: r } => {
                let n = scope.outcomes().get(key).copied().unwrap_or(0);
                if *r {
                    rate(n)
                } else {
                    Some(n as f64)
                }
            }
        }
    }

    fn display(&self, v: f64) -> String {
        match &self.metric {
            Metric::Time(..) => fmt_us(v),
            Metric::Throughput => format!("{v:.1}/s"),
            m if is_rate(m) => format!("{v:.4}"),
            _ => format!("{v}"),
        }
    }
}

/// Formats µs as the largest fitting unit: `850µs`, `312.4ms`, `2.05s`.
pub(crate) fn fmt_us(us: f64) -> String {
    let mut s = String::new();
    if us < 1000.0 {
        let _ = write!(s, "{us:.0}µs");
    } else if us < 1e6 {
        let _ = write!(s, "{:.1}ms", us / 1e3);
    } else {
        let _ = write!(s, "{:.2}s", us / 1e6);
    }
    s
}

fn time(h: &Histos, t: Timing, agg: Agg, extra: u64) -> Option<f64> {
    let h = match t {
        Timing::Latency => &h.latency,
        Timing::Service => &h.service,
        Timing::Lag => &h.lag,
    };
    if extra > 0 {
        // The best case for an upper bound: every remaining request takes no time.
        let mut best: Histogram<u64> = h.clone();
        best.saturating_record_n(0, extra);
        return reduce(&best, agg);
    }
    reduce(h, agg)
}

fn reduce(h: &Histogram<u64>, agg: Agg) -> Option<f64> {
    if h.is_empty() {
        return None;
    }
    Some(match agg {
        // Same reduction as the report's percentiles, so the two always agree.
        Agg::Quantile(q) => h.highest_equivalent(h.value_at_quantile(q)) as f64,
        Agg::Min => h.min() as f64,
        Agg::Max => h.max() as f64,
        Agg::Mean => h.mean(),
    })
}

/// The run as thresholds see it.
#[derive(Debug, Clone, Copy)]
pub struct RunView<'a> {
    /// Everything recorded.
    pub metrics: &'a Metrics,
    /// Scheduled but never sent.
    pub not_sent: u64,
    /// Measured seconds.
    pub elapsed_s: f64,
}

enum Scope<'a> {
    All(&'a RunView<'a>),
    /// A class's counts and its latencies.
    Class(&'a ClassStats, &'a Histos),
}

impl Scope<'_> {
    fn requests(&self) -> u64 {
        match self {
            Scope::All(r) => r.metrics.samples,
            Scope::Class(c, _) => c.requests,
        }
    }
    fn errors(&self) -> u64 {
        match self {
            Scope::All(r) => r.metrics.failed + r.metrics.timed_out,
            Scope::Class(c, _) => c.no_answer,
        }
    }
    fn unexpected(&self) -> u64 {
        match self {
            Scope::All(r) => r.metrics.classes.iter().map(|c| c.failed).sum(),
            Scope::Class(c, _) => c.failed,
        }
    }
    fn retries(&self) -> u64 {
        match self {
            Scope::All(r) => r.metrics.classes.iter().map(|c| c.retries).sum(),
            Scope::Class(c, _) => c.retries,
        }
    }
    fn histos(&self) -> &Histos {
        match self {
            Scope::All(r) => &r.metrics.overall,
            Scope::Class(_, h) => h,
        }
    }
    fn outcomes(&self) -> &std::collections::BTreeMap<OutcomeKey, u64> {
        match self {
            Scope::All(r) => &r.metrics.outcomes,
            Scope::Class(c, _) => &c.outcomes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{End, Sample};
    use std::time::Duration;
    use tokio::time::Instant;

    const CLASSES: &[&str] = &["toaster", "kettle"];

    /// 100 requests: class 0 has 90 assigned taking 1..=90 ms; class 1 has 8 failed:400207
    /// (10 ms, one of them retried twice) and 2 transport errors.
    fn metrics() -> Metrics {
        let t0 = Instant::now();
        let mut m = Metrics::new(2, t0, 1, false);
        for i in 0..100u64 {
            let (class, ms, end, status, code, attempts) = match i {
                0..=89 => (0, i + 1, End::Answered, Status::Assigned, None, 1),
                90..=97 => (
                    1,
                    10,
                    End::Answered,
                    Status::Failed,
                    Some(400_207),
                    if i == 90 { 3 } else { 1 },
                ),
                _ => (1, 10, End::Transport, Status::Failed, Some(400_207), 1),
            };
            let mut s = Sample::timed(class, t0, t0, t0 + Duration::from_millis(ms));
            s.end = end;
            s.outcome = OutcomeKey { status, code };
            s.attempts = attempts;
            if i == 99 {
                s.extra_mut().mismatch = Some(("x".to_owned(), Vec::new()));
            }
            m.record(s);
        }
        m
    }

    fn view(m: &Metrics) -> RunView<'_> {
        RunView {
            metrics: m,
            not_sent: 3,
            elapsed_s: 2.0,
        }
    }

    fn verdict(path: &str, cond: &str) -> Verdict {
        let m = metrics();
        Threshold::new(path, cond, CLASSES, false)
            .unwrap()
            .evaluate(&view(&m))
    }

    #[test]
    fn every_metric_passes_and_fails() {
        // (path, a passing condition, a failing condition)
        let cases = [
            ("latency.p50", "<= 51ms", "< 40ms"),
            ("latency.p99", "< 100ms", "< 89ms"),
            ("latency.p(99.9)", "<= 91ms", "< 89ms"),
            ("latency.max", "< 91ms", "< 90ms"),
            ("latency.min", ">= 1ms", "> 1ms"),
            ("latency.mean", "< 50ms", "< 40ms"),
            ("service_time.p999", "< 1s", "< 1ms"),
            ("schedule_lag.p99", "< 1ms", "> 1ms"),
            ("error_rate", "<= 0.02", "< 0.02"),
            ("unexpected_rate", "== 0.01", "!= 0.01"),
            ("throughput", ">= 49", "> 49"),
            ("requests", "== 100", "> 100"),
            ("errors", "== 2", "== 0"),
            ("unexpected", "< 2", "== 0"),
            ("retries", "== 2", "< 2"),
            ("not_sent", "== 3", "== 0"),
            ("outcome.\"failed:400207\"", "== 10", "== 0"),
            ("outcome.assigned.rate", ">= 0.9", "> 0.9"),
            ("outcome.\"failed:400207\"{class:toaster}", "== 0", "> 0"),
            ("latency.p99{class:kettle}", "< 11ms", "< 10ms"),
            ("error_rate{class:kettle}", "== 0.2", "< 0.2"),
            ("retries{class:toaster}", "== 0", "> 0"),
        ];
        for (path, pass, fail) in cases {
            let p = verdict(path, pass);
            assert!(p.passed, "{path} {pass}: measured {}", p.measured);
            let f = verdict(path, fail);
            assert!(!f.passed, "{path} {fail}: measured {}", f.measured);
        }
        assert_eq!(verdict("throughput", ">= 1").measured, "49.0/s");
        assert_eq!(verdict("error_rate", "< 1").measured, "0.0200");
    }

    #[test]
    fn names_are_normalised() {
        let t = Threshold::new("latency.p99", "<250ms", CLASSES, false).unwrap();
        assert_eq!(t.name, "latency.p99 < 250ms");
        assert_eq!(t.limit, 250_000.0);
    }

    #[test]
    fn typos_are_errors_naming_the_choices() {
        let err = |p: &str, c: &str| Threshold::new(p, c, CLASSES, false).unwrap_err();
        assert!(err("latncy.p99", "< 1s").contains("unknown metric `latncy.p99`; metrics:"));
        assert!(err("latency.p101", "< 1s").contains("unknown aggregation `p101`"));
        assert!(err("latency.p(101)", "< 1s").contains("not in (0, 100]"));
        assert!(err("latency.q99", "< 1s").contains("unknown aggregation `q99`"));
        assert!(err("latency", "< 1s").contains("needs an aggregation"));
        assert!(err("latency.p99{class:toastr}", "< 1s").contains("unknown class `toastr`"));
        assert!(err("latency.p99{phase:x}", "< 1s").contains("unknown tag"));
        assert!(err("outcome.sucess", "== 0").contains("unknown outcome `sucess`"));
        assert!(err("throughput{class:toaster}", "> 1").contains("whole run only"));
        assert!(err("latency.p99", "< 250").contains("is not a duration"));
        assert!(err("latency.p99", "250ms").contains("does not start with an operator"));
        assert!(err("error_rate", "< 5").contains("not a fraction"));
        assert!(err("errors", "< many").contains("is not a number"));
    }

    #[test]
    fn no_data_fails() {
        let m = Metrics::new(1, Instant::now(), 1, false);
        let t = Threshold::new("latency.p99", "< 1s", &["a"], false).unwrap();
        let v = t.evaluate(&view(&m));
        assert!(!v.passed);
        assert_eq!(v.measured, "no data");
    }

    #[test]
    fn early_failure_is_exact() {
        let m = metrics();
        let v = view(&m);
        let t = |p: &str, c: &str| Threshold::new(p, c, CLASSES, true).unwrap();
        // 10 requests already above 20 ms... p50 < 20ms needs 50 % at or under 20 ms: with 100
        // more instant requests it could still pass; with 10 more it cannot.
        let p50 = t("latency.p50", "< 20ms");
        assert!(!p50.failed_for_good(&v, Some(100)));
        assert!(p50.failed_for_good(&v, Some(10)));
        assert!(
            !p50.failed_for_good(&v, None),
            "unknown remainder: never decided"
        );
        // Counters and max only grow.
        assert!(t("errors", "< 2").failed_for_good(&v, None));
        assert!(!t("errors", "< 3").failed_for_good(&v, None));
        assert!(t("latency.max", "< 50ms").failed_for_good(&v, None));
        // Rates: 2 errors of 100; with 100 more good requests, 1 %.
        assert!(!t("error_rate", "< 0.015").failed_for_good(&v, Some(100)));
        assert!(t("error_rate", "< 0.009").failed_for_good(&v, Some(100)));
        // Lower bounds are never decided early.
        assert!(!t("throughput", ">= 1000").failed_for_good(&v, Some(0)));
    }
}
