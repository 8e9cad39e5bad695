//! Connections from the inbound side to the local app: per app port and per worker, a pool of
//! HTTP/1.1 connections for requests without a body, written and read in the request's own task
//! ([`crate::h1`]); a pool of HTTP/1.1 connections for the rest (`hyper::client::conn`, which
//! writes a request body while reading the response); and one multiplexed HTTP/2 connection
//! (the `h2` crate, driven as the hop between proxies is: [`crate::peer`]). They always dial the
//! app's port (with the bypass mark), whatever the request's authority, so the request keeps the
//! `Host`/`:authority` its caller sent.
//!
//! Why not hyper-util's pooled `Client`: per request it boxes a connector call, locks a shared
//! pool, and for HTTP/1.1 spawns a task that waits for the connection to become idle again. Here
//! an HTTP/1.1 connection goes back to its pool when the response body has been read (see
//! [`PooledBody`]), and each worker has its own pools, so the task driving a connection runs on
//! the same thread as the requests that use it (see [`crate::workers`]).

use crate::budget::Budget;
use crate::error::ProxyError;
use crate::h1;
use crate::httputil::{Body, BoxError};
use crate::net;
use crate::peer::{PeerConn, SendError};
use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Idle HTTP/1.1 connections kept per app port and worker; beyond that, finished ones close.
const MAX_IDLE: usize = 256;
/// An idle HTTP/1.1 connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

type Pools = Arc<[Arc<AppPool>]>;

/// How a request goes to the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppProto {
    Http1,
    Http2,
    /// HTTP/2 if the app speaks it (prior knowledge), else HTTP/1.1: `protocol: auto` for a
    /// caller that spoke HTTP/2. What the app speaks is learned once per app port (see
    /// [`AppPool::send_learning`]).
    Learn,
}

/// [`AppPool::speaks`]: not known yet, HTTP/2 (prior knowledge), only HTTP/1.1.
const SPEAKS_UNKNOWN: u8 = 0;
const SPEAKS_H2: u8 = 1;
const SPEAKS_H1: u8 = 2;

/// Clients for every app port. Ports the control plane sends later are added with
/// [`AppClients::add_ports`]; the request path never locks to find its pool.
pub struct AppClients {
    host: IpAddr,
    mark: u32,
    /// What HTTP/2 connections to the app may buffer.
    budget: Arc<Budget>,
    timeout: Duration,
    workers: usize,
    /// App port → one pool per worker.
    by_port: arc_swap::ArcSwap<HashMap<u16, Pools>>,
}

impl Default for AppClients {
    fn default() -> Self {
        let budget = Budget::unregistered(weft_api::proxy::Limits::default());
        AppClients::new(std::net::Ipv4Addr::LOCALHOST.into(), [], 0, Duration::from_secs(1), 1, budget)
    }
}

/// The connections of one worker to one app port.
struct AppPool {
    addr: SocketAddr,
    mark: u32,
    budget: Arc<Budget>,
    timeout: Duration,
    /// Idle HTTP/1.1 connections for requests without a body, most recently used at the back.
    direct: Mutex<VecDeque<(Instant, h1::Conn)>>,
    /// Idle HTTP/1.1 connections (hyper's) for the other requests, most recently used at the back.
    h1: Mutex<VecDeque<(Instant, http1::SendRequest<Body>)>>,
    /// The HTTP/2 connection, driven like the hop between proxies (see [`crate::peer`]).
    h2: Mutex<Option<PeerConn>>,
    /// Held while an HTTP/2 connection is being opened, so a burst opens one.
    h2_connecting: tokio::sync::Mutex<()>,
    /// Whether the task closing idle HTTP/1.1 connections has been started (at the first check-in).
    sweeping: AtomicBool,
    /// What the app on this port speaks (`SPEAKS_*`), shared by the port's worker pools.
    speaks: Arc<AtomicU8>,
}

impl AppClients {
    pub fn new(
        host: IpAddr,
        ports: impl IntoIterator<Item = u16>,
        mark: u32,
        timeout: Duration,
        workers: usize,
        budget: Arc<Budget>,
    ) -> Self {
        let clients = AppClients { host, mark, budget, timeout, workers: workers.max(1), by_port: Default::default() };
        clients.add_ports(ports);
        clients
    }

    /// Makes pools for the ports that have none yet (existing ones keep their connections).
    pub fn add_ports(&self, ports: impl IntoIterator<Item = u16>) {
        let missing: Vec<u16> = ports.into_iter().filter(|p| !self.by_port.load().contains_key(p)).collect();
        if missing.is_empty() {
            return;
        }
        let mut next = (**self.by_port.load()).clone();
        for port in missing {
            let speaks = Arc::new(AtomicU8::new(SPEAKS_UNKNOWN));
            next.entry(port).or_insert_with(|| {
                (0..self.workers)
                    .map(|_| {
                        Arc::new(AppPool {
                            addr: SocketAddr::new(self.host, port),
                            mark: self.mark,
                            budget: self.budget.clone(),
                            timeout: self.timeout,
                            direct: Mutex::default(),
                            h1: Mutex::default(),
                            h2: Mutex::default(),
                            h2_connecting: tokio::sync::Mutex::default(),
                            sweeping: AtomicBool::new(false),
                            speaks: speaks.clone(),
                        })
                    })
                    .collect()
            });
        }
        self.by_port.store(Arc::new(next));
    }

    /// Sends `req` to the app on `port` over HTTP/2 or HTTP/1.1. A request that could not be
    /// sent on a reused connection (the app closed it meanwhile) is sent again on another.
    pub async fn send(&self, port: u16, proto: AppProto, req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let pool = {
            let by_port = self.by_port.load();
            let pools = by_port.get(&port).ok_or_else(|| ProxyError::App(format!("port {port} is not an app port")))?;
            pools[crate::workers::current() % pools.len()].clone()
        };
        match proto {
            AppProto::Http2 => pool.send_h2(req).await,
            AppProto::Http1 => pool.send_h1(req).await,
            AppProto::Learn => pool.send_learning(req).await,
        }
    }
}

impl AppPool {
    fn error(&self, e: impl std::fmt::Display) -> ProxyError {
        ProxyError::App(format!("{}: {e}", self.addr))
    }

    /// An HTTP/2 exchange with the app failed. When the app broke the protocol itself (it
    /// answered something that is not HTTP/2), say so, log it and name the fix.
    fn h2_error(&self, e: h2::Error) -> ProxyError {
        // A GOAWAY of our own: what came from the app broke the protocol (an HTTP/1.1 answer
        // reads as a frame with an invalid size, say); or the app dropped the connection (as an
        // HTTP/1.1 server does on the HTTP/2 preface).
        if !(e.is_io() || e.is_go_away() && e.is_library()) {
            return self.error(e);
        }
        tracing::warn!(
            app = %self.addr,
            error = %e,
            "the app broke an HTTP/2 exchange: if it speaks only HTTP/1.1, set protocol: http1 on this inbound port"
        );
        ProxyError::App(format!(
            "{}: {e} ({NOT_H2}; if it speaks only HTTP/1.1, set protocol: http1 on inbound port {})",
            self.addr,
            self.addr.port()
        ))
    }

    /// `protocol: auto` for a caller that spoke HTTP/2: HTTP/2 to an app that speaks it, else
    /// HTTP/1.1. The first such request to the port asks the app on a connection of its own
    /// ([`probe_h2`]); the answer holds for the port until an HTTP/2 exchange with it breaks.
    async fn send_learning(self: &Arc<Self>, mut req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let mut speaks = self.speaks.load(Ordering::Relaxed);
        if speaks == SPEAKS_UNKNOWN {
            speaks = match Box::pin(probe_h2(self.addr, self.mark, self.timeout)).await {
                Some(true) => SPEAKS_H2,
                Some(false) => {
                    tracing::info!(
                        app = %self.addr,
                        "the app does not speak HTTP/2 (prior knowledge): requests from HTTP/2 callers go to it \
                         over HTTP/1.1 (set protocol: http1 on this port to skip this check)"
                    );
                    SPEAKS_H1
                }
                // Not reachable now: the exchange below reports why, and the next request asks again.
                None => SPEAKS_UNKNOWN,
            };
            if speaks != SPEAKS_UNKNOWN {
                self.speaks.store(speaks, Ordering::Relaxed);
            }
        }
        if speaks == SPEAKS_H1 {
            *req.version_mut() = http::Version::HTTP_11;
            return self.send_h1(req).await;
        }
        let result = self.send_h2(req).await;
        if let Err(ProxyError::App(e)) = &result {
            if speaks == SPEAKS_H2 && e.contains(NOT_H2) {
                // The app changed (restarted as another server, say): ask again next time.
                self.speaks.store(SPEAKS_UNKNOWN, Ordering::Relaxed);
            }
        }
        result
    }

    async fn send_h1(self: &Arc<Self>, mut req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        to_origin_form(&mut req);
        if h1::eligible(&req) {
            return self.send_direct(req).await;
        }
        loop {
            let (mut sender, reused) = match self.idle_h1() {
                Some(s) => (s, true),
                // Boxed: connecting is rare, and would otherwise grow every request's future.
                None => (Box::pin(self.connect_h1()).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let back = Some((sender, self.clone()));
                    return Ok(resp.map(|inner| PooledBody::new(inner, back).boxed()));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(self.error(e.into_error())),
                },
            }
        }
    }

    /// A request without a body, on a connection of [`AppPool::direct`]. One handed back unsent
    /// (the app had closed a reused connection) goes out again on another.
    async fn send_direct(self: &Arc<Self>, mut req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        loop {
            let (conn, reused) = match self.idle_direct() {
                Some(c) => (c, true),
                None => (Box::pin(self.connect_direct()).await?, false),
            };
            let pool = self.clone();
            match conn.send(req, move |c| pool.checkin(&pool.direct, c)).await {
                Ok(resp) => return Ok(resp),
                Err(h1::Failed { retry: Some(unsent), .. }) if reused => req = unsent,
                Err(failed) => return Err(self.error(failed.error)),
            }
        }
    }

    /// The most recently used idle direct connection the app has not closed meanwhile.
    fn idle_direct(&self) -> Option<h1::Conn> {
        let mut idle = self.direct.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((_, conn)) = idle.pop_back() {
            if conn.is_usable() {
                return Some(conn);
            }
        }
        None
    }

    async fn connect_direct(&self) -> Result<h1::Conn, ProxyError> {
        Ok(h1::Conn::new(connect(self.addr, self.mark, self.timeout).await?))
    }

    /// The most recently used idle connection that can take a request now.
    fn idle_h1(&self) -> Option<http1::SendRequest<Body>> {
        let mut idle = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        // A connection still finishing its previous exchange (its request body, say) is skipped
        // but kept; closed ones are dropped. Look at a few only: the rest are older.
        let mut busy = vec![];
        let mut found = None;
        while let Some((at, s)) = idle.pop_back() {
            if s.is_ready() {
                found = Some(s);
                break;
            }
            if s.is_closed() {
                continue;
            }
            if busy.len() >= 4 {
                idle.push_back((at, s));
                break;
            }
            busy.push((at, s));
        }
        for b in busy.into_iter().rev() {
            idle.push_front(b);
        }
        found
    }

    /// Puts a connection that finished its exchange back into `idle` (one of this pool's).
    fn checkin<C>(self: &Arc<Self>, idle: &Mutex<VecDeque<(Instant, C)>>, conn: C) {
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweep(Arc::downgrade(self)));
        }
        let now = Instant::now();
        let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
        while idle.front().is_some_and(|(at, _)| now.duration_since(*at) > IDLE_TIMEOUT) || idle.len() >= MAX_IDLE {
            idle.pop_front();
        }
        idle.push_back((now, conn));
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<Body>, ProxyError> {
        let tcp = connect(self.addr, self.mark, self.timeout).await?;
        let (mut sender, conn) = http1::Builder::new()
            .max_buf_size(h1::MAX_HEAD)
            .handshake::<_, Body>(TokioIo::new(tcp))
            .await
            .map_err(|e| self.error(e))?;
        drive(self.addr, conn);
        sender.ready().await.map_err(|e| self.error(e))?;
        Ok(sender)
    }

    /// Over the `h2` crate as the hop between proxies is: the request's own task opens the
    /// stream and awaits the response (hyper's HTTP/2 client adds a task and two channel hops
    /// per request).
    /// A request handed back unsent (the cached connection closed meanwhile) goes out once more
    /// on a fresh connection, as on the hop between proxies (`outbound::forward`).
    async fn send_h2(&self, mut req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let conn = match self.cached_h2() {
                Some(c) => c,
                None => Box::pin(self.connect_h2()).await?,
            };
            match conn.send(req).await {
                Ok(resp) => return Ok(resp),
                Err(e) => {
                    if e.broke_connection() {
                        self.h2.lock().unwrap_or_else(|p| p.into_inner()).take();
                    }
                    match e {
                        SendError::Unsent(unsent, _) if attempts < 2 => req = *unsent,
                        e => return Err(self.h2_error(e.into_error())),
                    }
                }
            }
        }
    }

    fn cached_h2(&self) -> Option<PeerConn> {
        let mut cached = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        match &*cached {
            Some(c) if !c.is_closed() => Some(c.clone()),
            Some(_) => {
                *cached = None;
                None
            }
            None => None,
        }
    }

    async fn connect_h2(&self) -> Result<PeerConn, ProxyError> {
        let _gate = self.h2_connecting.lock().await;
        if let Some(c) = self.cached_h2() {
            return Ok(c);
        }
        let tcp = connect(self.addr, self.mark, self.timeout).await?;
        let conn =
            PeerConn::handshake(tcp, &self.budget, crate::peer::KeepAlive::APP).await.map_err(|e| self.error(e))?;
        *self.h2.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
        Ok(conn)
    }
}

/// Opens a TCP connection to the local app at `addr`. When that fails the app is down or not
/// listening there, not the network between the sidecars: the caller gets `502 app` naming the
/// address, never `connect` or `connect-timeout` (which send the operator to the peer proxy).
pub(crate) async fn connect(
    addr: SocketAddr,
    mark: u32,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, ProxyError> {
    net::tcp_connect(addr, mark, timeout).await.map_err(|e| match e {
        ProxyError::Connect { source, .. } => {
            ProxyError::App(format!("connect to {addr} failed: {source}; is the app listening on that address?"))
        }
        ProxyError::ConnectTimeout(_) => ProxyError::App(format!(
            "connect to {addr} timed out after {timeout:?}; is the app listening on that address?"
        )),
        other => other,
    })
}

/// The app's answer to an upgrade, as for every other request: a failure talking to it is `app`
/// naming its address, and its own `x-weft-error` is dropped (only proxies speak in that header).
pub(crate) fn upgraded(
    addr: SocketAddr,
    result: Result<Response<Body>, ProxyError>,
) -> Result<Response<Body>, ProxyError> {
    match result {
        Ok(mut resp) => {
            resp.headers_mut().remove(crate::httputil::PROXY_ERROR);
            Ok(resp)
        }
        Err(ProxyError::Upstream(e)) => Err(ProxyError::App(format!("{addr}: {e}"))),
        Err(e) => Err(e),
    }
}

/// Runs a connection to the app until it ends (its requests go through the sender).
fn drive(addr: SocketAddr, conn: impl std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static) {
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%addr, error = %e, "app connection ended with error");
        }
    });
}

/// Closes idle HTTP/1.1 connections older than [`IDLE_TIMEOUT`] also when no request comes to
/// find them, as hyper-util's pool did; ends with the pool.
async fn sweep(pool: Weak<AppPool>) {
    let mut tick = tokio::time::interval(IDLE_TIMEOUT / 3);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let now = Instant::now();
        pool.h1
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(at, s)| now.duration_since(*at) <= IDLE_TIMEOUT && !s.is_closed());
        pool.direct
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(at, c)| now.duration_since(*at) <= IDLE_TIMEOUT && c.is_usable());
    }
}

/// Part of the error for an app that broke an HTTP/2 exchange.
const NOT_H2: &str = "the app broke off or garbled the HTTP/2 exchange";

/// Whether the app at `addr` speaks HTTP/2 with prior knowledge, asked on a connection of its
/// own (closed after): the client preface and an empty SETTINGS frame, to which an HTTP/2
/// server answers with its SETTINGS frame. An HTTP/1.1 server answers `400`, or closes. `None`:
/// no answer either way (not reachable, or silent for the connect timeout).
async fn probe_h2(addr: SocketAddr, mark: u32, timeout: Duration) -> Option<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    let mut tcp = net::tcp_connect(addr, mark, timeout).await.ok()?;
    let exchange = async {
        tcp.write_all(PREFACE).await?;
        let mut head = [0u8; 9];
        let mut got = 0;
        while got < head.len() {
            match tcp.read(&mut head[got..]).await? {
                0 => break,
                n => got += n,
            }
        }
        Ok::<_, std::io::Error>((head, got))
    };
    match tokio::time::timeout(timeout, exchange).await {
        // A frame header: type SETTINGS (4) on stream 0.
        Ok(Ok((head, 9))) => Some(head[3] == 4 && head[5..9] == [0, 0, 0, 0]),
        // Closed early, reset, or answered something shorter than a frame header.
        Ok(_) => Some(false),
        Err(_) => None,
    }
}

/// HTTP/1.1 to the app: `Host` from the URI's authority unless the request has one (the
/// authority without a default port), then the origin-form request target (`/path?query`).
fn to_origin_form(req: &mut Request<Body>) {
    if !req.headers().contains_key(HOST) {
        if let Some(auth) = req.uri().authority() {
            let default_port = if matches!(req.uri().scheme_str(), Some("https" | "wss")) { 443 } else { 80 };
            let value = match auth.port_u16() {
                Some(p) if p != default_port => HeaderValue::from_str(auth.as_str().rsplit('@').next().unwrap_or("")),
                _ => HeaderValue::from_str(auth.host()),
            };
            if let Ok(v) = value {
                req.headers_mut().insert(HOST, v);
            }
        }
    }
    let uri = match req.uri().path_and_query() {
        Some(pq) if pq.as_str() != "/" => {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(pq.clone());
            Uri::from_parts(parts).unwrap_or_default()
        }
        _ => Uri::default(),
    };
    *req.uri_mut() = uri;
}

/// A response body from a pooled HTTP/1.1 connection: when its end has been read, the
/// connection goes back to the pool (it can then take the next request).
struct PooledBody {
    inner: Incoming,
    back: Option<(http1::SendRequest<Body>, Arc<AppPool>)>,
}

impl PooledBody {
    fn new(inner: Incoming, back: Option<(http1::SendRequest<Body>, Arc<AppPool>)>) -> Self {
        let mut b = PooledBody { inner, back };
        // No body at all (204, HEAD, 304): nobody polls it, so release now.
        if b.inner.is_end_stream() {
            b.release();
        }
        b
    }

    fn release(&mut self) {
        if let Some((sender, pool)) = self.back.take() {
            if !sender.is_closed() {
                pool.checkin(&pool.h1, sender);
            }
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        match &res {
            // Servers (hyper's among them) stop polling once `is_end_stream` says so.
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            // A broken exchange: the connection is not reused.
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ => {}
        }
        res.map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(uri: &str, host: Option<&str>) -> (String, Option<String>) {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(HOST, h);
        }
        let mut req = b.body(crate::httputil::full("")).unwrap();
        to_origin_form(&mut req);
        (req.uri().to_string(), req.headers().get(HOST).map(|h| h.to_str().unwrap().to_string()))
    }

    #[test]
    fn origin_form_and_host_like_hyper_util_client() {
        assert_eq!(origin("http://api:8080/a?b=1", None), ("/a?b=1".into(), Some("api:8080".into())));
        assert_eq!(origin("http://api:80/", None), ("/".into(), Some("api".into())));
        assert_eq!(origin("http://api/x", Some("caller.example")), ("/x".into(), Some("caller.example".into())));
        assert_eq!(origin("/only/path", None), ("/only/path".into(), None));
    }
}
