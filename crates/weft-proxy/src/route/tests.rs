use super::*;
use weft_api::resource::parse_documents;

fn table(yaml: &str) -> Table {
    let routes: Vec<AttachedRoute> = parse_documents(yaml)
        .unwrap()
        .iter()
        .map(|r| AttachedRoute {
            name: r.metadata().name.clone(),
            namespace: r.metadata().namespace.clone(),
            route: r.route().unwrap(),
            resilience: Default::default(),
        })
        .collect();
    let t = Table::compile("api.default", &routes);
    assert!(t.dropped.is_empty(), "{:?}", t.dropped);
    t
}

fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

fn backend_of(t: &Table, r: &Request<()>) -> Option<String> {
    t.find(r, None).map(|(_, rule)| rule.backends.list[0].key.clone())
}

#[test]
fn weighted_picks_hold_their_share_over_every_window() {
    let refs: Vec<BackendRef> =
        serde_json::from_str(r#"[{"name":"v1","weight":90},{"name":"v2","weight":10}]"#).unwrap();
    let b = Backends::new(&refs, "default");
    // Low discrepancy: in every window of 1,000 consecutive picks, v2 gets 100 ± 3.
    let picks: Vec<bool> = (0..10_000).map(|_| b.pick().unwrap().key == "v2.default").collect();
    for w in picks.chunks(1000) {
        let n = w.iter().filter(|x| **x).count();
        assert!((97..=103).contains(&n), "v2 got {n} of 1000");
    }
    let zero: Vec<BackendRef> = serde_json::from_str(r#"[{"name":"a","weight":0},{"name":"b","weight":3}]"#).unwrap();
    let b = Backends::new(&zero, "default");
    assert!((0..100).all(|_| b.pick().unwrap().key == "b.default"), "weight 0 is never picked");
}

#[test]
fn matches_apply_in_precedence_order() {
    let t = table(
        "apiVersion: weft.io/v1alpha1\nkind: HTTPRoute\nmetadata: { name: r }\nspec:\n  parentRefs: [{ name: api }]\n  rules:\n    - backendRefs: [{ name: all }]\n    - matches: [{ path: { type: PathPrefix, value: /v2/ } }]\n      backendRefs: [{ name: prefix }]\n    - matches: [{ path: { type: PathPrefix, value: /v2 }, headers: [{ name: X-Canary, value: \"on\" }] }]\n      backendRefs: [{ name: canary }]\n    - matches: [{ path: { type: Exact, value: /v2/exact }, method: POST }]\n      backendRefs: [{ name: exact }]\n    - matches: [{ path: { type: RegularExpression, value: \"/users/[0-9]+\" }, queryParams: [{ name: debug, value: \"1\" }] }]\n      backendRefs: [{ name: regex }]\n",
    );
    let b = |m: &str, u: &str, h: &[(&str, &str)]| backend_of(&t, &req(m, u, h)).unwrap();
    assert_eq!(b("GET", "/", &[]), "all.default");
    assert_eq!(b("GET", "/v2", &[]), "prefix.default");
    assert_eq!(b("GET", "/v2/x", &[]), "prefix.default");
    assert_eq!(b("GET", "/v20", &[]), "all.default", "a prefix matches at a '/' boundary only");
    assert_eq!(b("GET", "/v2/x", &[("x-canary", "on")]), "canary.default", "more headers win over equal paths");
    assert_eq!(b("GET", "/v2/x", &[("x-canary", "off")]), "prefix.default");
    assert_eq!(b("POST", "/v2/exact", &[("x-canary", "on")]), "exact.default", "Exact beats any prefix");
    assert_eq!(b("GET", "/v2/exact", &[]), "prefix.default", "the method must match");
    assert_eq!(b("GET", "/users/42?debug=1", &[]), "regex.default");
    assert_eq!(b("GET", "/users/42x?debug=1", &[]), "all.default", "a regex matches the whole path");
    assert_eq!(b("GET", "/users/42?debug=0", &[]), "all.default");
}

#[test]
fn grpc_routes_match_service_and_method_of_grpc_requests_only() {
    let t = table(
        "apiVersion: weft.io/v1alpha1\nkind: GRPCRoute\nmetadata: { name: g }\nspec:\n  parentRefs: [{ name: api }]\n  rules:\n    - matches: [{ method: { service: echo.Echo, method: Say } }]\n      backendRefs: [{ name: say }]\n    - matches: [{ method: { service: echo.Echo } }]\n      backendRefs: [{ name: echo }]\n    - matches: [{ method: { method: Ping } }]\n      backendRefs: [{ name: ping }]\n",
    );
    let grpc = [("content-type", "application/grpc")];
    let b = |u: &str, h: &[(&str, &str)]| backend_of(&t, &req("POST", u, h));
    assert_eq!(b("/echo.Echo/Say", &grpc).unwrap(), "say.default");
    assert_eq!(b("/echo.Echo/Other", &grpc).unwrap(), "echo.default");
    assert_eq!(b("/other.Svc/Ping", &grpc).unwrap(), "ping.default");
    assert_eq!(b("/other.Svc/Pong", &grpc), None);
    assert_eq!(b("/echo.Echo/Say", &[]), None, "not gRPC: no GRPCRoute applies");
}

#[test]
fn filters_rewrite_redirect_and_modify_headers() {
    let t = table(
        "apiVersion: weft.io/v1alpha1\nkind: HTTPRoute\nmetadata: { name: r }\nspec:\n  parentRefs: [{ name: api }]\n  rules:\n    - matches: [{ path: { type: PathPrefix, value: /old } }]\n      filters: [{ type: RequestRedirect, requestRedirect: { path: { type: ReplacePrefixMatch, replacePrefixMatch: /new }, statusCode: 301 } }]\n    - matches: [{ path: { type: PathPrefix, value: /api } }]\n      filters:\n        - { type: URLRewrite, urlRewrite: { hostname: internal, path: { type: ReplacePrefixMatch, replacePrefixMatch: / } } }\n        - { type: RequestHeaderModifier, requestHeaderModifier: { set: [{ name: x-a, value: \"1\" }], add: [{ name: x-b, value: \"2\" }], remove: [x-secret] } }\n        - { type: ResponseHeaderModifier, responseHeaderModifier: { set: [{ name: x-served-by, value: route }] } }\n      backendRefs: [{ name: api }]\n",
    );
    let r = req("GET", "/old/page?q=1", &[("host", "api:8080")]);
    let (m, rule) = t.find(&r, None).unwrap();
    let resp = rule.filters.redirect(&r, m.prefix()).unwrap();
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], "http://api:8080/new/page?q=1");

    let mut r = req("GET", "/api/users?x=1", &[("host", "api:8080"), ("x-secret", "s"), ("x-b", "0")]);
    let (m, rule) = t.find(&r, None).unwrap();
    let prefix = m.prefix().map(str::to_string);
    assert!(rule.filters.redirect(&r, prefix.as_deref()).is_none());
    rule.filters.on_request(&mut r, prefix.as_deref());
    assert_eq!(r.uri().path_and_query().unwrap().as_str(), "/users?x=1");
    assert_eq!(r.headers()["host"], "internal");
    assert_eq!(r.headers()["x-a"], "1");
    assert_eq!(r.headers().get_all("x-b").iter().count(), 2);
    assert!(r.headers().get("x-secret").is_none());
    let mut resp = Response::new(crate::httputil::full(""));
    rule.filters.on_response(&mut resp);
    assert_eq!(resp.headers()["x-served-by"], "route");
}

#[test]
fn an_httproute_and_a_grpcroute_of_one_name_keep_their_rules_and_policies_apart() {
    let t = table(
        "apiVersion: weft.io/v1alpha1\nkind: HTTPRoute\nmetadata: { name: r }\nspec: { parentRefs: [{ name: api }], rules: [{ backendRefs: [{ name: web }] }] }\n---\n\
         apiVersion: weft.io/v1alpha1\nkind: GRPCRoute\nmetadata: { name: r }\nspec: { parentRefs: [{ name: api }], rules: [{ backendRefs: [{ name: echo }] }] }\n",
    );
    let grpc = [("content-type", "application/grpc")];
    assert_eq!(backend_of(&t, &req("POST", "http://api/echo.Echo/Say", &grpc)).unwrap(), "echo.default");
    assert_eq!(backend_of(&t, &req("GET", "http://api/", &[])).unwrap(), "web.default");
    let route = |kind: &str| AttachedRoute {
        name: "r".into(),
        namespace: "default".into(),
        route: serde_json::from_value(serde_json::json!({ "kind": kind, "spec": { "parentRefs": [], "rules": [] } }))
            .unwrap(),
        resilience: Default::default(),
    };
    assert_eq!(policy_key(&route("HTTPRoute"), "rules[0]"), "default/r#rules[0]");
    assert_eq!(policy_key(&route("GRPCRoute"), "rules[0]"), "grpc:default/r#rules[0]");
}

#[test]
fn a_mirror_copies_its_share_of_requests() {
    let m: weft_api::route::RequestMirror =
        serde_json::from_str(r#"{"backendRef":{"name":"shadow"},"percent":25}"#).unwrap();
    let mirror = Mirror::new(&m, "default");
    // Evenly spread: 25 of every 100 consecutive requests, within 2.
    let chosen: Vec<bool> = (0..10_000).map(|_| mirror.chosen()).collect();
    for w in chosen.chunks(100) {
        let n = w.iter().filter(|x| **x).count();
        assert!((23..=27).contains(&n), "{n} of 100 copied");
    }
    let all: weft_api::route::RequestMirror = serde_json::from_str(r#"{"backendRef":{"name":"shadow"}}"#).unwrap();
    let mirror = Mirror::new(&all, "default");
    assert!((0..100).all(|_| mirror.chosen()));
    let none: weft_api::route::RequestMirror =
        serde_json::from_str(r#"{"backendRef":{"name":"shadow"},"fraction":{"numerator":0,"denominator":7}}"#).unwrap();
    let mirror = Mirror::new(&none, "default");
    assert!((0..100).all(|_| !mirror.chosen()));
}

#[test]
fn a_config_file_carries_routes_and_its_bad_ones_are_named() {
    let yaml = |re: &str| {
        format!(
            "identity: {{ cert: c.pem, key: k.pem, bundle: b.pem }}\noutbound: {{ upstreams: [{{ listen: \"127.0.0.1:0\", service: api }}] }}\nservices:\n  - name: api\n    routes:\n      - name: r\n        namespace: default\n        kind: HTTPRoute\n        spec:\n          parentRefs: [{{ name: api }}]\n          rules:\n            - matches: [{{ path: {{ type: RegularExpression, value: \"{re}\" }} }}]\n              backendRefs: [{{ name: api-v2 }}]\n  - name: api-v2\n"
        )
    };
    let cfg = weft_api::proxy::ProxyConfig::from_yaml(&yaml("/v[0-9]+")).unwrap();
    let routes = crate::routes::Routes::try_from(&cfg).unwrap();
    let table = routes.service("api", "default").unwrap().route.clone().unwrap();
    assert_eq!(table.entries.len(), 1);
    let err = weft_api::proxy::ProxyConfig::from_yaml(&yaml("/v(")).unwrap_err().to_string();
    assert!(err.contains("services[0].routes[0].spec.rules[0].matches[0].path.value"), "{err}");
}

#[test]
fn an_attached_route_with_an_unknown_field_is_refused() {
    let r: Result<AttachedRoute, _> = serde_json::from_str(
        r#"{"name":"r","namespace":"default","kind":"TCPRoute","spec":{"parentRefs":[{"name":"db"}],"rules":[{"backendRefs":[{"name":"a"}]}]},"colour":"red"}"#,
    );
    assert!(r.is_err(), "{r:?}");
    let r: Result<AttachedRoute, _> = serde_json::from_str(
        r#"{"name":"r","namespace":"default","kind":"TCPRoute","spec":{"parentRefs":[{"name":"db"}],"rules":[{"backendRefs":[{"name":"a"}]}]}}"#,
    );
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn a_parent_port_limits_the_route_to_that_port_of_that_service() {
    let t = table(
        "apiVersion: weft.io/v1alpha1\nkind: HTTPRoute\nmetadata: { name: r }\nspec:\n  parentRefs: [{ name: web, port: 9090 }, { name: api, port: 8080 }]\n  rules: [{ backendRefs: [{ name: v2 }] }]\n",
    );
    let r = req("GET", "/", &[]);
    assert!(t.find(&r, Some(8080)).is_some());
    assert!(t.find(&r, Some(9090)).is_none(), "9090 is web's port, not api's");
    assert!(t.find(&r, None).is_some(), "a port unknown to the proxy (each endpoint's own) matches");
}

#[test]
fn hostnames_scope_a_route_and_the_most_specific_host_comes_first() {
    let t = table(
        "apiVersion: weft.io/v1alpha1\nkind: HTTPRoute\nmetadata: { name: any }\nspec:\n  parentRefs: [{ name: api }]\n  rules:\n    - matches: [{ path: { type: Exact, value: /x } }]\n      backendRefs: [{ name: any }]\n---\napiVersion: weft.io/v1alpha1\nkind: HTTPRoute\nmetadata: { name: wild }\nspec:\n  parentRefs: [{ name: api }]\n  hostnames: [\"*.example.com\"]\n  rules:\n    - matches: [{ path: { type: PathPrefix, value: /y } }]\n      backendRefs: [{ name: wild }]\n---\napiVersion: weft.io/v1alpha1\nkind: HTTPRoute\nmetadata: { name: exact }\nspec:\n  parentRefs: [{ name: api }]\n  hostnames: [a.example.com]\n  rules:\n    - backendRefs: [{ name: exact }]\n",
    );
    let b = |u: &str, h: &[(&str, &str)]| backend_of(&t, &req("GET", u, h));
    // HTTP/2 (:authority, here the URI's) and HTTP/1 (Host header), ports stripped.
    assert_eq!(b("http://a.example.com:8080/x", &[]).unwrap(), "exact.default", "an exact host before any path rule");
    assert_eq!(b("/x", &[("host", "A.Example.com")]).unwrap(), "exact.default");
    assert_eq!(b("http://b.example.com/y/1", &[]).unwrap(), "wild.default");
    assert_eq!(b("http://b.example.com/x", &[]).unwrap(), "any.default", "falls through to a route for every host");
    assert_eq!(b("http://example.com/y", &[]), None, "*.example.com does not take example.com");
    assert_eq!(b("/x", &[("host", "api")]).unwrap(), "any.default");
    assert_eq!(b("/y", &[]), None, "no host: only routes without hostnames apply");
}
