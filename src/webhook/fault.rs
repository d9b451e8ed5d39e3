//! Fault injection for the reference webhook, so users can rehearse every row of the seed
//! troubleshooting table: added latency, a status code, a null/empty/unlinked hub, a malformed
//! body; for a whole class, a deterministic fraction of it, or only a device's first N calls.
//!
//! Pure: deciding whether and how a request is faulted. Applying the delay is the server's job.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::policy::Reply;
use crate::device::template::IdTemplate;

/// What the faulted webhook answers instead of the policy's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// This status, with this body (empty when `None`).
    Status(u16, Option<String>),
    /// 200 with `"iotHubHostName": null`.
    NullHub,
    /// 200 with `"iotHubHostName": ""`.
    EmptyHub,
    /// 200 with a hub that is not one of `linkedHubs`.
    UnlinkedHub,
    /// 200 with a truncated JSON body.
    Malformed,
}

impl Action {
    /// Names accepted for `hub = …` in a fault.
    pub const HUB_NAMES: [&'static str; 3] = ["null", "empty", "unlinked"];

    /// The reply this action produces.
    pub fn reply(&self) -> Reply {
        match self {
            Action::Status(status, body) => Reply {
                status: *status,
                content_type: body.as_ref().map(|_| "text/plain; charset=utf-8"),
                body: body.clone().unwrap_or_default().into_bytes(),
            },
            Action::NullHub => Reply::json(200, r#"{"iotHubHostName":null}"#.into()),
            Action::EmptyHub => Reply::json(200, r#"{"iotHubHostName":""}"#.into()),
            Action::UnlinkedHub => Reply::json(
                200,
                r#"{"iotHubHostName":"not-linked-hub.azure-devices.net"}"#.into(),
            ),
            Action::Malformed => Reply::json(200, r#"{"iotHubHostName": "#.into()),
        }
    }
}

/// A fault: an optional delay and an optional replacement answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Added latency before answering.
    pub delay: Option<Duration>,
    /// Replacement answer; `None` keeps the policy's answer (a pure delay fault).
    pub action: Option<Action>,
    /// Share of the matching devices affected, chosen deterministically by registration ID.
    pub fraction: f64,
    /// Only each device's first N calls are faulted (e.g. 429 twice, then the normal answer).
    pub first_calls: Option<u32>,
}

/// A fault applied to the registration IDs of one template (a scenario class).
#[derive(Debug, Clone)]
pub struct Rule {
    /// Which IDs.
    pub ids: IdTemplate,
    /// What to do.
    pub fault: Fault,
}

impl Rule {
    /// The fault for this ID, if the rule selects it (ignoring `first_calls`).
    pub fn selects(&self, registration_id: &str) -> bool {
        self.ids.matches(registration_id).is_some()
            && in_fraction(registration_id, self.fault.fraction)
    }
}

/// Deterministic selection: the first 8 bytes of SHA-256(id) as a fraction of `u64::MAX`.
pub(crate) fn in_fraction(id: &str, fraction: f64) -> bool {
    if fraction >= 1.0 {
        return true;
    }
    let h = Sha256::digest(id.as_bytes());
    let x = u64::from_be_bytes(h[..8].try_into().expect("8 bytes"));
    (x as f64 / u64::MAX as f64) < fraction
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_is_deterministic_and_close() {
        let ids: Vec<String> = (0..10_000).map(|n| format!("dev{n}")).collect();
        let hit = ids.iter().filter(|i| in_fraction(i, 0.25)).count();
        assert!((2300..2700).contains(&hit), "{hit}");
        assert_eq!(ids.iter().filter(|i| in_fraction(i, 0.25)).count(), hit);
        assert!(ids.iter().all(|i| in_fraction(i, 1.0)));
        assert!(!ids.iter().any(|i| in_fraction(i, 0.0)));
    }

    #[test]
    fn rule_matches_its_template_only() {
        let r = Rule {
            ids: IdTemplate::parse("lobby{n}-x").unwrap(),
            fault: Fault {
                delay: None,
                action: Some(Action::NullHub),
                fraction: 1.0,
                first_calls: None,
            },
        };
        assert!(r.selects("lobby7-x"));
        assert!(!r.selects("lobby7-y"));
        assert_eq!(Action::Status(401, None).reply().status, 401);
        assert!(
            serde_json::from_slice::<serde_json::Value>(&Action::Malformed.reply().body).is_err()
        );
    }
}
