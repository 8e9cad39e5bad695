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
const METHODS: &[&[u8]] =
    &[b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"CONNECT ", b"OPTIONS ", b"TRACE ", b"PATCH "];
/// Enough to decide in every case.
const DETECT_BUF: usize = 64;

/// Classifies a prefix; `None` means more bytes are needed to decide.
pub fn classify(buf: &[u8]) -> Option<Detected> {
    if buf.is_empty() {
        return None;
    }
    if buf[0] == 0x16 {
        return Some(Detected::Tls);
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() { Some(Detected::Http2) } else { None };
    }
    let mut undecided = false;
    for m in METHODS {
        let k = buf.len().min(m.len());
        if buf[..k] == m[..k] {
            if k == m.len() {
                return Some(Detected::Http1);
            }
            undecided = true;
        }
    }
    if undecided {
        None
    } else {
        Some(Detected::Tcp)
    }
}

/// Reads until the protocol is known or `timeout` passes. A client that sends nothing in time
/// (a server-speaks-first protocol) is opaque TCP.
pub async fn detect<S: AsyncRead + Unpin>(io: &mut S, timeout: Duration) -> io::Result<(Detected, Vec<u8>)> {
    read_until_known(io, timeout, DETECT_BUF, classify, Detected::Tcp).await
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
    read_until_known(io, timeout, H2_PREFACE.len(), version, Detected::Http1).await
}

/// Reads up to `limit` bytes until `decide` knows the protocol; `otherwise` when the limit, the
/// deadline or the end of the stream comes first. The bytes read are returned for replay.
async fn read_until_known<S: AsyncRead + Unpin>(
    io: &mut S,
    timeout: Duration,
    limit: usize,
    decide: impl Fn(&[u8]) -> Option<Detected>,
    otherwise: Detected,
) -> io::Result<(Detected, Vec<u8>)> {
    let mut buf = Vec::with_capacity(limit);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(d) = decide(&buf) {
            return Ok((d, buf));
        }
        if buf.len() >= limit {
            return Ok((otherwise, buf));
        }
        let mut chunk = [0u8; DETECT_BUF];
        let want = (limit - buf.len()).min(DETECT_BUF);
        match tokio::time::timeout_at(deadline, io.read(&mut chunk[..want])).await {
            Ok(Ok(0)) | Err(_) => return Ok((otherwise, buf)),
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
        assert_eq!(classify(b"PRIX"), Some(Detected::Tcp));
        assert_eq!(classify(&[0x16, 3, 1]), Some(Detected::Tls));
        assert_eq!(classify(b"\x00\x01binary"), Some(Detected::Tcp));
        assert_eq!(classify(b"get / HTTP/1.1"), Some(Detected::Tcp));
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
