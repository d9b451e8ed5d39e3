//! `summary.md`: the run in GitHub-flavoured markdown, for pull-request comments and CI job
//! summaries (`cat summary.md >> "$GITHUB_STEP_SUMMARY"`). Renders the [`Summary`] only.

use std::fmt::Write as _;

use super::Summary;

/// Renders the summary as markdown.
pub(crate) fn render(s: &Summary) -> String {
    let mut o = String::new();
    let mark = if s.passed() { "✅ pass" } else { "❌ fail" };
    let _ = writeln!(o, "## loadtest `{}`: {mark}\n", s.scenario);
    for c in s.causes() {
        let _ = writeln!(o, "- {c}");
    }
    if !s.passed() {
        let _ = writeln!(o);
    }
    let r = &s.requests;
    let _ = writeln!(
        o,
        "{} mode against {}; {} scheduled, {} answered, {} transport errors, {} timed out, {} not sent; {:.1} answers/s over {:.2} s.\n",
        s.mode, s.target, r.scheduled, r.completed, r.failed, r.timed_out, r.not_sent,
        s.throughput_per_s, s.duration_s
    );
    let _ = writeln!(
        o,
        "| class | requests | expectation met | failed | outcomes | p99 latency |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---|---:|");
    for c in &s.classes {
        let outcomes: Vec<String> = c.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {:.2} ms |",
            c.name,
            c.requests,
            c.passed,
            c.failed,
            outcomes.join(", "),
            c.latency_us.p99 as f64 / 1000.0
        );
    }
    for c in &s.classes {
        for m in &c.mismatches {
            let clip = super::text::clip;
            let _ = write!(
                o,
                "\n- **{}**: {} of {} differ in `{}`",
                c.name, m.count, c.requests, m.field
            );
            if let Some(p) = m.common.first() {
                let _ = write!(
                    o,
                    "; most often ({}×) expected `{}`, got `{}`",
                    p.count,
                    clip(&p.expected),
                    clip(&p.actual)
                );
            }
            if let Some(e) = m.examples.first() {
                let _ = write!(o, "; e.g. `{}`", clip(&e.registration_id));
            }
            let _ = writeln!(o);
        }
    }
    if !s.thresholds.is_empty() {
        let _ = writeln!(o, "\n| threshold | measured | result |\n|---|---:|---|");
        for t in &s.thresholds {
            let res = match (t.skipped, t.passed) {
                (true, _) => "skipped",
                (false, true) => "✅",
                (false, false) => "❌",
            };
            let _ = writeln!(o, "| `{}` | {} | {res} |", t.name, t.measured);
        }
    }
    if let Some(a) = &s.aborted_by {
        let _ = writeln!(o, "\nStopped early: `{a}` could no longer pass.");
    }
    if let Some(snap) = &s.snapshot {
        let _ = writeln!(o, "\nSnapshot `{}`: **{}**", snap.path, snap.status);
        if let Some(ch) = &snap.changes {
            for line in ch.lines() {
                let _ = writeln!(o, "- {line}");
            }
        }
        if let Some(d) = &snap.diff {
            let _ = writeln!(
                o,
                "\n<details><summary>diff</summary>\n\n```diff\n{}\n```\n</details>",
                d.trim_end()
            );
        }
    }
    o
}
