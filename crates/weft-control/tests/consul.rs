//! The Consul-compatible HTTP API as Consul clients use it: the token forms, index headers and
//! blocking queries, case-insensitive JSON keys, the agent/health/catalog reads, TTL updates by
//! Consul check id, per-instance tags and the 501 for what is not supported. A real control plane
//! on 127.0.0.1; the py-consul library itself is driven from weft-cli's `consul_client` test.

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};
use std::time::Duration;
use weft_control::{ControlConfig, ControlPlane};
use weft_testkit::{api_request, eventually};

mod common;
use common::{query_a, tempdir};

const DEADLINE: Duration = Duration::from_secs(10);

async fn control(name: &str) -> ControlPlane {
    let mut cfg = ControlConfig::new(tempdir(name));
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    cfg.dns = Some("127.0.0.1:0".parse().unwrap());
    ControlPlane::start(cfg).await.expect("control plane")
}

struct Resp {
    status: u16,
    headers: http::HeaderMap,
    body: Value,
}

/// A request with the given extra headers (no token unless one is among them).
async fn call(cp: &ControlPlane, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut req = http::Request::builder().method(method).uri(path).header("host", "cp");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = api_request(cp.api_addr, cp.api_client_tls(), req).await.unwrap();
    let body = serde_json::from_slice(resp.body()).unwrap_or_else(|_| Value::String(format!("{:?}", resp.body())));
    Resp { status: resp.status().as_u16(), headers: resp.headers().clone(), body }
}

/// A request with the admin token in `X-Consul-Token`, as Consul clients send it.
async fn consul(cp: &ControlPlane, method: &str, path: &str, body: &str) -> Resp {
    call(cp, method, path, &[("x-consul-token", &cp.admin_token)], body).await
}

#[tokio::test]
async fn every_consul_token_form_is_accepted_and_none_is_refused_clearly() {
    let cp = control("tokens").await;
    let tok = cp.admin_token.clone();
    for (what, headers, query) in [
        ("X-Consul-Token", vec![("x-consul-token", tok.clone())], String::new()),
        ("?token=", vec![], format!("?token={tok}")),
        ("Bearer", vec![("authorization", format!("Bearer {tok}"))], String::new()),
        ("BEARER", vec![("authorization", format!("BEARER {tok}"))], String::new()),
        ("bEaReR", vec![("authorization", format!("bEaReR {tok}"))], String::new()),
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = call(&cp, "GET", &format!("/v1/catalog/services{query}"), &h, "").await;
        assert_eq!(r.status, 200, "{what}: {}", r.body);
    }
    assert_eq!(consul(&cp, "GET", "/v1/catalog/services", "").await.status, 200);
    let r = call(&cp, "GET", "/v1/catalog/services", &[], "").await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/json");
    let msg = r.body["error"].as_str().unwrap();
    assert!(msg.contains("X-Consul-Token") && msg.contains("authorization: Bearer"), "{msg}");
    let r = call(&cp, "GET", "/v1/catalog/services", &[("x-consul-token", "wft_00.00")], "").await;
    assert_eq!(r.status, 401, "{}", r.body);
}

fn index(r: &Resp) -> u64 {
    r.headers.get("x-consul-index").expect("X-Consul-Index").to_str().unwrap().parse().unwrap()
}

async fn register(cp: &ControlPlane, body: Value) -> Resp {
    let r = consul(cp, "PUT", "/v1/agent/service/register", &body.to_string()).await;
    assert_eq!(r.status, 200, "{body}: {}", r.body);
    r
}

#[tokio::test]
async fn reads_carry_the_index_headers_and_block_until_the_catalog_moves() {
    let cp = control("index").await;
    let first = consul(&cp, "GET", "/v1/catalog/services", "").await;
    assert_eq!(first.status, 200);
    let n = index(&first);
    assert!(n > 0, "Consul indexes start at 1");
    assert_eq!(first.headers["x-consul-knownleader"], "true");
    assert_eq!(first.headers["x-consul-lastcontact"], "0");
    for path in ["/v1/catalog/service/api", "/v1/catalog/nodes", "/v1/health/service/api", "/v1/agent/services"] {
        assert_eq!(index(&consul(&cp, "GET", path, "").await), n, "{path}");
    }

    // Nothing changes: the wait runs out and the same index comes back.
    let idle = consul(&cp, "GET", &format!("/v1/catalog/services?index={n}&wait=200ms"), "").await;
    assert_eq!((idle.status, index(&idle), idle.body.clone()), (200, n, json!({})));

    // A registration moves the catalog: the blocked read returns with it.
    let blocked = {
        let (addr, tok, tls) = (cp.api_addr, cp.admin_token.clone(), cp.api_client_tls());
        tokio::spawn(async move {
            let req = http::Request::get(format!("/v1/health/service/api?index={n}&wait=60s"))
                .header("host", "cp")
                .header("x-consul-token", tok)
                .body(Full::new(Bytes::new()))
                .unwrap();
            api_request(addr, tls, req).await.unwrap()
        })
    };
    register(&cp, json!({"ID": "api-1", "Name": "api", "Address": "127.0.0.1", "Port": 8080})).await;
    let resp = tokio::time::timeout(DEADLINE, blocked).await.expect("the blocking query returns").unwrap();
    let moved: u64 = resp.headers()["x-consul-index"].to_str().unwrap().parse().unwrap();
    assert!(moved > n, "{moved} > {n}");
    let body: Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(body[0]["Service"]["ID"], "api-1", "{body}");

    // An index the control plane is not at (e.g. from before a restart) answers at once.
    let ahead = consul(&cp, "GET", &format!("/v1/catalog/services?index={}&wait=10m", moved + 100), "").await;
    assert_eq!(index(&ahead), moved);
    let bad = consul(&cp, "GET", "/v1/catalog/services?index=x", "").await;
    assert_eq!(bad.status, 400);
    assert!(bad.body["error"].as_str().unwrap().starts_with("index: "), "{}", bad.body);
}

#[tokio::test]
async fn registration_keys_match_in_any_case_and_ignored_fields_are_named() {
    let cp = control("keys").await;
    // What py-consul sends: lowercase and snake_case keys.
    let r = register(
        &cp,
        json!({"name": "api", "id": "api-1", "address": "127.0.0.1", "port": 8080, "tags": ["v1"],
            "meta": {"someKey": "x"}, "checks": [{"ttl": "10m", "checkid": "hb"}],
            "enabletagoverride": false, "tagged_addresses": {}, "weights": {"Passing": 1}}),
    )
    .await;
    let ignored = r.headers["x-weft-ignored-fields"].to_str().unwrap().to_string();
    for f in ["enabletagoverride", "tagged_addresses", "weights"] {
        assert!(ignored.contains(f), "{ignored}");
    }
    let svc = consul(&cp, "GET", "/v1/agent/services", "").await;
    assert_eq!(svc.body["api-1"]["Tags"], json!(["v1"]), "{}", svc.body);
    assert_eq!(svc.body["api-1"]["Meta"]["someKey"], "x", "user map keys keep their case: {}", svc.body);
    let checks = consul(&cp, "GET", "/v1/agent/checks", "").await;
    assert_eq!(checks.body["hb"]["ServiceID"], "api-1", "{}", checks.body);
    // Any case, also PascalCase and UPPER.
    register(&cp, json!({"NAME": "api", "ID": "api-2", "Address": "127.0.0.2", "PORT": 8080})).await;
    // A missing field is still named.
    let r = consul(&cp, "PUT", "/v1/agent/service/register", r#"{"name":"api","port":1}"#).await;
    assert_eq!(r.status, 400);
    assert!(r.body["error"].as_str().unwrap().contains("Address"), "{}", r.body);
}

#[tokio::test]
async fn agent_health_and_catalog_reads_answer_as_consul_does() {
    let cp = control("reads").await;
    for (id, ip) in [("api-1", "127.0.0.1"), ("api-2", "127.0.0.2")] {
        register(&cp, json!({"ID": id, "Name": "api", "Address": ip, "Port": 8080, "Check": {"TTL": "10m"}})).await;
    }
    assert_eq!(consul(&cp, "PUT", "/v1/agent/check/pass/service:api-1", "").await.status, 200);

    let passing = eventually("only api-1 passes", DEADLINE, || async {
        let r = consul(&cp, "GET", "/v1/health/service/api?passing", "").await;
        (r.body.as_array()?.len() == 1).then_some(r.body)
    })
    .await;
    assert_eq!(passing[0]["Service"]["ID"], "api-1");
    assert_eq!(passing[0]["Service"]["Service"], "api");
    assert_eq!(passing[0]["Node"]["Address"], "127.0.0.1");
    assert_eq!(passing[0]["Checks"][0]["Status"], "passing");
    let all = consul(&cp, "GET", "/v1/health/service/api", "").await;
    assert_eq!(all.body.as_array().unwrap().len(), 2);

    let services = consul(&cp, "GET", "/v1/agent/services", "").await;
    assert_eq!(services.body["api-2"]["Port"], 8080, "{}", services.body);
    let checks = consul(&cp, "GET", "/v1/agent/checks", "").await;
    assert_eq!(checks.body["service:api-1"]["Status"], "passing", "{}", checks.body);
    assert_eq!(checks.body["service:api-2"]["Status"], "critical", "{}", checks.body);
    // No token needed (py-consul's agent.self() sends none).
    let me = call(&cp, "GET", "/v1/agent/self", &[], "").await;
    assert_eq!(me.body["Config"]["Datacenter"], "local", "{}", me.body);
    assert!(me.body["Config"]["NodeName"].is_string() && me.body["Member"]["Name"].is_string(), "{}", me.body);

    let hc = consul(&cp, "GET", "/v1/health/checks/api", "").await;
    assert_eq!(hc.body.as_array().unwrap().len(), 2, "{}", hc.body);
    let crit = consul(&cp, "GET", "/v1/health/state/critical", "").await;
    let ids: Vec<&str> = crit.body.as_array().unwrap().iter().map(|c| c["CheckID"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["service:api-2"]);
    assert_eq!(consul(&cp, "GET", "/v1/health/state/any", "").await.body.as_array().unwrap().len(), 2);
    let bad = consul(&cp, "GET", "/v1/health/state/sick", "").await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body["error"].as_str().unwrap().contains("any, passing, warning or critical"));

    let nodes = consul(&cp, "GET", "/v1/catalog/nodes", "").await;
    let names: Vec<&str> = nodes.body.as_array().unwrap().iter().map(|n| n["Node"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["api-1", "api-2"]);
    let one = consul(&cp, "GET", "/v1/catalog/service/api", "").await;
    assert_eq!(one.body[1]["ServiceAddress"], "127.0.0.2", "{}", one.body);
    assert_eq!(one.body[1]["Node"], "api-2");
    // A read token reads; it does not write.
    let read = {
        let r = consul(&cp, "POST", "/v1/tokens", r#"{"kind":"read"}"#).await;
        r.body["token"].as_str().unwrap().to_string()
    };
    assert_eq!(call(&cp, "GET", "/v1/agent/checks", &[("x-consul-token", &read)], "").await.status, 200);
    let w = call(&cp, "PUT", "/v1/agent/check/pass/service:api-2", &[("x-consul-token", &read)], "").await;
    assert_eq!(w.status, 403, "{}", w.body);
}

#[tokio::test]
async fn ttl_checks_answer_to_consul_check_ids_and_keep_the_note() {
    let cp = control("ttl").await;
    register(&cp, json!({"ID": "one", "Name": "api", "Address": "127.0.0.1", "Port": 80, "Check": {"TTL": "10m"}}))
        .await;
    register(
        &cp,
        json!({"ID": "two", "Name": "api", "Address": "127.0.0.2", "Port": 80,
            "Checks": [{"TTL": "10m", "CheckID": "two-heartbeat", "Name": "heartbeat"}, {"TTL": "10m"}, {"TTL": "10m"}]}),
    )
    .await;
    let check = |id: &'static str| {
        let cp = &cp;
        async move { consul(cp, "GET", "/v1/agent/checks", "").await.body[id].clone() }
    };
    for (path, body, id, status, output) in [
        ("pass/service:one?note=all%20good", "", "service:one", "passing", "all good"),
        ("warn/two-heartbeat?note=slow", "", "two-heartbeat", "warning", "slow"),
        ("fail/service:two:2", "", "service:two:2", "critical", ""),
        ("update/service:two:3", r#"{"Status":"passing","Output":"fine"}"#, "service:two:3", "passing", "fine"),
        (
            "update/service:two:2",
            r#"{"status":"warning","output":"lower case"}"#,
            "service:two:2",
            "warning",
            "lower case",
        ),
        // weft's own form still works, the body as the output.
        ("pass/default/two/heartbeat", "body text", "two-heartbeat", "passing", "body text"),
    ] {
        let r = consul(&cp, "PUT", &format!("/v1/agent/check/{path}"), body).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let c = check(id).await;
        assert_eq!((c["Status"].as_str(), c["Output"].as_str()), (Some(status), Some(output)), "{path}: {c}");
    }
    assert_eq!(check("two-heartbeat").await["Name"], "heartbeat");
    let r = consul(&cp, "PUT", "/v1/agent/check/pass/service:nope", "").await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = consul(&cp, "PUT", "/v1/agent/check/update/service:one", r#"{"Status":"sick"}"#).await;
    assert_eq!(r.status, 400);
    assert!(r.body["error"].as_str().unwrap().starts_with("Status: \"sick\""), "{}", r.body);
}

#[tokio::test]
async fn tags_are_per_instance_and_filter_the_catalog_health_and_dns() {
    let cp = control("tags").await;
    let dns = cp.dns_addr.unwrap();
    register(&cp, json!({"ID": "api-green", "Name": "api", "Address": "127.0.0.11", "Port": 80, "Tags": ["green"]}))
        .await;
    register(&cp, json!({"ID": "api-blue", "Name": "api", "Address": "127.0.0.12", "Port": 80, "Tags": ["blue"]}))
        .await;
    let blue = consul(&cp, "GET", "/v1/catalog/service/api?tag=blue", "").await;
    let ids: Vec<&str> = blue.body.as_array().unwrap().iter().map(|i| i["ServiceID"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["api-blue"], "{}", blue.body);
    assert_eq!(blue.body[0]["ServiceTags"], json!(["blue"]));
    let green = consul(&cp, "GET", "/v1/catalog/service/api", "").await;
    let green = green.body.as_array().unwrap().iter().find(|i| i["ServiceID"] == "api-green").unwrap().clone();
    assert_eq!(green["ServiceTags"], json!(["green"]), "the first registration's tags are not the service's");
    let h = consul(&cp, "GET", "/v1/health/service/api?tag=green", "").await;
    assert_eq!(h.body.as_array().unwrap().len(), 1, "{}", h.body);
    let services = consul(&cp, "GET", "/v1/catalog/services", "").await;
    assert_eq!(services.body["api"], json!(["blue", "green"]));

    for (name, want) in [("blue.api.service.consul.", "127.0.0.12"), ("green.api.service.consul.", "127.0.0.11")] {
        let got = eventually(name, DEADLINE, || async move {
            let a = query_a(dns, name).await;
            (!a.is_empty()).then_some(a)
        })
        .await;
        assert_eq!(got, vec![want.to_string()], "{name}");
    }

    // A service with no instances left is no longer listed.
    for id in ["api-green", "api-blue"] {
        assert_eq!(consul(&cp, "PUT", &format!("/v1/agent/service/deregister/{id}"), "").await.status, 200);
    }
    let services = eventually("api gone from the catalog", DEADLINE, || async {
        let r = consul(&cp, "GET", "/v1/catalog/services", "").await;
        r.body.get("api").is_none().then_some(r.body)
    })
    .await;
    assert_eq!(services, json!({}));
}

#[tokio::test]
async fn other_v1_paths_answer_501_naming_the_call() {
    let cp = control("501").await;
    for (method, path) in [
        ("GET", "/v1/kv/config/db"),
        ("PUT", "/v1/session/create"),
        ("GET", "/v1/acl/tokens"),
        ("PUT", "/v1/agent/check/register"),
        ("PUT", "/v1/agent/check/deregister/service:api-1"),
    ] {
        let r = consul(&cp, method, path, "").await;
        assert_eq!(r.status, 501, "{method} {path}: {}", r.body);
        let msg = r.body["error"].as_str().unwrap_or_default();
        assert!(msg.contains(path.split('/').take(4).collect::<Vec<_>>().join("/").as_str()), "{msg}");
        assert!(msg.contains("not supported"), "{msg}");
    }
    let r = consul(&cp, "GET", "/nope", "").await;
    assert_eq!(r.status, 404);
    assert!(r.body["error"].is_string(), "{}", r.body);
    let r = consul(&cp, "POST", "/v1/catalog/services", "").await;
    assert_eq!(r.status, 405);
    assert!(r.body["error"].is_string(), "{}", r.body);
}

#[tokio::test]
async fn a_blocking_query_may_outlast_the_request_limit_by_its_wait() {
    let mut cfg = ControlConfig::new(tempdir("limit"));
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    cfg.api_limits.request = Duration::from_millis(200);
    let cp = ControlPlane::start(cfg).await.expect("control plane");
    let n = index(&consul(&cp, "GET", "/v1/catalog/services", "").await);
    // Nothing changes: the query waits out its 1 s, past the 200 ms limit, and answers 200.
    let r = consul(&cp, "GET", &format!("/v1/catalog/services?index={n}&wait=1s"), "").await;
    assert_eq!((r.status, index(&r)), (200, n), "{}", r.body);
}

#[tokio::test]
async fn an_applied_services_tags_join_each_instances_own_once() {
    let cp = control("svc-tags").await;
    let yaml = "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: db }\nspec: { tags: [primary] }\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: db-1 }\nspec: { service: db, address: 127.0.0.21, port: 5432, tags: [green, primary] }\n";
    let r = call(&cp, "POST", "/v1/apply", &[("authorization", &format!("Bearer {}", cp.admin_token))], yaml).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = eventually("db listed", DEADLINE, || async {
        let r = consul(&cp, "GET", "/v1/catalog/service/db?tag=primary", "").await;
        (r.body.as_array()?.len() == 1).then_some(r.body)
    })
    .await;
    assert_eq!(r[0]["ServiceTags"], json!(["primary", "green"]));
}

/// A control plane of cluster `name` (trust domain `<name>.example`), for linking.
async fn cluster(name: &str) -> ControlPlane {
    let mut cfg = ControlConfig::new(tempdir(name));
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    cfg.mesh.trust_domain = format!("{name}.example");
    cfg.mesh.cluster.name = name.into();
    ControlPlane::start(cfg).await.expect("control plane")
}

/// `(Datacenter, Node)` of each item of a catalog or health answer, sorted.
fn placed(v: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|i| {
            let n = if i["Node"].is_object() { &i["Node"] } else { i };
            (n["Datacenter"].as_str().unwrap_or("?").to_string(), n["Node"].as_str().unwrap_or("?").to_string())
        })
        .collect();
    out.sort();
    out
}

/// A linked cluster is another Consul datacenter: catalog and health reads list this cluster's
/// instances unless `?dc` names the linked one, whose instances then carry its name as
/// `Datacenter`; `/v1/catalog/datacenters` lists both; an unknown `?dc` is refused as Consul does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_cluster_is_a_datacenter_that_dc_selects() {
    let (east, west) = (cluster("east-dc").await, cluster("west-dc").await);
    let svc = |name: &str, node: &str, port: u16| {
        format!(
            "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: {name} }}\nspec: {{ export: true, tags: [v1] }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: {node} }}\nspec: {{ service: {name}, address: 127.0.0.1, port: {port} }}\n---\n"
        )
    };
    let (status, v) =
        common::admin_api(&west, "POST", "/v1/apply", &(svc("api", "api-w", 9001) + &svc("pay", "pay-w", 9002))).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = common::admin_api(&east, "POST", "/v1/apply", &svc("api", "api-e", 9003)).await;
    assert_eq!(status, 200, "{v}");
    let (_, v) = common::admin_api(&west, "POST", "/v1/links/credential", "").await;
    let (status, v) = common::admin_api(&east, "POST", "/v1/links", v["credential"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{v}");
    let east_ref = &east;
    eventually("east imports west's services", DEADLINE, || async move {
        let cat = east_ref.catalog.borrow().clone();
        cat.services.get(&("default".to_string(), "pay".to_string())).filter(|s| !s.instances.is_empty()).map(|_| ())
    })
    .await;

    // Without ?dc: east's own (the agent's datacenter), as Consul answers.
    let r = consul(&east, "GET", "/v1/catalog/service/api", "").await;
    assert_eq!(placed(&r.body), [("east-dc".to_string(), "api-e".to_string())], "{}", r.body);
    let r = consul(&east, "GET", "/v1/catalog/services", "").await;
    assert_eq!(r.body, json!({ "api": ["v1"] }));
    let r = consul(&east, "GET", "/v1/health/service/api", "").await;
    assert_eq!(placed(&r.body), [("east-dc".to_string(), "api-e".to_string())], "{}", r.body);
    let r = consul(&east, "GET", "/v1/agent/services", "").await;
    assert_eq!(r.body.as_object().unwrap().keys().collect::<Vec<_>>(), ["api-e"], "{}", r.body);

    // ?dc=west-dc: west's, with its datacenter (imported instances are named after their cluster
    // and address).
    let r = consul(&east, "GET", "/v1/catalog/service/api?dc=west-dc", "").await;
    assert_eq!(placed(&r.body), [("west-dc".to_string(), "west-dc-127-0-0-1-9001".to_string())], "{}", r.body);
    assert_eq!(r.body[0]["ServicePort"], 9001, "{}", r.body);
    let r = consul(&east, "GET", "/v1/catalog/services?dc=west-dc", "").await;
    assert_eq!(r.body, json!({ "api": ["v1"], "pay": ["v1"] }));
    let r = consul(&east, "GET", "/v1/health/service/pay?dc=west-dc&passing=1", "").await;
    assert_eq!(placed(&r.body), [("west-dc".to_string(), "west-dc-127-0-0-1-9002".to_string())], "{}", r.body);
    assert_eq!(r.body[0]["Service"]["Datacenter"], "west-dc", "{}", r.body);
    let r = consul(&east, "GET", "/v1/catalog/nodes?dc=west-dc", "").await;
    assert_eq!(
        placed(&r.body),
        [
            ("west-dc".to_string(), "west-dc-127-0-0-1-9001".to_string()),
            ("west-dc".to_string(), "west-dc-127-0-0-1-9002".to_string())
        ]
    );
    let r = consul(&east, "GET", "/v1/catalog/datacenters", "").await;
    assert_eq!(r.body, json!(["east-dc", "west-dc"]));

    // A datacenter east does not know.
    let r = consul(&east, "GET", "/v1/catalog/service/api?dc=north", "").await;
    assert_eq!(r.status, 500, "{}", r.body);
    let err = r.body["error"].as_str().unwrap_or_default();
    assert!(err.starts_with("No path to datacenter") && err.contains("\"north\"") && err.contains("west-dc"), "{err}");
}
