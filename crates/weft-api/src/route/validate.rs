//! The rules of the three route kinds that serde's types cannot say (see [`super`]).

use super::*;

// ---------------------------------------------------------------- validation

fn f(path: impl Into<String>, msg: impl Into<String>) -> ConfigError {
    ConfigError::invalid(path, msg)
}

fn check_parents(parents: &[ParentRef]) -> Result<(), ConfigError> {
    if parents.is_empty() {
        return Err(f("parentRefs", "name at least one Service the route applies to: parentRefs: [{ name: api }]"));
    }
    if parents.len() > MAX_PARENTS {
        return Err(f("parentRefs", format!("at most {MAX_PARENTS}")));
    }
    for (i, p) in parents.iter().enumerate() {
        let at = |k: &str| format!("parentRefs[{i}].{k}");
        check_group_kind(p.group.as_deref(), p.kind.as_deref(), &at("kind"))?;
        check_ref_name(&p.name, p.namespace.as_deref(), &at("name"), &at("namespace"))?;
        if p.port == Some(0) {
            return Err(f(at("port"), "must be 1-65535 (or absent: every port)"));
        }
    }
    Ok(())
}

fn check_group_kind(group: Option<&str>, kind: Option<&str>, at: &str) -> Result<(), ConfigError> {
    if let Some(g) = group.filter(|g| !g.is_empty() && *g != "core") {
        return Err(f(
            at.replace(".kind", ".group"),
            format!("{g:?} is not supported: weft routes attach to and send to Services (group \"\" or core)"),
        ));
    }
    match kind {
        None | Some("Service") => Ok(()),
        Some(k) => Err(f(
            at,
            format!(
                "{k:?} is not supported: weft routes attach to and send to Services (kind: Service, or leave it out)"
            ),
        )),
    }
}

fn check_ref_name(name: &str, ns: Option<&str>, at: &str, at_ns: &str) -> Result<(), ConfigError> {
    if !valid_name(name) {
        return Err(f(at, format!("{name:?} is not a Service name (a DNS label: a-z, 0-9, '-')")));
    }
    if let Some(ns) = ns.filter(|n| !valid_name(n)) {
        return Err(f(at_ns, format!("{ns:?} is not a namespace name (a DNS label)")));
    }
    Ok(())
}

fn check_backends(backends: &[BackendRef], at: &str, required: bool) -> Result<(), ConfigError> {
    if backends.len() > MAX_BACKENDS {
        return Err(f(at, format!("at most {MAX_BACKENDS} backendRefs")));
    }
    if required && backends.is_empty() {
        return Err(f(
            at,
            "no backendRefs: every request this rule matches would be answered 500; name a Service to send them to (or, for HTTPRoute, add a RequestRedirect filter)",
        ));
    }
    for (i, b) in backends.iter().enumerate() {
        let bat = |k: &str| format!("{at}[{i}].{k}");
        check_group_kind(b.group.as_deref(), b.kind.as_deref(), &bat("kind"))?;
        check_ref_name(&b.name, b.namespace.as_deref(), &bat("name"), &bat("namespace"))?;
        if b.port == Some(0) {
            return Err(f(bat("port"), "must be 1-65535 (or absent)"));
        }
        if b.weight() > MAX_WEIGHT {
            return Err(f(bat("weight"), format!("{} is more than {MAX_WEIGHT}", b.weight())));
        }
    }
    if !backends.is_empty() && backends.iter().all(|b| b.weight() == 0) {
        return Err(f(
            at,
            "the weights sum to zero, so no backend would get any traffic; give at least one backendRef a weight above 0",
        ));
    }
    Ok(())
}

fn check_header_name(name: &str, at: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(f(at, format!("{name:?} is not an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)")))
    }
}

fn check_header_value(value: &str, at: &str) -> Result<(), ConfigError> {
    if value.len() > 4096 || value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(f(at, "must be at most 4096 bytes with no control characters"));
    }
    Ok(())
}

fn check_value_matches(v: &[ValueMatch], at: &str, header: bool) -> Result<(), ConfigError> {
    if v.len() > MAX_HEADER_MATCHES {
        return Err(f(at, format!("at most {MAX_HEADER_MATCHES}")));
    }
    for (i, m) in v.iter().enumerate() {
        let mat = |k: &str| format!("{at}[{i}].{k}");
        if header {
            check_header_name(&m.name, &mat("name"))?;
        } else if m.name.is_empty() || m.name.len() > 256 {
            return Err(f(mat("name"), "must be 1-256 bytes"));
        }
        if v[..i].iter().any(|o| o.name.eq_ignore_ascii_case(&m.name)) {
            return Err(f(mat("name"), format!("{:?} is matched twice in one match; keep one", m.name)));
        }
        match m.kind {
            ValueMatchType::RegularExpression => {
                compile_regex(&m.value).map_err(|e| f(mat("value"), e))?;
            }
            ValueMatchType::Exact => check_header_value(&m.value, &mat("value"))?,
            ValueMatchType::Present => {}
        }
    }
    Ok(())
}

fn check_path(p: &HttpPathMatch, at: &str) -> Result<(), ConfigError> {
    match p.kind {
        PathMatchType::RegularExpression => compile_regex(&p.value).map(|_| ()).map_err(|e| f(at, e)),
        _ if !p.value.starts_with('/') => Err(f(at, format!("{:?} must start with '/'", p.value))),
        _ if p.value.len() > 1024 || p.value.contains(['?', '#']) || p.value.bytes().any(|b| b <= 0x20) => {
            Err(f(at, "must be at most 1024 bytes, without '?', '#', spaces or control characters"))
        }
        _ => Ok(()),
    }
}

fn check_modifier(m: &HeaderModifier, at: &str) -> Result<(), ConfigError> {
    for (which, list) in [("set", &m.set), ("add", &m.add)] {
        for (i, h) in list.iter().enumerate() {
            check_header_name(&h.name, &format!("{at}.{which}[{i}].name"))?;
            check_header_value(&h.value, &format!("{at}.{which}[{i}].value"))?;
        }
    }
    for (i, h) in m.remove.iter().enumerate() {
        check_header_name(h, &format!("{at}.remove[{i}]"))?;
    }
    if m.set.len() + m.add.len() + m.remove.len() > 64 {
        return Err(f(at, "at most 64 headers set, added and removed together"));
    }
    Ok(())
}

fn check_path_modifier(p: &HttpPathModifier, at: &str, prefix_matched: bool) -> Result<(), ConfigError> {
    let (value, want, other) = match p.kind {
        PathModifierType::ReplaceFullPath => (&p.replace_full_path, "replaceFullPath", &p.replace_prefix_match),
        PathModifierType::ReplacePrefixMatch => {
            if !prefix_matched {
                return Err(f(
                    format!("{at}.type"),
                    "ReplacePrefixMatch needs every match of the rule to be a PathPrefix path match (it replaces that prefix)",
                ));
            }
            (&p.replace_prefix_match, "replacePrefixMatch", &p.replace_full_path)
        }
    };
    if other.is_some() {
        return Err(f(at, format!("type {:?} takes only {want}", p.kind)));
    }
    match value {
        Some(v) if v.starts_with('/') && !v.contains(['?', '#']) && v.len() <= 1024 => Ok(()),
        Some(v) => Err(f(format!("{at}.{want}"), format!("{v:?} must be a path starting with '/' (no '?' or '#')"))),
        None => Err(f(format!("{at}.{want}"), format!("type {:?} needs {want}", p.kind))),
    }
}

fn check_hostname(h: &str, at: &str) -> Result<(), ConfigError> {
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if ok {
        Ok(())
    } else {
        Err(f(at, format!("{h:?} is not a hostname")))
    }
}

/// A route's `hostnames`: the Gateway API's form, a lowercase DNS name or one with a leading
/// `*.` wildcard label (`*.example.com`), no IP address, no port, at most [`MAX_HOSTNAMES`].
fn check_route_hostnames(hosts: &[String]) -> Result<(), ConfigError> {
    if hosts.len() > MAX_HOSTNAMES {
        return Err(f("hostnames", format!("at most {MAX_HOSTNAMES} (the Gateway API's limit); split the route")));
    }
    for (i, h) in hosts.iter().enumerate() {
        let at = format!("hostnames[{i}]");
        let name = h.strip_prefix("*.").unwrap_or(h);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if h.len() > 253 || !name.split('.').all(label_ok) {
            let hint = if h.bytes().any(|b| b.is_ascii_uppercase()) {
                "; write it in lowercase"
            } else if h.contains(':') {
                "; leave the port out (the route's parentRefs[].port says which port)"
            } else if h.contains('*') {
                "; a wildcard is only a whole first label: *.example.com"
            } else {
                ""
            };
            return Err(f(
                at,
                format!(
                    "{h:?} is not a hostname (DNS labels of a-z, 0-9 and '-', optionally after a leading \"*.\"){hint}"
                ),
            ));
        }
        if name.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit())) {
            return Err(f(at, format!("{h:?} is an IP address; the Gateway API takes hostnames only")));
        }
        if hosts[..i].contains(h) {
            return Err(f(at, format!("{h:?} is listed twice; keep one")));
        }
    }
    Ok(())
}

/// Checks one rule's filters. `prefix_matched`: every match is a PathPrefix match; `grpc`: only
/// the filters GRPCRoute allows.
fn check_filters(filters: &[HttpRouteFilter], at: &str, prefix_matched: bool, grpc: bool) -> Result<(), ConfigError> {
    if filters.len() > MAX_FILTERS {
        return Err(f(at, format!("at most {MAX_FILTERS} filters")));
    }
    let mut seen = Vec::new();
    for (i, flt) in filters.iter().enumerate() {
        let fat = |k: &str| format!("{at}[{i}].{k}");
        let set = [
            (FilterType::RequestHeaderModifier, flt.request_header_modifier.is_some(), "requestHeaderModifier"),
            (FilterType::ResponseHeaderModifier, flt.response_header_modifier.is_some(), "responseHeaderModifier"),
            (FilterType::RequestRedirect, flt.request_redirect.is_some(), "requestRedirect"),
            (FilterType::URLRewrite, flt.url_rewrite.is_some(), "urlRewrite"),
            (FilterType::RequestMirror, flt.request_mirror.is_some(), "requestMirror"),
            (FilterType::ExtensionRef, flt.extension_ref.is_some(), "extensionRef"),
            (FilterType::CORS, flt.cors.is_some(), "cors"),
        ];
        let own = set.iter().find(|(k, _, _)| *k == flt.kind).map(|(_, _, n)| *n).unwrap_or("");
        if let Some((_, _, other)) = set.iter().find(|(k, present, _)| *present && *k != flt.kind) {
            return Err(f(fat(other), format!("a filter of type {:?} carries only its own field, {own}", flt.kind)));
        }
        if matches!(flt.kind, FilterType::ExtensionRef | FilterType::CORS) {
            return Err(f(
                fat("type"),
                format!(
                    "filter {:?} is not supported by weft; use RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite or RequestMirror",
                    flt.kind
                ),
            ));
        }
        if grpc && matches!(flt.kind, FilterType::RequestRedirect | FilterType::URLRewrite) {
            return Err(f(
                fat("type"),
                format!(
                    "GRPCRoute has no {:?} filter; use RequestHeaderModifier, ResponseHeaderModifier or RequestMirror",
                    flt.kind
                ),
            ));
        }
        if !set.iter().any(|(k, present, _)| *k == flt.kind && *present) {
            return Err(f(fat(own), format!("type {:?} needs its settings in {own}", flt.kind)));
        }
        // The Gateway API allows each filter once per rule, except RequestMirror.
        if flt.kind != FilterType::RequestMirror && seen.contains(&flt.kind) {
            return Err(f(fat("type"), format!("{:?} appears twice in this rule; merge them", flt.kind)));
        }
        seen.push(flt.kind);
        if let Some(m) = flt.request_header_modifier.as_ref().or(flt.response_header_modifier.as_ref()) {
            check_modifier(m, &fat(own))?;
        }
        if let Some(r) = &flt.request_redirect {
            if let Some(s) = r.scheme.as_deref().filter(|s| *s != "http" && *s != "https") {
                return Err(f(fat("requestRedirect.scheme"), format!("{s:?}: use http or https")));
            }
            if let Some(h) = &r.hostname {
                check_hostname(h, &fat("requestRedirect.hostname"))?;
            }
            if let Some(p) = &r.path {
                check_path_modifier(p, &fat("requestRedirect.path"), prefix_matched)?;
            }
            if r.port == Some(0) {
                return Err(f(fat("requestRedirect.port"), "must be 1-65535"));
            }
            if let Some(c) = r.status_code.filter(|c| ![301, 302, 303, 307, 308].contains(c)) {
                return Err(f(fat("requestRedirect.statusCode"), format!("{c}: use 301, 302, 303, 307 or 308")));
            }
        }
        if let Some(r) = &flt.url_rewrite {
            if let Some(h) = &r.hostname {
                check_hostname(h, &fat("urlRewrite.hostname"))?;
            }
            if let Some(p) = &r.path {
                check_path_modifier(p, &fat("urlRewrite.path"), prefix_matched)?;
            }
        }
        if let Some(m) = &flt.request_mirror {
            let b = &m.backend_ref;
            check_group_kind(b.group.as_deref(), b.kind.as_deref(), &fat("requestMirror.backendRef.kind"))?;
            check_ref_name(
                &b.name,
                b.namespace.as_deref(),
                &fat("requestMirror.backendRef.name"),
                &fat("requestMirror.backendRef.namespace"),
            )?;
            match (m.percent, m.fraction) {
                (Some(_), Some(_)) => {
                    return Err(f(fat("requestMirror.fraction"), "set percent or fraction, not both"));
                }
                (Some(p), None) if p > 100 => {
                    return Err(f(fat("requestMirror.percent"), format!("{p} is not a percentage (0-100)")));
                }
                (None, Some(fr)) if fr.denominator == 0 || fr.numerator > fr.denominator => {
                    return Err(f(fat("requestMirror.fraction"), "needs denominator > 0 and numerator ≤ denominator"));
                }
                _ => {}
            }
        }
    }
    if seen.contains(&FilterType::RequestRedirect) && seen.contains(&FilterType::URLRewrite) {
        return Err(f(at, "RequestRedirect and URLRewrite cannot be in one rule (the Gateway API forbids it)"));
    }
    Ok(())
}

fn check_rule_name(name: &Option<String>, at: &str) -> Result<(), ConfigError> {
    match name {
        Some(n) if !valid_name(n) => Err(f(at, format!("{n:?} must be a DNS label (a-z, 0-9, '-')"))),
        _ => Ok(()),
    }
}

fn check_rule_names<'a>(names: impl Iterator<Item = &'a Option<String>>) -> Result<(), ConfigError> {
    let mut seen: Vec<&str> = Vec::new();
    for (i, n) in names.enumerate() {
        check_rule_name(n, &format!("rules[{i}].name"))?;
        if let Some(n) = n {
            if seen.contains(&n.as_str()) {
                return Err(f(format!("rules[{i}].name"), format!("{n:?} names two rules; rule names are unique")));
            }
            seen.push(n);
        }
    }
    Ok(())
}

impl Validate for HttpRouteSpec {
    fn validate(&self) -> Result<(), ConfigError> {
        check_parents(&self.parent_refs)?;
        check_route_hostnames(&self.hostnames)?;
        if self.rules.len() > MAX_RULES {
            return Err(f("rules", format!("at most {MAX_RULES} rules (the Gateway API's limit); split the route")));
        }
        check_rule_names(self.rules.iter().map(|r| &r.name))?;
        for (i, r) in self.rules.iter().enumerate() {
            let at = |k: &str| format!("rules[{i}].{k}");
            if r.matches.len() > MAX_MATCHES {
                return Err(f(at("matches"), format!("at most {MAX_MATCHES}")));
            }
            for (j, m) in r.matches.iter().enumerate() {
                let mat = |k: &str| format!("rules[{i}].matches[{j}].{k}");
                if let Some(p) = &m.path {
                    check_path(p, &mat("path.value"))?;
                }
                check_value_matches(&m.headers, &mat("headers"), true)?;
                check_value_matches(&m.query_params, &mat("queryParams"), false)?;
                if let Some(method) = m.method.as_deref() {
                    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) || method.len() > 32 {
                        return Err(f(mat("method"), format!("{method:?} is not an HTTP method (GET, POST, ...)")));
                    }
                }
            }
            let prefix_matched =
                r.matches.iter().all(|m| m.path.as_ref().is_none_or(|p| p.kind == PathMatchType::PathPrefix));
            check_filters(&r.filters, &at("filters"), prefix_matched, false)?;
            let redirects = r.filters.iter().any(|f| f.kind == FilterType::RequestRedirect);
            check_backends(&r.backend_refs, &at("backendRefs"), !redirects)?;
            if let Some(t) = &r.timeouts {
                if let (Some(req), Some(b)) = (t.request, t.backend_request) {
                    if req.0 > std::time::Duration::ZERO && b.0 > req.0 {
                        return Err(f(
                            at("timeouts.backendRequest"),
                            format!("{b} is longer than timeouts.request ({req}); it must be at most that"),
                        ));
                    }
                }
            }
        }
        check_redirect_loops(self)
    }
}

/// Where a redirect of `path` (matched by `m`) sends it, when it stays on the same service.
fn redirected(path: &str, m: &HttpPathMatch, r: &RequestRedirect) -> Option<String> {
    if r.hostname.is_some() || r.port.is_some() || r.scheme.as_deref() == Some("https") {
        // Another host or port (or TLS): weft cannot tell where that lands.
        return None;
    }
    Some(match &r.path {
        None => path.to_string(),
        Some(p) => match p.kind {
            PathModifierType::ReplaceFullPath => p.replace_full_path.clone().unwrap_or_default(),
            PathModifierType::ReplacePrefixMatch => {
                let rest = path.strip_prefix(m.value.trim_end_matches('/')).unwrap_or("");
                let new = p.replace_prefix_match.as_deref().unwrap_or("/").trim_end_matches('/');
                let joined = format!("{new}{rest}");
                if joined.is_empty() {
                    "/".into()
                } else {
                    joined
                }
            }
        },
    })
}

/// Whether path `p` matches `m` (the path part only).
pub fn path_matches(m: &HttpPathMatch, p: &str) -> bool {
    match m.kind {
        PathMatchType::Exact => p == m.value,
        PathMatchType::PathPrefix => {
            let prefix = m.value.trim_end_matches('/');
            prefix.is_empty() || p == prefix || p.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
        }
        PathMatchType::RegularExpression => compile_regex(&m.value).is_ok_and(|re| re.is_match(p)),
    }
}

/// A route loop through redirects within one route: a redirect that keeps the host sends a path
/// that this route's redirect rules would redirect again, back to where it started. Only matches
/// on the path alone are followed (a header or method condition may not hold on the next request).
fn check_redirect_loops(spec: &HttpRouteSpec) -> Result<(), ConfigError> {
    let default = HttpPathMatch { kind: PathMatchType::PathPrefix, value: "/".into() };
    // (rule, match, path match) of every match on the path alone, in order.
    let path_only: Vec<(usize, &HttpPathMatch)> = spec
        .rules
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            let all: Vec<(usize, &HttpPathMatch)> = if r.matches.is_empty() {
                vec![(i, &default)]
            } else {
                r.matches
                    .iter()
                    .filter(|m| m.headers.is_empty() && m.query_params.is_empty() && m.method.is_none())
                    .map(|m| (i, m.path.as_ref().unwrap_or(&default)))
                    .collect()
            };
            all
        })
        .collect();
    let redirect_of = |i: usize| spec.rules[i].filters.iter().find_map(|f| f.request_redirect.as_ref());
    // The rule a path alone lands on: the most specific path match (Exact, then the longest prefix).
    let lands = |path: &str| -> Option<(usize, &HttpPathMatch)> {
        path_only
            .iter()
            .filter(|(_, m)| path_matches(m, path))
            .max_by_key(|(i, m)| (m.kind == PathMatchType::Exact, m.value.len(), std::cmp::Reverse(*i)))
            .copied()
    };
    for (start, m) in &path_only {
        let Some(r) = redirect_of(*start) else { continue };
        let sample = match m.kind {
            PathMatchType::RegularExpression => continue,
            _ => m.value.clone(),
        };
        let Some(mut path) = redirected(&sample, m, r) else { continue };
        let mut chain = vec![sample.clone(), path.clone()];
        while let Some((rule, m2)) = lands(&path) {
            let Some(r2) = redirect_of(rule) else { break };
            if rule == *start || chain.len() > spec.rules.len() + 1 {
                return Err(f(
                    format!("rules[{start}].filters"),
                    format!(
                        "a redirect loop: {} is redirected back to a rule that redirects it again, without end; change the redirect's path or hostname",
                        chain.join(" → ")
                    ),
                ));
            }
            let Some(next) = redirected(&path, m2, r2) else { break };
            path = next;
            chain.push(path.clone());
        }
    }
    Ok(())
}

impl Validate for GrpcRouteSpec {
    fn validate(&self) -> Result<(), ConfigError> {
        check_parents(&self.parent_refs)?;
        check_route_hostnames(&self.hostnames)?;
        if self.rules.len() > MAX_RULES {
            return Err(f("rules", format!("at most {MAX_RULES} rules")));
        }
        check_rule_names(self.rules.iter().map(|r| &r.name))?;
        for (i, r) in self.rules.iter().enumerate() {
            let at = |k: &str| format!("rules[{i}].{k}");
            if r.matches.len() > MAX_MATCHES {
                return Err(f(at("matches"), format!("at most {MAX_MATCHES}")));
            }
            for (j, m) in r.matches.iter().enumerate() {
                let mat = |k: &str| format!("rules[{i}].matches[{j}].{k}");
                if let Some(mm) = &m.method {
                    if mm.service.is_none() && mm.method.is_none() {
                        return Err(f(mat("method"), "set service, method or both"));
                    }
                    for (name, v) in [("service", &mm.service), ("method", &mm.method)] {
                        let Some(v) = v else { continue };
                        match mm.kind {
                            GrpcMethodMatchType::RegularExpression => {
                                compile_regex(v).map_err(|e| f(mat(&format!("method.{name}")), e))?;
                            }
                            GrpcMethodMatchType::Exact => {
                                let ok = !v.is_empty()
                                    && v.len() <= 1024
                                    && v.bytes().all(|b| {
                                        b.is_ascii_alphanumeric() || b == b'_' || (name == "service" && b == b'.')
                                    });
                                if !ok {
                                    return Err(f(
                                        mat(&format!("method.{name}")),
                                        format!(
                                            "{v:?} is not a gRPC {name} name (letters, digits, '_'{})",
                                            if name == "service" { ", '.'" } else { "" }
                                        ),
                                    ));
                                }
                            }
                        }
                    }
                }
                check_value_matches(&m.headers, &mat("headers"), true)?;
            }
            check_filters(&r.filters, &at("filters"), false, true)?;
            check_backends(&r.backend_refs, &at("backendRefs"), true)?;
        }
        Ok(())
    }
}

impl Validate for TcpRouteSpec {
    fn validate(&self) -> Result<(), ConfigError> {
        check_parents(&self.parent_refs)?;
        if self.rules.len() != 1 {
            return Err(f(
                "rules",
                format!(
                    "has {} rules; a TCPRoute takes exactly one (a TCP connection has nothing to match on): put every backendRef in it with its weight",
                    self.rules.len()
                ),
            ));
        }
        check_rule_name(&self.rules[0].name, "rules[0].name")?;
        check_backends(&self.rules[0].backend_refs, "rules[0].backendRefs", true)
    }
}
