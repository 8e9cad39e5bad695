//! The control plane's own Prometheus metrics (`weft control --metrics`), served in plain HTTP
//! on a port of their own, as istiod serves its on 15014:
//!
//! ```text
//!  catalog ─┐
//!  proxies ─┤  scrape ─► fresh Registry (gauges read now, counters kept here) ─► /metrics text
//!  links   ─┤
//!  stats   ─┘
//! ```
//!
//! Gauges are read from the live state at scrape time (nothing to keep in step); the counters
//! that only an event can give — HTTP API requests, updates sent to proxies — live in
//! [`ControlMetrics`] and are shared into each scrape's registry. No token: like the proxies'
//! `/metrics`, the endpoint shows counts and names of services and linked clusters, no
//! resource contents; bind it where only your Prometheus reaches.

use crate::api::ApiState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// Where `weft control --metrics` serves when given without an address (istiod's port).
pub const DEFAULT_METRICS: &str = "127.0.0.1:15014";

/// What one series of the history costs, as tests/stats_memory.rs measures it with 1,000
/// proxies (docs/observability.md, "Metrics history"): the memory gauge is series × this.
pub const BYTES_PER_SERIES: i64 = 11_400;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkLabels {
    /// Not `cluster`: that is the scrape config's target label (deploy/prometheus).
    peer_cluster: String,
}

/// The control plane's counters (events), shared by the API, discovery and every scrape.
#[derive(Clone, Default, Debug)]
pub struct ControlMetrics {
    api_requests: Family<ApiLabels, Counter>,
    updates_sent: Family<KindLabels, Counter>,
}

impl ControlMetrics {
    /// One update sent to a proxy on its discovery stream: a delta or a full one.
    pub fn update_sent(&self, delta: bool) {
        let kind = if delta { "delta" } else { "full" };
        self.updates_sent.get_or_create(&KindLabels { kind: kind.into() }).inc();
    }

    fn api_request(&self, method: &str, status: u16) {
        // Methods outside the standard set would make a series each: they count as "other".
        let method = match method {
            "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => method,
            _ => "other",
        };
        self.api_requests.get_or_create(&ApiLabels { method: method.into(), status: status.to_string() }).inc();
    }
}

/// Counts every HTTP API request by method and status (a layer on the API's router).
pub async fn count_api(State(m): State<ControlMetrics>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let resp = next.run(req).await;
    m.api_request(&method, resp.status().as_u16());
    resp
}

fn gauge(reg: &mut Registry, name: &str, help: &str, v: i64) {
    let g = Gauge::<i64>::default();
    g.set(v);
    reg.register(name, help, g);
}

/// The text of one scrape, in the Prometheus text format.
pub fn render(st: &ApiState, m: &ControlMetrics) -> String {
    let mut reg = Registry::default();
    let cat = st.catalog.borrow().clone();
    let endpoints: usize = cat.services.values().map(|s| s.instances.len()).sum();
    gauge(
        &mut reg,
        "weft_control_plane_services",
        "Services in the catalog (local and imported)",
        cat.services.len() as i64,
    );
    gauge(
        &mut reg,
        "weft_control_plane_endpoints",
        "Endpoints (instances) of the catalog's services",
        endpoints as i64,
    );
    let proxies = st.proxies.list();
    let stale = proxies.iter().filter(|p| p.status != "SYNCED").count();
    gauge(
        &mut reg,
        "weft_control_plane_proxies_connected",
        "Proxies with an open discovery stream",
        proxies.len() as i64,
    );
    gauge(
        &mut reg,
        "weft_control_plane_proxies_not_synced",
        "Connected proxies that have not acknowledged their latest update (STALE)",
        stale as i64,
    );
    let links = Family::<LinkLabels, Gauge>::default();
    for (cluster, up) in &cat.links {
        links.get_or_create(&LinkLabels { peer_cluster: cluster.clone() }).set(i64::from(*up));
    }
    reg.register(
        "weft_control_plane_link_up",
        "Per linked cluster: 1 while the link is up (active or restored)",
        links,
    );
    let (series, dropped) = st.stats.counts();
    gauge(&mut reg, "weft_control_plane_stats_series", "Series kept by the metrics history", series as i64);
    gauge(
        &mut reg,
        "weft_control_plane_stats_memory_bytes",
        "Estimated memory of the metrics history: series times the measured bytes per series",
        series as i64 * BYTES_PER_SERIES,
    );
    let dropped_c = Counter::<u64>::default();
    dropped_c.inc_by(dropped);
    reg.register("weft_control_plane_stats_dropped_series", "Series the history refused at its cap", dropped_c);
    reg.register(
        "weft_control_plane_proxy_updates_sent",
        "Updates sent to proxies, by kind (full, delta)",
        m.updates_sent.clone(),
    );
    reg.register("weft_control_plane_api_requests", "HTTP API requests, by method and status", m.api_requests.clone());
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &reg);
    text
}

/// The metrics listener's router: `GET /metrics` only.
pub fn router(st: Arc<ApiState>, m: ControlMetrics) -> Router {
    Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let text = render(&st, &m);
            async move {
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
            }
        }),
    )
}
