//! TLS for our servers (the emulator's listeners, `webhook serve --tls-dir`): a development CA and
//! a server certificate generated with rcgen on first start (SAN `localhost`, `127.0.0.1`, `::1`),
//! kept in a directory and reused on later starts, or a user-supplied PEM certificate and key;
//! and the client trust of https webhooks (Mozilla roots plus an optional private CA). The CA certificate is `ca.pem` in
//! that directory: devices trust it (SDK-Py `server_verification_cert`, `SSL_CERT_FILE`).
//!
//! rustls (ring) with TLS 1.2 and 1.3. SNI is not required and an IP literal is tolerated: the
//! server has one certificate and never selects by name. `chain_cache` is the devices' verifier.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub mod chain_cache;

/// TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing the files.
    #[error("{}: {source}", path.display())]
    Io {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Generating the certificates.
    #[error("generating the development certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file that does not hold what it should.
    #[error("{}: {what}", path.display())]
    Pem {
        /// Which file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// rustls refused the certificate or key.
    #[error("the certificate and key do not form a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Generated (once) into this directory.
    Generated(PathBuf),
    /// A PEM certificate chain and key supplied by the user.
    Files {
        /// Certificate chain (leaf first).
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
}

/// The server side of TLS plus the CA path to show users.
#[derive(Debug, Clone)]
pub struct Tls {
    /// For `tokio_rustls::TlsAcceptor`.
    pub config: Arc<rustls::ServerConfig>,
    /// The CA certificate devices should trust (generated mode), or the user's certificate.
    pub ca: PathBuf,
}

/// A client configuration that trusts the Mozilla roots and, with `extra`, the certificates of
/// that PEM file too (a private CA). rustls with ring, TLS 1.2 and 1.3.
pub fn client_config(extra: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra {
        let pem = |what: String| TlsError::Pem {
            path: path.to_owned(),
            what,
        };
        let mut added = 0;
        for c in CertificateDer::pem_file_iter(path).map_err(|e| pem(e.to_string()))? {
            let c = c.map_err(|e| pem(e.to_string()))?;
            roots.add(c).map_err(|e| pem(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(pem("holds no PEM certificate".into()));
        }
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The default directory: `$XDG_CACHE_HOME/loadtest/dps-tls` or `~/.cache/loadtest/dps-tls`.
pub fn default_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("loadtest")
        .join("dps-tls")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Loads or generates the certificates and builds the rustls configuration.
pub fn load(source: &Source) -> Result<Tls, TlsError> {
    let (cert_path, key_path, ca) = match source {
        Source::Files { cert, key } => (cert.clone(), key.clone(), cert.clone()),
        Source::Generated(dir) => {
            let files = (
                dir.join("server.pem"),
                dir.join("server-key.pem"),
                dir.join("ca.pem"),
            );
            if !(files.0.exists() && files.1.exists() && files.2.exists()) {
                generate_once(dir)?;
            }
            files
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| TlsError::Pem {
            path: cert_path.clone(),
            what: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert_path.clone(),
            what: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: cert_path,
            what: "no CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| TlsError::Pem {
        path: key_path.clone(),
        what: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // No resumption is offered: the emulator's clients are one-shot devices, and tickets nobody
    // uses cost two encrypted messages per handshake. A client that asks gets a full handshake.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Tls {
        config: Arc::new(config),
        ca,
    })
}

/// Generates the set into a private directory and moves it into place with one rename, so
/// processes starting at the same moment never mix one's CA with another's server certificate:
/// the first rename wins and the others use its files.
fn generate_once(dir: &Path) -> Result<(), TlsError> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp = parent.join(format!(
        ".{}.{}-{:x}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("tls"),
        std::process::id(),
        rand::random::<u64>()
    ));
    generate(&tmp)?;
    if std::fs::rename(&tmp, dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another process's complete set won the rename: use it. An incomplete directory left
        // by a crash is replaced.
        if !dir.join("ca.pem").exists() {
            let _ = std::fs::remove_dir_all(dir);
            generate(&tmp)?;
            if std::fs::rename(&tmp, dir).is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
    }
    Ok(())
}

/// Writes `ca.pem`, `ca-key.pem`, `server.pem` (leaf then CA) and `server-key.pem` into `dir`.
pub fn generate(dir: &Path) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "loadtest DPS emulator development CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, &ca_key);
    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server = params.signed_by(&server_key, &issuer)?;
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(io(&p))
    };
    // Private keys are created readable by their owner only (0600), never world-readable.
    let write_private = |name: &str, text: String| {
        let p = dir.join(name);
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        use std::io::Write as _;
        o.open(&p)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(io(&p))
    };
    write_private("ca-key.pem", ca_key.serialize_pem())?;
    write_private("server-key.pem", server_key.serialize_pem())?;
    write("server.pem", format!("{}{}", server.pem(), ca_cert.pem()))?;
    // Last: its presence marks a complete set.
    write("ca.pem", ca_cert.pem())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load(&Source::Generated(dir.path().to_owned())).unwrap();
        let ca = std::fs::read(&a.ca).unwrap();
        let b = load(&Source::Generated(dir.path().to_owned())).unwrap();
        assert_eq!(std::fs::read(&b.ca).unwrap(), ca, "the CA is reused");
        assert!(String::from_utf8(ca)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        #[cfg(unix)]
        for key in ["ca-key.pem", "server-key.pem"] {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key} is private");
        }
    }
}
