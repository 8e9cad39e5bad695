use super::*;
use crate::resource::{parse_documents, Resource};

fn http(spec: &str) -> Result<Vec<Resource>, ConfigError> {
    parse_documents(&format!("apiVersion: weft.io/v1alpha1\nkind: HTTPRoute\nmetadata: {{ name: r }}\nspec:\n{spec}"))
}

fn err(spec: &str) -> String {
    http(spec).unwrap_err().to_string()
}

const CANARY: &str = "  parentRefs: [{ name: api }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: /v2 }, headers: [{ name: x-canary, value: \"yes\" }] }]
      backendRefs: [{ name: api-v2 }]
    - backendRefs: [{ name: api-v1, weight: 90 }, { name: api-v2, weight: 10 }]
      timeouts: { request: 5s, backendRequest: 2s }
";

#[test]
fn a_canary_route_parses_and_round_trips() {
    let rs = http(CANARY).unwrap();
    let Resource::HTTPRoute(r) = &rs[0] else { panic!("kind") };
    assert_eq!(r.spec.rules[1].backend_refs[0].weight(), 90);
    assert_eq!(rs[0].route().unwrap().backend_keys("default"), ["api-v1.default", "api-v2.default"]);
    let json = serde_json::to_string(&rs[0].to_object()).unwrap();
    assert_eq!(parse_documents(&json).unwrap(), rs);
}

#[test]
fn bad_input_is_refused_naming_the_field() {
    let e = err("  parentRefs: [{ name: api }]\n  rules: [{ matches: [{ path: { type: RegularExpression, value: \"/a(b\" } }], backendRefs: [{ name: a }] }]\n");
    assert!(e.contains("spec.rules[0].matches[0].path.value") && e.contains("not a valid regular expression"), "{e}");
    let e = err("  parentRefs: [{ name: api }]\n  rules: [{ matches: [{ headers: [{ type: RegularExpression, name: x, value: \"(a{100}){100}(b{100}){100}\" }] }], backendRefs: [{ name: a }] }]\n");
    assert!(e.contains("spec.rules[0].matches[0].headers[0].value") && e.contains("too costly"), "{e}");
    let e = err(
        "  parentRefs: [{ name: api }]\n  rules: [{ backendRefs: [{ name: a, weight: 0 }, { name: b, weight: 0 }] }]\n",
    );
    assert!(e.contains("spec.rules[0].backendRefs") && e.contains("sum to zero"), "{e}");
    let e = err(
        "  parentRefs: [{ name: api }]\n  rules: [{ filters: [{ type: Teleport }], backendRefs: [{ name: a }] }]\n",
    );
    assert!(e.contains("spec.rules[0].filters[0].type") && e.contains("unknown variant"), "{e}");
    let e = err("  parentRefs: [{ name: api }]\n  rules: [{ filters: [{ type: ExtensionRef, extensionRef: {} }], backendRefs: [{ name: a }] }]\n");
    assert!(e.contains("spec.rules[0].filters[0].type") && e.contains("not supported"), "{e}");
    let e = err("  parentRefs: [{ name: api }]\n  rules: [{ filters: [{ type: RequestMirror }], backendRefs: [{ name: a }] }]\n");
    assert!(e.contains("requestMirror") && e.contains("needs its settings"), "{e}");
    let e = err("  parentRefs: [{ name: api }]\n  rules: [{ filters: [{ type: RequestMirror, requestMirror: { backendRef: { name: m }, percent: 150 } }], backendRefs: [{ name: a }] }]\n");
    assert!(e.contains("requestMirror.percent"), "{e}");
    let e = err("  parentRefs: []\n  rules: []\n");
    assert!(e.contains("spec.parentRefs"), "{e}");
    let e = err("  parentRefs: [{ name: api, kind: Gateway }]\n  rules: []\n");
    assert!(e.contains("spec.parentRefs[0].kind") && e.contains("Service"), "{e}");
    let e = err("  parentRefs: [{ name: api }]\n  rules: [{ matches: [{ path: { type: Exact, value: /a } }] }]\n");
    assert!(e.contains("spec.rules[0].backendRefs") && e.contains("500"), "{e}");
    let e = err("  parentRefs: [{ name: api }]\n  rules: [{ backendRefs: [{ name: a }], timeouts: { request: 1s, backendRequest: 2s } }]\n");
    assert!(e.contains("timeouts.backendRequest"), "{e}");
    let e = err("  parentRefs: [{ name: api }]\n  rules: [{ matches: [{ path: { type: Exact, value: /a } }], filters: [{ type: URLRewrite, urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: /b } } }], backendRefs: [{ name: a }] }]\n");
    assert!(e.contains("filters[0].urlRewrite.path.type") && e.contains("PathPrefix"), "{e}");
    let e = err("  parentRefs: [{ name: api }]\n  rules: [{ matches: [{ headers: [{ name: \"bad header\", value: x }] }], backendRefs: [{ name: a }] }]\n");
    assert!(e.contains("headers[0].name"), "{e}");
}

#[test]
fn redirect_loops_are_refused() {
    // /old redirects to /old/new, which the same prefix rule redirects again.
    let e = err("  parentRefs: [{ name: api }]\n  rules:\n    - matches: [{ path: { type: PathPrefix, value: /old } }]\n      filters: [{ type: RequestRedirect, requestRedirect: { path: { type: ReplaceFullPath, replaceFullPath: /old/new } } }]\n");
    assert!(e.contains("spec.rules[0].filters") && e.contains("redirect loop"), "{e}");
    // /a → /b → /a across two rules.
    let e = err("  parentRefs: [{ name: api }]\n  rules:\n    - matches: [{ path: { type: Exact, value: /a } }]\n      filters: [{ type: RequestRedirect, requestRedirect: { path: { type: ReplaceFullPath, replaceFullPath: /b } } }]\n    - matches: [{ path: { type: Exact, value: /b } }]\n      filters: [{ type: RequestRedirect, requestRedirect: { path: { type: ReplaceFullPath, replaceFullPath: /a } } }]\n");
    assert!(e.contains("redirect loop") && e.contains("/a → /b → /a"), "{e}");
    // A redirect to a path no redirect rule takes is fine, as is one to another host.
    http("  parentRefs: [{ name: api }]\n  rules:\n    - matches: [{ path: { type: Exact, value: /a } }]\n      filters: [{ type: RequestRedirect, requestRedirect: { path: { type: ReplaceFullPath, replaceFullPath: /b } } }]\n    - backendRefs: [{ name: api }]\n").unwrap();
    http("  parentRefs: [{ name: api }]\n  rules:\n    - filters: [{ type: RequestRedirect, requestRedirect: { hostname: new.example } }]\n").unwrap();
}

#[test]
fn grpc_and_tcp_routes_are_checked() {
    let g = |spec: &str| {
        parse_documents(&format!(
            "apiVersion: weft.io/v1alpha1\nkind: GRPCRoute\nmetadata: {{ name: g }}\nspec:\n{spec}"
        ))
    };
    g("  parentRefs: [{ name: api }]\n  rules: [{ matches: [{ method: { service: echo.Echo, method: Say } }], backendRefs: [{ name: a }] }]\n").unwrap();
    let e = g("  parentRefs: [{ name: api }]\n  rules: [{ matches: [{ method: {} }], backendRefs: [{ name: a }] }]\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("spec.rules[0].matches[0].method"), "{e}");
    let e = g("  parentRefs: [{ name: api }]\n  rules: [{ filters: [{ type: RequestRedirect, requestRedirect: {} }], backendRefs: [{ name: a }] }]\n").unwrap_err().to_string();
    assert!(e.contains("GRPCRoute has no"), "{e}");
    let t = |spec: &str| {
        parse_documents(&format!(
            "apiVersion: weft.io/v1alpha1\nkind: TCPRoute\nmetadata: {{ name: t }}\nspec:\n{spec}"
        ))
    };
    t("  parentRefs: [{ name: db }]\n  rules: [{ backendRefs: [{ name: db-a, weight: 3 }, { name: db-b, weight: 1 }] }]\n").unwrap();
    let e =
        t("  parentRefs: [{ name: db }]\n  rules: [{ backendRefs: [{ name: a }] }, { backendRefs: [{ name: b }] }]\n")
            .unwrap_err()
            .to_string();
    assert!(e.contains("spec.rules") && e.contains("exactly one"), "{e}");
}

#[test]
fn missing_services_are_accepted_with_conditions() {
    let rs = http(CANARY).unwrap();
    let route = rs[0].route().unwrap();
    let c = conditions(&route, "default", &|k| k == "api.default" || k == "api-v1.default");
    assert_eq!((c[0].kind.as_str(), c[0].status.as_str()), ("Accepted", "True"));
    assert_eq!(
        (c[1].kind.as_str(), c[1].status.as_str(), c[1].reason.as_str()),
        ("ResolvedRefs", "False", "BackendNotFound")
    );
    assert!(c[1].message.contains("api-v2.default"), "{}", c[1].message);
    let c = conditions(&route, "default", &|_| false);
    assert_eq!((c[0].status.as_str(), c[0].reason.as_str()), ("False", "NoMatchingParent"));
}

#[test]
fn hostnames_are_checked_and_matched_as_the_gateway_api_says() {
    http("  parentRefs: [{ name: api }]\n  hostnames: [api.example.com, \"*.example.org\"]\n  rules: [{ backendRefs: [{ name: a }] }]\n").unwrap();
    for (h, why) in [
        ("Api.example.com", "lowercase"),
        ("api.example.com:80", "port"),
        ("a*.example.com", "wildcard"),
        ("*", "wildcard"),
        ("10.0.0.1", "IP address"),
        ("-a.example.com", "not a hostname"),
    ] {
        let e = err(&format!("  parentRefs: [{{ name: api }}]\n  hostnames: [ok.example, {h:?}]\n  rules: [{{ backendRefs: [{{ name: a }}] }}]\n"));
        assert!(e.contains("spec.hostnames[1]") && e.contains(why), "{h}: {e}");
    }
    let e = err("  parentRefs: [{ name: api }]\n  hostnames: [a.b, a.b]\n  rules: [{ backendRefs: [{ name: a }] }]\n");
    assert!(e.contains("spec.hostnames[1]") && e.contains("twice"), "{e}");

    assert!(host_matches("api.example.com", "API.example.com."));
    assert!(!host_matches("api.example.com", "xapi.example.com"));
    assert!(host_matches("*.example.com", "a.example.com"));
    assert!(host_matches("*.example.com", "a.b.example.com"));
    assert!(!host_matches("*.example.com", "example.com"));
    assert!(!host_matches("*.example.com", "aexample.com"));
    assert_eq!(strip_port("api.example.com:8080"), "api.example.com");
    assert_eq!(strip_port("api"), "api");
    assert_eq!(strip_port("[::1]:80"), "[::1]");
    assert_eq!(strip_port("::1"), "::1");
}
