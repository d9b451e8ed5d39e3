//! DPS outcome semantics: how DPS turns a custom-allocation webhook answer into a registration
//! result (seed troubleshooting table; dps-protocol.md §5.4). The webhook driver uses this to
//! report what a device would see; the emulator will call the same code.
//!
//! | webhook answer | result |
//! |---|---|
//! | 200 with a hub in `linkedHubs` | assigned (hub, initial twin, payload) |
//! | 200 with empty/null/missing hub | failed 400208 |
//! | 401 | failed 400209 |
//! | status >= 429 | retried (10 retries, 1 s initial, +9 s each, times `scale`), then failed 400207 (our choice) |
//! | any other status | failed 400207 "Custom allocation failed with status code: N" |
//! | hub not in `linkedHubs` | failed, `unlinked_hub_code` (default 400207, our choice) |
//! | 200 with an unparsable body | failed, `malformed_code` (default 400207, our choice) |
//! | timeout / no connection | `no_answer` policy: fail with 400207 (default) or retry like >= 429 (our choice) |

use std::time::Duration;

use super::allocation::AllocationResponse;
use super::json::Json;
use super::{codes, Registration, Status};

/// What came back from one webhook call.
#[derive(Debug, Clone, Copy)]
pub enum Answer<'a> {
    /// An HTTP response arrived.
    Response {
        /// HTTP status.
        status: u16,
        /// Body bytes.
        body: &'a [u8],
    },
    /// No answer within the request timeout.
    TimedOut,
    /// Connection refused, reset, or another transport failure.
    Transport,
}

/// What DPS does next.
// Returned once per webhook call and never stored: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The registration is finished.
    Final(Registration),
    /// Call the webhook again after the retry delay.
    Retry,
}

/// How a missing answer (timeout, transport error) is treated: UNCONFIRMED in the sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAnswer {
    /// Fail the registration at once with `no_answer_code`.
    Fail,
    /// Retry it like a >= 429 answer.
    Retry,
}

/// DPS's webhook retry schedule: `initial + increment * (n - 1)` before retry `n`, times `scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Number of retries after the first call (10 per the seed table).
    pub count: u32,
    /// Delay before the first retry (1 s).
    pub initial: Duration,
    /// Added for each further retry (9 s).
    pub increment: Duration,
    /// Compresses the schedule (e.g. 0.001 in CI); 1.0 is real DPS timing.
    pub scale: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            count: 10,
            initial: Duration::from_secs(1),
            increment: Duration::from_secs(9),
            scale: 1.0,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry `n` (1-based), or `None` when the retries are used up.
    pub fn delay(&self, n: u32) -> Option<Duration> {
        if n == 0 || n > self.count {
            return None;
        }
        let unscaled = self.initial + self.increment * (n - 1);
        Some(unscaled.mul_f64(self.scale))
    }
}

/// The rules, with every choice we made where the sources are silent made configurable.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Retry schedule for >= 429 (and for no answer when `no_answer` is `Retry`).
    pub retry: RetryPolicy,
    /// Timeout / transport failure handling.
    pub no_answer: NoAnswer,
    /// Code when the webhook never answered (default 400207).
    pub no_answer_code: u32,
    /// Code when the hub is not one of `linkedHubs` (default 400207).
    pub unlinked_hub_code: u32,
    /// Code when a 200 body cannot be parsed (default 400207).
    pub malformed_code: u32,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            no_answer: NoAnswer::Fail,
            no_answer_code: codes::CUSTOM_ALLOCATION_FAILED,
            unlinked_hub_code: codes::CUSTOM_ALLOCATION_FAILED,
            malformed_code: codes::CUSTOM_ALLOCATION_FAILED,
        }
    }
}

/// Facts about the device needed to finish an assignment.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The hubs offered to the webhook.
    pub linked_hubs: &'a [String],
    /// The device ID DPS will use (registration ID, or the individual enrollment's `deviceId`).
    pub device_id: &'a str,
    /// The enrollment's initial twin, used when the webhook returns none.
    pub enrollment_twin: Option<&'a serde_json::Value>,
    /// The offer's last 200 answer and its registration, if the caller keeps one.
    pub recent: Option<&'a Recent>,
}

/// The last 200 answer one offer (one set of linked hubs and enrollment twin) got, and the
/// registration it mapped to. A 200 answer's registration depends on nothing but its bytes and
/// that offer, besides the device ID, which is copied in verbatim: an answer with the same
/// bytes maps to the same registration. So a fleet's repeated answers (every toaster gets the
/// toaster twin) are read once and compared byte for byte after that; any other answer is read
/// and replaces it. Never blocks: when another thread holds it, the answer is simply read.
#[derive(Debug, Default)]
pub struct Recent(std::sync::Mutex<Option<(Vec<u8>, Registration)>>);

impl Rules {
    /// Maps one webhook answer. `retries_done` is how many retries already happened.
    pub fn decide(&self, answer: Answer<'_>, ctx: &Context<'_>, retries_done: u32) -> Decision {
        let can_retry = retries_done < self.retry.count;
        match answer {
            Answer::Response { status, body } => match status {
                200 => Decision::Final(self.assign(body, ctx)),
                401 => Decision::Final(Registration::failed(
                    codes::CUSTOM_ALLOCATION_UNAUTHORIZED,
                    "Custom allocation failed: the webhook returned 401 Unauthorized",
                )),
                s if s >= 429 && can_retry => Decision::Retry,
                s => Decision::Final(status_failure(s)),
            },
            Answer::TimedOut | Answer::Transport
                if self.no_answer == NoAnswer::Retry && can_retry =>
            {
                Decision::Retry
            }
            Answer::TimedOut => Decision::Final(Registration::failed(
                self.no_answer_code,
                "Custom allocation failed: the webhook did not answer in time",
            )),
            Answer::Transport => Decision::Final(Registration::failed(
                self.no_answer_code,
                "Custom allocation failed: the webhook could not be reached",
            )),
        }
    }

    fn assign(&self, body: &[u8], ctx: &Context<'_>) -> Registration {
        let Some(recent) = ctx.recent else {
            return self.read(body, ctx);
        };
        if let Ok(last) = recent.0.try_lock() {
            if let Some((_, r)) = last.as_ref().filter(|(b, _)| b.as_slice() == body) {
                return Registration {
                    device_id: r.device_id.as_ref().map(|_| ctx.device_id.to_owned()),
                    ..r.clone_shared()
                };
            }
        }
        let r = self.read(body, ctx);
        if let Ok(mut last) = recent.0.try_lock() {
            *last = Some((body.to_vec(), r.clone()));
        }
        r
    }

    /// A 200 answer's registration.
    fn read(&self, body: &[u8], ctx: &Context<'_>) -> Registration {
        let response: AllocationResponse = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                return Registration::failed(
                    self.malformed_code,
                    format!("Custom allocation returned an invalid response: {e}"),
                )
            }
        };
        let hub = match response.iot_hub_host_name.as_deref() {
            None | Some("") => {
                return Registration::failed(
                    codes::CUSTOM_ALLOCATION_HUB_NOT_SPECIFIED,
                    "Custom allocation failed: no IoT hub was specified",
                )
            }
            Some(h) => h,
        };
        if !ctx.linked_hubs.iter().any(|l| l.eq_ignore_ascii_case(hub)) {
            return Registration::failed(
                self.unlinked_hub_code,
                format!("Custom allocation returned an IoT hub that is not linked: {hub}"),
            );
        }
        Registration {
            status: Some(Status::Assigned),
            assigned_hub: Some(hub.into()),
            device_id: Some(ctx.device_id.to_owned()),
            error_code: None,
            error_message: None,
            initial_twin: response
                .initial_twin
                .map(Json::from_raw)
                .or_else(|| ctx.enrollment_twin.map(Json::from_value)),
            payload: response.payload.map(Json::from_raw),
        }
    }
}

/// `failed 400207 "Custom allocation failed with status code: N"` (seed 001's device output).
pub fn status_failure(status: u16) -> Registration {
    Registration::failed(
        codes::CUSTOM_ALLOCATION_FAILED,
        format!("Custom allocation failed with status code: {status}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HUBS: &[&str] = &[
        "contoso-toasters-hub-1098.azure-devices.net",
        "contoso-heatpumps-hub-1098.azure-devices.net",
    ];

    fn hubs() -> Vec<String> {
        HUBS.iter().map(|s| s.to_string()).collect()
    }

    fn decide(status: u16, body: &str) -> Decision {
        let h = hubs();
        Rules::default().decide(
            Answer::Response {
                status,
                body: body.as_bytes(),
            },
            &Context {
                linked_hubs: &h,
                device_id: "dev",
                enrollment_twin: None,
                recent: None,
            },
            0,
        )
    }

    fn code(d: Decision) -> Option<u32> {
        match d {
            Decision::Final(r) => r.error_code,
            Decision::Retry => Some(0),
        }
    }

    #[test]
    fn a_repeated_answer_maps_as_if_read_again() {
        let h = hubs();
        let twin = json!({"tags": {"from": "enrollment"}});
        let recent = Recent::default();
        let bodies = [
            r#"{"iotHubHostName":"contoso-toasters-hub-1098.azure-devices.net","initialTwin":{"tags":{"a":1}}}"#,
            r#"{"iotHubHostName":"contoso-toasters-hub-1098.azure-devices.net","initialTwin":{"tags":{"a":1}}}"#,
            r#"{"iotHubHostName":"contoso-toasters-hub-1098.azure-devices.net","initialTwin":{"tags":{"a":2}}}"#,
            r#"{"iotHubHostName":"contoso-toasters-hub-1098.azure-devices.net"}"#,
            r#"{"iotHubHostName":"contoso-toasters-hub-1098.azure-devices.net"}"#,
            r#"{"iotHubHostName":"elsewhere.azure-devices.net"}"#,
            r#"{"iotHubHostName":"elsewhere.azure-devices.net"}"#,
            "not json",
            "not json",
            r#"{"iotHubHostName":"contoso-toasters-hub-1098.azure-devices.net","initialTwin":{"tags":{"a":1}}}"#,
        ];
        for (i, body) in bodies.iter().enumerate() {
            let device = format!("device-{i}");
            let ctx = |recent| Context {
                linked_hubs: &h,
                device_id: &device,
                enrollment_twin: Some(&twin),
                recent,
            };
            let answer = Answer::Response {
                status: 200,
                body: body.as_bytes(),
            };
            let fresh = Rules::default().decide(answer, &ctx(None), 0);
            let kept = Rules::default().decide(answer, &ctx(Some(&recent)), 0);
            assert_eq!(kept, fresh, "answer {i}");
            if let Decision::Final(r) = kept {
                if r.status == Some(Status::Assigned) {
                    assert_eq!(r.device_id.as_deref(), Some(device.as_str()));
                }
            }
        }
    }

    #[test]
    fn troubleshooting_table() {
        let ok = decide(
            200,
            r#"{"iotHubHostName":"contoso-toasters-hub-1098.azure-devices.net","initialTwin":{"tags":{"deviceType":"toaster"}},"payload":{"a":1}}"#,
        );
        let Decision::Final(r) = ok else { panic!() };
        assert_eq!(r.key().to_string(), "assigned");
        assert_eq!(r.assigned_hub.as_deref(), Some(HUBS[0]));
        assert_eq!(r.device_id.as_deref(), Some("dev"));
        assert_eq!(
            r.initial_twin,
            Some(json!({"tags":{"deviceType":"toaster"}}).into())
        );
        assert_eq!(r.payload, Some(json!({"a":1}).into()));

        assert_eq!(code(decide(200, r#"{"iotHubHostName":""}"#)), Some(400_208));
        assert_eq!(
            code(decide(200, r#"{"iotHubHostName":null}"#)),
            Some(400_208)
        );
        assert_eq!(code(decide(200, r#"{}"#)), Some(400_208));
        assert_eq!(code(decide(401, "")), Some(400_209));
        assert_eq!(decide(429, ""), Decision::Retry);
        assert_eq!(decide(503, ""), Decision::Retry);
        let Decision::Final(r) = decide(400, "Unrecognized device registration.") else {
            panic!()
        };
        assert_eq!(r.key().to_string(), "failed:400207");
        assert_eq!(
            r.error_message.as_deref(),
            Some("Custom allocation failed with status code: 400")
        );
        assert_eq!(code(decide(403, "")), Some(400_207));
        assert_eq!(code(decide(302, "")), Some(400_207));
        assert_eq!(code(decide(204, "")), Some(400_207));
        assert_eq!(
            code(decide(
                200,
                r#"{"iotHubHostName":"elsewhere.azure-devices.net"}"#
            )),
            Some(400_207)
        );
        assert_eq!(code(decide(200, "not json")), Some(400_207));
    }

    #[test]
    fn enrollment_twin_is_the_fallback() {
        let h = hubs();
        let twin = json!({"tags":{"x":1}});
        let ctx = Context {
            linked_hubs: &h,
            device_id: "d",
            enrollment_twin: Some(&twin),
            recent: None,
        };
        let body = br#"{"iotHubHostname":"CONTOSO-toasters-hub-1098.azure-devices.net","initialTwin":null}"#;
        let Decision::Final(r) =
            Rules::default().decide(Answer::Response { status: 200, body }, &ctx, 0)
        else {
            panic!()
        };
        assert_eq!(r.initial_twin, Some(twin.into()));
    }

    #[test]
    fn retry_schedule_and_exhaustion() {
        let p = RetryPolicy::default();
        let waits: Vec<u64> = (1..=10).map(|n| p.delay(n).unwrap().as_secs()).collect();
        assert_eq!(waits, [1, 10, 19, 28, 37, 46, 55, 64, 73, 82]);
        assert_eq!(p.delay(11), None);
        assert_eq!(p.delay(0), None);
        let fast = RetryPolicy { scale: 0.001, ..p };
        assert_eq!(fast.delay(2), Some(Duration::from_millis(10)));

        let h = hubs();
        let ctx = Context {
            linked_hubs: &h,
            device_id: "d",
            enrollment_twin: None,
            recent: None,
        };
        let rules = Rules::default();
        assert_eq!(
            rules.decide(
                Answer::Response {
                    status: 500,
                    body: b""
                },
                &ctx,
                9
            ),
            Decision::Retry
        );
        let Decision::Final(r) = rules.decide(
            Answer::Response {
                status: 500,
                body: b"",
            },
            &ctx,
            10,
        ) else {
            panic!()
        };
        assert_eq!(
            r.error_message.as_deref(),
            Some("Custom allocation failed with status code: 500")
        );
    }

    #[test]
    fn no_answer_policy() {
        let h = hubs();
        let ctx = Context {
            linked_hubs: &h,
            device_id: "d",
            enrollment_twin: None,
            recent: None,
        };
        let fail = Rules::default();
        assert_eq!(code(fail.decide(Answer::TimedOut, &ctx, 0)), Some(400_207));
        assert_eq!(code(fail.decide(Answer::Transport, &ctx, 0)), Some(400_207));
        let retry = Rules {
            no_answer: NoAnswer::Retry,
            no_answer_code: 500_000,
            ..Rules::default()
        };
        assert_eq!(retry.decide(Answer::TimedOut, &ctx, 0), Decision::Retry);
        assert_eq!(
            code(retry.decide(Answer::TimedOut, &ctx, 10)),
            Some(500_000)
        );
    }
}
