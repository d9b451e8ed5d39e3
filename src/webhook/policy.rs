//! The seed documents' allocation functions, reproduced exactly: status codes, error texts, the
//! response bodies and content types their ASP.NET hosts produce (including the 500 a seed function
//! throws on input it does not expect).
//!
//! Pure: bytes in, [`Reply`] out. The server, faults and timing live in `server.rs`/`fault.rs`.

use serde_json::Value;

use super::request::{self, Hubs};

/// Which seed function to behave like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// 2018 how-to (seed 000): suffix rules, hub by `-toasters-`/`-heatpumps-`, no twin.
    Howto2018,
    /// 2020 tutorial (seed 001): IDs containing `contoso-toaster` get `linkedHubs[0]`, others 400.
    Tutorial2020,
    /// Current tutorial (seed 002): suffix rules plus the initial twins. The default.
    TutorialCurrent,
}

/// A reply: status, content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<&'static str>,
    /// Body bytes.
    pub body: Vec<u8>,
}

const JSON: &str = "application/json; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Adds the request's `deviceRuntimeContext.payload` to a 200 JSON reply as `payload` (what a
/// webhook does to send data back to the device, dps-protocol.md §5.3). Other replies unchanged.
pub(crate) fn echo_payload(reply: Reply, request: &[u8]) -> Reply {
    if reply.status != 200 {
        return reply;
    }
    let payload = serde_json::from_slice::<Value>(request)
        .ok()
        .and_then(|v| v.pointer("/deviceRuntimeContext/payload").cloned());
    match (payload, serde_json::from_slice::<Value>(&reply.body)) {
        (Some(p), Ok(Value::Object(mut m))) => {
            m.insert("payload".into(), p);
            Reply {
                body: serde_json::to_vec(&m).expect("a JSON object serialises"),
                ..reply
            }
        }
        _ => reply,
    }
}

impl Policy {
    /// Every policy name, for `--policy` and scenario errors.
    pub const NAMES: [&'static str; 3] = ["howto-2018", "tutorial-2020", "tutorial-current"];

    /// Parses a policy name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "howto-2018" => Policy::Howto2018,
            "tutorial-2020" => Policy::Tutorial2020,
            "tutorial-current" => Policy::TutorialCurrent,
            _ => return None,
        })
    }

    /// The policy's name.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Howto2018 => "howto-2018",
            Policy::Tutorial2020 => "tutorial-2020",
            Policy::TutorialCurrent => "tutorial-current",
        }
    }

    /// Runs the function on a request body.
    pub fn respond(self, body: &[u8]) -> Reply {
        // An unparsable body throws inside the function: the host answers 500 with no body.
        let data = if body.iter().all(u8::is_ascii_whitespace) {
            request::Read::NONE
        } else {
            match request::read(body) {
                Ok(r) => r,
                Err(_) => return Reply::internal_error(),
            }
        };
        let Some(reg_id) = data.registration_id.as_deref() else {
            return self.bad_request("Registration ID not provided for the device.");
        };
        let hubs = match &data.linked_hubs {
            // 2018 and 2020 call `data?.linkedHubs.ToObject<…>()`: a missing property throws (500);
            // the current seed writes `linkedHubs?.ToObject` and reports it instead.
            Hubs::Missing if self != Policy::TutorialCurrent => return Reply::internal_error(),
            Hubs::Missing | Hubs::Null => {
                return self.bad_request("No hub group defined for the enrollment.")
            }
            Hubs::List(a) => a.as_slice(),
            Hubs::Other => return Reply::internal_error(),
        };
        match self {
            Policy::Tutorial2020 => {
                if !reg_id.contains("contoso-toaster") {
                    return self.bad_request("Unrecognized device registration.");
                }
                // `hubs[0]` on an empty array throws.
                let Some(hub) = hubs.first() else {
                    return Reply::internal_error();
                };
                Reply::json_bytes(200, hub_reply(hub, ""))
            }
            Policy::Howto2018 | Policy::TutorialCurrent => {
                let (marker, what, twin) = if reg_id.contains("-contoso-tstrsd-007") {
                    ("-toasters-", "toasters", TOASTER_TWIN)
                } else if reg_id.contains("-contoso-hpsd-088") {
                    ("-heatpumps-", "heat pumps", HEATPUMP_TWIN)
                } else {
                    return self.bad_request("Unrecognized device registration.");
                };
                // `foreach … if (Contains) obj.iotHubHostName = hubString`: the last match wins.
                let Some(hub) = hubs.iter().rev().find(|h| h.contains(marker)) else {
                    return self.bad_request(&format!("No {what} hub found for the enrollment."));
                };
                if self == Policy::Howto2018 {
                    // JsonConvert.SerializeObject(obj, Formatting.Indented) of the 2018 ResponseObj.
                    let body = format!(
                        "{{\n  \"iotHubHostName\": {},\n  \"IoTHub\": null,\n  \"initialTwin\": null,\n  \"linkedHubs\": null,\n  \"enrollment\": null\n}}",
                        json_str(hub)
                    );
                    Reply::json(200, body)
                } else {
                    Reply::json_bytes(200, hub_reply(hub, twin))
                }
            }
        }
    }

    fn bad_request(self, message: &str) -> Reply {
        match self {
            // `req.CreateResponse(HttpStatusCode.BadRequest, message)`: content negotiation, JSON.
            Policy::Howto2018 => Reply::json(400, json_str(message)),
            // `new BadRequestObjectResult(message)`: a string goes through the text formatter.
            Policy::Tutorial2020 | Policy::TutorialCurrent => Reply {
                status: 400,
                content_type: Some(TEXT),
                body: message.as_bytes().to_vec(),
            },
        }
    }
}

/// The toaster twin of seed 002, serialised as its function log shows it.
pub(crate) const TOASTER_TWIN: &str = r#"{"properties":{"desired":{"state":"ready","darknessSetting":"medium"}},"tags":{"deviceType":"toaster"}}"#;
/// The heat-pump twin of seed 002.
pub(crate) const HEATPUMP_TWIN: &str = r#"{"properties":{"desired":{"state":"on","temperatureSetting":"65"}},"tags":{"deviceType":"heatpump"}}"#;

/// `{"iotHubHostName":<hub>}`, or with `,"initialTwin":<twin>` when `twin` is not empty, written
/// in one buffer (the reply of every registration the reference webhook assigns).
fn hub_reply(hub: &str, twin: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(48 + hub.len() + twin.len());
    body.extend_from_slice(b"{\"iotHubHostName\":");
    crate::dps::json::write_str(&mut body, hub);
    if !twin.is_empty() {
        body.extend_from_slice(b",\"initialTwin\":");
        body.extend_from_slice(twin.as_bytes());
    }
    body.push(b'}');
    body
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

impl Reply {
    /// A JSON reply.
    pub fn json(status: u16, body: String) -> Self {
        Self::json_bytes(status, body.into_bytes())
    }

    /// A JSON reply of ready bytes.
    pub fn json_bytes(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type: Some(JSON),
            body,
        }
    }

    /// The Functions host's answer to an unhandled exception.
    pub fn internal_error() -> Self {
        Self {
            status: 500,
            content_type: None,
            body: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: &str, hubs: &[&str]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"enrollmentGroup":{}, "deviceRuntimeContext":{"registrationId":id,"symmetricKey":{}}, "linkedHubs":hubs})).unwrap()
    }

    const T: &str = "contoso-toasters-hub-1098.azure-devices.net";
    const H: &str = "contoso-heatpumps-hub-1098.azure-devices.net";

    #[test]
    fn current_matches_the_seed_log() {
        let r = Policy::TutorialCurrent.respond(&req("breakroom499-contoso-tstrsd-007", &[T, H]));
        assert_eq!(r.status, 200);
        // Byte-identical to the response in seed 002's function log.
        assert_eq!(
            std::str::from_utf8(&r.body).unwrap(),
            r#"{"iotHubHostName":"contoso-toasters-hub-1098.azure-devices.net","initialTwin":{"properties":{"desired":{"state":"ready","darknessSetting":"medium"}},"tags":{"deviceType":"toaster"}}}"#
        );
        let r = Policy::TutorialCurrent.respond(&req("mainbuilding167-contoso-hpsd-088", &[T, H]));
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["iotHubHostName"], H);
        assert_eq!(
            v["initialTwin"]["properties"]["desired"]["temperatureSetting"],
            "65"
        );
        let r = Policy::TutorialCurrent.respond(&req("lobby1-contoso-kettle-001", &[T, H]));
        assert_eq!(
            (r.status, r.body.as_slice(), r.content_type),
            (400, &b"Unrecognized device registration."[..], Some(TEXT))
        );
        let r = Policy::TutorialCurrent.respond(&req("x-contoso-hpsd-088", &[T]));
        assert_eq!(r.body, b"No heat pumps hub found for the enrollment.");
    }

    #[test]
    fn tutorial_2020() {
        let r = Policy::Tutorial2020.respond(&req("contoso-toaster-007", &[T]));
        assert_eq!(
            (r.status, std::str::from_utf8(&r.body).unwrap()),
            (
                200,
                r#"{"iotHubHostName":"contoso-toasters-hub-1098.azure-devices.net"}"#
            )
        );
        let r = Policy::Tutorial2020.respond(&req("contoso-heatpump-088", &[T]));
        assert_eq!(
            (r.status, r.body.as_slice()),
            (400, &b"Unrecognized device registration."[..])
        );
        assert_eq!(
            Policy::Tutorial2020
                .respond(&req("contoso-toaster-007", &[]))
                .status,
            500
        );
    }

    #[test]
    fn howto_2018() {
        let r = Policy::Howto2018.respond(&req("breakroom499-contoso-tstrsd-007", &[T, H]));
        assert_eq!(r.status, 200);
        assert!(std::str::from_utf8(&r.body).unwrap().starts_with("{\n  \"iotHubHostName\": \"contoso-toasters-hub-1098.azure-devices.net\",\n  \"IoTHub\": null,"));
        let r = Policy::Howto2018.respond(&req("lobby-contoso-x", &[T, H]));
        assert_eq!(
            (r.status, r.body.as_slice(), r.content_type),
            (
                400,
                &b"\"Unrecognized device registration.\""[..],
                Some(JSON)
            )
        );
    }

    #[test]
    fn malformed_inputs() {
        for p in [
            Policy::Howto2018,
            Policy::Tutorial2020,
            Policy::TutorialCurrent,
        ] {
            assert_eq!(p.respond(b"{not json").status, 500);
            assert_eq!(
                p.respond(b"").body,
                p.bad_request("Registration ID not provided for the device.")
                    .body
            );
        }
        let no_hubs = br#"{"deviceRuntimeContext":{"registrationId":"a-contoso-tstrsd-007"}}"#;
        assert_eq!(
            Policy::TutorialCurrent.respond(no_hubs).body,
            b"No hub group defined for the enrollment."
        );
        assert_eq!(Policy::Tutorial2020.respond(no_hubs).status, 500);
        let null_hubs = br#"{"deviceRuntimeContext":{"registrationId":"a-contoso-tstrsd-007"},"linkedHubs":null}"#;
        assert_eq!(Policy::Howto2018.respond(null_hubs).status, 400);
    }
}
