//! HTTP/2 client connections on the `h2` crate directly: the mTLS hop to a peer proxy, and the
//! HTTP/2 connection from the inbound side to an app that speaks it (see [`crate::app`]).
//!
//! ```text
//! request task ──send_request──► h2 streams (shared state) ◄──I/O── connection task (one per connection)
//!      ▲                                                                 │
//!      └────────────── response head + body, polled by the request task ─┘
//! ```
//!
//! Why not `hyper::client::conn::http2`: for every request it sends the request through a channel
//! to its connection task, spawns one more task that awaits the response, and hands the response
//! back through a oneshot channel: two extra task hops and allocations per request on the hot path
//! of every outbound call. Here the task serving the caller opens the stream and awaits the
//! response itself; only a request body still streaming gets a task of its own (as with hyper).

use crate::budget::{Budget, ConnBudget};
use crate::h2body::{client_connection_window, pipe, stream_window, RecvBody};
use crate::httputil::Body;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// A PING every `interval`; no PONG within `timeout` fails the connection, and with it every
/// request on it, at once: on a partition (packets dropped, no RST) nothing else would tell.
#[derive(Clone, Copy, Debug)]
pub struct KeepAlive {
    pub interval: Duration,
    pub timeout: Duration,
}

impl KeepAlive {
    /// For the HTTP/2 connection to the local app (loopback: no partition to detect).
    pub const APP: KeepAlive = KeepAlive { interval: Duration::from_secs(30), timeout: Duration::from_secs(10) };
}

/// A handle on one multiplexed connection to a peer proxy; cheap to clone.
#[derive(Clone)]
pub struct PeerConn {
    sender: h2::client::SendRequest<Bytes>,
    shared: Arc<Shared>,
}

/// What every handle on one connection shares.
struct Shared {
    /// Set when the connection task has ended (closed, failed, or keep-alive timed out).
    closed: AtomicBool,
    /// Set (before `closed`) when the peer did not answer a PING in time.
    unresponsive: AtomicBool,
    /// Requests sent and not yet done with (their response body not dropped): the pool opens
    /// another connection rather than queue past `limits.max_concurrent_streams`.
    open: AtomicUsize,
    /// The peer's SETTINGS_MAX_CONCURRENT_STREAMS as last read from `h2` (which locks to tell):
    /// read at the first requests and whenever the connection is half full by it.
    peer_max: AtomicUsize,
    /// What request bodies sent on it may queue.
    budget: Arc<ConnBudget>,
}

/// One request counted in [`Shared::open`] until dropped (with the response body, or on error).
struct Open(Arc<Shared>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a request could not be sent on a connection.
pub enum SendError {
    /// The connection is unusable and the request was not sent: it can go out on another.
    Unsent(Box<Request<Body>>, h2::Error),
    Failed(h2::Error),
    /// The peer stopped answering PINGs (see [`KeepAlive`]) while the request was on it.
    Unresponsive(h2::Error),
}

impl SendError {
    /// Whether the connection is unusable from now on, so its pool should drop it.
    pub fn broke_connection(&self) -> bool {
        match self {
            SendError::Unsent(..) | SendError::Unresponsive(_) => true,
            SendError::Failed(e) => e.is_io() || e.is_go_away(),
        }
    }

    pub fn into_error(self) -> h2::Error {
        match self {
            SendError::Unsent(_, e) | SendError::Failed(e) | SendError::Unresponsive(e) => e,
        }
    }
}

impl PeerConn {
    /// HTTP/2 handshake on `io`; the connection is driven by a task of its own from then on.
    pub async fn handshake<T>(io: T, budget: &Arc<Budget>, keep_alive: KeepAlive) -> Result<PeerConn, h2::Error>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let limits = &budget.limits;
        let (sender, mut conn) = h2::client::Builder::new()
            .initial_window_size(stream_window(limits))
            .initial_connection_window_size(client_connection_window(limits))
            .max_send_buffer_size(limits.stream_buffer_bytes)
            .handshake::<_, Bytes>(io)
            .await?;
        let shared = Arc::new(Shared {
            closed: AtomicBool::new(false),
            unresponsive: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            peer_max: AtomicUsize::new(sender.current_max_send_streams()),
            budget: budget.connection(),
        });
        let done = shared.clone();
        let mut ping_pong = conn.ping_pong();
        let KeepAlive { interval, timeout } = keep_alive;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut deadline: Option<tokio::time::Instant> = None;
            loop {
                tokio::select! {
                    biased;
                    res = &mut conn => {
                        if let Err(e) = res {
                            tracing::debug!(error = %e, "peer connection closed");
                        }
                        break;
                    }
                    _ = tick.tick(), if deadline.is_none() => {
                        if let Some(pp) = ping_pong.as_mut() {
                            if pp.send_ping(h2::Ping::opaque()).is_ok() {
                                deadline = Some(tokio::time::Instant::now() + timeout);
                            }
                        }
                    }
                    pong = std::future::poll_fn(|cx| match ping_pong.as_mut() {
                        Some(pp) => pp.poll_pong(cx),
                        None => Poll::Pending,
                    }), if deadline.is_some() => {
                        deadline = None;
                        if pong.is_err() {
                            break;
                        }
                    }
                    _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                        tracing::debug!(?timeout, "peer connection: no PONG in time, closing");
                        done.unresponsive.store(true, Ordering::Release);
                        break;
                    }
                }
            }
            done.closed.store(true, Ordering::Release);
            // Dropping `conn` here fails the streams still open on it (their callers get an
            // error now, not when the OS gives up on the socket).
        });
        Ok(PeerConn { sender, shared })
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Requests in flight on this connection (see [`Shared::open`]).
    pub fn open_streams(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// How many requests the peer lets this connection carry at once, as last seen.
    pub fn peer_max_streams(&self) -> usize {
        self.shared.peer_max.load(Ordering::Relaxed)
    }

    /// Sends `req` (an absolute URI, no connection-specific headers) and waits for the response
    /// head; the response body streams from the connection as the caller polls it.
    pub async fn send(self, req: Request<Body>) -> Result<Response<Body>, SendError> {
        let before = self.shared.open.fetch_add(1, Ordering::Relaxed);
        // The peer's SETTINGS arrive after the handshake and may change: look again at the first
        // requests and when the connection fills up, not on every request.
        let peer_max = self.shared.peer_max.load(Ordering::Relaxed);
        if before < 8 || before + 1 >= peer_max / 2 {
            self.shared.peer_max.store(self.sender.current_max_send_streams(), Ordering::Relaxed);
        }
        let open = Open(self.shared);
        // Waits while the peer's concurrent-stream limit is reached; fails on a closed connection,
        // before the request is consumed.
        let mut sender = match self.sender.ready().await {
            Ok(s) => s,
            Err(e) => return Err(SendError::Unsent(Box::new(req), e)),
        };
        let (mut head, body) = req.into_parts();
        // As hyper's HTTP/2 client does: a body of known length declares it (also 0 for methods
        // whose requests carry a payload).
        if let Some(len) = body.size_hint().exact() {
            if (len != 0 || !matches!(head.method, Method::GET | Method::HEAD | Method::DELETE | Method::CONNECT))
                && !head.headers.contains_key(http::header::CONTENT_LENGTH)
            {
                head.headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
            }
        }
        let eos = body.is_end_stream();
        let (response, send) = sender.send_request(Request::from_parts(head, ()), eos).map_err(SendError::Failed)?;
        if !eos {
            let budget = open.0.budget.clone();
            tokio::spawn(async move { pipe(body, send, &budget).await });
        }
        let resp = response.await.map_err(|e| {
            if open.0.unresponsive.load(Ordering::Acquire) {
                SendError::Unresponsive(e)
            } else {
                SendError::Failed(e)
            }
        })?;
        let (parts, recv) = resp.into_parts();
        Ok(Response::from_parts(parts, OpenBody { body: RecvBody::new(recv), _open: open }.boxed()))
    }
}

/// A response body that keeps its request counted as open on its connection until dropped.
struct OpenBody {
    body: RecvBody,
    _open: Open,
}

impl http_body::Body for OpenBody {
    type Data = Bytes;
    type Error = crate::httputil::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
