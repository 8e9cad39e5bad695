//! Golden metrics history: what proxies report on their discovery stream (`ProxyMessage.stats`,
//! cumulative counters) kept as differences in a bounded ring buffer per series, and the queries
//! `GET /v1/stats` and `GET /v1/edges` answer from it (or from Prometheus, [`prom`]).
//!
//! ```text
//! proxy ──StatsReport (every 10 s)──▶ Stats::ingest ──▶ Series { Ring (10 s ×60, 1 min ×60) }
//!                                                             │
//!          /v1/stats, /v1/edges, Federation.Stats ◀── query ──┘
//! ```
//!
//! Memory: a series is one `(proxy, direction, src, dst)` HTTP series or one `(proxy, route,
//! rule)` route series, each a fixed [`ring::Ring`] (≈11 KB); at most `max_series` of them
//! ([`DEFAULT_MAX_SERIES`]); a new series past the cap is dropped and counted. Series with no
//! report for an hour are forgotten.

pub mod federation;
pub mod prom;
pub mod query;
pub mod ring;

use ring::{Cumulative, Ring};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use weft_api::pb;

/// The most series kept by default (`weft control --stats-max-series`): ≈110 MB at most.
pub const DEFAULT_MAX_SERIES: usize = 10_000;
/// The most series one report may add or update (a sidecar has a few dozen); the rest are
/// dropped and counted, so one proxy cannot take the whole cap.
pub const MAX_SERIES_PER_REPORT: usize = 1000;
/// The longest label value kept (a SPIFFE ID is well under it); a longer one drops its series.
pub const MAX_LABEL_BYTES: usize = 512;
/// How long a series with no new report is kept: its whole history.
const FORGET_AFTER_SECONDS: u64 = 3600;
/// TCP gauges older than this are not counted (the proxy stopped reporting).
const TCP_STALE_SECONDS: u64 = 60;

/// Who sent a report: what discovery knows of the proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProxyMeta {
    pub proxy_id: String,
    /// Its SPIFFE ID.
    pub identity: String,
    /// `Hello.workload` (empty: any Workload of its identity).
    pub workload: String,
    pub cluster: String,
}

/// What a series counts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SeriesKind {
    /// `weft_http_*`: direction (inbound/outbound/gateway), src and dst labels.
    Http { direction: String, src: String, dst: String },
    /// `weft_route_*`: route (`namespace/name`) and rule.
    Route { route: String, rule: String },
    /// `weft_tcp_open_total` of opaque TCP connections: connections opened count as requests
    /// (no failures, no latency).
    Tcp { direction: String, src: String, dst: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub proxy: Arc<ProxyMeta>,
    pub kind: SeriesKind,
}

pub struct Series {
    /// Boxed: the map holds a pointer, so its spare capacity costs pointers, not rings.
    pub ring: Box<Ring>,
    last: Cumulative,
    /// Latency bucket bounds (seconds) of the proxy's histogram.
    pub bounds: Arc<[f64]>,
    /// When it was last reported (Unix seconds).
    pub seen: u64,
}

/// Open TCP connections of one `(proxy, direction, src, dst)`, as last reported.
#[derive(Clone, Copy, Debug)]
pub struct TcpGauge {
    pub active: i64,
    pub seen: u64,
}

#[derive(Default)]
pub struct Inner {
    pub series: HashMap<SeriesKey, Series>,
    pub tcp: HashMap<(Arc<ProxyMeta>, String, String, String), TcpGauge>,
    /// Proxy metadata shared by its series.
    proxies: HashMap<ProxyMeta, Arc<ProxyMeta>>,
    /// New series refused because `max_series` were kept.
    pub dropped_series: u64,
    pub reports: u64,
    last_sweep: u64,
}

/// The control plane's metrics history, shared by discovery (writes) and the API (reads).
#[derive(Clone)]
pub struct Stats {
    inner: Arc<Mutex<Inner>>,
    pub max_series: usize,
    /// How often proxies report (sent in every ProxyUpdate); 0: their default (10 s).
    pub interval_ms: u64,
    /// `weft control --prometheus-url`: `/v1/stats` (history included) and `/v1/edges` ask
    /// Prometheus instead of the buffer.
    pub prometheus: Option<prom::Prometheus>,
    /// When this history started (Unix seconds): a proxy that reported before it counted its
    /// requests to an earlier control plane (see `StatsReport.first_report_unix`).
    pub started_unix: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new(DEFAULT_MAX_SERIES)
    }
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats").field("max_series", &self.max_series).finish_non_exhaustive()
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Stats {
    pub fn new(max_series: usize) -> Self {
        Stats { inner: Default::default(), max_series, interval_ms: 0, prometheus: None, started_unix: unix_now() }
    }

    pub fn with<R>(&self, f: impl FnOnce(&Inner) -> R) -> R {
        f(&self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Series kept now and series dropped at the cap so far.
    pub fn counts(&self) -> (usize, u64) {
        self.with(|i| (i.series.len(), i.dropped_series))
    }

    /// What `/v1/stats` says of the buffer: series kept, the cap, series dropped, reports taken.
    pub fn buffer_json(&self) -> serde_json::Value {
        self.with(|i| {
            serde_json::json!({
                "series": i.series.len(),
                "max_series": self.max_series,
                "dropped_series": i.dropped_series,
                "reports": i.reports,
            })
        })
    }

    /// Takes one report of `proxy` received at `now` (Unix seconds).
    pub fn ingest(&self, proxy: &ProxyMeta, report: &pb::StatsReport, now: u64) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *guard;
        inner.reports += 1;
        let meta = inner.proxies.entry(proxy.clone()).or_insert_with(|| Arc::new(proxy.clone())).clone();
        // Counted by an earlier control plane: new series start from what they report now.
        let baseline_only = report.first_report_unix != 0 && report.first_report_unix < self.started_unix;
        let http_bounds: Arc<[f64]> = report.http_bounds.clone().into();
        let route_bounds: Arc<[f64]> = report.route_bounds.clone().into();
        let http = report.http.iter().map(|h| {
            let kind = SeriesKind::Http { direction: h.direction.clone(), src: h.src.clone(), dst: h.dst.clone() };
            (kind, Cumulative::new(h.requests, h.failures, &h.latency_buckets), &http_bounds)
        });
        let routes = report.routes.iter().map(|r| {
            let kind = SeriesKind::Route { route: r.route.clone(), rule: r.rule.clone() };
            (kind, Cumulative::new(r.requests, r.failures, &r.latency_buckets), &route_bounds)
        });
        let no_bounds: Arc<[f64]> = Arc::from(vec![]);
        // Only the callee's side: what edges show.
        let tcp = report.tcp.iter().filter(|t| t.direction == "inbound").map(|t| {
            let kind = SeriesKind::Tcp { direction: t.direction.clone(), src: t.src.clone(), dst: t.dst.clone() };
            (kind, Cumulative::new(t.opened, 0, &[]), &no_bounds)
        });
        for (n, (kind, now_counts, bounds)) in http.chain(routes).chain(tcp).enumerate() {
            let too_long = match &kind {
                SeriesKind::Http { direction, src, dst } | SeriesKind::Tcp { direction, src, dst } => {
                    [direction, src, dst].iter().any(|l| l.len() > MAX_LABEL_BYTES)
                }
                SeriesKind::Route { route, rule } => route.len() > MAX_LABEL_BYTES || rule.len() > MAX_LABEL_BYTES,
            };
            if n >= MAX_SERIES_PER_REPORT || too_long || bounds.len() > 64 {
                inner.dropped_series += 1;
                continue;
            }
            let key = SeriesKey { proxy: meta.clone(), kind };
            let full = inner.series.len() >= self.max_series;
            match inner.series.get_mut(&key) {
                Some(s) => {
                    let d = now_counts.since(&s.last);
                    s.ring.add(now, &d);
                    s.last = now_counts;
                    s.seen = now;
                    if s.bounds.len() != bounds.len() {
                        s.bounds = bounds.clone();
                    }
                }
                None if full => inner.dropped_series += 1,
                None => {
                    // The first report of a series: everything it counted so far is new to us.
                    let mut ring = Box::<Ring>::default();
                    if !baseline_only {
                        ring.add(now, &now_counts.since(&Cumulative::default()));
                    }
                    inner.series.insert(key, Series { ring, last: now_counts, bounds: bounds.clone(), seen: now });
                }
            }
        }
        for t in
            report.tcp.iter().take(MAX_SERIES_PER_REPORT).filter(|t| t.src.len() + t.dst.len() <= 2 * MAX_LABEL_BYTES)
        {
            let key = (meta.clone(), t.direction.clone(), t.src.clone(), t.dst.clone());
            inner.tcp.insert(key, TcpGauge { active: t.active, seen: now });
        }
        if now >= inner.last_sweep + 60 {
            inner.last_sweep = now;
            inner.series.retain(|_, s| s.seen + FORGET_AFTER_SECONDS > now);
            inner.tcp.retain(|_, g| g.seen + TCP_STALE_SECONDS > now);
            let live: std::collections::HashSet<*const ProxyMeta> = inner
                .series
                .keys()
                .map(|k| Arc::as_ptr(&k.proxy))
                .chain(inner.tcp.keys().map(|k| Arc::as_ptr(&k.0)))
                .collect();
            inner.proxies.retain(|_, p| live.contains(&Arc::as_ptr(p)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(requests: u64, failures: u64) -> pb::StatsReport {
        pb::StatsReport {
            http_bounds: vec![0.001, 0.01],
            http: vec![pb::HttpStats {
                direction: "inbound".into(),
                src: "spiffe://td/ns/demo/sa/web".into(),
                dst: "spiffe://td/ns/demo/sa/api".into(),
                requests,
                failures,
                latency_buckets: vec![requests, requests, requests],
            }],
            ..Default::default()
        }
    }

    fn meta(id: &str) -> ProxyMeta {
        ProxyMeta {
            proxy_id: id.into(),
            identity: "spiffe://td/ns/demo/sa/api".into(),
            cluster: "east".into(),
            ..Default::default()
        }
    }

    #[test]
    fn reports_become_differences_in_the_ring() {
        let s = Stats::default();
        let t = 1_800_000_000;
        s.ingest(&meta("api-1"), &report(5, 1), t);
        s.ingest(&meta("api-1"), &report(12, 2), t + 10);
        s.with(|i| {
            let series = i.series.values().next().unwrap();
            let p = series.ring.sum(t + 10, 60);
            assert_eq!((p.requests, p.failures), (12, 2));
            assert_eq!(series.ring.sum(t + 10, 10).requests, 7);
        });
    }

    #[test]
    fn after_a_restart_a_proxy_older_than_the_history_starts_from_a_baseline() {
        let s = Stats { started_unix: 1_800_000_000, ..Stats::default() };
        let t = s.started_unix + 5;
        let older = pb::StatsReport { first_report_unix: s.started_unix - 100, ..report(50, 0) };
        s.ingest(&meta("old"), &older, t);
        let newer = pb::StatsReport { first_report_unix: s.started_unix + 1, ..report(7, 0) };
        s.ingest(&meta("new"), &newer, t);
        s.ingest(&meta("old"), &pb::StatsReport { first_report_unix: s.started_unix - 100, ..report(53, 0) }, t + 10);
        let by = |id: &str| {
            s.with(|i| i.series.iter().find(|(k, _)| k.proxy.proxy_id == id).unwrap().1.ring.sum(t + 10, 60).requests)
        };
        assert_eq!((by("old"), by("new")), (3, 7));
    }

    #[test]
    fn series_past_the_cap_are_dropped_and_counted() {
        let s = Stats::new(2);
        for id in ["a", "b", "c", "d"] {
            s.ingest(&meta(id), &report(1, 0), 1_800_000_000);
        }
        assert_eq!(s.counts(), (2, 2));
    }

    #[test]
    fn one_report_cannot_flood_the_buffer() {
        let s = Stats::default();
        let mut r = report(1, 0);
        let one = r.http[0].clone();
        r.http =
            (0..MAX_SERIES_PER_REPORT + 5).map(|i| pb::HttpStats { src: format!("src-{i}"), ..one.clone() }).collect();
        r.http.push(pb::HttpStats { src: "x".repeat(MAX_LABEL_BYTES + 1), ..one });
        s.ingest(&meta("greedy"), &r, 1_800_000_000);
        assert_eq!(s.counts(), (MAX_SERIES_PER_REPORT, 6));
    }

    #[test]
    fn series_silent_for_an_hour_are_forgotten() {
        let s = Stats::default();
        let t = 1_800_000_000;
        s.ingest(&meta("old"), &report(1, 0), t);
        s.ingest(&meta("new"), &report(1, 0), t + 3700);
        assert_eq!(s.counts().0, 1);
    }
}
