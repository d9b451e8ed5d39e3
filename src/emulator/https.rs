//! The emulator's HTTPS side (dps-protocol.md §4 and §9): the DPS device routes and the IoT Hub
//! twin read, on one hyper 1.x HTTP/1.1 service. Routing and JSON shapes come from
//! [`crate::dps::wire`]; answers from the [`Emulator`] core.
//!
//! `PUT …/register` always answers 202 (SDK-C# throws otherwise), `GET …/operations/{id}` 202 with
//! `Retry-After` or 200, `POST …/registrations/{id}` the stored state; every answer is JSON with
//! `Content-Type: application/json; charset=utf-8`; errors are `ProvisioningServiceErrorDetails`.
//! The twin read picks the hub by the `Host` header and needs a service SAS for that hub.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::{Request, Response};

use super::{Emulator, Reply};
use crate::dps::wire::{self, RegisterBody, Route};

/// Serves one request.
pub async fn handle(
    emulator: Arc<Emulator>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == crate::ws::PATH {
        return Ok(websocket(emulator, req));
    }
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let auth = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let if_match = header("if-match");
    let max_items = header("x-ms-max-item-count").and_then(|v| v.parse().ok());
    let continuation = header("x-ms-continuation");
    let top = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("top="))
            .and_then(|v| v.parse().ok())
    });
    let host = req
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().host().map(str::to_owned))
        .unwrap_or_default();
    let body = match Limited::new(req.into_body(), wire::MAX_MESSAGE)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(respond(Reply::error(
                413,
                crate::dps::codes::TOO_LARGE,
                "The request is larger than DPS's 96 KB message limit",
                None,
            )))
        }
    };
    // Device routes first (the hot path), matched once; then the service and registry routes.
    let device_route = wire::route(&method, &path);
    if device_route.is_none() {
        if let Some(route) = crate::dps::service::route(&method, &path) {
            let r = emulator.service(
                route,
                &super::service::ServiceRequest {
                    host: &host,
                    auth: auth.as_deref(),
                    if_match: if_match.as_deref(),
                    max_items,
                    continuation: continuation.as_deref(),
                    top,
                    body: &body,
                },
            );
            return Ok(service_response(r));
        }
    }
    let reply = match device_route {
        // The emulator's own counters (not a DPS route).
        None if method == "GET" && path == "/stats" => Reply {
            status: 200,
            body: emulator.counters.json().into_bytes(),
            retry_after: None,
        },
        None => Reply::error(404, crate::dps::codes::NOT_FOUND, "No such route", None),
        Some(Route::Twin { device_id }) => emulator.twin(&host, &device_id, auth.as_deref()),
        Some(Route::Register { scope, id }) => {
            match emulator.authenticate(&scope, &id, auth.as_deref()) {
                Err(e) => Emulator::refusal(&e),
                Ok(device) => {
                    let payload = RegisterBody::parse(&body).payload;
                    emulator.register(device, payload, false).await
                }
            }
        }
        Some(Route::Operation {
            scope,
            id,
            operation_id,
        }) => match emulator.authenticate(&scope, &id, auth.as_deref()) {
            Err(e) => Emulator::refusal(&e),
            Ok(device) => emulator.poll(&device, &operation_id),
        },
        Some(Route::Status { scope, id }) => {
            match emulator.authenticate(&scope, &id, auth.as_deref()) {
                Err(e) => Emulator::refusal(&e),
                Ok(device) => emulator.status(&device),
            }
        }
    };
    Ok(respond(reply))
}

/// `GET /$iothub/websocket`: a WebSocket upgrade offering `mqtt` gets 101, and the upgraded
/// connection is served by the one MQTT session code ([`super::mqtt::serve`]); anything else on
/// this path gets 400 with a DPS error body.
fn websocket(emulator: Arc<Emulator>, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let refused = if req.method() != hyper::Method::GET {
        Some("the WebSocket route takes GET")
    } else {
        crate::ws::refusal(req.headers())
    };
    if let Some(why) = refused {
        return respond(Reply::error(400, crate::dps::codes::BAD_REQUEST, why, None));
    }
    let accepted = crate::ws::accept(req.headers());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(io) = upgrade.await {
            let stream = crate::ws::server(hyper_util::rt::TokioIo::new(io)).await;
            let _ = super::mqtt::serve(emulator, stream, super::mqtt::CONNECT_TIMEOUT).await;
        }
    });
    accepted
}

fn service_response(r: super::service::ServiceReply) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(r.body)));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(r.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    if r.status != 204 {
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    for (name, value) in r.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    resp
}

fn respond(r: Reply) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(r.body)));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(r.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Some(s) = r.retry_after {
        h.insert(RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}
