//! Protocol detection: read the first bytes of a connection (with a deadline), classify them, and
//! hand on a stream that replays them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What a client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    Http1,
    Http2,
    Tls,
    Tcp,
}

impl Detected {
    pub fn as_str(self) -> &'static str {
        match self {
            Detected::Http1 => "http1",
            Detected::Http2 => "http2",
            Detected::Tls => "tls",
            Detected::Tcp => "tcp",
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Methods decided on at once, without waiting for the end of the request line.
const METHODS: &[&[u8]] =
    &[b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"CONNECT ", b"OPTIONS ", b"TRACE ", b"PATCH "];
/// The most a client may send before detection decides. An HTTP/1 request line (after any empty
/// lines) that has not ended by then is taken as HTTP, never as opaque TCP.
pub const MAX_DETECT: usize = 8 * 1024;
/// Longest method token read before deciding the bytes are not HTTP.
const MAX_METHOD: usize = 32;

/// Classifies a prefix from an app (the client sidecar's detection); `None` means more bytes are
/// needed to decide.
///
/// HTTP/1: after leading empty lines (CRLF or a bare LF, which servers skip, RFC 9112 §2.2), a
/// method in capitals (`A-Z`, `-`, `_`: the registered methods, `PROPFIND` as well as `GET`), a
/// space, and a line ending in `HTTP/<d>.<d>`. Any other first byte decides TCP at once, so a
/// text protocol's `hello` is not held up. The server sidecar checks opaque TCP with the wider
/// [`classify_any_method`], so a request with a lowercase method that passes here as TCP is
/// refused there, never spliced to the app.
pub fn classify(buf: &[u8]) -> Option<Detected> {
    classify_with(buf, |b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
}

/// Like [`classify`], with any method token (`tchar`s, RFC 9110 §5.6.2: some servers take `get`
/// or `x-custom`): what the server sidecar refuses over opaque TCP.
pub fn classify_any_method(buf: &[u8]) -> Option<Detected> {
    classify_with(buf, is_tchar)
}

fn classify_with(buf: &[u8], method_char: fn(u8) -> bool) -> Option<Detected> {
    if buf.is_empty() {
        return None;
    }
    if buf[0] == 0x16 {
        return Some(Detected::Tls);
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        if n == H2_PREFACE.len() {
            return Some(Detected::Http2);
        }
        return None;
    }
    match http1_request_line(buf, method_char) {
        Some(true) => Some(Detected::Http1),
        Some(false) => Some(Detected::Tcp),
        None => None,
    }
}

/// Whether `buf` starts as an HTTP/1 request (see [`classify`]); `None`: not known yet.
fn http1_request_line(buf: &[u8], method_char: fn(u8) -> bool) -> Option<bool> {
    let start = buf.iter().position(|b| !matches!(b, b'\r' | b'\n'))?;
    let line = &buf[start..];
    if METHODS.iter().any(|m| line.starts_with(m)) {
        return Some(true);
    }
    let token = line.iter().take_while(|b| method_char(**b)).count();
    if token == 0 || token > MAX_METHOD {
        return Some(false);
    }
    if token == line.len() {
        return None;
    }
    if line[token] != b' ' {
        return Some(false);
    }
    let end = line.iter().position(|b| *b == b'\n')?;
    let line = line[..end].strip_suffix(b"\r").unwrap_or(&line[..end]);
    Some(ends_with_http_version(line))
}

/// `... HTTP/<digit>.<digit>` (RFC 9112 §2.3), as parsers read it.
fn ends_with_http_version(line: &[u8]) -> bool {
    match line.len().checked_sub(9).map(|i| &line[i..]) {
        Some([b' ', b'H', b'T', b'T', b'P', b'/', major, b'.', minor]) => {
            major.is_ascii_digit() && minor.is_ascii_digit()
        }
        _ => false,
    }
}

/// RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Reads until the protocol is known or `timeout` passes. A client that sends nothing in time
/// (a server-speaks-first protocol) is opaque TCP. One that has started what may be an HTTP
/// request (empty lines, a method) and then stalls past `timeout` or sends more than
/// [`MAX_DETECT`] bytes is HTTP. One that ends the connection first is TCP: without the end of
/// a request line, no server reads a request.
pub async fn detect<S: AsyncRead + Unpin>(io: &mut S, timeout: Duration) -> io::Result<(Detected, Vec<u8>)> {
    let (d, buf, eof) = read_until_known(io, timeout, MAX_DETECT, classify, Detected::Tcp).await?;
    if d == Detected::Tcp && !eof && !buf.is_empty() && classify(&buf).is_none() {
        return Ok((Detected::Http1, buf));
    }
    Ok((d, buf))
}

/// For a connection already known to be HTTP (a port declared `http1` or `http2`): HTTP/2 with
/// prior knowledge if its first bytes are the connection preface, HTTP/1.x otherwise. Never opaque
/// TCP; a client that sends nothing in time, or closes, is handed to the HTTP/1 server, which
/// closes it.
pub async fn detect_http<S: AsyncRead + Unpin>(io: &mut S, timeout: Duration) -> io::Result<(Detected, Vec<u8>)> {
    let version = |buf: &[u8]| {
        let n = buf.len().min(H2_PREFACE.len());
        if buf[..n] != H2_PREFACE[..n] {
            Some(Detected::Http1)
        } else {
            (n == H2_PREFACE.len()).then_some(Detected::Http2)
        }
    };
    let (d, buf, _) = read_until_known(io, timeout, H2_PREFACE.len(), version, Detected::Http1).await?;
    Ok((d, buf))
}

/// Reads up to `limit` bytes until `decide` knows the protocol; `otherwise` when the limit, the
/// deadline or the end of the stream comes first. The bytes read are returned for replay, and
/// whether the stream ended.
async fn read_until_known<S: AsyncRead + Unpin>(
    io: &mut S,
    timeout: Duration,
    limit: usize,
    decide: impl Fn(&[u8]) -> Option<Detected>,
    otherwise: Detected,
) -> io::Result<(Detected, Vec<u8>, bool)> {
    let mut buf = Vec::with_capacity(limit.min(1024));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(d) = decide(&buf) {
            return Ok((d, buf, false));
        }
        if buf.len() >= limit {
            return Ok((otherwise, buf, false));
        }
        let mut chunk = [0u8; 1024];
        let want = (limit - buf.len()).min(chunk.len());
        match tokio::time::timeout_at(deadline, io.read(&mut chunk[..want])).await {
            Ok(Ok(0)) => return Ok((otherwise, buf, true)),
            Err(_) => return Ok((otherwise, buf, false)),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// A stream that first yields `prefix`, then reads from `inner`.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed { prefix, pos: 0, inner }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classifies() {
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"DELETE /x"), Some(Detected::Http1));
        assert_eq!(classify(b"PRI * HTTP/2.0"), None);
        assert_eq!(classify(H2_PREFACE), Some(Detected::Http2));
        assert_eq!(classify(b"PRIX"), None);
        assert_eq!(classify(b"PRIX\x00"), Some(Detected::Tcp));
        assert_eq!(classify(b"tcp-secret"), Some(Detected::Tcp));
        assert_eq!(classify(b"hello"), Some(Detected::Tcp));
        assert_eq!(classify(&[0x16, 3, 1]), Some(Detected::Tls));
        assert_eq!(classify(b"\x00\x01binary"), Some(Detected::Tcp));
        // Servers skip empty lines before the request line (RFC 9112 §2.2), so must detection.
        assert_eq!(classify(b"\r\n"), None);
        assert_eq!(classify(b"\n\n\r\n"), None);
        assert_eq!(classify(b"\r\nGET / HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"\nPOST /"), Some(Detected::Http1));
        // Methods in capitals other than the usual ones, once the line shows an HTTP version;
        // lowercase ones only for the server sidecar's check of opaque TCP.
        assert_eq!(classify(b"get / HTTP/1.1\r\n"), Some(Detected::Tcp));
        assert_eq!(classify_any_method(b"get / HTTP/1.1"), None);
        assert_eq!(classify_any_method(b"get / HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify_any_method(b"tcp-secret"), None);
        assert_eq!(classify_any_method(b"get key\r\n"), Some(Detected::Tcp));
        assert_eq!(classify(b"PROPFIND /a HTTP/1.0\n"), Some(Detected::Http1));
        assert_eq!(classify(b"\r\nMKCOL / HTTP/1.1\r\n"), Some(Detected::Http1));
        // Text protocols whose lines are not HTTP requests stay opaque.
        assert_eq!(classify(b"SET key value\r\n"), Some(Detected::Tcp));
        assert_eq!(classify(b"PING\r\n"), Some(Detected::Tcp));
        assert_eq!(classify(b"EHLO:x"), Some(Detected::Tcp));
        assert_eq!(classify(&[b'A'; 40]), Some(Detected::Tcp));
    }

    /// A request preceded by empty lines, or one that starts and then stalls past the deadline,
    /// is HTTP, never opaque TCP; one that ends the connection first is TCP.
    #[tokio::test(start_paused = true)]
    async fn empty_lines_and_stalled_request_lines_are_http() {
        let cases: [&[u8]; 4] = [b"\r\n", b"\n\n", b"PROPFIND /x", &[b'\n'; MAX_DETECT + 10]];
        for sent in cases {
            let (mut a, mut b) = tokio::io::duplex(MAX_DETECT * 2);
            b.write_all(sent).await.unwrap();
            let (d, buf) = detect(&mut a, Duration::from_secs(5)).await.unwrap();
            assert_eq!(d, Detected::Http1, "{:?}", String::from_utf8_lossy(sent));
            assert!(sent.starts_with(&buf));
            drop(b);
        }
        let (mut a, mut b) = tokio::io::duplex(64);
        b.write_all(b"PROPF").await.unwrap();
        drop(b);
        assert_eq!(detect(&mut a, Duration::from_secs(5)).await.unwrap(), (Detected::Tcp, b"PROPF".to_vec()));
    }

    #[tokio::test(start_paused = true)]
    async fn silent_client_is_tcp_after_timeout() {
        let (mut a, _b) = tokio::io::duplex(64);
        let (d, buf) = detect(&mut a, Duration::from_secs(5)).await.unwrap();
        assert_eq!((d, buf.len()), (Detected::Tcp, 0));
    }

    #[tokio::test]
    async fn split_preface_is_http2_and_replayed() {
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            b.write_all(&H2_PREFACE[..5]).await.unwrap();
            tokio::task::yield_now().await;
            b.write_all(&H2_PREFACE[5..]).await.unwrap();
            b.write_all(b"rest").await.unwrap();
        });
        let (d, buf) = detect(&mut a, Duration::from_secs(5)).await.unwrap();
        assert_eq!(d, Detected::Http2);
        let mut p = Prefixed::new(buf, a);
        let mut all = vec![0u8; H2_PREFACE.len() + 4];
        p.read_exact(&mut all).await.unwrap();
        assert_eq!(&all[..H2_PREFACE.len()], H2_PREFACE);
        assert_eq!(&all[H2_PREFACE.len()..], b"rest");
    }

    /// A declared HTTP port: the preface (even split) is HTTP/2; anything else, including a
    /// start of the preface that then differs, a silent client and one that closes, is HTTP/1.x
    /// with its bytes kept for the server.
    #[tokio::test(start_paused = true)]
    async fn declared_http_reads_only_the_version() {
        for (sent, want) in [
            (H2_PREFACE, Detected::Http2),
            (&b"GET / HTTP/1.1\r\n"[..], Detected::Http1),
            (&b"PRI * HTTP/1.1\r\n"[..], Detected::Http1),
            (&b"\x00binary"[..], Detected::Http1),
        ] {
            let (mut a, mut b) = tokio::io::duplex(64);
            tokio::spawn(async move {
                for part in sent.chunks(5) {
                    b.write_all(part).await.unwrap();
                    tokio::task::yield_now().await;
                }
                std::future::pending::<()>().await;
            });
            let (d, buf) = detect_http(&mut a, Duration::from_secs(5)).await.unwrap();
            assert_eq!(d, want, "{sent:?}");
            assert!(sent.starts_with(&buf) && !buf.is_empty(), "{sent:?}: kept {buf:?}");
        }
        let (mut silent, _b) = tokio::io::duplex(64);
        assert_eq!(detect_http(&mut silent, Duration::from_secs(5)).await.unwrap(), (Detected::Http1, vec![]));
        let (mut closed, b) = tokio::io::duplex(64);
        drop(b);
        assert_eq!(detect_http(&mut closed, Duration::from_secs(5)).await.unwrap(), (Detected::Http1, vec![]));
    }
}
