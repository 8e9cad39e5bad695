//! The proxy's Prometheus metrics, served as text on the admin port's `/metrics`.
//!
//! Labels: `direction` (inbound/outbound/gateway), `src` and `dst` (SPIFFE IDs, or a service name
//! where no identity is known), `status` (HTTP status code). Unknown values are `"unknown"`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::fmt::Write;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// A label value shared by reference: cloning it on the request path costs a refcount, not an
/// allocation. Built once per identity (proxy, endpoint, peer connection).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Name(pub Arc<str>);

impl Name {
    pub fn new(s: impl AsRef<str>) -> Self {
        Name(Arc::from(s.as_ref()))
    }
}

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Direction {
    inbound,
    outbound,
    gateway,
}

/// `kind` of `weft_ca_cert_expiry_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CaCertKind {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Peer {
    pub direction: Direction,
    pub src: Name,
    pub dst: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Response {
    pub direction: Direction,
    pub src: Name,
    pub dst: Name,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Bytes {
    pub direction: Direction,
    pub src: Name,
    pub dst: Name,
    /// `rx`: from the connection's client; `tx`: to it.
    pub flow: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub direction: Direction,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Proto {
    pub direction: Direction,
    pub protocol: &'static str,
}

/// Why an HTTP/2 stream was refused (see [`crate::budget`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Refused {
    pub reason: &'static str,
}

/// Every metric the proxy records.
#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<Peer, Counter>,
    pub responses: Family<Response, Counter>,
    pub latency: Family<Peer, Histogram>,
    pub tcp_open: Family<Peer, Counter>,
    pub tcp_close: Family<Peer, Counter>,
    pub tcp_active: Family<Peer, Gauge>,
    pub tcp_bytes: Family<Bytes, Counter>,
    pub tls_errors: Family<Reason, Counter>,
    pub protocol_errors: Family<Reason, Counter>,
    pub detected: Family<Proto, Counter>,
    /// New mTLS HTTP/2 connections opened to peer proxies (pool misses).
    pub peer_connects: Counter,
    /// Requests sent over an already-open pooled connection (pool hits).
    pub peer_reuses: Counter,
    pub cert_expiry: Gauge,
    pub cert_rotations: Counter,
    /// Seconds until the earliest expiry of each kind of certificate this proxy relies on
    /// (`root`: its trust domain's roots; `intermediate`: its chain's; `leaf`: its own),
    /// negative once expired; refreshed at each scrape ([`Metrics::refresh_ca_expiry`]).
    pub ca_expiry: Family<CaCertKind, Gauge>,
    /// 1 while the discovery stream is up.
    pub control_connected: Gauge,
    /// Version of the config last applied from the control plane.
    pub config_version: Gauge,
    /// Body bytes queued to send on HTTP/2 streams (see `budget`).
    pub http2_buffered: Gauge,
    /// Request header bytes held by open HTTP/2 streams the proxy serves.
    pub http2_held_headers: Gauge,
    /// Times a stream's body waited for room in its connection's or the proxy's buffer.
    pub http2_buffer_waits: Counter,
    pub http2_streams_refused: Family<Refused, Counter>,
    /// Connections the proxy's listeners accepted that are open now, by who opened them
    /// (`direction`: inbound/gateway from peers, outbound from apps).
    pub connections_open: Family<Listener, Gauge>,
    /// Times a listener stopped accepting because `limits.max_connections` were open.
    pub connections_at_limit: Family<Listener, Counter>,
}

/// Which connection count of `limits.max_connections` a listener draws on.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Listener {
    /// `peer` (inbound and gateway listeners) or `app` (outbound listeners).
    pub from: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~13 s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 18))
}

impl Metrics {
    /// Sets `weft_ca_cert_expiry_seconds` from the certificates in use now: the leaf, the
    /// intermediates of its chain and the roots of its own trust domain (the earliest of each).
    pub fn refresh_ca_expiry(&self, certs: &weft_identity::CertStore) {
        let now = std::time::SystemTime::now();
        let left = |der: &rustls::pki_types::CertificateDer<'_>| {
            weft_identity::tls::not_after(der).ok().map(|t| match t.duration_since(now) {
                Ok(d) => d.as_secs() as i64,
                Err(e) => -(e.duration().as_secs() as i64),
            })
        };
        let leaf = certs.leaf();
        let td = leaf.id().trust_domain().to_string();
        let chain = leaf.chain();
        let roots = certs.bundle().roots_for(&td, &td);
        let kinds: [(&'static str, Option<i64>); 3] = [
            ("leaf", chain.first().and_then(left)),
            ("intermediate", chain.iter().skip(1).filter_map(left).min()),
            ("root", roots.iter().filter_map(left).min()),
        ];
        for (kind, secs) in kinds {
            match secs {
                Some(s) => {
                    self.ca_expiry.get_or_create(&CaCertKind { kind }).set(s);
                }
                None => {
                    self.ca_expiry.remove(&CaCertKind { kind });
                }
            }
        }
    }

    pub fn new(reg: &mut Registry) -> Self {
        let m = Metrics {
            requests: Family::default(),
            responses: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            tcp_open: Family::default(),
            tcp_close: Family::default(),
            tcp_active: Family::default(),
            tcp_bytes: Family::default(),
            tls_errors: Family::default(),
            protocol_errors: Family::default(),
            detected: Family::default(),
            peer_connects: Counter::default(),
            peer_reuses: Counter::default(),
            cert_expiry: Gauge::default(),
            cert_rotations: Counter::default(),
            ca_expiry: Family::default(),
            control_connected: Gauge::default(),
            config_version: Gauge::default(),
            http2_buffered: Gauge::default(),
            http2_held_headers: Gauge::default(),
            http2_buffer_waits: Counter::default(),
            http2_streams_refused: Family::default(),
            connections_open: Family::default(),
            connections_at_limit: Family::default(),
        };
        let r = reg.sub_registry_with_prefix("weft");
        r.register("http_requests", "HTTP requests proxied", m.requests.clone());
        r.register("http_responses", "HTTP responses proxied, by status", m.responses.clone());
        r.register("http_response_latency_seconds", "Time to response headers", m.latency.clone());
        r.register("tcp_open", "TCP connections opened", m.tcp_open.clone());
        r.register("tcp_close", "TCP connections closed", m.tcp_close.clone());
        r.register("tcp_active_connections", "TCP connections open now", m.tcp_active.clone());
        r.register("tcp_bytes", "Bytes proxied on opaque TCP connections", m.tcp_bytes.clone());
        r.register("tls_handshake_errors", "Failed TLS handshakes, by reason", m.tls_errors.clone());
        r.register("protocol_errors", "Connections refused for protocol reasons", m.protocol_errors.clone());
        r.register("protocol_detected", "Connections by detected protocol", m.detected.clone());
        r.register("peer_connections", "mTLS HTTP/2 connections opened to peer proxies", m.peer_connects.clone());
        r.register("peer_connection_reuses", "Requests sent on an already-open peer connection", m.peer_reuses.clone());
        r.register(
            "cert_expiry_timestamp_seconds",
            "Expiry of the current workload certificate",
            m.cert_expiry.clone(),
        );
        r.register("cert_rotations", "Workload certificates installed after start", m.cert_rotations.clone());
        r.register(
            "ca_cert_expiry_seconds",
            "Seconds until the earliest root, intermediate or leaf certificate in use expires (negative: expired)",
            m.ca_expiry.clone(),
        );
        r.register(
            "control_connected",
            "1 while the discovery stream to the control plane is up",
            m.control_connected.clone(),
        );
        r.register(
            "config_version",
            "Version of the config last applied from the control plane",
            m.config_version.clone(),
        );
        r.register(
            "http2_buffered_bytes",
            "HTTP/2 body bytes waiting to be sent (bounded by limits.proxy_buffer_bytes)",
            m.http2_buffered.clone(),
        );
        r.register(
            "http2_held_header_bytes",
            "Request header bytes held by open HTTP/2 streams (bounded by limits.proxy_buffer_bytes)",
            m.http2_held_headers.clone(),
        );
        r.register(
            "http2_buffer_waits",
            "Times an HTTP/2 body waited for room in its connection's or the proxy's buffer",
            m.http2_buffer_waits.clone(),
        );
        r.register(
            "http2_streams_refused",
            "HTTP/2 streams refused with 503 overloaded, by the bound they would have passed",
            m.http2_streams_refused.clone(),
        );
        r.register(
            "connections_open",
            "Accepted connections open now, from peers or from apps (each bounded by limits.max_connections)",
            m.connections_open.clone(),
        );
        r.register(
            "connections_at_limit",
            "Times a listener stopped accepting because limits.max_connections connections were open",
            m.connections_at_limit.clone(),
        );
        m
    }

    pub fn tls_error(&self, direction: Direction, reason: &'static str) {
        self.tls_errors.get_or_create(&Reason { direction, reason }).inc();
    }

    pub fn protocol_error(&self, direction: Direction, reason: &'static str) {
        self.protocol_errors.get_or_create(&Reason { direction, reason }).inc();
    }

    /// Starts recording one TCP connection; the guard records the close, even on early return.
    pub fn tcp_conn(&self, peer: Peer) -> TcpGuard {
        self.tcp_open.get_or_create(&peer).inc();
        self.tcp_active.get_or_create(&peer).inc();
        TcpGuard { metrics: self.clone(), peer, rx: 0, tx: 0 }
    }

    /// Records one HTTP exchange. On the request path, prefer a cached [`HttpSeries`].
    pub fn http(&self, peer: &Peer, status: u16, started: Instant) {
        self.requests.get_or_create(peer).inc();
        self.latency.get_or_create(peer).observe(started.elapsed().as_secs_f64());
        let r = Response { direction: peer.direction, src: peer.src.clone(), dst: peer.dst.clone(), status };
        self.responses.get_or_create(&r).inc();
    }
}

/// Statuses whose `responses` series an [`HttpSeries`] keeps resolved; others are looked up.
const CACHED_STATUSES: [u16; 10] = [200, 201, 204, 301, 302, 304, 400, 404, 500, 503];

/// The HTTP series of one label set (a peer connection's, an endpoint's), resolved once.
/// [`Metrics::http`] finds three series per request in `Family` maps, hashing the label set
/// (two SPIFFE IDs) each time under a lock; this keeps the handles instead. Built lazily, at the
/// first request, so `/metrics` shows a series only once it has counted something, as before.
pub struct HttpSeries {
    metrics: Metrics,
    peer: Peer,
    requests: Counter,
    latency: Histogram,
    responses: [OnceLock<Counter>; CACHED_STATUSES.len()],
}

impl std::fmt::Debug for HttpSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSeries").field("peer", &self.peer).finish_non_exhaustive()
    }
}

impl HttpSeries {
    pub fn new(metrics: &Metrics, peer: Peer) -> Self {
        HttpSeries {
            requests: metrics.requests.get_or_create(&peer).clone(),
            latency: metrics.latency.get_or_create(&peer).clone(),
            metrics: metrics.clone(),
            peer,
            responses: Default::default(),
        }
    }

    /// Records one HTTP exchange, as [`Metrics::http`] does.
    pub fn record(&self, status: u16, started: Instant) {
        self.requests.inc();
        self.latency.observe(started.elapsed().as_secs_f64());
        let family = &self.metrics.responses;
        let label = || Response {
            direction: self.peer.direction,
            src: self.peer.src.clone(),
            dst: self.peer.dst.clone(),
            status,
        };
        match CACHED_STATUSES.iter().position(|s| *s == status) {
            Some(i) => self.responses[i].get_or_init(|| family.get_or_create(&label()).clone()).inc(),
            None => family.get_or_create(&label()).inc(),
        };
    }
}

pub struct TcpGuard {
    metrics: Metrics,
    peer: Peer,
    pub rx: u64,
    pub tx: u64,
}

impl Drop for TcpGuard {
    fn drop(&mut self) {
        let m = &self.metrics;
        m.tcp_close.get_or_create(&self.peer).inc();
        m.tcp_active.get_or_create(&self.peer).dec();
        for (flow, n) in [("rx", self.rx), ("tx", self.tx)] {
            let l =
                Bytes { direction: self.peer.direction, src: self.peer.src.clone(), dst: self.peer.dst.clone(), flow };
            m.tcp_bytes.get_or_create(&l).inc_by(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use weft_identity::{Authority, CertStore, SpiffeId};

    /// The gauge of `kind` in the encoded metrics.
    fn gauge(text: &str, kind: &str) -> i64 {
        let prefix = format!("weft_ca_cert_expiry_seconds{{kind=\"{kind}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&prefix)?.parse().ok()).unwrap_or_else(|| panic!("{kind}: {text}"))
    }

    #[test]
    fn ca_expiry_reports_the_leaf_the_intermediate_and_the_root_in_use() {
        let day = 86400;
        let root = Authority::new_root("td", Duration::from_secs(10 * day)).unwrap();
        let inter = root.new_intermediate("c", Duration::from_secs(5 * day)).unwrap();
        let id = SpiffeId::workload("td", "ns", "sa").unwrap();
        let certs = CertStore::new(inter.issue(&id, Duration::from_secs(3600)).unwrap(), inter.bundle()).unwrap();
        let mut reg = Registry::default();
        let m = Metrics::new(&mut reg);
        m.refresh_ca_expiry(&certs);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        let near = |got: i64, want: u64| got <= want as i64 && got > want as i64 - 120;
        assert!(near(gauge(&text, "leaf"), 3600), "{text}");
        assert!(near(gauge(&text, "intermediate"), 5 * day), "{text}");
        assert!(near(gauge(&text, "root"), 10 * day), "{text}");
    }
}
