//! What the proxy's HTTP/2 connections share, client ([`crate::peer`]) and server
//! ([`crate::h2server`]): the flow-control windows and stream limit, and bodies on `h2` streams:
//! [`RecvBody`] reads one as an `http_body::Body`, [`pipe`] sends one; [`Tunnel`] is a CONNECT
//! stream as a byte stream.

use crate::budget::ConnBudget;
use crate::httputil::{Body, BoxError};
use bytes::Bytes;
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use weft_api::proxy::Limits;

/// The largest HTTP/2 window (RFC 9113 §6.9.1).
const MAX_WINDOW: usize = (1 << 31) - 1;

/// A stream's receive window and send buffer: `limits.stream_buffer_bytes`.
pub fn stream_window(limits: &Limits) -> u32 {
    limits.stream_buffer_bytes.min(MAX_WINDOW) as u32
}

/// The receive window of a connection the proxy serves: `limits.connection_buffer_bytes`, what
/// one peer may have in flight to it.
pub fn served_connection_window(limits: &Limits) -> u32 {
    limits.connection_buffer_bytes.min(MAX_WINDOW) as u32
}

/// The receive window of a connection the proxy opens (to a peer proxy, or an app): room for
/// every stream the pool puts on it ([`crate::pool`] opens another connection beyond
/// `max_concurrent_streams`) to hold its full stream window, so callers that stop reading hold
/// their own streams' windows and never the connection's.
pub fn client_connection_window(limits: &Limits) -> u32 {
    (limits.max_concurrent_streams as usize).saturating_mul(limits.stream_buffer_bytes).min(MAX_WINDOW) as u32
}

/// Streams `body` out on an HTTP/2 stream (a request to a peer, or a response to a caller),
/// respecting the peer's flow-control window and the connection's buffer budget (each chunk is
/// charged until `h2` has written it); stops when the peer resets the stream.
pub async fn pipe(mut body: Body, mut send: h2::SendStream<Bytes>, budget: &Arc<ConnBudget>) {
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = std::future::poll_fn(|cx| send.poll_reset(cx)) => return,
        };
        let frame = match frame {
            None => {
                let _ = send.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "body failed; resetting the stream");
                send.send_reset(h2::Reason::CANCEL);
                return;
            }
            Some(Ok(f)) => f,
        };
        let frame = match frame.into_data() {
            Ok(mut data) => {
                while !data.is_empty() {
                    send.reserve_capacity(data.len());
                    let granted = match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                        Some(Ok(n)) if n > 0 => n,
                        // Not expected (h2 answers Pending rather than 0), but never spin on it.
                        Some(Ok(_)) => {
                            tokio::task::yield_now().await;
                            continue;
                        }
                        _ => return,
                    };
                    let chunk = match budget.try_charge_now(data.split_to(granted.min(data.len()))) {
                        Ok(charged) => charged,
                        // The connection or the proxy is full: wait for room, or the reset.
                        Err(chunk) => tokio::select! {
                            charged = budget.charge(chunk) => charged,
                            _ = std::future::poll_fn(|cx| send.poll_reset(cx)) => return,
                        },
                    };
                    let eos = data.is_empty() && body.is_end_stream();
                    if send.send_data(chunk, eos).is_err() || eos {
                        return;
                    }
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            let _ = send.send_trailers(trailers);
            return;
        }
    }
}

/// A body received on an HTTP/2 stream (a peer's response, or a caller's request): data
/// (returning flow-control capacity as it is taken), then trailers.
pub struct RecvBody {
    recv: h2::RecvStream,
    data_done: bool,
}

impl RecvBody {
    pub fn new(recv: h2::RecvStream) -> RecvBody {
        RecvBody { recv, data_done: false }
    }
}

impl http_body::Body for RecvBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.data_done {
            match std::task::ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => self.data_done = true,
            }
        }
        match std::task::ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// An HTTP/2 stream opened by CONNECT (RFC 9113 §8.5) as a byte stream: what the caller sends in
/// DATA frames is read, what is written goes out in DATA frames within the caller's window, and
/// shutdown ends the stream (a half-close, as TCP's FIN). A reset stream is an I/O error.
pub struct Tunnel {
    recv: h2::RecvStream,
    send: h2::SendStream<Bytes>,
    /// The rest of a DATA frame a read did not take.
    pending: Bytes,
    shut: bool,
}

impl Tunnel {
    pub fn new(recv: h2::RecvStream, send: h2::SendStream<Bytes>) -> Tunnel {
        Tunnel { recv, send, pending: Bytes::new(), shut: false }
    }
}

fn io_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        e.into_io().unwrap_or_else(|| io::ErrorKind::BrokenPipe.into())
    } else {
        io::Error::new(io::ErrorKind::ConnectionReset, e)
    }
}

impl AsyncRead for Tunnel {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        // An empty DATA frame is not the end of the stream: read on.
        while self.pending.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.pending = data;
                }
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.pending.len().min(out.remaining());
        let taken = self.pending.split_to(n);
        out.put_slice(&taken);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.send.reserve_capacity(buf.len());
        let granted = match ready!(self.send.poll_capacity(cx)) {
            Some(Ok(n)) => n,
            Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        };
        if granted == 0 {
            // Not expected (h2 answers Pending rather than 0), but never spin on it.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let n = granted.min(buf.len());
        self.send.send_data(Bytes::copy_from_slice(&buf[..n]), false).map_err(io_error)?;
        Poll::Ready(Ok(n))
    }

    /// The connection's task sends what the stream queued; nothing to do here.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.shut {
            self.shut = true;
            self.send.send_data(Bytes::new(), true).map_err(io_error)?;
        }
        Poll::Ready(Ok(()))
    }
}
