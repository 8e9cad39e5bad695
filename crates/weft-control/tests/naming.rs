//! Naming across linked clusters, on 127.0.0.1: east links to west; east's DNS answers every
//! cross-cluster form of west's exported service (with virtual IPs), NXDOMAIN for unknown names,
//! nothing for names of west while the link is down; the virtual IPs survive a restart.

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use weft_api::kinds::MeshConfigSpec;
use weft_control::{ControlConfig, ControlPlane};
use weft_testkit::eventually;

mod common;
use common::{admin_api as api, tempdir};

const WAIT: Duration = Duration::from_secs(15);

async fn control(dir: std::path::PathBuf, name: &str, trust_domain: &str) -> ControlPlane {
    let mut cfg = ControlConfig::new(dir);
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    cfg.dns = Some("127.0.0.1:0".parse().unwrap());
    let mut mesh = MeshConfigSpec { trust_domain: trust_domain.into(), ..Default::default() };
    mesh.cluster.name = name.into();
    cfg.mesh = mesh;
    ControlPlane::start(cfg).await.expect("control plane")
}

/// The response code and the answers: A as addresses, SRV as `port target`.
async fn dns(server: SocketAddr, name: &str, qtype: RecordType) -> (ResponseCode, Vec<String>) {
    let mut q = Message::query();
    q.metadata.id = 7;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&q.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf)).await.unwrap().unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    let answers = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::SRV(s) => Some(format!("{} {}", s.port, s.target.to_ascii())),
            _ => None,
        })
        .collect();
    (m.metadata.response_code, answers)
}

fn in_range(addr: &str) -> bool {
    addr.parse::<Ipv4Addr>().is_ok_and(|ip| ip.octets()[..2] == [240, 240])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_name_form_answers_the_peers_service_and_vips_survive_a_restart() {
    weft_testkit::init_tracing();
    let west = control(tempdir("west-dns"), "west", "west.example").await;
    let east_dir = tempdir("east-dns");
    let east = control(east_dir.clone(), "east", "east.example").await;
    // West exports api (only there) and web (also in east, with an instance of its own).
    let docs = "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\nspec: { export: true, tags: [v2] }\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: api-1 }\nspec: { service: api, address: 127.0.0.1, port: 9, sidecar: \"127.0.0.1:10\" }\n---\napiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: web }\nspec: { export: true }\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: web-w }\nspec: { service: web, address: 127.0.0.2, port: 80, sidecar: \"127.0.0.2:10\" }\n";
    assert_eq!(api(&west, "POST", "/v1/apply", docs).await.0, 200);
    let web_east = "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: web }\nspec: {}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: { name: web-e }\nspec: { service: web, address: 127.0.0.3, port: 80, sidecar: \"127.0.0.3:10\" }\n";
    assert_eq!(api(&east, "POST", "/v1/apply", web_east).await.0, 200);
    let (_, v) = api(&west, "POST", "/v1/links/credential", "").await;
    let (status, v) = api(&east, "POST", "/v1/links", v["credential"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{v}");
    let server = east.dns_addr.unwrap();

    let whole = eventually("api answers its VIP in east", WAIT, || async move {
        let (_, a) = dns(server, "api.default.svc.cluster.local.", RecordType::A).await;
        a.into_iter().next().filter(|a| in_range(a))
    })
    .await;
    for name in ["api.default.global.", "api.default.svc.clusterset.local."] {
        assert_eq!(dns(server, name, RecordType::A).await, (ResponseCode::NoError, vec![whole.clone()]), "{name}");
    }
    let (_, mirror) = dns(server, "api-west.default.svc.cluster.local.", RecordType::A).await;
    assert!(mirror.len() == 1 && in_range(&mirror[0]) && mirror[0] != whole, "{mirror:?} vs {whole}");
    for name in ["api.default.west.global.", "api.service.west.consul.", "v2.api.service.west.consul."] {
        assert_eq!(dns(server, name, RecordType::A).await, (ResponseCode::NoError, mirror.clone()), "{name}");
    }
    assert_eq!(
        dns(server, "_api._tcp.service.west.consul.", RecordType::SRV).await,
        (ResponseCode::NoError, vec!["9 api.service.west.consul.".to_string()])
    );
    assert_eq!(
        dns(server, "_tcp._tcp.api.default.svc.clusterset.local.", RecordType::SRV).await,
        (ResponseCode::NoError, vec!["9 api.default.svc.clusterset.local.".to_string()])
    );
    // web spans both clusters: its VIP; east's own names of it answer east's instance.
    let (_, web) = dns(server, "web.default.svc.cluster.local.", RecordType::A).await;
    assert!(web.len() == 1 && in_range(&web[0]), "{web:?}");
    for name in ["web.service.consul.", "web.service.east.consul.", "web-east.default.svc.cluster.local."] {
        assert_eq!(dns(server, name, RecordType::A).await.1, vec!["127.0.0.3"], "{name}");
    }
    for name in [
        "nope.default.svc.cluster.local.",
        "api-mars.default.svc.cluster.local.",
        "api.default.mars.global.",
        "nope.default.global.",
        "nope.default.svc.clusterset.local.",
        "nope.service.west.consul.",
        "api.service.consul.",
    ] {
        assert_eq!(dns(server, name, RecordType::A).await.0, ResponseCode::NXDomain, "{name}");
    }

    // East's sidecars get the VIPs on the discovery stream and route them: the whole service
    // and west's mirror.
    let client = common::sidecar(&east, "default/web", None, "outbound: { transparent: \"127.0.0.1:0\" }\n").await;
    let (whole_ip, mirror_ip) = (whole.parse().unwrap(), mirror[0].parse().unwrap());
    let client_ref = &client;
    let routed = eventually("the sidecar routes both VIPs", WAIT, || async move {
        let routes = client_ref.ctx().routes.load();
        let key = |ip| routes.by_vip(ip).map(|s| s.key().to_string());
        Some((key(whole_ip)?, key(mirror_ip)?))
    })
    .await;
    assert_eq!(routed, ("api.default".to_string(), "api.default@west".to_string()));
    assert_eq!(
        client
            .ctx()
            .routes
            .load()
            .by_host("api-west.default.svc.cluster.local")
            .map(|s| s.key().to_string())
            .as_deref(),
        Some("api.default@west")
    );
    drop(client);

    // East restarts on the same data directory: the same addresses.
    let vips = east.catalog.borrow().vips.clone();
    assert_eq!(vips.len(), 4, "api, web and their west mirrors: {vips:?}");
    east.shutdown().await;
    assert!(east_dir.join("vips.json").exists());
    let east = control(east_dir, "east", "east.example").await;
    assert_eq!(east.catalog.borrow().vips, vips, "restored imports get their old addresses at start");
    let server = east.dns_addr.unwrap();
    let east_ref = &east;
    eventually("the link is back", WAIT, || async move {
        let (_, v) = api(east_ref, "GET", "/v1/links", "").await;
        (v["links"][0]["state"] == "active").then_some(())
    })
    .await;
    assert_eq!(east.catalog.borrow().vips, vips);
    assert_eq!(dns(server, "api.default.svc.cluster.local.", RecordType::A).await.1, vec![whole.clone()]);

    // West goes away: names of west answer nothing (not a stale VIP), and neither does a name
    // only west's instances answered; web keeps east's own.
    west.shutdown().await;
    eventually("west's names go empty", WAIT, || async move {
        let r = dns(server, "api-west.default.svc.cluster.local.", RecordType::A).await;
        (r == (ResponseCode::NoError, vec![])).then_some(())
    })
    .await;
    for name in ["api.default.west.global.", "api.service.west.consul.", "api.default.svc.cluster.local."] {
        assert_eq!(dns(server, name, RecordType::A).await, (ResponseCode::NoError, vec![]), "{name}");
    }
    assert_eq!(dns(server, "web.default.svc.cluster.local.", RecordType::A).await.1, web, "web: still its VIP");
    assert_eq!(dns(server, "nope.default.west.global.", RecordType::A).await.0, ResponseCode::NoError);

    // Removing the link withdraws west's names from DNS: they no longer exist.
    assert_eq!(api(&east, "DELETE", "/v1/links/west", "").await.0, 200);
    eventually("west's names are gone", WAIT, || async move {
        let r = dns(server, "api-west.default.svc.cluster.local.", RecordType::A).await;
        (r.0 == ResponseCode::NXDomain).then_some(())
    })
    .await;
    for name in ["api.default.svc.cluster.local.", "api.default.west.global.", "web-west.default.svc.cluster.local."] {
        assert_eq!(dns(server, name, RecordType::A).await.0, ResponseCode::NXDomain, "{name}");
    }
    assert_eq!(
        dns(server, "api.service.west.consul.", RecordType::A).await.0,
        ResponseCode::NXDomain,
        "not linked, no upstream"
    );
    assert_eq!(
        dns(server, "web.default.svc.cluster.local.", RecordType::A).await.1,
        vec!["127.0.0.3"],
        "east's own, no VIP"
    );
}
