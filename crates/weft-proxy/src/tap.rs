//! Live tap (`weft tap`): while the control plane has taps open on this proxy (ProxyUpdate
//! `taps`), each HTTP request that matches one is summarized (method, authority, path, status,
//! duration, who called whom; never bodies or other headers) and sent back over the discovery
//! stream (ProxyMessage `tap_events`).
//!
//! ```text
//!  request path ── Taps::on()? ── no ──► nothing more (one atomic load)
//!                      │ yes
//!                      ▼
//!  Tapped::start (copies method/authority/path) ─► response ─► Taps::emit: filters, per-tap
//!  rate limit ─► bounded queue (full: dropped, counted) ─► discovery stream, in batches
//! ```

use crate::routes::{Endpoint, Service};
use http::Request;
use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};
use tokio::sync::mpsc;
use weft_api::pb;
use weft_api::tap::{Destination, Source, TapEvent, TapFilter};

/// Events queued for the discovery stream at most; more are dropped and counted.
pub const QUEUE: usize = 1024;
/// Events sent in one ProxyMessage at most.
pub const BATCH: usize = 128;
/// Taps opened on the admin port (`/tap`) have ids from here up; the control plane's are below.
const LOCAL_IDS: u64 = 1 << 63;

/// One open tap as this proxy applies it.
struct Open {
    id: u64,
    filter: TapFilter,
    expires_unix_ms: u64,
    per_second: u32,
    /// The second (Unix) being counted, and the events sent in it.
    window: u64,
    sent: u32,
}

/// The taps open on this proxy, and where their events go.
#[derive(Default)]
pub struct Taps {
    /// Some tap is open: the only thing the request path reads when none is.
    on: AtomicBool,
    open: Mutex<Vec<Open>>,
    tx: Mutex<Option<mpsc::Sender<pb::TapEvent>>>,
    /// `weft_tap_events_dropped_total`.
    dropped: Counter,
    /// `(service, namespace)` of this proxy's workload by app port (from the taps).
    inbound: Mutex<std::collections::HashMap<u16, (String, String)>>,
    /// Where the events of admin-port taps go, by tap id.
    local: Mutex<std::collections::HashMap<u64, mpsc::Sender<TapEvent>>>,
    next_local: std::sync::atomic::AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Taps {
    /// Whether any tap is open (one relaxed atomic load).
    #[inline]
    pub fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Events dropped (rate limit, full queue, no stream) since the proxy started.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// Registers `weft_tap_events_dropped_total`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.sub_registry_with_prefix("weft").register(
            "tap_events_dropped",
            "Live tap events this proxy dropped: over a tap's rate (100/s), or its queue to the control plane full",
            self.dropped.clone(),
        );
    }

    /// The taps the control plane sent (all of them, replacing those before; the admin port's
    /// stay). A tap kept from before keeps its rate-limit window.
    pub fn set(&self, taps: &[pb::Tap]) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = Vec::with_capacity(taps.len());
        next.extend(open.drain(..).filter(|o| o.id >= LOCAL_IDS));
        for t in taps {
            let filter = TapFilter::from(t);
            if let Err(e) = filter.validate() {
                tracing::warn!(tap = t.id, error = %e, "tap refused");
                continue;
            }
            let (window, sent) = open.iter().find(|o| o.id == t.id).map_or((0, 0), |o| (o.window, o.sent));
            let per_second = if t.max_per_second == 0 { weft_api::tap::DEFAULT_PER_SECOND } else { t.max_per_second };
            next.push(Open { id: t.id, filter, expires_unix_ms: t.expires_unix_ms, per_second, window, sent });
        }
        *open = next;
        let inbound = taps.first().map(|t| &t.inbound_services).into_iter().flatten().filter_map(|(port, name)| {
            let (svc, ns) = name.split_once('.')?;
            Some((u16::try_from(*port).ok()?, (svc.to_string(), ns.to_string())))
        });
        *self.inbound.lock().unwrap_or_else(|p| p.into_inner()) = inbound.collect();
        self.on.store(!open.is_empty(), Ordering::Relaxed);
    }

    /// Opens a tap on this proxy alone (the admin port's `/tap`): its events arrive on the
    /// receiver until [`Taps::close_local`] with the id returned.
    pub fn open_local(&self, filter: TapFilter, expires_unix_ms: u64) -> (u64, mpsc::Receiver<TapEvent>) {
        let id = LOCAL_IDS + self.next_local.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUE);
        self.local.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
        let per_second = weft_api::tap::DEFAULT_PER_SECOND;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.push(Open { id, filter, expires_unix_ms, per_second, window: 0, sent: 0 });
        self.on.store(true, Ordering::Relaxed);
        (id, rx)
    }

    /// Closes an admin-port tap.
    pub fn close_local(&self, id: u64) {
        self.local.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|o| o.id != id);
        self.on.store(!open.is_empty(), Ordering::Relaxed);
    }

    /// A new queue for a new discovery stream (the old one, if any, is dropped).
    pub fn connect(&self) -> mpsc::Receiver<pb::TapEvent> {
        let (tx, rx) = mpsc::channel(QUEUE);
        *self.tx.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }

    /// The discovery stream ended: its taps end with it (the control plane sends them again on
    /// the next stream if they are still open).
    pub fn disconnect(&self) {
        self.set(&[]);
        *self.tx.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Sends `e` for every open tap it matches, within each tap's rate.
    pub fn emit(&self, mut e: TapEvent) {
        let now = now_ms();
        if e.direction == "inbound" && e.dst.service.is_none() {
            let port = e.dst.endpoint.as_deref().and_then(|a| a.parse::<std::net::SocketAddr>().ok()).map(|a| a.port());
            let names = self.inbound.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((svc, ns)) = port.and_then(|p| names.get(&p)) {
                (e.dst.service, e.dst.namespace) = (Some(svc.clone()), Some(ns.clone()));
            }
        }
        let second = now / 1000;
        let mut ids = vec![];
        {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            open.retain(|o| o.expires_unix_ms == 0 || o.expires_unix_ms > now);
            if open.is_empty() {
                self.on.store(false, Ordering::Relaxed);
                return;
            }
            for o in open.iter_mut().filter(|o| o.filter.matches(&e)) {
                if o.window != second {
                    (o.window, o.sent) = (second, 0);
                }
                if o.sent >= o.per_second {
                    self.dropped.inc();
                    continue;
                }
                o.sent += 1;
                ids.push(o.id);
            }
        }
        if ids.iter().any(|id| *id >= LOCAL_IDS) {
            let local = self.local.lock().unwrap_or_else(|p| p.into_inner());
            for id in ids.iter().filter(|id| **id >= LOCAL_IDS) {
                if local.get(id).is_none_or(|tx| tx.try_send(e.clone()).is_err()) {
                    self.dropped.inc();
                }
            }
            ids.retain(|id| *id < LOCAL_IDS);
        }
        if ids.is_empty() {
            return;
        }
        let mut wire = e.to_wire();
        wire.taps = ids;
        let sent = match &*self.tx.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(tx) => tx.try_send(wire).is_ok(),
            None => false,
        };
        if !sent {
            self.dropped.inc();
        }
    }
}

/// Up to [`BATCH`] events: the first one waited for, the rest that are already queued.
pub async fn next_batch(rx: &mut mpsc::Receiver<pb::TapEvent>) -> Option<Vec<pb::TapEvent>> {
    let first = rx.recv().await?;
    let mut out = vec![first];
    while out.len() < BATCH {
        match rx.try_recv() {
            Ok(e) => out.push(e),
            Err(_) => break,
        }
    }
    Some(out)
}

/// Sends this proxy's tap events up the discovery stream (`tx`) in batches, with the count of
/// events dropped so far, until the stream ends.
pub async fn forward(
    mut rx: mpsc::Receiver<pb::TapEvent>,
    ctx: std::sync::Arc<crate::Ctx>,
    tx: mpsc::Sender<pb::ProxyMessage>,
) {
    while let Some(events) = next_batch(&mut rx).await {
        let batch = pb::TapEvents { events, dropped: ctx.taps.dropped() };
        let msg = pb::ProxyMessage { kind: Some(pb::proxy_message::Kind::TapEvents(batch)) };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

/// A request being tapped: what its head said when it arrived, and what the proxy learns of
/// where it goes.
pub struct Tapped {
    started: Instant,
    event: TapEvent,
}

impl Tapped {
    /// `None` (at the cost of one atomic load) unless a tap is open.
    #[inline]
    pub fn start<B>(taps: &crate::tap::Taps, req: &Request<B>) -> Option<Box<Tapped>> {
        if !taps.on() {
            return None;
        }
        Some(Box::new(Tapped::of(req)))
    }

    #[cold]
    fn of<B>(req: &Request<B>) -> Tapped {
        let authority = match req.uri().authority() {
            Some(a) => a.as_str().to_string(),
            None => req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("").to_string(),
        };
        Tapped {
            started: Instant::now(),
            event: TapEvent {
                t_unix_ms: now_ms(),
                method: req.method().as_str().to_string(),
                authority,
                path: req.uri().path().to_string(),
                ..Default::default()
            },
        }
    }

    /// The service the request goes to (outbound).
    pub fn service(&mut self, s: &Service) {
        self.event.dst.namespace = Some(s.namespace.clone());
        self.event.dst.service = Some(s.name.clone());
    }

    /// The endpoint that took it (outbound).
    pub fn endpoint(&mut self, ep: &Endpoint) {
        self.event.dst.endpoint = Some(ep.address.to_string());
        self.event.dst.identity = Some(ep.identity.to_string());
        self.event.mtls = !ep.plaintext;
    }

    /// The route (`namespace/name`) whose rule it matched (outbound).
    pub fn route(&mut self, route: &str) {
        self.event.route = Some(route.to_string());
    }

    /// An outbound request from this proxy's app (`client`: the app's address) has its answer.
    pub fn outbound(self: Box<Self>, taps: &Taps, own: &str, client: Option<std::net::IpAddr>, status: u16) {
        let mut t = *self;
        t.event.direction = "outbound".into();
        t.event.src = Source { identity: Some(own.to_string()), address: client.map(|c| c.to_string()) };
        t.finish(taps, status);
    }

    /// An inbound request from `peer` (its identity, `None` for plaintext) to the app at `app`
    /// has its answer.
    pub fn inbound(
        self: Box<Self>,
        taps: &Taps,
        (own, namespace): (&str, &str),
        peer: Option<&str>,
        remote: std::net::SocketAddr,
        app: std::net::SocketAddr,
        status: u16,
    ) {
        let mut t = *self;
        t.event.direction = "inbound".into();
        t.event.mtls = peer.is_some();
        t.event.src = Source { identity: peer.map(str::to_string), address: Some(remote.to_string()) };
        t.event.dst = Destination {
            namespace: Some(namespace.to_string()),
            // Named by the taps' `inbound_services` in `Taps::emit`.
            service: None,
            endpoint: Some(app.to_string()),
            identity: Some(own.to_string()),
        };
        t.finish(taps, status);
    }

    fn finish(mut self, taps: &Taps, status: u16) {
        self.event.status = status;
        self.event.duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        taps.emit(self.event);
    }
}

/// Closes an admin-port tap when its answer is dropped (done, or the caller gone).
struct LocalTap {
    ctx: std::sync::Arc<crate::Ctx>,
    id: u64,
}

impl Drop for LocalTap {
    fn drop(&mut self) {
        self.ctx.taps.close_local(self.id);
    }
}

/// `%XX` and `+` decoded (a bad escape is kept as it is).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The admin port's `GET /tap?src=&dst=&path=&method=&status=&max=&seconds=`: this proxy's own
/// requests, as NDJSON lines of the same shape as the control plane's `GET /v1/tap`, for a proxy
/// without a control plane (and for the bench). Loopback callers only (checked by the caller).
pub fn admin_tap(ctx: std::sync::Arc<crate::Ctx>, query: Option<&str>) -> http::Response<crate::httputil::Body> {
    use http_body_util::StreamBody;
    let bad = |msg: String| {
        let mut r = http::Response::new(crate::httputil::full(format!("{msg}\n")));
        *r.status_mut() = http::StatusCode::BAD_REQUEST;
        r
    };
    let (mut filter, mut max, mut seconds) =
        (TapFilter::default(), weft_api::tap::DEFAULT_EVENTS, weft_api::tap::DEFAULT_SECONDS);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode(v);
        let number = |max: u64| v.parse::<u64>().ok().filter(|n| (1..=max).contains(n));
        match k {
            "src" => filter.src = v,
            "dst" => filter.dst = v,
            "path" => filter.path = v,
            "method" => filter.method = v,
            "status" => filter.status = v,
            "max" => match number(weft_api::tap::MAX_EVENTS) {
                Some(n) => max = n,
                None => return bad(format!("max: {v:?} must be 1 to {}", weft_api::tap::MAX_EVENTS)),
            },
            "seconds" => match number(weft_api::tap::MAX_SECONDS) {
                Some(n) => seconds = n,
                None => return bad(format!("seconds: {v:?} must be 1 to {}", weft_api::tap::MAX_SECONDS)),
            },
            _ => {
                return bad(format!("unknown parameter {k:?}: /tap takes src, dst, path, method, status, max, seconds"))
            }
        }
    }
    if let Err(e) = filter.validate() {
        return bad(e);
    }
    let (id, rx) = ctx.taps.open_local(filter, now_ms() + seconds * 1000);
    let cluster = ctx.cfg.cluster.clone();
    let proxy = ctx.cfg.control.as_ref().and_then(|c| c.proxy_id.clone()).unwrap_or_else(|| "local".into());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let guard = LocalTap { ctx, id };
    let lines = futures_util::stream::unfold((guard, rx, max), move |(guard, mut rx, left)| {
        let (cluster, proxy) = (cluster.clone(), proxy.clone());
        async move {
            if left == 0 {
                return None;
            }
            let mut e = tokio::time::timeout_at(deadline, rx.recv()).await.ok().flatten()?;
            (e.cluster, e.proxy) = (cluster, proxy);
            let mut line = serde_json::to_vec(&e).unwrap_or_default();
            line.push(b'\n');
            let frame = http_body::Frame::data(bytes::Bytes::from(line));
            Some((Ok::<_, crate::httputil::BoxError>(frame), (guard, rx, left - 1)))
        }
    });
    let mut r = http::Response::new(crate::httputil::Body::new(StreamBody::new(lines)));
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/x-ndjson"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap(id: u64, path: &str, per_second: u32) -> pb::Tap {
        pb::Tap { id, path: path.into(), max_per_second: per_second, ..Default::default() }
    }

    fn event(path: &str) -> TapEvent {
        TapEvent { path: path.into(), status: 200, ..Default::default() }
    }

    #[test]
    fn off_until_a_tap_opens_and_off_again_when_it_closes() {
        let taps = Taps::default();
        assert!(!taps.on());
        let req = Request::get("http://api/x").body(()).unwrap();
        assert!(Tapped::start(&taps, &req).is_none());
        taps.set(&[tap(1, "", 0)]);
        assert!(taps.on());
        let t = Tapped::start(&taps, &req).expect("tapped");
        assert_eq!((t.event.method.as_str(), t.event.authority.as_str(), t.event.path.as_str()), ("GET", "api", "/x"));
        taps.set(&[]);
        assert!(!taps.on());
    }

    #[tokio::test]
    async fn events_carry_the_taps_they_match_within_each_taps_rate() {
        let taps = Taps::default();
        let mut rx = taps.connect();
        taps.set(&[tap(1, "/a", 2), tap(2, "", 100)]);
        for _ in 0..3 {
            taps.emit(event("/a"));
        }
        taps.emit(event("/b"));
        let got = next_batch(&mut rx).await.unwrap();
        let ids: Vec<Vec<u64>> = got.iter().map(|e| e.taps.clone()).collect();
        // The third /a is over tap 1's rate (2/s) unless the second turned in between.
        assert!(ids == [vec![1, 2], vec![1, 2], vec![2], vec![2]] || ids[..2] == [vec![1, 2], vec![1, 2]], "{ids:?}");
        assert_eq!(got.last().unwrap().path, "/b");
    }

    #[test]
    fn query_values_are_decoded_and_bad_escapes_kept() {
        assert_eq!(decode("/a%20b+c%2Fd"), "/a b c/d");
        assert_eq!(decode("%zz%2"), "%zz%2");
        assert_eq!(decode("%C3%A9é"), "éé");
    }

    #[tokio::test]
    async fn an_admin_tap_gets_its_own_events_and_survives_the_control_planes_taps() {
        let taps = Taps::default();
        let (id, mut rx) = taps.open_local(TapFilter { path: "/a".into(), ..Default::default() }, 0);
        assert!(taps.on());
        taps.set(&[]);
        assert!(taps.on(), "the control plane's (empty) taps leave the admin port's open");
        taps.emit(event("/a"));
        taps.emit(event("/b"));
        assert_eq!(rx.recv().await.unwrap().path, "/a");
        assert!(rx.try_recv().is_err());
        taps.close_local(id);
        assert!(!taps.on());
    }

    #[test]
    fn expired_taps_turn_tapping_off_and_a_full_queue_counts_drops() {
        let taps = Taps::default();
        taps.set(&[pb::Tap { id: 1, expires_unix_ms: 1, ..Default::default() }]);
        assert!(taps.on());
        taps.emit(event("/"));
        assert!(!taps.on(), "an expired tap is gone");
        taps.set(&[tap(2, "", 0)]);
        taps.emit(event("/"));
        assert_eq!(taps.dropped(), 1, "no stream to send on");
    }
}
