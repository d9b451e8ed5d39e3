//! Expectations: compare a registration result with its class's [`Expect`] and say which fields
//! differ. Objects (twin tags, desired properties, payload) match as subsets: every expected key
//! must be present with a matching value; extra keys in the actual value are fine.
//!
//! Pure and allocation-free on the passing path (the common one under load).

use serde_json::Value;

use crate::dps::json::{self, Json};
use crate::dps::Registration;
use crate::dps::Status;

/// The expectation of a class. Unset fields are not checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    /// Terminal status.
    pub status: Status,
    /// Assigned hub.
    pub hub: Option<String>,
    /// Device ID.
    pub device_id: Option<String>,
    /// Error code.
    pub error_code: Option<u32>,
    /// Substring of the error message.
    pub error_message: Option<String>,
    /// Subset of the initial twin's tags.
    pub twin_tags: Option<Value>,
    /// Subset of the initial twin's desired properties.
    pub twin_desired: Option<Value>,
    /// Subset of the payload returned to the device.
    pub payload: Option<Value>,
    /// `substatus` on the first registration (device modes).
    pub substatus: Option<String>,
    /// `substatus` on later rounds (`[load] rounds`).
    pub substatus_again: Option<String>,
}

/// The fields an expectation can check, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// `status`.
    Status,
    /// `assignedHub`.
    Hub,
    /// `deviceId`.
    DeviceId,
    /// `errorCode`.
    ErrorCode,
    /// `errorMessage` (substring).
    ErrorMessage,
    /// Initial twin tags (subset).
    TwinTags,
    /// Initial twin desired properties (subset).
    TwinDesired,
    /// Payload returned to the device (subset).
    Payload,
    /// `substatus` (device modes).
    Substatus,
    /// The twin could not be read from the hub (device modes).
    Twin,
}

impl Field {
    /// Every field, in report order.
    pub const ALL: [Field; 10] = [
        Field::Status,
        Field::Hub,
        Field::DeviceId,
        Field::ErrorCode,
        Field::ErrorMessage,
        Field::TwinTags,
        Field::TwinDesired,
        Field::Payload,
        Field::Substatus,
        Field::Twin,
    ];

    /// The field of a report name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Field::Status => "status",
            Field::Hub => "hub",
            Field::DeviceId => "device_id",
            Field::ErrorCode => "error_code",
            Field::ErrorMessage => "error_message",
            Field::TwinTags => "twin.tags",
            Field::TwinDesired => "twin.desired",
            Field::Payload => "payload",
            Field::Substatus => "substatus",
            Field::Twin => "twin",
        }
    }
}

/// One field that did not match.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// Which field.
    pub field: Field,
    /// What the scenario expected (JSON text).
    pub expected: String,
    /// What came back (JSON text, `null` when absent).
    pub actual: String,
}

/// Compares; returns an empty vector when everything matches.
pub fn compare(expect: &Expect, got: &Registration) -> Vec<Mismatch> {
    let mut out = fields(expect, got);
    out.extend(documents(expect, got));
    out
}

/// The twin and payload one class's expectation was last checked against, and the mismatches
/// found: those depend on nothing else, so when a class's answers repeat (every toaster gets
/// the toaster twin) the documents are compared byte for byte with the last ones instead of
/// being walked again. Never blocks: when another thread holds it, the documents are walked.
#[derive(Debug, Default)]
pub struct Recent(std::sync::Mutex<Option<Checked>>);

/// What [`Recent`] holds.
#[derive(Debug)]
struct Checked {
    twin: Option<Json>,
    payload: Option<Json>,
    mismatches: Vec<Mismatch>,
}

/// [`compare`], reusing `recent` for the twin and payload.
pub fn compare_recent(expect: &Expect, got: &Registration, recent: &Recent) -> Vec<Mismatch> {
    let mut out = fields(expect, got);
    if let Ok(last) = recent.0.try_lock() {
        if let Some(c) = last.as_ref().filter(|c| {
            text(&c.twin) == text(&got.initial_twin) && text(&c.payload) == text(&got.payload)
        }) {
            out.extend(c.mismatches.iter().cloned());
            return out;
        }
    }
    let found = documents(expect, got);
    out.extend(found.iter().cloned());
    if let Ok(mut last) = recent.0.try_lock() {
        *last = Some(Checked {
            twin: got.initial_twin.clone(),
            payload: got.payload.clone(),
            mismatches: found,
        });
    }
    out
}

fn mismatch(field: Field, expected: String, actual: String) -> Mismatch {
    Mismatch {
        field,
        expected,
        actual,
    }
}

fn text(j: &Option<Json>) -> Option<&str> {
    j.as_ref().map(Json::as_str)
}

/// Status, hub, device ID, error code and message.
fn fields(expect: &Expect, got: &Registration) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mut diff = |field, expected, actual| out.push(mismatch(field, expected, actual));
    if got.status != Some(expect.status) {
        diff(
            Field::Status,
            quote(expect.status.as_str()),
            got.status.map_or("null".into(), |s| quote(s.as_str())),
        );
    }
    if let Some(h) = &expect.hub {
        if !got
            .assigned_hub
            .as_deref()
            // Host names compare without case; the same bytes, the common case, are one memcmp.
            .is_some_and(|g| g == h || g.eq_ignore_ascii_case(h))
        {
            diff(Field::Hub, quote(h), opt(got.assigned_hub.as_deref()));
        }
    }
    if let Some(d) = &expect.device_id {
        if got.device_id.as_deref() != Some(d.as_str()) {
            diff(Field::DeviceId, quote(d), opt(got.device_id.as_deref()));
        }
    }
    if let Some(c) = expect.error_code {
        if got.error_code != Some(c) {
            diff(
                Field::ErrorCode,
                c.to_string(),
                got.error_code.map_or("null".into(), |c| c.to_string()),
            );
        }
    }
    if let Some(m) = &expect.error_message {
        if !got
            .error_message
            .as_deref()
            .is_some_and(|g| g.contains(m.as_str()))
        {
            diff(
                Field::ErrorMessage,
                quote(m),
                opt(got.error_message.as_deref()),
            );
        }
    }
    out
}

/// The initial twin's tags and desired properties, and the payload.
fn documents(expect: &Expect, got: &Registration) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mut diff = |field, expected, actual| out.push(mismatch(field, expected, actual));
    let twin = got.initial_twin.as_ref();
    if let Some(t) = &expect.twin_tags {
        if !twin.is_some_and(|j| json::contains(j, &["tags"], t)) {
            let actual = twin.map(Json::value);
            diff(
                Field::TwinTags,
                t.to_string(),
                json(actual.as_ref().and_then(|t| t.get("tags"))),
            );
        }
    }
    if let Some(d) = &expect.twin_desired {
        if !twin.is_some_and(|j| json::contains(j, &["properties", "desired"], d)) {
            let actual = twin.map(Json::value);
            let at = actual
                .as_ref()
                .and_then(|t| t.pointer("/properties/desired"));
            diff(Field::TwinDesired, d.to_string(), json(at));
        }
    }
    if let Some(p) = &expect.payload {
        let got = got.payload.as_ref();
        if !got.is_some_and(|j| json::contains(j, &[], p)) {
            diff(
                Field::Payload,
                p.to_string(),
                json(got.map(Json::value).as_ref()),
            );
        }
    }
    out
}

/// Compares the substatus (device modes).
pub fn substatus(expected: Option<&str>, got: Option<&str>) -> Option<Mismatch> {
    let e = expected?;
    (got != Some(e)).then(|| Mismatch {
        field: Field::Substatus,
        expected: quote(e),
        actual: got.map_or("null".into(), quote),
    })
}

/// Compares a twin read from the hub with the expected tags and desired properties (subsets;
/// `$metadata`/`$version` are ignored because subsets never name them).
pub fn twin(expect: &Expect, twin: &Value) -> Vec<Mismatch> {
    let mut out = Vec::new();
    if let Some(t) = &expect.twin_tags {
        let actual = twin.get("tags");
        if !actual.is_some_and(|a| json::is_subset(t, a)) {
            out.push(Mismatch {
                field: Field::TwinTags,
                expected: t.to_string(),
                actual: json(actual),
            });
        }
    }
    if let Some(d) = &expect.twin_desired {
        let actual = twin.pointer("/properties/desired");
        if !actual.is_some_and(|a| json::is_subset(d, a)) {
            out.push(Mismatch {
                field: Field::TwinDesired,
                expected: d.to_string(),
                actual: json(actual),
            });
        }
    }
    out
}

fn quote(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

fn opt(s: Option<&str>) -> String {
    s.map_or("null".into(), quote)
}

fn json(v: Option<&Value>) -> String {
    v.map_or("null".into(), Value::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dps::Status;
    use serde_json::json;

    fn expect() -> Expect {
        Expect {
            status: Status::Assigned,
            hub: Some("h1".into()),
            device_id: None,
            error_code: None,
            error_message: None,
            twin_tags: Some(json!({"deviceType":"toaster"})),
            twin_desired: Some(json!({"state":"ready"})),
            payload: None,
            substatus: None,
            substatus_again: None,
        }
    }

    fn assigned(hub: &str, twin: Value) -> Registration {
        Registration {
            status: Some(Status::Assigned),
            assigned_hub: Some(hub.into()),
            device_id: Some("d".into()),
            initial_twin: Some(twin.into()),
            ..Default::default()
        }
    }

    #[test]
    fn repeated_documents_are_judged_as_if_walked_again() {
        let recent = Recent::default();
        let toaster =
            json!({"tags":{"deviceType":"toaster"},"properties":{"desired":{"state":"ready"}}});
        let other =
            json!({"tags":{"deviceType":"kettle"},"properties":{"desired":{"state":"ready"}}});
        let mut cases = vec![
            assigned("h1", toaster.clone()),
            assigned("h1", toaster.clone()),
            assigned("h2", toaster.clone()),
            assigned("h1", other.clone()),
            assigned("h1", other),
            Registration {
                initial_twin: None,
                ..assigned("h1", toaster.clone())
            },
            assigned("h1", toaster.clone()),
        ];
        cases.push(Registration {
            payload: Some(json!({"p": 1}).into()),
            ..assigned("h1", toaster)
        });
        let mut e = expect();
        for (i, r) in cases.iter().enumerate() {
            assert_eq!(compare_recent(&e, r, &recent), compare(&e, r), "case {i}");
        }
        // Another class (another expectation) keeps its own.
        e.payload = Some(json!({"p": 2}));
        let recent = Recent::default();
        for (i, r) in cases.iter().enumerate() {
            assert_eq!(compare_recent(&e, r, &recent), compare(&e, r), "case {i}");
        }
    }

    #[test]
    fn passes_on_subset() {
        let r = assigned(
            "h1",
            json!({"tags":{"deviceType":"toaster","x":1},"properties":{"desired":{"state":"ready","darknessSetting":"medium"}}}),
        );
        assert!(compare(&expect(), &r).is_empty());
    }

    #[test]
    fn names_each_differing_field() {
        let r = assigned("h2", json!({"tags":{"deviceType":"heatpump"}}));
        let m = compare(&expect(), &r);
        let fields: Vec<_> = m.iter().map(|m| m.field.name()).collect();
        assert_eq!(fields, ["hub", "twin.tags", "twin.desired"]);
        assert_eq!(m[0].expected, "\"h1\"");
        assert_eq!(m[0].actual, "\"h2\"");
        assert_eq!(m[2].actual, "null");
        let failed =
            Registration::failed(400_207, "Custom allocation failed with status code: 400");
        let e = Expect {
            status: Status::Failed,
            hub: None,
            twin_tags: None,
            twin_desired: None,
            error_code: Some(400_208),
            error_message: Some("status code: 400".into()),
            ..expect()
        };
        let m = compare(&e, &failed);
        assert_eq!(
            m.iter().map(|m| m.field).collect::<Vec<_>>(),
            [Field::ErrorCode]
        );
        assert!(!json::is_subset(&json!({"a":"65"}), &json!({"a":65})));
    }
}
