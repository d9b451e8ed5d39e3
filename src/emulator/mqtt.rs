//! The emulator's MQTT 3.1.1 side (dps-protocol.md §3, real-clients.md checklist): one task per
//! connection, packets framed and parsed with rumqttc's `mqttbytes::v4` codec, topics and bodies
//! with [`crate::dps::wire`], answers from the [`Emulator`] core.
//!
//! What a device gets: CONNACK 0 with SessionPresent 0 whatever its clean-session flag; bad
//! credentials, a wrong scope or an unknown registration are refused with **CONNACK 5** (not
//! authorised: our choice of the two behaviours real DPS shows); SUBACK granting at most QoS 1;
//! PUBACK before the response to a QoS-1 request; responses at QoS 1 on
//! `$dps/registrations/res/{status}/?$rid={rid}[&retry-after=N]`; PINGRESP, UNSUBACK, DISCONNECT.
//! A client that sends no CONNECT in time, goes silent past 1.5 × its keep-alive (30 × the
//! connect timeout when it declares none), or sends a malformed or oversized packet is
//! disconnected; only its own connection is affected.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Device, Emulator, Reply};
use crate::dps::wire::{self, RegisterBody, Request};
use crate::mqtt::{FrameError, Framed};

/// Time a new connection has to send CONNECT (default of `serve::Options::connect_timeout`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest packet accepted: DPS's 96 KB message limit plus room for the topic and header.
const MAX_PACKET: usize = wire::MAX_MESSAGE + 1024;

/// Why a connection ended (for the log; the device only sees the socket close).
#[derive(Debug, thiserror::Error)]
pub enum ConnectionEnd {
    /// Socket error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Malformed, oversized or unexpected packet.
    #[error("protocol: {0}")]
    Protocol(String),
    /// No CONNECT in time, or silent past the keep-alive.
    #[error("timed out")]
    Timeout,
    /// Refused at CONNECT.
    #[error("refused: {0}")]
    Refused(String),
}

struct Conn<S> {
    f: Framed<S>,
    next_pkid: u16,
}

impl From<FrameError> for ConnectionEnd {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(io) => ConnectionEnd::Io(io),
            FrameError::Protocol(p) => ConnectionEnd::Protocol(p),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// The next packet, `None` at a clean end of stream; what was queued goes out first.
    async fn read(&mut self) -> Result<Option<Packet>, ConnectionEnd> {
        Ok(self.f.read().await?)
    }

    /// Reads until the protocol level of a CONNECT is in the buffer: `Some(level)`, or `None`
    /// when the first packet is not a CONNECT (the decoder then says what it is).
    async fn peek_connect_level(&mut self) -> Result<Option<u8>, ConnectionEnd> {
        loop {
            match connect_level(self.f.received()) {
                Peek::Level(l) => return Ok(Some(l)),
                Peek::NotConnect => return Ok(None),
                Peek::NeedMore => {}
            }
            if !self.f.fill().await? {
                return Ok(None);
            }
        }
    }

    /// Writes `p` and everything queued before it, now.
    async fn write(&mut self, p: Packet) -> Result<(), ConnectionEnd> {
        Ok(self.f.write(&p).await?)
    }

    /// Queues `p`; it goes out before the next read waits for the client, so a PUBACK and the
    /// response it precedes leave in one segment.
    fn queue(&mut self, p: Packet) -> Result<(), ConnectionEnd> {
        Ok(self.f.queue(&p)?)
    }

    fn respond(&mut self, rid: &str, reply: Reply) -> Result<(), ConnectionEnd> {
        let topic = wire::response_topic(reply.status, rid, reply.retry_after);
        let mut p = Publish::new(topic, QoS::AtLeastOnce, reply.body);
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        p.pkid = self.next_pkid;
        self.queue(Packet::Publish(p))
    }
}

enum Peek {
    NeedMore,
    NotConnect,
    Level(u8),
}

/// The protocol level of a CONNECT at the start of `buf`: fixed header (type 1, remaining
/// length as a variable-length integer), then the protocol name `MQTT` and the level byte.
/// Hand-written because the codec offers no peek; it only reads, never consumes.
fn connect_level(buf: &[u8]) -> Peek {
    let Some(&first) = buf.first() else {
        return Peek::NeedMore;
    };
    if first >> 4 != 1 {
        return Peek::NotConnect;
    }
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else {
            return Peek::NeedMore;
        };
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return Peek::NotConnect;
        }
    }
    match buf.get(i..i + 7) {
        None => Peek::NeedMore,
        Some([0, 4, b'M', b'Q', b'T', b'T', level]) => Peek::Level(*level),
        Some(_) => Peek::NotConnect,
    }
}

/// Serves one MQTT connection (already TLS-wrapped if TLS is on) until it ends.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    emulator: Arc<Emulator>,
    io: S,
    connect_timeout: Duration,
) -> Result<(), ConnectionEnd> {
    let mut c = Conn {
        f: Framed::new(io, MAX_PACKET, 2048),
        next_pkid: 0,
    };
    // MQTT 3.1.1 §3.2.2.3: a protocol level other than 4 gets CONNACK 1. The level is read off
    // the bytes before the 3.1.1 decoder sees them: an MQTT 5 CONNECT has another layout, and
    // the decoder would take a level-5 CONNECT in 3.1.1 layout as valid.
    match tokio::time::timeout(connect_timeout, c.peek_connect_level()).await {
        Err(_) => return Err(ConnectionEnd::Timeout),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(Some(level))) if level != 4 => {
            let _ = c
                .write(Packet::ConnAck(ConnAck::new(
                    ConnectReturnCode::RefusedProtocolVersion,
                    false,
                )))
                .await;
            return Err(ConnectionEnd::Refused(format!(
                "protocol level {level}; this server speaks MQTT 3.1.1 (level 4)"
            )));
        }
        Ok(Ok(_)) => {}
    }
    let connect = match tokio::time::timeout(connect_timeout, c.read()).await {
        Err(_) => return Err(ConnectionEnd::Timeout),
        Ok(Ok(Some(Packet::Connect(connect)))) => connect,
        Ok(Ok(None)) => return Ok(()),
        Ok(Ok(Some(other))) => {
            return Err(ConnectionEnd::Protocol(format!(
                "expected CONNECT, got {other:?}"
            )))
        }
        Ok(Err(ConnectionEnd::Protocol(e))) if e.contains("protocol") => {
            // MQTT 3.1.1 §3.2.2.3: an unsupported protocol level gets return code 1.
            let _ = c
                .write(Packet::ConnAck(ConnAck::new(
                    ConnectReturnCode::RefusedProtocolVersion,
                    false,
                )))
                .await;
            return Err(ConnectionEnd::Refused(e));
        }
        Ok(Err(e)) => return Err(e),
    };
    let (username, password) = connect.login.as_ref().map_or((None, None), |l| {
        (Some(l.username.as_str()), Some(l.password.as_str()))
    });
    let parsed = username.and_then(wire::parse_username);
    let device = match &parsed {
        None => Err("the username is not {idScope}/registrations/{registrationId}/…".to_owned()),
        Some(u) if !u.registration_id.eq_ignore_ascii_case(&connect.client_id) => Err(format!(
            "client id `{}` is not the registration id `{}`",
            connect.client_id, u.registration_id
        )),
        Some(u) => emulator
            .authenticate(&u.id_scope, &u.registration_id, password)
            .map_err(|e| e.to_string()),
    };
    let device: Device = match device {
        Ok(d) => d,
        Err(why) => {
            c.write(Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::NotAuthorized,
                false,
            )))
            .await?;
            return Err(ConnectionEnd::Refused(why));
        }
    };
    // DPS has no persistent sessions: SessionPresent is always 0 (SDK-C# fails on 1).
    c.write(Packet::ConnAck(ConnAck::new(
        ConnectReturnCode::Success,
        false,
    )))
    .await?;
    // Silent past 1.5 × the keep-alive: gone. A client that declares no keep-alive (0) still
    // gets a limit, 30 × the connect timeout (5 min by default), so that a half-sent packet
    // cannot hold the connection forever. The limit covers a whole packet, not each byte.
    let idle = if connect.keep_alive > 0 {
        Duration::from_millis(u64::from(connect.keep_alive) * 1500)
    } else {
        connect_timeout.saturating_mul(30)
    };
    loop {
        let packet = match tokio::time::timeout(idle, c.read()).await {
            Ok(r) => r?,
            Err(_) => return Err(ConnectionEnd::Timeout),
        };
        let Some(packet) = packet else {
            return Ok(());
        };
        match packet {
            Packet::Publish(p) => {
                if p.qos != QoS::AtMostOnce {
                    // PUBACK strictly before the response (SDK-C#'s state machine needs it).
                    c.queue(Packet::PubAck(PubAck::new(p.pkid)))?;
                }
                match wire::parse_request(&p.topic) {
                    Some(Request::Register { rid }) => {
                        let body = RegisterBody::parse(&p.payload);
                        let reply = emulator.register(device.clone(), body.payload, true).await;
                        c.respond(&rid, reply)?;
                    }
                    Some(Request::Poll { rid, operation_id }) => {
                        let reply = emulator.poll(&device, &operation_id);
                        c.respond(&rid, reply)?;
                    }
                    None => {}
                }
            }
            Packet::Subscribe(s) => {
                let codes = s
                    .filters
                    .iter()
                    .map(|f| {
                        SubscribeReasonCode::Success(match f.qos {
                            QoS::AtMostOnce => QoS::AtMostOnce,
                            _ => QoS::AtLeastOnce,
                        })
                    })
                    .collect();
                c.queue(Packet::SubAck(SubAck::new(s.pkid, codes)))?;
            }
            Packet::Unsubscribe(u) => c.queue(Packet::UnsubAck(UnsubAck::new(u.pkid)))?,
            Packet::PingReq => c.queue(Packet::PingResp)?,
            Packet::Disconnect => return Ok(()),
            Packet::PubAck(_) => {}
            Packet::Connect(_) => return Err(ConnectionEnd::Protocol("a second CONNECT".into())),
            other => return Err(ConnectionEnd::Protocol(format!("unexpected {other:?}"))),
        }
    }
}
