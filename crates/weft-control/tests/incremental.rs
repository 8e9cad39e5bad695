//! Issue 16: an endpoint change costs what changed, not the whole catalog. One service's change
//! leaves every other service the very same object (`Arc` pointer equality) in the control
//! plane's catalog and in a following sidecar's routing table (its balancer and mirrors with
//! it), and the table equals the one a full rebuild makes from the same config.

use std::sync::Arc;
use std::time::Duration;
use weft_control::{ControlConfig, ControlPlane};
use weft_proxy::routes::Routes;
use weft_testkit::eventually;

mod common;
use common::{admin_api as api, sidecar, tempdir};

const WAIT: Duration = Duration::from_secs(20);

fn service(name: &str) -> String {
    format!("apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: {name} }}\nspec: {{}}\n---\n")
}

fn workload(service: &str, n: u8) -> String {
    format!("apiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: {service}-{n} }}\nspec: {{ service: {service}, address: 127.0.0.{n}, port: 9, sidecar: \"127.0.0.{n}:10\" }}\n---\n")
}

/// What a routing table routes, in a form that compares: each service's ports, endpoints,
/// routes and policy, the service of each endpoint address, and the virtual IPs.
fn summary(routes: &Routes, cluster: &str) -> Vec<String> {
    let mut out: Vec<String> = routes
        .services()
        .map(|s| {
            let mut ports: Vec<_> = s.protocols.iter().map(|(p, proto)| format!("{p}/{proto:?}")).collect();
            ports.sort();
            let endpoints: Vec<String> = s
                .endpoints
                .iter()
                .map(|e| format!("{} {} {} {} {} {}", e.address, e.proxy, e.identity, e.cluster, e.weight, e.sni))
                .collect();
            let by_addr: Vec<String> = s
                .endpoints
                .iter()
                .map(|e| routes.by_address(&e.address).map(|(s, _)| s.key().to_string()).unwrap_or_default())
                .collect();
            // What its mesh names and its mirrors' names resolve to.
            let (n, ns) = (s.name.as_str(), s.namespace.as_str());
            let hosts: Vec<String> = [
                format!("{n}.{ns}.svc.cluster.local"),
                format!("{n}.{ns}.global"),
                format!("{n}-{cluster}.{ns}.svc.cluster.local"),
                format!("{n}.{ns}.{cluster}.global"),
                format!("{n}.service.consul"),
            ]
            .iter()
            .map(|h| {
                let target = routes.by_host(h);
                format!("{h} -> {:?} {:?}", target.map(|t| t.key()), target.map(|t| t.endpoints.len()))
            })
            .collect();
            format!(
                "{} ports {ports:?} endpoints {endpoints:?} indexed {by_addr:?} names {hosts:?} route {} policy {}",
                s.key(),
                s.route.is_some(),
                s.resilience.is_some()
            )
        })
        .collect();
    out.sort();
    out.push(format!("vips {:?}", routes.virtual_ips()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_services_change_leaves_every_other_service_the_same_object() {
    weft_testkit::init_tracing();
    let mut cfg = ControlConfig::new(tempdir("incremental"));
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    let cp = ControlPlane::start(cfg).await.expect("control plane");
    let docs =
        [service("api"), workload("api", 1), workload("api", 2), service("web"), workload("web", 5), service("db")]
            .concat();
    let (status, v) = api(&cp, "POST", "/v1/apply", &docs).await;
    assert_eq!(status, 200, "{v}");
    // No upstreams: it gets every service (as a gateway or a transparent sidecar does).
    let inbound = "inbound: { listen: \"127.0.0.1:0\", ports: [{ port: 8080 }] }\n";
    let proxy = sidecar(&cp, "default/client", None, inbound).await;
    let ctx = proxy.ctx().clone();
    let table = |ctx: &Arc<weft_proxy::Ctx>| ctx.routes.load_full();
    let endpoints = |r: &Routes, name: &str| r.service(name, "default").map(|s| s.endpoints.len());
    let ctx_ref = &ctx;
    eventually("the sidecar has every service", WAIT, || async move {
        let r = table(ctx_ref);
        (endpoints(&r, "api") == Some(2) && endpoints(&r, "web") == Some(1) && endpoints(&r, "db") == Some(0))
            .then_some(())
    })
    .await;
    let before = table(&ctx);
    let key = |name: &str| ("default".to_string(), name.to_string());
    let cat_before = cp.catalog.borrow().clone();

    // One endpoint added to `api`.
    assert_eq!(api(&cp, "POST", "/v1/apply", &workload("api", 3)).await.0, 200);
    eventually("the new endpoint reaches the sidecar", WAIT, || async move {
        (endpoints(&table(ctx_ref), "api") == Some(3)).then_some(())
    })
    .await;
    let after = table(&ctx);
    let cat_after = cp.catalog.borrow().clone();

    // The catalog: `api` is new, the others are the same objects.
    assert!(!Arc::ptr_eq(&cat_before.services[&key("api")], &cat_after.services[&key("api")]));
    for name in ["web", "db"] {
        assert!(Arc::ptr_eq(&cat_before.services[&key(name)], &cat_after.services[&key(name)]), "catalog: {name}");
        assert_eq!(cat_before.service_revisions[&key(name)], cat_after.service_revisions[&key(name)], "{name}");
    }
    assert!(cat_after.service_revisions[&key("api")] > cat_before.service_revisions[&key("api")]);

    // The sidecar: the same for its routing table, the mirrors of each service included.
    let same =
        |name: &str| Arc::ptr_eq(before.service(name, "default").unwrap(), after.service(name, "default").unwrap());
    assert!(!same("api"), "api was built again");
    assert!(same("web") && same("db"), "web and db are the same objects");
    let cluster = cat_after.mesh.cluster.name.to_ascii_lowercase();
    let mirror = |r: &Routes, name: &str| r.service_by_key(&format!("{name}.default@{cluster}")).cloned();
    let (web_before, web_after) = (mirror(&before, "web").expect("web's mirror"), mirror(&after, "web").unwrap());
    assert!(Arc::ptr_eq(&web_before, &web_after), "web's mirror is kept");
    assert_eq!(mirror(&after, "api").unwrap().endpoints.len(), 3, "api's mirror is built again");
    let by_address = after.by_address(&"127.0.0.3:9".parse().unwrap()).expect("the new endpoint by address");
    assert!(Arc::ptr_eq(&by_address.0, after.service("api", "default").unwrap()));

    // It equals what a full rebuild makes of the same config.
    let update = weft_control::discovery::render(&cat_after, &Default::default(), &[]);
    let services = weft_proxy::control::services_from(&update).unwrap();
    let full = ctx.routes_for(&services).unwrap();
    let vips = weft_proxy::control::virtual_ips_from(&update).unwrap();
    let full = full.with_names(&cat_after.mesh.cluster.name, &vips);
    assert_eq!(summary(&after, &cluster), summary(&full, &cluster));
    assert_eq!(mirror(&full, "web").unwrap().endpoints.len(), web_after.endpoints.len());

    // A removal: `web` goes, `db` stays the same object.
    for path in ["/v1/resources/workload/default/web-5", "/v1/resources/service/default/web"] {
        let (status, v) = api(&cp, "DELETE", path, "").await;
        assert_eq!(status, 200, "{v}");
    }
    eventually("web leaves the sidecar", WAIT, || async move {
        table(ctx_ref).service("web", "default").is_none().then_some(())
    })
    .await;
    let last = table(&ctx);
    assert!(Arc::ptr_eq(after.service("db", "default").unwrap(), last.service("db", "default").unwrap()));
    assert!(Arc::ptr_eq(after.service("api", "default").unwrap(), last.service("api", "default").unwrap()));
    assert!(last.service_by_key(&format!("web.default@{cluster}")).is_none(), "web's mirror is gone");
}
