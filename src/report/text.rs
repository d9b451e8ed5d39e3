//! The readable end-of-run summary printed to stdout: request accounting, a per-class table
//! (devices, outcome, hubs, expectation results, latency), mismatch examples, latency lines and
//! the verdict. Renders a [`Summary`]; computes nothing.

use std::fmt::Write as _;

use super::{Stats, Summary};

/// Example lines printed in all (the rest are in summary.json).
const MAX_EXAMPLES: usize = 10;
/// (expected, actual) pairs printed per class and field.
const MAX_PAIRS_SHOWN: usize = 3;
/// Characters of one value printed.
const CLIP: usize = 120;

/// At most [`CLIP`] characters of a value (twins can be long), marked when cut.
pub(super) fn clip(v: &str) -> std::borrow::Cow<'_, str> {
    match v.char_indices().nth(CLIP) {
        None => v.into(),
        Some((at, _)) => format!("{}… ({} chars)", &v[..at], v.chars().count()).into(),
    }
}

/// Renders the summary as text.
pub(crate) fn render(s: &Summary) -> String {
    let mut o = String::new();
    let r = &s.requests;
    // The verdict and its cause first, before any table or mismatch example.
    let causes = s.causes();
    if !causes.is_empty() {
        let _ = writeln!(o, "FAIL: {}", causes.join("; "));
    }
    let _ = writeln!(
        o,
        "scenario {} ({} mode) -> {}",
        s.scenario, s.mode, s.target
    );
    let _ = writeln!(
        o,
        "requests: {} scheduled, {} sent, {} completed, {} failed, {} timed out, {} not sent ({} attempts on the wire)",
        r.scheduled, r.sent, r.completed, r.failed, r.timed_out, r.not_sent, r.attempts
    );
    let target = s
        .target_rate_per_s
        .map_or_else(|| "closed loop".to_owned(), |t| format!("target {t:.1}/s"));
    let _ = writeln!(
        o,
        "throughput: {:.1}/s ({target}) over {:.2} s{}",
        s.throughput_per_s,
        s.duration_s,
        if s.interrupted { ", INTERRUPTED" } else { "" }
    );
    let _ = writeln!(o);
    let rows: Vec<[String; 8]> = s
        .classes
        .iter()
        .map(|c| {
            let outcomes = c
                .outcomes
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ");
            let hubs = c
                .hubs
                .iter()
                .map(|(h, v)| {
                    if c.hubs.len() == 1 {
                        h.clone()
                    } else {
                        format!("{h} {v}")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            [
                c.name.clone(),
                c.devices.to_string(),
                c.requests.to_string(),
                c.passed.to_string(),
                c.failed.to_string(),
                outcomes,
                if hubs.is_empty() { "-".into() } else { hubs },
                format!("{} / {}", ms(c.latency_us.p50), ms(c.latency_us.p99)),
            ]
        })
        .collect();
    let head = [
        "class",
        "devices",
        "requests",
        "passed",
        "failed",
        "outcomes",
        "hub",
        "p50 / p99",
    ];
    let mut width = head.map(str::len);
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            let right = (1..=4).contains(&i);
            let _ = if right {
                write!(l, "{c:>w$}  ")
            } else {
                write!(l, "{c:<w$}  ")
            };
        }
        l.trim_end().to_owned()
    };
    let _ = writeln!(o, "{}", line(&head.map(str::to_owned)));
    for row in &rows {
        let _ = writeln!(o, "{}", line(row));
    }
    // Per class and field: the count, the most frequent (expected, actual) pairs, then examples;
    // a run with many failing classes prints at most MAX_EXAMPLES example lines in all.
    let mut shown = 0;
    let mut hidden = 0;
    for c in &s.classes {
        for m in &c.mismatches {
            let _ = writeln!(
                o,
                "\n  {}: {} of {} differ in {}",
                c.name, m.count, c.requests, m.field
            );
            for p in m.common.iter().take(MAX_PAIRS_SHOWN) {
                let _ = writeln!(
                    o,
                    "    {:>7}x expected {}, got {}",
                    p.count,
                    clip(&p.expected),
                    clip(&p.actual)
                );
            }
            let rest: u64 = m
                .common
                .iter()
                .skip(MAX_PAIRS_SHOWN)
                .map(|p| p.count)
                .sum::<u64>()
                + m.other;
            if rest > 0 {
                let _ = writeln!(o, "    {rest:>7}x other values");
            }
            // Examples whose pair is printed above need only their registration IDs.
            let listed = |e: &super::Example| {
                m.common
                    .iter()
                    .take(MAX_PAIRS_SHOWN)
                    .any(|p| p.expected == e.expected && p.actual == e.actual)
            };
            let mut ids = Vec::new();
            for e in &m.examples {
                if shown == MAX_EXAMPLES {
                    hidden += 1;
                    continue;
                }
                shown += 1;
                if listed(e) {
                    ids.push(clip(&e.registration_id));
                } else {
                    let _ = writeln!(
                        o,
                        "      e.g. {}: expected {}, got {}",
                        clip(&e.registration_id),
                        clip(&e.expected),
                        clip(&e.actual)
                    );
                }
            }
            if !ids.is_empty() {
                let _ = writeln!(o, "      e.g. {}", ids.join(", "));
            }
        }
    }
    if hidden > 0 {
        let _ = writeln!(
            o,
            "\n  ({hidden} more examples in summary.json and report.html)"
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "latency (from intended start)  {}", stats(&s.latency_us));
    let _ = writeln!(
        o,
        "service time (send to answer)  {}",
        stats(&s.service_time_us)
    );
    let _ = writeln!(
        o,
        "schedule lag (intended->send)  {}",
        stats(&s.schedule_lag_us)
    );
    if let Some(p) = &s.phases {
        if p.connect_us.max > 0 {
            let _ = writeln!(o, "  connect (TCP+TLS+CONNACK)    {}", stats(&p.connect_us));
        } else {
            let _ = writeln!(
                o,
                "  connect                      n/a (pooled HTTPS connections)"
            );
        }
        let _ = writeln!(
            o,
            "  register -> first response   {}",
            stats(&p.first_response_us)
        );
        let _ = writeln!(o, "  register -> terminal (DPS)   {}", stats(&p.dps_us));
        let _ = writeln!(
            o,
            "  waiting on retry-after       {}",
            stats(&p.retry_wait_us)
        );
        let _ = writeln!(
            o,
            "  polls per device: p50 {} p99 {} max {}; 429 answers {} ({} devices); twins checked {}",
            p.polls.p50, p.polls.p99, p.polls.max, p.throttled_429, p.throttled_devices, p.twins_checked
        );
        if p.connect_retries + p.connect_timeouts > 0 {
            let _ = writeln!(
                o,
                "  connect attempts: {} timed out, {} retried",
                p.connect_timeouts, p.connect_retries
            );
        }
    }
    let lag = s.schedule_lag_us.p99;
    if lag > 10_000 && lag * 5 > s.latency_us.p99 {
        let _ = writeln!(
            o,
            "warning: the generator fell behind its schedule (schedule lag p99 {}): latencies include generator delay; lower the rate or raise load.max_in_flight",
            ms(lag)
        );
    }
    for e in &s.errors {
        let _ = writeln!(o, "error ({}x): {}", e.count, e.label());
    }
    if !s.thresholds.is_empty() {
        let _ = writeln!(o, "\nthresholds:");
        for t in &s.thresholds {
            let mark = match (t.skipped, t.passed) {
                (true, _) => "skip",
                (false, true) => "ok  ",
                (false, false) => "FAIL",
            };
            let _ = writeln!(o, "  {mark}  {}  (measured {})", t.name, t.measured);
        }
    }
    if let Some(a) = &s.aborted_by {
        let _ = writeln!(
            o,
            "stopped early: threshold `{a}` can no longer pass (abort_on_fail)"
        );
    }
    if let Some(snap) = &s.snapshot {
        let _ = writeln!(o, "\nsnapshot {}: {}", snap.path, snap.status);
    }
    let mut why = vec![format!(
        "{} of {} expectations met",
        s.expectations.passed,
        s.expectations.passed + s.expectations.failed
    )];
    let failed_thresholds = s.thresholds.iter().filter(|t| !t.passed).count();
    if failed_thresholds > 0 {
        why.push(format!(
            "{failed_thresholds} of {} thresholds failed",
            s.thresholds.len()
        ));
    }
    if let Some(snap) = s.snapshot.as_ref().filter(|_| !s.snapshot_matched()) {
        why.push(format!("snapshot {}", snap.status));
    }
    let _ = writeln!(
        o,
        "\nverdict: {} ({})",
        s.verdict.to_uppercase(),
        why.join("; ")
    );
    o
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

fn stats(s: &Stats) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        ms(s.p50),
        ms(s.p90),
        ms(s.p99),
        ms(s.p999),
        ms(s.max)
    )
}
