//! MQTT 3.1.1 packets over a byte stream, for both ends: the emulator's server side and the
//! device driver's client side. A [`Framed`] stream reads whole packets (framed and parsed by
//! rumqttc's `mqttbytes::v4` codec) and queues outgoing ones so that what is ready leaves in one
//! write. Nothing here decides what to send or what a packet means; that is the caller's.

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::Packet;
use rumqttc::mqttbytes::Error as CodecError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a stream stopped yielding packets.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// Socket error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Malformed or oversized packet, or a stream that ended mid-packet.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// A byte stream carrying MQTT packets.
#[derive(Debug)]
pub(crate) struct Framed<S> {
    io: S,
    buf: BytesMut,
    out: BytesMut,
    max: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Framed<S> {
    /// Wraps `io`; packets larger than `max` bytes are refused. `capacity` is the first read
    /// buffer's size (it grows for a larger packet).
    pub(crate) fn new(io: S, max: usize, capacity: usize) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(capacity),
            out: BytesMut::with_capacity(512),
            max,
        }
    }

    /// The next packet already received, if a whole one is buffered.
    pub(crate) fn buffered(&mut self) -> Result<Option<Packet>, FrameError> {
        match Packet::read(&mut self.buf, self.max) {
            Ok(p) => Ok(Some(p)),
            Err(CodecError::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(FrameError::Protocol(e.to_string())),
        }
    }

    /// Bytes received and not yet taken as packets.
    pub(crate) fn received(&self) -> &[u8] {
        &self.buf
    }

    /// Reads more bytes from the peer; `false` at end of stream. Cancel-safe: bytes are either
    /// in the buffer or still in the socket.
    pub(crate) async fn fill(&mut self) -> Result<bool, FrameError> {
        Ok(self.io.read_buf(&mut self.buf).await? > 0)
    }

    /// The next packet, `None` at a clean end of stream. What was queued goes out before it waits
    /// for the peer.
    pub(crate) async fn read(&mut self) -> Result<Option<Packet>, FrameError> {
        loop {
            if let Some(p) = self.buffered()? {
                return Ok(Some(p));
            }
            self.flush().await?;
            if !self.fill().await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Protocol("connection closed mid-packet".into()))
                };
            }
        }
    }

    /// Queues `p` behind what is queued (order is kept); it leaves with the next [`Self::flush`]
    /// (or before the next [`Self::read`] waits). Packets that are ready together leave in one
    /// segment: a third of the loopback syscalls and packets per registration.
    pub(crate) fn queue(&mut self, p: &Packet) -> Result<(), FrameError> {
        p.write(&mut self.out, usize::MAX)
            .map_err(|e| FrameError::Protocol(e.to_string()))?;
        Ok(())
    }

    /// Sends what is queued.
    pub(crate) async fn flush(&mut self) -> Result<(), FrameError> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
            self.io.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Sends `p` and everything queued before it, now.
    pub(crate) async fn write(&mut self, p: &Packet) -> Result<(), FrameError> {
        self.queue(p)?;
        self.flush().await
    }

    /// Closes the sending side (after a flush).
    pub(crate) async fn shutdown(&mut self) -> Result<(), FrameError> {
        self.flush().await?;
        self.io.shutdown().await?;
        Ok(())
    }
}
