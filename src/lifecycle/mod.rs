//! A load test's lifecycle around the run, against the service side of DPS and IoT Hub:
//! `loadtest setup` creates or updates the scenario's enrollments ([`setup`]) and
//! `loadtest cleanup` deletes what its devices left behind ([`cleanup`]). This file holds what
//! both use: the service credentials (connection strings → SAS per request) and one HTTPS client
//! that can be pointed at the emulator (`--endpoint`, keeping each service's host name in `Host`
//! and in the SAS) and trust a private CA. Shapes come from [`crate::dps::service`].

pub(crate) mod cleanup;
pub(crate) mod setup;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Lifetime of each request's SAS token.
const TTL: u64 = 900;

/// Why setup or cleanup stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LifecycleError {
    /// A connection string, flag or scenario value is missing or malformed.
    #[error("{0}")]
    Config(String),
    /// The service could not be reached.
    #[error("{host}: {message}")]
    Connection {
        /// The service's host name.
        host: String,
        /// What failed.
        message: String,
    },
    /// The service answered with an error.
    #[error("{method} {path} on {host}: HTTP {status}: {body}")]
    Status {
        /// Method.
        method: String,
        /// Path (no query).
        path: String,
        /// The service's host name.
        host: String,
        /// Status.
        status: u16,
        /// Its body (error JSON).
        body: String,
    },
    /// A progress file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A service's credentials from its connection string.
#[derive(Clone)]
pub(crate) struct Credentials {
    /// `HostName`.
    pub host: String,
    policy: String,
    key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("host", &self.host)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Parses `HostName=…;SharedAccessKeyName=…;SharedAccessKey=…` (the key is never shown).
    pub(crate) fn parse(cs: &str, what: &str) -> Result<Self, LifecycleError> {
        let (host, policy, key) = crate::sas::parse_connection_string(cs).ok_or_else(|| {
            LifecycleError::Config(format!(
                "{what} is not HostName=…;SharedAccessKeyName=…;SharedAccessKey=…"
            ))
        })?;
        Ok(Self { host, policy, key })
    }

    fn token(&self) -> Result<String, LifecycleError> {
        let se = crate::emulator::unix_now() + TTL;
        crate::sas::service_token(&self.host, &self.policy, &self.key, se)
            .map_err(|e| LifecycleError::Config(format!("the {} key: {e}", self.host)))
    }
}

/// One answer.
#[derive(Debug)]
pub(crate) struct Answer {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: hyper::HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// The HTTPS client of the service calls.
pub(crate) struct ServiceClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `host:port` every call connects to instead of the service's host name (the emulator).
    endpoint: Option<String>,
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl ServiceClient {
    /// A client trusting the Mozilla roots and `ca`; with `endpoint`, every call goes there.
    pub(crate) fn new(endpoint: Option<String>, ca: Option<&Path>) -> Result<Self, LifecycleError> {
        let tls =
            crate::tls::client_config(ca).map_err(|e| LifecycleError::Config(e.to_string()))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            endpoint,
        })
    }

    /// `method path_and_query` on the service of `who`, signed with its SAS; `body` is JSON.
    pub(crate) async fn call(
        &self,
        who: &Credentials,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Answer, LifecycleError> {
        let authority = self.endpoint.clone().unwrap_or_else(|| who.host.clone());
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("https://{authority}{path_and_query}"))
            .header(HOST, &who.host)
            .header(AUTHORIZATION, who.token()?);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if body.is_some() {
            req = req.header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| LifecycleError::Config(format!("request: {e}")))?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| LifecycleError::Connection {
                host: authority.clone(),
                message: crate::webhook::client::describe(&e),
            })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = Limited::new(resp.into_body(), 16 << 20)
            .collect()
            .await
            .map_err(|e| LifecycleError::Connection {
                host: authority,
                message: format!("reading the answer: {e}"),
            })?
            .to_bytes();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

/// An answer that is not one of `ok` as an error.
pub(crate) fn expect(
    a: Answer,
    ok: &[u16],
    method: &str,
    path: &str,
    host: &str,
) -> Result<Answer, LifecycleError> {
    if ok.contains(&a.status) {
        return Ok(a);
    }
    Err(LifecycleError::Status {
        method: method.into(),
        path: path.split('?').next().unwrap_or(path).into(),
        host: host.into(),
        status: a.status,
        body: String::from_utf8_lossy(&a.body).chars().take(500).collect(),
    })
}

/// The DPS service credentials: `--connection-string`, else `DPS_SERVICE_CONNECTION_STRING`.
pub(crate) fn dps_credentials(flag: Option<&str>) -> Result<Credentials, LifecycleError> {
    let cs = match flag {
        Some(c) => c.to_owned(),
        None => std::env::var("DPS_SERVICE_CONNECTION_STRING").map_err(|_| {
            LifecycleError::Config(
                "no DPS service connection string: set DPS_SERVICE_CONNECTION_STRING (HostName=…;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=…) or pass --connection-string".into(),
            )
        })?,
    };
    Credentials::parse(&cs, "the DPS service connection string")
}

/// Writes `bytes` to `path` atomically (a temporary file beside it, then a rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LifecycleError> {
    let io = |source| LifecycleError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
