//! One device registration over MQTT with rumqttc (dps-protocol.md §3.8): its own connection
//! (that is what devices do), client id = registration id, username with api-version 2019-03-31
//! and a `ClientVersion` naming loadtest, SAS password, clean session, keep-alive 60 s; subscribe,
//! register at QoS 1, poll after `retry-after`, re-send after 429, disconnect.
//!
//! Every way it can go wrong ends as a classified [`Attempt`] failure, never a hang (the caller's
//! per-device timeout) or a panic: `[network]` (connect refused/reset), `[tls]` (handshake),
//! `[target]` (CONNACK refusal, error status, malformed JSON).

use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::time::Instant;

use super::{Attempt, Endpoint, Polling, CLIENT_VERSION};
use crate::dps::codes;
use crate::dps::wire::{self, OperationStatus};
use crate::metrics::End;

fn classify(e: &ConnectionError) -> (End, String, Option<u32>) {
    match e {
        ConnectionError::ConnectionRefused(code) => (
            End::Answered,
            format!("[target] CONNACK refused: {code:?}"),
            matches!(
                code,
                rumqttc::ConnectReturnCode::NotAuthorized
                    | rumqttc::ConnectReturnCode::BadUserNamePassword
            )
            .then_some(codes::UNAUTHORIZED),
        ),
        ConnectionError::Tls(t) => (
            End::Transport,
            format!("[tls] TLS handshake failed: {t}"),
            None,
        ),
        ConnectionError::Io(io) => (End::Transport, format!("[network] {io}"), None),
        ConnectionError::NetworkTimeout => {
            (End::TimedOut, "[network] connect timed out".into(), None)
        }
        other => (End::Transport, format!("[target] {other}"), None),
    }
}

/// Registers one device; returns when it reaches a terminal status or fails.
pub async fn register(
    ep: &Endpoint,
    id: &str,
    token: &str,
    body: &[u8],
    polling: &Polling,
) -> Attempt {
    let mut a = Attempt::default();
    let mut opts = MqttOptions::new(id, ep.host.clone(), ep.port);
    opts.set_credentials(wire::username(&ep.id_scope, id, CLIENT_VERSION), token);
    opts.set_keep_alive(Duration::from_secs(60));
    opts.set_clean_session(true);
    opts.set_max_packet_size(wire::MAX_MESSAGE + 1024, wire::MAX_MESSAGE + 1024);
    if let Some(tls) = &ep.tls {
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.clone(),
        )));
    }
    let (client, mut events) = AsyncClient::new(opts, 8);
    let start = Instant::now();
    // CONNACK.
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => break,
            Ok(_) => {}
            Err(e) => {
                let (end, msg, code) = classify(&e);
                return a.fail(end, msg, code);
            }
        }
    }
    a.phases.connect = Some(start.elapsed());
    if client
        .subscribe(wire::RESPONSE_FILTER, QoS::AtLeastOnce)
        .await
        .is_err()
    {
        return a.fail(
            End::Transport,
            "[generator] client queue closed".into(),
            None,
        );
    }
    let mut rid = 0u32;
    let next = |rid: &mut u32| {
        *rid += 1;
        rid.to_string()
    };
    let registered = Instant::now();
    let mut topic = wire::register_topic(&next(&mut rid));
    let mut payload = body;
    let mut throttled_in_a_row = 0;
    let _ = client
        .publish(topic.clone(), QoS::AtLeastOnce, false, payload.to_vec())
        .await;
    a.requests += 1;
    let outcome = loop {
        let ev = match events.poll().await {
            Ok(ev) => ev,
            Err(e) => {
                let (end, msg, code) = classify(&e);
                break Err((end, msg, code));
            }
        };
        let Event::Incoming(Packet::Publish(p)) = ev else {
            continue;
        };
        let Some((status, got_rid, retry_after)) = wire::parse_response(&p.topic) else {
            continue;
        };
        if got_rid != rid.to_string() {
            // A response to another request (or a stray): not ours, keep waiting.
            continue;
        }
        if a.phases.first_response.is_none() {
            a.phases.first_response = Some(registered.elapsed());
        }
        match status {
            200 | 202 => {
                let op: OperationStatus = match serde_json::from_slice(&p.payload) {
                    Ok(op) => op,
                    Err(e) => {
                        break Err((
                            End::Answered,
                            format!("[target] malformed response JSON: {e}"),
                            None,
                        ))
                    }
                };
                if status == 200 || op.status != "assigning" {
                    break Ok(op);
                }
                throttled_in_a_row = 0;
                let wait = polling.after(retry_after);
                a.phases.retry_wait += wait;
                tokio::time::sleep(wait).await;
                topic = wire::poll_topic(&next(&mut rid), &op.operation_id);
                payload = b" ";
                a.phases.polls += 1;
            }
            s if s == 429 || s >= 500 => {
                a.phases.throttled += u32::from(status == 429);
                let wait = polling.throttled(retry_after, throttled_in_a_row);
                throttled_in_a_row += 1;
                a.phases.retry_wait += wait;
                tokio::time::sleep(wait).await;
                // The same request again, with a fresh $rid.
                let old = topic.clone();
                topic = old.replacen(
                    &format!("$rid={rid}"),
                    &format!("$rid={}", next(&mut rid)),
                    1,
                );
            }
            _ => {
                let detail: serde_json::Value =
                    serde_json::from_slice(&p.payload).unwrap_or_default();
                let code = detail["errorCode"].as_u64().map(|c| c as u32);
                break Err((
                    End::Answered,
                    format!(
                        "[target] res/{status}: {}",
                        detail["message"].as_str().unwrap_or("error")
                    ),
                    code,
                ));
            }
        }
        let _ = client
            .publish(topic.clone(), QoS::AtLeastOnce, false, payload.to_vec())
            .await;
        a.requests += 1;
    };
    let _ = client.disconnect().await;
    // Flush the DISCONNECT (bounded: the server may already be gone).
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while let Ok(ev) = events.poll().await {
            if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
    match outcome {
        Ok(op) => {
            a.phases.dps = Some(registered.elapsed());
            a.state = op.registration_state;
            if a.state.is_none() {
                return a.fail(
                    End::Answered,
                    "[target] terminal response without registrationState".into(),
                    None,
                );
            }
            a
        }
        Err((end, msg, code)) => a.fail(end, msg, code),
    }
}
