//! HTTP/1.1 to the local app for requests without a body (GET, HEAD, DELETE, ...: most
//! requests), in the request's own task: write the request head, read the response head, and
//! read the body as the caller polls it. The connection goes back to its pool (see
//! [`crate::app`]) the moment the body's last byte is read; a small body that arrived with the
//! head is handed over whole and the connection is back in the pool before the response leaves.
//!
//! ```text
//! request task ─head─► app socket ─response head + body─► request task ─► caller
//! ```
//!
//! Why not `hyper::client::conn::http1` for these: every request goes through a channel to the
//! connection's own task, which writes it, reads the response, and hands head and body back
//! through two more channels: four to five task wake-ups per request, on the busiest path of the
//! server sidecar. Requests with a body, upgrades and CONNECT still go through hyper, which
//! writes a body while reading the response.
//!
//! Response framing follows RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304; chunked when
//! `Transfer-Encoding` ends in `chunked` (trailers become HTTP trailers); else `Content-Length`
//! (several differing values are an error); else the body runs to the end of the connection,
//! which then is not reused. Interim 1xx responses are skipped.

use crate::httputil::{Body, BoxError};
use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

/// Longest response head (status line and headers) or trailer section taken from the app (the
/// hyper connections of [`crate::app`] have the same limit).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head (hyper's default too).
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Room made in the read buffer before each read.
const READ_SIZE: usize = 8 * 1024;

/// What went wrong in an exchange with the app.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the app closed the connection before responding")]
    Closed,
    #[error("the app closed the connection in the middle of a response body")]
    Truncated,
    #[error("invalid response from the app: {0}")]
    Invalid(&'static str),
}

/// An exchange that failed. `retry` holds the request when sending it again on another
/// connection is safe: the app cannot have acted on it (the write failed, or the connection
/// closed with no response and the method is idempotent).
pub struct Failed {
    pub error: Error,
    pub retry: Option<Request<Body>>,
}

/// Whether [`Conn::send`] can carry `req`: no body, no upgrade, not CONNECT.
pub fn eligible(req: &Request<Body>) -> bool {
    req.body().is_end_stream()
        && req.method() != Method::CONNECT
        && !req.headers().contains_key(UPGRADE)
        && req.headers().get_all(CONTENT_LENGTH).iter().all(|v| v == "0")
}

/// One HTTP/1.1 connection to the app.
pub struct Conn {
    io: TcpStream,
    /// Read and not yet used.
    rbuf: BytesMut,
    /// The request head being written (kept for its allocation).
    wbuf: Vec<u8>,
}

impl Conn {
    pub fn new(io: TcpStream) -> Conn {
        Conn { io, rbuf: BytesMut::new(), wbuf: Vec::new() }
    }

    /// For an idle connection: whether the app has neither closed it nor sent anything unasked.
    /// Costs a system call only when the socket has news.
    pub fn is_usable(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                matches!(self.io.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Sends `req` (see [`eligible`]) and reads the response head. `release` gets the
    /// connection back once the response body has been read whole, if it can be reused.
    pub async fn send(
        mut self,
        req: Request<Body>,
        release: impl FnOnce(Conn) + Send + Sync + Unpin + 'static,
    ) -> Result<Response<Body>, Failed> {
        self.wbuf.clear();
        encode_head(&req, &mut self.wbuf);
        if let Err(e) = self.io.write_all(&self.wbuf).await {
            return Err(Failed { error: e.into(), retry: Some(req) });
        }
        let head = match self.read_head().await {
            Ok(head) => head,
            Err(error) => {
                let retry = (matches!(error, Error::Closed) && req.method().is_idempotent()).then_some(req);
                return Err(Failed { error, retry });
            }
        };
        let (framing, keep_alive) = framing(req.method(), &head).map_err(|error| Failed { error, retry: None })?;
        let mut resp = Response::new(());
        *resp.status_mut() = head.status;
        *resp.version_mut() = Version::HTTP_11;
        *resp.headers_mut() = head.headers;
        Ok(resp.map(|()| self.into_body(framing, keep_alive, release)))
    }

    /// Reads until a final (non-1xx) response head is complete.
    async fn read_head(&mut self) -> Result<Head, Error> {
        let mut got_any = false;
        loop {
            if !self.rbuf.is_empty() {
                match parse_head(&self.rbuf)? {
                    Some((len, _)) if len > MAX_HEAD => return Err(Error::Invalid("response head over 64 KiB")),
                    Some((len, head)) => {
                        self.rbuf.advance(len);
                        if head.status == StatusCode::SWITCHING_PROTOCOLS {
                            return Err(Error::Invalid(
                                "101 Switching Protocols to a request that asked for no upgrade",
                            ));
                        }
                        if !head.status.is_informational() {
                            return Ok(head);
                        }
                        continue;
                    }
                    None if self.rbuf.len() > MAX_HEAD => return Err(Error::Invalid("response head over 64 KiB")),
                    None => {}
                }
            }
            match std::future::poll_fn(|cx| self.poll_fill(cx)).await {
                Ok(0) if got_any => return Err(Error::Invalid("connection closed in the middle of the response head")),
                Ok(0) => return Err(Error::Closed),
                Ok(_) => got_any = true,
                Err(e) if !got_any && e.kind() == io::ErrorKind::ConnectionReset => return Err(Error::Closed),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads what the socket has into `rbuf`; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.io.poll_read_ready(cx))?;
            if self.rbuf.capacity() - self.rbuf.len() < READ_SIZE / 4 {
                self.rbuf.reserve(READ_SIZE);
            }
            match self.io.try_read_buf(&mut self.rbuf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                res => return Poll::Ready(res),
            }
        }
    }

    fn into_body(
        mut self,
        framing: Framing,
        keep_alive: bool,
        release: impl FnOnce(Conn) + Send + Sync + Unpin + 'static,
    ) -> Body {
        // The common case: the whole body came with the head. Hand it over as one piece and
        // the connection back now.
        let whole = match framing {
            Framing::Length(n) if n <= self.rbuf.len() as u64 => Some(self.rbuf.split_to(n as usize).freeze()),
            _ => None,
        };
        if let Some(data) = whole {
            self.give_back(keep_alive, release);
            return crate::httputil::full(data);
        }
        Streaming { conn: Some(self), framing, keep_alive, release: Some(release) }.boxed()
    }

    /// After a response has been read whole: hands the connection to `release` if it can take
    /// another request (the response allowed it and nothing unasked followed), else closes it.
    fn give_back(self, keep_alive: bool, release: impl FnOnce(Conn)) {
        if keep_alive && self.rbuf.is_empty() {
            self.quiet();
            release(self);
        }
    }

    /// Forgets readiness the last read left behind (it read a whole response without seeing
    /// "would block"), so that [`Conn::is_usable`] costs no system call unless the socket has
    /// news since: the app closing the connection or writing to it wakes it again. (On a
    /// multi-threaded runtime, news that another thread's driver took in between our last read
    /// and this is forgotten too; the next request then finds the connection closed and, if
    /// idempotent, is sent again.)
    fn quiet(&self) {
        let _ = self.io.try_io(Interest::READABLE, || Err::<(), _>(io::ErrorKind::WouldBlock.into()));
    }
}

/// A response's status and header fields.
#[derive(Debug)]
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
}

/// How the end of a response body is found.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    /// This many bytes remain.
    Length(u64),
    Chunked(Chunk),
    /// Until the app closes the connection.
    Close,
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// In chunk data, this many bytes left.
    Data(u64),
    /// At the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: the trailer section.
    Trailers,
}

/// Writes the request head: origin-form target, HTTP/1.1, the fields as they are (the caller
/// has removed hop-by-hop ones and set `Host`).
fn encode_head(req: &Request<Body>, out: &mut Vec<u8>) {
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.uri().path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // A method that normally carries a body states that this one has none (as hyper does).
    let expects_body = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
    if expects_body && !req.headers().contains_key(CONTENT_LENGTH) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A complete response head at the start of `buf` and its length, or `None` if more is needed.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, Head)>, Error> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut fields);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::Invalid("more than 100 header fields")),
        Err(_) => return Err(Error::Invalid("malformed status line or header field")),
    };
    let status = resp.code.and_then(|c| StatusCode::from_u16(c).ok()).ok_or(Error::Invalid("bad status code"))?;
    let version = if resp.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    let headers = to_header_map(resp.headers)?;
    Ok(Some((len, Head { status, version, headers })))
}

fn to_header_map(fields: &[httparse::Header<'_>]) -> Result<HeaderMap, Error> {
    let mut headers = HeaderMap::with_capacity(fields.len());
    for f in fields {
        let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| Error::Invalid("bad header field name"))?;
        let value = HeaderValue::from_bytes(f.value).map_err(|_| Error::Invalid("bad header field value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// The body's framing and whether the connection can take another request after it.
fn framing(method: &Method, head: &Head) -> Result<(Framing, bool), Error> {
    // The comma-separated tokens of a header field, without allocating (this runs per response).
    let tokens = |name| {
        head.headers.get_all(name).into_iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim)
    };
    let mut keep_alive = match head.version {
        Version::HTTP_10 => tokens(CONNECTION).any(|t| t.eq_ignore_ascii_case("keep-alive")),
        _ => !tokens(CONNECTION).any(|t| t.eq_ignore_ascii_case("close")),
    };
    let status = head.status;
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Length(0), keep_alive));
    }
    if head.headers.contains_key(TRANSFER_ENCODING) {
        // With a Content-Length as well, the message is suspect: read it as chunked, never reuse.
        keep_alive &= !head.headers.contains_key(CONTENT_LENGTH);
        return Ok(match tokens(TRANSFER_ENCODING).next_back() {
            Some(t) if t.eq_ignore_ascii_case("chunked") => (Framing::Chunked(Chunk::Size), keep_alive),
            _ => (Framing::Close, false),
        });
    }
    let mut length = None;
    for v in head.headers.get_all(CONTENT_LENGTH) {
        for part in v.to_str().map_err(|_| Error::Invalid("bad content-length"))?.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Error::Invalid("bad content-length"));
            }
            let n: u64 = part.parse().map_err(|_| Error::Invalid("bad content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Invalid("differing content-length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => (Framing::Length(n), keep_alive),
        None => (Framing::Close, false),
    })
}

/// A response body read from the connection as it is polled.
struct Streaming<R> {
    /// `None` once the body has ended.
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    release: Option<R>,
}

impl<R: FnOnce(Conn)> Streaming<R> {
    /// The body has ended: the connection goes back if it can take another request.
    fn finish(&mut self) {
        if let (Some(conn), Some(release)) = (self.conn.take(), self.release.take()) {
            conn.give_back(self.keep_alive, release);
        }
    }

    fn step(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else { return Poll::Ready(None) };
            match &mut self.framing {
                Framing::Length(0) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(left) => {
                    if !conn.rbuf.is_empty() {
                        let n = (*left).min(conn.rbuf.len() as u64);
                        *left -= n;
                        let data = conn.rbuf.split_to(n as usize).freeze();
                        if *left == 0 {
                            self.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::Close => {
                    if !conn.rbuf.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(conn.rbuf.split().freeze()))));
                    }
                }
                Framing::Chunked(state) => match decode_chunked(state, &mut conn.rbuf)? {
                    Decoded::Data(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Decoded::End(trailers) => {
                        self.finish();
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                    }
                    Decoded::NeedMore => {}
                },
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if self.framing == Framing::Close => {
                    self.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(Error::Truncated)));
                }
                Ok(_) => {}
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }
}

impl<R: FnOnce(Conn) + Send + Sync + Unpin> http_body::Body for Streaming<R> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let res = this.step(cx);
        if let Poll::Ready(Some(Err(_))) = res {
            // A broken exchange: the connection is not reused.
            this.conn = None;
        }
        res.map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.framing == Framing::Length(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) if self.conn.is_some() => SizeHint::with_exact(n),
            _ if self.conn.is_none() => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// What one step of the chunked decoder produced.
#[derive(Debug, PartialEq)]
enum Decoded {
    Data(Bytes),
    /// The body ended, with these trailers if any.
    End(Option<HeaderMap>),
    NeedMore,
}

/// Decodes what `buf` holds of a chunked body (RFC 9112 §7.1), consuming it.
fn decode_chunked(state: &mut Chunk, buf: &mut BytesMut) -> Result<Decoded, Error> {
    loop {
        match state {
            Chunk::Size => {
                let Some(eol) = buf.iter().position(|&b| b == b'\n') else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err(Error::Invalid("chunk-size line too long"));
                    }
                    return Ok(Decoded::NeedMore);
                };
                let line = buf.split_to(eol + 1);
                let line = line.strip_suffix(b"\r\n").or_else(|| line.strip_suffix(b"\n")).unwrap_or(&line);
                // Extensions (`;name=value`) are ignored.
                let digits = line.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
                if digits.is_empty() || digits.len() > 16 {
                    return Err(Error::Invalid("bad chunk size"));
                }
                let size = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| u64::from_str_radix(d, 16).ok())
                    .ok_or(Error::Invalid("bad chunk size"))?;
                *state = if size == 0 { Chunk::Trailers } else { Chunk::Data(size) };
            }
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = (*left).min(buf.len() as u64);
                *left -= n;
                let data = buf.split_to(n as usize).freeze();
                if *left == 0 {
                    *state = Chunk::DataEnd;
                }
                return Ok(Decoded::Data(data));
            }
            Chunk::DataEnd => {
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                } else if buf.starts_with(b"\n") {
                    buf.advance(1);
                } else if buf.is_empty() || buf[..] == b"\r"[..] {
                    return Ok(Decoded::NeedMore);
                } else {
                    return Err(Error::Invalid("chunk data longer than its size"));
                }
                *state = Chunk::Size;
            }
            Chunk::Trailers => {
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                return match httparse::parse_headers(buf, &mut fields) {
                    Ok(httparse::Status::Complete((len, _))) if len > MAX_HEAD => {
                        Err(Error::Invalid("trailers over 64 KiB"))
                    }
                    Ok(httparse::Status::Complete((len, fields))) => {
                        let trailers = to_header_map(fields)?;
                        buf.advance(len);
                        Ok(Decoded::End((!trailers.is_empty()).then_some(trailers)))
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                        Err(Error::Invalid("trailers over 64 KiB"))
                    }
                    Ok(httparse::Status::Partial) => Ok(Decoded::NeedMore),
                    Err(_) => Err(Error::Invalid("malformed trailer field")),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes()).unwrap().unwrap().1
    }

    #[test]
    fn framing_follows_rfc_9112() {
        use Framing::*;
        let (get, chunked) = (&Method::GET, Chunked(Chunk::Size));
        // (method, response head, framing, keep-alive)
        let cases = [
            (get, "HTTP/1.1 200 OK\r\ncontent-length: 5", Length(5), true),
            (&Method::HEAD, "HTTP/1.1 200 OK\r\ncontent-length: 5", Length(0), true),
            (get, "HTTP/1.1 204 No Content", Length(0), true),
            (get, "HTTP/1.1 304 Not Modified\r\ncontent-length: 9", Length(0), true),
            (get, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked", chunked, true),
            (get, "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip", Close, false),
            // Both: chunked wins and the connection is not reused.
            (get, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3", chunked, false),
            (get, "HTTP/1.1 200 OK", Close, false),
            (get, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close", Length(2), false),
            (get, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nConnection: Keep-Alive, Close", Length(2), false),
            (get, "HTTP/1.0 200 OK\r\ncontent-length: 2", Length(2), false),
            (get, "HTTP/1.0 200 OK\r\ncontent-length: 2\r\nConnection: Keep-Alive", Length(2), true),
            (get, "HTTP/1.1 200 OK\r\ncontent-length: 4, 4", Length(4), true),
        ];
        for (method, text, expected, keep_alive) in cases {
            let got = framing(method, &head(&format!("{text}\r\n\r\n"))).unwrap();
            assert_eq!(got, (expected, keep_alive), "{method} -> {text:?}");
        }
        for bad in [
            "content-length: 4\r\ncontent-length: 5",
            "content-length: -1",
            "content-length: +4",
            "content-length: 4 4",
        ] {
            let h = head(&format!("HTTP/1.1 200 OK\r\n{bad}\r\n\r\n"));
            assert!(matches!(framing(get, &h), Err(Error::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn heads_that_are_refused() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le").unwrap().is_none());
        assert!(matches!(parse_head(b"garbage\r\n\r\n"), Err(Error::Invalid(_))));
        assert!(matches!(parse_head(b"HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n"), Err(Error::Invalid(_))));
        let many: String = (0..101).map(|i| format!("x-{i}: v\r\n")).collect();
        assert!(matches!(parse_head(format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_bytes()), Err(Error::Invalid(_))));
    }

    #[test]
    fn chunked_bodies_decode_in_any_split() {
        let wire = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nx-sum: 7\r\n\r\n";
        for split in 0..=wire.len() {
            let (mut state, mut buf, mut body, mut trailers) = (Chunk::Size, BytesMut::new(), Vec::new(), None);
            for part in [&wire[..split], &wire[split..]] {
                buf.extend_from_slice(part);
                loop {
                    match decode_chunked(&mut state, &mut buf).unwrap() {
                        Decoded::Data(d) => body.extend_from_slice(&d),
                        Decoded::End(t) => {
                            trailers = t;
                            break;
                        }
                        Decoded::NeedMore => break,
                    }
                }
            }
            assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.", "split at {split}");
            assert_eq!(trailers.unwrap()["x-sum"], "7", "split at {split}");
            assert!(buf.is_empty());
        }
        for bad in [&b"zz\r\n"[..], b"4\r\nWikiX\r\n", b"11111111111111111\r\n"] {
            let mut buf = BytesMut::from(bad);
            let mut state = Chunk::Size;
            let res = (0..4).try_for_each(|_| decode_chunked(&mut state, &mut buf).map(drop));
            assert!(res.is_err(), "{bad:?}");
        }
    }

    /// An app on 127.0.0.1 that answers each request on its one connection with the next canned
    /// reply (an empty one: close instead), then closes; and the request heads it saw.
    async fn app(replies: Vec<&'static [u8]>) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(vec![]));
        let log = seen.clone();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            for reply in replies {
                let mut req = vec![];
                while !req.ends_with(b"\r\n\r\n") {
                    let mut b = [0u8; 1];
                    if s.read(&mut b).await.unwrap() == 0 {
                        return;
                    }
                    req.push(b[0]);
                }
                log.lock().unwrap().push(String::from_utf8(req).unwrap());
                if reply.is_empty() {
                    return; // close without answering
                }
                s.write_all(reply).await.unwrap();
            }
            // Then the app closes the connection.
        });
        (addr, seen)
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path).header("host", "api").body(crate::httputil::full("")).unwrap()
    }

    async fn body_and_trailers(resp: Response<Body>) -> (Vec<u8>, Option<HeaderMap>) {
        let collected = resp.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (collected.to_bytes().to_vec(), trailers)
    }

    type Back = Arc<Mutex<Option<Conn>>>;
    fn release(back: &Back) -> impl FnOnce(Conn) + Send + Sync + Unpin + 'static {
        let back = back.clone();
        move |c| *back.lock().unwrap() = Some(c)
    }

    #[tokio::test]
    async fn exchanges_over_one_connection_with_every_framing() {
        let (addr, seen) = app(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\ngrpc-status: 0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nto the end",
        ])
        .await;
        let back: Back = Arc::default();
        let conn = Conn::new(TcpStream::connect(addr).await.unwrap());

        let resp = conn.send(get("/a?b=1"), release(&back)).await.ok().unwrap();
        assert_eq!((resp.status(), resp.headers()["x-a"].to_str().unwrap()), (StatusCode::OK, "1"));
        // The whole body came with the head: the connection is back before the body is read.
        let conn = back.lock().unwrap().take().expect("released at once");
        assert_eq!(body_and_trailers(resp).await, (b"hello".to_vec(), None));
        assert!(conn.is_usable());

        let resp = conn.send(get("/chunked"), release(&back)).await.ok().unwrap();
        let (body, trailers) = body_and_trailers(resp).await;
        assert_eq!((body, trailers.unwrap()["grpc-status"].to_str().unwrap()), (b"abc".to_vec(), "0"));
        let conn = back.lock().unwrap().take().expect("released after the last chunk");

        let resp = conn.send(get("/empty"), release(&back)).await.ok().unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert!(resp.body().is_end_stream());
        let conn = back.lock().unwrap().take().expect("released with no body");

        let resp = conn.send(get("/close"), release(&back)).await.ok().unwrap();
        assert_eq!(body_and_trailers(resp).await, (b"to the end".to_vec(), None));
        assert!(back.lock().unwrap().is_none(), "a body delimited by close ends its connection");

        let seen = seen.lock().unwrap();
        assert!(seen[0].starts_with("GET /a?b=1 HTTP/1.1\r\n") && seen[0].contains("host: api\r\n"), "{}", seen[0]);
        assert_eq!(seen.len(), 4);
    }

    #[tokio::test]
    async fn a_connection_the_app_closed_is_noticed_and_the_request_handed_back() {
        let (addr, _) = app(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", b""]).await;
        let back: Back = Arc::default();
        let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
        let resp = conn.send(get("/"), release(&back)).await.ok().unwrap();
        drop(resp);
        let conn = back.lock().unwrap().take().unwrap();
        // The app reads the next request and closes without a word: an idempotent request comes
        // back for another connection.
        let failed = conn.send(get("/again"), release(&back)).await.err().unwrap();
        assert!(matches!(failed.error, Error::Closed));
        assert!(failed.retry.is_some());
    }

    #[tokio::test]
    async fn garbage_and_truncation_are_errors_not_reuse() {
        let (addr, _) = app(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"]).await;
        let back: Back = Arc::default();
        let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
        let resp = conn.send(get("/"), release(&back)).await.ok().unwrap();
        // The app's task ends after the reply, closing the connection mid-body.
        assert!(resp.into_body().collect().await.is_err());
        assert!(back.lock().unwrap().is_none());

        let huge: &'static [u8] =
            format!("HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n", "a".repeat(MAX_HEAD)).leak().as_bytes();
        for reply in [&b"SSH-2.0-OpenSSH\r\n\r\n"[..], huge] {
            let (addr, _) = app(vec![reply]).await;
            let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
            let failed = conn.send(get("/"), release(&back)).await.err().unwrap();
            assert!(matches!(failed.error, Error::Invalid(_)) && failed.retry.is_none(), "{}", failed.error);
        }
    }

    #[test]
    fn eligible_requests_and_their_heads() {
        assert!(eligible(&get("/")));
        assert!(!eligible(&Request::post("/").body(crate::httputil::full("x")).unwrap()));
        assert!(!eligible(&Request::get("/").header("upgrade", "websocket").body(crate::httputil::full("")).unwrap()));
        let mut out = vec![];
        encode_head(&Request::post("/p").header("x-b", "2").body(crate::httputil::full("")).unwrap(), &mut out);
        assert_eq!(out, b"POST /p HTTP/1.1\r\nx-b: 2\r\ncontent-length: 0\r\n\r\n");
    }
}
