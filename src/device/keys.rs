//! Symmetric-key derivation for enrollment groups (dps-protocol.md §2.1).
//!
//! `deviceKey = base64(HMAC-SHA256(base64decode(groupKey), registrationId))`.
//! The HMAC key schedule is prepared once per group ([`GroupKey::new`]) and cloned per device, so a
//! population of a million devices never re-keys. This module only derives keys; it never prints
//! or logs them (that is the job of `loadtest keys`).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256 as used by every DPS signature.
pub type HmacSha256 = Hmac<Sha256>;

/// A symmetric key could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The key is not valid base64.
    #[error("the key is not valid base64 ({0})")]
    NotBase64(String),
    /// DPS accepts keys of 16 to 64 bytes (dps-protocol.md §2.2, "Key sizes").
    #[error("the key decodes to {0} bytes; DPS symmetric keys are 16 to 64 bytes")]
    BadLength(usize),
}

/// Decodes a base64 symmetric key and checks its length.
pub fn decode_key(key_b64: &str) -> Result<Vec<u8>, KeyError> {
    let bytes = B64
        .decode(key_b64.trim())
        .map_err(|e| KeyError::NotBase64(e.to_string()))?;
    if !(16..=64).contains(&bytes.len()) {
        return Err(KeyError::BadLength(bytes.len()));
    }
    Ok(bytes)
}

/// An enrollment-group key with its HMAC state prepared once.
#[derive(Clone)]
pub struct GroupKey {
    mac: HmacSha256,
}

impl std::fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material, not even in debug output.
        f.write_str("GroupKey(<redacted>)")
    }
}

impl GroupKey {
    /// Prepares the HMAC key schedule from a base64 group key.
    pub fn new(group_key_b64: &str) -> Result<Self, KeyError> {
        let bytes = decode_key(group_key_b64)?;
        let mac = HmacSha256::new_from_slice(&bytes).expect("HMAC accepts keys of any length");
        Ok(Self { mac })
    }

    /// The raw 32-byte derived key for one registration ID.
    pub fn derive_raw(&self, registration_id: &str) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(registration_id.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The base64 device key for one registration ID, as `az iot dps ... compute-device-key` prints it.
    pub fn derive(&self, registration_id: &str) -> String {
        B64.encode(self.derive_raw(registration_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: &str =
        "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA==";

    /// The four correct vectors from `shared/seeds/README.md` (and dps-protocol.md §2.1).
    #[test]
    fn seed_vectors() {
        let g = GroupKey::new(GROUP).unwrap();
        for (id, key) in [
            (
                "breakroom499-contoso-tstrsd-007",
                "JC8F96eayuQwwz+PkE7IzjH2lIAjCUnAa61tDigBnSs=",
            ),
            (
                "mainbuilding167-contoso-hpsd-088",
                "6uejA9PfkQgmYylj8Zerp3kcbeVrGZ172YLa7VSnJzg=",
            ),
            (
                "contoso-toaster-007",
                "NXZgydIn9ntUpXfBsWFfaxJqAYVfgGQsshvA5GboGJI=",
            ),
            (
                "contoso-heatpump-088",
                "NI9dUEI2tga168Qi1U/HKuMmFHewrvaqI1MPTEU1A5w=",
            ),
        ] {
            assert_eq!(g.derive(id), key, "{id}");
        }
    }

    /// The 2020 tutorial printed the 2018 keys for its own IDs; those are wrong.
    #[test]
    fn wrong_published_pair_is_not_reproduced() {
        let g = GroupKey::new(GROUP).unwrap();
        assert_ne!(
            g.derive("contoso-toaster-007"),
            "JC8F96eayuQwwz+PkE7IzjH2lIAjCUnAa61tDigBnSs="
        );
        assert_ne!(
            g.derive("contoso-heatpump-088"),
            "6uejA9PfkQgmYylj8Zerp3kcbeVrGZ172YLa7VSnJzg="
        );
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(matches!(
            GroupKey::new("not base64!"),
            Err(KeyError::NotBase64(_))
        ));
        assert_eq!(GroupKey::new("AAAA").unwrap_err(), KeyError::BadLength(3));
    }

    #[test]
    fn debug_does_not_leak() {
        let g = GroupKey::new(GROUP).unwrap();
        assert_eq!(format!("{g:?}"), "GroupKey(<redacted>)");
    }
}
