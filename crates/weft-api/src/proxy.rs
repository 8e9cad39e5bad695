//! The proxy's configuration file. Every field is documented in docs/proxy.md; defaults are the
//! `DEFAULT_*` constants below.
//!
//! ```yaml
//! mode: sidecar
//! identity: { cert: web.pem, key: web-key.pem, bundle: bundle.pem }
//! inbound:  { listen: 127.0.0.1:15006, ports: [{ port: 8080 }] }
//! outbound: { upstreams: [{ listen: 127.0.0.1:9001, service: api.default, port: 8080 }] }
//! services:
//!   - name: api
//!     namespace: default
//!     endpoints:
//!       - { address: 127.0.0.1:8081, proxy: 127.0.0.1:16006, identity: spiffe://cluster.local/ns/default/sa/api }
//! ```

use crate::{valid_name, ConfigError, Duration};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

pub const DEFAULT_ADMIN: &str = "127.0.0.1:15000";
pub const DEFAULT_INBOUND: &str = "0.0.0.0:15006";
/// Port of the inbound listener (and of `weft-proxy init`'s inbound redirect).
pub const DEFAULT_INBOUND_PORT: u16 = 15006;
/// Port of the transparent outbound listener (and of `weft-proxy init`'s outbound redirect).
pub const DEFAULT_TRANSPARENT_PORT: u16 = 15001;
pub const DEFAULT_GATEWAY: &str = "0.0.0.0:15443";
pub const DEFAULT_DETECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A PING on every pooled peer connection this often...
pub const DEFAULT_PEER_KEEPALIVE: Duration = Duration::from_secs(1);
/// ...and no PONG within this long fails the connection: a partition is seen within about 2 s.
pub const DEFAULT_PEER_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Streams one HTTP/2 connection the proxy serves may have open at once.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Body bytes one HTTP/2 stream may have buffered in the proxy, each way.
pub const DEFAULT_STREAM_BUFFER_BYTES: usize = 256 * 1024;
/// Body bytes one HTTP/2 connection may have waiting to be sent, and what a peer may have in
/// flight to it.
pub const DEFAULT_CONNECTION_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Body bytes waiting to be sent plus request headers held, across the whole proxy.
pub const DEFAULT_PROXY_BUFFER_BYTES: usize = 64 * 1024 * 1024;
/// Request header bytes held across the open streams of one HTTP/2 connection.
pub const DEFAULT_CONNECTION_HEADER_BYTES: usize = 1024 * 1024;
/// Default `limits.max_connections`: connections open at once from peers (inbound and gateway
/// listeners) and, counted separately, from local apps (outbound listeners).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Largest `limits.max_connections` accepted.
pub const MAX_MAX_CONNECTIONS: usize = 1_000_000;
/// Also bounds how long an idle HTTP/1 keep-alive connection from an app stays open.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MARK: u32 = 1337;
pub const DEFAULT_CLUSTER: &str = "local";
pub const DEFAULT_NAMESPACE: &str = "default";

/// The whole proxy config file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// `sidecar` (inbound + outbound beside one workload) or `gateway` (east-west SNI passthrough).
    #[serde(default)]
    pub mode: Mode,
    /// The cluster this proxy runs in; names the SNI it answers to.
    #[serde(default = "default_cluster")]
    pub cluster: String,
    /// Where this proxy's certificate, key and trust bundle are read from. Omit with `control`.
    #[serde(default)]
    pub identity: Option<IdentityFiles>,
    /// Get identity (a certificate for a key made here) and routes from a control plane.
    #[serde(default)]
    pub control: Option<Control>,
    #[serde(default)]
    pub admin: Admin,
    /// Sidecar mode: the mTLS listener in front of the local app.
    #[serde(default)]
    pub inbound: Option<Inbound>,
    /// Sidecar mode: how the app's outgoing calls enter the proxy.
    #[serde(default)]
    pub outbound: Option<Outbound>,
    /// Gateway mode: the SNI-routing listener.
    #[serde(default)]
    pub gateway: Option<Gateway>,
    /// Services this proxy can reach (sidecar) or route to (gateway).
    #[serde(default)]
    pub services: Vec<Service>,
    /// Virtual IPs of `services` (and of their per-cluster mirrors): in transparent mode a
    /// connection to one, on any port, goes to that service (or that cluster's endpoints). A
    /// control plane sends its own (MeshConfig `virtualIps`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtual_ips: Vec<VirtualIp>,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Limits that protect the proxy from misbehaving clients.
    #[serde(default)]
    pub limits: Limits,
    /// `region/zone/subzone` of the workload this proxy fronts, for locality priority (with a
    /// control plane: the Workload's own, sent on the discovery stream, unless set here).
    #[serde(default)]
    pub locality: String,
    /// When an endpoint is ejected from load balancing (docs/proxy.md, `outlier_detection`).
    #[serde(default)]
    pub outlier_detection: crate::traffic::OutlierDetection,
    /// Access logs (docs/observability.md, "Access logs"): in force while no Telemetry from the
    /// control plane applies to this proxy's workload. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<crate::telemetry::AccessLogging>,
    /// Distributed tracing (docs/observability.md, "Tracing"): wins over a control plane's
    /// MeshConfig `tracing`. Off when absent (and the control plane sends none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<crate::trace::TracingSpec>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Sidecar,
    Gateway,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityFiles {
    /// PEM certificate chain, leaf first. The leaf's URI SAN is this proxy's SPIFFE ID.
    pub cert: String,
    /// PEM private key of the leaf.
    pub key: String,
    /// PEM trust bundle: one or more roots.
    pub bundle: String,
    /// How often the files are checked for a rotated certificate.
    #[serde(default = "default_reload")]
    pub reload_interval: Duration,
}

/// Connection to the control plane (`weft control`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// The control plane's gRPC address.
    pub address: SocketAddr,
    /// A bootstrap token (`weft token create --identity <ns>/<sa>`), or `token_file`.
    #[serde(default, skip_serializing)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<String>,
    /// This proxy's name in `weft proxy-status` (default: the service account and the process id).
    #[serde(default)]
    pub proxy_id: Option<String>,
    /// `name.namespace` of the services this proxy calls; empty: all of them.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// PEM file with the mesh's root certificate(s) (`weft ca --pem`), to verify the control plane's
    /// TLS certificate. Default: the root fingerprint that bootstrap tokens carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// The Workload this proxy fronts (its name, in the identity's namespace): the control plane
    /// sends its ports as inbound ports. Default: every Workload running as this identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
}

/// The longest proxy id (`control.proxy_id`, `Hello.proxy_id`) a control plane accepts.
pub const MAX_PROXY_ID: usize = 128;

/// A proxy id is 1-[`MAX_PROXY_ID`] letters, digits, `.`, `_`, `:` or `-`.
pub fn valid_proxy_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_PROXY_ID && id.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
}

impl Control {
    /// A control plane at `address`, joined with a bootstrap `token`; everything else default.
    pub fn new(address: SocketAddr, token: String) -> Control {
        Control {
            address,
            token: Some(token),
            token_file: None,
            proxy_id: None,
            upstreams: vec![],
            ca_file: None,
            workload: None,
        }
    }

    /// The token, from `token` or read from `token_file`.
    pub fn read_token(&self) -> Result<String, ConfigError> {
        match (&self.token, &self.token_file) {
            (Some(t), None) => Ok(t.trim().to_string()),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map(|t| t.trim().to_string())
                .map_err(|e| ConfigError::invalid("control.token_file", format!("cannot read {f}: {e}"))),
            _ => Err(ConfigError::invalid("control.token", "set exactly one of `token` and `token_file`")),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Address of `/live`, `/ready`, `/metrics`, `/config_dump`. Port 0 picks a free port.
    #[serde(default = "default_admin")]
    pub listen: SocketAddr,
}

impl Default for Admin {
    fn default() -> Self {
        Admin { listen: default_admin() }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Inbound {
    /// The mTLS listener peers connect to (and where transparent interception sends inbound traffic).
    #[serde(default = "default_inbound")]
    pub listen: SocketAddr,
    /// The address the local app listens on (ports come from `ports`).
    #[serde(default = "default_app_host")]
    pub app_host: std::net::IpAddr,
    /// The app's ports that the mesh may reach.
    #[serde(default)]
    pub ports: Vec<AppPort>,
    /// Whether callers must use mTLS (STRICT, the default), may also send plaintext
    /// (PERMISSIVE) or must send plaintext (DISABLE), for ports that set no `mtls` of their own.
    /// A control plane sends every port's mode (PeerAuthentication), which wins.
    #[serde(default, skip_serializing_if = "crate::proxy::is_strict")]
    pub mtls: crate::peer_authentication::MtlsMode,
    /// Authorization without a control plane: the default policy and AuthorizationPolicies
    /// (`{ default: deny, policies: [{ name: ns/p, spec: {...} }] }`). What the control plane
    /// sends replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<crate::authz::Authorization>,
    /// JWTs accepted on inbound HTTP requests: RequestAuthentication specs (docs/security.md),
    /// with any a control plane sends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_authentication: Vec<crate::request_authn::RequestAuthenticationSpec>,
}

fn is_strict(m: &crate::peer_authentication::MtlsMode) -> bool {
    *m == crate::peer_authentication::MtlsMode::Strict
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppPort {
    pub port: u16,
    /// Inbound (`inbound.ports`): the HTTP version spoken to the app. `auto` speaks the caller's
    /// version; `http1`/`http2` force one. HTTP vs opaque TCP is decided by the calling sidecar
    /// (ALPN); `http1`/`http2` ports refuse opaque TCP, and `auto`/`tcp` ports refuse HTTP sent
    /// over opaque TCP.
    /// Outbound (`upstreams`, `services[].ports`): `auto` detects HTTP/1, HTTP/2 or opaque TCP on
    /// each connection; `http1` and `http2` skip detection as HTTP (either version is then
    /// accepted); `tcp` skips it as opaque TCP, for server-speaks-first protocols (MySQL, SMTP).
    #[serde(default)]
    pub protocol: Protocol,
    /// Inbound only: whether callers may open `CONNECT` tunnels to the app on this port. Off by
    /// default: a tunnel's bytes reach the app raw, past the HTTP handling that sets
    /// `x-weft-peer-identity`, so only a port whose app is a forward proxy should allow it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_connect: bool,
    /// Inbound only: this port's mTLS mode (see `inbound.mtls`, which applies when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<crate::peer_authentication::MtlsMode>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Auto,
    Http1,
    Http2,
    Tcp,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Outbound {
    /// Transparent listener: where iptables REDIRECTs the app's outgoing TCP (see `weft-proxy init`).
    #[serde(default)]
    pub transparent: Option<SocketAddr>,
    /// SO_MARK set on the proxy's own connections so interception rules let them through.
    /// Needs CAP_NET_ADMIN. Default: 1337 (`DEFAULT_MARK`, what `weft-proxy init` excludes) when
    /// `transparent` is set, otherwise none. Set 0 only when `init --proxy-uid` excludes the
    /// proxy's user instead; otherwise the proxy's own traffic loops back into it.
    #[serde(default)]
    pub mark: Option<u32>,
    /// Explicit listeners, one per upstream (for running without root, as Consul's upstreams).
    #[serde(default)]
    pub upstreams: Vec<Upstream>,
    /// Multiplexed HTTP/2 connections kept to each peer proxy (requests are spread over them).
    /// Default: one per CPU core, at most 8; 1 gives a single connection per peer.
    #[serde(default)]
    pub connections_per_peer: Option<usize>,
}

impl Outbound {
    /// The SO_MARK in force (0: none).
    pub fn effective_mark(&self) -> u32 {
        self.mark.unwrap_or(if self.transparent.is_some() { DEFAULT_MARK } else { 0 })
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub listen: SocketAddr,
    /// `name` or `name.namespace` of a service in `services`.
    pub service: String,
    /// The destination port. Unset: each endpoint's own `address` port (endpoints may differ,
    /// e.g. two versions of an app on one host). Set: this port on every endpoint's host, for
    /// workloads that serve several ports.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub protocol: Protocol,
}

/// A virtual IP naming a service, or one cluster's mirror of it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualIp {
    /// `name` or `name.namespace` (namespace `default` when omitted), as in `services`.
    pub service: String,
    /// Set: only this cluster's endpoints of the service (its mirror).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub address: std::net::IpAddr,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    #[serde(default = "default_gateway")]
    pub listen: SocketAddr,
    /// Where the reserved SNI `control.weft-system.<cluster>.weft` (linked clusters' link streams)
    /// is forwarded: this cluster's control plane gRPC listener. Default: `control.address`, the
    /// control plane the gateway follows; without either, that SNI is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<SocketAddr>,
}

impl Gateway {
    /// The control plane the reserved SNI is forwarded to, if any (see [`Gateway::control_plane`]).
    pub fn control_plane_addr(&self, control: Option<&Control>) -> Option<SocketAddr> {
        self.control_plane.or(control.map(|c| c.address))
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Protocol per destination port, for callers of this service: `tcp` for server-speaks-first
    /// protocols (MySQL, SMTP...) so the caller's sidecar does not wait for the client to speak.
    /// Ports not listed are detected (`auto`).
    #[serde(default)]
    pub ports: Vec<AppPort>,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Clusters to fail over to, in order, when this proxy's own cluster has too few healthy
    /// endpoints; other clusters get no traffic (docs/multicluster.md, "Failover between clusters").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<String>,
    /// A fixed split of traffic between clusters (`{ east: 90, west: 10 }`); clusters not listed
    /// get none. Exclusive with `failover`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cluster_weights: BTreeMap<String, u32>,
    /// This service's own outlier detection: each field set replaces the top-level
    /// `outlier_detection` value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<crate::traffic::OutlierOverrides>,
    /// Routes attached to this service (HTTPRoute, GRPCRoute, TCPRoute; docs/traffic.md), each
    /// `{ name, namespace, kind, spec }` with the resource's spec. The Services they send to must
    /// be in `services` too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<crate::route::AttachedRoute>,
    /// The load balancer and connection limits for this service (a BackendPolicy's spec, less
    /// `targetRef` and `outlierDetection`; docs/traffic.md). Default: round robin, no limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_policy: Option<crate::backend_policy::BackendPolicy>,
    /// Retries, timeouts, faults (at callers) and a rate limit (at this service's own proxies):
    /// a ResiliencePolicy's sections (docs/traffic.md, "Resilience").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resilience: Option<crate::resilience::Resilience>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The workload's own address (what apps dial; matched on transparent interception).
    pub address: SocketAddr,
    /// Where to open the mTLS connection: the endpoint's sidecar inbound listener, or a gateway
    /// in front of it. Defaults to `address`'s IP with the inbound port 15006.
    #[serde(default)]
    pub proxy: Option<SocketAddr>,
    /// The SPIFFE ID the endpoint's sidecar must present.
    pub identity: String,
    #[serde(default = "default_cluster")]
    pub cluster: String,
    #[serde(default)]
    pub network: String,
    /// `region/zone/subzone`, any prefix.
    #[serde(default)]
    pub locality: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Its share of load balancing against the service's other endpoints (1-10000; default 1).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Its workload has mTLS DISABLE (PeerAuthentication): connections go to `address` as
    /// plaintext, not over mTLS to `proxy`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plaintext: bool,
}

/// An endpoint's weight when none is given.
pub const DEFAULT_ENDPOINT_WEIGHT: u32 = 1;
/// The largest endpoint weight (so weight sums stay far from overflow and tables small).
pub const MAX_ENDPOINT_WEIGHT: u32 = 10_000;

fn default_weight() -> u32 {
    DEFAULT_ENDPOINT_WEIGHT
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// How long to wait for a client's first bytes before treating the connection as opaque TCP.
    #[serde(default = "d_detect")]
    pub detect: Duration,
    /// TCP + TLS connect to a peer proxy or the local app.
    #[serde(default = "d_connect")]
    pub connect: Duration,
    /// On SIGTERM: how long open connections may finish before the proxy exits.
    #[serde(default = "d_drain")]
    pub drain: Duration,
    /// A client must send a complete request head within this time (slowloris guard).
    #[serde(default = "d_header")]
    pub header_read: Duration,
    /// How often an HTTP/2 PING goes out on each pooled connection to a peer proxy.
    #[serde(default = "d_peer_keepalive")]
    pub peer_keepalive: Duration,
    /// No PONG within this long: the peer is unresponsive (a partition, a frozen host); the
    /// connection leaves the pool and the requests on it fail at once (504 `peer-unresponsive`).
    #[serde(default = "d_peer_keepalive_timeout")]
    pub peer_keepalive_timeout: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            detect: d_detect(),
            connect: d_connect(),
            drain: d_drain(),
            header_read: d_header(),
            peer_keepalive: d_peer_keepalive(),
            peer_keepalive_timeout: d_peer_keepalive_timeout(),
        }
    }
}

/// What one client, peer or connection may make the proxy hold (docs/proxy.md, `limits`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request head accepted (HTTP/1 header block, HTTP/2 header list); larger gets 431.
    #[serde(default = "d_max_header")]
    pub max_header_bytes: usize,
    /// Concurrent streams per HTTP/2 connection the proxy serves (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[serde(default = "d_max_streams")]
    pub max_concurrent_streams: u32,
    /// Body bytes one HTTP/2 stream may hold in the proxy, each way (its receive window, and its
    /// send buffer).
    #[serde(default = "d_stream_buffer")]
    pub stream_buffer_bytes: usize,
    /// Body bytes one HTTP/2 connection may have waiting to be sent, and the receive window of
    /// a connection the proxy serves.
    #[serde(default = "d_connection_buffer")]
    pub connection_buffer_bytes: usize,
    /// Body bytes waiting to be sent plus request headers held, across the proxy.
    #[serde(default = "d_proxy_buffer")]
    pub proxy_buffer_bytes: usize,
    /// Request header bytes held across the open streams of one HTTP/2 connection the proxy serves.
    #[serde(default = "d_connection_header")]
    pub connection_header_bytes: usize,
    /// Connections open at once from peers (inbound and gateway listeners together) and, counted
    /// separately, from local apps (outbound listeners together). At the cap the proxy stops
    /// accepting: new connections wait in the kernel's listen backlog until one closes.
    #[serde(default = "d_max_connections")]
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            stream_buffer_bytes: DEFAULT_STREAM_BUFFER_BYTES,
            connection_buffer_bytes: DEFAULT_CONNECTION_BUFFER_BYTES,
            proxy_buffer_bytes: DEFAULT_PROXY_BUFFER_BYTES,
            connection_header_bytes: DEFAULT_CONNECTION_HEADER_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl Limits {
    /// The rules between the fields; `validate` reports the first one broken.
    fn check(&self) -> Result<(), ConfigError> {
        // HTTP/2 windows are at most 2^31 - 1; the smallest a stream window may be is one frame.
        const MAX_WINDOW: usize = (1 << 31) - 1;
        if !(1..=65_535).contains(&self.max_concurrent_streams) {
            return Err(ConfigError::invalid("limits.max_concurrent_streams", "must be 1-65535"));
        }
        if !(1..=MAX_MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(ConfigError::invalid(
                "limits.max_connections",
                format!("{} must be 1-{MAX_MAX_CONNECTIONS}", self.max_connections),
            ));
        }
        if !(16_384..=MAX_WINDOW).contains(&self.stream_buffer_bytes) {
            return Err(ConfigError::invalid(
                "limits.stream_buffer_bytes",
                "must be at least 16384 (one HTTP/2 frame) and below 2^31",
            ));
        }
        if self.connection_buffer_bytes < self.stream_buffer_bytes || self.connection_buffer_bytes > MAX_WINDOW {
            return Err(ConfigError::invalid(
                "limits.connection_buffer_bytes",
                format!(
                    "{} must be at least limits.stream_buffer_bytes ({}) and below 2^31",
                    self.connection_buffer_bytes, self.stream_buffer_bytes
                ),
            ));
        }
        if self.proxy_buffer_bytes < self.connection_buffer_bytes {
            return Err(ConfigError::invalid(
                "limits.proxy_buffer_bytes",
                format!(
                    "{} must be at least limits.connection_buffer_bytes ({})",
                    self.proxy_buffer_bytes, self.connection_buffer_bytes
                ),
            ));
        }
        if self.connection_header_bytes < self.max_header_bytes
            || self.connection_header_bytes > self.proxy_buffer_bytes
        {
            return Err(ConfigError::invalid(
                "limits.connection_header_bytes",
                format!(
                    "{} must be at least limits.max_header_bytes ({}) and at most limits.proxy_buffer_bytes ({})",
                    self.connection_header_bytes, self.max_header_bytes, self.proxy_buffer_bytes
                ),
            ));
        }
        Ok(())
    }
}

fn default_cluster() -> String {
    DEFAULT_CLUSTER.into()
}
fn default_namespace() -> String {
    DEFAULT_NAMESPACE.into()
}
fn default_admin() -> SocketAddr {
    DEFAULT_ADMIN.parse().expect("constant")
}
fn default_inbound() -> SocketAddr {
    DEFAULT_INBOUND.parse().expect("constant")
}
fn default_gateway() -> SocketAddr {
    DEFAULT_GATEWAY.parse().expect("constant")
}
fn default_app_host() -> std::net::IpAddr {
    std::net::Ipv4Addr::LOCALHOST.into()
}
fn default_reload() -> Duration {
    DEFAULT_RELOAD_INTERVAL
}
fn d_detect() -> Duration {
    DEFAULT_DETECT_TIMEOUT
}
fn d_connect() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}
fn d_drain() -> Duration {
    DEFAULT_DRAIN_TIMEOUT
}
fn d_header() -> Duration {
    DEFAULT_HEADER_READ_TIMEOUT
}
fn d_peer_keepalive() -> Duration {
    DEFAULT_PEER_KEEPALIVE
}
fn d_peer_keepalive_timeout() -> Duration {
    DEFAULT_PEER_KEEPALIVE_TIMEOUT
}
fn d_max_streams() -> u32 {
    DEFAULT_MAX_CONCURRENT_STREAMS
}
fn d_stream_buffer() -> usize {
    DEFAULT_STREAM_BUFFER_BYTES
}
fn d_connection_buffer() -> usize {
    DEFAULT_CONNECTION_BUFFER_BYTES
}
fn d_proxy_buffer() -> usize {
    DEFAULT_PROXY_BUFFER_BYTES
}
fn d_connection_header() -> usize {
    DEFAULT_CONNECTION_HEADER_BYTES
}

fn d_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}
fn d_max_header() -> usize {
    DEFAULT_MAX_HEADER_BYTES
}

impl Service {
    /// `name.namespace`, the key upstreams use.
    pub fn key(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }
}

impl ProxyConfig {
    /// Parses and validates a YAML config. Nothing is returned unless the whole file is valid.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let cfg: ProxyConfig = serde_saphyr::from_str(text).map_err(crate::resource::yaml_error)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Finds a service by `name` (namespace `default`) or `name.namespace`.
    pub fn service(&self, key: &str) -> Option<&Service> {
        let (name, ns) = key.split_once('.').unwrap_or((key, DEFAULT_NAMESPACE));
        self.services.iter().find(|s| s.name == name && s.namespace == ns)
    }

    /// Rules that span fields.
    /// The SO_MARK the proxy puts on its own connections (peers, apps, the control plane), which
    /// interception rules never redirect; 0 for none. See [`Outbound::effective_mark`].
    pub fn mark(&self) -> u32 {
        self.outbound.as_ref().map(|o| o.effective_mark()).unwrap_or(0)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(a) = &self.access_log {
            a.validate_at("access_log")?;
        }
        if !valid_name(&self.cluster) {
            return Err(ConfigError::invalid(
                "cluster",
                format!("{:?} must be a DNS label (a-z, 0-9, '-')", self.cluster),
            ));
        }
        match (&self.identity, &self.control) {
            (None, None) => {
                return Err(ConfigError::invalid(
                    "identity",
                    "set `identity` (certificate files) or `control` (a control plane issues it)",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid("identity", "set `identity` or `control`, not both"))
            }
            (None, Some(c)) => {
                if c.token.is_some() == c.token_file.is_some() {
                    return Err(ConfigError::invalid("control.token", "set exactly one of `token` and `token_file`"));
                }
                if let Some(id) = c.proxy_id.as_deref().filter(|id| !valid_proxy_id(id)) {
                    return Err(ConfigError::invalid(
                        "control.proxy_id",
                        format!(
                            "{:?} must be 1-{MAX_PROXY_ID} letters, digits, '.', '_', ':' or '-'",
                            id.chars().take(64).collect::<String>()
                        ),
                    ));
                }
                if let Some(w) = c.workload.as_deref().filter(|w| !crate::valid_name(w)) {
                    return Err(ConfigError::invalid(
                        "control.workload",
                        format!("{w:?} must be a Workload's name (a DNS label)"),
                    ));
                }
            }
            (Some(_), None) => {}
        }
        match self.mode {
            Mode::Sidecar => {
                if self.inbound.is_none() && self.outbound.is_none() {
                    return Err(ConfigError::invalid(
                        "inbound",
                        "a sidecar needs `inbound`, `outbound` or both; add `inbound: { ports: [{ port: 8080 }] }`",
                    ));
                }
                if self.gateway.is_some() {
                    return Err(ConfigError::invalid("gateway", "only valid with `mode: gateway`"));
                }
            }
            Mode::Gateway => {
                if self.gateway.is_none() {
                    return Err(ConfigError::invalid(
                        "gateway",
                        "`mode: gateway` needs `gateway: { listen: 0.0.0.0:15443 }`",
                    ));
                }
                if self.inbound.is_some() || self.outbound.is_some() {
                    return Err(ConfigError::invalid("inbound", "a gateway has no `inbound`/`outbound`; remove them"));
                }
                if let Some(cp) = self.gateway.as_ref().and_then(|g| g.control_plane) {
                    if cp.ip().is_unspecified() || cp.port() == 0 {
                        return Err(ConfigError::invalid(
                            "gateway.control_plane",
                            format!("{cp} is not an address to connect to; give the control plane's gRPC listener (`weft control --grpc`), e.g. 10.0.0.5:15012"),
                        ));
                    }
                }
            }
        }
        let mut seen = HashSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let f = format!("services[{i}]");
            for (j, r) in s.routes.iter().enumerate() {
                r.route.validate().map_err(|e| match e {
                    ConfigError::Invalid { field, message } => {
                        ConfigError::invalid(format!("{f}.routes[{j}].spec.{field}"), message)
                    }
                    other => other,
                })?;
            }
            if !valid_name(&s.name) {
                return Err(ConfigError::invalid(
                    format!("{f}.name"),
                    format!("{:?} must be a DNS label (a-z, 0-9, '-')", s.name),
                ));
            }
            if !valid_name(&s.namespace) {
                return Err(ConfigError::invalid(
                    format!("{f}.namespace"),
                    format!("{:?} must be a DNS label", s.namespace),
                ));
            }
            let mut ports = HashSet::new();
            for (j, p) in s.ports.iter().enumerate() {
                if p.port == 0 || !ports.insert(p.port) {
                    return Err(ConfigError::invalid(
                        format!("{f}.ports[{j}].port"),
                        "must be 1-65535 and listed once",
                    ));
                }
            }
            if let Some(r) = &s.resilience {
                if r.rate_limit.is_some() {
                    return Err(ConfigError::invalid(
                        format!("{f}.resilience.rateLimit"),
                        "a rate limit applies at the service's own proxies, which take it from the control plane (a ResiliencePolicy); remove it here",
                    ));
                }
                r.validate().map_err(|e| match e {
                    ConfigError::Invalid { field, message } => {
                        ConfigError::invalid(format!("{f}.resilience.{field}"), message)
                    }
                    other => other,
                })?;
            }
            crate::traffic::check_cluster_policy(
                (&format!("{f}.failover"), &s.failover),
                (&format!("{f}.cluster_weights"), &s.cluster_weights),
            )?;
            if let Some(o) = &s.outlier_detection {
                self.outlier_detection.with(o).check(&format!("{f}.outlier_detection"))?;
            }
            if let Some(p) = &s.backend_policy {
                p.check(&format!("{f}.backend_policy"))?;
            }
            if !seen.insert(s.key()) {
                return Err(ConfigError::invalid(
                    format!("{f}.name"),
                    format!("service {} is listed twice; merge the entries", s.key()),
                ));
            }
            for (j, e) in s.endpoints.iter().enumerate() {
                if !e.identity.starts_with("spiffe://") {
                    return Err(ConfigError::invalid(
                        format!("{f}.endpoints[{j}].identity"),
                        format!(
                            "{:?} is not a SPIFFE ID; expected spiffe://<trust-domain>/ns/<ns>/sa/<sa>",
                            e.identity
                        ),
                    ));
                }
                if !valid_name(&e.cluster) {
                    return Err(ConfigError::invalid(format!("{f}.endpoints[{j}].cluster"), "must be a DNS label"));
                }
                if !(1..=MAX_ENDPOINT_WEIGHT).contains(&e.weight) {
                    return Err(ConfigError::invalid(
                        format!("{f}.endpoints[{j}].weight"),
                        format!("{} must be 1-{MAX_ENDPOINT_WEIGHT}", e.weight),
                    ));
                }
            }
        }
        if let Some(inb) = &self.inbound {
            let mut ports = HashSet::new();
            for (i, p) in inb.ports.iter().enumerate() {
                if p.port == 0 {
                    return Err(ConfigError::invalid(format!("inbound.ports[{i}].port"), "must be 1-65535"));
                }
                if !ports.insert(p.port) {
                    return Err(ConfigError::invalid(
                        format!("inbound.ports[{i}].port"),
                        format!("port {} is listed twice", p.port),
                    ));
                }
            }
            if let Some(a) = &inb.authorization {
                a.validate().map_err(|e| match e {
                    ConfigError::Invalid { field, message } => {
                        ConfigError::invalid(format!("inbound.authorization.{field}"), message)
                    }
                    other => other,
                })?;
            }
            for (i, ra) in inb.request_authentication.iter().enumerate() {
                crate::request_authn::validate_at(ra, &format!("inbound.request_authentication[{i}]"))?;
            }
        }
        let mut addresses = std::collections::HashMap::new();
        for (i, s) in self.services.iter().enumerate() {
            for (j, e) in s.endpoints.iter().enumerate() {
                if let Some(other) = addresses.insert(e.address, s.key()) {
                    return Err(ConfigError::invalid(
                        format!("services[{i}].endpoints[{j}].address"),
                        format!(
                            "{} is also an endpoint of {other}; an address belongs to one endpoint (transparent mode routes by it)",
                            e.address
                        ),
                    ));
                }
            }
        }
        let mut vips = HashSet::new();
        for (i, v) in self.virtual_ips.iter().enumerate() {
            let f = format!("virtual_ips[{i}]");
            if self.service(&v.service).is_none() {
                return Err(ConfigError::invalid(
                    format!("{f}.service"),
                    format!("no service {:?} in `services`; add it or fix the name", v.service),
                ));
            }
            if v.address.is_loopback() || v.address.is_unspecified() {
                return Err(ConfigError::invalid(
                    format!("{f}.address"),
                    format!(
                        "{} is never intercepted; take one from a reserved range such as 240.240.0.0/16",
                        v.address
                    ),
                ));
            }
            if !vips.insert(v.address) {
                return Err(ConfigError::invalid(format!("{f}.address"), format!("{} names two services", v.address)));
            }
        }
        if let Some(out) = &self.outbound {
            if out.connections_per_peer.is_some_and(|n| n == 0 || n > 64) {
                return Err(ConfigError::invalid("outbound.connections_per_peer", "must be 1-64"));
            }
            if out.transparent.is_none() && out.upstreams.is_empty() {
                return Err(ConfigError::invalid(
                    "outbound",
                    "has neither `transparent` nor `upstreams`: add one, or remove `outbound`",
                ));
            }
            let mut listens = HashSet::new();
            for (i, u) in out.upstreams.iter().enumerate() {
                let f = format!("outbound.upstreams[{i}]");
                // With a control plane, services arrive over the discovery stream.
                if self.control.is_none() && self.service(&u.service).is_none() {
                    let known: Vec<String> = self.services.iter().map(Service::key).collect();
                    return Err(ConfigError::invalid(
                        format!("{f}.service"),
                        format!(
                            "no service {:?} in `services` (known: {}); add it or fix the name",
                            u.service,
                            known.join(", ")
                        ),
                    ));
                }
                if u.listen.port() != 0 && !listens.insert(u.listen) {
                    return Err(ConfigError::invalid(
                        format!("{f}.listen"),
                        format!("{} is used by two upstreams", u.listen),
                    ));
                }
                if u.port == Some(0) {
                    return Err(ConfigError::invalid(format!("{f}.port"), "must be 1-65535"));
                }
            }
        }
        if self.limits.max_header_bytes < 8192 {
            return Err(ConfigError::invalid(
                "limits.max_header_bytes",
                "must be at least 8192 (the smallest HTTP/1 read buffer)",
            ));
        }
        self.limits.check()?;
        self.outlier_detection.check("outlier_detection")?;
        if let Some(t) = &self.tracing {
            t.validate("tracing")?;
        }
        for (field, d, min) in [
            (
                "identity.reload_interval",
                self.identity.as_ref().map(|i| i.reload_interval).unwrap_or(DEFAULT_RELOAD_INTERVAL),
                Duration::from_millis(100),
            ),
            ("timeouts.detect", self.timeouts.detect, Duration::from_millis(1)),
            ("timeouts.connect", self.timeouts.connect, Duration::from_millis(1)),
            ("timeouts.header_read", self.timeouts.header_read, Duration::from_millis(1)),
            // Shorter would fail healthy connections whenever a PONG is a little late.
            ("timeouts.peer_keepalive", self.timeouts.peer_keepalive, Duration::from_millis(100)),
            ("timeouts.peer_keepalive_timeout", self.timeouts.peer_keepalive_timeout, Duration::from_millis(100)),
        ] {
            if d < min {
                return Err(ConfigError::invalid(field, format!("{d} is too short: must be at least {min}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
identity: { cert: c.pem, key: k.pem, bundle: b.pem }
inbound: { listen: "127.0.0.1:0", ports: [{ port: 8080, protocol: http1 }] }
outbound:
  upstreams: [{ listen: "127.0.0.1:0", service: api.prod, port: 80 }]
services:
  - name: api
    namespace: prod
    endpoints:
      - { address: "127.0.0.1:8081", identity: "spiffe://td/ns/prod/sa/api", labels: { version: v1 } }
"#;

    #[test]
    fn parses_with_defaults() {
        let c = ProxyConfig::from_yaml(GOOD).unwrap();
        assert_eq!(c.mode, Mode::Sidecar);
        assert_eq!(c.cluster, "local");
        assert_eq!(c.timeouts.detect, DEFAULT_DETECT_TIMEOUT);
        assert_eq!(c.service("api.prod").unwrap().endpoints[0].labels["version"], "v1");
        assert!(c.service("api").is_none(), "bare name means namespace default");
    }

    #[test]
    fn a_proxy_id_the_control_plane_would_refuse_is_refused_here() {
        let with = |id: &str| {
            ProxyConfig::from_yaml(&format!(
                "control: {{ address: \"127.0.0.1:1\", token: t, proxy_id: {id:?} }}\noutbound: {{ transparent: \"127.0.0.1:0\" }}\n"
            ))
        };
        assert!(with("web-1.pod:7").is_ok());
        for bad in ["", "a b", "a\nb", &"x".repeat(129)] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.starts_with("control.proxy_id"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn limits_default_and_inconsistent_ones_are_named() {
        let c = ProxyConfig::from_yaml(GOOD).unwrap();
        assert_eq!(c.limits.max_concurrent_streams, DEFAULT_MAX_CONCURRENT_STREAMS);
        assert_eq!(c.limits.proxy_buffer_bytes, DEFAULT_PROXY_BUFFER_BYTES);
        assert_eq!(c.limits.max_connections, DEFAULT_MAX_CONNECTIONS);
        let with = |limits: &str| ProxyConfig::from_yaml(&format!("{GOOD}limits: {{ {limits} }}\n"));
        assert!(with("stream_buffer_bytes: 65536, connection_buffer_bytes: 1048576").is_ok());
        for (limits, field) in [
            ("max_concurrent_streams: 0", "limits.max_concurrent_streams"),
            ("max_connections: 0", "limits.max_connections"),
            ("max_connections: 2000000", "limits.max_connections"),
            ("stream_buffer_bytes: 1000", "limits.stream_buffer_bytes"),
            ("connection_buffer_bytes: 100000", "limits.connection_buffer_bytes"),
            ("proxy_buffer_bytes: 1048576", "limits.proxy_buffer_bytes"),
            ("connection_header_bytes: 1000", "limits.connection_header_bytes"),
        ] {
            let err = with(limits).unwrap_err().to_string();
            assert!(err.starts_with(field), "{limits}: {err}");
        }
    }

    #[test]
    fn bad_virtual_ips_are_named() {
        let with = |vips: &str| ProxyConfig::from_yaml(&format!("{GOOD}virtual_ips: {vips}\n"));
        let ok = with(
            "[{ service: api.prod, address: 240.240.0.1 }, { service: api.prod, cluster: west, address: 240.240.0.2 }]",
        );
        assert_eq!(ok.unwrap().virtual_ips.len(), 2);
        for (vips, field) in [
            ("[{ service: nope, address: 240.240.0.1 }]", "virtual_ips[0].service"),
            ("[{ service: api.prod, address: 127.0.0.1 }]", "virtual_ips[0].address"),
            (
                "[{ service: api.prod, address: 240.240.0.1 }, { service: api.prod, address: 240.240.0.1 }]",
                "virtual_ips[1].address",
            ),
        ] {
            let err = with(vips).unwrap_err().to_string();
            assert!(err.contains(field), "{vips}: {err}");
        }
        assert!(with("[{ service: api.prod, address: nope }]").is_err());
    }

    #[test]
    fn unknown_field_is_named() {
        let err = ProxyConfig::from_yaml(&GOOD.replace("protocol: http1", "protocl: http1")).unwrap_err();
        assert!(err.to_string().contains("unknown field `protocl`"), "{err}");
    }

    #[test]
    fn dangling_upstream_is_refused_with_field_path() {
        let err = ProxyConfig::from_yaml(&GOOD.replace("service: api.prod", "service: nope")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("outbound.upstreams[0].service"), "{msg}");
        assert!(msg.contains("api.prod"), "lists known services: {msg}");
    }

    #[test]
    fn bad_identity_and_names_refused() {
        let err = ProxyConfig::from_yaml(&GOOD.replace("spiffe://td", "https://td")).unwrap_err();
        assert!(err.to_string().contains("services[0].endpoints[0].identity"), "{err}");
        let err = ProxyConfig::from_yaml(&GOOD.replace("name: api", "name: API")).unwrap_err();
        assert!(err.to_string().contains("services[0].name"), "{err}");
        assert!(ProxyConfig::from_yaml("identity: [").is_err());
        assert!(ProxyConfig::from_yaml("").is_err());
    }

    #[test]
    fn transparent_mode_marks_by_default() {
        let base = "identity: { cert: c, key: k, bundle: b }\n";
        let c = ProxyConfig::from_yaml(&format!("{base}outbound: {{ transparent: '127.0.0.1:15001' }}\n")).unwrap();
        assert_eq!(c.outbound.unwrap().effective_mark(), DEFAULT_MARK, "matches what `init` excludes");
        let c = ProxyConfig::from_yaml(&format!("{base}outbound: {{ transparent: '127.0.0.1:15001', mark: 0 }}\n"))
            .unwrap();
        assert_eq!(c.outbound.unwrap().effective_mark(), 0, "explicit 0: the uid is excluded instead");
        let c = ProxyConfig::from_yaml(&format!(
            "{base}{}",
            GOOD.trim_start().trim_start_matches("identity: { cert: c.pem, key: k.pem, bundle: b.pem }\n")
        ))
        .unwrap();
        assert_eq!(c.outbound.unwrap().effective_mark(), 0, "explicit mode needs no privilege");
    }

    #[test]
    fn durations_empty_outbound_and_shared_addresses_are_refused() {
        let err = ProxyConfig::from_yaml(&GOOD.replace("bundle: b.pem }", "bundle: b.pem, reload_interval: 0 }"))
            .unwrap_err();
        assert!(err.to_string().starts_with("identity.reload_interval"), "{err}");
        let err = ProxyConfig::from_yaml(&format!("{GOOD}timeouts: {{ connect: 0 }}\n")).unwrap_err();
        assert!(err.to_string().starts_with("timeouts.connect"), "{err}");
        let err = ProxyConfig::from_yaml(&format!("{GOOD}timeouts: {{ peer_keepalive_timeout: 10ms }}\n")).unwrap_err();
        assert!(err.to_string().starts_with("timeouts.peer_keepalive_timeout"), "{err}");
        assert!(err.to_string().contains("at least 100ms"), "{err}");
        let c = ProxyConfig::from_yaml(&format!("{GOOD}timeouts: {{ peer_keepalive: 5s }}\n")).unwrap();
        assert_eq!(c.timeouts.peer_keepalive, Duration::from_secs(5));
        assert_eq!(c.timeouts.peer_keepalive_timeout, DEFAULT_PEER_KEEPALIVE_TIMEOUT);
        let err = ProxyConfig::from_yaml("identity: { cert: c, key: k, bundle: b }\noutbound: {}\n").unwrap_err();
        assert!(err.to_string().starts_with("outbound:"), "{err}");
        let dup = format!(
            "{GOOD}  - name: db\n    endpoints: [{{ address: \"127.0.0.1:8081\", identity: \"spiffe://td/ns/default/sa/db\" }}]\n"
        );
        let err = ProxyConfig::from_yaml(&dup).unwrap_err();
        assert!(
            err.to_string().contains("services[1].endpoints[0].address") && err.to_string().contains("api.prod"),
            "{err}"
        );
    }

    #[test]
    fn mode_rules() {
        let gw = "mode: gateway\nidentity: { cert: c, key: k, bundle: b }\n";
        let err = ProxyConfig::from_yaml(gw).unwrap_err();
        assert!(err.to_string().starts_with("gateway:"), "{err}");
        assert!(ProxyConfig::from_yaml(&format!("{gw}gateway: {{}}\n")).is_ok());
        let cfg = ProxyConfig::from_yaml(&format!("{gw}gateway: {{ control_plane: \"10.0.0.5:15012\" }}\n")).unwrap();
        let g = cfg.gateway.unwrap();
        assert_eq!(g.control_plane_addr(None), Some("10.0.0.5:15012".parse().unwrap()));
        let err =
            ProxyConfig::from_yaml(&format!("{gw}gateway: {{ control_plane: \"0.0.0.0:15012\" }}\n")).unwrap_err();
        assert!(err.to_string().starts_with("gateway.control_plane:"), "{err}");
        let err = ProxyConfig::from_yaml(&format!("{gw}gateway: {{ control_plane: \"cp:15012\" }}\n")).unwrap_err();
        assert!(err.to_string().contains("socket address syntax at line 3"), "{err}");
    }
}
