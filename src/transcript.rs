//! The conformance transcript: what each device class got, reduced to a deterministic,
//! normalised text that can be committed and diffed.
//!
//! Per class: outcome distribution (status, hub, device ID or error code and message), distinct
//! initial twins and payloads with counts, webhook calls per device, expectation results, and one
//! example exchange (the class's smallest registration ID). Everything is sorted; JSON objects
//! are written with sorted keys; timestamps, etags, operation and tracking IDs and URLs are
//! redacted; latencies never appear. Load order (the seed) cannot change a byte.
//!
//! Collecting is [`ClassObservations::add`] (called by the metrics collector, only in
//! conformance mode); rendering is [`render`]. Nothing here does I/O.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bytes::Bytes;
use serde_json::Value;

use crate::check::Mismatch;
use crate::dps::Registration;

/// Keys whose values change from run to run and are replaced by `[redacted]` (case-insensitive).
const REDACTED_KEYS: &[&str] = &[
    "etag",
    "createddatetimeutc",
    "lastupdateddatetimeutc",
    "operationid",
    "trackingid",
    "timestamputc",
    "webhookurl",
    "generationid",
];
/// Longest non-JSON body shown in an example.
const MAX_TEXT: usize = 2000;

/// What one request showed (conformance mode only).
#[derive(Debug, Clone)]
pub struct Observation {
    /// The device.
    pub registration_id: String,
    /// What DPS would report to the device.
    pub registration: Registration,
    /// The last AllocationRequest body sent (none when DPS did not call the webhook).
    pub request: Option<Bytes>,
    /// The last webhook answer: status and body.
    pub response: Option<(u16, Bytes)>,
    /// Webhook calls made.
    pub attempts: u32,
}

/// Everything observed for one class.
#[derive(Debug, Clone, Default)]
pub struct ClassObservations {
    devices: u64,
    met: u64,
    outcomes: BTreeMap<String, u64>,
    twins: BTreeMap<String, u64>,
    payloads: BTreeMap<String, u64>,
    attempts: BTreeMap<u32, u64>,
    mismatches: BTreeMap<String, u64>,
    example: Option<Observation>,
}

impl ClassObservations {
    /// Folds one observation in; `mismatches` are the expectation's differing fields.
    pub fn add(&mut self, o: Observation, mismatches: &[Mismatch]) {
        self.devices += 1;
        if mismatches.is_empty() {
            self.met += 1;
        }
        for m in mismatches {
            let line = format!(
                "{}: expected {}, got {}",
                m.field.name(),
                m.expected,
                m.actual
            );
            *self.mismatches.entry(line).or_default() += 1;
        }
        let r = &o.registration;
        *self.outcomes.entry(outcome_line(&o)).or_default() += 1;
        if let Some(t) = &r.initial_twin {
            *self.twins.entry(canonical(&t.value())).or_default() += 1;
        }
        if let Some(p) = &r.payload {
            *self.payloads.entry(canonical(&p.value())).or_default() += 1;
        }
        *self.attempts.entry(o.attempts).or_default() += 1;
        let smaller = self
            .example
            .as_ref()
            .is_none_or(|e| o.registration_id < e.registration_id);
        if smaller {
            self.example = Some(o);
        }
    }
}

fn outcome_line(o: &Observation) -> String {
    let r = &o.registration;
    let mut line = r.key().to_string();
    if let Some(h) = &r.assigned_hub {
        let _ = write!(line, "  hub={h}");
    }
    if let Some(d) = &r.device_id {
        if *d == o.registration_id {
            line.push_str("  deviceId=<registrationId>");
        } else {
            let _ = write!(line, "  deviceId={d}");
        }
    }
    if let Some(m) = &r.error_message {
        let _ = write!(line, "  message={}", Value::String(m.clone()));
    }
    line
}

/// One class of the transcript.
#[derive(Debug)]
pub(crate) struct ClassTranscript<'a> {
    /// Class name.
    pub name: &'a str,
    /// Devices in the class.
    pub population: u64,
    /// First and last registration IDs of the sample.
    pub sampled: (String, String),
    /// What was observed.
    pub observed: &'a ClassObservations,
}

/// What the transcript's example exchange and request counts describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exchange {
    /// Webhook mode: the AllocationRequest and the webhook's answer; webhook calls (DPS retries).
    Webhook,
    /// Device modes: the register body and the terminal registration state; requests on the
    /// wire (register + polls). Twins are checked on the hubs (see the expectation results).
    Device,
}

/// Renders the transcript text (ends with a newline).
pub(crate) fn render(
    scenario: &str,
    sample: &str,
    exchange: Exchange,
    classes: &[ClassTranscript<'_>],
) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "scenario: {scenario}");
    let _ = writeln!(t, "sample: {sample}");
    for c in classes {
        let o = c.observed;
        let _ = writeln!(t, "\n=== class {} ===", c.name);
        let _ = writeln!(
            t,
            "devices: {} of {} ({} .. {})",
            o.devices, c.population, c.sampled.0, c.sampled.1
        );
        let _ = writeln!(t, "expectation: met by {} of {}", o.met, o.devices);
        for (line, n) in &o.mismatches {
            let _ = writeln!(t, "  {n:>5}  {line}");
        }
        section(&mut t, "outcomes", &o.outcomes);
        if exchange == Exchange::Webhook {
            section(&mut t, "initial twins", &o.twins);
        }
        section(&mut t, "payloads returned", &o.payloads);
        let calls: BTreeMap<String, u64> = o
            .attempts
            .iter()
            .map(|(a, n)| (a.to_string(), *n))
            .collect();
        let calls_title = match exchange {
            Exchange::Webhook => "webhook calls per device",
            Exchange::Device => "requests per device (register + polls)",
        };
        section(&mut t, calls_title, &calls);
        if let Some(e) = &o.example {
            example(&mut t, e, exchange);
        }
    }
    t
}

fn section(t: &mut String, title: &str, lines: &BTreeMap<String, u64>) {
    if lines.is_empty() {
        let _ = writeln!(t, "{title}: none");
        return;
    }
    let _ = writeln!(t, "{title}:");
    for (line, n) in lines {
        let _ = writeln!(t, "  {n:>5}  {line}");
    }
}

fn example(t: &mut String, e: &Observation, exchange: Exchange) {
    let _ = writeln!(t, "example {}:", e.registration_id);
    match &e.request {
        Some(body) => {
            let what = match exchange {
                Exchange::Webhook => "POST (AllocationRequest)",
                Exchange::Device => "register",
            };
            let _ = writeln!(t, "  request: {what}");
            indent(t, &body_text(body, false));
        }
        None => {
            let _ = writeln!(t, "  request: none (DPS does not call the webhook)");
        }
    }
    if let Some((status, body)) = &e.response {
        let _ = writeln!(t, "  response: {status}");
        if !body.is_empty() {
            indent(t, &body_text(body, true));
        }
    }
}

fn indent(t: &mut String, text: &str) {
    for line in text.lines() {
        let _ = writeln!(t, "    {line}");
    }
}

/// A body as pretty JSON (redacted; keys sorted when `sort`) or as trimmed text.
fn body_text(body: &[u8], sort: bool) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(mut v) => {
            redact(&mut v);
            if sort {
                v = sorted(v);
            }
            serde_json::to_string_pretty(&v).expect("a JSON value serialises")
        }
        Err(_) => {
            let s = String::from_utf8_lossy(body);
            let s = s.trim();
            match s.char_indices().nth(MAX_TEXT) {
                Some((i, _)) => format!("{}… ({} bytes)", &s[..i], body.len()),
                None => s.to_owned(),
            }
        }
    }
}

/// Compact JSON with sorted keys and volatile values redacted.
pub(crate) fn canonical(v: &Value) -> String {
    let mut v = v.clone();
    redact(&mut v);
    sorted(v).to_string()
}

fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Replaces volatile values: known keys, and any string that is an RFC 3339 timestamp.
pub(crate) fn redact(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if REDACTED_KEYS.contains(&k.to_ascii_lowercase().as_str()) {
                    *val = Value::String("[redacted]".into());
                } else {
                    redact(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact),
        Value::String(s) if humantime::parse_rfc3339_weak(s).is_ok() => {
            *s = "[timestamp]".into();
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dps::Status;
    use serde_json::json;

    fn obs(id: &str, hub: &str) -> Observation {
        Observation {
            registration_id: id.into(),
            registration: Registration {
                status: Some(Status::Assigned),
                assigned_hub: Some(hub.into()),
                device_id: Some(id.into()),
                initial_twin: Some(json!({"tags": {"b": 1, "a": 2}}).into()),
                ..Registration::default()
            },
            request: Some(Bytes::from_static(
                br#"{"etag":"x","when":"2024-01-01T00:00:00Z"}"#,
            )),
            response: Some((200, Bytes::from_static(br#"{"z":1,"a":2}"#))),
            attempts: 1,
        }
    }

    #[test]
    fn order_independent_sorted_and_redacted() {
        let mut a = ClassObservations::default();
        let mut b = ClassObservations::default();
        for id in ["d2", "d1", "d3"] {
            a.add(obs(id, "h1"), &[]);
        }
        for id in ["d3", "d1", "d2"] {
            b.add(obs(id, "h1"), &[]);
        }
        let ct = |o| ClassTranscript {
            name: "c",
            population: 10,
            sampled: ("d1".into(), "d3".into()),
            observed: o,
        };
        let ta = render("s", "all", Exchange::Webhook, &[ct(&a)]);
        assert_eq!(ta, render("s", "all", Exchange::Webhook, &[ct(&b)]));
        assert!(
            ta.contains("3  assigned  hub=h1  deviceId=<registrationId>"),
            "{ta}"
        );
        assert!(ta.contains(r#"3  {"tags":{"a":2,"b":1}}"#), "{ta}");
        assert!(ta.contains("example d1:"), "{ta}");
        assert!(ta.contains(r#""etag": "[redacted]""#), "{ta}");
        assert!(ta.contains(r#""when": "[timestamp]""#), "{ta}");
        // Response keys sorted.
        let a_pos = ta.find(r#""a": 2"#).unwrap();
        assert!(a_pos < ta.find(r#""z": 1"#).unwrap());
    }
}
