//! The device side of one DPS registration, free of I/O (rumqttc's `state.rs` is the model): the
//! methods take what arrived and return what to send next; the transports (MQTT, HTTPS) only move
//! bytes and sleep where they are told. dps-protocol.md §3.8 and §4.
//!
//! register → `202 assigning` + `retry-after` → poll (after `retry-after`, within the polling
//! floor and cap) → `200` terminal; `429` (and `5xx`) → the same request again after the answer's
//! `retry-after`, else exponential back-off with ±20 % jitter; any other status → failed with the
//! answer's error code and message; an answer to another request (`$rid` not ours) is ignored;
//! malformed JSON and a terminal answer without `registrationState` are target failures.

use std::time::Duration;

use rand::Rng as _;

use crate::dps::wire::{ErrorDetailsLenient, OperationStatus, RegistrationState};
use crate::outcome::Failure;

/// The polling and back-off policy of a device.
#[derive(Debug, Clone, Copy)]
pub struct Polling {
    /// Shortest wait between polls.
    pub floor: Duration,
    /// Longest wait between polls.
    pub cap: Duration,
    /// First back-off after a 429 without `retry-after`.
    pub backoff_initial: Duration,
    /// Longest back-off.
    pub backoff_max: Duration,
}

impl Polling {
    /// The wait before the next poll: `retry-after` within [floor, cap] (2 s when absent, the
    /// SDKs' default).
    pub fn after(&self, retry_after: Option<u32>) -> Duration {
        let d = retry_after.map_or(Duration::from_secs(2), |s| {
            Duration::from_secs(u64::from(s))
        });
        d.clamp(self.floor, self.cap)
    }

    /// The wait after the `n`th consecutive 429: its `retry-after` if given, else exponential
    /// back-off from `backoff_initial`, capped, times `jitter` (0.8..1.2).
    pub fn throttled(&self, retry_after: Option<u32>, n: u32, jitter: f64) -> Duration {
        if let Some(s) = retry_after {
            return self.after(Some(s));
        }
        self.backoff_initial
            .saturating_mul(1 << n.min(16))
            .min(self.backoff_max)
            .mul_f64(jitter)
    }
}

/// A request the transport sends: it renders it on its wire (MQTT topic, HTTPS route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Register (the body is the device's register body).
    Register {
        /// `$rid` (MQTT; HTTPS ignores it).
        rid: u32,
    },
    /// Poll the operation.
    Poll {
        /// `$rid`.
        rid: u32,
        /// The operation ID from the 202.
        operation_id: String,
    },
}

impl Request {
    /// Its request ID.
    pub fn rid(&self) -> u32 {
        match self {
            Request::Register { rid } | Request::Poll { rid, .. } => *rid,
        }
    }

    fn with_rid(&self, rid: u32) -> Self {
        match self {
            Request::Register { .. } => Request::Register { rid },
            Request::Poll { operation_id, .. } => Request::Poll {
                rid,
                operation_id: operation_id.clone(),
            },
        }
    }
}

/// One answer as the transport read it.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// Status (MQTT topic status or HTTP status).
    pub status: u16,
    /// `$rid` of the answer (MQTT); `None` where the transport pairs answers itself (HTTPS).
    pub rid: Option<&'a str>,
    /// `retry-after` in seconds.
    pub retry_after: Option<u32>,
    /// The JSON body.
    pub body: &'a [u8],
}

/// What the transport does next. (Made once per answer and matched at once, so the size of the
/// terminal variant costs nothing worth a box.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Step {
    /// Wait this long, then send the request.
    Send(Duration, Request),
    /// Not an answer to our request: keep waiting.
    Ignore,
    /// Finished: the terminal state, or why not.
    Done(Result<RegistrationState, Failure>),
}

/// What the session counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Requests sent (register, polls, retries).
    pub requests: u32,
    /// Operation-status polls.
    pub polls: u32,
    /// 429 answers.
    pub throttled: u32,
    /// Time the device was told to wait (`retry-after`, back-off).
    pub retry_wait: Duration,
}

/// One registration in progress.
#[derive(Debug)]
pub struct Session {
    polling: Polling,
    /// How the transport names an error status in messages: `res/` (MQTT) or `HTTP ` (HTTPS).
    label: &'static str,
    last: Request,
    throttled_in_a_row: u32,
    answered: bool,
    /// What was counted so far.
    pub counts: Counts,
}

impl Session {
    /// Starts a registration: the first request to send (at once).
    pub fn start(polling: Polling, label: &'static str) -> (Self, Request) {
        let first = Request::Register { rid: 1 };
        let s = Self {
            polling,
            label,
            last: first.clone(),
            throttled_in_a_row: 0,
            answered: false,
            counts: Counts {
                requests: 1,
                ..Counts::default()
            },
        };
        (s, first)
    }

    /// True once an answer to one of our requests arrived.
    pub fn answered(&self) -> bool {
        self.answered
    }

    fn next(&mut self, wait: Duration, request: Request) -> Step {
        self.counts.retry_wait += wait;
        self.counts.requests += 1;
        self.last = request.clone();
        Step::Send(wait, request)
    }

    /// Takes an answer; says what to do next.
    pub fn on_answer(&mut self, a: Answer<'_>) -> Step {
        if let Some(rid) = a.rid {
            if rid.parse::<u32>().ok() != Some(self.last.rid()) {
                return Step::Ignore;
            }
        }
        self.answered = true;
        let rid = self.last.rid() + 1;
        match a.status {
            200 | 202 => {
                let op: OperationStatus = match serde_json::from_slice(a.body) {
                    Ok(op) => op,
                    Err(e) => {
                        return Step::Done(Err(Failure::target(format!(
                            "malformed response JSON: {e}"
                        ))))
                    }
                };
                if a.status == 200 || op.status != "assigning" {
                    return Step::Done(op.registration_state.ok_or_else(|| {
                        Failure::target("terminal response without registrationState")
                    }));
                }
                self.throttled_in_a_row = 0;
                self.counts.polls += 1;
                let wait = self.polling.after(a.retry_after);
                self.next(
                    wait,
                    Request::Poll {
                        rid,
                        operation_id: op.operation_id,
                    },
                )
            }
            s if s == 429 || s >= 500 => {
                self.counts.throttled += u32::from(s == 429);
                let jitter = rand::thread_rng().gen_range(0.8..1.2);
                let wait = self
                    .polling
                    .throttled(a.retry_after, self.throttled_in_a_row, jitter);
                self.throttled_in_a_row += 1;
                // The same request again, with a fresh $rid.
                let again = self.last.with_rid(rid);
                self.next(wait, again)
            }
            s => {
                let d = ErrorDetailsLenient::parse(a.body);
                Step::Done(Err(Failure::target(format!(
                    "{}{s}: {}",
                    self.label,
                    d.message.as_deref().unwrap_or("error")
                ))
                .with_code(d.error_code)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLLING: Polling = Polling {
        floor: Duration::from_millis(50),
        cap: Duration::from_secs(5),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(10),
    };

    fn answer<'a>(status: u16, rid: &'a str, retry: Option<u32>, body: &'a str) -> Answer<'a> {
        Answer {
            status,
            rid: Some(rid),
            retry_after: retry,
            body: body.as_bytes(),
        }
    }

    #[test]
    fn register_202_poll_200() {
        let (mut s, first) = Session::start(POLLING, "res/");
        assert_eq!(first, Request::Register { rid: 1 });
        let step = s.on_answer(answer(
            202,
            "1",
            Some(3),
            r#"{"operationId":"5.a","status":"assigning"}"#,
        ));
        let Step::Send(wait, Request::Poll { rid, operation_id }) = step else {
            panic!("{step:?}")
        };
        assert_eq!(
            (wait, rid, operation_id.as_str()),
            (Duration::from_secs(3), 2, "5.a")
        );
        // A stray answer (another $rid) changes nothing.
        assert!(matches!(
            s.on_answer(answer(200, "1", None, "{}")),
            Step::Ignore
        ));
        let done = s.on_answer(answer(
            200,
            "2",
            None,
            r#"{"operationId":"5.a","status":"assigned","registrationState":{"registrationId":"d","status":"assigned","assignedHub":"h"}}"#,
        ));
        let Step::Done(Ok(st)) = done else {
            panic!("{done:?}")
        };
        assert_eq!(st.assigned_hub.as_deref(), Some("h"));
        assert_eq!((s.counts.requests, s.counts.polls), (2, 1));
    }

    #[test]
    fn throttled_requests_are_resent_with_a_fresh_rid() {
        let (mut s, _) = Session::start(POLLING, "res/");
        let Step::Send(wait, again) = s.on_answer(answer(429, "1", Some(1), "{}")) else {
            panic!()
        };
        assert_eq!(
            (wait, again),
            (Duration::from_secs(1), Request::Register { rid: 2 })
        );
        // Without retry-after: exponential back-off with jitter.
        let Step::Send(wait, _) = s.on_answer(answer(429, "2", None, "{}")) else {
            panic!()
        };
        assert!(wait >= Duration::from_millis(160) && wait <= Duration::from_millis(240));
        assert_eq!(s.counts.throttled, 2);
        assert_eq!(s.counts.requests, 3);
    }

    #[test]
    fn refusals_and_garbage_are_target_failures() {
        let (mut s, _) = Session::start(POLLING, "res/");
        let Step::Done(Err(f)) = s.on_answer(answer(
            401,
            "1",
            None,
            r#"{"errorCode":401002,"message":"Unauthorized"}"#,
        )) else {
            panic!()
        };
        assert_eq!(f.to_string(), "[target] res/401: Unauthorized");
        assert_eq!(f.code, Some(401_002));
        let (mut s, _) = Session::start(POLLING, "HTTP ");
        let Step::Done(Err(f)) = s.on_answer(Answer {
            status: 200,
            rid: None,
            retry_after: None,
            body: b"{not json",
        }) else {
            panic!()
        };
        assert!(f.message.starts_with("malformed response JSON"), "{f}");
        let (mut s, _) = Session::start(POLLING, "HTTP ");
        let Step::Done(Err(f)) = s.on_answer(Answer {
            status: 200,
            rid: None,
            retry_after: None,
            body: br#"{"operationId":"1","status":"assigned"}"#,
        }) else {
            panic!()
        };
        assert_eq!(f.message, "terminal response without registrationState");
    }
}
