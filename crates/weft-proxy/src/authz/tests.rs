use super::compile::{Attrs, Compiled, Denied, HttpAttrs, Source};
use crate::authn::RequestPrincipal;
use http::HeaderMap;
use prometheus_client::metrics::counter::Counter;
use weft_api::authz::{Authorization, DefaultPolicy};

fn compiled(json: serde_json::Value) -> Compiled {
    let spec: Authorization = serde_json::from_value(json).unwrap();
    spec.validate().unwrap();
    Compiled::new(&spec, "mesh.local", &|_, _| Counter::default())
}

fn web() -> Source {
    Source {
        principal: Some("spiffe://mesh.local/ns/shop/sa/web".into()),
        namespace: Some("shop".into()),
        trust_domain: Some("mesh.local".into()),
        ip: "10.1.2.3".parse().unwrap(),
    }
}

fn http<'a>(
    source: &'a Source,
    method: &'a str,
    path: &'a str,
    headers: &'a HeaderMap,
    jwt: Option<&'a RequestPrincipal>,
) -> Attrs<'a> {
    Attrs {
        source,
        cluster: Some("east"),
        port: 8080,
        http: Some(HttpAttrs { host: "api.shop", method, path, grpc: false, headers, principal: jwt }),
    }
}

fn policy(name: &str, action: &str, rules: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "name": name, "spec": { "action": action, "rules": rules } })
}

#[test]
fn deny_beats_allow_and_once_an_allow_exists_an_unmatched_request_is_denied() {
    let h = HeaderMap::new();
    let s = web();
    let c = compiled(serde_json::json!({ "policies": [
        policy("shop/allow", "ALLOW", serde_json::json!([{ "to": [{ "operation": { "paths": ["/public/*", "/both"] } }] }])),
        policy("shop/deny", "DENY", serde_json::json!([{ "to": [{ "operation": { "paths": ["/both"] } }] }])),
    ]}));
    assert_eq!(c.decide(&http(&s, "GET", "/public/x", &h, None)), Ok(()));
    assert_eq!(c.decide(&http(&s, "GET", "/both", &h, None)), Err(Denied::Policy("shop/deny".into())));
    assert_eq!(c.decide(&http(&s, "GET", "/other", &h, None)), Err(Denied::NoAllowMatched));
    // An ALLOW policy without rules allows nothing.
    let c = compiled(serde_json::json!({ "policies": [policy("shop/nothing", "ALLOW", serde_json::json!([]))] }));
    assert_eq!(c.decide(&http(&s, "GET", "/", &h, None)), Err(Denied::NoAllowMatched));
}

#[test]
fn defaults_decide_when_no_allow_applies() {
    let h = HeaderMap::new();
    let s = web();
    let other = Source {
        trust_domain: Some("east.local".into()),
        principal: Some("spiffe://east.local/ns/shop/sa/web".into()),
        ..web()
    };
    let plain = Source { principal: None, namespace: None, trust_domain: None, ..web() };
    let d = |default: &str| compiled(serde_json::json!({ "default": default }));
    let ok = |c: &Compiled, src: &Source| c.decide(&http(src, "GET", "/", &h, None)).is_ok();
    assert!(
        ok(&d("all-authenticated"), &s) && ok(&d("all-authenticated"), &other) && !ok(&d("all-authenticated"), &plain)
    );
    assert!(ok(&d("all-unauthenticated"), &plain));
    assert!(ok(&d("cluster-authenticated"), &s) && !ok(&d("cluster-authenticated"), &other));
    assert!(!ok(&d("deny"), &s));
    assert_eq!(d("deny").decide(&http(&s, "GET", "/", &h, None)), Err(Denied::Default(DefaultPolicy::Deny)));
    assert_eq!(Denied::Default(DefaultPolicy::ClusterAuthenticated).label(), "default-cluster-authenticated");
}

#[test]
fn sources_match_by_principal_glob_namespace_cluster_and_ip_block() {
    let h = HeaderMap::new();
    let s = web();
    let allow = |source: serde_json::Value| {
        compiled(
            serde_json::json!({ "policies": [policy("p/a", "ALLOW", serde_json::json!([{ "from": [{ "source": source }] }]))] }),
        )
    };
    let ok = |c: &Compiled| c.decide(&http(&s, "GET", "/", &h, None)).is_ok();
    assert!(ok(&allow(serde_json::json!({ "principals": ["spiffe://mesh.local/ns/shop/*"] }))));
    assert!(ok(&allow(serde_json::json!({ "principals": ["mesh.local/ns/shop/sa/web"] }))), "Istio's spelling");
    assert!(!ok(&allow(serde_json::json!({ "principals": ["spiffe://mesh.local/ns/other/*"] }))));
    assert!(ok(&allow(serde_json::json!({ "namespaces": ["sh*"] }))));
    assert!(
        ok(&allow(serde_json::json!({ "clusters": ["east"] })))
            && !ok(&allow(serde_json::json!({ "clusters": ["west"] })))
    );
    assert!(
        ok(&allow(serde_json::json!({ "ipBlocks": ["10.0.0.0/8"] })))
            && !ok(&allow(serde_json::json!({ "ipBlocks": ["10.2.0.0/16"] })))
    );
    // Every list present must match.
    assert!(!ok(&allow(serde_json::json!({ "namespaces": ["shop"], "ipBlocks": ["192.168.0.0/16"] }))));
}

#[test]
fn operations_conditions_and_jwt_principals_match_http_requests() {
    let s = web();
    let mut h = HeaderMap::new();
    h.insert("x-tenant", "blue".parse().unwrap());
    let jwt = RequestPrincipal {
        issuer: "https://idp".into(),
        subject: "alice".into(),
        audiences: vec![],
        claims: serde_json::json!({ "groups": ["dev", "admin"], "org": { "team": "pay" } })
            .as_object()
            .unwrap()
            .clone(),
    };
    let c = compiled(serde_json::json!({ "policies": [policy("p/a", "ALLOW", serde_json::json!([{
        "from": [{ "source": { "requestPrincipals": ["https://idp/*"] } }],
        "to": [{ "operation": { "methods": ["POST"], "paths": ["/pay/*"], "hosts": ["API.*"] } }],
        "when": [
            { "key": "request.headers[X-Tenant]", "values": ["blue", "green"] },
            { "key": "request.auth.claims[groups]", "values": ["admin"] },
            { "key": "request.auth.claims[org][team]", "values": ["pay"] },
        ],
    }]))] }));
    assert_eq!(c.decide(&http(&s, "POST", "/pay/1", &h, Some(&jwt))), Ok(()));
    assert!(c.decide(&http(&s, "GET", "/pay/1", &h, Some(&jwt))).is_err(), "method");
    assert!(c.decide(&http(&s, "POST", "/other", &h, Some(&jwt))).is_err(), "path");
    assert!(c.decide(&http(&s, "POST", "/pay/1", &h, None)).is_err(), "no JWT");
    let bob = RequestPrincipal { claims: serde_json::Map::new(), ..jwt.clone() };
    assert!(c.decide(&http(&s, "POST", "/pay/1", &h, Some(&bob))).is_err(), "claims");
    assert!(c.decide(&http(&s, "POST", "/pay/1", &HeaderMap::new(), Some(&jwt))).is_err(), "header");
    // gRPC methods match gRPC requests only.
    let g = compiled(
        serde_json::json!({ "policies": [policy("p/g", "ALLOW", serde_json::json!([{ "to": [{ "operation": { "grpcMethods": ["shop.Cart/*"] } }] }]))] }),
    );
    let mut a = http(&s, "POST", "/shop.Cart/Add", &h, None);
    assert!(g.decide(&a).is_err());
    a.http.as_mut().unwrap().grpc = true;
    assert!(g.decide(&a).is_ok());
}

#[test]
fn on_opaque_tcp_http_fields_never_allow_and_always_deny() {
    let s = web();
    let l4 = Attrs { source: &s, cluster: None, port: 5432, http: None };
    let allow = compiled(
        serde_json::json!({ "policies": [policy("p/a", "ALLOW", serde_json::json!([{ "to": [{ "operation": { "paths": ["/*"] } }] }]))] }),
    );
    assert_eq!(allow.decide(&l4), Err(Denied::NoAllowMatched));
    let deny = compiled(
        serde_json::json!({ "policies": [policy("p/d", "DENY", serde_json::json!([{ "to": [{ "operation": { "methods": ["DELETE"], "ports": [5432] } }] }]))] }),
    );
    assert_eq!(deny.decide(&l4), Err(Denied::Policy("p/d".into())));
    let other_port = Attrs { port: 8080, ..l4 };
    assert_eq!(deny.decide(&other_port), Ok(()));
}
