//! Live tap (`weft tap`, `GET /v1/tap`): the JSON shape of one tapped request, the filter the
//! proxy and the control plane both apply, and their conversions to and from the wire
//! (`pb::Tap`, `pb::TapEvent`). One definition, so the proxy, the control plane, the CLI and the
//! dashboard agree on what a filter means.

use crate::pb;
use serde::{Deserialize, Serialize};

/// The most events one tap may ask for (`max`).
pub const MAX_EVENTS: u64 = 10_000;
/// Events one tap gets when it does not say (`max`).
pub const DEFAULT_EVENTS: u64 = 100;
/// The longest a tap may stay open (`seconds`).
pub const MAX_SECONDS: u64 = 600;
/// How long a tap stays open when it does not say (`seconds`).
pub const DEFAULT_SECONDS: u64 = 30;
/// Events a proxy sends per second per tap at most; the rest are dropped and counted.
pub const DEFAULT_PER_SECOND: u32 = 100;
/// The longest filter value accepted.
pub const MAX_FILTER: usize = 256;

/// The caller of a tapped request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// The caller's SPIFFE ID; `None` for a caller outside the mesh (plaintext).
    pub identity: Option<String>,
    /// ip:port the request came from.
    pub address: Option<String>,
}

/// Where a tapped request went.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Destination {
    pub namespace: Option<String>,
    pub service: Option<String>,
    /// ip:port of the endpoint (outbound) or the app (inbound).
    pub endpoint: Option<String>,
    /// The callee's SPIFFE ID, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// One line of `GET /v1/tap` (docs/observability.md, "weft tap and weft top").
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TapEvent {
    pub t_unix_ms: u64,
    pub cluster: String,
    /// The proxy that saw the request (its `proxy_id`).
    pub proxy: String,
    /// `inbound` (the callee's sidecar) or `outbound` (the caller's).
    pub direction: String,
    pub src: Source,
    pub dst: Destination,
    pub method: String,
    pub authority: String,
    pub path: String,
    pub status: u16,
    pub duration_ms: f64,
    pub mtls: bool,
    /// `namespace/name` of the route that matched, if one did.
    pub route: Option<String>,
}

/// Which requests a tap shows. Every field empty: all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapFilter {
    /// The caller: a glob (`*`) or prefix of its identity or of `sa.namespace`.
    pub src: String,
    /// The callee: a glob or prefix of `service.namespace` or of its identity.
    pub dst: String,
    /// A glob or prefix of the path (without the query).
    pub path: String,
    /// The method, exactly (any case).
    pub method: String,
    /// `200` exactly or `5xx` by class.
    pub status: String,
}

impl TapFilter {
    /// Checks every field, naming the bad one and the fix.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("src", &self.src),
            ("dst", &self.dst),
            ("path", &self.path),
            ("method", &self.method),
            ("status", &self.status),
        ] {
            if v.len() > MAX_FILTER {
                return Err(format!("{name}: longer than {MAX_FILTER} characters"));
            }
            if v.chars().any(char::is_control) {
                return Err(format!("{name}: contains control characters"));
            }
        }
        if !self.method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(format!("method: {:?} is not an HTTP method (GET, POST, ...)", self.method));
        }
        if !self.status.is_empty() && status_matcher(&self.status).is_none() {
            return Err(format!("status: {:?} must be a status (200) or a class (5xx)", self.status));
        }
        Ok(())
    }

    /// Whether `e` passes every filter.
    pub fn matches(&self, e: &TapEvent) -> bool {
        let src = || {
            let id = e.src.identity.as_deref().unwrap_or("");
            glob(&self.src, id) || sa_namespace(id).is_some_and(|n| glob(&self.src, &n))
        };
        let dst = || {
            let named = match (&e.dst.service, &e.dst.namespace) {
                (Some(s), Some(ns)) => glob(&self.dst, &format!("{s}.{ns}")),
                _ => false,
            };
            named || e.dst.identity.as_deref().is_some_and(|id| glob(&self.dst, id))
        };
        let path = || glob(&self.path, e.path.split('?').next().unwrap_or(""));
        let status = || status_matcher(&self.status).is_some_and(|m| m(e.status));
        (self.src.is_empty() || src())
            && (self.dst.is_empty() || dst())
            && (self.path.is_empty() || path())
            && (self.method.is_empty() || self.method.eq_ignore_ascii_case(&e.method))
            && (self.status.is_empty() || status())
    }
}

/// `sa.namespace` of a workload SPIFFE ID (`spiffe://td/ns/<ns>/sa/<sa>`).
fn sa_namespace(id: &str) -> Option<String> {
    let rest = id.strip_prefix("spiffe://")?;
    let mut parts = rest.split('/').skip(1);
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("ns"), Some(ns), Some("sa"), Some(sa)) => Some(format!("{sa}.{ns}")),
        _ => None,
    }
}

/// A status filter: `200` or `5xx` (any digit, then `xx`).
fn status_matcher(s: &str) -> Option<Box<dyn Fn(u16) -> bool>> {
    let b = s.as_bytes();
    match b {
        [c, b'x' | b'X', b'x' | b'X'] if (b'1'..=b'5').contains(c) => {
            let class = u16::from(c - b'0');
            Some(Box::new(move |st| st / 100 == class))
        }
        _ if b.len() == 3 => s.parse::<u16>().ok().filter(|n| (100..600).contains(n)).map(|n| {
            let f: Box<dyn Fn(u16) -> bool> = Box::new(move |st| st == n);
            f
        }),
        _ => None,
    }
}

/// A glob with `*` (any run of characters), anchored at both ends; without a `*`, a prefix.
pub fn glob(pattern: &str, s: &str) -> bool {
    if !pattern.contains('*') {
        return s.starts_with(pattern);
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

impl From<&pb::Tap> for TapFilter {
    fn from(t: &pb::Tap) -> Self {
        TapFilter {
            src: t.src.clone(),
            dst: t.dst.clone(),
            path: t.path.clone(),
            method: t.method.clone(),
            status: t.status.clone(),
        }
    }
}

fn some(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl TapEvent {
    /// The event as a proxy sends it (without the taps it matched: the proxy adds them).
    pub fn to_wire(&self) -> pb::TapEvent {
        pb::TapEvent {
            taps: vec![],
            t_unix_ms: self.t_unix_ms,
            direction: self.direction.clone(),
            src_identity: self.src.identity.clone().unwrap_or_default(),
            src_address: self.src.address.clone().unwrap_or_default(),
            dst_namespace: self.dst.namespace.clone().unwrap_or_default(),
            dst_service: self.dst.service.clone().unwrap_or_default(),
            dst_endpoint: self.dst.endpoint.clone().unwrap_or_default(),
            dst_identity: self.dst.identity.clone().unwrap_or_default(),
            method: self.method.clone(),
            authority: self.authority.clone(),
            path: self.path.clone(),
            status: u32::from(self.status),
            duration_ms: self.duration_ms,
            mtls: self.mtls,
            route: self.route.clone().unwrap_or_default(),
            cluster: self.cluster.clone(),
            proxy: self.proxy.clone(),
        }
    }

    /// A proxy's event as the API shows it; `cluster` and `proxy` say where it was seen.
    pub fn from_wire(e: &pb::TapEvent, cluster: &str, proxy: &str) -> Self {
        let cut = |s: &str, n: usize| s.chars().take(n).collect::<String>();
        TapEvent {
            t_unix_ms: e.t_unix_ms,
            cluster: cluster.to_string(),
            proxy: proxy.to_string(),
            direction: if e.direction == "inbound" { "inbound" } else { "outbound" }.to_string(),
            src: Source { identity: some(&e.src_identity), address: some(&e.src_address) },
            dst: Destination {
                namespace: some(&e.dst_namespace),
                service: some(&e.dst_service),
                endpoint: some(&e.dst_endpoint),
                identity: some(&e.dst_identity),
            },
            method: cut(&e.method, 32),
            authority: cut(&e.authority, 256),
            path: cut(&e.path, 2048),
            status: u16::try_from(e.status).unwrap_or(0),
            duration_ms: if e.duration_ms.is_finite() { e.duration_ms.max(0.0) } else { 0.0 },
            mtls: e.mtls,
            route: some(&e.route),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> TapEvent {
        TapEvent {
            direction: "inbound".into(),
            src: Source { identity: Some("spiffe://td/ns/demo/sa/web".into()), address: None },
            dst: Destination {
                namespace: Some("demo".into()),
                service: Some("api".into()),
                endpoint: None,
                identity: Some("spiffe://td/ns/demo/sa/api".into()),
            },
            method: "GET".into(),
            path: "/items/7?x=1".into(),
            status: 503,
            ..Default::default()
        }
    }

    #[test]
    fn globs_and_prefixes() {
        assert!(glob("", "anything"));
        assert!(glob("/items", "/items/7"));
        assert!(!glob("/items", "/other"));
        assert!(glob("/items/*", "/items/7"));
        assert!(glob("*.demo", "api.demo"));
        assert!(!glob("*.demo", "api.prod"));
        assert!(glob("a*c*e", "abcde"));
        assert!(!glob("a*c*e", "abde"));
        assert!(!glob("ab*ba", "aba"), "the ends must not overlap");
    }

    #[test]
    fn filters_match_identity_names_path_method_and_status() {
        let e = event();
        let f = |src: &str, dst: &str, path: &str, method: &str, status: &str| TapFilter {
            src: src.into(),
            dst: dst.into(),
            path: path.into(),
            method: method.into(),
            status: status.into(),
        };
        assert!(TapFilter::default().matches(&e));
        assert!(f("web.demo", "api.demo", "/items", "get", "5xx").matches(&e));
        assert!(f("spiffe://td/ns/demo/*", "", "", "", "503").matches(&e));
        assert!(f("", "spiffe://td/ns/demo/sa/api", "/items/*", "", "").matches(&e));
        assert!(!f("api.demo", "", "", "", "").matches(&e));
        assert!(!f("", "web.demo", "", "", "").matches(&e));
        assert!(!f("", "", "/x", "", "").matches(&e));
        assert!(!f("", "", "", "POST", "").matches(&e));
        assert!(!f("", "", "", "", "2xx").matches(&e));
        assert!(!f("", "", "", "", "200").matches(&e));
        assert!(!f("", "", "/items/7?x", "", "").matches(&e), "the query is not part of the path");
    }

    #[test]
    fn bad_filters_are_named() {
        let bad = |f: TapFilter, field: &str| {
            let e = f.validate().unwrap_err();
            assert!(e.starts_with(field), "{e}");
        };
        bad(TapFilter { status: "600".into(), ..Default::default() }, "status");
        bad(TapFilter { status: "5x".into(), ..Default::default() }, "status");
        bad(TapFilter { method: "GE T".into(), ..Default::default() }, "method");
        bad(TapFilter { path: "x".repeat(MAX_FILTER + 1), ..Default::default() }, "path");
        assert!(TapFilter { status: "2XX".into(), method: "post".into(), ..Default::default() }.validate().is_ok());
    }

    #[test]
    fn the_wire_round_trip_keeps_every_field() {
        let mut e = event();
        e.cluster = "east".into();
        e.proxy = "api-1".into();
        e.route = Some("demo/r".into());
        e.duration_ms = 1.5;
        let back = TapEvent::from_wire(&e.to_wire(), "east", "api-1");
        assert_eq!(back, e);
    }
}
