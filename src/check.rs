//! Expectations: compare a registration result with its class's [`Expect`] and say which fields
//! differ. Objects (twin tags, desired properties, payload) match as subsets: every expected key
//! must be present with a matching value; extra keys in the actual value are fine.
//!
//! Pure and allocation-free on the passing path (the common one under load).

use serde_json::Value;

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
    let mut out = Vec::new();
    let mut diff = |field, expected: String, actual: String| {
        out.push(Mismatch {
            field,
            expected,
            actual,
        })
    };
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
            .is_some_and(|g| g.eq_ignore_ascii_case(h))
        {
            diff(Field::Hub, quote(h), opt(&got.assigned_hub));
        }
    }
    if let Some(d) = &expect.device_id {
        if got.device_id.as_deref() != Some(d.as_str()) {
            diff(Field::DeviceId, quote(d), opt(&got.device_id));
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
            diff(Field::ErrorMessage, quote(m), opt(&got.error_message));
        }
    }
    let twin = got.initial_twin.as_ref();
    if let Some(t) = &expect.twin_tags {
        let actual = twin.and_then(|t| t.get("tags"));
        if !actual.is_some_and(|a| is_subset(t, a)) {
            diff(Field::TwinTags, t.to_string(), json(actual));
        }
    }
    if let Some(d) = &expect.twin_desired {
        let actual = twin.and_then(|t| t.pointer("/properties/desired"));
        if !actual.is_some_and(|a| is_subset(d, a)) {
            diff(Field::TwinDesired, d.to_string(), json(actual));
        }
    }
    if let Some(p) = &expect.payload {
        if !got.payload.as_ref().is_some_and(|a| is_subset(p, a)) {
            diff(Field::Payload, p.to_string(), json(got.payload.as_ref()));
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
        if !actual.is_some_and(|a| is_subset(t, a)) {
            out.push(Mismatch {
                field: Field::TwinTags,
                expected: t.to_string(),
                actual: json(actual),
            });
        }
    }
    if let Some(d) = &expect.twin_desired {
        let actual = twin.pointer("/properties/desired");
        if !actual.is_some_and(|a| is_subset(d, a)) {
            out.push(Mismatch {
                field: Field::TwinDesired,
                expected: d.to_string(),
                actual: json(actual),
            });
        }
    }
    out
}

/// True when `expected` is contained in `actual` (objects recursively, other values equal).
pub fn is_subset(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| is_subset(v, av))),
        _ => expected == actual,
    }
}

fn quote(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

fn opt(s: &Option<String>) -> String {
    s.as_deref().map_or("null".into(), quote)
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
            initial_twin: Some(twin),
            ..Default::default()
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
        assert!(!is_subset(&json!({"a":"65"}), &json!({"a":65})));
    }
}
