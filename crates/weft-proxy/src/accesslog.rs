//! Access logs (docs/observability.md, "Access logs"): one line per HTTP request and per opaque
//! TCP connection, inbound and outbound, in JSON or text, to stdout or a file.
//!
//! ```text
//!  request path                               writer thread ("weft-access-log")
//!  ────────────                               ─────────────
//!  on? (one atomic load) ── no ──► nothing
//!   │ yes
//!  Pending (method, authority, path, start)
//!  … the request is served …
//!  Entry ── try_send (bounded, 4096) ────────► format (JSON | text) ─► stdout | file (append)
//!            full: dropped, counted in weft_access_log_dropped_total
//! ```
//!
//! What is in force: the Telemetry the control plane sends for this proxy's workload, else the
//! proxy config file's `access_log`, else nothing. A change starts a new writer; the old one
//! ends once the requests that hold it are done.
//!
//! Response flags are Envoy's short codes, derived from the `x-weft-error` a proxy puts on the
//! responses it answers itself (see [`flag_of`]) and from the [`Flag`] extension (retry limit,
//! injected delay). An AUDIT AuthorizationPolicy that matched an inbound request is named in
//! `audit` ([`AuditMark`]).

use crate::metrics::{Direction, Name};
use arc_swap::ArcSwapOption;
use http::{Request, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use weft_api::telemetry::{AccessLogging, Format, STDOUT};

/// Lines waiting for the writer; past this, lines are dropped (and counted), never waited for.
pub const QUEUE: usize = 4096;

/// `weft_access_log_lines_total`, `weft_access_log_dropped_total`.
#[derive(Clone, Default)]
pub struct Metrics {
    pub lines: Counter,
    pub dropped: Counter,
}

impl Metrics {
    pub fn register(reg: &mut Registry) -> Metrics {
        let m = Metrics::default();
        let r = reg.sub_registry_with_prefix("weft_access_log");
        r.register("lines", "Access log lines written", m.lines.clone());
        r.register("dropped", "Access log lines dropped because the writer was behind", m.dropped.clone());
        m
    }
}

/// The access log in force, if any.
pub struct AccessLog {
    on: AtomicBool,
    sink: ArcSwapOption<Sink>,
    /// The proxy config file's `access_log`: in force when the control plane sends none.
    local: Option<AccessLogging>,
    metrics: Metrics,
}

/// One writer: its config, where it came from, and its queue.
struct Sink {
    cfg: AccessLogging,
    source: String,
    tx: SyncSender<Entry>,
    metrics: Metrics,
}

impl Sink {
    fn send(&self, e: Entry) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(e) {
            self.metrics.dropped.inc();
        }
    }
}

impl AccessLog {
    pub fn new(metrics: Metrics, local: Option<&AccessLogging>) -> AccessLog {
        let log =
            AccessLog { on: AtomicBool::new(false), sink: ArcSwapOption::empty(), local: local.cloned(), metrics };
        log.update(None);
        log
    }

    /// Whether lines are written now: the one check the request path makes when logging is off.
    #[inline]
    pub fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Installs the control plane's Telemetry (`(name, config)`), or the config file's with
    /// `None`. Unchanged: kept as it is.
    pub fn update(&self, from_control: Option<(&str, &AccessLogging)>) {
        let (source, cfg) = match from_control {
            Some((name, cfg)) => (format!("Telemetry {name}"), Some(cfg)),
            None => ("config file".to_string(), self.local.as_ref()),
        };
        let cfg = cfg.filter(|c| c.enabled);
        let now = self.sink.load();
        match (now.as_ref(), cfg) {
            (None, None) => return,
            (Some(s), Some(c)) if s.cfg == *c && s.source == source => return,
            _ => {}
        }
        let Some(cfg) = cfg else {
            self.on.store(false, Ordering::Relaxed);
            self.sink.store(None);
            tracing::info!("access log off");
            return;
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let (path, format, lines) = (cfg.path.clone(), cfg.format, self.metrics.lines.clone());
        let started = std::thread::Builder::new()
            .name("weft-access-log".into())
            .spawn(move || write_loop(rx, &path, format, &lines));
        if let Err(e) = started {
            tracing::warn!(error = %e, "access log: cannot start its writer thread; access log off");
            return;
        }
        tracing::info!(path = %cfg.path, format = ?cfg.format, %source, "access log on");
        self.sink.store(Some(Arc::new(Sink { cfg: cfg.clone(), source, tx, metrics: self.metrics.clone() })));
        self.on.store(true, Ordering::Relaxed);
    }

    /// For `/config_dump`: the config in force and where it came from, or null.
    pub fn describe(&self) -> serde_json::Value {
        match self.sink.load().as_ref() {
            None => serde_json::Value::Null,
            Some(s) => serde_json::json!({"source": s.source, "config": s.cfg}),
        }
    }

    /// Starts the line of one HTTP request; `None` (nothing to do) while logging is off.
    #[inline]
    pub fn begin<B>(&self, req: &Request<B>) -> Option<Box<Pending>> {
        if !self.on() {
            return None;
        }
        self.begin_slow(req)
    }

    /// Boxed: the line's fields are not carried by every request's future while logging is off.
    fn begin_slow<B>(&self, req: &Request<B>) -> Option<Box<Pending>> {
        let sink = self.sink.load_full()?;
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| req.headers().get(http::header::HOST).and_then(|v| v.to_str().ok()).map(str::to_string));
        Some(Box::new(Pending {
            sink,
            time: SystemTime::now(),
            started: Instant::now(),
            method: req.method().as_str().to_string(),
            authority,
            path: req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into()),
            bytes_received: content_length(req.headers()),
            audit: None,
        }))
    }

    /// Starts the line of one opaque TCP connection, written when the returned value drops;
    /// `None` while logging is off.
    #[inline]
    pub fn tcp(&self, direction: Direction, src: &Name, dst: &Name, upstream: Option<SocketAddr>) -> Option<TcpLog> {
        if !self.on() {
            return None;
        }
        let sink = self.sink.load_full()?;
        Some(TcpLog {
            sink,
            entry: Entry {
                time: SystemTime::now(),
                direction,
                protocol: "tcp",
                src: Some(src.clone()),
                dst: Some(dst.clone()),
                service: None,
                route: None,
                upstream,
                method: None,
                authority: None,
                path: None,
                status: None,
                duration: Duration::ZERO,
                bytes_received: Some(0),
                bytes_sent: Some(0),
                flags: String::new(),
                error: None,
                audit: None,
            },
            started: Instant::now(),
        })
    }
}

/// `content-length`, when a message declares it.
fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

/// The AUDIT AuthorizationPolicies (`namespace/name`, comma separated) that matched an inbound
/// request: a request extension set by [`crate::authz::check_http`] while logging is on.
#[derive(Clone, Debug)]
pub struct AuditMark(pub Arc<str>);

/// A response flag the response's `x-weft-error` does not tell: `URX` (the retries allowed
/// were used up) or `DI` (a delay was injected). A response extension.
#[derive(Clone, Copy, Debug)]
pub struct Flag(pub &'static str);

/// Where an outbound request went: a response extension set by `outbound` while logging is on.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// `name.namespace`.
    pub service: Name,
    /// The endpoint's address and identity, once one was picked.
    pub endpoint: Option<(SocketAddr, Name)>,
    /// `namespace/name` of the route whose rule matched.
    pub route: Option<Name>,
}

/// Adds `flag` to `resp` (see [`Flag`]); only while logging is on.
pub fn flag<B>(log: &AccessLog, resp: &mut Response<B>, flag: &'static str) {
    if log.on() {
        resp.extensions_mut().insert(Flag(flag));
    }
}

/// Envoy's response flag for the `x-weft-error` kind a proxy answered with, `None` for one
/// that has no counterpart.
pub fn flag_of(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "no-endpoint" => "UH",
        "connect" | "connect-timeout" | "tls" | "wrong-identity" => "UF",
        "peer-unresponsive" | "upstream" | "app" => "UC",
        "request-timeout" | "per-try-timeout" | "route-timeout" => "UT",
        "overflow" | "overloaded" => "UO",
        "rate-limited" => "RL",
        "fault-abort" => "FI",
        "authz-denied" => "UAEX",
        "route-not-matched" | "route-no-backend" | "route-backend-not-found" => "NR",
        "bad-request" => "DPE",
        _ => return None,
    })
}

/// The line of one HTTP request, started by [`AccessLog::begin`].
pub struct Pending {
    sink: Arc<Sink>,
    time: SystemTime,
    started: Instant,
    method: String,
    authority: Option<String>,
    path: String,
    bytes_received: Option<u64>,
    /// Set by the inbound side from [`AuditMark`].
    pub audit: Option<Arc<str>>,
}

impl Pending {
    /// Takes the [`AuditMark`] off `req`.
    pub fn take_audit<B>(&mut self, req: &mut Request<B>) {
        if let Some(m) = req.extensions_mut().remove::<AuditMark>() {
            self.audit = Some(m.0);
        }
    }

    /// Writes the line of an inbound request from `src` (`None`: plaintext) to `dst` (this
    /// proxy's identity), served by the app at `app`.
    pub fn inbound<B>(self, src: Option<&Name>, dst: &Name, app: SocketAddr, resp: &Response<B>) {
        self.write(Direction::inbound, src.cloned(), Some(dst.clone()), None, None, Some(app), resp);
    }

    /// Writes the line of an outbound request from this proxy (`src`), with where it went
    /// ([`Upstream`], if it got that far).
    pub fn outbound<B>(self, src: &Name, resp: &Response<B>) {
        let up = resp.extensions().get::<Upstream>();
        let service = up.map(|u| u.service.clone());
        let route = up.and_then(|u| u.route.clone());
        let (upstream, dst) = match up.and_then(|u| u.endpoint.clone()) {
            Some((addr, id)) => (Some(addr), Some(id)),
            None => (None, None),
        };
        self.write(Direction::outbound, Some(src.clone()), dst, service, route, upstream, resp);
    }

    #[allow(clippy::too_many_arguments)]
    fn write<B>(
        self,
        direction: Direction,
        src: Option<Name>,
        dst: Option<Name>,
        service: Option<Name>,
        route: Option<Name>,
        upstream: Option<SocketAddr>,
        resp: &Response<B>,
    ) {
        let error = resp.headers().get(crate::httputil::PROXY_ERROR).and_then(|v| v.to_str().ok()).map(str::to_string);
        let mut flags = String::new();
        if let Some(f) = error.as_deref().and_then(flag_of) {
            flags.push_str(f);
        }
        if let Some(Flag(f)) = resp.extensions().get::<Flag>() {
            if !flags.is_empty() {
                flags.push(',');
            }
            flags.push_str(f);
        }
        let e = Entry {
            time: self.time,
            direction,
            protocol: "http",
            src,
            dst,
            service,
            route,
            upstream,
            method: Some(self.method),
            authority: self.authority,
            path: Some(self.path),
            status: Some(resp.status().as_u16()),
            duration: self.started.elapsed(),
            bytes_received: self.bytes_received,
            bytes_sent: content_length(resp.headers()),
            flags,
            error,
            audit: self.audit,
        };
        self.sink.send(e);
    }
}

/// The line of one opaque TCP connection, written on drop.
pub struct TcpLog {
    sink: Arc<Sink>,
    entry: Entry,
    started: Instant,
}

impl TcpLog {
    /// Bytes from the connection's client (`rx`) and to it (`tx`).
    pub fn bytes(&mut self, rx: u64, tx: u64) {
        (self.entry.bytes_received, self.entry.bytes_sent) = (Some(rx), Some(tx));
    }

    /// The upstream could not be reached (`UF`), with what failed.
    pub fn failed(&mut self, flag: &'static str, error: &'static str) {
        self.entry.flags = flag.into();
        self.entry.error = Some(error.into());
    }

    pub fn set_upstream(&mut self, upstream: SocketAddr, dst: &Name) {
        self.entry.upstream = Some(upstream);
        self.entry.dst = Some(dst.clone());
    }

    pub fn set_service(&mut self, service: &Name) {
        self.entry.service = Some(service.clone());
    }

    /// The name the connection asked for (a gateway's: the TLS SNI).
    pub fn set_authority(&mut self, authority: &str) {
        self.entry.authority = Some(authority.to_string());
    }
}

impl Drop for TcpLog {
    fn drop(&mut self) {
        let mut e = std::mem::replace(&mut self.entry, Entry::empty());
        e.duration = self.started.elapsed();
        self.sink.send(e);
    }
}

/// One line, as the request path hands it to the writer.
#[derive(Debug)]
pub struct Entry {
    pub time: SystemTime,
    pub direction: Direction,
    /// `http` or `tcp`.
    pub protocol: &'static str,
    pub src: Option<Name>,
    pub dst: Option<Name>,
    pub service: Option<Name>,
    pub route: Option<Name>,
    pub upstream: Option<SocketAddr>,
    pub method: Option<String>,
    pub authority: Option<String>,
    pub path: Option<String>,
    pub status: Option<u16>,
    pub duration: Duration,
    pub bytes_received: Option<u64>,
    pub bytes_sent: Option<u64>,
    /// Envoy's response flags, comma separated; empty: none.
    pub flags: String,
    /// The `x-weft-error` kind, when a proxy answered itself.
    pub error: Option<String>,
    pub audit: Option<Arc<str>>,
}

impl Entry {
    fn empty() -> Entry {
        Entry {
            time: UNIX_EPOCH,
            direction: Direction::inbound,
            protocol: "tcp",
            src: None,
            dst: None,
            service: None,
            route: None,
            upstream: None,
            method: None,
            authority: None,
            path: None,
            status: None,
            duration: Duration::ZERO,
            bytes_received: None,
            bytes_sent: None,
            flags: String::new(),
            error: None,
            audit: None,
        }
    }

    fn direction(&self) -> &'static str {
        match self.direction {
            Direction::inbound => "inbound",
            Direction::outbound => "outbound",
            Direction::gateway => "gateway",
        }
    }

    /// The JSON form: one object, the fields of docs/observability.md.
    pub fn json(&self) -> String {
        let name = |n: &Option<Name>| n.as_ref().map(|n| n.0.to_string());
        let ms = (self.duration.as_secs_f64() * 1e6).round() / 1e3;
        let v = serde_json::json!({
            "time": rfc3339(self.time),
            "direction": self.direction(),
            "protocol": self.protocol,
            "src": name(&self.src),
            "dst": name(&self.dst),
            "service": name(&self.service),
            "route": name(&self.route),
            "upstream": self.upstream.map(|a| a.to_string()),
            "method": self.method,
            "authority": self.authority,
            "path": self.path,
            "status": self.status,
            "duration_ms": ms,
            "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent,
            "response_flags": if self.flags.is_empty() { "-" } else { self.flags.as_str() },
            "error": self.error,
            "audit": self.audit.as_deref(),
        });
        v.to_string()
    }

    /// The text form, after Envoy's default format:
    /// `[time] direction "METHOD path" status flags rx tx duration_ms "src" "dst" service route upstream authority audit`.
    pub fn text(&self) -> String {
        let dash = |s: Option<&str>| s.map(str::to_string).unwrap_or_else(|| "-".into());
        let num = |n: Option<u64>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
        let request = match (&self.method, &self.path) {
            (Some(m), Some(p)) => format!("\"{m} {p}\""),
            _ => "\"TCP\"".to_string(),
        };
        format!(
            "[{}] {} {} {} {} {} {} {:.3} \"{}\" \"{}\" {} {} {} {} audit={}",
            rfc3339(self.time),
            self.direction(),
            request,
            self.status.map_or_else(|| "-".to_string(), |s| s.to_string()),
            if self.flags.is_empty() { "-" } else { &self.flags },
            num(self.bytes_received),
            num(self.bytes_sent),
            self.duration.as_secs_f64() * 1e3,
            dash(self.src.as_ref().map(|n| &*n.0)),
            dash(self.dst.as_ref().map(|n| &*n.0)),
            dash(self.service.as_ref().map(|n| &*n.0)),
            dash(self.route.as_ref().map(|n| &*n.0)),
            self.upstream.map_or_else(|| "-".to_string(), |a| a.to_string()),
            dash(self.authority.as_deref()),
            dash(self.audit.as_deref()),
        )
    }
}

/// `2026-12-07T13:04:05.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    // Howard Hinnant's days-to-civil.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// The writer thread: formats and writes lines until every sender is gone, flushing whenever
/// the queue is empty so lines show up promptly.
fn write_loop(rx: Receiver<Entry>, path: &str, format: Format, lines: &Counter) {
    let mut out: Box<dyn Write> = if path == STDOUT {
        Box::new(std::io::stdout())
    } else {
        match std::fs::OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => Box::new(std::io::BufWriter::with_capacity(64 * 1024, f)),
            Err(e) => {
                tracing::warn!(%path, error = %e, "access log: cannot open the file; lines are dropped (fix the path or its permissions)");
                // Keep draining so senders never see a full queue from a dead writer.
                for _ in rx {}
                return;
            }
        }
    };
    let mut failed = false;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(e) = next {
            let mut line = match format {
                Format::Json => e.json(),
                Format::Text => e.text(),
            };
            line.push('\n');
            match out.write_all(line.as_bytes()) {
                Ok(()) => {
                    lines.inc();
                }
                Err(err) if !failed => {
                    failed = true;
                    tracing::warn!(%path, error = %err, "access log: write failed");
                }
                Err(_) => {}
            };
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_796_000_000_123);
        assert_eq!(rfc3339(t), "2026-11-30T00:53:20.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn errors_map_to_envoy_flags() {
        assert_eq!(flag_of("connect"), Some("UF"));
        assert_eq!(flag_of("request-timeout"), Some("UT"));
        assert_eq!(flag_of("overflow"), Some("UO"));
        assert_eq!(flag_of("rate-limited"), Some("RL"));
        assert_eq!(flag_of("fault-abort"), Some("FI"));
        assert_eq!(flag_of("authz-denied"), Some("UAEX"));
        assert_eq!(flag_of("route-not-matched"), Some("NR"));
        assert_eq!(flag_of("no-endpoint"), Some("UH"));
        assert_eq!(flag_of("something-new"), None);
    }

    #[test]
    fn off_costs_nothing_and_on_writes_to_the_file() {
        let m = Metrics::default();
        let log = AccessLog::new(m.clone(), None);
        let req = Request::builder().uri("http://api.demo/x?y=1").body(()).unwrap();
        assert!(log.begin(&req).is_none(), "off by default");
        let dir = std::env::temp_dir().join(format!("weft-accesslog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.log");
        let _ = std::fs::remove_file(&path);
        let cfg = AccessLogging { enabled: true, format: Format::Json, path: path.to_string_lossy().into() };
        log.update(Some(("demo/logs", &cfg)));
        let p = log.begin(&req).expect("on");
        let mut resp = Response::builder().status(503).header("x-weft-error", "overflow").body(()).unwrap();
        resp.extensions_mut().insert(Flag("URX"));
        p.outbound(&Name::new("spiffe://td/ns/demo/sa/web"), &resp);
        log.update(None); // off again: the writer ends once the last line is out
        let deadline = Instant::now() + Duration::from_secs(10);
        let text = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.ends_with('\n') || Instant::now() > deadline {
                break text;
            }
            std::thread::yield_now();
        };
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/x?y=1");
        assert_eq!(v["authority"], "api.demo");
        assert_eq!(v["status"], 503);
        assert_eq!(v["response_flags"], "UO,URX");
        assert_eq!(v["src"], "spiffe://td/ns/demo/sa/web");
        assert_eq!(m.lines.get(), 1);
        assert!(log.begin(&req).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
