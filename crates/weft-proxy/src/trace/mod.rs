//! Distributed tracing (docs/observability.md, "Tracing"): a client span per request the
//! outbound side forwards, a server span per request the inbound side hands to its app, exported
//! over OTLP/gRPC.
//!
//! ```text
//!  app ─► outbound: read caller's trace (W3C/B3) or start one (sampled per `sampling`)
//!         client span C (parent: caller's span) ── traceparent/b3 with parent = C ─► peer inbound
//!                                                  server span S (parent: C) ── parent = S ─► app
//!  finished spans ─► bounded queue (full: dropped, counted) ─► export task ─► OTLP/gRPC collector
//! ```
//!
//! Off (no `tracing` in the config file or from the control plane): [`State::tracer`] is one
//! relaxed atomic load and a branch per request. A request whose caller decided not to sample
//! passes with its headers untouched and no span.

mod export;
pub mod propagation;
#[cfg(test)]
mod tests;

use arc_swap::ArcSwapOption;
use http::Request;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use propagation::{Found, Outgoing};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use weft_api::otlp::common::v1::{any_value, AnyValue, KeyValue};
use weft_api::otlp::trace::v1 as otlp;
use weft_api::trace::TracingSpec;

/// Spans waiting for the export task; past this they are dropped and counted.
pub const QUEUE_SPANS: usize = 4096;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpanOutcome {
    /// `exported`, `dropped` (the queue was full), `failed` (the collector did not take them).
    pub outcome: &'static str,
}

#[derive(Clone, Default)]
pub struct Metrics {
    pub spans: Family<SpanOutcome, Counter>,
}

impl Metrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = Metrics::default();
        reg.sub_registry_with_prefix("weft").register(
            "trace_spans",
            "Spans this proxy finished, by outcome: exported, dropped (export queue full), failed (collector error)",
            m.spans.clone(),
        );
        m
    }

    fn count(&self, outcome: &'static str, n: u64) {
        self.spans.get_or_create(&SpanOutcome { outcome }).inc_by(n);
    }
}

/// Who this proxy is, on every span it exports (OTLP resource attributes).
#[derive(Clone, Debug, Default)]
pub struct Resource {
    /// The SPIFFE ID.
    pub identity: String,
    pub namespace: String,
    pub service_account: String,
    pub cluster: String,
}

/// Tracing as configured now: the spec, and the queue of its export task.
pub struct Tracer {
    spec: TracingSpec,
    /// `sampling` percent as a threshold on a random `u64`.
    threshold: u64,
    queue: tokio::sync::mpsc::Sender<otlp::Span>,
    metrics: Metrics,
    cluster: String,
}

/// Tracing for one proxy: the spec from the config file (which wins) or from the control plane.
pub struct State {
    on: AtomicBool,
    tracer: ArcSwapOption<Tracer>,
    from_file: Option<TracingSpec>,
    /// The spec in force and the resource it exports as (its cluster from the control plane, when
    /// it names one), to keep the tracer (and its export connection) while they are unchanged.
    current: Mutex<(Option<TracingSpec>, Resource)>,
    mark: u32,
    metrics: Metrics,
}

impl State {
    /// Tracing per the config file's `tracing` (`None`: off until a control plane sends one).
    /// Must run on a tokio runtime when `from_file` is set (the export task starts).
    pub fn new(metrics: Metrics, mark: u32, from_file: Option<TracingSpec>, resource: Resource) -> State {
        let state = State {
            on: AtomicBool::new(false),
            tracer: ArcSwapOption::empty(),
            from_file,
            current: Mutex::new((None, resource)),
            mark,
            metrics,
        };
        state.apply(state.from_file.as_ref(), None);
        state
    }

    /// The control plane's MeshConfig `tracing` (the config file's wins when it has one), and the
    /// cluster it says this proxy runs in (empty: the config's).
    pub fn update(&self, from_control: Option<&TracingSpec>, cluster: &str) {
        self.apply(self.from_file.as_ref().or(from_control), Some(cluster).filter(|c| !c.is_empty()));
    }

    fn apply(&self, wanted: Option<&TracingSpec>, cluster: Option<&str>) {
        let mut guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let (current, resource) = &mut *guard;
        let moved = cluster.is_some_and(|c| c != resource.cluster);
        if let Some(c) = cluster {
            resource.cluster = c.to_string();
        }
        if current.as_ref() == wanted && !(moved && wanted.is_some()) {
            return;
        }
        match wanted {
            None => {
                self.on.store(false, Ordering::Release);
                self.tracer.store(None);
                tracing::info!("tracing off");
            }
            Some(spec) => {
                let queue = export::spawn(&spec.otlp, self.mark, &*resource, self.metrics.clone());
                let threshold = threshold(spec.sampling);
                let tracer = Tracer {
                    spec: spec.clone(),
                    threshold,
                    queue,
                    metrics: self.metrics.clone(),
                    cluster: resource.cluster.clone(),
                };
                self.tracer.store(Some(Arc::new(tracer)));
                self.on.store(true, Ordering::Release);
                tracing::info!(endpoint = %spec.otlp.endpoint, sampling = spec.sampling, "tracing on");
            }
        }
        *current = wanted.cloned();
    }

    /// The tracer, when tracing is on: one atomic load and a branch when it is off.
    #[inline]
    pub fn tracer(&self) -> Option<Arc<Tracer>> {
        if !self.on.load(Ordering::Relaxed) {
            return None;
        }
        self.tracer.load_full()
    }

    /// The span of one request (see [`Tracer::start`]), when tracing is on and it is sampled.
    /// Boxed: the future of a request that is not sampled carries a pointer, not the span.
    #[inline]
    pub fn span<B>(&self, kind: Kind, req: &mut Request<B>) -> Option<Box<Span>> {
        self.tracer()?.start(kind, req).map(Box::new)
    }

    /// The spec in force, for `/config_dump`.
    pub fn spec(&self) -> Option<TracingSpec> {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).0.clone()
    }
}

/// MeshConfig `tracing` from a discovery update, checked again here (`None`: off).
pub fn tracing_from(update: &weft_api::pb::ProxyUpdate) -> Result<Option<TracingSpec>, weft_api::ConfigError> {
    let Some(t) = &update.tracing else { return Ok(None) };
    let spec: TracingSpec = serde_json::from_str(&t.json)
        .map_err(|e| weft_api::ConfigError::invalid("tracing", format!("not a tracing spec: {e}")))?;
    spec.validate("tracing")?;
    Ok(Some(spec))
}

fn threshold(percent: f64) -> u64 {
    if percent >= 100.0 {
        u64::MAX
    } else if percent <= 0.0 {
        0
    } else {
        (percent / 100.0 * u64::MAX as f64) as u64
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

/// A per-thread seed from the process's hash keys (random per process), the thread and the time.
fn seed() -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    std::thread::current().id().hash(&mut h);
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos().hash(&mut h);
    h.finish() | 1
}

/// SplitMix64: trace and span ids must be unique, not secret.
fn next_u64() -> u64 {
    RNG.with(|s| {
        let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

fn span_id() -> [u8; 8] {
    loop {
        let v = next_u64();
        if v != 0 {
            return v.to_be_bytes();
        }
    }
}

fn trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&span_id());
    id[8..].copy_from_slice(&next_u64().to_be_bytes());
    id
}

/// Client (outbound: this proxy calls a peer) or server (inbound: a peer called this proxy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Client,
    Server,
}

/// A span being recorded: made by [`Tracer::start`], sent by [`Span::end`].
pub struct Span {
    tracer: Arc<Tracer>,
    kind: Kind,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_id: Option<[u8; 8]>,
    start_unix_nanos: u64,
    start: Instant,
    method: String,
    path: String,
    authority: String,
    /// The other side: the callee's identity (client) or the caller's (server).
    pub peer_identity: Option<String>,
    /// Where the request went: the endpoint (client) or the app (server).
    pub upstream: Option<std::net::SocketAddr>,
    /// `namespace/name` of the route that matched (client spans of services with routes).
    pub route: Option<Arc<str>>,
}

impl Tracer {
    fn sample(&self) -> bool {
        match self.threshold {
            0 => false,
            u64::MAX => true,
            t => next_u64() < t,
        }
    }

    /// Reads the caller's trace from `req`, decides sampling, and writes this proxy's span as the
    /// parent of the next hop into `req`. `None`: not sampled (no span; the headers carry the
    /// decision on).
    pub fn start<B>(self: &Arc<Self>, kind: Kind, req: &mut Request<B>) -> Option<Span> {
        let allowed = &self.spec.propagation;
        let found = propagation::extract(req.headers(), allowed);
        if !matches!(found, Found::Trace(_)) {
            // A new trace: a `tracestate` belongs to the trace it came with (W3C Trace Context
            // §3.3: ignored with a bad `traceparent`), not to this one.
            req.headers_mut().remove(propagation::TRACESTATE);
        }
        let (trace_id, parent_id, sampled, formats, b3_short) = match found {
            Found::Trace(t) => {
                let sampled = t.sampled.unwrap_or_else(|| self.sample());
                if t.sampled == Some(false) {
                    // The caller decided: its headers go on as they are.
                    return None;
                }
                (t.trace_id, Some(t.parent_id), sampled, t.formats, t.b3_short)
            }
            Found::DecisionOnly(false) => return None,
            Found::DecisionOnly(true) => (trace_id(), None, true, propagation::new_trace_formats(allowed), false),
            Found::None => {
                if !self.sample() {
                    // Only the decision goes on, in the cheapest form: a `traceparent` with the
                    // sampled flag off (W3C needs ids) and `b3: 0` (B3's deny-only header).
                    propagation::inject_unsampled(req.headers_mut(), allowed, &trace_id());
                    return None;
                }
                (trace_id(), None, true, propagation::new_trace_formats(allowed), false)
            }
        };
        let span_id = span_id();
        let out = Outgoing { trace_id: &trace_id, span_id: &span_id, parent_id: parent_id.as_ref(), sampled, b3_short };
        propagation::inject(req.headers_mut(), formats, &out);
        if !sampled {
            return None;
        }
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string))
            .unwrap_or_default();
        Some(Span {
            tracer: self.clone(),
            kind,
            trace_id,
            span_id,
            parent_id,
            start_unix_nanos: SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64,
            start: Instant::now(),
            method: req.method().as_str().to_string(),
            path: req.uri().path().to_string(),
            authority,
            peer_identity: None,
            upstream: None,
            route: None,
        })
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(value) }) }
}

fn s(v: impl Into<String>) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

impl Span {
    pub fn trace_id(&self) -> &[u8; 16] {
        &self.trace_id
    }

    pub fn span_id(&self) -> &[u8; 8] {
        &self.span_id
    }

    /// Ends the span with the response's status and queues it for export (dropped, and counted,
    /// when the queue is full: a request never waits for tracing).
    pub fn end(self, status: u16) {
        let elapsed = self.start.elapsed().as_nanos() as u64;
        let error = match self.kind {
            Kind::Client => status >= 400,
            Kind::Server => status >= 500,
        };
        let mut attributes = vec![
            kv("http.request.method", s(self.method.as_str())),
            kv("url.path", s(self.path.as_str())),
            kv("http.response.status_code", any_value::Value::IntValue(status.into())),
            kv("weft.cluster", s(self.tracer.cluster.as_str())),
        ];
        if !self.authority.is_empty() {
            attributes.push(kv("server.address", s(self.authority.as_str())));
        }
        if let Some(id) = &self.peer_identity {
            attributes.push(kv("weft.peer.identity", s(id.as_str())));
        }
        if let Some(r) = &self.route {
            attributes.push(kv("weft.route", s(&**r)));
        }
        if let Some(a) = self.upstream {
            attributes.push(kv("weft.upstream.address", s(a.to_string())));
        }
        let span = otlp::Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            trace_state: String::new(),
            parent_span_id: self.parent_id.map(|p| p.to_vec()).unwrap_or_default(),
            flags: 1, // the W3C flags: sampled
            name: format!("{} {}", self.method, self.path),
            kind: match self.kind {
                Kind::Client => otlp::span::SpanKind::Client,
                Kind::Server => otlp::span::SpanKind::Server,
            } as i32,
            start_time_unix_nano: self.start_unix_nanos,
            end_time_unix_nano: self.start_unix_nanos + elapsed,
            attributes,
            dropped_attributes_count: 0,
            status: Some(otlp::Status {
                message: String::new(),
                code: if error { otlp::status::StatusCode::Error } else { otlp::status::StatusCode::Unset } as i32,
            }),
        };
        if self.tracer.queue.try_send(span).is_err() {
            self.tracer.metrics.count("dropped", 1);
        }
    }
}
