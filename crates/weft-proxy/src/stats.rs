//! The proxy's golden metrics as one `StatsReport`, sent on the discovery stream every
//! `ProxyUpdate.stats_interval_ms` (10 s by default) for the control plane's history
//! (`GET /v1/stats`, `weft stat`).
//!
//! The report is read from the proxy's own Prometheus registry (the text `/metrics` serves):
//! the request path pays nothing new. Counters are cumulative since the proxy started; the
//! control plane keeps the differences.
//!
//! ```text
//! request path ──▶ metrics::Metrics (prometheus-client) ──encode──▶ snapshot() ──▶ ProxyMessage.stats
//! ```

use std::collections::BTreeMap;
use weft_api::pb;

/// How often a report goes when the control plane says nothing.
pub const DEFAULT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// One sample line of the text exposition: metric name, labels, value.
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

impl Sample<'_> {
    fn label(&self, k: &str) -> &str {
        self.labels.iter().find(|(n, _)| *n == k).map_or("", |(_, v)| v.as_str())
    }
}

/// Parses one line `name{a="x",b="y"} 12` (comments and blank lines: `None`).
fn parse_line(line: &str) -> Option<Sample<'_>> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = vec![];
    let rest = if let Some(mut r) = rest.strip_prefix('{') {
        loop {
            r = r.trim_start_matches(',');
            if let Some(after) = r.strip_prefix('}') {
                break after;
            }
            let eq = r.find("=\"")?;
            let key = &r[..eq];
            let mut value = String::new();
            let mut chars = r[eq + 2..].char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break eq + 2 + i + 1,
                    c => value.push(c),
                }
            };
            labels.push((key, value));
            r = &r[end..];
        }
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample { name, labels, value })
}

#[derive(Default)]
struct Hist {
    /// `le` bound → cumulative count (`+Inf` as `f64::INFINITY`).
    buckets: Vec<(f64, u64)>,
}

impl Hist {
    fn finish(mut self) -> (Vec<f64>, Vec<u64>) {
        self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let bounds = self.buckets.iter().filter(|(b, _)| b.is_finite()).map(|(b, _)| *b).collect();
        (bounds, self.buckets.into_iter().map(|(_, n)| n).collect())
    }
}

type Key = (String, String, String);

/// The report of the metrics in `text` (the proxy's `/metrics` exposition).
pub fn from_text(text: &str) -> pb::StatsReport {
    let mut http: BTreeMap<Key, pb::HttpStats> = BTreeMap::new();
    let mut http_hist: BTreeMap<Key, Hist> = BTreeMap::new();
    let mut routes: BTreeMap<(String, String), pb::RouteStats> = BTreeMap::new();
    let mut route_hist: BTreeMap<(String, String), Hist> = BTreeMap::new();
    let mut tcp: BTreeMap<Key, pb::TcpStats> = BTreeMap::new();
    for s in text.lines().filter_map(parse_line) {
        let key = || (s.label("direction").to_string(), s.label("src").to_string(), s.label("dst").to_string());
        let rkey = || (s.label("route").to_string(), s.label("rule").to_string());
        let n = if s.value.is_finite() && s.value > 0.0 { s.value as u64 } else { 0 };
        let le = || match s.label("le") {
            "+Inf" => Some(f64::INFINITY),
            v => v.parse::<f64>().ok(),
        };
        match s.name {
            "weft_http_requests_total" => http.entry(key()).or_default().requests = n,
            "weft_http_responses_total" if s.label("status").starts_with('5') => {
                http.entry(key()).or_default().failures += n
            }
            "weft_http_response_latency_seconds_bucket" => {
                if let Some(le) = le() {
                    http_hist.entry(key()).or_default().buckets.push((le, n));
                }
            }
            "weft_tcp_open_total" => tcp.entry(key()).or_default().opened = n,
            "weft_tcp_active_connections" => tcp.entry(key()).or_default().active = s.value as i64,
            "weft_route_requests_total" => routes.entry(rkey()).or_default().requests = n,
            "weft_route_errors_total" => routes.entry(rkey()).or_default().failures = n,
            "weft_route_request_duration_seconds_bucket" => {
                if let Some(le) = le() {
                    route_hist.entry(rkey()).or_default().buckets.push((le, n));
                }
            }
            _ => {}
        }
    }
    let mut report = pb::StatsReport::default();
    for (k, h) in http_hist {
        let (bounds, counts) = h.finish();
        report.http_bounds = bounds;
        http.entry(k).or_default().latency_buckets = counts;
    }
    for (k, h) in route_hist {
        let (bounds, counts) = h.finish();
        report.route_bounds = bounds;
        routes.entry(k).or_default().latency_buckets = counts;
    }
    report.http = http
        .into_iter()
        .map(|((direction, src, dst), s)| pb::HttpStats { direction, src, dst, ..s })
        .filter(|s| s.requests > 0)
        .collect();
    report.routes = routes
        .into_iter()
        .map(|((route, rule), s)| pb::RouteStats { route, rule, ..s })
        .filter(|s| s.requests > 0)
        .collect();
    report.tcp = tcp.into_iter().map(|((direction, src, dst), s)| pb::TcpStats { direction, src, dst, ..s }).collect();
    report
}

/// When this process made its first report (`StatsReport.first_report_unix`).
static FIRST_REPORT_UNIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// The report of the proxy's metrics now.
pub fn snapshot(registry: &prometheus_client::registry::Registry) -> pb::StatsReport {
    let first = *FIRST_REPORT_UNIX
        .get_or_init(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        return pb::StatsReport { first_report_unix: first, ..Default::default() };
    }
    pb::StatsReport { first_report_unix: first, ..from_text(&text) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Direction, Metrics, Name, Peer};
    use prometheus_client::registry::Registry;
    use std::time::Instant;

    #[test]
    fn a_report_counts_requests_failures_and_latency_buckets_per_peer() {
        let mut reg = Registry::default();
        let m = Metrics::new(&mut reg);
        let peer = Peer {
            direction: Direction::inbound,
            src: Name::new("spiffe://td/ns/demo/sa/web"),
            dst: Name::new("spiffe://td/ns/demo/sa/api"),
        };
        for status in [200, 200, 503, 404] {
            m.http(&peer, status, Instant::now());
        }
        let _open = m.tcp_conn(Peer { direction: Direction::outbound, ..peer.clone() });
        let r = snapshot(&reg);
        assert_eq!(r.http.len(), 1, "{r:?}");
        let h = &r.http[0];
        assert_eq!((h.direction.as_str(), h.src.as_str()), ("inbound", "spiffe://td/ns/demo/sa/web"));
        assert_eq!((h.requests, h.failures), (4, 1));
        assert_eq!(h.latency_buckets.len(), r.http_bounds.len() + 1);
        assert_eq!(*h.latency_buckets.last().unwrap(), 4);
        assert!(r.http_bounds.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(r.tcp.len(), 1);
        assert_eq!((r.tcp[0].opened, r.tcp[0].active), (1, 1));
    }

    #[test]
    fn label_values_with_escapes_and_odd_lines_do_not_break_the_parser() {
        let r = from_text(
            "# HELP x\nweft_http_requests_total{direction=\"inbound\",src=\"a\\\"b\",dst=\"c,d}\"} 3\nweft_http_requests_total{broken\ngarbage\n\n",
        );
        assert_eq!(r.http.len(), 1);
        assert_eq!((r.http[0].src.as_str(), r.http[0].dst.as_str(), r.http[0].requests), ("a\"b", "c,d}", 3));
    }
}
