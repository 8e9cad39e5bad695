//! The load generator: HTTP/1.1 (keep-alive) or HTTP/2 (prior knowledge, multiplexed) GETs from
//! a fixed set of workers, either open-loop at a fixed rate or closed-loop for peak throughput.
//!
//! - **Open loop** (`rate: Some(r)`): worker `w` of `W` sends its `k`-th request at the scheduled
//!   time `t0 + (k·W + w) / r`, the whole generator sending `r` requests per second spread evenly.
//!   A worker has one request in flight at a time (as wrk2's connections do). Latency is measured
//!   from the request's *scheduled* send time whenever the worker is late because its previous
//!   response was slow, so a stall is counted against every request it delayed
//!   (coordinated-omission correction). When the worker was idle and woke up for the send, the
//!   latency is measured from the actual send: the timer's wake-up slack (up to ~1 ms with tokio's
//!   millisecond timer) belongs to the generator, not to the system under test.
//! - **Closed loop** (`rate: None`): every worker sends back to back; latency is from send to the
//!   last byte of the body. Throughput is what the system under test sustains at that concurrency.
//!
//! HTTP/1.1: one connection per worker. HTTP/2: `connections` connections, the workers spread
//! round-robin over them (`concurrency / connections` streams in flight on each).
//! Samples are kept only for requests started after `warmup`; the run lasts `warmup + duration`.

use crate::stats::Latency;
use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// HTTP/1.1 with keep-alive, one request at a time per connection.
    H1,
    /// HTTP/2 with prior knowledge (h2c), streams multiplexed on each connection.
    H2,
}

impl Proto {
    pub fn label(self) -> &'static str {
        match self {
            Proto::H1 => "HTTP/1.1",
            Proto::H2 => "HTTP/2",
        }
    }
}

/// What to send, how hard and for how long.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Spec {
    pub addr: SocketAddr,
    /// Path and query, e.g. `/bytes/1024`.
    pub path: String,
    pub proto: Proto,
    /// HTTP/1.1: ignored (one connection per worker). HTTP/2: connections the workers share.
    pub connections: usize,
    /// Workers, i.e. requests in flight at most.
    pub concurrency: usize,
    /// Requests per second for an open-loop run; `None` for closed loop.
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub duration: Duration,
    /// A request without a complete response after this long counts as an error.
    pub timeout: Duration,
}

/// The outcome of one run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Successful (2xx, whole body read) requests started in the measured window.
    pub requests: u64,
    /// Failed requests (transport error, timeout, non-2xx) started in the measured window.
    pub errors: u64,
    /// Measured window, seconds.
    pub seconds: f64,
    /// `requests / seconds`.
    pub rps: f64,
    /// Body bytes received in the window.
    pub body_bytes: u64,
    pub latency: Latency,
    /// The first few distinct error messages.
    pub error_samples: Vec<String>,
}

type H1Sender = http1::SendRequest<Empty<Bytes>>;
type H2Sender = http2::SendRequest<Empty<Bytes>>;

enum Sender {
    H1(H1Sender),
    H2(H2Sender),
}

async fn tcp(addr: SocketAddr) -> anyhow::Result<TokioIo<TcpStream>> {
    let s = TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    Ok(TokioIo::new(s))
}

async fn connect_h1(addr: SocketAddr) -> anyhow::Result<H1Sender> {
    let (sender, conn) = http1::handshake(tcp(addr).await?).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn connect_h2(addr: SocketAddr) -> anyhow::Result<H2Sender> {
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(8 << 20)
        .handshake(tcp(addr).await?)
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

impl Sender {
    async fn connect(proto: Proto, addr: SocketAddr) -> anyhow::Result<Sender> {
        Ok(match proto {
            Proto::H1 => Sender::H1(connect_h1(addr).await?),
            Proto::H2 => Sender::H2(connect_h2(addr).await?),
        })
    }

    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// One GET; returns the body length once the whole body has arrived.
    async fn get(&mut self, req: Request<Empty<Bytes>>) -> anyhow::Result<u64> {
        let resp = match self {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let status = resp.status();
        let mut body = resp.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame?.data_ref() {
                n += data.len() as u64;
            }
        }
        if !status.is_success() {
            bail!("status {status}");
        }
        Ok(n)
    }
}

#[derive(Default)]
struct WorkerResult {
    latencies: Vec<u64>,
    errors: u64,
    bytes: u64,
    error_samples: Vec<String>,
}

struct Plan {
    spec: Spec,
    uri: Uri,
    authority: String,
    t0: Instant,
    measure_from: Instant,
    end: Instant,
}

impl Plan {
    fn request(&self) -> Request<Empty<Bytes>> {
        let b = match self.spec.proto {
            // HTTP/1.1: origin-form target plus Host.
            Proto::H1 => Request::get(self.spec.path.as_str()).header(header::HOST, &self.authority),
            // HTTP/2: the authority travels as :authority.
            Proto::H2 => Request::get(self.uri.clone()),
        };
        b.body(Empty::new()).expect("static request")
    }

    /// When worker `w` should send its `k`-th request (open loop).
    fn scheduled(&self, w: usize, k: u64, rate: f64) -> Instant {
        let slot = k as f64 * self.spec.concurrency as f64 + w as f64;
        self.t0 + Duration::from_secs_f64(slot / rate)
    }
}

async fn worker(plan: std::sync::Arc<Plan>, w: usize, mut sender: Sender) -> WorkerResult {
    let mut r = WorkerResult::default();
    let spec = &plan.spec;
    let mut k = 0u64;
    loop {
        let start = match spec.rate {
            Some(rate) => {
                let due = plan.scheduled(w, k, rate);
                k += 1;
                if due >= plan.end {
                    break;
                }
                if Instant::now() < due {
                    tokio::time::sleep_until(due).await;
                    Instant::now()
                } else {
                    // Late because the previous response was slow: charge the wait to this request.
                    due
                }
            }
            None => {
                let now = Instant::now();
                if now >= plan.end {
                    break;
                }
                now
            }
        };
        let result = tokio::time::timeout(spec.timeout, sender.get(plan.request())).await;
        let done = Instant::now();
        let measured = start >= plan.measure_from;
        let err = match result {
            Ok(Ok(n)) => {
                if measured {
                    r.latencies.push((done - start).as_nanos() as u64);
                    r.bytes += n;
                }
                None
            }
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(_) => Some(format!("timeout after {:?}", spec.timeout)),
        };
        if let Some(e) = err {
            if measured {
                r.errors += 1;
                if r.error_samples.len() < 3 && !r.error_samples.contains(&e) {
                    r.error_samples.push(e);
                }
            }
            // A failed HTTP/1.1 exchange leaves the connection in an unknown state; an HTTP/2
            // stream error does not, unless the connection itself went away.
            if matches!(sender, Sender::H1(_)) || sender.is_closed() {
                loop {
                    if Instant::now() >= plan.end {
                        return r;
                    }
                    match Sender::connect(spec.proto, spec.addr).await {
                        Ok(s) => {
                            sender = s;
                            break;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }
        }
    }
    r
}

/// Runs one load test on the current tokio runtime.
pub async fn run(spec: Spec) -> anyhow::Result<Report> {
    Ok(run_with(spec, |_, _| async {}).await?.0)
}

/// Runs one load test; `probe(measure_from, end)` runs beside it as its own task (the benchmark
/// suite samples the proxies' CPU and memory there) and its output is returned with the report.
pub async fn run_with<F, Fut>(spec: Spec, probe: F) -> anyhow::Result<(Report, Fut::Output)>
where
    F: FnOnce(Instant, Instant) -> Fut,
    Fut: std::future::Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    if spec.concurrency == 0 {
        bail!("concurrency must be at least 1");
    }
    if matches!(spec.rate, Some(r) if r.is_nan() || r <= 0.0) {
        bail!("rate must be positive");
    }
    let authority = spec.addr.to_string();
    let uri: Uri = format!("http://{authority}{}", spec.path).parse().context("path")?;
    // Connect everything before the clock starts.
    let mut senders = Vec::with_capacity(spec.concurrency);
    match spec.proto {
        Proto::H1 => {
            for _ in 0..spec.concurrency {
                senders.push(Sender::H1(connect_h1(spec.addr).await?));
            }
        }
        Proto::H2 => {
            let n = spec.connections.clamp(1, spec.concurrency);
            let mut conns = Vec::with_capacity(n);
            for _ in 0..n {
                conns.push(connect_h2(spec.addr).await?);
            }
            for w in 0..spec.concurrency {
                senders.push(Sender::H2(conns[w % n].clone()));
            }
        }
    }
    let t0 = Instant::now() + Duration::from_millis(20);
    let plan = std::sync::Arc::new(Plan {
        measure_from: t0 + spec.warmup,
        end: t0 + spec.warmup + spec.duration,
        t0,
        uri,
        authority,
        spec,
    });
    let probe = tokio::spawn(probe(plan.measure_from, plan.end));
    let mut tasks = Vec::with_capacity(senders.len());
    for (w, s) in senders.into_iter().enumerate() {
        tasks.push(tokio::spawn(worker(plan.clone(), w, s)));
    }
    let mut all = Vec::new();
    let mut report = Report::default();
    for t in tasks {
        let r = t.await.map_err(|e| anyhow!("worker panicked: {e}"))?;
        all.extend_from_slice(&r.latencies);
        report.errors += r.errors;
        report.body_bytes += r.bytes;
        for e in r.error_samples {
            if report.error_samples.len() < 5 && !report.error_samples.contains(&e) {
                report.error_samples.push(e);
            }
        }
    }
    report.requests = all.len() as u64;
    report.seconds = plan.spec.duration.as_secs_f64();
    report.rps = report.requests as f64 / report.seconds;
    report.latency = Latency::from_nanos(&mut all);
    let probed = probe.await.map_err(|e| anyhow!("probe panicked: {e}"))?;
    Ok((report, probed))
}

impl Report {
    /// One line: `rps … p50 … p99 … p99.9 … max … errors …`.
    pub fn line(&self) -> String {
        let l = &self.latency;
        format!(
            "{:>9.0} rps  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  ok {}  errors {}",
            self.rps, l.p50, l.p90, l.p99, l.p999, l.max, self.requests, self.errors
        )
    }
}
