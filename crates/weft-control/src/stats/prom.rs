//! The Prometheus source of `/v1/stats` (`weft control --prometheus-url URL`): the same rows,
//! from PromQL over the proxies' own metric names (`weft_http_requests_total`,
//! `weft_http_responses_total`, `weft_http_response_latency_seconds_bucket`,
//! `weft_route_*`), scraped by a Prometheus that uses deploy/prometheus/prometheus.yml.
//!
//! As in the buffer, requests are counted at the callee (`direction="inbound"`) and grouped by
//! its identity (`dst`), which the catalog resolves to its Service; routes by `route`.

use super::query::{rate, By, Query, Resolver, Row};
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

/// The samples of an instant-vector answer of `/api/v1/query`: (labels, value).
pub fn parse_vector(body: &[u8]) -> Result<Vec<Sample>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("Prometheus answered something that is not JSON: {e}"))?;
    if v["status"] != "success" {
        return Err(format!("Prometheus refused the query: {}", v["error"].as_str().unwrap_or("no error given")));
    }
    let result = v["data"]["result"].as_array().ok_or("Prometheus' answer has no data.result array")?;
    let mut out = vec![];
    for s in result {
        let labels = s["metric"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
            .unwrap_or_default();
        let value = s["value"][1].as_str().and_then(|x| x.parse::<f64>().ok()).unwrap_or(f64::NAN);
        out.push((labels, value));
    }
    Ok(out)
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
    /// Runs one PromQL instant query.
    async fn query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let body = form_urlencoded::Serializer::new(String::new()).append_pair("query", promql).finish();
        let path = format!("{}/api/v1/query", self.prefix);
        let headers = [("content-type".to_string(), "application/x-www-form-urlencoded".to_string())];
        let (status, answer) = request(&self.endpoint, "POST", &path, &headers, body.into_bytes(), QUERY_TIMEOUT)
            .await
            .map_err(|e| format!("Prometheus at {}: {e}", self.endpoint.authority))?;
        if status >= 500 || status == 404 {
            return Err(format!("Prometheus at {} answered HTTP {status}", self.endpoint.authority));
        }
        parse_vector(&answer)
    }

    /// The rows of `q` (history is not asked of Prometheus: use its own graphs).
    pub async fn rows(&self, cat: &Catalog, q: &Query) -> Result<Vec<Row>, String> {
        let mut answers = vec![];
        for (m, promql) in queries(q) {
            answers.push((m, self.query(&promql).await?));
        }
        Ok(assemble(cat, q, &answers))
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

    #[test]
    fn the_url_may_carry_a_prefix() {
        let p = Prometheus::parse("http://127.0.0.1:9090/prom/").unwrap();
        assert_eq!((p.endpoint.port, p.prefix.as_str()), (9090, "/prom"));
        assert!(Prometheus::parse("ftp://x").is_err());
    }
}
