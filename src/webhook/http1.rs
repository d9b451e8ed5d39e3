//! One kept-alive HTTP/1.1 client connection, for the webhook client: send a prepared POST (head
//! and body in one write), read one response (status and body) framed by `Content-Length`,
//! chunked encoding, or the connection's close.
//!
//! Hand-written over `httparse` (hyper's own parser) rather than hyper's client connection: there
//! a request goes through a channel to the connection's own task and comes back through a
//! oneshot, with two task wakes and a request and a response `HeaderMap` per call; that was a
//! third of the webhook-mode generator's instructions per request (benches/vs-wrk.sh), and a
//! generator that must cost no more per request than wrk owns its connection instead. Must not:
//! pipeline, upgrade, or follow redirects (DPS takes the webhook's first final answer as it is).

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A byte stream a connection runs over (TCP, or TLS over TCP).
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Response head size accepted at most.
const MAX_HEAD: usize = 64 * 1024;
/// Response headers read at most.
const MAX_HEADERS: usize = 64;
/// Read buffer size (answers larger than it are read in several reads).
const READ_BUF: usize = 8 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The connection ended before any byte of the answer arrived. On a kept-alive connection
    /// this is the server having closed it while idle: the request can go again on a new one.
    #[error("connection closed before an answer: {0}")]
    Closed(String),
    /// Reading or writing failed mid-exchange.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Not a valid HTTP/1.x response.
    #[error("invalid HTTP response: {0}")]
    Protocol(String),
    /// The body is larger than the limit.
    #[error("response body over {0} bytes")]
    TooLarge(usize),
}

/// One answer.
#[derive(Debug)]
pub(crate) struct Response {
    /// Status code.
    pub status: u16,
    /// The whole body (de-chunked).
    pub body: Bytes,
    /// The connection can carry another request.
    pub keep_alive: bool,
}

/// A client connection.
pub(crate) struct Conn {
    io: Box<dyn Io>,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// The request being written.
    out: Vec<u8>,
    /// The last response head read here, byte for byte, and what it said: a server answers
    /// with the same head again and again (hyper's `date` changes once a second), and the same
    /// bytes parse the same, so a repeated head is compared instead of parsed. Parsing was a
    /// sixth of the webhook generator's instructions per request (benches/vs-wrk.sh).
    last: Option<(Vec<u8>, Head)>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Conn")
    }
}

/// What a response head says: its length, status, body framing and whether the connection
/// stays open after it.
type Head = (usize, u16, Framing, bool);

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

impl Conn {
    /// A connection over `io`.
    pub(crate) fn new(io: impl Io + 'static) -> Self {
        Self {
            io: Box::new(io),
            buf: BytesMut::with_capacity(READ_BUF),
            out: Vec::with_capacity(2 * 1024),
            last: None,
        }
    }

    /// The response head at the start of the buffer, if complete: the last one's when the
    /// buffer starts with the same bytes (a head ends at its first empty line, so the same
    /// prefix is the same head), else parsed and kept.
    fn head(&mut self) -> Result<Option<Head>, Error> {
        if let Some((bytes, head)) = &self.last {
            if self.buf.starts_with(bytes) {
                return Ok(Some(*head));
            }
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        let parsed = parse_head(&self.buf)?;
        if let Some(head) = parsed {
            let mut bytes = self.last.take().map(|(b, _)| b).unwrap_or_default();
            bytes.clear();
            bytes.extend_from_slice(&self.buf[..head.0]);
            self.last = Some((bytes, head));
        }
        Ok(parsed)
    }

    /// Sends `head` (a request line and headers, each ending in CRLF, up to but without
    /// `content-length`), the body's length and the body; reads the answer, skipping interim
    /// (1xx) responses; bodies over `limit` bytes are an error.
    pub(crate) async fn post(
        &mut self,
        head: &[u8],
        body: &[u8],
        limit: usize,
    ) -> Result<Response, Error> {
        self.out.clear();
        self.out.extend_from_slice(head);
        self.out.extend_from_slice(b"content-length: ");
        self.out
            .extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        self.out.extend_from_slice(b"\r\n\r\n");
        if let Err(e) = self.write(body).await {
            return Err(if gone(&e) {
                Error::Closed(e.to_string())
            } else {
                Error::Io(e)
            });
        }
        // The buffer is empty: a connection with bytes left after an answer is never reused.
        let mut answered = false;
        loop {
            let (head_len, status, framing, keep_alive) = loop {
                if let Some(parsed) = self.head()? {
                    break parsed;
                }
                if self.buf.len() > MAX_HEAD {
                    return Err(Error::Protocol(format!(
                        "response head over {MAX_HEAD} bytes"
                    )));
                }
                match self.fill().await {
                    Ok(0) if !answered && self.buf.is_empty() => {
                        return Err(Error::Closed("end of stream".into()))
                    }
                    Ok(0) => {
                        return Err(Error::Protocol(
                            "connection closed inside the response head".into(),
                        ))
                    }
                    Ok(_) => answered = true,
                    Err(e) if !answered && gone(&e) => return Err(Error::Closed(e.to_string())),
                    Err(e) => return Err(Error::Io(e)),
                }
            };
            self.buf.advance(head_len);
            // 100 Continue and other interim answers precede the real one (101 is not asked for).
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            let framing = match status {
                204 | 304 => Framing::Length(0),
                _ => framing,
            };
            let (body, reusable) = match framing {
                Framing::Length(n) => (self.length(n, limit).await?, keep_alive),
                Framing::Chunked => (self.chunked(limit).await?, keep_alive),
                Framing::Close => (self.until_close(limit).await?, false),
            };
            // Extra bytes after the answer: the framing cannot be trusted for another request.
            let keep_alive = reusable && self.buf.is_empty();
            return Ok(Response {
                status,
                body,
                keep_alive,
            });
        }
    }

    /// Writes the head in `out` and `body` in one write: vectored where the stream supports it
    /// (TCP), so that the body is not copied behind the head, else copied behind it.
    async fn write(&mut self, body: &[u8]) -> io::Result<()> {
        let Self { io, out, .. } = self;
        if !io.is_write_vectored() {
            out.extend_from_slice(body);
            io.write_all(out).await?;
            return io.flush().await;
        }
        let mut slices = [io::IoSlice::new(out), io::IoSlice::new(body)];
        let mut left = &mut slices[..];
        while !left.is_empty() {
            let n = io.write_vectored(left).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            io::IoSlice::advance_slices(&mut left, n);
        }
        io.flush().await
    }

    /// Reads more bytes into the buffer; 0 at the end of the stream.
    async fn fill(&mut self) -> io::Result<usize> {
        // An empty buffer starts over at its beginning (`reserve` moves back to the start of the
        // allocation once the last answer's body is dropped), so a kept-alive connection's
        // answers land on the same few cache lines instead of walking through 8 KB of cold
        // memory each (with 64 connections, a walk over half a megabyte).
        if self.buf.is_empty() || self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_BUF);
        }
        self.io.read_buf(&mut self.buf).await
    }

    /// Reads until the buffer holds `n` bytes.
    async fn need(&mut self, n: usize) -> Result<(), Error> {
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                return Err(Error::Protocol(
                    "connection closed inside the response body".into(),
                ));
            }
        }
        Ok(())
    }

    async fn length(&mut self, n: usize, limit: usize) -> Result<Bytes, Error> {
        if n > limit {
            return Err(Error::TooLarge(limit));
        }
        self.need(n).await?;
        Ok(self.buf.split_to(n).freeze())
    }

    async fn chunked(&mut self, limit: usize) -> Result<Bytes, Error> {
        let mut body = BytesMut::new();
        loop {
            let (line, size) = loop {
                match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((line, size))) => break (line, size),
                    Ok(httparse::Status::Partial) => {
                        if self.buf.len() > MAX_HEAD {
                            return Err(Error::Protocol("chunk size line too long".into()));
                        }
                        let at = self.buf.len() + 1;
                        self.need(at).await?;
                    }
                    Err(_) => return Err(Error::Protocol("invalid chunk size".into())),
                }
            };
            self.buf.advance(line);
            if size == 0 {
                return self.trailers().await.map(|()| body.freeze());
            }
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size > limit.saturating_sub(body.len()) {
                return Err(Error::TooLarge(limit));
            }
            self.need(size + 2).await?;
            body.extend_from_slice(&self.buf[..size]);
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(Error::Protocol("chunk not followed by CRLF".into()));
            }
            self.buf.advance(size + 2);
        }
    }

    /// Skips the trailer section after the last chunk (lines up to an empty one).
    async fn trailers(&mut self) -> Result<(), Error> {
        loop {
            match self.buf.windows(2).position(|w| w == b"\r\n") {
                Some(0) => {
                    self.buf.advance(2);
                    return Ok(());
                }
                Some(i) => self.buf.advance(i + 2),
                None if self.buf.len() > MAX_HEAD => {
                    return Err(Error::Protocol("trailers too long".into()))
                }
                None => {
                    let at = self.buf.len() + 1;
                    self.need(at).await?;
                }
            }
        }
    }

    async fn until_close(&mut self, limit: usize) -> Result<Bytes, Error> {
        loop {
            if self.buf.len() > limit {
                return Err(Error::TooLarge(limit));
            }
            if self.fill().await? == 0 {
                return Ok(self.buf.split().freeze());
            }
        }
    }
}

/// The response head in `buf`, if complete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, Error> {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Error::Protocol(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    let http11 = resp.version == Some(1);
    let (mut length, mut chunked, mut close, mut keep) = (None, false, false, false);
    for h in resp.headers.iter() {
        let value = || std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = value();
            let n: usize = v
                .parse()
                .map_err(|_| Error::Protocol(format!("content-length {v:?}")))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Protocol("conflicting content-length headers".into()));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides (RFC 9112 §6.3).
            chunked = value()
                .rsplit(',')
                .next()
                .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for t in value().split(',').map(str::trim) {
                close |= t.eq_ignore_ascii_case("close");
                keep |= t.eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3).
    let framing = match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::Close,
    };
    let keep_alive = if http11 { !close } else { keep && !close };
    Ok(Some((len, status, framing, keep_alive)))
}

/// The peer closed or reset the connection.
fn gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const HEAD: &[u8] = b"POST /api/x HTTP/1.1\r\nhost: h\r\n";

    /// A connection whose server reads one request and answers with `reply`, written in pieces
    /// of at most `piece` bytes; returns what the server read.
    async fn exchange(reply: &'static [u8], piece: usize) -> (Result<Response, Error>, Vec<u8>) {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let srv = tokio::spawn(async move {
            let mut got = vec![0u8; 4096];
            let n = server.read(&mut got).await.unwrap();
            got.truncate(n);
            for c in reply.chunks(piece) {
                server.write_all(c).await.unwrap();
                tokio::task::yield_now().await;
            }
            got
        });
        let mut c = Conn::new(client);
        let r = c.post(HEAD, b"{\"a\":1}", 1 << 20).await;
        (r, srv.await.unwrap())
    }

    #[tokio::test]
    async fn sends_one_request_with_its_length_and_reads_a_sized_answer() {
        let (r, sent) = exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 3).await;
        assert_eq!(
            sent,
            b"POST /api/x HTTP/1.1\r\nhost: h\r\ncontent-length: 7\r\n\r\n{\"a\":1}"
        );
        let r = r.unwrap();
        assert_eq!(
            (r.status, &r.body[..], r.keep_alive),
            (200, &b"hello"[..], true)
        );
    }

    #[tokio::test]
    async fn a_repeated_head_reads_as_before_and_a_changed_one_afresh() {
        let same = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        let replies: [&[u8]; 5] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nworld",
            b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n01234567890123456789012345678901234567890123456789",
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nno",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nagain",
        ];
        let expected = [
            (200, &b"hello"[..], true),
            (200, b"world", true),
            (
                200,
                b"01234567890123456789012345678901234567890123456789",
                true,
            ),
            (503, b"no", true),
            (200, b"again", false),
        ];
        assert!(replies[..2].iter().all(|r| r.starts_with(same)));
        for piece in [1, 3, 1000] {
            let (client, mut server) = tokio::io::duplex(64 * 1024);
            let srv = tokio::spawn(async move {
                let mut got = vec![0u8; 4096];
                for reply in replies {
                    let _ = server.read(&mut got).await.unwrap();
                    for c in reply.chunks(piece) {
                        server.write_all(c).await.unwrap();
                        tokio::task::yield_now().await;
                    }
                }
            });
            let mut c = Conn::new(client);
            for (i, want) in expected.iter().enumerate() {
                let r = c.post(HEAD, b"{}", 1 << 20).await.unwrap();
                assert_eq!(
                    (r.status, &r.body[..], r.keep_alive),
                    *want,
                    "answer {i}, piece {piece}"
                );
            }
            srv.await.unwrap();
        }
    }

    #[tokio::test]
    async fn reads_chunked_answers_with_trailers_and_skips_interim_ones() {
        let reply = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nUnre\r\n9\r\ncognised.\r\n0\r\nX-T: 1\r\n\r\n";
        for piece in [1, 7, 1000] {
            let r = exchange(reply, piece).await.0.unwrap();
            assert_eq!(
                (r.status, &r.body[..]),
                (400, &b"Unrecognised."[..]),
                "piece {piece}"
            );
            assert!(r.keep_alive);
        }
    }

    #[tokio::test]
    async fn close_delimited_and_close_marked_answers_end_the_connection() {
        let r = exchange(b"HTTP/1.1 200 OK\r\n\r\n{\"x\":1}", 4)
            .await
            .0
            .unwrap();
        assert_eq!((&r.body[..], r.keep_alive), (&b"{\"x\":1}"[..], false));
        let r = exchange(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            100,
        )
        .await
        .0
        .unwrap();
        assert!(!r.keep_alive);
        let r = exchange(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 100)
            .await
            .0
            .unwrap();
        assert!(!r.keep_alive, "HTTP/1.0 without keep-alive");
        let r = exchange(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            100,
        )
        .await
        .0
        .unwrap();
        assert!(r.keep_alive);
        let r = exchange(b"HTTP/1.1 204 No Content\r\n\r\n", 100)
            .await
            .0
            .unwrap();
        assert!(r.body.is_empty() && r.keep_alive);
    }

    #[tokio::test]
    async fn bad_answers_are_errors_not_panics() {
        let cases: [(&'static [u8], &str); 6] = [
            (b"garbage\r\n\r\n", "invalid HTTP response"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                "content-length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
                "inside the response body",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "chunk size",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
                "CRLF",
            ),
            (b"HTTP/1.1 200", "inside the response head"),
        ];
        for (reply, want) in cases {
            let e = exchange(reply, 100).await.0.unwrap_err();
            assert!(e.to_string().contains(want), "{e} should say {want}");
        }
        let (client, mut server) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            let mut b = [0u8; 1024];
            let _ = server.read(&mut b).await;
            let _ = server
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n")
                .await;
        });
        let e = Conn::new(client)
            .post(HEAD, b"", 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::TooLarge(_)), "{e}");
    }

    #[tokio::test]
    async fn a_connection_closed_before_any_answer_says_so() {
        let (client, mut server) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            let mut b = [0u8; 1024];
            let _ = server.read(&mut b).await;
            drop(server);
        });
        let e = Conn::new(client).post(HEAD, b"", 1024).await.unwrap_err();
        assert!(matches!(e, Error::Closed(_)), "{e}");
    }
}
