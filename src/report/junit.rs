//! JUnit XML for CI systems (`--junit PATH`): one `<testsuite>` per scenario, one `<testcase>`
//! per class expectation, one for request accounting, one per threshold and one for the
//! snapshot. Failures carry the measured value against the limit, or the diff.
//!
//! Shape: the Ant/Jenkins JUnit format GitHub, GitLab, Jenkins and Azure Pipelines read
//! (`testsuites` > `testsuite` > `testcase` > `failure`, with `name`, `classname`, `time`).
//! Renders the [`Summary`] only; nothing here measures.

use std::fmt::Write as _;
use std::io;

use quick_xml::escape::partial_escape;
use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::Writer;

use super::Summary;

struct Case {
    classname: String,
    name: String,
    failure: Option<(String, &'static str, String)>,
    /// Not evaluated: written as `<skipped message=...>`.
    skipped: Option<String>,
}

fn cases(s: &Summary) -> Vec<Case> {
    let mut out = Vec::new();
    for c in &s.classes {
        let failure = (c.failed > 0).then(|| {
            let fields: Vec<String> = c
                .mismatches
                .iter()
                .map(|m| format!("{} ({})", m.field, m.count))
                .collect();
            let mut detail = String::new();
            for m in &c.mismatches {
                for e in &m.examples {
                    let _ = writeln!(
                        detail,
                        "{}: {}: expected {}, got {}",
                        e.registration_id, m.field, e.expected, e.actual
                    );
                }
            }
            (
                format!(
                    "{} of {} requests did not meet the expectation: {}",
                    c.failed,
                    c.requests,
                    fields.join(", ")
                ),
                "expectation",
                detail,
            )
        });
        out.push(Case {
            skipped: None,
            classname: format!("{}.expectations", s.scenario),
            name: c.name.clone(),
            failure,
        });
    }
    let r = &s.requests;
    let unfinished = r.not_sent + s.abandoned();
    out.push(Case {
        skipped: None,
        classname: format!("{}.requests", s.scenario),
        name: "every scheduled request finished".into(),
        failure: (unfinished > 0).then(|| {
            (
                format!(
                    "{unfinished} of {} scheduled requests never finished: {} not sent, {} still in flight when the grace period ended",
                    r.scheduled, r.not_sent, s.abandoned()
                ),
                "requests",
                s.errors
                    .iter()
                    .map(|e| format!("{} × {}\n", e.count, e.label()))
                    .collect(),
            )
        }),
    });
    for t in &s.thresholds {
        let aborted = s.aborted_by.as_deref() == Some(t.name.as_str());
        out.push(Case {
            classname: format!("{}.thresholds", s.scenario),
            name: t.name.clone(),
            skipped: t.skipped.then(|| t.measured.clone()),
            failure: (!t.passed || aborted).then(|| {
                let mut msg = format!("measured {}; threshold {}", t.measured, t.name);
                if aborted {
                    msg.push_str(" (the run was stopped early: abort_on_fail)");
                }
                (msg, "threshold", String::new())
            }),
        });
    }
    if let Some(snap) = &s.snapshot {
        let failure = match snap.status.as_str() {
            "drift" => Some((
                format!(
                    "the transcript differs from {}: {}",
                    snap.path,
                    snap.changes.as_deref().unwrap_or("").trim().replace('\n', "; ")
                ),
                "snapshot",
                snap.diff.clone().unwrap_or_default(),
            )),
            "missing" => Some((
                format!(
                    "no snapshot at {}; the transcript was written to {}.new (accept it with --update-snapshots)",
                    snap.path, snap.path
                ),
                "snapshot",
                String::new(),
            )),
            _ => None,
        };
        out.push(Case {
            skipped: None,
            classname: format!("{}.snapshot", s.scenario),
            name: snap.path.clone(),
            failure,
        });
    }
    out
}

/// The JUnit document.
pub(crate) fn render(s: &Summary) -> io::Result<String> {
    let cases = cases(s);
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let skipped = cases.iter().filter(|c| c.skipped.is_some()).count();
    let skipped = skipped.to_string();
    let (tests, failures, time) = (
        cases.len().to_string(),
        failures.to_string(),
        format!("{:.3}", s.duration_s),
    );
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.create_element("testsuites")
        .with_attributes([
            ("name", "loadtest"),
            ("tests", tests.as_str()),
            ("failures", failures.as_str()),
            ("errors", "0"),
            ("time", time.as_str()),
        ])
        .write_inner_content(|w| {
            w.create_element("testsuite")
                .with_attributes([
                    ("name", s.scenario.as_str()),
                    ("tests", tests.as_str()),
                    ("failures", failures.as_str()),
                    ("errors", "0"),
                    ("skipped", skipped.as_str()),
                    ("time", time.as_str()),
                    ("timestamp", s.started_at.get(..19).unwrap_or(&s.started_at)),
                    ("hostname", "localhost"),
                ])
                .write_inner_content(|w| {
                    let seed = s.seed.to_string();
                    w.create_element("properties").write_inner_content(|w| {
                        for (k, v) in [
                            ("mode", s.mode.as_str()),
                            ("target", s.target.as_str()),
                            ("seed", seed.as_str()),
                            ("scenario_file", s.scenario_file.as_str()),
                            ("tool_version", s.tool_version.as_str()),
                        ] {
                            w.create_element("property")
                                .with_attributes([("name", k), ("value", v)])
                                .write_empty()?;
                        }
                        Ok(())
                    })?;
                    for c in &cases {
                        let e = w.create_element("testcase").with_attributes([
                            ("name", c.name.as_str()),
                            ("classname", c.classname.as_str()),
                            ("time", "0"),
                        ]);
                        match (&c.failure, &c.skipped) {
                            (None, Some(why)) => {
                                e.write_inner_content(|w| {
                                    w.create_element("skipped")
                                        .with_attributes([("message", why.as_str())])
                                        .write_empty()?;
                                    Ok(())
                                })?;
                            }
                            (None, None) => {
                                e.write_empty()?;
                            }
                            (Some((message, kind, text)), _) => {
                                e.write_inner_content(|w| {
                                    w.create_element("failure")
                                        .with_attributes([
                                            ("message", message.as_str()),
                                            ("type", *kind),
                                        ])
                                        .write_text_content(BytesText::from_escaped(
                                            partial_escape(text),
                                        ))?;
                                    Ok(())
                                })?;
                            }
                        }
                    }
                    Ok(())
                })?;
            Ok(())
        })?;
    let mut xml = String::from_utf8(w.into_inner()).expect("quick-xml writes UTF-8");
    xml.push('\n');
    Ok(xml)
}
