//! What the proxy's HTTP/2 connections share, client ([`crate::peer`]) and server
//! ([`crate::h2server`], and hyper's for the rare HTTP/2 connection it takes): the flow-control
//! windows and stream limit, and bodies on `h2` streams: [`RecvBody`] reads one as an
//! `http_body::Body`, [`pipe`] sends one.

use crate::httputil::{Body, BoxError};
use bytes::Bytes;
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Large windows, so that one connection carries many concurrent streams at full speed.
pub const STREAM_WINDOW: u32 = 1 << 20;
pub const CONNECTION_WINDOW: u32 = 4 << 20;
/// Streams a served connection allows at once: many app requests share one connection between
/// proxies; a client sidecar queues further requests until a stream frees up.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// Streams `body` out on an HTTP/2 stream (a request to a peer, or a response to a caller),
/// respecting the peer's flow-control window; stops when the peer resets the stream.
pub async fn pipe(mut body: Body, mut send: h2::SendStream<Bytes>) {
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
                    let chunk = data.split_to(granted.min(data.len()));
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
