//! Declarative resources in Kubernetes shape: `apiVersion`, `kind`, `metadata`, `spec`.
//!
//! Reading is two-step so that errors name the exact field: the envelope ([`Object`]) is read
//! from YAML/JSON (line and column on error), then its `spec` is read into the kind's typed spec
//! ([`Resource`]) with the path of any bad field (`spec.ports[0].port`), then validated.

use crate::kinds::{LinkSpec, MeshConfigSpec, ServiceSpec, WorkloadSpec};
use crate::request_authn::RequestAuthenticationSpec;
use crate::resilience::ResiliencePolicySpec;
use crate::route::{GrpcRouteSpec, HttpRouteSpec, RouteSpec, TcpRouteSpec};
use crate::{valid_name, ConfigError};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub const API_VERSION: &str = "weft.io/v1alpha1";
pub const DEFAULT_NAMESPACE: &str = "default";

/// The kinds of resource weft knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub enum Kind {
    /// Mesh-wide settings: trust domain, this cluster's name, network and locality.
    MeshConfig,
    /// A named service: its ports and tags. Workloads register instances of it.
    Service,
    /// One instance of a service (a registration): address, port, identity, health checks.
    Workload,
    /// A link to another cluster (`weft link apply`): its control plane's address, the root to
    /// verify it with and the link secret it issued. The name is the peer cluster's.
    Link,
    /// Gateway API HTTPRoute: HTTP routing for calls to a Service (docs/traffic.md).
    HTTPRoute,
    /// Gateway API GRPCRoute: gRPC routing by service and method.
    GRPCRoute,
    /// Gateway API TCPRoute: weighted per-connection shifting of TCP.
    TCPRoute,
    /// How callers treat a Service's endpoints: load balancer, connection limits, outlier
    /// detection (`spec.targetRef` names the Service).
    BackendPolicy,
    /// Retries with a budget, timeouts, fault injection and a local rate limit for one Service
    /// or HTTPRoute rule (`spec.targetRef`).
    ResiliencePolicy,
    /// Whether workloads require mTLS from callers (STRICT, PERMISSIVE, DISABLE) for a
    /// namespace, a Service's workloads, a Workload or one of its ports.
    PeerAuthentication,
    /// Who may call a workload, and what: ALLOW, DENY, AUDIT or CUSTOM rules (docs/security.md).
    AuthorizationPolicy,
    /// Which JWTs a workload accepts on inbound HTTP requests: issuers, keys (JWKS or OpenID
    /// Connect discovery), audiences (docs/security.md).
    RequestAuthentication,
    /// What workloads' proxies record beyond metrics: access logs (docs/observability.md).
    Telemetry,
}

impl Kind {
    pub const ALL: [Kind; 13] = [
        Kind::MeshConfig,
        Kind::Service,
        Kind::Workload,
        Kind::Link,
        Kind::HTTPRoute,
        Kind::GRPCRoute,
        Kind::TCPRoute,
        Kind::BackendPolicy,
        Kind::ResiliencePolicy,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
        Kind::RequestAuthentication,
        Kind::Telemetry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MeshConfig => "MeshConfig",
            Kind::Service => "Service",
            Kind::Workload => "Workload",
            Kind::Link => "Link",
            Kind::HTTPRoute => "HTTPRoute",
            Kind::GRPCRoute => "GRPCRoute",
            Kind::TCPRoute => "TCPRoute",
            Kind::BackendPolicy => "BackendPolicy",
            Kind::ResiliencePolicy => "ResiliencePolicy",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::Telemetry => "Telemetry",
        }
    }

    /// Accepts `Service`, `service`, `services`, `svc`... as `kubectl` does.
    pub fn parse_loose(s: &str) -> Option<Kind> {
        match s.to_ascii_lowercase().as_str() {
            "meshconfig" | "meshconfigs" | "mc" => Some(Kind::MeshConfig),
            "service" | "services" | "svc" => Some(Kind::Service),
            "workload" | "workloads" | "wl" => Some(Kind::Workload),
            "link" | "links" => Some(Kind::Link),
            "httproute" | "httproutes" => Some(Kind::HTTPRoute),
            "grpcroute" | "grpcroutes" => Some(Kind::GRPCRoute),
            "tcproute" | "tcproutes" => Some(Kind::TCPRoute),
            "backendpolicy" | "backendpolicies" | "bp" => Some(Kind::BackendPolicy),
            "resiliencepolicy" | "resiliencepolicies" | "rp" => Some(Kind::ResiliencePolicy),
            "peerauthentication" | "peerauthentications" | "pa" => Some(Kind::PeerAuthentication),
            "authorizationpolicy" | "authorizationpolicies" | "ap" => Some(Kind::AuthorizationPolicy),
            "requestauthentication" | "requestauthentications" | "ra" => Some(Kind::RequestAuthentication),
            "telemetry" | "telemetries" => Some(Kind::Telemetry),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.into()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Set by the store on every write. Send it back on update to make the write conditional
    /// (optimistic concurrency); omit it to overwrite unconditionally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// The store revision that created the resource (set by the store, kept across updates;
    /// a value sent is ignored). Orders policies on one target: the oldest wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_revision: Option<u64>,
}

/// A resource with its spec still untyped, as read from a file or the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Object {
    pub api_version: String,
    pub kind: Kind,
    pub metadata: Metadata,
    #[serde(default)]
    pub spec: serde_json::Value,
}

/// Identifies a resource: kind, namespace, name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// A resource with its typed, validated spec.
// MeshConfig is the largest spec by far and there is one per mesh; resources are handled per
// write and per catalog build, never per request, so boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Resource {
    MeshConfig(Typed<MeshConfigSpec>),
    Service(Typed<ServiceSpec>),
    Workload(Typed<WorkloadSpec>),
    Link(Typed<LinkSpec>),
    HTTPRoute(Typed<HttpRouteSpec>),
    GRPCRoute(Typed<GrpcRouteSpec>),
    TCPRoute(Typed<TcpRouteSpec>),
    BackendPolicy(Typed<crate::backend_policy::BackendPolicySpec>),
    ResiliencePolicy(Typed<ResiliencePolicySpec>),
    PeerAuthentication(Typed<crate::peer_authentication::PeerAuthenticationSpec>),
    AuthorizationPolicy(Typed<crate::authz::AuthorizationPolicySpec>),
    RequestAuthentication(Typed<RequestAuthenticationSpec>),
    Telemetry(Typed<crate::telemetry::TelemetrySpec>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Typed<S> {
    pub metadata: Metadata,
    pub spec: S,
}

/// Implemented by every spec: rules that span its fields. Errors carry the path below `spec`.
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;
}

fn typed<S: DeserializeOwned + Validate>(meta: Metadata, spec: serde_json::Value) -> Result<Typed<S>, ConfigError> {
    let spec = if spec.is_null() { serde_json::Value::Object(Default::default()) } else { spec };
    let spec: S = serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "spec".to_string() } else { format!("spec.{path}") };
        ConfigError::invalid(field, e.into_inner().to_string())
    })?;
    spec.validate().map_err(|e| match e {
        ConfigError::Invalid { field, message } => ConfigError::invalid(format!("spec.{field}"), message),
        other => other,
    })?;
    Ok(Typed { metadata: meta, spec })
}

impl TryFrom<Object> for Resource {
    type Error = ConfigError;

    fn try_from(o: Object) -> Result<Self, ConfigError> {
        let what = format!("{} {}/{}", o.kind, o.metadata.namespace, o.metadata.name);
        let within = |e: ConfigError| match e {
            ConfigError::Invalid { field, message } => ConfigError::invalid(format!("{what}: {field}"), message),
            other => other,
        };
        if o.api_version != API_VERSION {
            return Err(within(ConfigError::invalid(
                "apiVersion",
                format!("{:?} is not supported; use {API_VERSION}", o.api_version),
            )));
        }
        if !valid_name(&o.metadata.name) {
            return Err(within(ConfigError::invalid(
                "metadata.name",
                "must be a DNS label: lowercase letters, digits and '-', at most 63 characters",
            )));
        }
        if !valid_name(&o.metadata.namespace) {
            return Err(within(ConfigError::invalid("metadata.namespace", "must be a DNS label")));
        }
        let r = match o.kind {
            Kind::MeshConfig => Resource::MeshConfig(typed(o.metadata, o.spec).map_err(within)?),
            Kind::Service => Resource::Service(typed(o.metadata, o.spec).map_err(within)?),
            Kind::Workload => Resource::Workload(typed(o.metadata, o.spec).map_err(within)?),
            Kind::Link => Resource::Link(typed(o.metadata, o.spec).map_err(within)?),
            Kind::HTTPRoute => Resource::HTTPRoute(typed(o.metadata, o.spec).map_err(within)?),
            Kind::GRPCRoute => Resource::GRPCRoute(typed(o.metadata, o.spec).map_err(within)?),
            Kind::TCPRoute => Resource::TCPRoute(typed(o.metadata, o.spec).map_err(within)?),
            Kind::BackendPolicy => Resource::BackendPolicy(typed(o.metadata, o.spec).map_err(within)?),
            Kind::ResiliencePolicy => Resource::ResiliencePolicy(typed(o.metadata, o.spec).map_err(within)?),
            Kind::PeerAuthentication => Resource::PeerAuthentication(typed(o.metadata, o.spec).map_err(within)?),
            Kind::AuthorizationPolicy => Resource::AuthorizationPolicy(typed(o.metadata, o.spec).map_err(within)?),
            Kind::RequestAuthentication => Resource::RequestAuthentication(typed(o.metadata, o.spec).map_err(within)?),
            Kind::Telemetry => Resource::Telemetry(typed(o.metadata, o.spec).map_err(within)?),
        };
        Ok(r)
    }
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::MeshConfig(_) => Kind::MeshConfig,
            Resource::Service(_) => Kind::Service,
            Resource::Workload(_) => Kind::Workload,
            Resource::Link(_) => Kind::Link,
            Resource::HTTPRoute(_) => Kind::HTTPRoute,
            Resource::GRPCRoute(_) => Kind::GRPCRoute,
            Resource::TCPRoute(_) => Kind::TCPRoute,
            Resource::BackendPolicy(_) => Kind::BackendPolicy,
            Resource::ResiliencePolicy(_) => Kind::ResiliencePolicy,
            Resource::PeerAuthentication(_) => Kind::PeerAuthentication,
            Resource::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Resource::RequestAuthentication(_) => Kind::RequestAuthentication,
            Resource::Telemetry(_) => Kind::Telemetry,
        }
    }

    pub fn metadata(&self) -> &Metadata {
        match self {
            Resource::MeshConfig(t) => &t.metadata,
            Resource::Service(t) => &t.metadata,
            Resource::Workload(t) => &t.metadata,
            Resource::Link(t) => &t.metadata,
            Resource::HTTPRoute(t) => &t.metadata,
            Resource::GRPCRoute(t) => &t.metadata,
            Resource::TCPRoute(t) => &t.metadata,
            Resource::BackendPolicy(t) => &t.metadata,
            Resource::ResiliencePolicy(t) => &t.metadata,
            Resource::PeerAuthentication(t) => &t.metadata,
            Resource::AuthorizationPolicy(t) => &t.metadata,
            Resource::RequestAuthentication(t) => &t.metadata,
            Resource::Telemetry(t) => &t.metadata,
        }
    }

    /// The route of a route kind (HTTPRoute, GRPCRoute, TCPRoute).
    pub fn route(&self) -> Option<RouteSpec> {
        match self {
            Resource::HTTPRoute(t) => Some(RouteSpec::HTTPRoute(t.spec.clone())),
            Resource::GRPCRoute(t) => Some(RouteSpec::GRPCRoute(t.spec.clone())),
            Resource::TCPRoute(t) => Some(RouteSpec::TCPRoute(t.spec.clone())),
            _ => None,
        }
    }

    pub fn metadata_mut(&mut self) -> &mut Metadata {
        match self {
            Resource::MeshConfig(t) => &mut t.metadata,
            Resource::Service(t) => &mut t.metadata,
            Resource::Workload(t) => &mut t.metadata,
            Resource::Link(t) => &mut t.metadata,
            Resource::HTTPRoute(t) => &mut t.metadata,
            Resource::GRPCRoute(t) => &mut t.metadata,
            Resource::TCPRoute(t) => &mut t.metadata,
            Resource::BackendPolicy(t) => &mut t.metadata,
            Resource::ResiliencePolicy(t) => &mut t.metadata,
            Resource::PeerAuthentication(t) => &mut t.metadata,
            Resource::AuthorizationPolicy(t) => &mut t.metadata,
            Resource::RequestAuthentication(t) => &mut t.metadata,
            Resource::Telemetry(t) => &mut t.metadata,
        }
    }

    pub fn key(&self) -> Key {
        let m = self.metadata();
        Key { kind: self.kind(), namespace: m.namespace.clone(), name: m.name.clone() }
    }

    /// Back to the untyped envelope (for storage and the API).
    pub fn to_object(&self) -> Object {
        let spec = match self {
            Resource::MeshConfig(t) => serde_json::to_value(&t.spec),
            Resource::Service(t) => serde_json::to_value(&t.spec),
            Resource::Workload(t) => serde_json::to_value(&t.spec),
            Resource::Link(t) => serde_json::to_value(&t.spec),
            Resource::HTTPRoute(t) => serde_json::to_value(&t.spec),
            Resource::GRPCRoute(t) => serde_json::to_value(&t.spec),
            Resource::TCPRoute(t) => serde_json::to_value(&t.spec),
            Resource::BackendPolicy(t) => serde_json::to_value(&t.spec),
            Resource::ResiliencePolicy(t) => serde_json::to_value(&t.spec),
            Resource::PeerAuthentication(t) => serde_json::to_value(&t.spec),
            Resource::AuthorizationPolicy(t) => serde_json::to_value(&t.spec),
            Resource::RequestAuthentication(t) => serde_json::to_value(&t.spec),
            Resource::Telemetry(t) => serde_json::to_value(&t.spec),
        }
        .unwrap_or_default();
        Object { api_version: API_VERSION.into(), kind: self.kind(), metadata: self.metadata().clone(), spec }
    }
}

/// Most resources one apply (one request, one file) may hold: YAML documents or JSON array items.
/// It bounds the work one request can cause; a bigger set goes in several applies.
pub const MAX_DOCUMENTS: usize = 1024;

fn too_many(what: String) -> ConfigError {
    ConfigError::Parse(format!(
        "too many resources: {what}, and one apply takes at most {MAX_DOCUMENTS}; split the file and apply \
         the parts one after another (each part is all or nothing by itself)"
    ))
}

/// A YAML error as one line with its line and column: the document limit in words, without the
/// source snippet serde-saphyr can draw below it (the position says where) and without the
/// `error: ` it starts with (the CLI and the API add their own).
pub(crate) fn yaml_error(e: serde_saphyr::Error) -> ConfigError {
    use serde_saphyr::budget::BudgetBreach;
    let e = e.without_snippet();
    if let serde_saphyr::Error::Budget { breach: BudgetBreach::Documents { documents }, .. } = e {
        return too_many(format!("document {documents} is past the limit"));
    }
    let text = e.to_string();
    ConfigError::Parse(text.trim().strip_prefix("error: ").unwrap_or(text.trim()).to_string())
}

/// Parses one or more resources from YAML (documents separated by `---`) or JSON (one object,
/// or an array), at most [`MAX_DOCUMENTS`]. All are checked; the first error is returned and
/// nothing is accepted.
pub fn parse_documents(text: &str) -> Result<Vec<Resource>, ConfigError> {
    let trimmed = text.trim_start();
    let objects: Vec<Object> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| ConfigError::Parse(format!("JSON: {e}")))?;
        let items = match v {
            serde_json::Value::Array(items) => items,
            one => vec![one],
        };
        if items.len() > MAX_DOCUMENTS {
            return Err(too_many(format!("{} items in the JSON array", items.len())));
        }
        items
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                serde_path_to_error::deserialize(v).map_err(|e| {
                    let path = e.path().to_string();
                    ConfigError::Parse(format!("document {}: {path}: {}", i + 1, e.into_inner()))
                })
            })
            .collect::<Result<_, _>>()?
    } else {
        let mut budget = serde_saphyr::Budget::default();
        budget.max_documents = MAX_DOCUMENTS;
        let mut options = serde_saphyr::Options::default();
        options.budget = Some(budget);
        serde_saphyr::from_multiple_with_options(text, options).map_err(yaml_error)?
    };
    if objects.is_empty() {
        return Err(ConfigError::Parse("no resources found: the input is empty".into()));
    }
    objects.into_iter().map(Resource::try_from).collect()
}

/// Rules across resources, checked on the whole set that a write would leave behind: a Workload
/// names an existing Service in its namespace; an alias check names an existing Workload; there
/// is at most one MeshConfig. `all` is every resource after the write.
pub fn check_references<'a>(all: impl IntoIterator<Item = &'a Resource> + Clone) -> Result<(), ConfigError> {
    use std::collections::HashSet;
    let mut services = HashSet::new();
    let mut workloads = HashSet::new();
    let mut mesh = None;
    for r in all.clone() {
        let m = r.metadata();
        match r {
            Resource::Service(_) => {
                services.insert((m.namespace.as_str(), m.name.as_str()));
            }
            Resource::Workload(_) => {
                workloads.insert((m.namespace.as_str(), m.name.as_str()));
            }
            // Routes name Services they may not find: accepted, with a status condition
            // (`route::conditions`), as the Gateway API does.
            Resource::Link(_)
            | Resource::HTTPRoute(_)
            | Resource::GRPCRoute(_)
            | Resource::TCPRoute(_)
            | Resource::BackendPolicy(_)
            | Resource::ResiliencePolicy(_)
            | Resource::PeerAuthentication(_)
            | Resource::AuthorizationPolicy(_)
            | Resource::RequestAuthentication(_)
            | Resource::Telemetry(_) => {}
            Resource::MeshConfig(_) => {
                if let Some(first) = mesh.replace(r.key()) {
                    return Err(ConfigError::invalid(
                        format!("{}: metadata.name", r.key()),
                        format!("a mesh has one MeshConfig and {first} exists; edit that one instead"),
                    ));
                }
            }
        }
    }
    crate::authz::check_l4_ports(all.clone())?;
    // Two workloads at one address and port (on one network) would be one endpoint twice: a
    // proxy intercepting a connection to it could not tell which identity to expect.
    let mut at: std::collections::HashMap<(&str, std::net::IpAddr, u16), Key> = Default::default();
    for r in all.clone() {
        if let Resource::Workload(w) = r {
            let network = w.spec.network.as_deref().unwrap_or("");
            if let Some(first) = at.insert((network, w.spec.address, w.spec.port), r.key()) {
                let (a, b) = if first < r.key() { (first, r.key()) } else { (r.key(), first) };
                return Err(ConfigError::invalid(
                    format!("{b}: spec.address"),
                    format!(
                        "{}:{} is already the address and port of {a}; two workloads cannot share one (change one, or delete {a})",
                        w.spec.address, w.spec.port
                    ),
                ));
            }
        }
    }
    for r in all {
        if let Resource::Workload(w) = r {
            let ns = w.metadata.namespace.as_str();
            if !services.contains(&(ns, w.spec.service.as_str())) {
                return Err(ConfigError::invalid(
                    format!("{}: spec.service", r.key()),
                    format!("no Service {ns}/{} exists; apply the Service first (or in the same file)", w.spec.service),
                ));
            }
            for (i, c) in w.spec.checks.iter().enumerate() {
                if let Some(alias) = &c.alias {
                    if !workloads.contains(&(ns, alias.as_str())) {
                        return Err(ConfigError::invalid(
                            format!("{}: spec.checks[{i}].alias", r.key()),
                            format!("no Workload {ns}/{alias} to mirror"),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: weft.io/v1alpha1
kind: Service
metadata: { name: api }
spec:
  ports: [{ port: 8080, protocol: http1 }]
  tags: [v1]
---
apiVersion: weft.io/v1alpha1
kind: Workload
metadata: { name: api-1, labels: { version: v1 } }
spec:
  service: api
  address: 10.0.0.5
  port: 8080
  checks:
    - { name: http, http: "http://10.0.0.5:8080/health", interval: 5s }
    - { name: ttl, ttl: 30s }
"#;

    #[test]
    fn parses_multi_document_yaml_and_json() {
        let rs = parse_documents(GOOD).unwrap();
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].key().to_string(), "Service default/api");
        let Resource::Workload(w) = &rs[1] else { panic!("workload") };
        assert_eq!(w.spec.service_account(), "api");
        assert_eq!(w.spec.checks[0].interval(), crate::Duration::from_secs(5));
        assert_eq!(w.spec.checks[1].interval(), crate::Duration::from_secs(10));
        check_references(rs.iter()).unwrap();
        let json = serde_json::to_string(&rs.iter().map(Resource::to_object).collect::<Vec<_>>()).unwrap();
        assert_eq!(parse_documents(&json).unwrap(), rs, "JSON round trip");
    }

    #[test]
    fn mesh_gateways_are_checked_and_named() {
        let mesh = |gws: &str| {
            parse_documents(&format!(
                "apiVersion: weft.io/v1alpha1\nkind: MeshConfig\nmetadata: {{ name: mesh }}\nspec: {{ cluster: {{ name: west, network: net-west, gateways: [{gws}] }} }}\n"
            ))
        };
        let Resource::MeshConfig(m) = &mesh("\"203.0.113.7:15443\", \"[2001:db8::1]:15443\"").unwrap()[0] else {
            panic!("mesh")
        };
        assert_eq!(m.spec.cluster.gateways.len(), 2);
        let err = mesh("\"gw.example:15443\"").unwrap_err().to_string();
        assert!(err.contains("spec.cluster.gateways[0]") && err.contains("not ip:port"), "{err}");
        let err = mesh("\"203.0.113.7:15443\", \"0.0.0.0:15443\"").unwrap_err().to_string();
        assert!(err.contains("spec.cluster.gateways[1]") && err.contains("another network"), "{err}");
        let err = mesh("\"203.0.113.7:15443\", \"203.0.113.7:15443\"").unwrap_err().to_string();
        assert!(err.contains("spec.cluster.gateways[1]") && err.contains("twice"), "{err}");
        // Older MeshConfigs (no gateways) still read.
        assert!(parse_documents("apiVersion: weft.io/v1alpha1\nkind: MeshConfig\nmetadata: { name: mesh }\nspec: { cluster: { name: west } }\n").is_ok());
    }

    #[test]
    fn errors_name_the_resource_and_field() {
        let err = parse_documents(&GOOD.replace("port: 8080, protocol", "port: 0, protocol")).unwrap_err();
        assert_eq!(err.to_string(), "Service default/api: spec.ports[0].port: must be 1-65535");
        let err = parse_documents(&GOOD.replace("tags: [v1]", "tagz: [v1]")).unwrap_err();
        assert!(err.to_string().starts_with("Service default/api: spec.tagz: unknown field `tagz`"), "{err}");
        let err = parse_documents(&GOOD.replace("address: 10.0.0.5", "address: ten")).unwrap_err();
        assert!(err.to_string().starts_with("Workload default/api-1: spec.address"), "{err}");
        let err =
            parse_documents(&GOOD.replace("{ name: ttl, ttl: 30s }", "{ name: ttl, ttl: 30s, tcp: \"1.2.3.4:5\" }"))
                .unwrap_err();
        assert!(err.to_string().contains("spec.checks[1].http: set exactly one of"), "{err}");
        let err =
            parse_documents(&GOOD.replace("weft.io/v1alpha1\nkind: Service", "weft.io/v2\nkind: Service")).unwrap_err();
        assert!(err.to_string().contains("apiVersion"), "{err}");
        let err = parse_documents(&GOOD.replace("kind: Service", "kind: Servise")).unwrap_err();
        assert!(err.to_string().contains("Servise"), "{err}");
        assert!(parse_documents("").is_err());
        assert!(parse_documents("{").is_err());
    }

    #[test]
    fn more_than_max_documents_is_refused_in_words() {
        let one = "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\n";
        let yaml = vec![one; MAX_DOCUMENTS + 1].join("---\n");
        let err = parse_documents(&yaml).unwrap_err().to_string();
        assert!(err.starts_with("too many resources: document 1025") && err.contains("at most 1024"), "{err}");
        let json =
            serde_json::json!({ "apiVersion": "weft.io/v1alpha1", "kind": "Service", "metadata": { "name": "api" } });
        let array = serde_json::Value::Array(vec![json; MAX_DOCUMENTS + 1]).to_string();
        let err = parse_documents(&array).unwrap_err().to_string();
        assert!(err.starts_with("too many resources: 1025 items") && err.contains("split"), "{err}");
    }

    #[test]
    fn references_are_checked_across_the_set() {
        let rs = parse_documents(&GOOD.replace("service: api", "service: nope")).unwrap();
        let err = check_references(rs.iter()).unwrap_err();
        assert!(err.to_string().starts_with("Workload default/api-1: spec.service: no Service default/nope"), "{err}");
        let rs = parse_documents(&GOOD.replace("{ name: ttl, ttl: 30s }", "{ name: a, alias: ghost }")).unwrap();
        assert!(check_references(rs.iter()).unwrap_err().to_string().contains("no Workload default/ghost"));
    }
}
