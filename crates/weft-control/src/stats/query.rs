//! `/v1/stats` rows and `/v1/edges` edges from the ring buffer (the JSON contract of
//! docs/observability.md, "weft stat and weft edges").
//!
//! Requests are counted where they arrive: the callee's proxy's inbound series (its caller's
//! identity is what mTLS verified, or `unauthenticated` for plaintext). A service's numbers are
//! those of the proxies of its Workloads; an edge goes from the caller's identity (resolved to
//! its service through the catalog) to the reporting proxy's service.

use super::ring::{quantile, BUCKETS, COARSE_POINTS, COARSE_SECONDS};
use super::{Inner, ProxyMeta, SeriesKind};
use crate::catalog::Catalog;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What rows group by (`by=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    Service,
    Workload,
    Route,
    Cluster,
}

impl By {
    pub fn parse(s: &str) -> Option<By> {
        Some(match s {
            "service" | "svc" | "services" => By::Service,
            "workload" | "workloads" | "deploy" => By::Workload,
            "route" | "routes" => By::Route,
            "cluster" | "clusters" => By::Cluster,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            By::Service => "service",
            By::Workload => "workload",
            By::Route => "route",
            By::Cluster => "cluster",
        }
    }
}

/// One `/v1/stats` query (after its parameters were checked).
#[derive(Clone, Debug)]
pub struct Query {
    pub by: By,
    pub window: u64,
    pub namespace: Option<String>,
    pub history: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct HistoryPoint {
    pub t_unix: u64,
    pub rps: f64,
    pub success_rate: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Row {
    pub cluster: String,
    pub namespace: Option<String>,
    pub service: Option<String>,
    pub workload: Option<String>,
    pub route: Option<String>,
    pub requests: u64,
    pub rps: f64,
    pub success_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub tcp_connections: i64,
    pub meshed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HistoryPoint>>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct End {
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    /// `unmeshed` for a caller outside the mesh.
    pub service: String,
    pub identity: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Edge {
    pub src: End,
    pub dst: End,
    pub requests: u64,
    pub rps: f64,
    pub success_rate: Option<f64>,
    pub p99_ms: Option<f64>,
    pub mtls: bool,
    /// Beyond the contract: opaque TCP connections opened in the window (an edge of a TCP
    /// service has these and no requests).
    #[serde(default)]
    pub tcp_connections: u64,
}

/// Counts summed over series.
#[derive(Clone, Debug)]
struct Acc {
    requests: u64,
    failures: u64,
    buckets: [u64; BUCKETS],
    bounds: std::sync::Arc<[f64]>,
}

impl Default for Acc {
    fn default() -> Self {
        Acc { requests: 0, failures: 0, buckets: [0; BUCKETS], bounds: std::sync::Arc::from(vec![]) }
    }
}

impl Acc {
    fn add(&mut self, p: &super::ring::Point, bounds: &std::sync::Arc<[f64]>) {
        self.requests += u64::from(p.requests);
        self.failures += u64::from(p.failures);
        for (a, b) in self.buckets.iter_mut().zip(p.buckets.iter()) {
            *a += u64::from(*b);
        }
        if self.bounds.len() < bounds.len() {
            self.bounds = bounds.clone();
        }
    }

    fn success_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| (self.requests - self.failures.min(self.requests)) as f64 / self.requests as f64)
    }

    fn ms(&self, q: f64) -> Option<f64> {
        if self.requests == 0 {
            return None;
        }
        quantile(q, &self.bounds, &self.buckets).map(|s| (s * 1000.0 * 1000.0).round() / 1000.0)
    }
}

/// Linked clusters by trust domain (links and importers): where a caller of another trust
/// domain comes from.
pub type Domains = BTreeMap<String, String>;

/// Where identities and proxies belong, from the catalog.
pub struct Resolver<'a> {
    cat: &'a Catalog,
    domains: &'a Domains,
    /// identity → (cluster, namespace, service, workload) of every instance with it.
    by_identity: BTreeMap<&'a str, Vec<(&'a str, &'a str, &'a str, &'a str)>>,
}

fn spiffe_parts(id: &str) -> Option<(&str, &str, &str)> {
    let rest = id.strip_prefix("spiffe://")?;
    let (td, path) = rest.split_once('/')?;
    let mut it = path.split('/');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some("ns"), Some(ns), Some("sa"), Some(sa)) => Some((td, ns, sa)),
        _ => None,
    }
}

impl<'a> Resolver<'a> {
    pub fn new(cat: &'a Catalog, domains: &'a Domains) -> Self {
        let mut by_identity: BTreeMap<&str, Vec<_>> = BTreeMap::new();
        for s in cat.services.values() {
            for i in &s.instances {
                by_identity.entry(i.identity.as_str()).or_default().push((
                    i.cluster.as_str(),
                    s.namespace.as_str(),
                    s.name.as_str(),
                    i.name.as_str(),
                ));
            }
        }
        Resolver { cat, domains, by_identity }
    }

    pub fn local(&self) -> &str {
        &self.cat.mesh.cluster.name
    }

    /// The cluster of an identity no instance has: this one for its own trust domain, else the
    /// cluster of any instance of that trust domain.
    fn cluster_of_domain(&self, td: &str) -> Option<String> {
        if td == self.cat.mesh.trust_domain {
            return Some(self.local().to_string());
        }
        if let Some(c) = self.domains.get(td) {
            return Some(c.clone());
        }
        self.by_identity
            .iter()
            .find(|(id, _)| spiffe_parts(id).is_some_and(|(t, _, _)| t == td))
            .and_then(|(_, v)| v.first())
            .map(|(c, ..)| c.to_string())
    }

    /// The caller end of an edge.
    pub fn caller(&self, src: &str) -> End {
        if !src.starts_with("spiffe://") {
            return End { cluster: None, namespace: None, service: "unmeshed".into(), identity: None };
        }
        if let Some((c, ns, svc, _)) = self.by_identity.get(src).and_then(|v| v.first()) {
            return End {
                cluster: Some(c.to_string()),
                namespace: Some(ns.to_string()),
                service: svc.to_string(),
                identity: Some(src.into()),
            };
        }
        match spiffe_parts(src) {
            Some((td, ns, sa)) => End {
                cluster: self.cluster_of_domain(td),
                namespace: Some(ns.into()),
                service: sa.into(),
                identity: Some(src.into()),
            },
            None => End { cluster: None, namespace: None, service: src.into(), identity: Some(src.into()) },
        }
    }

    /// The services (namespace, name) and workload name of a reporting proxy.
    pub fn proxy(&self, p: &ProxyMeta) -> (Vec<(String, String)>, String) {
        let mut services = vec![];
        let mut workload = p.workload.clone();
        for (c, ns, svc, w) in self.by_identity.get(p.identity.as_str()).into_iter().flatten() {
            if *c == p.cluster && (p.workload.is_empty() || *w == p.workload) {
                if workload.is_empty() {
                    workload = w.to_string();
                }
                let s = (ns.to_string(), svc.to_string());
                if !services.contains(&s) {
                    services.push(s);
                }
            }
        }
        if services.is_empty() {
            // A proxy no Service selects (a client only): named after its service account.
            if let Some((_, ns, sa)) = spiffe_parts(&p.identity) {
                services.push((ns.into(), sa.into()));
            }
        }
        if workload.is_empty() {
            workload = p.proxy_id.clone();
        }
        (services, workload)
    }
}

type RowKey = (String, Option<String>, Option<String>, Option<String>, Option<String>);
/// A proxy's services (namespace, name) and workload name.
type ProxyPlace = (Vec<(String, String)>, String);

struct Group {
    acc: Acc,
    history: Vec<Acc>,
    tcp: i64,
    meshed: bool,
}

impl Group {
    fn new(meshed: bool, history: bool) -> Self {
        Group {
            acc: Acc::default(),
            history: if history { vec![Acc::default(); COARSE_POINTS] } else { vec![] },
            tcp: 0,
            meshed,
        }
    }
}

/// The rows of this cluster's buffer for `q` at `now`.
pub fn rows(inner: &Inner, cat: &Catalog, domains: &Domains, q: &Query, now: u64) -> Vec<Row> {
    let r = Resolver::new(cat, domains);
    let mut groups: BTreeMap<RowKey, Group> = BTreeMap::new();
    let ns_ok = |ns: &str| q.namespace.as_deref().is_none_or(|want| want == ns);
    let local = r.local().to_string();
    // Every Service (and Workload) of this cluster has a row, with or without traffic.
    match q.by {
        By::Service | By::Workload => {
            for s in cat.services.values().filter(|s| ns_ok(&s.namespace)) {
                // Only where it runs: a Service defined here with no Workload here has no row
                // (its numbers are in the cluster that runs it).
                let mine: Vec<_> = s.instances.iter().filter(|i| i.cluster == local).collect();
                if mine.is_empty() {
                    continue;
                }
                let meshed = mine.iter().any(|i| i.sidecar.port() != 0);
                if q.by == By::Service {
                    let key = (local.clone(), Some(s.namespace.clone()), Some(s.name.clone()), None, None);
                    groups.entry(key).or_insert_with(|| Group::new(meshed, q.history));
                } else {
                    for i in mine {
                        let key = (
                            local.clone(),
                            Some(s.namespace.clone()),
                            Some(s.name.clone()),
                            Some(i.name.clone()),
                            None,
                        );
                        groups.entry(key).or_insert_with(|| Group::new(i.sidecar.port() != 0, q.history));
                    }
                }
            }
        }
        By::Cluster => {
            groups.entry((local.clone(), None, None, None, None)).or_insert_with(|| Group::new(true, q.history));
        }
        By::Route => {}
    }
    let first_minute = (now / COARSE_SECONDS + 1).saturating_sub(COARSE_POINTS as u64);
    let mut proxies: BTreeMap<*const ProxyMeta, ProxyPlace> = BTreeMap::new();
    let mut keys_of = |p: &std::sync::Arc<ProxyMeta>, kind: &SeriesKind| -> Vec<RowKey> {
        let (services, workload) = proxies.entry(std::sync::Arc::as_ptr(p)).or_insert_with(|| r.proxy(p)).clone();
        match (q.by, kind) {
            (By::Route, SeriesKind::Route { route, .. }) => {
                let (ns, name) = route.split_once('/').unwrap_or(("", route));
                if !ns_ok(ns) {
                    return vec![];
                }
                vec![(p.cluster.clone(), Some(ns.to_string()), None, None, Some(name.to_string()))]
            }
            (By::Route, _) | (_, SeriesKind::Route { .. }) => vec![],
            (By::Cluster, _) => {
                if services.iter().any(|(ns, _)| ns_ok(ns)) {
                    vec![(p.cluster.clone(), None, None, None, None)]
                } else {
                    vec![]
                }
            }
            (By::Service, _) => services
                .into_iter()
                .filter(|(ns, _)| ns_ok(ns))
                .map(|(ns, svc)| (p.cluster.clone(), Some(ns), Some(svc), None, None))
                .collect(),
            (By::Workload, _) => services
                .into_iter()
                .filter(|(ns, _)| ns_ok(ns))
                .take(1)
                .map(|(ns, svc)| (p.cluster.clone(), Some(ns), Some(svc), Some(workload.clone()), None))
                .collect(),
        }
    };
    for (key, s) in &inner.series {
        match &key.kind {
            SeriesKind::Http { direction, .. } if direction != "inbound" => continue,
            // Connections, not requests: in `tcp_connections` (open now) and in edges.
            SeriesKind::Tcp { .. } => continue,
            _ => {}
        }
        let sum = s.ring.sum(now, q.window);
        for rk in keys_of(&key.proxy, &key.kind) {
            let g = groups.entry(rk).or_insert_with(|| Group::new(true, q.history));
            g.meshed = true;
            g.acc.add(&sum, &s.bounds);
            if q.history {
                for (i, h) in g.history.iter_mut().enumerate() {
                    h.add(&s.ring.minute(first_minute + i as u64), &s.bounds);
                }
            }
        }
    }
    for ((proxy, direction, _, _), t) in &inner.tcp {
        if direction != "inbound" || t.seen + super::TCP_STALE_SECONDS <= now || q.by == By::Route {
            continue;
        }
        for rk in keys_of(proxy, &SeriesKind::Http { direction: String::new(), src: String::new(), dst: String::new() })
        {
            if let Some(g) = groups.get_mut(&rk) {
                g.tcp += t.active.max(0);
            }
        }
    }
    groups
        .into_iter()
        .map(|((cluster, namespace, service, workload, route), g)| Row {
            cluster,
            namespace,
            service,
            workload,
            route,
            requests: g.acc.requests,
            rps: rate(g.acc.requests, q.window),
            success_rate: g.acc.success_rate(),
            p50_ms: g.acc.ms(0.5),
            p95_ms: g.acc.ms(0.95),
            p99_ms: g.acc.ms(0.99),
            tcp_connections: g.tcp,
            meshed: g.meshed,
            history: q.history.then(|| {
                g.history
                    .iter()
                    .enumerate()
                    .map(|(i, h)| HistoryPoint {
                        t_unix: (first_minute + i as u64) * COARSE_SECONDS,
                        rps: rate(h.requests, COARSE_SECONDS),
                        success_rate: h.success_rate(),
                        p99_ms: h.ms(0.99),
                    })
                    .collect()
            }),
        })
        .collect()
}

/// Requests per second, to three decimals.
pub fn rate(requests: u64, window: u64) -> f64 {
    (requests as f64 / window.max(1) as f64 * 1000.0).round() / 1000.0
}

/// The edges of this cluster's buffer over `window` seconds at `now`.
pub fn edges(
    inner: &Inner,
    cat: &Catalog,
    domains: &Domains,
    window: u64,
    namespace: Option<&str>,
    now: u64,
) -> Vec<Edge> {
    let r = Resolver::new(cat, domains);
    let mut groups: BTreeMap<(End, End), (Acc, u64)> = BTreeMap::new();
    for (key, s) in &inner.series {
        let (direction, src, tcp) = match &key.kind {
            SeriesKind::Http { direction, src, .. } => (direction, src, false),
            SeriesKind::Tcp { direction, src, .. } => (direction, src, true),
            SeriesKind::Route { .. } => continue,
        };
        if direction != "inbound" {
            continue;
        }
        let sum = s.ring.sum(now, window);
        if sum.requests == 0 {
            continue;
        }
        let (services, _) = r.proxy(&key.proxy);
        let Some((ns, svc)) = services.into_iter().next() else { continue };
        let mut src = r.caller(src);
        if src.identity.is_none() {
            src.cluster = Some(key.proxy.cluster.clone());
        }
        if namespace.is_some_and(|n| n != ns && src.namespace.as_deref() != Some(n)) {
            continue;
        }
        let dst = End {
            cluster: Some(key.proxy.cluster.clone()),
            namespace: Some(ns),
            service: svc,
            identity: Some(key.proxy.identity.clone()),
        };
        let g = groups.entry((src, dst)).or_default();
        if tcp {
            g.1 += u64::from(sum.requests);
        } else {
            g.0.add(&sum, &s.bounds);
        }
    }
    groups
        .into_iter()
        .map(|((src, dst), (a, tcp))| Edge {
            mtls: src.identity.is_some(),
            src,
            dst,
            requests: a.requests,
            rps: rate(a.requests, window),
            success_rate: a.success_rate(),
            p99_ms: a.ms(0.99),
            tcp_connections: tcp,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{ProxyMeta, Stats};
    use weft_api::pb;

    fn catalog() -> Catalog {
        let mut cat = Catalog::default();
        cat.mesh.cluster.name = "east".into();
        cat.mesh.trust_domain = "east.td".into();
        let inst = |name: &str, sa: &str| crate::catalog::Instance {
            name: name.into(),
            address: "127.0.0.1:9000".parse().unwrap(),
            sidecar: "127.0.0.1:15000".parse().unwrap(),
            identity: format!("spiffe://east.td/ns/demo/sa/{sa}"),
            cluster: "east".into(),
            network: String::new(),
            locality: String::new(),
            labels: Default::default(),
            tags: vec![],
            healthy: true,
            visibility: None,
            weight: 1,
            mtls: Default::default(),
        };
        for (svc, sa) in [("api", "api"), ("web", "web")] {
            cat.services.insert(
                ("demo".into(), svc.into()),
                std::sync::Arc::new(crate::catalog::CatalogService {
                    name: svc.into(),
                    namespace: "demo".into(),
                    instances: vec![inst(&format!("{svc}-v1"), sa)],
                    clusters: vec!["east".into()],
                    ..Default::default()
                }),
            );
        }
        cat
    }

    fn report(src: &str, requests: u64, failures: u64) -> pb::StatsReport {
        pb::StatsReport {
            http_bounds: vec![0.001, 0.002, 0.004],
            http: vec![pb::HttpStats {
                direction: "inbound".into(),
                src: src.into(),
                dst: "spiffe://east.td/ns/demo/sa/api".into(),
                requests,
                failures,
                latency_buckets: vec![0, requests, requests, requests],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn rows_and_edges_count_what_the_callee_saw() {
        let stats = Stats::default();
        let api = ProxyMeta {
            proxy_id: "api-v1".into(),
            identity: "spiffe://east.td/ns/demo/sa/api".into(),
            workload: "api-v1".into(),
            cluster: "east".into(),
        };
        let t = 1_800_000_000;
        stats.ingest(&api, &report("spiffe://east.td/ns/demo/sa/web", 10, 1), t);
        stats.ingest(&api, &report("unauthenticated", 4, 0), t);
        let cat = catalog();
        let q = Query { by: By::Service, window: 60, namespace: None, history: true };
        let rows = stats.with(|i| rows(i, &cat, &Domains::new(), &q, t + 5));
        assert_eq!(rows.len(), 2, "{rows:?}");
        let api_row = rows.iter().find(|r| r.service.as_deref() == Some("api")).unwrap();
        assert_eq!(api_row.requests, 14);
        assert!((api_row.success_rate.unwrap() - 13.0 / 14.0).abs() < 1e-9);
        assert!(api_row.p50_ms.unwrap() > 1.0 && api_row.p50_ms.unwrap() <= 2.0);
        assert_eq!(api_row.history.as_ref().unwrap().len(), 60);
        assert_eq!(api_row.history.as_ref().unwrap().last().unwrap().rps, rate(14, 60));
        let web_row = rows.iter().find(|r| r.service.as_deref() == Some("web")).unwrap();
        assert_eq!((web_row.requests, web_row.success_rate), (0, None));

        let edges = stats.with(|i| edges(i, &cat, &Domains::new(), 60, None, t + 5));
        assert_eq!(edges.len(), 2, "{edges:?}");
        let meshed = edges.iter().find(|e| e.mtls).unwrap();
        assert_eq!((meshed.src.service.as_str(), meshed.dst.service.as_str(), meshed.requests), ("web", "api", 10));
        assert_eq!(meshed.src.cluster.as_deref(), Some("east"));
        let plain = edges.iter().find(|e| !e.mtls).unwrap();
        assert_eq!((plain.src.service.as_str(), plain.src.identity.as_deref(), plain.requests), ("unmeshed", None, 4));
    }

    #[test]
    fn a_caller_of_a_linked_trust_domain_is_placed_in_its_cluster() {
        let mut cat = catalog();
        let mut s = (*cat.services[&("demo".to_string(), "web".to_string())]).clone();
        s.instances[0].identity = "spiffe://west.td/ns/demo/sa/web".into();
        s.instances[0].cluster = "west".into();
        s.name = "web".into();
        cat.services.insert(("demo".into(), "web".into()), s.into());
        let none = Domains::new();
        let r = Resolver::new(&cat, &none);
        let e = r.caller("spiffe://west.td/ns/demo/sa/other");
        assert_eq!((e.cluster.as_deref(), e.service.as_str()), (Some("west"), "other"));
        let linked = Domains::from([("north.td".to_string(), "north".to_string())]);
        let e = Resolver::new(&cat, &linked).caller("spiffe://north.td/ns/demo/sa/web");
        assert_eq!(e.cluster.as_deref(), Some("north"));
    }
}
