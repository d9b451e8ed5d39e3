//! MQTT over WebSockets, both ends: the facts of the route devices behind port-443-only firewalls
//! use (`GET /$iothub/websocket`, `Sec-WebSocket-Protocol: mqtt`, binary messages), the server's
//! upgrade answer, the client's upgrade request, and [`WsBytes`], the byte stream the one MQTT
//! codec ([`crate::mqtt`]) reads and writes, carried in WebSocket binary messages
//! (tokio-tungstenite). The emulator serves its MQTT session over it; the `mqtt-ws` driver
//! registers over it. Knows nothing of MQTT itself.
//!
//! The adapter is written here because tokio-tungstenite offers messages, not a byte stream, and
//! the crate that adapts one (ws_stream_tungstenite) is built on async-tungstenite and futures-io
//! rather than tokio's I/O traits; what it takes is a read buffer and one message per write.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf as _, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

/// The path of the MQTT-over-WebSockets route (IoT Hub and DPS alike).
pub const PATH: &str = "/$iothub/websocket";
/// The WebSocket subprotocol devices ask for.
pub const SUBPROTOCOL: &str = "mqtt";

/// Why an upgrade request is refused (the server answers 400 with this text).
pub fn refusal(headers: &hyper::HeaderMap) -> Option<&'static str> {
    let has = |name: hyper::header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has(hyper::header::UPGRADE, "websocket") || !has(hyper::header::CONNECTION, "upgrade") {
        return Some("expected a WebSocket upgrade (Upgrade: websocket, Connection: Upgrade)");
    }
    if !has(hyper::header::SEC_WEBSOCKET_VERSION, "13") {
        return Some("Sec-WebSocket-Version must be 13");
    }
    if headers.get(hyper::header::SEC_WEBSOCKET_KEY).is_none() {
        return Some("Sec-WebSocket-Key is missing");
    }
    if !has(hyper::header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL) {
        return Some("Sec-WebSocket-Protocol must offer mqtt");
    }
    None
}

/// True when the request asks to upgrade to a WebSocket at all.
pub fn is_upgrade(headers: &hyper::HeaderMap) -> bool {
    headers
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The `101 Switching Protocols` answer to a request [`refusal`] accepted.
pub fn accept<B: Default>(headers: &hyper::HeaderMap) -> hyper::Response<B> {
    let key = headers
        .get(hyper::header::SEC_WEBSOCKET_KEY)
        .map_or(&b""[..], |k| k.as_bytes());
    let accept = tungstenite::handshake::derive_accept_key(key);
    let mut r = hyper::Response::new(B::default());
    *r.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        hyper::header::UPGRADE,
        hyper::header::HeaderValue::from_static("websocket"),
    );
    h.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        hyper::header::SEC_WEBSOCKET_PROTOCOL,
        hyper::header::HeaderValue::from_static(SUBPROTOCOL),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(&accept) {
        h.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

/// The server end after the 101: the upgraded connection as an MQTT byte stream.
pub async fn server<S: AsyncRead + AsyncWrite + Unpin>(io: S) -> WsBytes<S> {
    WsBytes::new(
        WebSocketStream::from_raw_socket(io, tungstenite::protocol::Role::Server, None).await,
    )
}

/// Why a client upgrade failed.
#[derive(Debug)]
pub enum UpgradeError {
    /// The connection failed under the upgrade.
    Io(io::Error),
    /// The server refused or answered something else than a WebSocket speaking `mqtt`.
    Refused(String),
}

/// The client end: the upgrade request for `host` on `io` (TCP, or TLS over it), asking for
/// the `mqtt` subprotocol and refusing a server that does not choose it.
pub async fn client<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    host: &str,
    port: u16,
    tls: bool,
) -> Result<WsBytes<S>, UpgradeError> {
    let refused = UpgradeError::Refused;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let scheme = if tls { "wss" } else { "ws" };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let mut req = format!("{scheme}://{host}:{port}{PATH}")
        .into_client_request()
        .map_err(|e| refused(format!("WebSocket request: {e}")))?;
    req.headers_mut().insert(
        hyper::header::SEC_WEBSOCKET_PROTOCOL,
        hyper::header::HeaderValue::from_static(SUBPROTOCOL),
    );
    let (ws, resp) = tokio_tungstenite::client_async(req, io)
        .await
        .map_err(|e| match e {
            tungstenite::Error::Io(e) => UpgradeError::Io(e),
            tungstenite::Error::Http(r) => {
                refused(format!("WebSocket upgrade refused: HTTP {}", r.status()))
            }
            e => refused(format!("WebSocket upgrade: {e}")),
        })?;
    let chosen = resp
        .headers()
        .get(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok());
    if chosen != Some(SUBPROTOCOL) {
        return Err(refused(format!(
            "WebSocket upgrade: the server chose subprotocol {chosen:?}, not mqtt"
        )));
    }
    Ok(WsBytes::new(ws))
}

/// A WebSocket as a byte stream: reads return the bytes of binary messages in order (text
/// messages are a protocol error, pings are answered by tungstenite, a close is the end); each
/// write is one binary message.
#[derive(Debug)]
pub struct WsBytes<S> {
    ws: WebSocketStream<S>,
    unread: Bytes,
}

impl<S> WsBytes<S> {
    fn new(ws: WebSocketStream<S>) -> Self {
        Self {
            ws,
            unread: Bytes::new(),
        }
    }
}

fn io_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        e => io::Error::new(io::ErrorKind::InvalidData, e),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsBytes<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.unread.is_empty() {
                let n = this.unread.len().min(buf.remaining());
                buf.put_slice(&this.unread[..n]);
                this.unread.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None
                | Some(Ok(Message::Close(_)))
                | Some(Err(tungstenite::Error::ConnectionClosed))
                | Some(Err(tungstenite::Error::AlreadyClosed)) => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                Some(Ok(Message::Binary(b))) => this.unread = b,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MQTT over WebSockets travels in binary messages, not text",
                    )))
                }
                Some(Ok(_)) => {}
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsBytes<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(io_error)?;
        Pin::new(&mut this.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(io_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(io_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.get_mut().ws).poll_close(cx)) {
            Ok(()) | Err(tungstenite::Error::ConnectionClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }
}
