//! The DPS device protocol on the wire (dps-protocol.md §3, §4, §9): MQTT username and topics,
//! HTTPS routes, and the JSON shapes of requests and responses. The one place these facts live:
//! the emulator parses what devices send and builds what DPS answers; the registration drivers do
//! the reverse with the same functions.
//!
//! Pure: no I/O, no policy. Parsing is lenient where real SDKs differ (see each function).

use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sas::url_encode;

/// The api-version our drivers send (every SDK but C uses it).
pub const API_VERSION: &str = "2019-03-31";
/// The subscription every SDK makes, at QoS 1.
pub const RESPONSE_FILTER: &str = "$dps/registrations/res/#";
const REGISTER_PREFIX: &str = "$dps/registrations/PUT/iotdps-register/";
const POLL_PREFIX: &str = "$dps/registrations/GET/iotdps-get-operationstatus/";
const RESPONSE_PREFIX: &str = "$dps/registrations/res/";
/// DPS's maximum message size (dps-protocol.md §8).
pub const MAX_MESSAGE: usize = 96 * 1024;

/// The MQTT username `{idScope}/registrations/{registrationId}/api-version=…&ClientVersion=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username {
    /// ID scope.
    pub id_scope: String,
    /// Registration ID.
    pub registration_id: String,
    /// `api-version`, if given.
    pub api_version: Option<String>,
}

/// Parses a username leniently: split at the first `/registrations/`, the registration ID runs to
/// the next `/`, the rest is `k=v&k=v` in any order (SDK-C, Py, Node, C#, Embedded-C all differ).
pub fn parse_username(u: &str) -> Option<Username> {
    let (scope, rest) = u.split_once("/registrations/")?;
    let (id, query) = rest.split_once('/').unwrap_or((rest, ""));
    if scope.is_empty() || id.is_empty() {
        return None;
    }
    let api_version = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "api-version")
        .map(|(_, v)| v.to_owned());
    Some(Username {
        id_scope: scope.to_owned(),
        registration_id: id.to_owned(),
        api_version,
    })
}

/// The username our drivers send.
pub fn username(id_scope: &str, registration_id: &str, client_version: &str) -> String {
    format!(
        "{id_scope}/registrations/{registration_id}/api-version={API_VERSION}&ClientVersion={}",
        url_encode(client_version)
    )
}

/// A device request over MQTT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `$dps/registrations/PUT/iotdps-register/?$rid={rid}`.
    Register {
        /// Request ID, echoed verbatim.
        rid: String,
    },
    /// `$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={op}`.
    Poll {
        /// Request ID, echoed verbatim.
        rid: String,
        /// Operation ID (URL-decoded: SDK-Py quotes it).
        operation_id: String,
    },
}

fn query_pairs(q: &str) -> impl Iterator<Item = (&str, &str)> {
    q.split('&').filter_map(|kv| kv.split_once('='))
}

/// Parses a request topic; `None` for anything else.
pub fn parse_request(topic: &str) -> Option<Request> {
    let (kind, query) = if let Some(q) = topic.strip_prefix(REGISTER_PREFIX) {
        (true, q)
    } else {
        (false, topic.strip_prefix(POLL_PREFIX)?)
    };
    let query = query.strip_prefix('?')?;
    // `$rid` is opaque (UUID or decimal): kept exactly as sent so the echo matches.
    let rid = query_pairs(query).find(|(k, _)| *k == "$rid")?.1.to_owned();
    if kind {
        return Some(Request::Register { rid });
    }
    let op = query_pairs(query).find(|(k, _)| *k == "operationId")?.1;
    Some(Request::Poll {
        rid,
        operation_id: percent_decode_str(op).decode_utf8_lossy().into_owned(),
    })
}

/// The register topic our drivers publish to.
pub fn register_topic(rid: &str) -> String {
    format!("{REGISTER_PREFIX}?$rid={rid}")
}

/// The poll topic our drivers publish to.
pub fn poll_topic(rid: &str, operation_id: &str) -> String {
    format!(
        "{POLL_PREFIX}?$rid={rid}&operationId={}",
        url_encode(operation_id)
    )
}

/// `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]`: `$rid` first (SDK-C#'s regex
/// needs it there).
pub fn response_topic(status: u16, rid: &str, retry_after: Option<u32>) -> String {
    match retry_after {
        Some(s) => format!("{RESPONSE_PREFIX}{status}/?$rid={rid}&retry-after={s}"),
        None => format!("{RESPONSE_PREFIX}{status}/?$rid={rid}"),
    }
}

/// A response topic: status, `$rid`, `retry-after` (seconds).
pub fn parse_response(topic: &str) -> Option<(u16, String, Option<u32>)> {
    let rest = topic.strip_prefix(RESPONSE_PREFIX)?;
    let (status, query) = rest.split_once("/?")?;
    let status = status.parse().ok()?;
    let rid = query_pairs(query).find(|(k, _)| *k == "$rid")?.1.to_owned();
    let retry = query_pairs(query)
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, v)| v.parse().ok());
    Some((status, rid, retry))
}

/// A register body, parsed leniently: empty (SDK-C#), `{"payload": null, …}` (SDK-Py), or a
/// space (a poll body sent to the register topic by mistake) all yield no payload.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RegisterBody {
    /// Optional; the ID that counts is the username's or the URL's.
    #[serde(rename = "registrationId")]
    pub registration_id: Option<String>,
    /// The device's custom payload.
    pub payload: Option<Value>,
}

impl RegisterBody {
    /// Parses; anything that is not a JSON object is treated as an empty body.
    pub fn parse(body: &[u8]) -> Self {
        serde_json::from_slice::<Self>(body)
            .ok()
            .map(|mut b| {
                b.payload = b.payload.filter(|p| !p.is_null());
                b
            })
            .unwrap_or_default()
    }
}

/// `registrationState` (DeviceRegistrationResult, dps-protocol.md §3.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationState {
    /// Registration ID.
    pub registration_id: String,
    /// First registration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_date_time_utc: Option<String>,
    /// Assigned hub.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_hub: Option<String>,
    /// Device ID on the hub.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// `assigning`, `assigned`, `failed`, `disabled`.
    pub status: String,
    /// `initialAssignment`, `deviceDataMigrated`, `deviceDataReset`,
    /// `reprovisionedToInitialAssignment`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub substatus: Option<String>,
    /// Six-digit error code (failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u32>,
    /// Error text (failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Last change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated_date_time_utc: Option<String>,
    /// Opaque etag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// What the webhook returned for the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

/// `RegistrationOperationStatus`: every register and poll response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    /// Operation ID (always present: SDK-C needs it).
    pub operation_id: String,
    /// `assigning` while running (never `unassigned`), then terminal.
    pub status: String,
    /// Absent in the first 202, present afterwards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_state: Option<RegistrationState>,
}

/// `ProvisioningServiceErrorDetails`: the body of every non-2xx response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetails {
    /// Six-digit code.
    pub error_code: u32,
    /// Opaque tracking ID.
    pub tracking_id: String,
    /// Text.
    pub message: String,
    /// When.
    pub timestamp_utc: String,
}

/// An error body as a device reads it: whatever of `errorCode` and `message` is there (a
/// missing or garbled body gives neither).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetailsLenient {
    /// Six-digit code.
    pub error_code: Option<u32>,
    /// Text.
    pub message: Option<String>,
}

impl ErrorDetailsLenient {
    /// Parses; anything unreadable is an empty detail.
    pub fn parse(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }
}

/// The register body a device sends: `{"registrationId": …, "payload": …}` (payload, already
/// JSON, only when set).
pub fn register_body(registration_id: &str, payload_json: Option<&str>) -> Vec<u8> {
    let payload = payload_json.unwrap_or("");
    let mut body = Vec::with_capacity(32 + registration_id.len() + payload.len());
    body.extend_from_slice(br#"{"registrationId":"#);
    super::json::write_str(&mut body, registration_id);
    if payload_json.is_some() {
        body.extend_from_slice(br#","payload":"#);
        body.extend_from_slice(payload.as_bytes());
    }
    body.push(b'}');
    body
}

/// `/{scope}/registrations/{id}/register?api-version=…` (segments URL-encoded; [`route`] reads it
/// back).
pub fn register_path(id_scope: &str, registration_id: &str) -> String {
    format!(
        "/{}/registrations/{}/register?api-version={API_VERSION}",
        url_encode(id_scope),
        url_encode(registration_id)
    )
}

/// `/{scope}/registrations/{id}/operations/{operationId}?api-version=…`.
pub fn operation_path(id_scope: &str, registration_id: &str, operation_id: &str) -> String {
    format!(
        "/{}/registrations/{}/operations/{}?api-version={API_VERSION}",
        url_encode(id_scope),
        url_encode(registration_id),
        url_encode(operation_id)
    )
}

/// An HTTPS route of the DPS device API or the IoT Hub twin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `PUT /{scope}/registrations/{id}/register`.
    Register {
        /// ID scope.
        scope: String,
        /// Registration ID (URL-decoded).
        id: String,
    },
    /// `GET /{scope}/registrations/{id}/operations/{op}`.
    Operation {
        /// ID scope.
        scope: String,
        /// Registration ID.
        id: String,
        /// Operation ID.
        operation_id: String,
    },
    /// `POST /{scope}/registrations/{id}` (status lookup).
    Status {
        /// ID scope.
        scope: String,
        /// Registration ID.
        id: String,
    },
    /// IoT Hub `GET /twins/{deviceId}`.
    Twin {
        /// Device ID (URL-decoded).
        device_id: String,
    },
}

/// A path's segments, URL-decoded, without its query (SDK-C encodes them, Node does not).
pub(crate) fn segments(path: &str) -> Vec<String> {
    path.split('?')
        .next()
        .unwrap_or(path)
        .trim_start_matches('/')
        .split('/')
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect()
}

/// Matches a method and path (query ignored). Path segments are URL-decoded (SDK-C encodes them,
/// Node does not).
pub fn route(method: &str, path: &str) -> Option<Route> {
    let seg = segments(path);
    let seg: Vec<&str> = seg.iter().map(String::as_str).collect();
    Some(match (method, seg.as_slice()) {
        ("PUT", [scope, "registrations", id, "register"]) => Route::Register {
            scope: (*scope).to_owned(),
            id: (*id).to_owned(),
        },
        ("GET", [scope, "registrations", id, "operations", op]) => Route::Operation {
            scope: (*scope).to_owned(),
            id: (*id).to_owned(),
            operation_id: (*op).to_owned(),
        },
        ("POST", [scope, "registrations", id]) => Route::Status {
            scope: (*scope).to_owned(),
            id: (*id).to_owned(),
        },
        ("GET", ["twins", device]) => Route::Twin {
            device_id: (*device).to_owned(),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_bodies_are_the_json_devices_send() {
        let b = register_body("dev\"1\u{e9}", None);
        assert_eq!(b, "{\"registrationId\":\"dev\\\"1\u{e9}\"}".as_bytes());
        let b = register_body("dev1", Some(r#"{"fw":"1.0","n":[1,2]}"#));
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"registrationId": "dev1", "payload": {"fw": "1.0", "n": [1, 2]}})
        );
    }

    #[test]
    fn usernames_of_every_sdk() {
        for u in [
            "0ne00000A0A/registrations/dev1/api-version=2021-06-01&ClientVersion=1.15.0",
            "0ne00000A0A/registrations/dev1/api-version=2019-03-31&ClientVersion=azure-iot-device-provisioning-py%2F2.14.0%283.11%29",
            "0ne00000A0A/registrations/dev1/api-version=2019-03-31",
            "0ne00000A0A/registrations/dev1/ClientVersion=x&api-version=2019-03-31",
        ] {
            let p = parse_username(u).unwrap();
            assert_eq!((p.id_scope.as_str(), p.registration_id.as_str()), ("0ne00000A0A", "dev1"));
        }
        assert_eq!(
            parse_username("0ne/registrations/").map(|u| u.registration_id),
            None
        );
        assert_eq!(parse_username("garbage"), None);
        let ours = username("0ne00000A0A", "dev1", "loadtest/0.1.0");
        assert_eq!(
            parse_username(&ours).unwrap().api_version.as_deref(),
            Some(API_VERSION)
        );
        assert!(ours.ends_with("ClientVersion=loadtest%2F0.1.0"), "{ours}");
    }

    #[test]
    fn topics_round_trip_and_rid_is_verbatim() {
        for rid in ["1", "7b2c1f4e-7f1c-4a8e-9f3e-1d2c3b4a5e6f"] {
            assert_eq!(
                parse_request(&register_topic(rid)),
                Some(Request::Register { rid: rid.into() })
            );
            assert_eq!(
                parse_request(&poll_topic(rid, "5.abc.def-1")),
                Some(Request::Poll {
                    rid: rid.into(),
                    operation_id: "5.abc.def-1".into()
                })
            );
            let t = response_topic(202, rid, Some(3));
            assert!(t.starts_with(&format!("$dps/registrations/res/202/?$rid={rid}&")));
            assert_eq!(parse_response(&t), Some((202, rid.to_owned(), Some(3))));
        }
        assert_eq!(
            parse_response("$dps/registrations/res/200/?$rid=9"),
            Some((200, "9".into(), None))
        );
        assert_eq!(parse_request("$dps/registrations/PUT/other/?$rid=1"), None);
    }

    #[test]
    fn lenient_register_bodies() {
        assert_eq!(RegisterBody::parse(b""), RegisterBody::default());
        assert_eq!(RegisterBody::parse(b" "), RegisterBody::default());
        assert_eq!(
            RegisterBody::parse(br#"{"payload": null, "registrationId": "d"}"#).payload,
            None
        );
        assert_eq!(
            RegisterBody::parse(br#"{"payload":{"a":1}}"#).payload,
            Some(serde_json::json!({"a":1}))
        );
    }

    #[test]
    fn routes() {
        assert_eq!(
            route(
                "PUT",
                "/0ne1/registrations/dev%3A1/register?api-version=2019-03-31"
            ),
            Some(Route::Register {
                scope: "0ne1".into(),
                id: "dev:1".into()
            })
        );
        assert!(matches!(
            route("GET", "/0ne1/registrations/d/operations/5.a.b"),
            Some(Route::Operation { .. })
        ));
        assert!(matches!(
            route("POST", "/0ne1/registrations/d"),
            Some(Route::Status { .. })
        ));
        assert!(matches!(
            route("GET", "/twins/d?api-version=2021-04-12"),
            Some(Route::Twin { .. })
        ));
        assert_eq!(route("DELETE", "/0ne1/registrations/d"), None);
        // What the drivers build, the emulator routes.
        assert_eq!(
            route("PUT", &register_path("0ne1", "dev:1")),
            Some(Route::Register {
                scope: "0ne1".into(),
                id: "dev:1".into()
            })
        );
        assert_eq!(
            route("GET", &operation_path("0ne1", "d", "5.a b")),
            Some(Route::Operation {
                scope: "0ne1".into(),
                id: "d".into(),
                operation_id: "5.a b".into()
            })
        );
    }
}
