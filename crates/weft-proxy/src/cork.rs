//! TLS between proxies with writes held until flush ("corked"), so that the frames of many
//! requests leave in one `writev` instead of one system call (and one TLS record) each. The
//! HTTP/2 connections from apps (h2c, plain TCP) are corked too, through an in-memory queue
//! ([`Buffered`]).
//!
//! ```text
//! h2 codec ─write─► Corked: encrypt into the session's send queue (no syscall)
//!          ─write─► ...
//!          ─flush─► one writev of every queued record ─► socket
//! ```
//!
//! Why: `tokio-rustls` sends each write at once. The HTTP/2 codec writes its frame buffer, and
//! with vectored I/O it also flushes after every DATA frame of 256 bytes or more, so at load each
//! response paid a system call and a TLS record of its own on the hop between proxies. Through
//! this wrapper the codec sees a non-vectored stream (it then copies DATA frames up to 1 KiB into
//! its 16 KiB frame buffer and writes that once per turn), and what it writes is encrypted at
//! once but sent only at `poll_flush`, which every user of a stream must call (hyper and h2 do
//! after each batch). The session's own limit on queued bytes (64 KiB by default) bounds what
//! waits: when it is reached, the queue is sent before more is taken.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream that can take bytes into a send queue without sending them yet; its `poll_flush`
/// sends the queue.
pub trait Session: AsyncRead + AsyncWrite + Unpin {
    /// Takes what fits of `buf` into the send queue; `Ok(0)` when the queue is full.
    fn queue(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Whether bytes wait in the send queue.
    fn queued(&self) -> bool;
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Session for tokio_rustls::client::TlsStream<IO> {
    fn queue(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.get_mut().1.writer().write(buf)
    }
    fn queued(&self) -> bool {
        self.get_ref().1.wants_write()
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Session for tokio_rustls::server::TlsStream<IO> {
    fn queue(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.get_mut().1.writer().write(buf)
    }
    fn queued(&self) -> bool {
        self.get_ref().1.wants_write()
    }
}

/// Most bytes a [`Buffered`] stream queues before it sends (rustls's default limit too).
const BUFFER_LIMIT: usize = 64 * 1024;

/// A plain stream with a send queue in memory, so that [`Corked`] can hold its writes until
/// flush too: the HTTP/2 connections from apps (h2c), where the codec would otherwise send each
/// response's frames in a system call of their own.
pub struct Buffered<T> {
    inner: T,
    queue: Vec<u8>,
    /// How much of `queue` has been sent.
    sent: usize,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Buffered<T> {
    pub fn new(inner: T) -> Self {
        Buffered { inner, queue: Vec::new(), sent: 0 }
    }

    /// Sends the whole queue.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.queue.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.queue[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.sent = 0;
        self.queue.clear();
        // A burst does not keep its memory while the connection idles.
        if self.queue.capacity() > 2 * BUFFER_LIMIT {
            self.queue = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Session for Buffered<T> {
    fn queue(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = BUFFER_LIMIT.saturating_sub(self.queue.len());
        let n = buf.len().min(room);
        self.queue.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn queued(&self) -> bool {
        !self.queue.is_empty()
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Buffered<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Buffered<T> {
    /// Through the queue, so bytes stay in order.
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            let n = this.queue(buf)?;
            if n > 0 || buf.is_empty() {
                return Poll::Ready(Ok(n));
            }
            ready!(this.poll_send(cx))?;
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// See the module documentation. Wrap a stream only after its handshake.
pub struct Corked<S> {
    inner: S,
    /// The last `poll_flush` yielded instead of sending; the next one sends.
    yielded: bool,
}

impl<S: Session> Corked<S> {
    pub fn new(inner: S) -> Self {
        Corked { inner, yielded: false }
    }
}

impl<S: Session> AsyncRead for Corked<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: Session> AsyncWrite for Corked<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            // Encrypted into the send queue now; on the wire at the next flush.
            let n = this.inner.queue(buf)?;
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
            // The queue is full: send it, then take more.
            ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.yielded && this.inner.queued() {
            // Once per flush, let the tasks already queued on this thread run first: the
            // responses they finish join this write instead of each taking one of their own.
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Queued records go first, then close_notify.
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    /// Not vectored: the HTTP/2 codec then batches small DATA frames instead of flushing after
    /// each (see the module documentation).
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use weft_testkit::Pki;

    type Server = tokio_rustls::server::TlsStream<TcpStream>;

    /// A real mTLS connection on 127.0.0.1: the client side corked, the server side plain.
    async fn pair() -> (Corked<tokio_rustls::client::TlsStream<TcpStream>>, Server) {
        let pki = Pki::new();
        let (client_store, server_store) = (pki.store("default", "web"), pki.store("default", "api"));
        let server_cfg = weft_identity::tls::server_config(&server_store, &[b"h2"]).unwrap();
        let client_cfg = weft_identity::tls::client_config(&client_store, &[b"h2"]).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg)).accept(tcp).await.unwrap()
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("8080.api.default.local.weft").unwrap();
        let client = tokio_rustls::TlsConnector::from(Arc::new(client_cfg)).connect(name, tcp).await.unwrap();
        (Corked::new(client), accept.await.unwrap())
    }

    /// A plain TCP connection on 127.0.0.1, the client side corked through a [`Buffered`] queue.
    async fn plain_pair() -> (Corked<Buffered<TcpStream>>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Corked::new(Buffered::new(client)), server)
    }

    /// Written bytes wait in the send queue; the first flush yields, the next sends all of them;
    /// with nothing queued a flush does not yield.
    async fn writes_wait_for_a_flush_that_yields_once<S: Session>(
        mut client: Corked<S>,
        mut server: impl AsyncRead + Unpin,
    ) {
        assert!(!client.inner.queued());
        client.write_all(b"first ").await.unwrap();
        client.write_all(b"second").await.unwrap();
        assert!(client.inner.queued(), "writes must wait for the flush");
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut client).poll_flush(&mut cx).is_pending(), "the first flush lets other tasks run");
        assert!(matches!(Pin::new(&mut client).poll_flush(&mut cx), Poll::Ready(Ok(()))));
        assert!(!client.inner.queued(), "flush sends everything queued");
        assert!(matches!(Pin::new(&mut client).poll_flush(&mut cx), Poll::Ready(Ok(()))), "nothing queued: no yield");
        let mut got = [0u8; 12];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"first second");
    }

    /// 1 MiB, far past the 64 KiB queue and more than the socket buffers hold (writes must send
    /// on their own and wait for the reader), then a last write: shutdown sends the queue, then
    /// closes. Everything arrives in order.
    async fn a_megabyte_then_shutdown<S: Session>(
        mut client: Corked<S>,
        mut server: impl AsyncRead + Unpin + Send + 'static,
    ) {
        let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        let expected = data.clone();
        let reader = tokio::spawn(async move {
            let mut got = vec![];
            server.read_to_end(&mut got).await.unwrap();
            got
        });
        client.write_all(&data).await.unwrap();
        client.write_all(b"last words").await.unwrap();
        client.shutdown().await.unwrap();
        let got = reader.await.unwrap();
        assert!(got[..1 << 20] == expected[..], "bytes lost or reordered");
        assert_eq!(&got[1 << 20..], b"last words");
    }

    #[tokio::test]
    async fn tls_writes_wait_for_a_flush_that_yields_once() {
        let (client, server) = pair().await;
        writes_wait_for_a_flush_that_yields_once(client, server).await;
    }

    #[tokio::test]
    async fn plain_writes_wait_for_a_flush_that_yields_once() {
        let (client, server) = plain_pair().await;
        writes_wait_for_a_flush_that_yields_once(client, server).await;
    }

    #[tokio::test]
    async fn tls_passes_a_megabyte_in_order_then_shuts_down_after_the_queue() {
        let (client, server) = pair().await;
        a_megabyte_then_shutdown(client, server).await;
    }

    #[tokio::test]
    async fn plain_passes_a_megabyte_in_order_then_shuts_down_after_the_queue() {
        let (client, server) = plain_pair().await;
        a_megabyte_then_shutdown(client, server).await;
    }
}
