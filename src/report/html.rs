//! `report.html`: one self-contained page (inline SVG charts drawn with plotters, inline CSS, no
//! script, no external URL, printable). Header, verdict and expectations per class, outcomes,
//! the latency percentile spectrum on a log "nines" axis (as the HdrHistogram plotter draws it),
//! throughput and p50/p99 per second, per-phase breakdown (device modes), thresholds, and the
//! capacity section. Renders what it is given; measures nothing.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::metrics::intervals::Second;

use super::Summary;
use crate::capacity::{self, Estimate};

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}\
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
td.n{text-align:right}.pass{color:#176f2c;font-weight:bold}.fail{color:#b00020;font-weight:bold}\
.small{color:#555;font-size:.9em}svg{max-width:100%;height:auto}@media print{body{margin:0}}";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A legend entry: a short line in the series' colour.
fn swatch(c: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2))
}

/// The latency percentile spectrum: x = nines (0 = 0 %, 1 = 90 %, 2 = 99 %, 3 = 99.9 %), y = ms.
pub(crate) fn spectrum_svg(series: &[(&str, &Histogram<u64>, RGBColor)]) -> String {
    type Line<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);
    let pts: Vec<Line<'_>> = series
        .iter()
        .filter(|(_, h, _)| !h.is_empty())
        .map(|(name, h, c)| {
            let v: Vec<(f64, f64)> = h
                .iter_quantiles(5)
                .map(|it| {
                    let q = it.quantile_iterated_to().min(0.999_999);
                    (
                        (1.0 / (1.0 - q)).log10(),
                        h.highest_equivalent(it.value_iterated_to()) as f64 / 1000.0,
                    )
                })
                .collect();
            (*name, v, *c)
        })
        .collect();
    let x_max = pts
        .iter()
        .flat_map(|(_, v, _)| v.iter().map(|p| p.0))
        .fold(1.0f64, f64::max)
        .ceil();
    let y_max = pts
        .iter()
        .flat_map(|(_, v, _)| v.iter().map(|p| p.1))
        .fold(0.001f64, f64::max)
        * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 340)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let Ok(mut chart) = ChartBuilder::on(&root)
            .caption("Latency by percentile", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        else {
            return String::new();
        };
        let _ = chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("ms")
            .x_labels(x_max as usize + 1)
            .x_label_formatter(&|x| {
                let p = 100.0 * (1.0 - 10f64.powf(-x));
                if p < 99.0 {
                    format!("{p:.0}%")
                } else {
                    format!("{}%", (p * 1e4).round() / 1e4)
                }
            })
            .draw();
        for (name, v, c) in &pts {
            if let Ok(s) = chart.draw_series(LineSeries::new(v.clone(), c.stroke_width(2))) {
                s.label(*name).legend(swatch(*c));
            }
        }
        let _ = chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::UpperLeft)
            .draw();
        let _ = root.present();
    }
    svg
}

/// Per second: answers, transport errors, timeouts and 429s (per second of the time the run
/// covered, so the last, partial second is not drawn as a collapse) and latency p50/p99. Seconds
/// in which nothing ended are drawn as zero, not skipped.
pub(crate) fn timeline_svg(t: &[Second]) -> String {
    let mut svg = String::new();
    let Some(last) = t.iter().map(|p| p.second).max() else {
        return svg;
    };
    let mut rows: Vec<Second> = (0..=last)
        .map(|second| Second {
            second,
            length_s: 1.0,
            ended: 0,
            failed: 0,
            timed_out: 0,
            throttled: 0,
            p50_us: 0,
            p99_us: 0,
        })
        .collect();
    for p in t {
        rows[p.second as usize] = *p;
    }
    let per_s = |p: &Second, n: u64| n as f64 / p.length_s.max(0.001);
    let answered = |p: &Second| p.ended.saturating_sub(p.failed + p.timed_out);
    let x_max = last as f64 + 1.0;
    let tp_max = rows
        .iter()
        .map(|p| per_s(p, p.ended.max(p.throttled)))
        .fold(1.0, f64::max)
        * 1.15;
    let lat_max = rows.iter().map(|p| p.p99_us).max().unwrap_or(1) as f64 / 1000.0 * 1.15;
    {
        let root = SVGBackend::with_string(&mut svg, (760, 340)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let Ok(chart) = ChartBuilder::on(&root)
            .caption(
                "Throughput, errors and latency over time",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .right_y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max, 0f64..tp_max)
        else {
            return String::new();
        };
        let mut chart = chart.set_secondary_coord(0f64..x_max, 0f64..lat_max.max(0.001));
        let _ = chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("per second")
            .draw();
        let _ = chart.configure_secondary_axes().y_desc("ms").draw();
        // A point sits at the middle of the time its second covered.
        let x = |p: &Second| p.second as f64 + p.length_s / 2.0;
        type Count = fn(&Second) -> u64;
        let counts: [(&str, Count, RGBColor); 4] = [
            ("answers/s", answered, RGBColor(31, 119, 180)),
            ("errors/s", |p| p.failed, RGBColor(148, 103, 189)),
            ("timeouts/s", |p| p.timed_out, RGBColor(140, 86, 75)),
            ("429/s", |p| p.throttled, RGBColor(127, 127, 127)),
        ];
        for (name, pick, c) in counts {
            let series = rows.iter().map(|p| (x(p), per_s(p, pick(p))));
            if let Ok(s) = chart.draw_series(LineSeries::new(series, c.stroke_width(2))) {
                s.label(name).legend(swatch(c));
            }
        }
        type Pick = fn(&Second) -> u64;
        let series: [(&str, Pick, RGBColor); 2] = [
            ("p50 ms", |p| p.p50_us, RGBColor(255, 127, 14)),
            ("p99 ms", |p| p.p99_us, RGBColor(214, 39, 40)),
        ];
        for (name, pick, c) in series {
            // Latency only where something ended: an empty second has none, not zero.
            let series = rows
                .iter()
                .filter(|p| p.ended > 0)
                .map(move |p| (x(p), pick(p) as f64 / 1000.0));
            if let Ok(s) = chart.draw_secondary_series(LineSeries::new(series, c.stroke_width(2))) {
                s.label(name).legend(swatch(c));
            }
        }
        let _ = chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::UpperRight)
            .draw();
        let _ = root.present();
    }
    svg
}

/// Offered rate → achieved throughput and p99 (the capacity search).
pub(crate) fn curve_svg(steps: &[(f64, f64, u64, bool)]) -> String {
    let mut svg = String::new();
    if steps.is_empty() {
        return svg;
    }
    let x_max = steps.iter().map(|s| s.0).fold(1.0, f64::max) * 1.1;
    let y_max = steps.iter().map(|s| s.1).fold(1.0, f64::max) * 1.15;
    let l_max = steps.iter().map(|s| s.2).max().unwrap_or(1) as f64 / 1000.0 * 1.15;
    {
        let root = SVGBackend::with_string(&mut svg, (760, 340)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let Ok(chart) = ChartBuilder::on(&root)
            .caption(
                "Capacity search: offered rate vs throughput and p99",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .right_y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        else {
            return String::new();
        };
        let mut chart = chart.set_secondary_coord(0f64..x_max, 0f64..l_max.max(0.001));
        let _ = chart
            .configure_mesh()
            .x_desc("offered rate (/s)")
            .y_desc("achieved (/s)")
            .draw();
        let _ = chart.configure_secondary_axes().y_desc("p99 ms").draw();
        let blue = RGBColor(31, 119, 180);
        let red = RGBColor(214, 39, 40);
        if let Ok(s) = chart.draw_series(LineSeries::new(
            steps.iter().map(|s| (s.0, s.1)),
            blue.stroke_width(2),
        )) {
            s.label("achieved/s").legend(swatch(blue));
        }
        let _ = chart.draw_series(steps.iter().map(|s| {
            Circle::new(
                (s.0, s.1),
                5,
                if s.3 { blue.filled() } else { red.filled() },
            )
        }));
        if let Ok(s) = chart.draw_secondary_series(LineSeries::new(
            steps.iter().map(|s| (s.0, s.2 as f64 / 1000.0)),
            red.stroke_width(2),
        )) {
            s.label("p99 ms").legend(swatch(red));
        }
        let _ = chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::UpperLeft)
            .draw();
        let _ = root.present();
    }
    svg
}

/// The capacity section: the estimate and the documented limits with their sources.
pub(crate) fn capacity_section(e: &Estimate, what: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "<h2>Capacity</h2><p class=\"small\">{}</p>", esc(what));
    let _ = writeln!(
        o,
        "<table><tr><th>limit</th><th>registrations/s</th><th>per minute</th></tr>\
         <tr><td>webhook ({} instance(s))</td><td class=n>{:.1}</td><td class=n>{:.0}</td></tr>\
         <tr><td>DPS ({} instance(s), {:.0}/min each)</td><td class=n>{:.1}</td><td class=n>{:.0}</td></tr>\
         <tr><td>IoT Hub identity registry ({} hub(s) × {} {:?} unit(s))</td><td class=n>{:.1}</td><td class=n>{:.0}</td></tr>\
         <tr><td>IoT Hub new device connections</td><td class=n>{:.1}</td><td class=n>{:.0}</td></tr></table>",
        e.limits.webhook_instances, e.webhook_per_s, e.webhook_per_s * 60.0,
        e.limits.dps_instances, e.limits.dps_registrations_per_minute, e.dps_per_s, e.dps_per_s * 60.0,
        e.limits.hubs, e.limits.hub_units, e.limits.hub_tier, e.hubs_per_s, e.hubs_per_s * 60.0,
        e.connections_per_s, e.connections_per_s * 60.0,
    );
    let _ = writeln!(
        o,
        "<p>Onboarding <b>{}</b> devices: binding limit <b>{}</b> at {:.1}/s → <b>{}</b>. \
         To run at {:.1}/s instead (the highest limit): {} DPS instance(s), {} hub unit(s) per hub, {} webhook instance(s) → {}.</p>",
        e.fleet, esc(&e.binding), e.rate_per_s, capacity::human(e.onboard_s),
        e.webhook_per_s.max(e.dps_per_s).max(e.hubs_per_s).max(e.connections_per_s),
        e.dps_instances_needed, e.hub_units_needed, e.webhook_instances_needed,
        capacity::human(e.onboard_unbound_s)
    );
    let _ = writeln!(
        o,
        "<table><tr><th>documented limit</th><th>source and date</th></tr>"
    );
    for (l, src) in capacity::SOURCES {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td class=small>{}</td></tr>",
            esc(l),
            esc(src)
        );
    }
    let _ = writeln!(o, "</table>");
    o
}

/// The whole page.
pub(crate) fn render(s: &Summary, spectrum: &str, timeline: &str, extra: &str) -> String {
    let mut o = String::new();
    let verdict = if s.passed() {
        "<span class=pass>PASS</span>"
    } else {
        "<span class=fail>FAIL</span>"
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let _ = writeln!(
        o,
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>loadtest {}</title><style>{CSS}</style></head><body>",
        esc(&s.scenario)
    );
    let _ = writeln!(o, "<h1>loadtest: {} — {verdict}</h1>", esc(&s.scenario));
    let causes = s.causes();
    if !causes.is_empty() {
        let items: String = causes
            .iter()
            .map(|c| format!("<li>{}</li>", esc(c)))
            .collect();
        let _ = writeln!(o, "<ul class=fail>{items}</ul>");
    }
    let r = &s.requests;
    let _ = writeln!(
        o,
        "<p class=small>{} mode against {} · loadtest {} · seed {} · started {} · {:.2} s · machine {} ({cores} cores){}</p>",
        esc(&s.mode), esc(&s.target), esc(&s.tool_version), s.seed, esc(&s.started_at), s.duration_s,
        esc(host.trim()),
        s.shard.as_deref().map_or(String::new(), |x| format!(" · shard {}", esc(x)))
    );
    let _ = writeln!(
        o,
        "<p>{} scheduled, {} answered, {} transport errors, {} timed out, {} not sent; <b>{:.1} answers/s</b>{}.</p>",
        r.scheduled, r.completed, r.failed, r.timed_out, r.not_sent, s.throughput_per_s,
        s.target_rate_per_s.map_or(" (closed loop)".into(), |t| format!(" (target {t:.1}/s)"))
    );
    let _ = writeln!(o, "<h2>Expectations and outcomes per class</h2><table><tr><th>class</th><th>devices</th><th>requests</th><th>met</th><th>failed</th><th>outcomes</th><th>hubs</th><th>p50 / p99 ms</th></tr>");
    for c in &s.classes {
        let outcomes: Vec<String> = c.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let hubs: Vec<String> = c.hubs.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let cls = if c.failed == 0 { "pass" } else { "fail" };
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=\"n {cls}\">{}</td><td class=\"n {cls}\">{}</td><td>{}</td><td>{}</td><td class=n>{:.2} / {:.2}</td></tr>",
            esc(&c.name), c.devices, c.requests, c.passed, c.failed, esc(&outcomes.join(", ")),
            esc(&hubs.join(", ")), c.latency_us.p50 as f64 / 1000.0, c.latency_us.p99 as f64 / 1000.0
        );
    }
    let _ = writeln!(o, "</table>");
    // Per class and field: the count, the most frequent (expected, actual) pairs, the examples
    // folded away, so that many failing classes do not bury the tables below.
    for c in &s.classes {
        for m in &c.mismatches {
            let clip = super::text::clip;
            let _ = writeln!(
                o,
                "<details class=fail><summary>{}: {} of {} differ in {}</summary><table><tr><th>requests</th><th>expected</th><th>got</th></tr>",
                esc(&c.name),
                m.count,
                c.requests,
                esc(&m.field)
            );
            for p in &m.common {
                let _ = writeln!(
                    o,
                    "<tr><td class=n>{}</td><td>{}</td><td>{}</td></tr>",
                    p.count,
                    esc(&clip(&p.expected)),
                    esc(&clip(&p.actual))
                );
            }
            if m.other > 0 {
                let _ = writeln!(
                    o,
                    "<tr><td class=n>{}</td><td colspan=2>other values</td></tr>",
                    m.other
                );
            }
            let _ = writeln!(o, "</table><p>e.g.</p><ul>");
            for e in &m.examples {
                let _ = writeln!(
                    o,
                    "<li>{}: expected {}, got {}</li>",
                    esc(&e.registration_id),
                    esc(&clip(&e.expected)),
                    esc(&clip(&e.actual))
                );
            }
            let _ = writeln!(o, "</ul></details>");
        }
    }
    let _ = writeln!(o, "<h2>Latency</h2>{spectrum}");
    let st = |name: &str, x: &super::Stats| {
        format!(
            "<tr><td>{name}</td><td class=n>{:.2}</td><td class=n>{:.2}</td><td class=n>{:.2}</td><td class=n>{:.2}</td><td class=n>{:.2}</td></tr>",
            x.p50 as f64 / 1e3, x.p90 as f64 / 1e3, x.p99 as f64 / 1e3, x.p999 as f64 / 1e3, x.max as f64 / 1e3
        )
    };
    let _ = writeln!(
        o,
        "<table><tr><th>ms</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>{}{}{}",
        st("latency (from the intended start)", &s.latency_us),
        st("service time (from the first send)", &s.service_time_us),
        st("schedule lag", &s.schedule_lag_us)
    );
    if let Some(p) = &s.phases {
        let _ = writeln!(
            o,
            "{}{}{}{}",
            st("phase: connect (TCP+TLS+CONNACK)", &p.connect_us),
            st("phase: register → first response", &p.first_response_us),
            st("phase: register → terminal (DPS)", &p.dps_us),
            st("phase: waiting on retry-after", &p.retry_wait_us)
        );
    }
    let _ = writeln!(o, "</table>");
    if let Some(p) = &s.phases {
        let _ = writeln!(
            o,
            "<p>Polls per device p50 {} / p99 {} / max {}; 429 answers {} ({} devices); twins checked {}; connect attempts timed out {}, retried {}.</p>",
            p.polls.p50, p.polls.p99, p.polls.max, p.throttled_429, p.throttled_devices, p.twins_checked,
            p.connect_timeouts, p.connect_retries
        );
    }
    let _ = writeln!(o, "<h2>Over time</h2>{timeline}");
    if !s.thresholds.is_empty() {
        let _ = writeln!(
            o,
            "<h2>Thresholds</h2><table><tr><th>threshold</th><th>measured</th><th>result</th></tr>"
        );
        for t in &s.thresholds {
            let res = if t.skipped {
                "skipped"
            } else if t.passed {
                "<span class=pass>pass</span>"
            } else {
                "<span class=fail>fail</span>"
            };
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td class=n>{}</td><td>{res}</td></tr>",
                esc(&t.name),
                esc(&t.measured)
            );
        }
        let _ = writeln!(o, "</table>");
    }
    if !s.errors.is_empty() {
        let _ = writeln!(o, "<h2>Errors</h2><table>");
        for e in &s.errors {
            let _ = writeln!(
                o,
                "<tr><td class=n>{}</td><td>{}</td></tr>",
                e.count,
                esc(&e.label())
            );
        }
        let _ = writeln!(o, "</table>");
    }
    let _ = writeln!(o, "{extra}</body></html>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The over-time chart draws answers, errors, timeouts and 429s per second and the latency.
    #[test]
    fn the_time_chart_has_every_series() {
        let second = |second, length_s, ended, failed, timed_out, throttled| Second {
            second,
            length_s,
            ended,
            failed,
            timed_out,
            throttled,
            p50_us: 1000,
            p99_us: 5000,
        };
        // Second 1 ended nothing (drawn as zero); second 2 is a quarter second.
        let svg = timeline_svg(&[second(0, 1.0, 100, 3, 2, 7), second(2, 0.25, 25, 0, 0, 0)]);
        for label in [
            "answers/s",
            "errors/s",
            "timeouts/s",
            "429/s",
            "p50 ms",
            "p99 ms",
        ] {
            assert!(svg.contains(label), "{label} missing");
        }
        assert!(timeline_svg(&[]).is_empty());
    }
}
