//! Shared-access-signature tokens (dps-protocol.md §2.2, §2.3 and §9): build, parse, verify.
//!
//! Pure functions only. The signature is always computed over the `sr` value exactly as it appears
//! in the token, because real SDKs send it upper-case escaped, lower-case escaped or raw, and real
//! DPS accepts all three. Used by the device drivers (build) and the emulator (parse + verify).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::Mac;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::device::keys::{decode_key, HmacSha256, KeyError};

/// Characters left unescaped by `urllib.parse.quote(s, safe="")` / `WebUtility.UrlEncode`.
const URL_SAFE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// How the resource URI is written in `sr` (each variant is what one family of SDKs sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrEncoding {
    /// `%2F` (Python, C#); the default of our drivers.
    Upper,
    /// `%2f` (C, Embedded-C).
    Lower,
    /// Not encoded at all (Node).
    Raw,
}

/// Percent-encodes like `urllib.parse.quote(s, safe="")` (upper-case hex).
pub fn url_encode(s: &str) -> String {
    utf8_percent_encode(s, URL_SAFE).to_string()
}

/// Writes a resource URI the way one SDK family does.
pub fn encode_sr(resource: &str, encoding: SrEncoding) -> String {
    match encoding {
        SrEncoding::Upper => url_encode(resource),
        SrEncoding::Lower => lower_hex_escapes(&url_encode(resource)),
        SrEncoding::Raw => resource.to_owned(),
    }
}

fn lower_hex_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            for h in chars.by_ref().take(2) {
                out.push(h.to_ascii_lowercase());
            }
        }
    }
    out
}

/// `base64(HMAC-SHA256(key, sr + "\n" + se))`.
pub fn sign(key: &[u8], sr: &str, se: u64) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(sr.as_bytes());
    mac.update(b"\n");
    mac.update(se.to_string().as_bytes());
    B64.encode(mac.finalize().into_bytes())
}

/// The DPS resource URI of one registration: `{idScope}/registrations/{registrationId}`.
pub fn registration_resource(id_scope: &str, registration_id: &str) -> String {
    format!("{id_scope}/registrations/{registration_id}")
}

/// Builds a device SAS token: `SharedAccessSignature sr=…&sig=…&se=…[&skn=…]`.
pub fn device_token(
    id_scope: &str,
    registration_id: &str,
    device_key_b64: &str,
    expiry_unix: u64,
    encoding: SrEncoding,
    key_name: Option<&str>,
) -> Result<String, KeyError> {
    let key = decode_key(device_key_b64)?;
    Ok(device_token_with_key(
        id_scope,
        registration_id,
        &key,
        expiry_unix,
        encoding,
        key_name,
    ))
}

/// [`device_token`] with the device key already decoded (drivers derive it as raw bytes).
pub fn device_token_with_key(
    id_scope: &str,
    registration_id: &str,
    device_key: &[u8],
    expiry_unix: u64,
    encoding: SrEncoding,
    key_name: Option<&str>,
) -> String {
    let sr = encode_sr(&registration_resource(id_scope, registration_id), encoding);
    token(device_key, &sr, expiry_unix, key_name)
}

/// Builds an IoT Hub service token for a hub host name (dps-protocol.md §9).
pub fn service_token(
    host: &str,
    policy: &str,
    key_b64: &str,
    expiry_unix: u64,
) -> Result<String, KeyError> {
    let key = decode_key(key_b64)?;
    Ok(token(&key, &url_encode(host), expiry_unix, Some(policy)))
}

/// Checks a service SAS (IoT Hub registry and twins, the DPS service API): `sr` is `host`, `skn`
/// is `policy`, not expired at `now` (with `skew` seconds of grace), signed with `key_b64`. The
/// error says which check failed.
pub fn verify_service_token(
    token: &str,
    host: &str,
    policy: &str,
    key_b64: &str,
    now: u64,
    skew: u64,
) -> Result<(), &'static str> {
    let t = SasToken::parse(token).map_err(|_| "not a SharedAccessSignature token")?;
    if t.skn.as_deref() != Some(policy) {
        return Err("unknown shared access policy");
    }
    if !t.resource().eq_ignore_ascii_case(host) {
        return Err("the token is for another service");
    }
    if t.se.saturating_add(skew) < now {
        return Err("the token has expired");
    }
    let key = decode_key(key_b64).map_err(|_| "bad key")?;
    if !t.verify(&key) {
        return Err("the signature does not match");
    }
    Ok(())
}

fn token(key: &[u8], sr: &str, se: u64, skn: Option<&str>) -> String {
    let sig = url_encode(&sign(key, sr, se));
    match skn {
        Some(skn) => format!("SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn={skn}"),
        None => format!("SharedAccessSignature sr={sr}&sig={sig}&se={se}"),
    }
}

/// A SAS token could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SasError {
    /// The `SharedAccessSignature ` prefix is missing.
    #[error("not a SharedAccessSignature token")]
    NoPrefix,
    /// A required field is missing.
    #[error("the token has no `{0}` field")]
    Missing(&'static str),
    /// `se` is not an integer.
    #[error("`se` is not a unix time in seconds")]
    BadExpiry,
}

/// A parsed token; `sr` is kept exactly as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SasToken {
    /// The resource URI as it appears in the token.
    pub sr_raw: String,
    /// The URL-decoded signature (base64).
    pub sig: String,
    /// The expiry as written (signed verbatim).
    pub se: u64,
    /// The optional key name.
    pub skn: Option<String>,
}

impl SasToken {
    /// Parses a token; fields may come in any order and `skn` is optional.
    pub fn parse(token: &str) -> Result<Self, SasError> {
        let rest = token
            .trim()
            .strip_prefix("SharedAccessSignature ")
            .ok_or(SasError::NoPrefix)?;
        let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
        for pair in rest.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "sr" => sr = Some(v.to_owned()),
                "sig" => sig = Some(percent_decode_str(v).decode_utf8_lossy().into_owned()),
                "se" => se = Some(v.parse::<u64>().map_err(|_| SasError::BadExpiry)?),
                "skn" => skn = Some(v.to_owned()),
                _ => {}
            }
        }
        Ok(Self {
            sr_raw: sr.ok_or(SasError::Missing("sr"))?,
            sig: sig.ok_or(SasError::Missing("sig"))?,
            se: se.ok_or(SasError::Missing("se"))?,
            skn,
        })
    }

    /// The resource URI decoded, for comparison with the expected resource.
    pub fn resource(&self) -> String {
        percent_decode_str(&self.sr_raw)
            .decode_utf8_lossy()
            .into_owned()
    }

    /// True when the signature matches `key` (constant-time compare via `Mac::verify_slice`).
    pub fn verify(&self, key: &[u8]) -> bool {
        let Ok(sig) = B64.decode(&self.sig) else {
            return false;
        };
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
        mac.update(self.sr_raw.as_bytes());
        mac.update(b"\n");
        mac.update(self.se.to_string().as_bytes());
        mac.verify_slice(&sig).is_ok()
    }
}

/// `(HostName, SharedAccessKeyName, SharedAccessKey)` of a connection string (split on `;`, each
/// part at its first `=`: keys end in `=` padding).
pub fn parse_connection_string(cs: &str) -> Option<(String, String, String)> {
    let mut host = None;
    let mut name = None;
    let mut key = None;
    for part in cs.split(';') {
        let (k, v) = part.split_once('=')?;
        match k.trim() {
            "HostName" => host = Some(v.trim().to_owned()),
            "SharedAccessKeyName" => name = Some(v.trim().to_owned()),
            "SharedAccessKey" => key = Some(v.trim().to_owned()),
            _ => {}
        }
    }
    Some((host?, name?, key?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "NXZgydIn9ntUpXfBsWFfaxJqAYVfgGQsshvA5GboGJI=";
    const SE: u64 = 1_893_456_000;

    /// dps-protocol.md §2.3: the three `sr` encodings and their signatures.
    #[test]
    fn device_vectors() {
        let key = decode_key(KEY).unwrap();
        for (enc, sr, sig) in [
            (
                SrEncoding::Upper,
                "0ne00000A0A%2Fregistrations%2Fcontoso-toaster-007",
                "/mA5Cnw3dLqNMEP8YUp+TqiU/mn8z+Ak8YumbUA1X8A=",
            ),
            (
                SrEncoding::Lower,
                "0ne00000A0A%2fregistrations%2fcontoso-toaster-007",
                "NzYBe6+2sh7vdam8FENhDmnwWDQth8+4i4HGzz6AK/o=",
            ),
            (
                SrEncoding::Raw,
                "0ne00000A0A/registrations/contoso-toaster-007",
                "xkZl9S7dyQeKKNqg3I7waxB99btBUt34S/YHLMt391M=",
            ),
        ] {
            assert_eq!(
                encode_sr("0ne00000A0A/registrations/contoso-toaster-007", enc),
                sr
            );
            assert_eq!(sign(&key, sr, SE), sig);
        }
    }

    #[test]
    fn full_upper_case_token() {
        let t = device_token(
            "0ne00000A0A",
            "contoso-toaster-007",
            KEY,
            SE,
            SrEncoding::Upper,
            Some("registration"),
        )
        .unwrap();
        assert_eq!(t, "SharedAccessSignature sr=0ne00000A0A%2Fregistrations%2Fcontoso-toaster-007&sig=%2FmA5Cnw3dLqNMEP8YUp%2BTqiU%2Fmn8z%2BAk8YumbUA1X8A%3D&se=1893456000&skn=registration");
    }

    /// dps-protocol.md §9 service SAS vector, and the IoT Hub token printed in the HTTPS docs (§2.3).
    #[test]
    fn service_vectors() {
        let t = service_token(
            "myhub.azure-devices.net",
            "iothubowner",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            SE,
        )
        .unwrap();
        assert_eq!(t, "SharedAccessSignature sr=myhub.azure-devices.net&sig=0erPtW%2BUZwK56IPujRFtwej1EwQMsCuQYucBqMXo%2FLU%3D&se=1893456000&skn=iothubowner");
    }

    #[test]
    fn parse_and_verify_any_order_and_encoding() {
        let key = decode_key(KEY).unwrap();
        for enc in [SrEncoding::Upper, SrEncoding::Lower, SrEncoding::Raw] {
            let t = device_token("0ne00000A0A", "contoso-toaster-007", KEY, SE, enc, None).unwrap();
            let p = SasToken::parse(&t).unwrap();
            assert!(p.verify(&key));
            assert_eq!(
                p.resource(),
                "0ne00000A0A/registrations/contoso-toaster-007"
            );
            assert_eq!(p.skn, None);
        }
        // skn before sig, as one docs user sent it.
        let p = SasToken::parse("SharedAccessSignature sr=a%2Fb&skn=registration&sig=x%3D&se=5")
            .unwrap();
        assert_eq!(
            (p.sr_raw.as_str(), p.sig.as_str(), p.se, p.skn.as_deref()),
            ("a%2Fb", "x=", 5, Some("registration"))
        );
        assert!(!p.verify(&key));
        assert_eq!(SasToken::parse("sr=a"), Err(SasError::NoPrefix));
        assert_eq!(
            SasToken::parse("SharedAccessSignature sr=a&se=1"),
            Err(SasError::Missing("sig"))
        );
        assert_eq!(
            SasToken::parse("SharedAccessSignature sr=a&sig=b&se=x"),
            Err(SasError::BadExpiry)
        );
    }
}
