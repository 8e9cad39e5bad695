//! HTTP/2 server connections on the `h2` crate directly: the mTLS hop from peer proxies, and the
//! h2c connections from apps. Every stream's request is served inside the connection's own task.
//!
//! ```text
//! connection task: ┌─ accept ─► stream future (handler ─► send response ─► pipe body) ─┐
//!                  └────────── all in one FuturesUnordered, polled when woken ◄────────┘
//! ```
//!
//! Why not hyper's HTTP/2 server: it spawns a task per stream, so each request costs a task
//! allocation, a trip through the scheduler and a wake-up of the connection task to send the
//! response. Here a stream is a future in the connection task, polled only when woken; the
//! responses of one turn leave together at the connection's next flush (see [`crate::cork`]).
//!
//! CONNECT (RFC 9113 §8.5) goes to [`Handler::upgrade`]: when it answers 2xx, the stream's DATA
//! frames become the tunnel ([`Tunnel`]). Extended CONNECT (RFC 8441, WebSocket over HTTP/2) is
//! not offered, so clients use HTTP/1.1 for WebSocket. What this server does not do (hyper's
//! did): the `Date` header (a proxy passes the app's on).

use crate::budget::{Budget, ConnBudget, HeldHeaders, Overload};
use crate::drain::Drain;
use crate::error::ProxyError;
use crate::h2body::{pipe, served_connection_window, stream_window, RecvBody, Tunnel};
use crate::httputil::{self as h, Body};
use crate::Handler;
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::{header, HeaderValue, Method, Request, Response};
use http_body::Body as _;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// Settings of the connections this server takes.
#[derive(Clone)]
pub struct Settings {
    /// Largest request header block, decoded (`limits.max_header_bytes`): past it a stream is
    /// answered `431` and the connection's other streams carry on, for blocks up to
    /// [`DECODE_FACTOR`] times this (advertised as HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`, see
    /// [`decode_limit`]).
    pub max_header_list_size: u32,
    /// The client's connection preface must arrive within this (`timeouts.header_read`).
    pub handshake_timeout: std::time::Duration,
    /// The proxy's buffer budget, with the `limits` (streams, windows, buffers) it enforces.
    pub budget: std::sync::Arc<Budget>,
}

/// How a connection ended, for the caller to count.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Closed,
    /// No connection preface within `handshake_timeout` (`timeouts.header_read`).
    NoPreface,
}

/// Serves HTTP/2 on `io` until the connection closes, or, once drain starts, until the requests
/// in flight are answered (GOAWAY first, so the peer sends new ones elsewhere).
pub async fn serve<T, H>(io: T, settings: Settings, drain: &Drain, handler: &H) -> Ended
where
    T: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let limits = &settings.budget.limits;
    // Each stream buffers at most its window of what the peer sends, and `stream_buffer_bytes`
    // of what it is sent; the connection window bounds what the peer has in flight to it.
    let handshake = h2::server::Builder::new()
        .initial_window_size(stream_window(limits))
        .initial_connection_window_size(served_connection_window(limits))
        .max_send_buffer_size(limits.stream_buffer_bytes)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(decode_limit(settings.max_header_list_size))
        .handshake::<_, Bytes>(io);
    let budget = settings.budget.connection();
    // A drain does not cut the handshake short: the caller may already have sent requests on
    // this connection, so it is finished (bounded by its timeout), then told GOAWAY below and
    // the streams it sent are served.
    let mut conn = match tokio::time::timeout(settings.handshake_timeout, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "http/2 handshake failed");
            return Ended::Closed;
        }
        Err(_) => return Ended::NoPreface,
    };
    let signaled = drain.signaled();
    tokio::pin!(signaled);
    let mut streams = FuturesUnordered::new();
    let mut tunnels = FuturesUnordered::new();
    let mut draining = false;
    loop {
        tokio::select! {
            // Streams first: the responses they finish leave together when the connection is
            // polled next, in the same turn.
            biased;
            Some(()) = streams.next(), if !streams.is_empty() => {}
            Some(()) = tunnels.next(), if !tunnels.is_empty() => {}
            accepted = conn.accept() => match accepted {
                Some(Ok((req, mut respond))) => {
                    let header_bytes = crate::budget::header_bytes(&req);
                    if header_bytes > settings.max_header_list_size as usize {
                        tracing::debug!("http/2: request header block over limits.max_header_bytes, answered 431");
                        let resp = Response::builder().status(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).body(());
                        if let Ok(resp) = resp {
                            let _ = respond.send_response(resp, true);
                        }
                        continue;
                    }
                    if req.method() == Method::CONNECT {
                        // A set of their own: the rare tunnel's future does not size every stream's.
                        tunnels.push(tunnel(handler, req, respond, &budget));
                        continue;
                    }
                    let head = req.method() == Method::HEAD;
                    // Its headers count against the connection's and the proxy's bounds while
                    // it is open; past them it is answered 503 at once.
                    let held = budget.admit(header_bytes);
                    let req = req.map(|recv| h::Body::new(RecvBody::new(recv)));
                    streams.push(stream(handler, req, respond, head, &budget, held));
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "http/2 connection ended with error");
                    break;
                }
                None => break,
            },
            _ = &mut signaled, if !draining => {
                draining = true;
                conn.graceful_shutdown();
            }
        }
    }
    Ended::Closed
}

/// How far past `limits.max_header_bytes` a header block is still decoded, so that its stream
/// can be answered `431` while the connection's other streams carry on. HPACK state is shared by
/// the connection: a block must be decoded whole, or the connection dropped. `h2` drops it
/// (GOAWAY `ENHANCE_YOUR_CALM`) for a block of more CONTINUATION frames than its
/// `SETTINGS_MAX_HEADER_LIST_SIZE` needs (1.25 times, at the 16 KB frame size) or that decodes
/// to more than 4 times it; past that setting and below those it answers `431` itself, and
/// below the setting the request reaches [`serve`], which answers `431` past the limit. At 4
/// times the limit, what one stream holds before it is answered stays at 256 KB by default.
pub const DECODE_FACTOR: u32 = 4;

/// The `SETTINGS_MAX_HEADER_LIST_SIZE` given to `h2` for a header limit of `max`.
pub fn decode_limit(max: u32) -> u32 {
    max.saturating_mul(DECODE_FACTOR)
}

/// One stream: the handler's response, then its body. A stream the caller resets stops at once
/// (the request to the app is dropped with it), as with hyper.
///
/// The handler's future is made here, in this future's own state, rather than passed in: a
/// future argument would take its size twice over (the argument, and the awaited copy).
async fn stream<'a, H: Handler>(
    handler: &'a H,
    req: Request<Body>,
    mut respond: h2::server::SendResponse<Bytes>,
    head: bool,
    budget: &'a Arc<ConnBudget>,
    held: Result<HeldHeaders<'a>, Overload>,
) {
    let _held = match held {
        Ok(held) => held,
        Err(why) => {
            tracing::debug!(bound = why.as_str(), "stream refused");
            return send(h::rescue(&ProxyError::Overloaded(why.as_str())), respond, head, budget).await;
        }
    };
    let resp = tokio::select! {
        biased;
        resp = handler.request(req) => resp,
        _ = std::future::poll_fn(|cx| respond.poll_reset(cx)) => return,
    };
    send(resp, respond, head, budget).await
}

/// Sends a response on the stream, then its body.
async fn send(
    resp: Response<Body>,
    mut respond: h2::server::SendResponse<Bytes>,
    head: bool,
    budget: &Arc<ConnBudget>,
) {
    let (mut parts, body) = resp.into_parts();
    // As hyper's server does: a body of known length declares it, where a body may be sent.
    if let Some(len) = body.size_hint().exact() {
        let bodiless = head || parts.status.is_informational() || matches!(parts.status.as_u16(), 204 | 304);
        if !bodiless && !parts.headers.contains_key(header::CONTENT_LENGTH) {
            parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
    let eos = body.is_end_stream();
    match respond.send_response(Response::from_parts(parts, ()), eos) {
        Ok(send) if !eos => pipe(body, send, budget).await,
        Ok(_) => {}
        Err(e) => {
            // A header HTTP/2 forbids (connection-specific) that got past the proxy's filter.
            tracing::debug!(error = %e, "response refused by the HTTP/2 codec");
            respond.send_reset(h2::Reason::INTERNAL_ERROR);
        }
    }
}

/// A CONNECT stream: the handler's answer, and when it is 2xx, the stream handed to the tunnel
/// the handler set up. Any other answer is sent as an ordinary response.
async fn tunnel<H: Handler>(
    handler: &H,
    req: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    budget: &Arc<ConnBudget>,
) {
    let (parts, recv) = req.into_parts();
    let (opened, downstream) = tokio::sync::oneshot::channel::<Tunnel>();
    let downstream: h::Downstream = Box::pin(async move {
        match downstream.await {
            Ok(tunnel) => Ok(Box::new(tunnel) as Box<dyn h::TunnelIo>),
            Err(_) => Err(std::io::Error::other("the CONNECT stream closed before the tunnel opened")),
        }
    });
    let resp = tokio::select! {
        biased;
        resp = handler.upgrade(Request::from_parts(parts, h::full(Bytes::new())), downstream) => resp,
        _ = std::future::poll_fn(|cx| respond.poll_reset(cx)) => return,
    };
    if !resp.status().is_success() {
        return send(resp, respond, false, budget).await;
    }
    let (mut parts, _) = resp.into_parts();
    // A 2xx to CONNECT has no content (RFC 9110 §9.3.6): the tunnel is the stream.
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    match respond.send_response(Response::from_parts(parts, ()), false) {
        Ok(send) => {
            let _ = opened.send(Tunnel::new(recv, send));
        }
        Err(e) => {
            tracing::debug!(error = %e, "CONNECT response refused by the HTTP/2 codec");
            respond.send_reset(h2::Reason::INTERNAL_ERROR);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use http_body_util::{BodyExt, StreamBody};
    use std::future::Future;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// What the test handler saw; shared with the test.
    #[derive(Default)]
    struct Seen {
        started: AtomicUsize,
        dropped: AtomicBool,
        /// How each echo tunnel's copy ended: `Ok(bytes)` at the caller's END_STREAM, or the
        /// error kind of its read or write.
        tunnel_ends: Arc<std::sync::Mutex<Vec<Result<u64, std::io::ErrorKind>>>>,
    }

    /// Sets `dropped` when the handler's future is dropped before it answered.
    struct OnDrop<'a>(&'a Seen, bool);
    impl Drop for OnDrop<'_> {
        fn drop(&mut self) {
            if !self.1 {
                self.0.dropped.store(true, Ordering::SeqCst);
            }
        }
    }

    impl Handler for Seen {
        fn request(&self, req: Request<Body>) -> impl Future<Output = Response<Body>> + Send {
            answer(self, req)
        }
        /// CONNECT to `refused:1` gets a 403 with a body; any other target is an echo tunnel.
        async fn upgrade(&self, req: Request<Body>, downstream: h::Downstream) -> Response<Body> {
            if req.uri().host() == Some("refused") {
                let mut resp = Response::new(h::full("no"));
                *resp.status_mut() = StatusCode::FORBIDDEN;
                return resp;
            }
            let ends = self.tunnel_ends.clone();
            tokio::spawn(async move {
                let io = downstream.await.unwrap();
                let (mut r, mut w) = tokio::io::split(io);
                let copied = tokio::io::copy(&mut r, &mut w).await;
                if copied.is_ok() {
                    w.shutdown().await.unwrap();
                }
                ends.lock().unwrap().push(copied.map_err(|e| e.kind()));
            });
            Response::new(h::full(Bytes::new()))
        }
    }

    /// `/wait/N` answers after N ms with its path; `/stream` sends three chunks and a trailer;
    /// `/hang` never answers; `/sized` has a body of known length and no Content-Length.
    async fn answer(seen: &Seen, req: Request<Body>) -> Response<Body> {
        seen.started.fetch_add(1, Ordering::SeqCst);
        let mut guard = OnDrop(seen, false);
        let path = req.uri().path().to_string();
        let resp = if let Some(ms) = path.strip_prefix("/wait/") {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
            Response::new(h::full(path))
        } else if path == "/stream" {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            let frames = vec![
                Ok(http_body::Frame::data(Bytes::from_static(b"one "))),
                Ok(http_body::Frame::data(Bytes::from_static(b"two "))),
                Ok(http_body::Frame::data(Bytes::from_static(b"three"))),
                Ok(http_body::Frame::trailers(trailers)),
            ];
            Response::new(Body::new(StreamBody::new(futures_util::stream::iter(frames))))
        } else if path == "/hang" {
            std::future::pending::<()>().await;
            unreachable!()
        } else if path == "/echo" {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            Response::new(h::full(body))
        } else {
            Response::new(h::full("sized"))
        };
        guard.1 = true;
        resp
    }

    /// A 200 ms preface deadline, so the test of it is quick.
    fn settings() -> Settings {
        let mut reg = prometheus_client::registry::Registry::default();
        let metrics = crate::metrics::Metrics::new(&mut reg);
        let budget = Budget::new(weft_api::proxy::Limits::default(), &metrics);
        Settings { max_header_list_size: 16 * 1024, handshake_timeout: Duration::from_millis(200), budget }
    }

    /// A server on 127.0.0.1 serving one connection, and an h2 client on it.
    async fn start(
        drain: Arc<Drain>,
        seen: Arc<Seen>,
    ) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            serve(tcp, settings(), &drain, &*seen).await;
        });
        let (client, conn) = h2::client::handshake(TcpStream::connect(addr).await.unwrap()).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        (client, server)
    }

    #[tokio::test]
    async fn a_client_that_never_sends_the_preface_is_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            serve(tcp, settings(), &Drain::default(), &Seen::default()).await;
        });
        let mut silent = TcpStream::connect(addr).await.unwrap();
        // The server gives up on the connection: its task ends and the socket is closed (after
        // the server's own SETTINGS frame, which it sends first).
        tokio::time::timeout(Duration::from_secs(10), server).await.expect("server task ended").unwrap();
        let mut rest = Vec::new();
        let read = tokio::io::AsyncReadExt::read_to_end(&mut silent, &mut rest);
        let _ = tokio::time::timeout(Duration::from_secs(10), read).await.expect("socket closed by the server");
    }

    fn get(path: &str) -> Request<()> {
        Request::get(format!("http://test{path}")).body(()).unwrap()
    }

    async fn body_of(resp: Response<h2::RecvStream>) -> (Bytes, Option<http::HeaderMap>) {
        let collected = Body::new(RecvBody::new(resp.into_body())).collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (collected.to_bytes(), trailers)
    }

    #[tokio::test]
    async fn streams_are_answered_as_they_finish_not_in_order() {
        let (client, _server) = start(Arc::default(), Arc::default()).await;
        let mut client = client.ready().await.unwrap();
        let (_hang, _) = client.send_request(get("/hang"), true).unwrap();
        let (slow, _) = client.send_request(get("/wait/200"), true).unwrap();
        let (fast, _) = client.send_request(get("/wait/1"), true).unwrap();
        // Later streams are answered while an earlier one still waits: one task, no head-of-line.
        let fast = tokio::time::timeout(Duration::from_secs(10), fast).await.expect("not blocked by /hang").unwrap();
        assert_eq!(body_of(fast).await.0, "/wait/1");
        assert_eq!(body_of(slow.await.unwrap()).await.0, "/wait/200");
    }

    #[tokio::test]
    async fn streaming_response_with_trailers_and_request_body() {
        let (client, _server) = start(Arc::default(), Arc::default()).await;
        let mut client = client.ready().await.unwrap();
        let (resp, _) = client.send_request(get("/stream"), true).unwrap();
        let (body, trailers) = body_of(resp.await.unwrap()).await;
        assert_eq!(body, "one two three");
        assert_eq!(trailers.unwrap()["grpc-status"], "0");

        let (resp, mut send) = client.send_request(Request::post("http://test/echo").body(()).unwrap(), false).unwrap();
        send.send_data(Bytes::from_static(b"ping "), false).unwrap();
        send.send_data(Bytes::from_static(b"pong"), true).unwrap();
        assert_eq!(body_of(resp.await.unwrap()).await.0, "ping pong");
    }

    #[tokio::test]
    async fn content_length_is_declared_for_a_known_body_but_not_for_head() {
        let (client, _server) = start(Arc::default(), Arc::default()).await;
        let mut client = client.ready().await.unwrap();
        let (resp, _) = client.send_request(get("/sized"), true).unwrap();
        assert_eq!(resp.await.unwrap().headers()[header::CONTENT_LENGTH], "5");
        let (resp, _) = client.send_request(Request::head("http://test/sized").body(()).unwrap(), true).unwrap();
        assert!(!resp.await.unwrap().headers().contains_key(header::CONTENT_LENGTH));
    }

    #[tokio::test]
    async fn connect_opens_a_tunnel_on_the_stream_and_a_refusal_is_a_response() {
        let (client, _server) = start(Arc::default(), Arc::default()).await;
        let mut client = client.ready().await.unwrap();
        let (resp, mut up) =
            client.send_request(Request::connect("db.internal:5432").body(()).unwrap(), false).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(!resp.headers().contains_key(header::CONTENT_LENGTH), "{:?}", resp.headers());
        // More than both sides' stream windows (64 KiB for this client, 1 MiB for the server),
        // each way at once: the tunnel waits for capacity, returns it as it reads, and echoes.
        let sent: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let sent = Bytes::from(sent.clone());
            tokio::spawn(async move {
                for chunk in sent.chunks(16 * 1024) {
                    up.reserve_capacity(chunk.len());
                    let mut left = Bytes::copy_from_slice(chunk);
                    while !left.is_empty() {
                        let n = std::future::poll_fn(|cx| up.poll_capacity(cx)).await.unwrap().unwrap();
                        up.send_data(left.split_to(n.min(left.len())), false).unwrap();
                    }
                }
                // The caller's half-close: the echo ends and so does the server's half.
                up.send_data(Bytes::new(), true).unwrap();
            })
        };
        let (back, _) = tokio::time::timeout(Duration::from_secs(60), body_of(resp)).await.expect("tunnel stalled");
        writer.await.unwrap();
        assert_eq!(back.len(), sent.len());
        assert!(back == sent, "the tunnel returned other bytes");

        let (resp, _) = client.send_request(Request::connect("refused:1").body(()).unwrap(), false).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(body_of(resp).await.0, "no");
        // The connection goes on.
        let (resp, _) = client.send_request(get("/sized"), true).unwrap();
        assert_eq!(resp.await.unwrap().status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_tunnel_the_caller_resets_is_an_error_on_the_far_side() {
        let seen = Arc::new(Seen::default());
        let (client, _server) = start(Arc::default(), seen.clone()).await;
        let mut client = client.ready().await.unwrap();
        let (resp, mut up) =
            client.send_request(Request::connect("db.internal:5432").body(()).unwrap(), false).unwrap();
        let mut down = resp.await.unwrap().into_body();
        up.send_data(Bytes::from_static(b"x"), false).unwrap();
        assert_eq!(down.data().await.unwrap().unwrap(), "x");
        up.send_reset(h2::Reason::CANCEL);
        // Not a clean end of stream: whoever reads the tunnel gets an error, and can drop its
        // connection to the app at once.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let end = loop {
            if let Some(end) = seen.tunnel_ends.lock().unwrap().first().cloned() {
                break end;
            }
            assert!(std::time::Instant::now() < deadline, "the tunnel did not end after the reset");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(end, Err(std::io::ErrorKind::ConnectionReset));
        // The connection serves on.
        let (resp, _) = client.send_request(get("/sized"), true).unwrap();
        assert_eq!(resp.await.unwrap().status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_stream_reset_by_the_caller_drops_its_request() {
        let seen = Arc::new(Seen::default());
        let (client, _server) = start(Arc::default(), seen.clone()).await;
        let mut client = client.ready().await.unwrap();
        let (_resp, mut send) = client.send_request(get("/hang"), false).unwrap();
        weft_testkit::eventually("handler started", Duration::from_secs(10), || {
            let n = seen.started.load(Ordering::SeqCst);
            async move { (n == 1).then_some(()) }
        })
        .await;
        send.send_reset(h2::Reason::CANCEL);
        weft_testkit::eventually("handler dropped", Duration::from_secs(10), || {
            let dropped = seen.dropped.load(Ordering::SeqCst);
            async move { dropped.then_some(()) }
        })
        .await;
        // The connection still serves.
        let (resp, _) = client.send_request(get("/wait/1"), true).unwrap();
        assert_eq!(resp.await.unwrap().status(), 200);
    }

    #[tokio::test]
    async fn drain_sends_goaway_and_finishes_the_streams_in_flight() {
        let (drain, seen) = (Arc::new(Drain::default()), Arc::new(Seen::default()));
        let (client, server) = start(drain.clone(), seen.clone()).await;
        let mut client = client.ready().await.unwrap();
        let (inflight, _) = client.send_request(get("/wait/300"), true).unwrap();
        weft_testkit::eventually("request in flight", Duration::from_secs(10), || {
            let n = seen.started.load(Ordering::SeqCst);
            async move { (n == 1).then_some(()) }
        })
        .await;
        drain.drain(Duration::from_secs(1)).await;
        let resp = inflight.await.expect("the request in flight is answered");
        assert_eq!(body_of(resp).await.0, "/wait/300");
        // GOAWAY: the connection closes, and the server's task ends.
        tokio::time::timeout(Duration::from_secs(10), server).await.expect("server done").unwrap();
        let refused = match client.ready().await {
            Ok(mut c) => c.send_request(get("/late"), true).map(|_| ()).err(),
            Err(e) => Some(e),
        };
        assert!(refused.is_some(), "no new streams after GOAWAY");
    }
}
