//! A server-certificate verifier that remembers the chains it has verified, for a generator
//! whose thousands of devices all meet the same few server certificates. A chain seen before
//! (byte-identical certificates, the same server name and OCSP response) that was valid both when
//! it was checked and `HOLD` later is accepted again until then without re-checking it:
//! validity is an interval and no revocation list is consulted, so that is the answer the
//! full check would give. The handshake's own signature (CertificateVerify, the proof that the
//! server holds the key) is checked on every connection; nothing the server does or sees
//! changes. This is what browsers' certificate-verification caches do; rustls has none and no
//! crate offers one, hence this file.
//!
//! It must not cache a failure, a chain that expires within `HOLD`, or anything keyed on less
//! than the full bytes.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// How long a verified chain is accepted without checking it again.
pub const HOLD: Duration = Duration::from_secs(60);

/// Distinct chains remembered at most (a fleet's endpoint presents one or a few).
const CAPACITY: usize = 32;

/// One verified chain and the window it is accepted in.
#[derive(Debug)]
struct Verified {
    name: ServerName<'static>,
    chain: Vec<Vec<u8>>,
    ocsp: Vec<u8>,
    from: u64,
    until: u64,
}

impl Verified {
    fn matches(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
    ) -> bool {
        &self.name == name
            && self.ocsp == ocsp
            && self.chain.len() == intermediates.len() + 1
            && std::iter::once(end_entity)
                .chain(intermediates)
                .zip(&self.chain)
                .all(|(c, v)| c.as_ref() == v.as_slice())
    }
}

/// Wraps a verifier (rustls's WebPKI one) and remembers what it accepted.
#[derive(Debug)]
pub struct ChainCache {
    inner: Arc<dyn ServerCertVerifier>,
    verified: RwLock<Vec<Verified>>,
    full_checks: std::sync::atomic::AtomicU64,
}

impl ChainCache {
    /// Remembers what `inner` accepts.
    pub fn new(inner: Arc<dyn ServerCertVerifier>) -> Self {
        Self {
            inner,
            verified: RwLock::new(Vec::new()),
            full_checks: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many chains were checked in full (the rest were remembered).
    pub fn full_checks(&self) -> u64 {
        self.full_checks.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl ServerCertVerifier for ChainCache {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let secs = now.as_secs();
        let verified = self.verified.read().unwrap_or_else(|p| p.into_inner());
        if verified.iter().any(|v| {
            (v.from..=v.until).contains(&secs)
                && v.matches(end_entity, intermediates, server_name, ocsp_response)
        }) {
            return Ok(ServerCertVerified::assertion());
        }
        drop(verified);
        self.full_checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ok = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let until = secs.saturating_add(HOLD.as_secs());
        let later = UnixTime::since_unix_epoch(Duration::from_secs(until));
        if self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, later)
            .is_ok()
        {
            let mut verified = self.verified.write().unwrap_or_else(|p| p.into_inner());
            verified.retain(|v| v.until >= secs);
            if verified.len() >= CAPACITY {
                verified.remove(0);
            }
            verified.push(Verified {
                name: server_name.to_owned(),
                chain: std::iter::once(end_entity)
                    .chain(intermediates)
                    .map(|c| c.to_vec())
                    .collect(),
                ocsp: ocsp_response.to_vec(),
                from: secs,
                until,
            });
        }
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    struct Pki {
        ca: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
    }

    fn pki() -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap().der().clone();
        Pki {
            ca,
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(pki: &Pki, lifetime: time::Duration) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = time::OffsetDateTime::now_utc() + lifetime;
        params.signed_by(&key, &pki.issuer).unwrap().der().clone()
    }

    fn cache(pki: &Pki) -> ChainCache {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca.clone()).unwrap();
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        ChainCache::new(inner)
    }

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(secs))
    }

    fn name(n: &str) -> ServerName<'static> {
        ServerName::try_from(n.to_owned()).unwrap()
    }

    #[test]
    fn a_verified_chain_is_remembered_for_its_window_only() {
        let pki = pki();
        let v = cache(&pki);
        let cert = leaf(&pki, time::Duration::days(1));
        let chain = [pki.ca.clone()];
        let now = UnixTime::now().as_secs();
        let check = |t: u64| v.verify_server_cert(&cert, &chain, &name("localhost"), &[], at(t));
        check(now).unwrap();
        check(now + 1).unwrap();
        check(now + HOLD.as_secs()).unwrap();
        assert_eq!(v.full_checks(), 1, "remembered within the window");
        check(now + HOLD.as_secs() + 1).unwrap();
        assert_eq!(v.full_checks(), 2, "checked again after it");
        check(now - 1).unwrap();
        assert_eq!(v.full_checks(), 3, "and before it (the clock went back)");
        // The same certificate without its intermediate, or with an OCSP response, is another
        // chain.
        v.verify_server_cert(&cert, &chain, &name("localhost"), b"ocsp", at(now))
            .unwrap();
        v.verify_server_cert(&cert, &[], &name("localhost"), &[], at(now))
            .unwrap();
        assert_eq!(v.full_checks(), 5);
    }

    #[test]
    fn failures_other_names_and_other_certificates_are_checked_in_full() {
        let pki = pki();
        let v = cache(&pki);
        let chain = [pki.ca.clone()];
        let now = UnixTime::now();
        let a = leaf(&pki, time::Duration::days(1));
        let b = leaf(&pki, time::Duration::days(1));
        v.verify_server_cert(&a, &chain, &name("localhost"), &[], now)
            .unwrap();
        v.verify_server_cert(&b, &chain, &name("localhost"), &[], now)
            .unwrap();
        assert_eq!(v.full_checks(), 2, "another certificate of the same CA");
        for _ in 0..2 {
            let e = v
                .verify_server_cert(&a, &chain, &name("elsewhere.example"), &[], now)
                .unwrap_err();
            assert!(matches!(e, rustls::Error::InvalidCertificate(_)), "{e:?}");
        }
        assert_eq!(v.full_checks(), 4, "a refusal is never remembered");
        let stranger = self::pki();
        let c = leaf(&stranger, time::Duration::days(1));
        for _ in 0..2 {
            assert!(v
                .verify_server_cert(
                    &c,
                    std::slice::from_ref(&stranger.ca),
                    &name("localhost"),
                    &[],
                    now
                )
                .is_err());
        }
        assert_eq!(v.full_checks(), 6, "an untrusted chain, twice");
    }

    #[test]
    fn a_chain_expiring_within_the_window_is_not_remembered() {
        let pki = pki();
        let v = cache(&pki);
        let cert = leaf(&pki, time::Duration::seconds(HOLD.as_secs() as i64 / 2));
        let chain = [pki.ca.clone()];
        let now = UnixTime::now();
        for _ in 0..3 {
            v.verify_server_cert(&cert, &chain, &name("localhost"), &[], now)
                .unwrap();
        }
        assert_eq!(v.full_checks(), 3);
        let later = at(now.as_secs() + HOLD.as_secs());
        assert!(
            v.verify_server_cert(&cert, &chain, &name("localhost"), &[], later)
                .is_err(),
            "expired by then"
        );
    }
}
