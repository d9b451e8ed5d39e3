//! [`Reply`]: the emulator's answer to a device request, independent of transport. The HTTPS
//! side turns it into a status, headers and body; the MQTT side into a response topic and payload.

use super::{now_rfc3339, random_id};
use crate::dps::wire::ErrorDetails;

/// An answer to a device request, whatever the transport.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status (also the MQTT response topic's status).
    pub status: u16,
    /// JSON body.
    pub body: Vec<u8>,
    /// `retry-after` seconds (202 and 429).
    pub retry_after: Option<u32>,
}

impl Reply {
    pub(super) fn json(status: u16, v: &impl serde::Serialize, retry_after: Option<u32>) -> Self {
        Self {
            status,
            body: serde_json::to_vec(v).expect("wire types serialise"),
            retry_after,
        }
    }

    /// `ProvisioningServiceErrorDetails` with a fresh tracking ID.
    pub fn error(status: u16, code: u32, message: &str, retry_after: Option<u32>) -> Self {
        Self::json(
            status,
            &ErrorDetails {
                error_code: code,
                tracking_id: random_id(),
                message: message.to_owned(),
                timestamp_utc: now_rfc3339(),
            },
            retry_after,
        )
    }
}
