//! The memory bound of the metrics history (docs/observability.md, "Metrics history"): 1,000
//! proxies' reports, synthetic but fed through the real ingestion function, measured with a
//! counting allocator; and the series cap holding when more series arrive than it allows.
//!
//! Run with `--nocapture` to see the numbers.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use weft_api::pb;
use weft_control::stats::{ProxyMeta, Stats};

/// Bytes allocated and not freed, by this process.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout, as the caller promised.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A sidecar's report: two callers, one callee, one route rule; counters growing with `round`.
fn report(i: usize, round: u64) -> (ProxyMeta, pb::StatsReport) {
    let id = |sa: String| format!("spiffe://cluster.local/ns/ns-{}/sa/{sa}", i % 50);
    let buckets = |n: u64| (0..19).map(|b| n * b / 18).collect::<Vec<_>>();
    let http = |direction: &str, src: String, dst: String, n: u64| pb::HttpStats {
        direction: direction.into(),
        src,
        dst,
        requests: n,
        failures: n / 100,
        latency_buckets: buckets(n),
    };
    let n = 1000 * round;
    let me = id(format!("svc-{i}"));
    let report = pb::StatsReport {
        http_bounds: (0..18).map(|b| 0.0001 * 2f64.powi(b)).collect(),
        route_bounds: (0..16).map(|b| 0.0005 * 2f64.powi(b)).collect(),
        http: vec![
            http("inbound", id(format!("svc-{}", (i + 1) % 1000)), me.clone(), n),
            http("inbound", id(format!("svc-{}", (i + 2) % 1000)), me.clone(), n),
            http("outbound", me.clone(), id(format!("svc-{}", (i + 3) % 1000)), n),
        ],
        routes: vec![pb::RouteStats {
            route: format!("ns-{}/route-{i}", i % 50),
            rule: "rules[0]".into(),
            requests: n,
            failures: 0,
            latency_buckets: buckets(n)[..17].to_vec(),
        }],
        tcp: vec![],
        first_report_unix: 0,
    };
    let meta = ProxyMeta {
        proxy_id: format!("svc-{i}-7f9c"),
        identity: me,
        workload: format!("svc-{i}-1"),
        cluster: "east".into(),
    };
    (meta, report)
}

#[test]
fn a_thousand_proxies_fit_the_documented_bound() {
    let t = 1_800_000_000;
    let rounds: Vec<Vec<_>> = (1..=3).map(|round| (0..1000).map(|i| report(i, round)).collect()).collect();
    let stats = Stats::default();
    let before = LIVE.load(Ordering::Relaxed);
    for (r, reports) in rounds.iter().enumerate() {
        for (meta, report) in reports {
            stats.ingest(meta, report, t + 10 * r as u64);
        }
    }
    let used = LIVE.load(Ordering::Relaxed) - before;
    let (series, dropped) = stats.counts();
    assert_eq!((series, dropped), (4000, 0));
    let per_series = used as f64 / series as f64;
    println!("1000 proxies, {series} series: {:.1} MB, {:.0} bytes per series", used as f64 / 1e6, per_series);
    // The bound docs/observability.md states: under 12.5 KB per series.
    assert!(per_series < 12_500.0, "{per_series} bytes per series");
}

#[test]
fn the_series_cap_bounds_memory_and_counts_what_it_drops() {
    let t = 1_800_000_000;
    let reports: Vec<_> = (0..1000).map(|i| report(i, 1)).collect();
    let stats = Stats::new(1000);
    let before = LIVE.load(Ordering::Relaxed);
    for (meta, report) in &reports {
        stats.ingest(meta, report, t);
    }
    let used = LIVE.load(Ordering::Relaxed) - before;
    assert_eq!(stats.counts(), (1000, 3000));
    println!("cap 1000 series with 4000 offered: {:.1} MB", used as f64 / 1e6);
    assert!(used < 1000 * 12_500 + 1_000_000, "{used} bytes");
}
