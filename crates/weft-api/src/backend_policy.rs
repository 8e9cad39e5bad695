//! `BackendPolicy`: how callers' proxies treat the endpoints of one Service — the load balancer,
//! connection limits (circuit breaking) and outlier detection. The Gateway API has no such kind;
//! the shape follows its policy attachment (`spec.targetRef: {kind: Service, name}`), as
//! Envoy Gateway's `BackendTrafficPolicy` does. docs/traffic.md has the worked example; the proxy
//! applies it in `weft-proxy`'s `balance` module.
//!
//! ```text
//! BackendPolicy ─targetRef─► Service ─(control plane: oldest policy wins)─► ProxyUpdate.Service
//!   .backend_policy (balancer, limits) + .outlier_detection (policy fields over the Service's)
//! ```

use crate::resource::Validate;
use crate::traffic::ServiceOutlierDetection;
use crate::{valid_name, ConfigError, Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Points on the hash ring per unit of endpoint weight (Ketama gives each server 160). Fixed
/// per endpoint, so an endpoint joining or leaving moves only its own keys.
pub const DEFAULT_RING_SIZE: u32 = 256;
pub const MAX_RING_SIZE: u32 = 4096;
/// The most points a ring holds; above it the points per weight shrink to fit.
pub const MAX_RING_POINTS: u64 = 1 << 22;
/// Entries of a Maglev lookup table (a prime; Envoy's default).
pub const DEFAULT_MAGLEV_TABLE_SIZE: u32 = 65_537;
pub const MAX_MAGLEV_TABLE_SIZE: u32 = 5_000_011;
/// How long a hash cookie the proxy sets lives.
pub const DEFAULT_COOKIE_TTL: Duration = Duration::from_secs(3600);

/// The Service a policy applies to (Gateway API `LocalPolicyTargetReference`; same namespace).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetRef {
    /// Empty or `weft.io` (the Gateway API's core group `""` is accepted too).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// `Service`.
    pub kind: String,
    pub name: String,
}

/// The load balancing algorithm within a locality tier (the tiers, failover and cluster weights
/// choose the tier first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Algorithm {
    /// Each endpoint in turn, in proportion to its weight (the default).
    #[default]
    RoundRobin,
    /// A uniformly random endpoint, in proportion to its weight.
    Random,
    /// Power of two choices: of two endpoints drawn by weight, the one with fewer requests in
    /// flight.
    LeastRequest,
    /// Consistent hashing on a ring (Ketama): a key keeps its endpoint, and an endpoint leaving
    /// moves only its own keys. Needs `hashOn`.
    RingHash,
    /// Consistent hashing with a Maglev lookup table: a flatter spread than the ring and an
    /// O(1) lookup. Needs `hashOn`.
    Maglev,
    /// Linkerd's latency-aware balancer: of two endpoints drawn by weight, the one with the lower
    /// peak-sensitive moving average of latency times requests in flight.
    #[serde(rename = "PeakEWMA", alias = "PeakEwma")]
    PeakEwma,
}

/// What a consistent hash is taken over; exactly one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HashOn {
    /// A request header's value (requests without it are spread like `Random`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A cookie's value; the proxy sets the cookie on the response when the request has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<HashCookie>,
    /// The calling app's IP address.
    #[serde(default, rename = "sourceIP", alias = "source_ip", skip_serializing_if = "std::ops::Not::not")]
    pub source_ip: bool,
    /// A query parameter's value (requests without it are spread like `Random`).
    #[serde(default, alias = "query_parameter", skip_serializing_if = "Option::is_none")]
    pub query_parameter: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HashCookie {
    pub name: String,
    /// Lifetime of a cookie the proxy sets (`Max-Age`). Default 1h.
    #[serde(default = "d_ttl")]
    pub ttl: Duration,
    /// The cookie's `Path`. Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

fn d_ttl() -> Duration {
    DEFAULT_COOKIE_TTL
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancer {
    /// Default `RoundRobin`.
    #[serde(default, rename = "type")]
    pub algorithm: Algorithm,
    /// The hash key of `RingHash` and `Maglev`.
    #[serde(default, alias = "hash_on", skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<HashOn>,
    /// `RingHash`: points on the ring per unit of endpoint weight (1-4096). Default 256.
    #[serde(default, alias = "ring_size", skip_serializing_if = "Option::is_none")]
    pub ring_size: Option<u32>,
    /// `Maglev`: entries of the lookup table, a prime. Default 65537.
    #[serde(default, alias = "table_size", skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u32>,
}

/// Circuit breaking: limits per backend (per Service, per caller proxy). A request over a limit
/// is answered at once with 503 and `x-weft-overflow: <which limit>`. Unset: no limit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectionLimits {
    /// Connections open to the service's endpoints (TCP streams and tunnels; HTTP shares one
    /// pool of HTTP/2 connections per endpoint).
    #[serde(default, alias = "max_connections", skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Requests waiting for a connection to an endpoint.
    #[serde(default, alias = "max_pending_requests", skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// Requests in flight.
    #[serde(default, alias = "max_requests", skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    /// Retries in flight (counted by the retry policy).
    #[serde(default, alias = "max_retries", skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

/// The resource's spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendPolicySpec {
    /// The Service (same namespace). A missing one is accepted; the policy applies once it
    /// exists, and `weft describe` says so meanwhile.
    pub target_ref: TargetRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_limits: Option<ConnectionLimits>,
    /// Each field set replaces the Service's `outlierDetection` value, which replaces the
    /// proxy's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<ServiceOutlierDetection>,
}

/// What a proxy applies to one service (its config file's `services[].backend_policy`, and the
/// control plane's rendering of the policy in force).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendPolicy {
    /// The BackendPolicy resource's name, when it came from one (for `/config_dump`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_limits: Option<ConnectionLimits>,
}

/// A header or cookie name: an RFC 9110 token.
fn token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_prime(n: u32) -> bool {
    n >= 2 && (2..).take_while(|d: &u32| u64::from(*d) * u64::from(*d) <= u64::from(n)).all(|d| !n.is_multiple_of(d))
}

impl LoadBalancer {
    /// `f` is where the block sits (`loadBalancer`).
    pub fn check(&self, f: &str) -> Result<(), ConfigError> {
        let hashing = matches!(self.algorithm, Algorithm::RingHash | Algorithm::Maglev);
        match (&self.hash_on, hashing) {
            (None, true) => {
                return Err(ConfigError::invalid(
                    format!("{f}.hashOn"),
                    format!(
                        "{:?} needs a hash key: set one of header, cookie, sourceIP or queryParameter",
                        self.algorithm
                    ),
                ))
            }
            (Some(_), false) => {
                return Err(ConfigError::invalid(
                    format!("{f}.hashOn"),
                    format!("is used only by RingHash and Maglev, not {:?}; remove it or change type", self.algorithm),
                ))
            }
            (Some(h), true) => h.check(&format!("{f}.hashOn"))?,
            (None, false) => {}
        }
        if let Some(n) = self.ring_size {
            if self.algorithm != Algorithm::RingHash {
                return Err(ConfigError::invalid(format!("{f}.ringSize"), "is used only by RingHash"));
            }
            if !(1..=MAX_RING_SIZE).contains(&n) {
                return Err(ConfigError::invalid(format!("{f}.ringSize"), format!("{n} must be 1-{MAX_RING_SIZE}")));
            }
        }
        if let Some(n) = self.table_size {
            if self.algorithm != Algorithm::Maglev {
                return Err(ConfigError::invalid(format!("{f}.tableSize"), "is used only by Maglev"));
            }
            if !(101..=MAX_MAGLEV_TABLE_SIZE).contains(&n) || !is_prime(n) {
                return Err(ConfigError::invalid(
                    format!("{f}.tableSize"),
                    format!("{n} must be a prime between 101 and {MAX_MAGLEV_TABLE_SIZE} (e.g. 65537 or 655373)"),
                ));
            }
        }
        Ok(())
    }
}

impl HashOn {
    fn check(&self, f: &str) -> Result<(), ConfigError> {
        let set = [self.header.is_some(), self.cookie.is_some(), self.source_ip, self.query_parameter.is_some()];
        let n = set.iter().filter(|s| **s).count();
        if n != 1 {
            return Err(ConfigError::invalid(
                f,
                format!("sets {n} keys; set exactly one of header, cookie, sourceIP or queryParameter"),
            ));
        }
        if let Some(h) = &self.header {
            if !token(h) {
                return Err(ConfigError::invalid(format!("{f}.header"), format!("{h:?} is not a valid header name")));
            }
        }
        if let Some(c) = &self.cookie {
            if !token(&c.name) {
                return Err(ConfigError::invalid(
                    format!("{f}.cookie.name"),
                    format!("{:?} is not a valid cookie name", c.name),
                ));
            }
            if c.ttl < Duration::from_secs(1) {
                return Err(ConfigError::invalid(format!("{f}.cookie.ttl"), "must be at least 1s"));
            }
            if let Some(p) = &c.path {
                if !p.starts_with('/') || p.bytes().any(|b| b.is_ascii_control() || b == b';' || b == b' ') {
                    return Err(ConfigError::invalid(
                        format!("{f}.cookie.path"),
                        format!("{p:?} must start with '/' and hold no ';', space or control characters"),
                    ));
                }
            }
        }
        if let Some(q) = &self.query_parameter {
            if q.is_empty() || q.bytes().any(|b| b.is_ascii_control() || b"&=# ".contains(&b)) {
                return Err(ConfigError::invalid(
                    format!("{f}.queryParameter"),
                    format!("{q:?} is not a query parameter name"),
                ));
            }
        }
        Ok(())
    }
}

impl ConnectionLimits {
    pub fn check(&self, f: &str) -> Result<(), ConfigError> {
        let fields = [
            ("maxConnections", self.max_connections),
            ("maxPendingRequests", self.max_pending_requests),
            ("maxRequests", self.max_requests),
            ("maxRetries", self.max_retries),
        ];
        for (name, v) in fields {
            if v == Some(0) {
                return Err(ConfigError::invalid(
                    format!("{f}.{name}"),
                    "0 would refuse everything; set 1 or more, or leave it out for no limit",
                ));
            }
        }
        Ok(())
    }
}

impl BackendPolicy {
    /// `f` is where the block sits (`services[0].backend_policy`).
    pub fn check(&self, f: &str) -> Result<(), ConfigError> {
        if let Some(lb) = &self.load_balancer {
            lb.check(&format!("{f}.load_balancer"))?;
        }
        if let Some(l) = &self.connection_limits {
            l.check(&format!("{f}.connection_limits"))?;
        }
        Ok(())
    }
}

impl Validate for BackendPolicySpec {
    fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.target_ref;
        if !matches!(t.group.as_str(), "" | "weft.io" | "core") {
            return Err(ConfigError::invalid("targetRef.group", format!("{:?} must be empty or weft.io", t.group)));
        }
        if t.kind != "Service" {
            return Err(ConfigError::invalid(
                "targetRef.kind",
                format!("{:?} cannot carry a BackendPolicy; use kind: Service", t.kind),
            ));
        }
        if !valid_name(&t.name) {
            return Err(ConfigError::invalid("targetRef.name", "must be a Service name (a DNS label)"));
        }
        if let Some(lb) = &self.load_balancer {
            lb.check("loadBalancer")?;
        }
        if let Some(l) = &self.connection_limits {
            l.check("connectionLimits")?;
        }
        if let Some(o) = &self.outlier_detection {
            o.check()?;
        }
        if self.load_balancer.is_none() && self.connection_limits.is_none() && self.outlier_detection.is_none() {
            return Err(ConfigError::invalid(
                "loadBalancer",
                "the policy sets nothing; set loadBalancer, connectionLimits or outlierDetection",
            ));
        }
        Ok(())
    }
}

impl BackendPolicySpec {
    /// What proxies apply, named after the resource.
    pub fn effective(&self, name: &str) -> BackendPolicy {
        BackendPolicy {
            name: name.to_string(),
            load_balancer: self.load_balancer.clone(),
            connection_limits: self.connection_limits.clone(),
        }
    }
}

/// The wire form (`ProxyUpdate.services[].backend_policy`).
impl From<&BackendPolicy> for crate::pb::BackendPolicy {
    fn from(p: &BackendPolicy) -> Self {
        let ms = |d: Duration| std::time::Duration::from(d).as_millis() as u64;
        crate::pb::BackendPolicy {
            name: p.name.clone(),
            load_balancer: p.load_balancer.as_ref().map(|lb| {
                let h = lb.hash_on.clone().unwrap_or_default();
                crate::pb::LoadBalancer {
                    r#type: serde_json::to_value(lb.algorithm)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    hash_header: h.header.unwrap_or_default(),
                    hash_cookie: h.cookie.as_ref().map(|c| c.name.clone()).unwrap_or_default(),
                    hash_cookie_ttl_ms: h.cookie.as_ref().map_or(0, |c| ms(c.ttl)),
                    hash_cookie_path: h.cookie.as_ref().and_then(|c| c.path.clone()).unwrap_or_default(),
                    hash_source_ip: h.source_ip,
                    hash_query_parameter: h.query_parameter.unwrap_or_default(),
                    ring_size: lb.ring_size,
                    table_size: lb.table_size,
                }
            }),
            connection_limits: p.connection_limits.as_ref().map(|c| crate::pb::ConnectionLimits {
                max_connections: c.max_connections,
                max_pending_requests: c.max_pending_requests,
                max_requests: c.max_requests,
                max_retries: c.max_retries,
            }),
        }
    }
}

impl BackendPolicy {
    /// From the wire; `f` names where it sits (`services[0].backend_policy`) in errors.
    pub fn from_wire(p: &crate::pb::BackendPolicy, f: &str) -> Result<BackendPolicy, ConfigError> {
        let load_balancer = match &p.load_balancer {
            None => None,
            Some(lb) => {
                let algorithm = if lb.r#type.is_empty() {
                    Algorithm::default()
                } else {
                    serde_json::from_value(serde_json::Value::String(lb.r#type.clone())).map_err(|_| {
                        ConfigError::invalid(format!("{f}.load_balancer.type"), format!("unknown type {:?}", lb.r#type))
                    })?
                };
                let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
                let cookie = opt(&lb.hash_cookie).map(|name| HashCookie {
                    name,
                    ttl: if lb.hash_cookie_ttl_ms == 0 {
                        DEFAULT_COOKIE_TTL
                    } else {
                        Duration::from_millis(lb.hash_cookie_ttl_ms)
                    },
                    path: opt(&lb.hash_cookie_path),
                });
                let hash_on = HashOn {
                    header: opt(&lb.hash_header),
                    cookie,
                    source_ip: lb.hash_source_ip,
                    query_parameter: opt(&lb.hash_query_parameter),
                };
                Some(LoadBalancer {
                    algorithm,
                    hash_on: (hash_on != HashOn::default()).then_some(hash_on),
                    ring_size: lb.ring_size,
                    table_size: lb.table_size,
                })
            }
        };
        let out = BackendPolicy {
            name: p.name.clone(),
            load_balancer,
            connection_limits: p.connection_limits.as_ref().map(|c| ConnectionLimits {
                max_connections: c.max_connections,
                max_pending_requests: c.max_pending_requests,
                max_requests: c.max_requests,
                max_retries: c.max_retries,
            }),
        };
        out.check(f)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Result<BackendPolicySpec, String> {
        let s: BackendPolicySpec = serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?;
        s.validate().map_err(|e| e.to_string())?;
        Ok(s)
    }

    #[test]
    fn a_full_policy_reads() {
        let s = spec(
            "targetRef: { kind: Service, name: api }\n\
             loadBalancer: { type: RingHash, hashOn: { cookie: { name: sticky, ttl: 10m } }, ringSize: 512 }\n\
             connectionLimits: { maxRequests: 100, maxPendingRequests: 10 }\n\
             outlierDetection: { consecutiveGatewayErrors: 3, interval: 5s }\n",
        )
        .unwrap();
        let lb = s.load_balancer.unwrap();
        assert_eq!(lb.algorithm, Algorithm::RingHash);
        assert_eq!(lb.hash_on.unwrap().cookie.unwrap().ttl, Duration::from_secs(600));
        assert!(spec("targetRef: { kind: Service, name: api }\nloadBalancer: { type: PeakEWMA }").is_ok());
    }

    #[test]
    fn errors_name_the_field_and_the_fix() {
        let err = |y: &str| spec(y).unwrap_err();
        let t = "targetRef: { kind: Service, name: api }\n";
        assert!(err("targetRef: { kind: HTTPRoute, name: api }\nloadBalancer: {}").starts_with("targetRef.kind"));
        assert!(err(&format!("{t}loadBalancer: {{ type: Maglev }}")).starts_with("loadBalancer.hashOn: Maglev needs"));
        assert!(err(&format!("{t}loadBalancer: {{ type: Random, hashOn: {{ sourceIP: true }} }}"))
            .starts_with("loadBalancer.hashOn: is used only"));
        assert!(err(&format!("{t}loadBalancer: {{ type: Maglev, hashOn: {{ sourceIP: true, header: x }} }}"))
            .starts_with("loadBalancer.hashOn: sets 2 keys"));
        assert!(err(&format!("{t}loadBalancer: {{ type: Maglev, hashOn: {{ header: \"a b\" }} }}"))
            .starts_with("loadBalancer.hashOn.header"));
        assert!(err(&format!("{t}loadBalancer: {{ type: Maglev, hashOn: {{ sourceIP: true }}, tableSize: 1000 }}"))
            .starts_with("loadBalancer.tableSize: 1000 must be a prime"));
        assert!(err(&format!("{t}loadBalancer: {{ type: RingHash, hashOn: {{ sourceIP: true }}, tableSize: 101 }}"))
            .starts_with("loadBalancer.tableSize: is used only by Maglev"));
        assert!(err(&format!("{t}connectionLimits: {{ maxRequests: 0 }}")).starts_with("connectionLimits.maxRequests"));
        assert!(err(&format!("{t}outlierDetection: {{ maxEjectionPercent: 101 }}"))
            .starts_with("outlierDetection.maxEjectionPercent"));
        assert!(err(t).starts_with("loadBalancer: the policy sets nothing"));
        assert!(err(&format!("{t}loadBalancer: {{ type: Fastest }}")).contains("unknown variant"));
    }

    #[test]
    fn the_wire_form_round_trips() {
        let s = spec(
            "targetRef: { kind: Service, name: api }\n\
             loadBalancer: { type: Maglev, hashOn: { cookie: { name: s, ttl: 10m, path: /a } }, tableSize: 101 }\n\
             connectionLimits: { maxRequests: 100, maxRetries: 3 }\n",
        )
        .unwrap();
        let p = s.effective("sticky");
        let wire = crate::pb::BackendPolicy::from(&p);
        assert_eq!(BackendPolicy::from_wire(&wire, "bp").unwrap(), p);
        let mut bad = wire.clone();
        bad.load_balancer.as_mut().unwrap().r#type = "Fastest".into();
        assert!(BackendPolicy::from_wire(&bad, "bp").unwrap_err().to_string().starts_with("bp.load_balancer.type"));
    }

    #[test]
    fn primes() {
        assert!(is_prime(65_537) && is_prime(101) && is_prime(5_000_011));
        assert!(!is_prime(65_536) && !is_prime(1) && !is_prime(1001));
    }
}
