//! One device registration over MQTT with rumqttc (dps-protocol.md §3.8): its own connection
//! (that is what devices do), client id = registration id, username with api-version 2019-03-31
//! and a `ClientVersion` naming loadtest, SAS password, clean session, keep-alive 60 s; subscribe,
//! register at QoS 1, poll after `retry-after`, re-send after 429, disconnect.
//!
//! The register/poll/back-off logic is [`Session`]'s (shared with the HTTPS transport); this file
//! only speaks MQTT. Every way it can go wrong ends as a classified [`Attempt`] failure, never a
//! hang (the caller's per-device timeout) or a panic: network (connect refused/reset), TLS
//! (handshake), target (CONNACK refusal, error status, malformed JSON).

use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::time::Instant;

use super::{Attempt, Registering, CLIENT_VERSION};
use crate::dps::codes;
use crate::dps::session::{Answer, Request, Session, Step};
use crate::dps::wire;
use crate::outcome::{End, Failure, Source};

fn classify(e: &ConnectionError) -> Failure {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            Failure::target(format!("CONNACK refused: {code:?}")).with_code(
                matches!(
                    code,
                    rumqttc::ConnectReturnCode::NotAuthorized
                        | rumqttc::ConnectReturnCode::BadUserNamePassword
                )
                .then_some(codes::UNAUTHORIZED),
            )
        }
        ConnectionError::Tls(t) => Failure::new(
            End::Transport,
            Source::Tls,
            format!("TLS handshake failed: {t}"),
        ),
        ConnectionError::Io(io) => Failure::new(End::Transport, Source::Network, io.to_string()),
        ConnectionError::NetworkTimeout => {
            Failure::new(End::TimedOut, Source::Network, "connect timed out")
        }
        other => Failure::new(End::Transport, Source::Target, other.to_string()),
    }
}

/// The MQTT topic of a session request.
fn topic(r: &Request) -> String {
    match r {
        Request::Register { rid } => wire::register_topic(&rid.to_string()),
        Request::Poll { rid, operation_id } => wire::poll_topic(&rid.to_string(), operation_id),
    }
}

/// Registers one device; returns when it reaches a terminal status or fails. The registration
/// logic is the [`Session`]'s; this only moves its requests and answers over MQTT.
pub(crate) async fn register(r: &Registering<'_>) -> Attempt {
    let (ep, id, body) = (r.endpoint, r.id, r.body);
    let mut a = Attempt::default();
    let mut opts = MqttOptions::new(id, ep.host.clone(), ep.port);
    opts.set_credentials(wire::username(&ep.id_scope, id, CLIENT_VERSION), r.token);
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
            Err(e) => return a.fail(classify(&e)),
        }
    }
    a.phases.connect = Some(start.elapsed());
    if client
        .subscribe(wire::RESPONSE_FILTER, QoS::AtLeastOnce)
        .await
        .is_err()
    {
        return a.fail(Failure::generator("client queue closed"));
    }
    let registered = Instant::now();
    let (mut session, first) = Session::start(r.polling, "res/");
    let send = |r: &Request| {
        let payload = match r {
            Request::Register { .. } => body.to_vec(),
            Request::Poll { .. } => b" ".to_vec(),
        };
        client.publish(topic(r), QoS::AtLeastOnce, false, payload)
    };
    let _ = send(&first).await;
    let outcome = loop {
        let ev = match events.poll().await {
            Ok(ev) => ev,
            Err(e) => break Err(classify(&e)),
        };
        let Event::Incoming(Packet::Publish(p)) = ev else {
            continue;
        };
        let Some((status, rid, retry_after)) = wire::parse_response(&p.topic) else {
            continue;
        };
        let step = session.on_answer(Answer {
            status,
            rid: Some(&rid),
            retry_after,
            body: &p.payload,
        });
        if session.answered() && a.phases.first_response.is_none() {
            a.phases.first_response = Some(registered.elapsed());
        }
        match step {
            Step::Ignore => {}
            Step::Send(wait, r) => {
                tokio::time::sleep(wait).await;
                let _ = send(&r).await;
            }
            Step::Done(result) => break result,
        }
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
    a.finish(session.counts, outcome, registered)
}
