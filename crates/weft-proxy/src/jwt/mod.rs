//! Request authentication: the JWT on an inbound HTTP request, verified against the
//! RequestAuthentication policies that apply to this workload (from the config file's
//! `inbound.request_authentication` and the control plane).
//!
//! ```text
//! request ─► token from header / query parameter / cookie ─┬─ none ─► pass (401 if a policy requires one)
//!                                                          └─ rule of its `iss` ─► key by kid+alg (keys)
//!   ─► signature, exp/nbf ± clock skew, aud ─┬─ ok ─► RequestPrincipal in extensions, claims → headers
//!                                            └─ bad ─► 401 + WWW-Authenticate
//! ```
//! Compiled when policies arrive; key caches are kept across updates (by source).

mod fetch;
pub mod keys;

use crate::authn::RequestPrincipal;
use crate::httputil::{self as h, Body};
use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use jsonwebtoken::{Algorithm, Validation};
use keys::{Keys, Source};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use weft_api::request_authn::{JwtRule, RequestAuthenticationSpec};

/// The asymmetric algorithms accepted by default.
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
const HMAC: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
/// The longest token read (Envoy's default header limit is 60 KiB; tokens are far smaller).
const MAX_TOKEN: usize = 16 * 1024;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok`, `missing` (no token where one is required) or `invalid`.
    pub result: &'static str,
    /// Why a token was refused (`expired`, `bad-signature`, `unknown-kid`, ...), or `none`.
    pub reason: &'static str,
}

#[derive(Clone, Default)]
pub struct Metrics {
    pub requests: Family<ResultLabels, Counter>,
}

impl Metrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = Metrics::default();
        reg.sub_registry_with_prefix("weft").register(
            "jwt_requests",
            "Inbound requests checked by request authentication, by result and reason",
            m.requests.clone(),
        );
        m
    }
}

/// Where a token is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Location {
    Header { name: HeaderName, prefix: String },
    Param(String),
    Cookie(String),
}

struct Rule {
    issuer: String,
    audiences: Vec<String>,
    keys: Arc<Keys>,
    locations: Vec<Location>,
    outputs: Vec<(HeaderName, Vec<String>)>,
    forward: bool,
    algorithms: Vec<Algorithm>,
    skew: u64,
}

#[derive(Default)]
struct Compiled {
    rules: Vec<Rule>,
    require: bool,
}

/// The policies in force and the key caches.
pub struct State {
    compiled: ArcSwap<Compiled>,
    caches: Mutex<HashMap<Source, Arc<Keys>>>,
    metrics: Metrics,
}

/// Why a token was refused: a metric label and the 401's `error_description`.
struct Refused {
    reason: &'static str,
    detail: String,
}

fn refused(reason: &'static str, detail: impl Into<String>) -> Refused {
    Refused { reason, detail: detail.into() }
}

impl State {
    pub fn new(metrics: Metrics) -> State {
        State { compiled: Default::default(), caches: Default::default(), metrics }
    }

    /// Whether any policy is in force.
    pub fn is_active(&self) -> bool {
        !self.compiled.load().rules.is_empty()
    }

    /// Puts `specs` in force (validated already). A rule whose issuer an earlier policy has is
    /// skipped (the oldest policy wins), with a log line.
    pub fn update(&self, specs: &[(String, RequestAuthenticationSpec)]) {
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept: HashMap<Source, Arc<Keys>> = HashMap::new();
        let mut compiled = Compiled::default();
        for (name, spec) in specs {
            compiled.require |= spec.require_token;
            for r in &spec.jwt_rules {
                if compiled.rules.iter().any(|c| c.issuer == r.issuer) {
                    tracing::warn!(policy = %name, issuer = %r.issuer, "jwt: another RequestAuthentication has a rule for this issuer; the first one is used");
                    continue;
                }
                let source = source_of(r);
                let keys = kept
                    .get(&source)
                    .or_else(|| caches.get(&source))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Keys::new(source.clone())));
                kept.insert(source, keys.clone());
                compiled.rules.push(compile_rule(r, keys));
            }
        }
        *caches = kept;
        self.compiled.store(Arc::new(compiled));
    }

    /// Checks the request's token. `Ok`: the request goes on (with a [`RequestPrincipal`] in
    /// its extensions if it had a valid token); `Err`: the 401 to answer.
    pub async fn authenticate(&self, req: &mut Request<Body>) -> Result<(), Response<Body>> {
        // No rules (the common case): one guard load, no reference count.
        let guard = self.compiled.load();
        if guard.rules.is_empty() {
            return Ok(());
        }
        let compiled = arc_swap::Guard::into_inner(guard);
        // The app may trust these headers: only verified claims fill them.
        for r in &compiled.rules {
            for (name, _) in &r.outputs {
                req.headers_mut().remove(name);
            }
        }
        req.extensions_mut().remove::<RequestPrincipal>();
        // Boxed: only requests under a RequestAuthentication pay for the check's future (it
        // may fetch keys), not every request's future.
        let result = Box::pin(check(&compiled, req)).await;
        let (labels, resp) = match result {
            Ok(true) => (ResultLabels { result: "ok", reason: "none" }, Ok(())),
            Ok(false) if !compiled.require => return Ok(()),
            Ok(false) => {
                (ResultLabels { result: "missing", reason: "none" }, Err(unauthorized("Bearer", "a token is required")))
            }
            Err(r) => {
                tracing::debug!(reason = r.reason, detail = %r.detail, "jwt: token refused");
                let challenge = format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    r.detail.replace(['"', '\\'], "'").chars().filter(|c| !c.is_control()).collect::<String>()
                );
                (ResultLabels { result: "invalid", reason: r.reason }, Err(unauthorized(&challenge, &r.detail)))
            }
        };
        self.metrics.requests.get_or_create(&labels).inc();
        resp
    }
}

fn unauthorized(challenge: &str, body: &str) -> Response<Body> {
    let mut resp = Response::new(h::full(format!("401 Unauthorized: {body}\n")));
    *resp.status_mut() = StatusCode::UNAUTHORIZED;
    let value =
        HeaderValue::from_str(challenge).unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\""));
    resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, value);
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

fn source_of(r: &JwtRule) -> Source {
    match (&r.jwks, &r.jwks_file, &r.jwks_uri) {
        (Some(j), _, _) => Source::Inline(j.clone()),
        (_, Some(f), _) => Source::File(f.clone()),
        (_, _, Some(u)) => Source::Uri(u.clone()),
        _ => Source::Discovery(r.issuer.clone()),
    }
}

fn compile_rule(r: &JwtRule, keys: Arc<Keys>) -> Rule {
    let mut locations: Vec<Location> = r
        .from_headers
        .iter()
        .filter_map(|hd| {
            Some(Location::Header { name: HeaderName::from_bytes(hd.name.as_bytes()).ok()?, prefix: hd.prefix.clone() })
        })
        .collect();
    locations.extend(r.from_params.iter().cloned().map(Location::Param));
    locations.extend(r.from_cookies.iter().cloned().map(Location::Cookie));
    if locations.is_empty() {
        locations.push(Location::Header { name: http::header::AUTHORIZATION, prefix: "Bearer ".into() });
    }
    let mut algorithms = ASYMMETRIC.to_vec();
    if r.allow_hmac {
        algorithms.extend(HMAC);
    }
    Rule {
        issuer: r.issuer.clone(),
        audiences: r.audiences.clone(),
        keys,
        locations,
        outputs: r
            .output_claim_to_headers
            .iter()
            .filter_map(|o| {
                Some((
                    HeaderName::from_bytes(o.header.as_bytes()).ok()?,
                    o.claim.split('.').map(String::from).collect(),
                ))
            })
            .collect(),
        forward: r.forward_original_token,
        algorithms,
        skew: std::time::Duration::from(r.clock_skew).as_secs(),
    }
}

/// The token at `loc`, if the request has one there.
fn extract(req: &Request<Body>, loc: &Location) -> Option<String> {
    let token = match loc {
        Location::Header { name, prefix } => {
            let v = req.headers().get(name)?.to_str().ok()?.trim();
            if prefix.is_empty() {
                v.to_string()
            } else {
                let head = v.get(..prefix.len())?;
                if !head.eq_ignore_ascii_case(prefix) {
                    return None;
                }
                v[prefix.len()..].trim().to_string()
            }
        }
        Location::Param(p) => req
            .uri()
            .query()?
            .split('&')
            .find_map(|kv| kv.split_once('=').filter(|(k, _)| k == p).map(|(_, v)| v.to_string()))?,
        Location::Cookie(c) => req.headers().get_all(http::header::COOKIE).iter().find_map(|v| {
            v.to_str().ok()?.split(';').find_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                (k == c).then(|| v.trim_matches('"').to_string())
            })
        })?,
    };
    (!token.is_empty()).then_some(token)
}

/// The header and claims of a token, before any signature check: what picks the rule and the key.
fn decode_unverified(token: &str) -> Result<(jsonwebtoken::Header, Map<String, Value>), Refused> {
    if token.len() > MAX_TOKEN {
        return Err(refused("malformed", "the token is too long"));
    }
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| refused("malformed", format!("not a signed JWT with a supported alg: {e}")))?;
    let unverified: Map<String, Value> = jsonwebtoken::dangerous::insecure_decode_claims(token)
        .map_err(|e| refused("malformed", format!("the claims do not parse: {e}")))?;
    Ok((header, unverified))
}

/// Entry points for the fuzzers in `fuzz/` (docs/operations.md, "Fuzzing"): the parsing a request's
/// token goes through before any signature check. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    use super::{decode_unverified, extract, Location};
    use crate::authn::RequestPrincipal;
    use crate::httputil::full;
    use http::{HeaderName, HeaderValue, Request};

    /// Decodes `token`'s header and claims as a request's check does before picking a key;
    /// the error is the 401's `error_description`.
    pub fn decode(token: &str) -> Result<(jsonwebtoken::Header, serde_json::Map<String, serde_json::Value>), String> {
        decode_unverified(token).map_err(|r| r.detail)
    }

    /// Reads a token from `raw` used as the `Authorization` header (prefix `Bearer `), a custom
    /// header without prefix, the query string and a cookie, and decodes each found. Claim paths
    /// from `raw` are looked up in the claims, as `outputClaimToHeaders` does.
    pub fn request(raw: &[u8]) {
        let text = String::from_utf8_lossy(raw);
        let query: String = text.chars().filter(|c| !c.is_control() && !matches!(c, ' ' | '#')).collect();
        let mut req = Request::builder();
        if let Ok(uri) = format!("/p?{query}").parse::<http::Uri>() {
            req = req.uri(uri);
        }
        let mut req = req.body(full("")).expect("a request from parts");
        if let Ok(v) = HeaderValue::from_bytes(raw) {
            req.headers_mut().insert(http::header::AUTHORIZATION, v.clone());
            req.headers_mut().insert(HeaderName::from_static("x-jwt"), v.clone());
            req.headers_mut().insert(http::header::COOKIE, v);
        }
        let locations = [
            Location::Header { name: http::header::AUTHORIZATION, prefix: "Bearer ".into() },
            Location::Header { name: HeaderName::from_static("x-jwt"), prefix: String::new() },
            Location::Param("access_token".into()),
            Location::Cookie("session".into()),
        ];
        for loc in &locations {
            if let Some(token) = extract(&req, loc) {
                if let Ok((_, claims)) = decode_unverified(&token) {
                    let principal =
                        RequestPrincipal { issuer: String::new(), subject: String::new(), audiences: vec![], claims };
                    let path: Vec<&str> = text.split('.').take(8).collect();
                    let _ = principal.claim(&path);
                    let _ = principal.claim_values(&path);
                }
            }
        }
    }
}

/// `Ok(true)`: a valid token, principal set; `Ok(false)`: no token.
async fn check(c: &Compiled, req: &mut Request<Body>) -> Result<bool, Refused> {
    let mut found: Option<(String, Vec<usize>)> = None;
    for (i, r) in c.rules.iter().enumerate() {
        for loc in &r.locations {
            if let Some(t) = extract(req, loc) {
                match &mut found {
                    None => found = Some((t, vec![i])),
                    Some((first, rules)) if *first == t => rules.push(i),
                    Some(_) => {}
                }
                break;
            }
        }
    }
    let Some((token, candidates)) = found else { return Ok(false) };
    let (header, unverified) = decode_unverified(&token)?;
    let iss = unverified.get("iss").and_then(Value::as_str).unwrap_or_default();
    let Some(rule) = candidates.iter().map(|i| &c.rules[*i]).find(|r| r.issuer == iss) else {
        return Err(refused("issuer", format!("issuer {iss:?} is not accepted here")));
    };
    if !rule.algorithms.contains(&header.alg) {
        return Err(refused("algorithm", format!("alg {:?} is not accepted for this issuer", header.alg)));
    }
    let keys = rule
        .keys
        .find(header.kid.as_deref(), header.alg)
        .await
        .map_err(|e| refused("no-keys", format!("the issuer's keys are not available: {e}")))?;
    if keys.is_empty() {
        return Err(match &header.kid {
            Some(kid) => refused("unknown-kid", format!("no key {kid:?} for {:?} in the issuer's JWKS", header.alg)),
            None => refused("unknown-kid", format!("no key for {:?} in the issuer's JWKS", header.alg)),
        });
    }
    let mut v = Validation::new(header.alg);
    v.algorithms = vec![header.alg];
    v.leeway = rule.skew;
    v.validate_nbf = true;
    v.set_issuer(&[&rule.issuer]);
    v.set_required_spec_claims(&["exp", "iss"]);
    if rule.audiences.is_empty() {
        v.validate_aud = false;
    } else {
        v.set_audience(&rule.audiences);
        v.required_spec_claims.insert("aud".into());
    }
    let mut last = None;
    let mut claims = None;
    for k in &keys {
        match jsonwebtoken::decode::<Map<String, Value>>(&token, &k.key, &v) {
            Ok(d) => {
                claims = Some(d.claims);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let Some(claims) = claims else {
        use jsonwebtoken::errors::ErrorKind as K;
        let e = last.expect("a key was tried");
        return Err(match e.kind() {
            K::ExpiredSignature => refused("expired", "the token has expired"),
            K::ImmatureSignature => refused("not-yet-valid", "the token is not valid yet (nbf)"),
            K::InvalidAudience => refused("audience", "the token's audience is not accepted here"),
            K::InvalidIssuer => refused("issuer", "the token's issuer is not accepted here"),
            K::InvalidSignature => refused("bad-signature", "the signature does not verify"),
            K::MissingRequiredClaim(c) => refused("claims", format!("the token has no {c:?} claim")),
            _ => refused("invalid", format!("the token does not verify: {e}")),
        });
    };
    let principal = RequestPrincipal {
        issuer: rule.issuer.clone(),
        subject: claims.get("sub").and_then(Value::as_str).unwrap_or_default().to_string(),
        audiences: match claims.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(String::from).collect(),
            _ => vec![],
        },
        claims,
    };
    for (name, path) in &rule.outputs {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let value = match principal.claim(&path) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::Bool(b)) => Some(b.to_string()),
            Some(Value::Array(_)) => Some(principal.claim_values(&path).join(",")),
            _ => None,
        };
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            req.headers_mut().insert(name.clone(), v);
        }
    }
    if !rule.forward {
        for loc in &rule.locations {
            if let Location::Header { name, .. } = loc {
                if extract(req, loc).as_deref() == Some(token.as_str()) {
                    req.headers_mut().remove(name);
                }
            }
        }
    }
    req.extensions_mut().insert(principal);
    Ok(true)
}

/// The policies of a config file, named for logs.
pub fn from_config(cfg: &weft_api::proxy::ProxyConfig) -> Vec<(String, RequestAuthenticationSpec)> {
    cfg.inbound
        .iter()
        .flat_map(|i| i.request_authentication.iter().enumerate())
        .map(|(i, s)| (format!("inbound.request_authentication[{i}]"), s.clone()))
        .collect()
}

#[cfg(test)]
mod tests;
