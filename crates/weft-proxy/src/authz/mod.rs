//! Authorization at the server's proxy: AuthorizationPolicies (docs/security.md,
//! "Authorization"), compiled when they arrive ([`compile`]) and checked on every inbound
//! request (HTTP) or connection (opaque TCP) before the app sees it.
//!
//! ```text
//! inbound request ─► CUSTOM match? ─► provider (custom::check) ─ no ─► denied
//!                  ─► DENY match? ─────────────────────────────── yes ─► denied
//!                  ─► ALLOW policies? ─ yes: one matches? ─ no ─► denied
//!                                    └─ no: the default policy ─ refuses ─► denied
//!                  AUDIT matches are counted and logged; they never decide.
//! denied: HTTP 403, gRPC PERMISSION_DENIED (7), TCP reset; `weft_authz_denied_total{policy}`.
//! ```

pub mod compile;
pub mod custom;
pub mod ext;
mod glob;
#[cfg(test)]
mod tests;

use crate::httputil::{self as h, Body};
use arc_swap::ArcSwap;
use compile::{Attrs, Compiled, Denied, HttpAttrs, Source};
use http::{HeaderValue, Request, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use weft_api::authz::{Action, Authorization};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabel {
    /// `namespace/name`, or `no-allow-matched`, or `default-<policy>`.
    pub policy: String,
}

/// `weft_authz_denied_total{policy}`, `weft_authz_audit_total{policy}`.
#[derive(Clone, Default)]
pub struct Metrics {
    pub denied: Family<PolicyLabel, Counter>,
    pub audit: Family<PolicyLabel, Counter>,
}

impl Metrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = Metrics::default();
        let r = reg.sub_registry_with_prefix("weft_authz");
        r.register("denied", "Inbound requests and connections denied by authorization, by policy", m.denied.clone());
        r.register("audit", "Inbound requests an AUDIT AuthorizationPolicy matched, by policy", m.audit.clone());
        m
    }
}

/// The policies in force and their metrics.
pub struct State {
    current: ArcSwap<Compiled>,
    metrics: Metrics,
    /// The proxy config file's `inbound.authorization`: in force when the control plane sends none.
    local: Authorization,
    own_trust_domain: String,
}

impl State {
    pub fn new(metrics: Metrics, local: Option<&Authorization>, own_trust_domain: &str) -> State {
        let local = local.cloned().unwrap_or_default();
        let s = State {
            current: ArcSwap::from_pointee(Compiled::new(&Authorization::default(), own_trust_domain, &|_, _| {
                Counter::default()
            })),
            metrics,
            local,
            own_trust_domain: own_trust_domain.into(),
        };
        s.update(None);
        s
    }

    /// Compiles and installs `spec` (the control plane's; `None`: the local config's). An
    /// unchanged set is kept as it is.
    pub fn update(&self, spec: Option<&Authorization>) {
        let spec = spec.unwrap_or(&self.local);
        if self.current.load().spec == *spec {
            return;
        }
        let m = &self.metrics;
        let counter = |name: &str, action: Action| {
            let label = PolicyLabel { policy: name.to_string() };
            match action {
                Action::Audit => m.audit.get_or_create(&label).clone(),
                _ => m.denied.get_or_create(&label).clone(),
            }
        };
        self.current.store(Arc::new(Compiled::new(spec, &self.own_trust_domain, &counter)));
    }

    /// The policies in force, or `None` when there is nothing to check for a caller with a
    /// verified identity (`authenticated`): the common request then pays one guard load, no
    /// reference count.
    pub fn load_for(&self, authenticated: bool) -> Option<Arc<Compiled>> {
        let guard = self.current.load();
        if authenticated && guard.is_open() {
            return None;
        }
        Some(arc_swap::Guard::into_inner(guard))
    }

    /// For `/config_dump`.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.current.load().spec).unwrap_or_default()
    }

    fn count_denied(&self, c: &Compiled, d: &Denied) {
        match d {
            Denied::Policy(p) | Denied::Custom { policy: p, .. } => {
                if let Some(p) = c.deny.iter().chain(&c.custom).find(|x| x.name == *p) {
                    p.counter.inc();
                    return;
                }
                self.metrics.denied.get_or_create(&PolicyLabel { policy: p.to_string() }).inc();
            }
            other => {
                self.metrics.denied.get_or_create(&PolicyLabel { policy: other.label() }).inc();
            }
        }
    }

    /// Counts the AUDIT policies that match; with `mark`, returns their names (comma separated)
    /// for the access log.
    fn audit(&self, c: &Compiled, a: &Attrs<'_>, what: &str, mark: bool) -> Option<String> {
        let mut names: Option<String> = None;
        for p in c.audits(a) {
            p.counter.inc();
            tracing::debug!(policy = %p.name, src = ?a.source.principal, ip = %a.source.ip, port = a.port, request = what, "authz: AUDIT policy matched");
            if mark {
                let n = names.get_or_insert_with(String::new);
                if !n.is_empty() {
                    n.push(',');
                }
                n.push_str(&p.name);
            }
        }
        names
    }
}

/// Host without port, lowercase.
fn host_of(req: &Request<Body>) -> String {
    let raw = req
        .uri()
        .authority()
        .map(|a| a.host().to_string())
        .or_else(|| req.headers().get(http::header::HOST).and_then(|v| v.to_str().ok()).map(str::to_string))
        .unwrap_or_default();
    let host = match raw.rsplit_once(':') {
        Some((h, p)) if !raw.ends_with(']') && p.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
        _ => raw,
    };
    host.to_ascii_lowercase()
}

fn is_grpc(req: &Request<Body>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The response to a denied request: 403, or for gRPC a trailers-only PERMISSION_DENIED.
fn denied_response(grpc: bool, d: &Denied) -> Response<Body> {
    let msg = match d {
        Denied::Custom { .. } => "RBAC: access denied by the extension provider".to_string(),
        _ => "RBAC: access denied".to_string(),
    };
    let mut resp = if grpc {
        let mut r = Response::new(h::full(""));
        let hs = r.headers_mut();
        hs.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        hs.insert("grpc-status", HeaderValue::from_static("7"));
        if let Ok(v) = HeaderValue::from_str(&msg) {
            hs.insert("grpc-message", v);
        }
        r
    } else {
        let mut r = Response::new(h::full(format!("{msg}\n")));
        *r.status_mut() = http::StatusCode::FORBIDDEN;
        r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r
    };
    resp.headers_mut().insert(h::PROXY_ERROR, HeaderValue::from_static("authz-denied"));
    resp
}

/// What an allowing external authorizer adds to the app's response (`custom::Allow`); empty
/// (no allocation) on every request that no CUSTOM policy matched.
pub type ResponseHeaders = Vec<(http::HeaderName, HeaderValue)>;

/// The hook for one inbound HTTP request on app port `port`: `Err` is the response to send
/// instead of forwarding; `Ok` carries headers for the app's response (from an external
/// authorizer that allowed). Reads the JWT's [`crate::authn::RequestPrincipal`] from the
/// request's extensions, so it runs after request authentication. An allowing authorizer's
/// header changes are applied to `req`.
pub async fn check_http(
    ctx: &crate::Ctx,
    source: &Source,
    remote: std::net::SocketAddr,
    port: u16,
    req: &mut Request<Body>,
) -> Result<ResponseHeaders, Response<Body>> {
    let Some(c) = ctx.authz.load_for(source.principal.is_some()) else {
        return Ok(vec![]);
    };
    let host = host_of(req);
    let grpc = is_grpc(req);
    let (custom, audited) = {
        let a = attrs(&c, source, port, &host, grpc, req);
        let audited = ctx.authz.audit(&c, &a, req.uri().path(), ctx.access_log.on());
        (c.custom(&a).map(|p| (p.name.clone(), p.provider.clone().unwrap_or_default())), audited)
    };
    // AUDIT marks the request in the access log (see `crate::accesslog`).
    if let Some(names) = audited {
        req.extensions_mut().insert(crate::accesslog::AuditMark(names.into()));
    }
    let mut extra = vec![];
    if let Some((policy, provider)) = custom {
        let own = ctx.certs.id().to_string();
        let check = custom::CheckContext {
            providers: &ctx.ext_authz,
            source: remote,
            destination: std::net::SocketAddr::new(ctx.app_host(), port),
            source_principal: source.principal.as_deref(),
            destination_principal: Some(&own),
        };
        // The authorizer sees the head and may change its headers: taken apart and put back.
        let (mut parts, body) = std::mem::replace(req, Request::new(h::full(""))).into_parts();
        // Boxed: an external authorizer's call is rare and large, and would otherwise grow every
        // request's future (see `crate::h2server`'s stream futures).
        let decision = Box::pin(custom::check(&check, &provider, &parts)).await;
        match decision {
            custom::Decision::Allow(allow) => {
                allow.apply(&mut parts.headers);
                extra = allow.response_headers;
                *req = Request::from_parts(parts, body);
            }
            custom::Decision::Deny(denial) => {
                *req = Request::from_parts(parts, body);
                let d = Denied::Custom { policy, reason: denial.reason.clone() };
                ctx.authz.count_denied(&c, &d);
                log_denied(&d, source, port, req.uri().path());
                // The authorizer's own answer (status, headers, body); a gRPC caller gets
                // PERMISSION_DENIED, which it can read, unless the authorizer answered gRPC.
                if grpc && !denial.headers.contains_key("grpc-status") {
                    return Err(denied_response(true, &d));
                }
                let mut r = denial.response().map(h::full);
                r.headers_mut().insert(h::PROXY_ERROR, HeaderValue::from_static("authz-denied"));
                return Err(r);
            }
        }
    }
    let a = attrs(&c, source, port, &host, grpc, req);
    match c.decide(&a) {
        Ok(()) => Ok(extra),
        Err(d) => {
            ctx.authz.count_denied(&c, &d);
            log_denied(&d, source, port, req.uri().path());
            Err(denied_response(grpc, &d))
        }
    }
}

fn attrs<'a>(
    c: &'a Compiled,
    source: &'a Source,
    port: u16,
    host: &'a str,
    grpc: bool,
    req: &'a Request<Body>,
) -> Attrs<'a> {
    Attrs {
        source,
        cluster: c.cluster_of(source.trust_domain.as_deref()),
        port,
        http: Some(HttpAttrs {
            host,
            method: req.method().as_str(),
            path: req.uri().path(),
            grpc,
            headers: req.headers(),
            principal: req.extensions().get::<crate::authn::RequestPrincipal>(),
        }),
    }
}

fn log_denied(d: &Denied, source: &Source, port: u16, what: &str) {
    let reason = match d {
        Denied::Custom { reason, .. } => reason.as_str(),
        _ => "",
    };
    tracing::debug!(policy = %d.label(), reason, src = ?source.principal, ip = %source.ip, port, request = what, "authz: denied");
}

/// The hook for one opaque TCP connection to app port `port`: only what L4 knows is checked
/// (a rule field that needs HTTP never matches for ALLOW and AUDIT, and always does for DENY
/// and CUSTOM). A matching CUSTOM policy denies: providers are asked about HTTP requests only.
pub fn check_tcp(ctx: &crate::Ctx, source: &Source, port: u16) -> Result<(), Denied> {
    let Some(c) = ctx.authz.load_for(source.principal.is_some()) else {
        return Ok(());
    };
    let a = Attrs { source, cluster: c.cluster_of(source.trust_domain.as_deref()), port, http: None };
    ctx.authz.audit(&c, &a, "tcp", false);
    let verdict = match c.custom(&a) {
        Some(p) => Err(Denied::Custom {
            policy: p.name.clone(),
            reason: "a CUSTOM policy matched an opaque TCP connection: providers decide HTTP requests only".into(),
        }),
        None => c.decide(&a),
    };
    verdict.inspect_err(|d| {
        ctx.authz.count_denied(&c, d);
        log_denied(d, source, port, "tcp");
    })
}
