//! DPS protocol facts shared by every driver and (later) the emulator: registration statuses,
//! six-digit error codes, the custom-allocation wire types ([`allocation`]) and the rules that turn
//! a webhook answer into a registration result ([`outcome`]).
//!
//! Nothing here does I/O. Everything that is a fact about Azure cites dps-protocol.md; everything
//! that is our choice where the sources are silent says so.

pub mod allocation;
pub mod enrollment;
pub mod json;
pub mod outcome;
pub mod service;
pub mod session;
pub mod wire;

use serde::{Deserialize, Serialize};

/// Six-digit DPS error codes (dps-protocol.md §7).
pub mod codes {
    /// CustomAllocationFailed: the webhook answered with a status other than 200/401/>=429.
    pub const CUSTOM_ALLOCATION_FAILED: u32 = 400_207;
    /// CustomAllocationIotHubNotSpecified: 200 with an empty or null hub.
    pub const CUSTOM_ALLOCATION_HUB_NOT_SPECIFIED: u32 = 400_208;
    /// CustomAllocationUnauthorizedAccess: the webhook answered 401.
    pub const CUSTOM_ALLOCATION_UNAUTHORIZED: u32 = 400_209;
    /// Invalid or expired credentials.
    pub const UNAUTHORIZED: u32 = 401_002;
    /// A throttled request: DPS's own 429 codes are UNCONFIRMED; 429001 is IoT Hub's (our default).
    pub const THROTTLED: u32 = 429_001;
    /// An unknown operation or registration (our choice; DPS's 404 codes are UNCONFIRMED).
    pub const NOT_FOUND: u32 = 404_201;
    /// IoT Hub: the device (or hub) does not exist.
    pub const HUB_DEVICE_NOT_FOUND: u32 = 404_001;
    /// A request over the 96 KB message limit (our choice; UNCONFIRMED).
    pub const TOO_LARGE: u32 = 413_001;
    /// A registration ID DPS does not accept (the code is UNCONFIRMED: 400004 is DPS's
    /// "ArgumentInvalid"; our default).
    pub const INVALID_REGISTRATION_ID: u32 = 400_004;
    /// A request the service cannot read: a malformed body or upgrade (400004, DPS's
    /// "ArgumentInvalid", also our choice here; UNCONFIRMED for the WebSocket route).
    pub const BAD_REQUEST: u32 = 400_004;
}

/// Longest registration ID DPS accepts.
pub const MAX_REGISTRATION_ID: usize = 128;

/// DPS's rule for registration IDs (service-apis.md): 1 to 128 characters, case-insensitive
/// alphanumerics and `-`, `.`, `_`, `:`. The reason when `id` breaks it.
pub fn check_registration_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("the registration ID is empty");
    }
    if id.len() > MAX_REGISTRATION_ID {
        return Err("the registration ID is longer than 128 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'))
    {
        return Err("a registration ID has only letters, digits and `-`, `.`, `_`, `:`");
    }
    Ok(())
}

/// `status` of a registration operation (dps-protocol.md §3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Never sent to non-TPM clients.
    Unassigned,
    /// In progress.
    Assigning,
    /// Terminal: assigned to a hub.
    Assigned,
    /// Terminal: failed with an error code.
    Failed,
    /// Terminal: the enrollment is disabled.
    Disabled,
}

impl Status {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unassigned => "unassigned",
            Status::Assigning => "assigning",
            Status::Assigned => "assigned",
            Status::Failed => "failed",
            Status::Disabled => "disabled",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "unassigned" => Status::Unassigned,
            "assigning" => Status::Assigning,
            "assigned" => Status::Assigned,
            "failed" => Status::Failed,
            "disabled" => Status::Disabled,
            _ => return None,
        })
    }
}

/// A terminal registration result as the device would read it in `registrationState`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Registration {
    /// assigned / failed / disabled.
    pub status: Option<Status>,
    /// `assignedHub`.
    pub assigned_hub: Option<std::sync::Arc<str>>,
    /// `deviceId`.
    pub device_id: Option<String>,
    /// `errorCode` on failure.
    pub error_code: Option<u32>,
    /// `errorMessage` on failure.
    pub error_message: Option<String>,
    /// The initial twin DPS applies on the hub (the webhook's, else the enrollment's).
    pub initial_twin: Option<json::Json>,
    /// `payload` returned by the webhook.
    pub payload: Option<json::Json>,
}

impl Registration {
    /// A copy without its device ID (the hub, twin and payload are shared, not copied).
    fn clone_shared(&self) -> Self {
        Self {
            status: self.status,
            assigned_hub: self.assigned_hub.clone(),
            device_id: None,
            error_code: self.error_code,
            error_message: self.error_message.clone(),
            initial_twin: self.initial_twin.clone(),
            payload: self.payload.clone(),
        }
    }

    /// A failed registration.
    pub fn failed(code: u32, message: impl Into<String>) -> Self {
        Self {
            status: Some(Status::Failed),
            error_code: Some(code),
            error_message: Some(message.into()),
            ..Self::default()
        }
    }

    /// The outcome key used in reports: `assigned`, `failed:400207`, `disabled`.
    pub fn key(&self) -> OutcomeKey {
        OutcomeKey {
            status: self.status.unwrap_or(Status::Unassigned),
            code: self.error_code,
        }
    }
}

/// A compact, hashable outcome key; rendered as `assigned` or `failed:400207`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutcomeKey {
    /// Terminal status.
    pub status: Status,
    /// Error code, if any.
    pub code: Option<u32>,
}

impl OutcomeKey {
    /// Parses `assigned`, `failed:400207`, … (the report keys).
    pub fn parse(s: &str) -> Option<Self> {
        let (status, code) = match s.split_once(':') {
            Some((st, c)) => (st, Some(c.parse().ok()?)),
            None => (s, None),
        };
        Some(Self {
            status: Status::parse(status)?,
            code,
        })
    }
}

impl std::fmt::Display for OutcomeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "{}:{code}", self.status.as_str()),
            None => f.write_str(self.status.as_str()),
        }
    }
}
