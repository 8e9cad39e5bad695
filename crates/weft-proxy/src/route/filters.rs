//! A rule's filters, compiled: request and response header modifiers, a redirect, a URL rewrite,
//! and mirrors (see [`super::mirror`]).

use crate::httputil::Body;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, StatusCode, Uri};
use weft_api::route::{FilterType, HeaderModifier, HttpPathModifier, HttpRouteFilter, PathModifierType};

#[derive(Debug, Default)]
pub struct HeaderMod {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderMod {
    fn compile(m: &HeaderModifier) -> Result<HeaderMod, String> {
        let pair = |name: &str, value: &str| -> Result<(HeaderName, HeaderValue), String> {
            Ok((
                HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| format!("header {name:?}"))?,
                HeaderValue::from_str(value).map_err(|_| format!("header value {value:?}"))?,
            ))
        };
        Ok(HeaderMod {
            set: m.set.iter().map(|h| pair(&h.name, &h.value)).collect::<Result<_, _>>()?,
            add: m.add.iter().map(|h| pair(&h.name, &h.value)).collect::<Result<_, _>>()?,
            remove: m
                .remove
                .iter()
                .map(|n| HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()).map_err(|_| format!("header {n:?}")))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The Gateway API's order: set, then add, then remove.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
        }
        for n in &self.remove {
            headers.remove(n);
        }
    }
}

#[derive(Debug)]
enum PathMod {
    Full(String),
    Prefix(String),
}

impl PathMod {
    fn compile(p: &HttpPathModifier) -> PathMod {
        match p.kind {
            PathModifierType::ReplaceFullPath => PathMod::Full(p.replace_full_path.clone().unwrap_or_default()),
            PathModifierType::ReplacePrefixMatch => {
                PathMod::Prefix(p.replace_prefix_match.clone().unwrap_or_else(|| "/".into()))
            }
        }
    }

    /// The new path for `path`, whose matched prefix was `prefix` (trailing '/' trimmed).
    fn apply(&self, path: &str, prefix: Option<&str>) -> String {
        match self {
            PathMod::Full(p) => p.clone(),
            PathMod::Prefix(new) => {
                let rest = prefix.and_then(|p| path.strip_prefix(p)).unwrap_or(path);
                let new = new.trim_end_matches('/');
                let joined = format!("{new}{rest}");
                if joined.is_empty() {
                    "/".into()
                } else if !joined.starts_with('/') {
                    format!("/{joined}")
                } else {
                    joined
                }
            }
        }
    }
}

#[derive(Debug)]
pub struct Redirect {
    scheme: Option<String>,
    hostname: Option<String>,
    path: Option<PathMod>,
    port: Option<u16>,
    status: StatusCode,
}

#[derive(Debug)]
pub struct Rewrite {
    hostname: Option<String>,
    path: Option<PathMod>,
}

#[derive(Debug, Default)]
pub struct Filters {
    pub request_headers: Option<HeaderMod>,
    pub response_headers: Option<HeaderMod>,
    pub redirect: Option<Redirect>,
    pub rewrite: Option<Rewrite>,
    pub mirrors: Vec<super::Mirror>,
}

impl Filters {
    pub fn compile(list: &[HttpRouteFilter], ns: &str) -> Result<Filters, String> {
        let mut f = Filters::default();
        for flt in list {
            match flt.kind {
                FilterType::RequestHeaderModifier => {
                    f.request_headers = flt.request_header_modifier.as_ref().map(HeaderMod::compile).transpose()?
                }
                FilterType::ResponseHeaderModifier => {
                    f.response_headers = flt.response_header_modifier.as_ref().map(HeaderMod::compile).transpose()?
                }
                FilterType::RequestRedirect => {
                    f.redirect = flt.request_redirect.as_ref().map(|r| Redirect {
                        scheme: r.scheme.clone(),
                        hostname: r.hostname.clone(),
                        path: r.path.as_ref().map(PathMod::compile),
                        port: r.port,
                        status: r.status_code.and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::FOUND),
                    })
                }
                FilterType::URLRewrite => {
                    f.rewrite = flt
                        .url_rewrite
                        .as_ref()
                        .map(|r| Rewrite { hostname: r.hostname.clone(), path: r.path.as_ref().map(PathMod::compile) })
                }
                FilterType::RequestMirror => {
                    if let Some(m) = &flt.request_mirror {
                        f.mirrors.push(super::Mirror::new(m, ns));
                    }
                }
                FilterType::ExtensionRef | FilterType::CORS => {
                    return Err(format!("filter {:?} is not supported", flt.kind))
                }
            }
        }
        Ok(f)
    }

    /// The redirect answer for `req`, when the rule redirects.
    pub fn redirect<B>(&self, req: &Request<B>, prefix: Option<&str>) -> Option<Response<Body>> {
        let r = self.redirect.as_ref()?;
        let host = match req.uri().authority() {
            Some(a) => Some(a.as_str()),
            None => req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()),
        };
        let (req_host, req_port) = split_host(host.unwrap_or(""));
        let scheme = r.scheme.as_deref().unwrap_or("http");
        let host = r.hostname.as_deref().unwrap_or(req_host);
        // The Gateway API: an explicit port; else the scheme's well-known port when the
        // scheme is set; else the request's.
        let port = match (r.port, &r.scheme) {
            (Some(p), _) => Some(p),
            (None, Some(_)) => None,
            (None, None) => req_port,
        };
        let port = port.filter(|p| !matches!((scheme, p), ("http", 80) | ("https", 443)));
        let path = match &r.path {
            Some(m) => m.apply(req.uri().path(), prefix),
            None => req.uri().path().to_string(),
        };
        let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
        let location = match port {
            Some(p) => format!("{scheme}://{host}:{p}{path}{query}"),
            None => format!("{scheme}://{host}{path}{query}"),
        };
        let mut resp = Response::new(crate::httputil::full(""));
        *resp.status_mut() = r.status;
        match HeaderValue::from_str(&location) {
            Ok(v) => {
                resp.headers_mut().insert(http::header::LOCATION, v);
                Some(resp)
            }
            Err(_) => Some(super::local(StatusCode::INTERNAL_SERVER_ERROR, "route-redirect", "bad redirect".into())),
        }
    }

    /// Applies the request header modifier and the URL rewrite to `req`.
    pub fn on_request<B>(&self, req: &mut Request<B>, prefix: Option<&str>) {
        if let Some(m) = &self.request_headers {
            m.apply(req.headers_mut());
        }
        let Some(rw) = &self.rewrite else { return };
        if let Some(host) = &rw.hostname {
            if let Ok(v) = HeaderValue::from_str(host) {
                req.headers_mut().insert(http::header::HOST, v);
            }
            if req.uri().authority().is_some() {
                let port = req.uri().port_u16();
                let auth = match port {
                    Some(p) => format!("{host}:{p}"),
                    None => host.clone(),
                };
                if let Ok(a) = Authority::try_from(auth) {
                    let mut parts = req.uri().clone().into_parts();
                    parts.authority = Some(a);
                    if let Ok(u) = Uri::from_parts(parts) {
                        *req.uri_mut() = u;
                    }
                }
            }
        }
        if let Some(pm) = &rw.path {
            let path = pm.apply(req.uri().path(), prefix);
            let pq = match req.uri().query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            if let Ok(pq) = PathAndQuery::try_from(pq) {
                let mut parts = req.uri().clone().into_parts();
                parts.path_and_query = Some(pq);
                if let Ok(u) = Uri::from_parts(parts) {
                    *req.uri_mut() = u;
                }
            }
        }
    }

    /// Applies the response header modifier.
    pub fn on_response(&self, resp: &mut Response<Body>) {
        if let Some(m) = &self.response_headers {
            m.apply(resp.headers_mut());
        }
    }
}

/// `host[:port]` → (host, port).
fn split_host(h: &str) -> (&str, Option<u16>) {
    match h.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || h.starts_with('[') => match port.parse() {
            Ok(p) => (host, Some(p)),
            Err(_) => (h, None),
        },
        _ => (h, None),
    }
}
