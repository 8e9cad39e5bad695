//! One compiled (route, rule, match): every condition must hold. Nothing allocates while matching.

use http::header::HeaderName;
use http::Request;
use regex::Regex;
use weft_api::route::order::Entry;
use weft_api::route::{
    compile_regex, host_matches, strip_port, AttachedRoute, GrpcMethodMatchType, PathMatchType, RouteSpec, ValueMatch,
    ValueMatchType,
};

#[derive(Debug)]
enum Path {
    Any,
    Exact(String),
    /// Without its trailing '/': matches itself and anything under it at a '/' boundary.
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug)]
enum Value {
    Exact(String),
    Regex(Regex),
    Present,
}

impl Value {
    fn compile(v: &ValueMatch) -> Result<Value, String> {
        Ok(match v.kind {
            ValueMatchType::Exact => Value::Exact(v.value.clone()),
            ValueMatchType::RegularExpression => Value::Regex(compile_regex(&v.value)?),
            ValueMatchType::Present => Value::Present,
        })
    }

    fn holds(&self, s: &str) -> bool {
        match self {
            Value::Exact(v) => v == s,
            Value::Regex(re) => re.is_match(s),
            Value::Present => true,
        }
    }
}

#[derive(Debug)]
pub struct Match {
    /// Only gRPC requests (a GRPCRoute's entry).
    grpc: bool,
    /// Only requests to this host (the route's hostname of this entry, `*.suffix` or exact);
    /// `None`: every host.
    host: Option<String>,
    /// The parentRef's port, when the route attached to one port of the service.
    port: Option<u16>,
    path: Path,
    method: Option<http::Method>,
    headers: Vec<(HeaderName, Value)>,
    query: Vec<(String, Value)>,
    /// The match in words (`/config_dump`).
    pub desc: String,
}

/// `content-type: application/grpc[+proto|...]`.
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers().get(http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

fn headers(list: &[ValueMatch]) -> Result<Vec<(HeaderName, Value)>, String> {
    list.iter()
        .map(|h| {
            let name = HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("header {:?} is not a header name", h.name))?;
            Ok((name, Value::compile(h)?))
        })
        .collect()
}

/// The request's host without its port: the URI's authority (HTTP/2 `:authority`, an absolute
/// HTTP/1 target), else the `Host` header.
pub fn request_host<B>(req: &Request<B>) -> Option<&str> {
    match req.uri().authority() {
        Some(a) => Some(a.host()),
        None => req.headers().get(http::header::HOST).and_then(|v| v.to_str().ok()).map(strip_port),
    }
}

impl Match {
    /// Compiles one entry of [`weft_api::route::order::http_entries`].
    pub fn compile(service: &str, e: &Entry<'_>) -> Result<Match, String> {
        let mut m = Match::compile_match(service, e.route, e.rule, e.matched)?;
        m.host = e.hostname().map(str::to_string);
        Ok(m)
    }

    fn compile_match(
        service: &str,
        route: &AttachedRoute,
        rule: usize,
        matched: Option<usize>,
    ) -> Result<Match, String> {
        // The port this route applies to, when its parentRefs naming this service (`service`,
        // `name.namespace`) all name one; a parentRef without a port: every port.
        let ports: Vec<Option<u16>> = route
            .route
            .parent_refs()
            .iter()
            .filter(|p| format!("{}.{}", p.name, p.namespace.as_deref().unwrap_or(&route.namespace)) == service)
            .map(|p| p.port)
            .collect();
        let port = match ports.as_slice() {
            [Some(p), rest @ ..] if rest.iter().all(|x| *x == Some(*p)) => Some(*p),
            _ => None,
        };
        match &route.route {
            RouteSpec::HTTPRoute(s) => {
                let Some(m) = matched.map(|i| &s.rules[rule].matches[i]) else {
                    return Ok(Match {
                        grpc: false,
                        host: None,
                        port,
                        path: Path::Any,
                        method: None,
                        headers: vec![],
                        query: vec![],
                        desc: String::new(),
                    });
                };
                let path = match &m.path {
                    None => Path::Any,
                    Some(p) => match p.kind {
                        PathMatchType::Exact => Path::Exact(p.value.clone()),
                        PathMatchType::PathPrefix if p.value.trim_end_matches('/').is_empty() => Path::Any,
                        PathMatchType::PathPrefix => Path::Prefix(p.value.trim_end_matches('/').to_string()),
                        PathMatchType::RegularExpression => Path::Regex(compile_regex(&p.value)?),
                    },
                };
                let method = m
                    .method
                    .as_deref()
                    .map(|x| http::Method::from_bytes(x.as_bytes()).map_err(|_| format!("method {x:?}")))
                    .transpose()?;
                let query = m
                    .query_params
                    .iter()
                    .map(|q| Ok((q.name.clone(), Value::compile(q)?)))
                    .collect::<Result<_, String>>()?;
                Ok(Match {
                    grpc: false,
                    host: None,
                    port,
                    path,
                    method,
                    headers: headers(&m.headers)?,
                    query,
                    desc: String::new(),
                })
            }
            RouteSpec::GRPCRoute(s) => {
                let Some(m) = matched.map(|i| &s.rules[rule].matches[i]) else {
                    return Ok(Match {
                        grpc: true,
                        host: None,
                        port,
                        path: Path::Any,
                        method: None,
                        headers: vec![],
                        query: vec![],
                        desc: String::new(),
                    });
                };
                let path =
                    match &m.method {
                        None => Path::Any,
                        Some(mm) => match (mm.kind, mm.service.as_deref(), mm.method.as_deref()) {
                            (GrpcMethodMatchType::Exact, Some(svc), Some(method)) => {
                                Path::Exact(format!("/{svc}/{method}"))
                            }
                            (GrpcMethodMatchType::Exact, Some(svc), None) => Path::Prefix(format!("/{svc}")),
                            (GrpcMethodMatchType::Exact, None, Some(method)) => {
                                Path::Regex(compile_regex(&format!("/[^/]+/{}", regex::escape(method)))?)
                            }
                            (GrpcMethodMatchType::RegularExpression, svc, method) => Path::Regex(compile_regex(
                                &format!("/(?:{})/(?:{})", svc.unwrap_or("[^/]+"), method.unwrap_or("[^/]+")),
                            )?),
                            (_, None, None) => Path::Any,
                        },
                    };
                Ok(Match {
                    grpc: true,
                    host: None,
                    port,
                    path,
                    method: None,
                    headers: headers(&m.headers)?,
                    query: vec![],
                    desc: String::new(),
                })
            }
            RouteSpec::TCPRoute(_) => Err("a TCPRoute has no HTTP match".into()),
        }
    }

    /// The path prefix this match matched on (for ReplacePrefixMatch).
    pub fn prefix(&self) -> Option<&str> {
        match &self.path {
            Path::Prefix(p) => Some(p),
            Path::Any => Some(""),
            _ => None,
        }
    }

    /// Whether `req` (dialled on `port`, when known) meets every condition.
    pub fn holds<B>(&self, req: &Request<B>, grpc: bool, port: Option<u16>) -> bool {
        if self.grpc && !grpc {
            return false;
        }
        if let (Some(want), Some(got)) = (self.port, port) {
            if want != got {
                return false;
            }
        }
        if let Some(h) = &self.host {
            if !request_host(req).is_some_and(|got| host_matches(h, got)) {
                return false;
            }
        }
        let path = req.uri().path();
        let path_ok = match &self.path {
            Path::Any => true,
            Path::Exact(p) => path == p,
            Path::Prefix(p) => {
                path.strip_prefix(p.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
            Path::Regex(re) => re.is_match(path),
        };
        if !path_ok {
            return false;
        }
        if self.method.as_ref().is_some_and(|m| m != req.method()) {
            return false;
        }
        for (name, v) in &self.headers {
            let mut values = req.headers().get_all(name).iter();
            if !values.any(|x| x.to_str().is_ok_and(|x| v.holds(x))) {
                return false;
            }
        }
        if !self.query.is_empty() {
            let q = req.uri().query().unwrap_or("");
            for (name, v) in &self.query {
                // The first parameter of that name (the Gateway API's rule).
                let first = q.split('&').find_map(|kv| {
                    let (k, val) = kv.split_once('=').unwrap_or((kv, ""));
                    (k == name).then_some(val)
                });
                if !first.is_some_and(|x| v.holds(x)) {
                    return false;
                }
            }
        }
        true
    }
}
