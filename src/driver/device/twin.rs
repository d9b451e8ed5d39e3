//! Twin verification: `GET /twins/{deviceId}?api-version=2021-04-12` on the assigned hub with a
//! service SAS built from its connection string (dps-protocol.md §9), the same way against the
//! emulator (its HTTP listener, hub chosen by the `Host` header) and a real IoT Hub (HTTPS to the
//! hub's host name). Reads are rate-limited on their own (governor) and happen after a device's
//! registration is timed, so they never count in registration latency.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, HOST};
use hyper::Request;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::sas;

/// Service-token lifetime.
const TTL: u64 = 1200;

/// Reads twins from the hubs whose connection strings it was given.
pub(crate) struct TwinReader {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Lower-cased host → (policy, key).
    hubs: HashMap<String, (String, String)>,
    /// `http://127.0.0.1:port` of the emulator; `None` = each hub's own `https://host`.
    via: Option<String>,
    limiter: Arc<DefaultDirectRateLimiter>,
}

impl std::fmt::Debug for TwinReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwinReader")
            .field("hubs", &self.hubs.keys().collect::<Vec<_>>())
            .field("via", &self.via)
            .finish_non_exhaustive()
    }
}

impl TwinReader {
    /// A reader for these connection strings, at most `rate` reads per second; `via` routes every
    /// read to the emulator.
    pub(crate) fn new(
        connection_strings: &[String],
        via: Option<String>,
        rate: f64,
    ) -> Result<Self, String> {
        let mut hubs = HashMap::new();
        for cs in connection_strings {
            let (host, policy, key) = crate::sas::parse_connection_string(cs).ok_or(
                "a hub connection string is not HostName=…;SharedAccessKeyName=…;SharedAccessKey=…",
            )?;
            hubs.insert(host.to_ascii_lowercase(), (policy, key));
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let per_second =
            NonZeroU32::new(rate.ceil().clamp(1.0, 1e6) as u32).expect("clamped to >= 1");
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            hubs,
            via,
            limiter: Arc::new(RateLimiter::direct(Quota::per_second(per_second))),
        })
    }

    /// Reads one twin.
    pub(crate) async fn read(&self, hub: &str, device_id: &str) -> Result<Value, String> {
        let Some((policy, key)) = self.hubs.get(&hub.to_ascii_lowercase()) else {
            return Err(format!("no connection string for hub {hub}"));
        };
        self.limiter.until_ready().await;
        let se = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + TTL;
        let token = sas::service_token(hub, policy, key, se).map_err(|e| e.to_string())?;
        let base = self.via.clone().unwrap_or_else(|| format!("https://{hub}"));
        let url = format!(
            "{base}/twins/{}?api-version=2021-04-12",
            sas::url_encode(device_id)
        );
        let req = Request::get(url)
            .header(HOST, hub)
            .header(AUTHORIZATION, token)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp =
            self.client.request(req).await.map_err(|e| {
                format!("twin read failed: {}", crate::webhook::client::describe(&e))
            })?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if status != 200 {
            return Err(format!(
                "twin read answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        serde_json::from_slice(&body).map_err(|e| format!("twin is not JSON: {e}"))
    }
}
