//! Who a device is: its SAS token checked the way DPS does (dps-protocol.md §2.2: over the literal
//! `sr`, any field order, `skn` optional, expiry with skew), its enrollment resolved from the
//! enrollments as they stand, key pinning, and how a refusal is answered. Decides nothing about
//! allocation.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::enrollments::Live;
use super::{log_safe, now_rfc3339, unix_now, Emulator, Reply};
use crate::dps::codes;
use crate::dps::enrollment::WhichKey;

/// An authenticated device.
#[derive(Clone)]
pub struct Device {
    /// Registration ID as the device spells it.
    pub registration_id: String,
    pub(super) secondary: bool,
    /// The enrollments it authenticated against.
    pub(super) live: Arc<Live>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("registration_id", &self.registration_id)
            .field("secondary", &self.secondary)
            .finish_non_exhaustive()
    }
}

/// Why a device was refused (logged; the wire answer is CONNACK 5 or HTTP 401 + 401002).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The ID scope is not this emulator's.
    #[error("unknown ID scope `{0}`")]
    Scope(String),
    /// No enrollment covers the registration ID.
    #[error("no enrollment for `{0}`")]
    Unknown(String),
    /// The token is missing or malformed.
    #[error("malformed SAS token: {0}")]
    Malformed(String),
    /// `se` is in the past (beyond the skew).
    #[error("the SAS token has expired")]
    Expired,
    /// `sr` is not `{scope}/registrations/{id}`.
    #[error("the SAS token is for `{0}`")]
    Resource(String),
    /// No key of the enrollment signed it.
    #[error("the SAS signature does not match the enrollment's keys")]
    Signature,
    /// Key pinning: the device registered with the other key before.
    #[error("the device registered with its {0} key before (key pinning)")]
    Pinned(&'static str),
    /// The enrollment's allocation cannot run (e.g. custom without a webhook).
    #[error("{0}")]
    Config(String),
    /// Not a registration ID DPS accepts.
    #[error("{0}")]
    InvalidId(&'static str),
}

impl Emulator {
    /// Authenticates a device by its SAS token (dps-protocol.md §2.2's algorithm).
    pub fn authenticate(
        &self,
        id_scope: &str,
        registration_id: &str,
        token: Option<&str>,
    ) -> Result<Device, AuthError> {
        let r = self.auth(id_scope, registration_id, token);
        if let Err(e) = &r {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            if self.log {
                eprintln!(
                    "{} {} refused: {}",
                    now_rfc3339(),
                    log_safe(registration_id),
                    log_safe(&e.to_string())
                );
            }
        }
        r
    }

    fn auth(
        &self,
        id_scope: &str,
        registration_id: &str,
        token: Option<&str>,
    ) -> Result<Device, AuthError> {
        crate::dps::check_registration_id(registration_id).map_err(AuthError::InvalidId)?;
        if !id_scope.eq_ignore_ascii_case(&self.opts.id_scope) {
            return Err(AuthError::Scope(id_scope.to_owned()));
        }
        let token = token.ok_or_else(|| AuthError::Malformed("no token".into()))?;
        let t =
            crate::sas::SasToken::parse(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        if t.se.saturating_add(self.opts.sas_skew.as_secs()) < unix_now() {
            return Err(AuthError::Expired);
        }
        let expected = crate::sas::registration_resource(id_scope, registration_id);
        let resource = t.resource();
        if !resource.eq_ignore_ascii_case(&expected) {
            return Err(AuthError::Resource(resource));
        }
        let lc = registration_id.to_ascii_lowercase();
        let live = self.live();
        let enrollee = live
            .enrollment
            .resolve(registration_id)
            .ok_or_else(|| AuthError::Unknown(registration_id.to_owned()))?;
        let secondary_used = match enrollee.which_key(registration_id, |k| t.verify(k)) {
            Some(w) => w == WhichKey::Secondary,
            None => return Err(AuthError::Signature),
        };
        if self.opts.key_pinning {
            let st = self.state.lock().expect("state lock");
            if let Some(pinned) = st.registrations.get(&lc).and_then(|r| r.secondary) {
                if pinned != secondary_used {
                    return Err(AuthError::Pinned(if pinned {
                        "secondary"
                    } else {
                        "primary"
                    }));
                }
            }
        }
        Ok(Device {
            registration_id: registration_id.to_owned(),
            secondary: secondary_used,
            live: live.clone(),
        })
    }

    /// Auth failure as an HTTPS/MQTT-response reply.
    pub fn unauthorized() -> Reply {
        Reply::error(401, codes::UNAUTHORIZED, "Unauthorized", None)
    }

    /// The HTTPS answer to a refused device: 400 + 400004 for an ID DPS does not accept, else
    /// 401 + 401002 (the reason is logged, not sent).
    pub fn refusal(e: &AuthError) -> Reply {
        match e {
            AuthError::InvalidId(why) => {
                Reply::error(400, codes::INVALID_REGISTRATION_ID, why, None)
            }
            _ => Self::unauthorized(),
        }
    }
}
