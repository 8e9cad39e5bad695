//! The Prometheus source of `/v1/stats` and `/v1/edges` (`weft control --prometheus-url URL`):
//! the same rows (their history from `/api/v1/query_range`) and edges,
//! from PromQL over the proxies' own metric names (`weft_http_requests_total`,
//! `weft_http_responses_total`, `weft_http_response_latency_seconds_bucket`,
//! `weft_route_*`), scraped by a Prometheus that uses deploy/prometheus/prometheus.yml.
//!
//! As in the buffer, requests are counted at the callee (`direction="inbound"`) and grouped by
//! its identity (`dst`), which the catalog resolves to its Service; routes by `route`.

use super::query::{rate, By, Domains, Edge, End, HistoryPoint, Query, Resolver, Row};
use super::ring::{COARSE_POINTS, COARSE_SECONDS};
use crate::catalog::Catalog;
use crate::signer::http::{request, Endpoint};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long one PromQL query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct Prometheus {
    pub endpoint: Endpoint,
    /// The path before `/api/v1/query` (a Prometheus served under a prefix).
    pub prefix: String,
}

impl Prometheus {
    /// From `--prometheus-url` (`http(s)://host:port[/prefix]`).
    pub fn parse(url: &str) -> Result<Prometheus, String> {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let prefix = rest.find('/').map(|i| rest[i..].trim_end_matches('/').to_string()).unwrap_or_default();
        let base = &url[..url.len() - rest.len() + rest.find('/').unwrap_or(rest.len())];
        let endpoint = Endpoint::parse(base).map_err(|e| format!("--prometheus-url: {e}"))?;
        Ok(Prometheus { endpoint, prefix })
    }
}

/// What a query measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    Requests,
    Failures,
    P50,
    P95,
    P99,
    /// Opaque TCP connections opened (edges only).
    Connections,
}

/// The label rows group by in Prometheus: the callee identity, or the route.
fn label(by: By) -> &'static str {
    if by == By::Route {
        "route"
    } else {
        "dst"
    }
}

/// The PromQL of each measure for `q`.
pub fn queries(q: &Query) -> Vec<(Measure, String)> {
    let w = format!("{}s", q.window);
    let l = label(q.by);
    let (req, fail, bucket) = if q.by == By::Route {
        (
            "weft_route_requests_total".to_string(),
            "weft_route_errors_total".to_string(),
            "weft_route_request_duration_seconds_bucket".to_string(),
        )
    } else {
        (
            "weft_http_requests_total{direction=\"inbound\"}".to_string(),
            "weft_http_responses_total{direction=\"inbound\",status=~\"5..\"}".to_string(),
            "weft_http_response_latency_seconds_bucket{direction=\"inbound\"}".to_string(),
        )
    };
    let hq = |p: f64| format!("histogram_quantile({p}, sum by ({l}, le) (rate({bucket}[{w}])))");
    vec![
        (Measure::Requests, format!("sum by ({l}) (increase({req}[{w}]))")),
        (Measure::Failures, format!("sum by ({l}) (increase({fail}[{w}]))")),
        (Measure::P50, hq(0.5)),
        (Measure::P95, hq(0.95)),
        (Measure::P99, hq(0.99)),
    ]
}

/// One sample of an instant vector: its labels and value.
pub type Sample = (BTreeMap<String, String>, f64);
/// A row's labels: namespace, service, workload, route.
type RowKey = (Option<String>, Option<String>, Option<String>, Option<String>);

/// One series of a range answer: its labels and its (Unix seconds, value) points.
pub type Range = (BTreeMap<String, String>, Vec<(u64, f64)>);

/// The `data.result` array of an answer, or what Prometheus said was wrong.
fn result(body: &[u8]) -> Result<Vec<serde_json::Value>, String> {
    let mut v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("Prometheus answered something that is not JSON: {e}"))?;
    if v["status"] != "success" {
        return Err(format!("Prometheus refused the query: {}", v["error"].as_str().unwrap_or("no error given")));
    }
    match v["data"]["result"].take() {
        serde_json::Value::Array(a) => Ok(a),
        _ => Err("Prometheus' answer has no data.result array".into()),
    }
}

fn labels(s: &serde_json::Value) -> BTreeMap<String, String> {
    s["metric"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

/// A `[time, "value"]` pair's value (`NaN` when unreadable, as Prometheus writes it).
fn value(pair: &serde_json::Value) -> f64 {
    pair[1].as_str().and_then(|x| x.parse::<f64>().ok()).unwrap_or(f64::NAN)
}

/// The samples of an instant-vector answer of `/api/v1/query`: (labels, value).
pub fn parse_vector(body: &[u8]) -> Result<Vec<Sample>, String> {
    Ok(result(body)?.iter().map(|s| (labels(s), value(&s["value"]))).collect())
}

/// The series of a range-vector (matrix) answer of `/api/v1/query_range`.
pub fn parse_matrix(body: &[u8]) -> Result<Vec<Range>, String> {
    let mut out = vec![];
    for s in result(body)? {
        let values = s["values"].as_array().ok_or("a series of Prometheus' range answer has no values array")?;
        let points = values.iter().filter_map(|p| Some((p[0].as_f64()?.round() as u64, value(p)))).collect();
        out.push((labels(&s), points));
    }
    Ok(out)
}

/// The times a history is asked at: `(start, end, step)` in Unix seconds. The buffer's points
/// are the minutes of the last hour (a point at `t` counts `[t, t + 60)`); Prometheus'
/// `increase(…[60s])` at `t + 60` counts the same minute.
pub fn history_range(now: u64) -> (u64, u64, u64) {
    let first = (now / COARSE_SECONDS + 1).saturating_sub(COARSE_POINTS as u64);
    ((first + 1) * COARSE_SECONDS, (first + COARSE_POINTS as u64) * COARSE_SECONDS, COARSE_SECONDS)
}

/// The PromQL of a history: requests, failures and p99 of each minute.
pub fn history_queries(q: &Query) -> Vec<(Measure, String)> {
    let minute = Query { window: COARSE_SECONDS, history: false, ..q.clone() };
    queries(&minute)
        .into_iter()
        .filter(|(m, _)| matches!(m, Measure::Requests | Measure::Failures | Measure::P99))
        .collect()
}

/// A row's place: namespace, service, workload, route.
fn row_key(r: &Row) -> RowKey {
    (r.namespace.clone(), r.service.clone(), r.workload.clone(), r.route.clone())
}

/// Gives each of `rows` its history from the range answers of [`history_queries`] asked over
/// [`history_range`]`(now)`: one point a minute, as the buffer's (empty where Prometheus has none).
pub fn attach_history(cat: &Catalog, q: &Query, rows: &mut [Row], answers: &[(Measure, Vec<Range>)], now: u64) {
    let (start, end, step) = history_range(now);
    let minute = Query { window: step, history: false, ..q.clone() };
    for r in rows.iter_mut() {
        r.history = Some(vec![]);
    }
    let mut t = start;
    while t <= end {
        let at: Vec<(Measure, Vec<Sample>)> = answers
            .iter()
            .map(|(m, ranges)| {
                let samples = ranges
                    .iter()
                    .filter_map(|(l, points)| points.iter().find(|(pt, _)| *pt == t).map(|(_, v)| (l.clone(), *v)))
                    .collect();
                (*m, samples)
            })
            .collect();
        let point_rows: BTreeMap<RowKey, Row> =
            assemble(cat, &minute, &at).into_iter().map(|r| (row_key(&r), r)).collect();
        for r in rows.iter_mut() {
            let p = point_rows.get(&row_key(r));
            let point = HistoryPoint {
                t_unix: t - step,
                rps: p.map_or(0.0, |p| p.rps),
                success_rate: p.and_then(|p| p.success_rate),
                p99_ms: p.and_then(|p| p.p99_ms),
            };
            r.history.get_or_insert_with(Vec::new).push(point);
        }
        t += step;
    }
}

/// The PromQL of edges over `window` seconds: what callees counted, by caller (`src`) and
/// callee (`dst`) identity, as the buffer's inbound series.
pub fn edge_queries(window: u64) -> Vec<(Measure, String)> {
    let w = format!("{window}s");
    vec![
        (Measure::Requests, format!("sum by (src, dst) (increase(weft_http_requests_total{{direction=\"inbound\"}}[{w}]))")),
        (
            Measure::Failures,
            format!("sum by (src, dst) (increase(weft_http_responses_total{{direction=\"inbound\",status=~\"5..\"}}[{w}]))"),
        ),
        (
            Measure::P99,
            format!("histogram_quantile(0.99, sum by (src, dst, le) (rate(weft_http_response_latency_seconds_bucket{{direction=\"inbound\"}}[{w}])))"),
        ),
        (Measure::Connections, format!("sum by (src, dst) (increase(weft_tcp_open_total{{direction=\"inbound\"}}[{w}]))")),
    ]
}

/// An edge's requests, failures, p99 (seconds) and TCP connections opened.
type EdgeCounts<N> = (N, N, Option<f64>, N);

/// Edges from the answers of [`edge_queries`], placed as the buffer places them.
pub fn assemble_edges(
    cat: &Catalog,
    domains: &Domains,
    window: u64,
    namespace: Option<&str>,
    answers: &[(Measure, Vec<Sample>)],
) -> Vec<Edge> {
    let r = Resolver::new(cat, domains);
    let local = r.local().to_string();
    // (requests, failures, p99 seconds, connections) by (src, dst) identity.
    let mut counts: BTreeMap<(String, String), EdgeCounts<f64>> = BTreeMap::new();
    for (m, samples) in answers {
        for (labels, v) in samples {
            let (Some(src), Some(dst)) = (labels.get("src"), labels.get("dst")) else { continue };
            let c = counts.entry((src.clone(), dst.clone())).or_default();
            match m {
                Measure::Requests => c.0 += v.max(0.0),
                Measure::Failures => c.1 += v.max(0.0),
                Measure::P99 => c.2 = v.is_finite().then_some(*v),
                Measure::Connections => c.3 += v.max(0.0),
                Measure::P50 | Measure::P95 => {}
            }
        }
    }
    let mut groups: BTreeMap<(End, End), EdgeCounts<u64>> = BTreeMap::new();
    for ((src, dst), (requests, failures, p99, conns)) in counts {
        let (requests, failures, conns) = (requests.round() as u64, failures.round() as u64, conns.round() as u64);
        if requests == 0 && conns == 0 {
            continue;
        }
        let callee = super::ProxyMeta { identity: dst.clone(), cluster: local.clone(), ..Default::default() };
        let Some((ns, svc)) = r.proxy(&callee).0.into_iter().next() else { continue };
        let mut src = r.caller(&src);
        if src.identity.is_none() {
            src.cluster = Some(local.clone());
        }
        if namespace.is_some_and(|n| n != ns && src.namespace.as_deref() != Some(n)) {
            continue;
        }
        let dst = End { cluster: Some(local.clone()), namespace: Some(ns), service: svc, identity: Some(dst) };
        let g = groups.entry((src, dst)).or_default();
        g.0 += requests;
        g.1 += failures;
        g.2 = match (g.2, p99) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        g.3 += conns;
    }
    groups
        .into_iter()
        .map(|((src, dst), (requests, failures, p99, tcp))| Edge {
            mtls: src.identity.is_some(),
            src,
            dst,
            requests,
            rps: rate(requests, window),
            success_rate: (requests > 0).then(|| (requests - failures.min(requests)) as f64 / requests as f64),
            p99_ms: p99.filter(|_| requests > 0).map(|s| (s * 1000.0 * 1000.0).round() / 1000.0),
            tcp_connections: tcp,
        })
        .collect()
}

/// Rows from the answers of [`queries`].
pub fn assemble(cat: &Catalog, q: &Query, answers: &[(Measure, Vec<Sample>)]) -> Vec<Row> {
    let none = super::query::Domains::new();
    let r = Resolver::new(cat, &none);
    let local = r.local().to_string();
    let mut rows: BTreeMap<RowKey, Row> = BTreeMap::new();
    let l = label(q.by);
    for (m, samples) in answers {
        for (labels, value) in samples {
            let Some(key) = labels.get(l) else { continue };
            let (ns, service, workload, route) = match q.by {
                By::Route => {
                    let (ns, name) = key.split_once('/').unwrap_or(("", key));
                    (Some(ns.to_string()), None, None, Some(name.to_string()))
                }
                By::Cluster => (None, None, None, None),
                _ => {
                    let end = r.caller(key);
                    let w = (q.by == By::Workload).then(|| {
                        let p =
                            super::ProxyMeta { identity: key.clone(), cluster: local.clone(), ..Default::default() };
                        r.proxy(&p).1
                    });
                    (end.namespace, Some(end.service), w.filter(|w| !w.is_empty()), None)
                }
            };
            if q.namespace.is_some() && ns.is_some() && q.namespace != ns {
                continue;
            }
            let row = rows.entry((ns.clone(), service.clone(), workload.clone(), route.clone())).or_insert(Row {
                cluster: local.clone(),
                namespace: ns,
                service,
                workload,
                route,
                meshed: true,
                ..Row::default()
            });
            let finite = |v: f64| v.is_finite().then_some(v);
            match m {
                Measure::Requests => row.requests += value.max(0.0).round() as u64,
                // Failures are kept as a success rate once requests are known (below).
                Measure::Failures => row.success_rate = Some(row.success_rate.unwrap_or(0.0) + value.max(0.0)),
                Measure::P50 => row.p50_ms = finite(value * 1000.0),
                Measure::P95 => row.p95_ms = finite(value * 1000.0),
                Measure::P99 => row.p99_ms = finite(value * 1000.0),
                Measure::Connections => {}
            }
        }
    }
    rows.into_values()
        .map(|mut row| {
            let failures = row.success_rate.take().unwrap_or(0.0);
            row.success_rate = (row.requests > 0).then(|| (1.0 - failures / row.requests as f64).clamp(0.0, 1.0));
            row.rps = rate(row.requests, q.window);
            row
        })
        .collect()
}

impl Prometheus {
    /// Posts a form to `path` (under the prefix) and returns the answer's body.
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Result<Vec<u8>, String> {
        // Finished before the await: the serializer is not `Send`.
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish().into_bytes();
        let path = format!("{}{path}", self.prefix);
        let headers = [("content-type".to_string(), "application/x-www-form-urlencoded".to_string())];
        let (status, answer) = request(&self.endpoint, "POST", &path, &headers, body, QUERY_TIMEOUT)
            .await
            .map_err(|e| format!("Prometheus at {}: {e}", self.endpoint.authority))?;
        if status >= 500 || status == 404 {
            return Err(format!("Prometheus at {} answered HTTP {status}", self.endpoint.authority));
        }
        Ok(answer)
    }

    /// Runs one PromQL instant query.
    async fn query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        parse_vector(&self.post("/api/v1/query", &[("query", promql)]).await?)
    }

    /// Runs one PromQL range query from `start` to `end` every `step` seconds.
    async fn query_range(&self, promql: &str, (start, end, step): (u64, u64, u64)) -> Result<Vec<Range>, String> {
        let (start, end, step) = (start.to_string(), end.to_string(), step.to_string());
        let form = [("query", promql), ("start", start.as_str()), ("end", end.as_str()), ("step", step.as_str())];
        parse_matrix(&self.post("/api/v1/query_range", &form).await?)
    }

    /// The rows of `q`, with their history (`q.history`) from range queries over the buffer's
    /// hour of minutes.
    pub async fn rows(&self, cat: &Catalog, q: &Query) -> Result<Vec<Row>, String> {
        let mut answers = vec![];
        for (m, promql) in queries(q) {
            answers.push((m, self.query(&promql).await?));
        }
        let mut rows = assemble(cat, q, &answers);
        if q.history {
            let now = super::unix_now();
            let mut ranges = vec![];
            for (m, promql) in history_queries(q) {
                ranges.push((m, self.query_range(&promql, history_range(now)).await?));
            }
            attach_history(cat, q, &mut rows, &ranges, now);
        }
        Ok(rows)
    }

    /// The edges of the last `window` seconds.
    pub async fn edges(
        &self,
        cat: &Catalog,
        domains: &Domains,
        window: u64,
        namespace: Option<&str>,
    ) -> Result<Vec<Edge>, String> {
        let mut answers = vec![];
        for (m, promql) in edge_queries(window) {
            answers.push((m, self.query(&promql).await?));
        }
        Ok(assemble_edges(cat, domains, window, namespace, &answers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_count_at_the_callee_over_the_window() {
        let q = Query { by: By::Service, window: 60, namespace: None, history: false };
        let qs = queries(&q);
        assert_eq!(qs[0].1, "sum by (dst) (increase(weft_http_requests_total{direction=\"inbound\"}[60s]))");
        assert!(qs[1].1.contains("status=~\"5..\""));
        assert_eq!(
            qs[4].1,
            "histogram_quantile(0.99, sum by (dst, le) (rate(weft_http_response_latency_seconds_bucket{direction=\"inbound\"}[60s])))"
        );
        let r = queries(&Query { by: By::Route, ..q });
        assert!(r[0].1.starts_with("sum by (route) (increase(weft_route_requests_total[60s]))"));
    }

    /// An answer as Prometheus 2.x gives it (recorded from `/api/v1/query`).
    const RECORDED: &str = r#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{"dst":"spiffe://east.td/ns/demo/sa/api"},"value":[1796000000.123,"120"]},
        {"metric":{"dst":"spiffe://east.td/ns/demo/sa/db"},"value":[1796000000.123,"0"]}]}}"#;

    #[test]
    fn a_recorded_answer_becomes_rows() {
        let mut cat = Catalog::default();
        cat.mesh.cluster.name = "east".into();
        cat.mesh.trust_domain = "east.td".into();
        let requests = parse_vector(RECORDED.as_bytes()).unwrap();
        assert_eq!(requests.len(), 2);
        let fails = vec![(BTreeMap::from([("dst".to_string(), "spiffe://east.td/ns/demo/sa/api".to_string())]), 3.0)];
        let p99 = vec![(BTreeMap::from([("dst".to_string(), "spiffe://east.td/ns/demo/sa/api".to_string())]), 0.0079)];
        let q = Query { by: By::Service, window: 60, namespace: None, history: false };
        let rows =
            assemble(&cat, &q, &[(Measure::Requests, requests), (Measure::Failures, fails), (Measure::P99, p99)]);
        let api = rows.iter().find(|r| r.service.as_deref() == Some("api")).unwrap();
        assert_eq!((api.cluster.as_str(), api.namespace.as_deref(), api.requests), ("east", Some("demo"), 120));
        assert_eq!(api.rps, 2.0);
        assert!((api.success_rate.unwrap() - 0.975).abs() < 1e-9);
        assert!((api.p99_ms.unwrap() - 7.9).abs() < 1e-9);
        let db = rows.iter().find(|r| r.service.as_deref() == Some("db")).unwrap();
        assert_eq!(db.success_rate, None);
    }

    #[test]
    fn errors_of_prometheus_are_said() {
        let e = parse_vector(br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#).unwrap_err();
        assert!(e.contains("parse error"), "{e}");
        assert!(parse_vector(b"<html>").unwrap_err().contains("not JSON"));
    }

    fn east() -> Catalog {
        let mut cat = Catalog::default();
        cat.mesh.cluster.name = "east".into();
        cat.mesh.trust_domain = "east.td".into();
        cat
    }

    /// A range answer as Prometheus 2.x gives it (recorded from `/api/v1/query_range`).
    const RECORDED_RANGE: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[
        {"metric":{"dst":"spiffe://east.td/ns/demo/sa/api"},"values":[[1796000040,"60"],[1796000100,"120.4"]]}]}}"#;

    #[test]
    fn a_recorded_range_answer_becomes_history_points() {
        let ranges = parse_matrix(RECORDED_RANGE.as_bytes()).unwrap();
        assert_eq!(ranges[0].1, vec![(1_796_000_040, 60.0), (1_796_000_100, 120.4)]);
        // Asked at 1796000100: the last hour of minutes, each counted at its end.
        let now = 1_796_000_100;
        let (start, end, step) = history_range(now);
        assert_eq!((end, step, (end - start) / step + 1), (1_796_000_160, 60, COARSE_POINTS as u64));
        let q = Query { by: By::Service, window: 60, namespace: None, history: true };
        let hq = history_queries(&q);
        assert_eq!(
            hq.iter().map(|(m, _)| *m).collect::<Vec<_>>(),
            [Measure::Requests, Measure::Failures, Measure::P99]
        );
        assert!(hq[0].1.contains("[60s]"), "{}", hq[0].1);
        let api = || BTreeMap::from([("dst".to_string(), "spiffe://east.td/ns/demo/sa/api".to_string())]);
        let fails = vec![(api(), vec![(1_796_000_100, 6.0)])];
        let p99 = vec![(api(), vec![(1_796_000_100, 0.004), (1_796_000_040, f64::NAN)])];
        let cat = east();
        let mut rows = assemble(
            &cat,
            &q,
            &parse_vector(RECORDED.as_bytes())
                .unwrap()
                .into_iter()
                .map(|s| (Measure::Requests, vec![s]))
                .collect::<Vec<_>>(),
        );
        attach_history(
            &cat,
            &q,
            &mut rows,
            &[(Measure::Requests, ranges), (Measure::Failures, fails), (Measure::P99, p99)],
            now,
        );
        let api = rows.iter().find(|r| r.service.as_deref() == Some("api")).unwrap();
        let h = api.history.as_ref().unwrap();
        assert_eq!(h.len(), COARSE_POINTS);
        // The buffer's shape: t_unix starts the minute it counts, the current minute last.
        assert_eq!(h.last().unwrap().t_unix, now / 60 * 60);
        let at = |t: u64| h.iter().find(|p| p.t_unix == t).unwrap();
        let p = at(1_796_000_040);
        assert_eq!(p.rps, 2.0);
        assert!((p.p99_ms.unwrap() - 4.0).abs() < 1e-9, "{p:?}");
        assert!((p.success_rate.unwrap() - 0.95).abs() < 1e-9);
        let p = at(1_795_999_980);
        assert_eq!((p.rps, p.success_rate, p.p99_ms), (1.0, Some(1.0), None));
        assert_eq!(h[0], HistoryPoint { t_unix: h[0].t_unix, rps: 0.0, success_rate: None, p99_ms: None });
        let db = rows.iter().find(|r| r.service.as_deref() == Some("db")).unwrap();
        assert!(db.history.as_ref().unwrap().iter().all(|p| p.rps == 0.0));
    }

    #[test]
    fn errors_of_range_queries_are_said() {
        let e = parse_matrix(br#"{"status":"error","errorType":"bad_data","error":"exceeded maximum resolution"}"#)
            .unwrap_err();
        assert!(e.contains("exceeded maximum resolution"), "{e}");
        assert!(parse_matrix(b"").unwrap_err().contains("not JSON"));
        let e = parse_matrix(br#"{"status":"success","data":{"result":[{"metric":{}}]}}"#).unwrap_err();
        assert!(e.contains("values"), "{e}");
    }

    #[test]
    fn edges_come_from_the_callees_series() {
        let qs = edge_queries(60);
        assert_eq!(qs[0].1, "sum by (src, dst) (increase(weft_http_requests_total{direction=\"inbound\"}[60s]))");
        assert!(qs[3].1.contains("weft_tcp_open_total{direction=\"inbound\"}"), "{}", qs[3].1);
        let recorded = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"src":"spiffe://east.td/ns/demo/sa/web","dst":"spiffe://east.td/ns/demo/sa/api"},"value":[1796000000,"10"]},
            {"metric":{"src":"unauthenticated","dst":"spiffe://east.td/ns/demo/sa/api"},"value":[1796000000,"4.2"]},
            {"metric":{"src":"spiffe://east.td/ns/demo/sa/web","dst":"spiffe://east.td/ns/demo/sa/idle"},"value":[1796000000,"0"]}]}}"#;
        let pair = |src: &str| {
            BTreeMap::from([
                ("src".to_string(), src.to_string()),
                ("dst".to_string(), "spiffe://east.td/ns/demo/sa/api".to_string()),
            ])
        };
        let answers = [
            (Measure::Requests, parse_vector(recorded.as_bytes()).unwrap()),
            (Measure::Failures, vec![(pair("spiffe://east.td/ns/demo/sa/web"), 1.0)]),
            (Measure::P99, vec![(pair("spiffe://east.td/ns/demo/sa/web"), 0.0025)]),
            (Measure::Connections, vec![]),
        ];
        let edges = assemble_edges(&east(), &Domains::new(), 60, None, &answers);
        assert_eq!(edges.len(), 2, "{edges:?}");
        let meshed = edges.iter().find(|e| e.mtls).unwrap();
        assert_eq!((meshed.src.service.as_str(), meshed.dst.service.as_str(), meshed.requests), ("web", "api", 10));
        assert_eq!((meshed.src.cluster.as_deref(), meshed.dst.cluster.as_deref()), (Some("east"), Some("east")));
        assert_eq!((meshed.success_rate, meshed.p99_ms), (Some(0.9), Some(2.5)));
        let plain = edges.iter().find(|e| !e.mtls).unwrap();
        assert_eq!((plain.src.service.as_str(), plain.src.identity.as_deref(), plain.requests), ("unmeshed", None, 4));
        assert_eq!(plain.src.cluster.as_deref(), Some("east"));
        let only_other = assemble_edges(&east(), &Domains::new(), 60, Some("other"), &answers);
        assert!(only_other.is_empty(), "{only_other:?}");
    }

    #[test]
    fn the_url_may_carry_a_prefix() {
        let p = Prometheus::parse("http://127.0.0.1:9090/prom/").unwrap();
        assert_eq!((p.endpoint.port, p.prefix.as_str()), (9090, "/prom"));
        assert!(Prometheus::parse("ftp://x").is_err());
    }
}
