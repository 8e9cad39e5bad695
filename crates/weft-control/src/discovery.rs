//! Discovery: one gRPC stream per proxy. The proxy says who it is (bootstrap token) and what it
//! calls (Hello); the control plane pushes a versioned snapshot of exactly that, and a new one
//! whenever it changes; the proxy acknowledges each version. `weft proxy-status` reads the
//! acknowledgements: SYNCED when the proxy has acked the latest version sent, STALE otherwise.

use crate::ca::bootstrap_identity;
use crate::catalog::Catalog;
use crate::tokens::Tokens;
use futures_util::Stream;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};
use weft_api::pb;
use weft_api::pb::proxy_message::Kind;
use weft_api::peer_authentication::MtlsMode;

pub use weft_api::proxy::MAX_PROXY_ID;
/// The most `Hello.upstreams` accepted.
pub const MAX_UPSTREAMS: usize = 1024;
/// The longest `Hello.upstreams` entry accepted (`<service>.<namespace>`, two DNS labels).
pub const MAX_UPSTREAM_NAME: usize = 253;
/// `Ack.error` is kept up to this many bytes.
pub const MAX_ACK_ERROR: usize = 1024;
/// Default for the discovery streams one token may hold open at once.
pub const DEFAULT_MAX_STREAMS_PER_TOKEN: usize = 100;

/// What the control plane knows of one connected proxy.
#[derive(Clone, Debug, Serialize)]
pub struct ProxyStatus {
    pub proxy_id: String,
    pub identity: String,
    /// `certificate`: `identity` is the one of the client certificate the proxy presented (and
    /// TLS verified); `token`: the proxy presented none (a first start, or an older proxy) and
    /// `identity` is the one its token names.
    pub identity_from: &'static str,
    pub upstreams: Vec<String>,
    pub connected_at_unix: u64,
    /// Latest version sent / acknowledged.
    pub sent: u64,
    pub acked: u64,
    /// The proxy's reason for rejecting its latest update, if it did.
    pub error: Option<String>,
    /// `SYNCED` or `STALE`.
    pub status: &'static str,
    /// Where discovery placed the proxy (primary-remote, [`crate::remote::place_for`]): its
    /// cluster and network, as of its latest update.
    pub cluster: String,
    pub network: String,
    /// `sidecar` or `gateway`, as the proxy's Hello said (empty: an older proxy).
    pub mode: String,
    /// Hex SHA-256 of every root (all trust domains) in the latest update sent: with `SYNCED`,
    /// the roots the proxy trusts (root rotation waits on these).
    pub roots: Vec<String>,
    /// Hex SHA-256 of the root the proxy's certificate chains to, as its latest Ack said (empty:
    /// not said, an older proxy).
    pub leaf_root: String,
    /// When the proxy's certificate expires (Unix seconds), as its latest Ack said (0: not said).
    pub leaf_not_after_unix: u64,
    /// Updates sent on this stream: full ones (the first, and every one to a proxy that does not
    /// apply deltas) and deltas (only the services that changed for it).
    pub updates_full: u64,
    pub updates_delta: u64,
}

/// The connected proxies, by connection; with the live taps and config dumps that go over their
/// streams (see [`crate::tap`]), and the control plane's event counters ([`crate::metrics`]).
#[derive(Clone, Default)]
pub struct Proxies(Arc<Mutex<HashMap<u64, ProxyStatus>>>, crate::tap::TapHub, crate::metrics::ControlMetrics);

impl Proxies {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<u64, ProxyStatus>) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn update(&self, conn: u64, f: impl FnOnce(&mut ProxyStatus)) {
        self.with(|m| {
            if let Some(p) = m.get_mut(&conn) {
                f(p);
                p.status = if p.acked == p.sent && p.error.is_none() { "SYNCED" } else { "STALE" };
            }
        });
    }

    /// Live taps and config dumps (see [`crate::tap`]).
    pub fn tap(&self) -> &crate::tap::TapHub {
        &self.1
    }

    /// The control plane's counters (`/metrics` on `--metrics`).
    pub fn metrics(&self) -> &crate::metrics::ControlMetrics {
        &self.2
    }

    /// Every connected proxy, sorted by id.
    pub fn list(&self) -> Vec<ProxyStatus> {
        let mut v: Vec<ProxyStatus> = self.with(|m| m.values().cloned().collect());
        v.sort_by(|a, b| a.proxy_id.cmp(&b.proxy_id));
        v
    }
}

pub struct DiscoveryService {
    /// Open streams per token, at most `max_streams_per_token` each.
    pub streams: Arc<Mutex<HashMap<String, usize>>>,
    pub max_streams_per_token: usize,
    pub catalog: watch::Receiver<Arc<Catalog>>,
    pub tokens: Arc<Tokens>,
    pub trust_domain: String,
    pub bundle: Vec<Vec<u8>>,
    pub proxies: Proxies,
    pub next_conn: AtomicU64,
    /// Turns true when the control plane stops: every stream ends.
    pub stop: watch::Receiver<bool>,
    pub renders: Renders,
    /// Where proxies' StatsReports go (and how often they send them).
    pub stats: crate::stats::Stats,
    /// Rate limits of the refusal lines (a refused proxy retries: one line per source per
    /// interval, see [`crate::loglimit`]).
    pub logs: Arc<crate::loglimit::LogLimits>,
}

/// Rendered updates, one per (catalog revision, set of upstreams, visibility): a change is
/// rendered once, not once per connected proxy.
#[derive(Clone, Default)]
pub struct Renders(Arc<Mutex<RenderCache>>);

/// What a proxy may see: the services it asked for (`upstreams`, empty: all), within the
/// namespaces its Workload's `visibility` names (`None`: every namespace).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct View {
    pub upstreams: Vec<String>,
    pub visibility: Option<Vec<String>>,
    /// The proxy's cluster and network (primary-remote, [`crate::remote`]): endpoints of other
    /// networks are rendered through their cluster's gateways. `None`: as the catalog holds them.
    pub place: Option<crate::remote::Place>,
}

/// The catalog revision the cache is for, the updates rendered for it by view, and each service's
/// render by where it is rendered for (see [`ServiceRenders`]).
type RenderCache = (u64, HashMap<View, Arc<Rendered>>, ServiceRenders);

/// A view's update as rendered for one catalog revision: every field but the services, and
/// each service's render, shared (the same `Arc`) with the renders of other revisions while the
/// service does not change. A stream compares two of them by pointer per service, and a delta
/// copies only the services that changed.
#[derive(Debug)]
pub struct Rendered {
    /// The update without its services.
    pub rest: pb::ProxyUpdate,
    /// Its services, in the catalog's order.
    pub services: Vec<Arc<pb::Service>>,
}

impl Rendered {
    /// The whole update (its services copied).
    pub fn full(&self) -> pb::ProxyUpdate {
        pb::ProxyUpdate { services: self.services.iter().map(|s| (**s).clone()).collect(), ..self.rest.clone() }
    }

    /// [`Rendered::full`], not copying a service no one else holds.
    fn into_full(self) -> pb::ProxyUpdate {
        let services = self.services.into_iter().map(|s| Arc::try_unwrap(s).unwrap_or_else(|s| (*s).clone())).collect();
        pb::ProxyUpdate { services, ..self.rest }
    }

    /// Whether `self` carries the same as `old`: services compared by pointer first (a service
    /// that did not change is the same render), by value only when the pointers differ.
    pub fn same_as(&self, old: &Rendered) -> bool {
        self.services.len() == old.services.len()
            && self.services.iter().zip(&old.services).all(|(a, b)| Arc::ptr_eq(a, b) || **a == **b)
            && self.rest == old.rest
    }

    /// The services that are new or changed since `old` (copied) and those gone, as a delta
    /// carries them. Costs a pointer comparison per unchanged service.
    pub fn delta_from(&self, old: &Rendered) -> (Vec<pb::Service>, Vec<pb::ServiceRef>) {
        fn key(s: &Arc<pb::Service>) -> (&str, &str) {
            (s.namespace.as_str(), s.name.as_str())
        }
        let before: HashMap<(&str, &str), &Arc<pb::Service>> = old.services.iter().map(|s| (key(s), s)).collect();
        let changed = self
            .services
            .iter()
            .filter(|s| before.get(&key(s)).is_none_or(|o| !Arc::ptr_eq(o, s) && ***o != ***s))
            .map(|s| (**s).clone())
            .collect();
        let after: std::collections::HashSet<(&str, &str)> = self.services.iter().map(key).collect();
        let removed = old
            .services
            .iter()
            .filter(|s| !after.contains(&key(s)))
            .map(|s| pb::ServiceRef { namespace: s.namespace.clone(), name: s.name.clone() })
            .collect();
        (changed, removed)
    }
}

/// Each service as rendered for a proxy's place, with the catalog revision in which the service
/// last changed (`Catalog::service_revisions`): a new catalog renders again only the services
/// that changed, not every service of every view. Cleared when the catalog's networks change
/// (the place's gateways are part of a render).
#[derive(Default)]
pub struct ServiceRenders {
    networks: BTreeMap<String, crate::catalog::PeerNetwork>,
    by_service: HashMap<RenderKey, (u64, Arc<pb::Service>)>,
}

/// A service's render by (namespace, name, the place it is rendered for).
type RenderKey = (String, String, Option<crate::remote::Place>);

impl Renders {
    /// `view` of `cat` as rendered (once per catalog revision and view), each service's render
    /// reused from earlier revisions while it does not change.
    pub fn get(&self, cat: &Catalog, view: &View, bundle: &[Vec<u8>]) -> Arc<Rendered> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (revision, views, services) = &mut *g;
        if *revision != cat.revision {
            (*revision, *views) = (cat.revision, HashMap::new());
            if services.networks != cat.networks {
                *services = ServiceRenders { networks: cat.networks.clone(), ..Default::default() };
            }
            // Renders of services gone, or changed since, are dropped.
            services
                .by_service
                .retain(|(ns, name, _), (rev, _)| cat.service_revisions.get(&(ns.clone(), name.clone())) == Some(rev));
        }
        if let Some(u) = views.get(view) {
            return u.clone();
        }
        let update = Arc::new(render_with(cat, view, bundle, &mut |s| {
            let key = (s.namespace.clone(), s.name.clone(), view.place.clone());
            let rev = cat.service_revisions.get(&(s.namespace.clone(), s.name.clone())).copied();
            if let (Some(rev), Some((r, out))) = (rev, services.by_service.get(&key)) {
                if *r == rev {
                    return out.clone();
                }
            }
            let out = Arc::new(render_service_in(cat, &crate::remote::for_proxy(cat, view.place.as_ref(), s)));
            if let Some(rev) = rev {
                services.by_service.insert(key, (rev, out.clone()));
            }
            out
        }));
        views.insert(view.clone(), update.clone());
        update
    }
}

/// The namespaces the proxy of `identity` (fronting `workload`, or every Workload running as it)
/// may see: the union of those Workloads' `visibility` plus their own namespace; `None` (every
/// namespace) when one of them sets none, or when no Workload matches (a client-only proxy).
pub fn visibility_for(cat: &Catalog, identity: &str, namespace: &str, workload: &str) -> Option<Vec<String>> {
    let mut out = vec![namespace.to_string()];
    let mut any = false;
    for s in cat.services.values().filter(|s| s.namespace == namespace) {
        for i in s.instances.iter().filter(|i| i.identity == identity && (workload.is_empty() || i.name == workload)) {
            any = true;
            out.extend(i.visibility.clone()?);
        }
    }
    out.sort();
    out.dedup();
    any.then_some(out)
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<pb::ProxyUpdate, Status>> + Send>>;

/// The part of the catalog a proxy needs, as sent on the wire (without its version): only what
/// proxies use (no labels, tags or health details), and only the services `view` allows.
pub fn render(cat: &Catalog, view: &View, bundle: &[Vec<u8>]) -> pb::ProxyUpdate {
    render_with(cat, view, bundle, &mut |s| {
        Arc::new(render_service_in(cat, &crate::remote::for_proxy(cat, view.place.as_ref(), s)))
    })
    .into_full()
}

/// Whether `key` is `name.ns` (compared in place: a view's filter runs over every service).
fn is_key(key: &str, name: &str, ns: &str) -> bool {
    key.strip_prefix(name).and_then(|r| r.strip_prefix('.')) == Some(ns)
}

/// [`render`], with each service rendered by `one`.
fn render_with(
    cat: &Catalog,
    view: &View,
    bundle: &[Vec<u8>],
    one: &mut dyn FnMut(&crate::catalog::CatalogService) -> Arc<pb::Service>,
) -> Rendered {
    // The CA's roots as the catalog has them (both during a root rotation), else those given.
    let bundle = if cat.ca.roots.is_empty() { bundle } else { &cat.ca.roots };
    let upstreams = &view.upstreams;
    let visible = |ns: &str| view.visibility.as_ref().is_none_or(|v| v.iter().any(|n| n == ns));
    let asked =
        |name: &str, ns: &str| visible(ns) && (upstreams.is_empty() || upstreams.iter().any(|u| is_key(u, name, ns)));
    // The Services that routes of the services asked for send to (backends, mirrors): a proxy
    // calling `api` needs `api-v2` when a route of `api` sends there.
    let routed: std::collections::HashSet<&str> = if upstreams.is_empty() {
        Default::default()
    } else {
        cat.routes
            .iter()
            .filter(|r| r.parents.iter().any(|p| p.split_once('.').is_some_and(|(name, ns)| asked(name, ns))))
            .flat_map(|r| r.backends.iter().map(String::as_str))
            .collect()
    };
    let wanted = |name: &str, ns: &str| {
        asked(name, ns) || (visible(ns) && !routed.is_empty() && routed.contains(format!("{name}.{ns}").as_str()))
    };
    let services = cat.services.values().filter(|s| wanted(&s.name, &s.namespace)).map(|s| one(s)).collect();
    // The virtual IPs of the services sent, and of their mirrors.
    let virtual_ips = cat
        .vips
        .iter()
        .filter(|((ns, name, _), _)| wanted(name, ns))
        .map(|((ns, name, cluster), ip)| pb::VirtualIp {
            service: name.clone(),
            namespace: ns.clone(),
            cluster: cluster.clone(),
            address: ip.to_string(),
        })
        .collect();
    let rest = pb::ProxyUpdate {
        signing_root: cat.ca.signing_root.clone(),
        version: 0,
        // A full update; the stream turns it into a delta for a proxy that applies them.
        delta: false,
        base_version: 0,
        removed_services: vec![],
        services: vec![],
        virtual_ips,
        bundle_der: bundle.to_vec(),
        // The proxy's own cluster (a remote cluster's gateway routes the SNI names of it).
        cluster: view.place.as_ref().map_or_else(|| cat.mesh.cluster.name.clone(), |p| p.cluster.clone()),
        inbound: None,
        placement: None,
        // Per stream (see `crate::tap`).
        taps: vec![],
        config_dump_request: 0,
        // Set per stream (the control plane's `--stats-interval`).
        stats_interval_ms: 0,
        // Every MeshConfig `extensionProviders` entry (a handful; CUSTOM rules name them).
        extension_providers: cat
            .mesh
            .extension_providers
            .iter()
            .map(|p| pb::ExtensionProvider { json: serde_json::to_string(p).unwrap_or_default() })
            .collect(),
        // MeshConfig `tracing` (absent: off). `registry::run` publishes a catalog whose MeshConfig
        // changed, so a change to it alone reaches every proxy.
        tracing: cat.mesh.tracing.as_ref().map(|t| pb::Tracing { json: serde_json::to_string(t).unwrap_or_default() }),
        // The mesh's roots, bound to its trust domain; then each linked cluster's, bound to its
        // own (a proxy verifies a peer only against the roots of the peer's trust domain).
        bundles: std::iter::once(pb::TrustDomainBundle {
            trust_domain: cat.mesh.trust_domain.clone(),
            roots_der: bundle.to_vec(),
        })
        .chain(
            cat.peer_bundles
                .iter()
                .filter(|(td, _)| **td != cat.mesh.trust_domain)
                .map(|(td, roots)| pb::TrustDomainBundle { trust_domain: td.clone(), roots_der: roots.clone() }),
        )
        .collect(),
    };
    Rendered { rest, services }
}

/// One service as proxies get it: only what they use (no labels, tags or health details), its
/// unhealthy instances left out.
pub fn render_service(s: &crate::catalog::CatalogService) -> pb::Service {
    pb::Service {
        name: s.name.clone(),
        namespace: s.namespace.clone(),
        ports: s.ports.iter().map(|(port, proto)| wire_port(*port, *proto, s.connect_ports.contains(port))).collect(),
        // Unhealthy instances leave the proxies' load balancers.
        endpoints: s
            .instances
            .iter()
            .filter(|i| i.healthy)
            .map(|i| pb::Endpoint {
                address: i.address.to_string(),
                proxy: i.sidecar.to_string(),
                identity: i.identity.clone(),
                cluster: i.cluster.clone(),
                network: i.network.clone(),
                locality: i.locality.clone(),
                // Not sent: proxies do not route on labels, and they may say more than a
                // proxy needs to know.
                labels: Default::default(),
                tags: vec![],
                weight: i.weight,
                // Peer authentication DISABLE: callers send plaintext to `address`.
                plaintext: i.mtls == MtlsMode::Disable,
            })
            .collect(),
        failover: s.failover.clone(),
        cluster_weights: s.cluster_weights.iter().map(|(c, w)| (c.clone(), *w)).collect(),
        outlier_detection: s.outlier_detection.as_ref().map(wire_outlier),
        // A proxy's routes are added by [`render_service_in`] (they live in the catalog).
        routes: vec![],
        backend_policy: s.backend_policy.as_ref().map(Into::into),
        resilience: s.resilience.as_ref().and_then(|r| wire_resilience(r, &s.name, &s.namespace)),
    }
}

/// [`render_service`] with the routes attached to `s` in `cat` (HTTPRoute, GRPCRoute, TCPRoute):
/// what a proxy gets. The registry gives a service a new revision when its routes change, so the
/// per-service render cache never serves stale routes.
pub fn render_service_in(cat: &Catalog, s: &crate::catalog::CatalogService) -> pb::Service {
    let mut out = render_service(s);
    out.routes = cat
        .routes_of(&format!("{}.{}", s.name, s.namespace))
        .map(|r| pb::Route {
            kind: r.route.kind_str().into(),
            name: r.name.clone(),
            namespace: r.namespace.clone(),
            spec_json: r.route.spec_json(),
            rule_resilience: r
                .resilience
                .iter()
                .filter_map(|(rule, p)| Some((rule.clone(), wire_resilience(p, &s.name, &s.namespace)?)))
                .collect(),
        })
        .collect();
    out
}

fn wire_outlier(o: &weft_api::traffic::ServiceOutlierDetection) -> pb::OutlierDetection {
    let ms = |d: weft_api::Duration| std::time::Duration::from(d).as_millis() as u64;
    pb::OutlierDetection {
        consecutive_connect_failures: o.consecutive_connect_failures,
        consecutive_5xx: o.consecutive_5xx,
        base_ejection_time_ms: o.base_ejection_time.map(ms),
        max_ejection_time_ms: o.max_ejection_time.map(ms),
        max_ejection_percent: o.max_ejection_percent,
        consecutive_gateway_errors: o.consecutive_gateway_errors,
        interval_ms: o.interval.map(ms),
        success_rate: o.success_rate.map(|sr| pb::SuccessRate {
            minimum_hosts: sr.minimum_hosts,
            request_volume: sr.request_volume,
            stdev_factor: sr.stdev_factor,
        }),
    }
}

/// A policy as sent: its JSON (see `pb::Resilience`).
fn wire_resilience(r: &weft_api::resilience::Resilience, name: &str, ns: &str) -> Option<pb::Resilience> {
    Some(pb::Resilience { json: serde_json::to_string(r).ok()?, service: format!("{name}.{ns}") })
}

fn wire_port(port: u16, proto: weft_api::proxy::Protocol, allow_connect: bool) -> pb::Port {
    pb::Port {
        port: u32::from(port),
        allow_connect,
        // Set on inbound ports only (see [`inbound_for`]).
        mtls: String::new(),
        protocol: serde_json::to_value(proto).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
    }
}

/// The inbound side of one proxy: the ports of the Workload it fronts (`workload`, in the
/// identity's namespace) or, without a name, of every Workload that runs as its `identity`; each
/// with the protocol its Service declares for that port.
pub fn inbound_for(cat: &Catalog, identity: &str, namespace: &str, workload: &str) -> pb::Inbound {
    let mut ports: Vec<pb::Port> = vec![];
    let mut resilience = None;
    for s in cat.services.values().filter(|s| s.namespace == namespace) {
        let mine = s.instances.iter().filter(|i| i.identity == identity && (workload.is_empty() || i.name == workload));
        for i in mine {
            // The rate limit of the (first) service the proxy fronts.
            if resilience.is_none() {
                resilience = s
                    .resilience
                    .as_ref()
                    .filter(|r| r.rate_limit.is_some())
                    .map(|r| weft_api::resilience::Resilience {
                        rate_limit: r.rate_limit.clone(),
                        policy: r.policy.clone(),
                        ..Default::default()
                    })
                    .and_then(|r| wire_resilience(&r, &s.name, &s.namespace));
            }
            let port = i.address.port();
            let proto = s.ports.iter().find(|(p, _)| *p == port).map(|(_, proto)| *proto).unwrap_or_default();
            if !ports.iter().any(|p| p.port == u32::from(port)) {
                let mut p = wire_port(port, proto, s.connect_ports.contains(&port));
                // Its mode as PeerAuthentication resolved it (see `catalog::build`).
                p.mtls = i.mtls.as_str().into();
                ports.push(p);
            }
        }
    }
    ports.sort_by_key(|p| p.port);
    let authorization = crate::authz::render(cat, identity, namespace, workload);
    let request_authentication = crate::request_authn::for_proxy(cat, identity, namespace, workload);
    let telemetry = crate::telemetry::for_proxy(cat, identity, namespace, workload);
    pb::Inbound { ports, resilience, authorization, request_authentication, telemetry }
}

/// Where the proxy of `identity` (fronting `workload`, or the first Workload that runs as it) runs:
/// that Workload's cluster and locality; the mesh's cluster and region/zone when none matches.
pub fn placement_for(cat: &Catalog, identity: &str, namespace: &str, workload: &str) -> pb::Placement {
    let mine = cat
        .services
        .values()
        .filter(|s| s.namespace == namespace)
        .flat_map(|s| s.instances.iter())
        .filter(|i| i.identity == identity && (workload.is_empty() || i.name == workload))
        .min_by(|a, b| a.name.cmp(&b.name));
    match mine {
        Some(i) => pb::Placement { cluster: i.cluster.clone(), locality: i.locality.clone() },
        None => {
            let c = &cat.mesh.cluster;
            let parts = [c.region.as_str(), c.zone.as_str()];
            let locality = parts.iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>().join("/");
            pb::Placement { cluster: c.name.clone(), locality }
        }
    }
}

/// Checks what a proxy reports about itself before it is stored or shown.
fn check_hello(hello: &pb::Hello) -> Result<(), Status> {
    if !weft_api::proxy::valid_proxy_id(&hello.proxy_id) {
        return Err(Status::invalid_argument(format!(
            "Hello.proxy_id must be 1-{MAX_PROXY_ID} letters, digits, '.', '_', ':' or '-' (set control.proxy_id)"
        )));
    }
    if hello.upstreams.len() > MAX_UPSTREAMS {
        return Err(Status::invalid_argument(format!(
            "Hello.upstreams lists {} services; at most {MAX_UPSTREAMS} (leave it empty for all)",
            hello.upstreams.len()
        )));
    }
    // Names that match no service are harmless (they select nothing); only their size is bounded.
    if let Some(i) = hello.upstreams.iter().position(|u| u.len() > MAX_UPSTREAM_NAME) {
        return Err(Status::invalid_argument(format!(
            "Hello.upstreams[{i}] is longer than {MAX_UPSTREAM_NAME} bytes; write <service>.<namespace>"
        )));
    }
    if !hello.workload.is_empty() && !weft_api::valid_name(&hello.workload) {
        return Err(Status::invalid_argument(format!(
            "Hello.workload {:?} must be a Workload's name (a DNS label)",
            hello.workload.chars().take(64).collect::<String>()
        )));
    }
    if !hello.cluster.is_empty() && !weft_api::valid_name(&hello.cluster) {
        return Err(Status::invalid_argument(format!(
            "Hello.cluster {:?} must be a cluster's name (a DNS label; set the proxy's `cluster:`)",
            hello.cluster.chars().take(64).collect::<String>()
        )));
    }
    if !matches!(hello.mode.as_str(), "" | "sidecar" | "gateway") {
        return Err(Status::invalid_argument(format!(
            "Hello.mode {:?} must be `sidecar` or `gateway`",
            hello.mode.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

/// `Ack.error` as kept: at most [`MAX_ACK_ERROR`] bytes.
fn bounded_error(mut e: String) -> String {
    if e.len() > MAX_ACK_ERROR {
        let mut cut = MAX_ACK_ERROR;
        while !e.is_char_boundary(cut) {
            cut -= 1;
        }
        e.truncate(cut);
        e.push_str(" … (truncated)");
    }
    e
}

/// Releases a token's stream slot when the stream ends.
pub(crate) struct StreamSlot {
    streams: Arc<Mutex<HashMap<String, usize>>>,
    token: String,
}

impl StreamSlot {
    /// A slot of `token` (its `authorization` value) among `streams`, or `RESOURCE_EXHAUSTED`
    /// when it already holds `max` (`what`: the kind of stream, for the error).
    pub(crate) fn take(
        streams: &Arc<Mutex<HashMap<String, usize>>>,
        token: &str,
        max: usize,
        what: &str,
    ) -> Result<StreamSlot, Status> {
        let mut m = streams.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(token.to_string()).or_default();
        if *n >= max {
            return Err(Status::resource_exhausted(format!(
                "this token already holds {max} {what} streams, the most one token may (`weft control --max-streams-per-token`); give each proxy its own token"
            )));
        }
        *n += 1;
        Ok(StreamSlot { streams: streams.clone(), token: token.to_string() })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut m = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.token);
            }
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[tonic::async_trait]
impl pb::discovery_server::Discovery for DiscoveryService {
    type StreamStream = UpdateStream;

    async fn stream(&self, req: Request<Streaming<pb::ProxyMessage>>) -> Result<Response<UpdateStream>, Status> {
        let id = bootstrap_identity(&self.tokens, &self.trust_domain, &req)?;
        // The cluster the token names for a remote cluster's proxy (primary-remote).
        let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let token_cluster = self.tokens.verify_header_in(header).ok().and_then(|(_, c)| c);
        // The identity of the client certificate, when the proxy presented one: it must be the
        // token's, and it is what `/v1/proxies` shows.
        let certified = req.extensions().get::<crate::grpc_tls::ConnInfo>().and_then(|c| c.identity.clone());
        // For the connect and disconnect log lines: who, from where, and how we know who.
        let peer = crate::grpc_tls::peer_of(&req);
        let peer_ip = crate::grpc_tls::peer_addr(&req).map(|a| a.ip());
        let identity_from = if certified.is_some() { "certificate" } else { "token" };
        if let Some(cert) = &certified {
            if *cert != id {
                return Err(Status::permission_denied(format!(
                    "the client certificate is for {cert} but the token is for {id}"
                )));
            }
        }
        let token = req.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let slot = StreamSlot::take(&self.streams, &token, self.max_streams_per_token, "discovery")?;
        let mut inbound = req.into_inner();
        let hello = match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
            Ok(Ok(Some(pb::ProxyMessage { kind: Some(Kind::Hello(h)) }))) => h,
            _ => return Err(Status::invalid_argument("the first message on the stream must be Hello")),
        };
        check_hello(&hello)?;
        // Primary-remote: the token's cluster, else the one the proxy's config names.
        let mesh = self.catalog.borrow().mesh.clone();
        let token_cluster =
            crate::remote::asserted_cluster(&mesh, token_cluster.as_deref(), &hello.cluster, &hello.mode).map_err(
                |e| {
                    // A refused proxy retries with backoff, forever: one line per source per
                    // interval, the next one saying how many were left out.
                    let src = peer_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
                    weft_api::warn_limited!(self.logs, crate::loglimit::Kind::ProxyRefused, src,
                        proxy = %hello.proxy_id, identity = %id, %peer, error = %e, "proxy refused");
                    Status::failed_precondition(e.to_string())
                },
            )?;
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        self.proxies.with(|m| {
            m.insert(
                conn,
                ProxyStatus {
                    proxy_id: hello.proxy_id.clone(),
                    identity: id.to_string(),
                    identity_from,
                    upstreams: hello.upstreams.clone(),
                    connected_at_unix: unix(SystemTime::now()),
                    sent: 0,
                    acked: 0,
                    error: None,
                    status: "STALE",
                    cluster: String::new(),
                    network: String::new(),
                    mode: hello.mode.chars().take(16).collect(),
                    roots: vec![],
                    leaf_root: String::new(),
                    leaf_not_after_unix: 0,
                    updates_full: 0,
                    updates_delta: 0,
                },
            )
        });
        tracing::info!(proxy = %hello.proxy_id, identity = %id, verified_by = %identity_from, %peer, "proxy connected");

        let (tx, rx) = mpsc::channel::<Result<pb::ProxyUpdate, Status>>(4);
        let (mut catalog, proxies, bundle) = (self.catalog.clone(), self.proxies.clone(), self.bundle.clone());
        let mut stop = self.stop.clone();
        let renders = self.renders.clone();
        let stats_interval_ms = self.stats.interval_ms;
        let reporter_cluster = token_cluster.clone().unwrap_or_else(|| mesh.cluster.name.clone());
        let upstreams = hello.upstreams.clone();
        // A proxy that applies deltas gets, after its first full update, only the services that
        // changed for it (issue 16: one endpoint change is not a full update of every proxy).
        let deltas = hello.accepts_delta;
        let (identity, namespace, workload) = (id.to_string(), id.namespace().to_string(), hello.workload.clone());
        // Live tap and config dumps (see `crate::tap`).
        let hub = self.proxies.tap().clone();
        let mut open_taps = hub.subscribe();
        let mut dump_asks = hub.register(conn, &hello.proxy_id);
        let tap_stream = Arc::new(crate::tap::Stream {
            conn,
            proxy_id: hello.proxy_id.clone(),
            identity: identity.clone(),
            namespace: namespace.clone(),
            workload: workload.clone(),
        });
        let for_reader = tap_stream.clone();
        tokio::spawn(async move {
            let mut version = 0u64;
            let mut last: Option<(Arc<Rendered>, (pb::Inbound, pb::Placement))> = None;
            let (mut last_taps, mut dump_request) = (vec![], 0u64);
            loop {
                let cat = catalog.borrow_and_update().clone();
                let started = std::time::Instant::now();
                let place = crate::remote::place_for(&cat, token_cluster.as_deref(), &identity, &namespace, &workload);
                let view = View {
                    upstreams: upstreams.clone(),
                    visibility: visibility_for(&cat, &identity, &namespace, &workload),
                    place: Some(place.clone()),
                };
                let update = renders.get(&cat, &view, &bundle);
                let inbound = (
                    inbound_for(&cat, &identity, &namespace, &workload),
                    placement_for(&cat, &identity, &namespace, &workload),
                );
                let taps = crate::tap::for_proxy(&open_taps.borrow_and_update(), &cat, &tap_stream);
                let changed = match &last {
                    Some((l, i)) => (!Arc::ptr_eq(l, &update) && !update.same_as(l)) || *i != inbound,
                    None => true,
                } || taps != last_taps
                    || dump_request != 0;
                if changed {
                    let base_version = version;
                    version += 1;
                    let mut out = match &last {
                        Some((l, _)) if deltas => {
                            // Only the services that changed are copied; every other field is
                            // whole, as in a full update.
                            let (services, removed_services) = update.delta_from(l);
                            pb::ProxyUpdate {
                                services,
                                removed_services,
                                delta: true,
                                base_version,
                                ..update.rest.clone()
                            }
                        }
                        _ => update.full(),
                    };
                    out.version = version;
                    out.stats_interval_ms = stats_interval_ms;
                    out.inbound = Some(inbound.0.clone());
                    out.placement = Some(inbound.1.clone());
                    out.taps = taps.clone();
                    out.config_dump_request = std::mem::take(&mut dump_request);
                    let roots: Vec<String> = out
                        .bundles
                        .iter()
                        .flat_map(|b| &b.roots_der)
                        .map(|r| crate::rotation::fingerprint(r))
                        .collect();
                    let delta = out.delta;
                    let took_us = started.elapsed().as_micros() as u64;
                    tracing::debug!(
                        conn,
                        version,
                        delta,
                        services = out.services.len(),
                        took_us,
                        "proxy update rendered"
                    );
                    if tx.send(Ok(out)).await.is_err() {
                        break;
                    }
                    proxies.metrics().update_sent(delta);
                    proxies.update(conn, |p| {
                        *(if delta { &mut p.updates_delta } else { &mut p.updates_full }) += 1;
                        p.sent = version;
                        p.roots = roots;
                        (p.cluster, p.network) = (place.cluster, place.network);
                    });
                    last = Some((update, inbound));
                    last_taps = taps;
                }
                tokio::select! {
                    changed = catalog.changed() => if changed.is_err() { break },
                    changed = open_taps.changed() => if changed.is_err() { break },
                    Some(request) = dump_asks.recv() => dump_request = request,
                    _ = tx.closed() => break,
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        });
        let (proxies, proxy_id, identity) = (self.proxies.clone(), hello.proxy_id, id.to_string());
        let (stats, reporter) = (
            self.stats.clone(),
            crate::stats::ProxyMeta {
                proxy_id: proxy_id.clone(),
                identity: identity.clone(),
                workload: hello.workload.clone(),
                cluster: reporter_cluster,
            },
        );
        tokio::spawn(async move {
            // Held for as long as the proxy's side of the stream is open.
            let _slot = slot;
            while let Ok(Some(msg)) = inbound.message().await {
                if let Some(Kind::Stats(report)) = &msg.kind {
                    stats.ingest(&reporter, report, crate::stats::unix_now());
                }
                match msg.kind {
                    Some(Kind::TapEvents(batch)) => {
                        let cluster = proxies.with(|m| m.get(&conn).map(|p| p.cluster.clone())).unwrap_or_default();
                        proxies.tap().deliver(&for_reader, &cluster, batch);
                        continue;
                    }
                    Some(Kind::ConfigDump(d)) => {
                        proxies.tap().answer(d.request, d.json);
                        continue;
                    }
                    _ => {}
                }
                if let Some(Kind::Ack(a)) = msg.kind {
                    let error = (!a.error.is_empty()).then(|| bounded_error(a.error));
                    if let Some(e) = &error {
                        tracing::warn!(proxy = %proxy_id, version = a.version, error = %e, "proxy rejected its update");
                    }
                    let leaf_root: String = a.leaf_root.iter().map(|b| format!("{b:02x}")).collect();
                    proxies.update(conn, |p| {
                        p.acked = a.version;
                        p.error = error;
                        p.leaf_root = leaf_root;
                        p.leaf_not_after_unix = a.leaf_not_after_unix;
                    });
                }
            }
            tracing::info!(proxy = %proxy_id, %identity, %peer, "proxy disconnected");
            proxies.tap().unregister(conn);
            proxies.with(|m| m.remove(&conn));
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod render_tests {
    use super::*;
    use crate::catalog::{CatalogService, Instance};

    fn service(name: &str, addresses: &[&str]) -> CatalogService {
        let instance = |a: &&str| Instance {
            name: a.replace(['.', ':'], "-"),
            address: a.parse().unwrap(),
            sidecar: a.parse().unwrap(),
            identity: format!("spiffe://td/ns/default/sa/{name}"),
            cluster: "west".into(),
            network: String::new(),
            locality: String::new(),
            labels: Default::default(),
            tags: vec![],
            healthy: true,
            visibility: None,
            weight: 1,
            mtls: Default::default(),
        };
        CatalogService {
            name: name.into(),
            namespace: "default".into(),
            instances: addresses.iter().map(instance).collect(),
            ..Default::default()
        }
    }

    fn catalog(revision: u64, services: Vec<(CatalogService, u64)>) -> Catalog {
        let mut cat = Catalog { revision, ..Default::default() };
        for (s, rev) in services {
            let key = (s.namespace.clone(), s.name.clone());
            cat.service_revisions.insert(key.clone(), rev);
            cat.services.insert(key, s.into());
        }
        cat
    }

    fn endpoints(u: &pb::ProxyUpdate, name: &str) -> Vec<String> {
        u.services.iter().find(|s| s.name == name).unwrap().endpoints.iter().map(|e| e.address.clone()).collect()
    }

    /// A new catalog renders again only the services that changed in it; the others' renders are
    /// reused, and what a proxy gets is the same as a render from scratch.
    #[test]
    fn only_changed_services_are_rendered_again() {
        let renders = Renders::default();
        let view = View {
            place: Some(crate::remote::Place { cluster: "east".into(), network: String::new() }),
            ..Default::default()
        };
        let one = catalog(1, vec![(service("api", &["10.0.0.1:80"]), 1), (service("web", &["10.0.0.2:80"]), 1)]);
        let first = renders.get(&one, &view, &[]);
        assert_eq!(endpoints(&first.full(), "api"), ["10.0.0.1:80"]);
        let two = catalog(
            2,
            vec![(service("api", &["10.0.0.1:80", "10.0.0.3:80"]), 2), (service("web", &["10.0.0.2:80"]), 1)],
        );
        let second = renders.get(&two, &view, &[]);
        assert_eq!(
            endpoints(&second.full(), "api"),
            ["10.0.0.1:80", "10.0.0.3:80"],
            "the changed service is rendered again"
        );
        assert_eq!(second.full(), render(&two, &view, &[]), "the same as a render from scratch");
        let web = |r: &Rendered| r.services.iter().find(|s| s.name == "web").unwrap().clone();
        assert!(Arc::ptr_eq(&web(&first), &web(&second)), "web's render is shared, not copied");
        let (changed, removed) = second.delta_from(&first);
        assert_eq!((changed.len(), changed[0].name.as_str(), removed.len()), (1, "api", 0), "a delta of api alone");
        let g = renders.0.lock().unwrap();
        let revs: Vec<u64> = ["api", "web"]
            .iter()
            .map(|n| g.2.by_service[&("default".to_string(), n.to_string(), view.place.clone())].0)
            .collect();
        assert_eq!(revs, [2, 1], "web's render is kept from the first catalog");
    }

    /// Peer authentication: a workload's port carries its resolved mode to its own proxy, and a
    /// DISABLE workload's endpoint is marked plaintext for its callers (the others are not).
    #[test]
    fn mtls_modes_reach_the_inbound_port_and_mark_disabled_endpoints() {
        let mut api = service("api", &["10.0.0.1:80", "10.0.0.2:80"]);
        api.instances[0].mtls = MtlsMode::Disable;
        api.instances[1].mtls = MtlsMode::Permissive;
        let cat = catalog(1, vec![(api, 1)]);
        let rendered = render_service(&cat.services[&("default".to_string(), "api".to_string())]);
        let plaintext: Vec<bool> = rendered.endpoints.iter().map(|e| e.plaintext).collect();
        assert_eq!(plaintext, [true, false]);
        let one = |workload: &str| inbound_for(&cat, "spiffe://td/ns/default/sa/api", "default", workload).ports;
        assert_eq!(one("10-0-0-1-80")[0].mtls, "DISABLE");
        assert_eq!(one("10-0-0-2-80")[0].mtls, "PERMISSIVE");
    }
}
