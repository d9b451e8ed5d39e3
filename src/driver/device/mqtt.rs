//! One device registration over MQTT 3.1.1 (dps-protocol.md §3.8), on TCP, TLS, or (`mqtt-ws`) a
//! WebSocket on `/$iothub/websocket` over either: its own connection (that is
//! what devices do), client id = registration id, username with api-version 2019-03-31 and a
//! `ClientVersion` naming loadtest, SAS password, clean session, keep-alive 60 s; subscribe,
//! register at QoS 1, poll after `retry-after`, re-send after 429, disconnect.
//!
//! The register/poll/back-off logic is [`Session`]'s (shared with the HTTPS transport); this file
//! only speaks MQTT. Every way it can go wrong ends as a classified [`Attempt`] failure, never a
//! hang (the caller's per-device timeout) or a panic: network (connect refused/reset/timed out),
//! TLS (handshake), target (CONNACK refusal, SUBACK failure, error status, malformed JSON).
//!
//! Packets are rumqttc's `mqttbytes` codec over [`Framed`]; the client state machine is written
//! here rather than taken from rumqttc's `AsyncClient` because rumqttc 0.25 cannot bind a local
//! address (connection-per-device load runs out of source ports on one address), and its
//! per-client event loop, request channel and in-flight tables cost more memory and CPU per
//! device than a four-packet exchange needs. What leaves together goes in one write: SUBSCRIBE
//! with the register PUBLISH, and the last PUBACK with DISCONNECT.

use std::time::Duration;

use rumqttc::mqttbytes::v4::{
    ConnectReturnCode, Packet, PubAck, Publish, Subscribe, SubscribeReasonCode,
};
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{Attempt, Registering, CLIENT_VERSION};
use crate::dial;
use crate::dps::codes;
use crate::dps::session::{Answer, Request, Session, Step};
use crate::dps::wire;
use crate::mqtt::{FrameError, Framed};
use crate::outcome::{End, Failure, Source};
use crate::ws::WsBytes;

/// Keep-alive declared in CONNECT; a PINGREQ goes out when nothing was sent for this long.
const KEEP_ALIVE: Duration = Duration::from_secs(60);
/// Largest packet accepted: DPS's 96 KB message limit plus room for the topic and header.
const MAX_PACKET: usize = wire::MAX_MESSAGE + 1024;
/// First read buffer: a registration response is about 600 bytes.
const READ_BUFFER: usize = 1024;

fn network(message: impl Into<String>) -> Failure {
    Failure::new(End::Transport, Source::Network, message)
}

fn io_failure(e: &std::io::Error) -> Failure {
    match dial::generator_limit(e) {
        Some(why) => Failure::generator(why),
        None => network(e.to_string()),
    }
}

fn frame_failure(e: FrameError) -> Failure {
    match e {
        FrameError::Io(io) => io_failure(&io),
        FrameError::Protocol(p) => Failure::target(format!("malformed MQTT: {p}")),
    }
}

/// The MQTT topic of a session request.
fn topic(r: &Request) -> String {
    match r {
        Request::Register { rid } => wire::register_topic(&rid.to_string()),
        Request::Poll { rid, operation_id } => wire::poll_topic(&rid.to_string(), operation_id),
    }
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A connected, CONNACKed device.
enum Connected {
    Plain(Framed<TcpStream>),
    Tls(Box<Framed<Tls>>),
    Ws(Box<Framed<WsBytes<TcpStream>>>),
    Wss(Box<Framed<WsBytes<Tls>>>),
}

/// Registers one device; returns when it reaches a terminal status or fails. The registration
/// logic is the [`Session`]'s; this only moves its requests and answers over MQTT.
pub(crate) async fn register(r: &Registering<'_>) -> Attempt {
    let mut a = Attempt::default();
    let start = Instant::now();
    let ep = r.endpoint;
    let connected = loop {
        let failure = match tokio::time::timeout(ep.connect_timeout, connect(r)).await {
            Ok(Ok(c)) => break c,
            Ok(Err(f)) => f,
            Err(_) => {
                a.phases.connect_timeouts += 1;
                Failure::new(
                    End::TimedOut,
                    Source::Network,
                    format!("connect timed out ({:?})", ep.connect_timeout),
                )
            }
        };
        // Only the network is worth another try; a refusal or a handshake failure repeats.
        if failure.source == Source::Network && a.phases.connect_retries < ep.connect_retries {
            a.phases.connect_retries += 1;
            continue;
        }
        return a.fail(failure);
    };
    a.phases.connect = Some(start.elapsed());
    // The wrapped streams' sessions are boxed as their connections are (see `connect`).
    match connected {
        Connected::Plain(f) => registration(r, f, a).await,
        Connected::Tls(f) => Box::pin(registration(r, *f, a)).await,
        Connected::Ws(f) => Box::pin(registration(r, *f, a)).await,
        Connected::Wss(f) => Box::pin(registration(r, *f, a)).await,
    }
}

/// `mqtt-ws`: the WebSocket upgrade on `io`, then the MQTT byte stream over it.
async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    r: &Registering<'_>,
    io: S,
) -> Result<Framed<WsBytes<S>>, Failure> {
    let ep = r.endpoint;
    let ws = crate::ws::client(io, &ep.host, ep.port, ep.tls.is_some())
        .await
        .map_err(|e| match e {
            crate::ws::UpgradeError::Io(e) => io_failure(&e),
            crate::ws::UpgradeError::Refused(why) => Failure::target(why),
        })?;
    Ok(Framed::new(ws, MAX_PACKET, READ_BUFFER))
}

/// TCP (from the next source address), TLS when configured, the WebSocket upgrade in `mqtt-ws`
/// mode, CONNECT → CONNACK: the connect phase.
async fn connect(r: &Registering<'_>) -> Result<Connected, Failure> {
    let ep = r.endpoint;
    let dest = dial::resolve(&ep.host, ep.port)
        .await
        .map_err(|e| network(format!("{}: {e}", ep.host)))?;
    let tcp = ep.dialer.connect(dest).await.map_err(|e| io_failure(&e))?;
    if ep.tls.is_none() && !ep.websocket {
        let mut f = Framed::new(tcp, MAX_PACKET, READ_BUFFER);
        handshake(r, &mut f).await?;
        return Ok(Connected::Plain(f));
    }
    // Boxed: a TLS handshake holds rustls' whole connection state and an upgrade its own, 12 KB
    // of the 13 KB a registration's future was (plain TCP included, as a future is as large as
    // its largest state). Every device in flight held that, and spawning it copied it.
    Box::pin(wrapped(r, tcp)).await
}

/// [`connect`] over TLS and/or a WebSocket.
async fn wrapped(r: &Registering<'_>, tcp: TcpStream) -> Result<Connected, Failure> {
    let ep = r.endpoint;
    match &ep.tls {
        None => {
            let mut f = upgrade(r, tcp).await?;
            handshake(r, &mut f).await?;
            Ok(Connected::Ws(Box::new(f)))
        }
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from(ep.host.clone()).map_err(|e| {
                Failure::new(End::Transport, Source::Tls, format!("server name: {e}"))
            })?;
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(Failure::tls_handshake)?;
            if ep.websocket {
                let mut f = upgrade(r, tls).await?;
                handshake(r, &mut f).await?;
                return Ok(Connected::Wss(Box::new(f)));
            }
            let mut f = Framed::new(tls, MAX_PACKET, READ_BUFFER);
            handshake(r, &mut f).await?;
            Ok(Connected::Tls(Box::new(f)))
        }
    }
}

async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    r: &Registering<'_>,
    f: &mut Framed<S>,
) -> Result<(), Failure> {
    let mut c = rumqttc::mqttbytes::v4::Connect::new(r.id);
    c.keep_alive = KEEP_ALIVE.as_secs() as u16;
    c.clean_session = true;
    c.set_login(
        wire::username(&r.endpoint.id_scope, r.id, CLIENT_VERSION),
        r.token,
    );
    f.write(&Packet::Connect(c)).await.map_err(frame_failure)?;
    match f.read().await.map_err(frame_failure)? {
        None => Err(network("connection closed before CONNACK")),
        Some(Packet::ConnAck(ack)) => match ack.code {
            ConnectReturnCode::Success => Ok(()),
            code => Err(
                Failure::target(format!("CONNACK refused: {code:?}")).with_code(
                    matches!(
                        code,
                        ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword
                    )
                    .then_some(codes::UNAUTHORIZED),
                ),
            ),
        },
        Some(other) => Err(Failure::target(format!("expected CONNACK, got {other:?}"))),
    }
}

/// What woke the session up.
enum Wake {
    Packet(Packet),
    Closed,
    Timer,
}

/// Subscribe, register, answer and poll until the session ends, then disconnect.
async fn registration<S: AsyncRead + AsyncWrite + Unpin>(
    r: &Registering<'_>,
    mut f: Framed<S>,
    a: Attempt,
) -> Attempt {
    let mut a = a;
    let registered = Instant::now();
    let (mut session, first) = Session::start(r.polling, "res/");
    let mut pkid: u16 = 1;
    let publish = |f: &mut Framed<S>, req: &Request, pkid: &mut u16| {
        *pkid = pkid.checked_add(1).unwrap_or(2);
        let payload: &[u8] = match req {
            Request::Register { .. } => r.body,
            Request::Poll { .. } => b" ",
        };
        let mut p = Publish::new(topic(req), QoS::AtLeastOnce, payload);
        p.pkid = *pkid;
        f.queue(&Packet::Publish(p))
    };
    let mut sub = Subscribe::new(wire::RESPONSE_FILTER, QoS::AtLeastOnce);
    sub.pkid = pkid;
    let queued = f
        .queue(&Packet::Subscribe(sub))
        .and_then(|()| publish(&mut f, &first, &mut pkid));
    if let Err(e) = queued {
        return a.fail(frame_failure(e));
    }
    let mut pending: Option<(Instant, Request)> = None;
    let mut last_sent = Instant::now();
    // One timer for the session, moved only when its deadline does: a timer registered anew
    // each time round costs a wheel insert, and when it is the lane's earliest, an eventfd
    // write to wake the lane's own (running) driver (tokio cannot tell it is not parked).
    let timer = tokio::time::sleep_until(last_sent + KEEP_ALIVE);
    tokio::pin!(timer);
    let outcome: Result<_, Failure> = loop {
        let wake = match f.buffered() {
            Err(e) => break Err(frame_failure(e)),
            Ok(Some(p)) => Wake::Packet(p),
            Ok(None) => {
                if let Err(e) = f.flush().await {
                    break Err(frame_failure(e));
                }
                let ping_at = last_sent + KEEP_ALIVE;
                let at = pending.as_ref().map_or(ping_at, |(t, _)| (*t).min(ping_at));
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
                tokio::select! {
                    more = f.fill() => match more {
                        Ok(true) => continue,
                        Ok(false) => Wake::Closed,
                        Err(e) => break Err(frame_failure(e)),
                    },
                    () = timer.as_mut() => Wake::Timer,
                }
            }
        };
        let queued = match wake {
            Wake::Closed => break Err(network("connection closed before a terminal status")),
            Wake::Timer => {
                last_sent = Instant::now();
                match pending.take() {
                    Some((t, req)) if t <= last_sent => publish(&mut f, &req, &mut pkid),
                    other => {
                        pending = other;
                        f.queue(&Packet::PingReq)
                    }
                }
            }
            Wake::Packet(Packet::SubAck(s)) => {
                if s.return_codes.contains(&SubscribeReasonCode::Failure) {
                    break Err(Failure::target("SUBACK refused the response topic"));
                }
                Ok(())
            }
            Wake::Packet(Packet::Publish(p)) => {
                let acked = if p.qos == QoS::AtMostOnce {
                    Ok(())
                } else {
                    f.queue(&Packet::PubAck(PubAck::new(p.pkid)))
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
                    Step::Send(wait, req) => pending = Some((Instant::now() + wait, req)),
                    Step::Done(result) => break result,
                }
                acked
            }
            // PUBACKs of our requests, PINGRESP, and anything else a server may send.
            Wake::Packet(_) => Ok(()),
        };
        if let Err(e) = queued {
            break Err(frame_failure(e));
        }
    };
    // The last PUBACK and DISCONNECT leave together; a server already gone is no failure.
    if f.queue(&Packet::Disconnect).is_ok() {
        let _ = tokio::time::timeout(Duration::from_millis(200), f.shutdown()).await;
    }
    a.finish(session.counts, outcome, registered)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::dps::session::Polling;

    /// A plain-TCP registration's future, which every device in flight holds and which spawning
    /// copies, does not carry the TLS and WebSocket handshakes' state (about 12 KB, boxed in
    /// `connect`): this fails if they come back inline.
    #[test]
    fn a_plain_registration_does_not_carry_the_tls_handshake() {
        let endpoint = crate::driver::device::Endpoint {
            host: "127.0.0.1".into(),
            port: 8883,
            tls: None,
            id_scope: "0ne00000000".into(),
            dialer: Arc::new(dial::Dialer::new(Vec::new())),
            connect_timeout: Duration::from_secs(1),
            connect_retries: 0,
            websocket: false,
        };
        let r = Registering {
            endpoint: &endpoint,
            id: "device-1",
            token: "token",
            body: b"{}",
            polling: Polling {
                floor: Duration::from_millis(50),
                cap: Duration::from_secs(5),
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_secs(10),
            },
        };
        let (connect, register) = (
            std::mem::size_of_val(&connect(&r)),
            std::mem::size_of_val(&register(&r)),
        );
        assert!(connect < 2048, "connect future {connect} B");
        assert!(register < 8192, "register future {register} B");
    }
}
