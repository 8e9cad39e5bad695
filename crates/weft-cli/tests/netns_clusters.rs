//! Multi-cluster in network namespaces (root; CI runs it as root, elsewhere it skips with a
//! message): two clusters, `east` and `west`, each on its own bridge with its own control plane,
//! pods (sidecar, app, `weft proxy init` interception) and east-west gateway; only the gateways
//! are on the shared WAN bridge (harness and diagram: `tests/mcnet/mod.rs`). East links to west
//! with `weft link create` / `weft link apply`, as an operator does.
//!
//! More checks go here, on the same harness: `Mesh::resolve`, `Mesh::stop_app` /
//! `Mesh::start_app`, `Mesh::kill_pod` / `Mesh::restart_pod`, `Mesh::routes`.

mod mcnet;

use mcnet::{assert_nothing_left, contains, eventually, App, Mesh, APP_PORT};
use std::time::Duration;

const API_NAME: &str = "api.default.svc.cluster.local";

/// East: `web` (a frontend calling `api` by its mesh DNS name); west: `api-w` (an echo). East
/// linked to west, and web's sidecar routing api to west.
fn east_web_west_api(extra_east_pods: &[(&str, &str)]) -> Mesh {
    let mut mesh = Mesh::new(&["east", "west"]);
    mesh.add_pod("west", "api-w", "api", App::Echo);
    mesh.add_pod("east", "web", "web", App::Frontend { upstream: format!("{API_NAME}:{APP_PORT}") });
    for (name, service) in extra_east_pods {
        mesh.add_pod("east", name, service, App::Echo);
    }
    mesh.link("east", "west");
    eventually("east's web routes api to west", Duration::from_secs(20), || {
        (mesh.routed_clusters("east", "web", "api") == ["west"]).then_some(())
    });
    for (_, service) in extra_east_pods {
        // Routed once its health check passes.
        eventually(&format!("east's web routes {service}"), Duration::from_secs(20), || {
            (mesh.routed_clusters("east", "web", service) == ["east"]).then_some(())
        });
    }
    mesh
}

/// A call through east's web frontend (an unmodified app calling `api` by name): the frontend's
/// JSON answer.
fn call_api_via_web(mesh: &Mesh, path: &str) -> serde_json::Value {
    let (status, body) = mesh.call("east", "web", &format!("127.0.0.1:{APP_PORT}"), path);
    assert!(status.contains("200"), "web answered {status}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// No TCP connection from namespace `ns` to `addr` is accepted.
fn unreachable_from(mesh: &Mesh, ns: &str, addr: &str) {
    assert!(!mesh.tcp_connects(ns, addr), "{addr} accepts connections from {ns}");
}

/// The call works across the WAN, by name, with mTLS end to end through west's gateway; the
/// callee sees east's caller; the WAN carries only TLS; nothing but the gateway port crosses
/// between the clusters; a west endpoint failing its check leaves east's proxies and DNS and comes
/// back; a credential pointed through the wrong cluster's gateway is refused.
#[test]
fn east_calls_a_west_only_service_through_west_gateway_and_the_wan_carries_only_tls() {
    if mcnet::skip("east_calls_a_west_only_service_through_west_gateway_and_the_wan_carries_only_tls") {
        return;
    }
    let mut mesh = east_web_west_api(&[]);
    let tag = mesh.tag.clone();
    let (east, west) = (mesh.cluster("east"), mesh.cluster("west"));
    let api_w = mesh.pod("west", "api-w");
    let gw = format!("{}:15443", west.gateway_wan);

    // East's sidecar dials west's endpoint through west's gateway (on the WAN), not directly.
    let routes = mesh.routes("east", "web");
    let api = routes.iter().find(|r| r["name"] == "api").expect("api routed");
    assert_eq!(api["endpoints"][0]["address"], format!("{}:{APP_PORT}", api_w.ip), "{api}");
    assert_eq!(api["endpoints"][0]["proxy"], gw, "{api}");
    // East's DNS answers the west-only service's name (today with west's endpoint address; the
    // call below is what matters, whatever address the name resolves to).
    assert!(!mesh.resolve("east", "web", API_NAME).is_empty(), "{API_NAME} does not resolve in east");

    let capture = mesh.capture_wan();
    let marker = format!("/wan-marker-{}", std::process::id());
    let v = call_api_via_web(&mesh, &marker);
    assert_eq!(v["upstream_status"], 200, "{v}");
    assert_eq!(v["upstream"]["app"], "api-w", "answered in west: {v}");
    assert_eq!(v["upstream"]["path"], marker.as_str(), "{v}");
    assert_eq!(
        v["upstream"]["peer_identity"], "spiffe://east.local/ns/default/sa/web",
        "west's app sees east's caller, not the gateway: {v}"
    );
    let wire = capture.finish(1000);
    assert!(!wire.is_empty(), "the WAN capture is empty");
    assert!(
        contains(&wire, b"8080.api.default.west.weft"),
        "the capture holds the TLS handshake to west's gateway ({} bytes)",
        wire.len()
    );
    assert!(!contains(&wire, marker.as_bytes()), "the request's path is visible on the WAN");
    assert!(!contains(&wire, b"HTTP/1.1"), "plaintext HTTP on the WAN");
    assert!(!contains(&wire, b"spiffe://east.local"), "the caller identity header is visible on the WAN");

    // Nothing else crosses. The probe works: west's pod and control plane accept connections
    // inside west, and west's gateway port from east's gateway across the WAN...
    let west_pod_admin = format!("{}:15000", api_w.ip);
    let west_control = format!("{}:15012", west.control_ip());
    assert!(mesh.tcp_connects(&west.ns, &west_pod_admin) && mesh.tcp_connects(&west.ns, &west_control));
    assert!(mesh.tcp_connects(&east.gw_ns, &gw));
    // ...but from east's node (its control plane's namespace) and from east's gateway (the only
    // east host on the WAN), west's pod, west's control plane and west's gateway's own leg in
    // west are unreachable.
    let west_gw_leg = format!("{}:15443", west.gateway_leg());
    for ns in [&east.ns, &east.gw_ns] {
        unreachable_from(&mesh, ns, &west_pod_admin);
        unreachable_from(&mesh, ns, &west_control);
        unreachable_from(&mesh, ns, &west_gw_leg);
    }
    // An east pod's connection to a west pod's IP is intercepted; its sidecar knows no such
    // destination and passes it through, directly, which fails: the app gets no answer.
    let (status, body) = mesh.call("east", "web", &west_pod_admin, "/ready");
    assert!(status.starts_with("ERR"), "a west pod answered an east pod directly: {status} {body}");
    // Even a WAN host routing west's subnet at west's gateway is not forwarded into west.
    let [a, b, c, _] = west.control_ip().octets();
    let west_subnet = format!("{a}.{b}.{c}.0/24");
    let out = std::process::Command::new("ip")
        .args(["-n", &east.gw_ns, "route", "add", &west_subnet, "via", &west.gateway_wan.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    unreachable_from(&mesh, &east.gw_ns, &west_pod_admin);
    unreachable_from(&mesh, &east.gw_ns, &west_control);

    // Health travels with the link: west's app dies, fails its check in west, and leaves east's
    // proxies and east's DNS; restarted, it comes back.
    mesh.stop_app("west", "api-w");
    eventually("api-w leaves east's routes", Duration::from_secs(15), || {
        mesh.routed_clusters("east", "web", "api").is_empty().then_some(())
    });
    eventually("api leaves east's DNS", Duration::from_secs(10), || {
        mesh.resolve("east", "web", API_NAME).is_empty().then_some(())
    });
    mesh.start_app("west", "api-w");
    eventually("api-w is back in east's routes", Duration::from_secs(15), || {
        (mesh.routed_clusters("east", "web", "api") == ["west"]).then_some(())
    });
    assert_eq!(call_api_via_web(&mesh, "/back")["upstream_status"], 200);

    // A credential of east pointed through west's gateway, applied on west: west's gateway
    // refuses east's control-plane SNI, the link never becomes active, and `weft link check`
    // says why.
    let cred = mesh.weft_ok("east", &["link", "create"]);
    let mut misrouted = weft_api::link::Credential::decode(cred.trim()).unwrap();
    misrouted.gateways = vec![gw.clone()];
    misrouted.address = gw.clone();
    mesh.weft_ok("west", &["link", "add", &misrouted.encode()]);
    let check = eventually("west's link check to east fails on trust", Duration::from_secs(20), || {
        let out = mesh.weft("west", &["link", "check", "east", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let report = v.as_array()?.first()?.clone();
        let trusted = report["checks"].as_array()?.iter().find(|c| c["name"] == "trusted")?.clone();
        (!out.status.success() && trusted["verdict"] == "fail").then_some(trusted)
    });
    assert!(check["detail"].as_str().unwrap().contains("does not route the control-plane SNI"), "{check}");
    assert_ne!(mesh.link_status("west", "east")["state"], "active");

    drop(mesh);
    assert_nothing_left(&tag);
}

/// A WAN cut: in-cluster traffic goes on, calls to west fail with a clear 504 naming west's
/// gateway (no hang), the link shows `failing` and (as documented) keeps west's endpoints; healed,
/// the link resyncs (a west endpoint added during the cut arrives) and calls work again; `weft
/// link remove` then withdraws west's service from east's proxies and DNS.
#[test]
fn a_wan_cut_fails_cross_cluster_calls_cleanly_and_the_link_resyncs_when_healed() {
    if mcnet::skip("a_wan_cut_fails_cross_cluster_calls_cleanly_and_the_link_resyncs_when_healed") {
        return;
    }
    let mut mesh = east_web_west_api(&[("local", "local")]);
    let tag = mesh.tag.clone();
    let gw = format!("{}:15443", mesh.cluster("west").gateway_wan);
    let api_w = format!("{}:{APP_PORT}", mesh.pod("west", "api-w").ip);
    let local = format!("{}:{APP_PORT}", mesh.pod("east", "local").ip);
    let in_cluster = |mesh: &Mesh| {
        let (status, body) = mesh.call("east", "web", &local, "/in-cluster");
        assert!(status.contains("200"), "in-cluster call: {status} {body}");
        assert!(body.contains("spiffe://east.local/ns/default/sa/web"), "{body}");
    };
    assert_eq!(call_api_via_web(&mesh, "/before")["upstream_status"], 200);
    in_cluster(&mesh);

    mesh.set_wan("west", false);
    // Calls to west: a 504 from east's sidecar naming west's gateway, within its timeouts
    // (pooled connection: peer-unresponsive; new connection: connect-timeout), never a hang
    // (demo-call gives up after 10 s and would report an error instead).
    for _ in 0..2 {
        let (status, body) = mesh.call("east", "web", &api_w, "/during-cut");
        assert!(status.starts_with("HTTP/1.1 504"), "a call to west during the cut: {status} {body}");
        assert!(body.contains(&gw), "the error names west's gateway: {body}");
    }
    in_cluster(&mesh);
    // The link notices (keep-alive) and says so; what it imported stays until west answers again
    // (docs/multicluster.md, "Linking clusters"), so west's endpoint is still routed.
    let link = mesh.wait_link_state("east", "west", "failing");
    assert!(!link["error"].is_null(), "{link}");
    assert_eq!(mesh.routed_clusters("east", "web", "api"), ["west"]);
    in_cluster(&mesh);

    // West changes while cut off: a second api endpoint. Healed, the link resyncs and east's
    // proxies get both.
    mesh.add_pod("west", "api-w2", "api", App::Echo);
    mesh.set_wan("west", true);
    mesh.wait_link_state("east", "west", "active");
    eventually("east's web routes both west endpoints", Duration::from_secs(20), || {
        (mesh.routed_clusters("east", "web", "api") == ["west", "west"]).then_some(())
    });
    let v = eventually("calls to west work again", Duration::from_secs(20), || {
        let (status, body) = mesh.call("east", "web", &api_w, "/healed");
        status.contains("200").then_some(body)
    });
    assert!(v.contains("spiffe://east.local/ns/default/sa/web"), "{v}");

    // `weft link remove`: west's service leaves east's proxies and east's DNS.
    mesh.weft_ok("east", &["link", "remove", "west"]);
    eventually("api leaves east's web routes", Duration::from_secs(10), || {
        mesh.routed_clusters("east", "web", "api").is_empty().then_some(())
    });
    eventually("api leaves east's DNS", Duration::from_secs(10), || {
        mesh.resolve("east", "web", API_NAME).is_empty().then_some(())
    });
    let (status, _) = mesh.call("east", "web", &api_w, "/removed");
    assert!(!status.contains("200"), "a call to west after the link is removed: {status}");
    in_cluster(&mesh);

    drop(mesh);
    assert_nothing_left(&tag);
}

/// `weft up --netns --clusters 2`: the demo with east and west each on its own bridge, joined only
/// through their gateways. web (east) reaches api-v1 in east and api-v2 in west by name, and
/// west's app sees east's caller; east's node cannot reach west's control plane; everything is
/// removed at the end.
#[test]
fn weft_up_netns_clusters_runs_the_demo_on_separate_networks() {
    if mcnet::skip("weft_up_netns_clusters_runs_the_demo_on_separate_networks") {
        return;
    }
    use std::io::BufRead;
    let mut child = std::process::Command::new(mcnet::WEFT)
        .args(["up", "--netns", "--clusters", "2", "--requests", "8", "--interval", "200ms"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let tag = child.id() % 1_000_000;
    // Killed (and its namespaces removed by the checks below failing loudly) if a read panics.
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill").args(["-TERM", &self.0.to_string()]).status();
        }
    }
    let _guard = Kill(child.id());
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut out: Vec<String> = vec![];
    // A bound, not a timing: `weft up` scales its own wait for the mesh with how long starting
    // took, so on a loaded machine the whole run can take minutes.
    let deadline = std::time::Instant::now() + Duration::from_secs(400);
    while let Ok(l) = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
        if l.contains("==> mesh is up") {
            // West's control plane, as printed, is not reachable from east's node.
            let west_cp = out
                .iter()
                .find_map(|l| {
                    l.trim().strip_prefix("cluster west")?.split("control plane ").nth(1)?.split_whitespace().next()
                })
                .expect("west's control plane address is printed")
                .to_string();
            let probe = std::process::Command::new("ip")
                .args(["netns", "exec", &format!("weft{tag}-east"), "timeout", "3", "bash", "-c"])
                .arg(format!("exec 3<>/dev/tcp/{west_cp}/15012"))
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(!probe.success(), "east's node reached west's control plane {west_cp}");
        }
        out.push(l);
    }
    let status = child.wait().unwrap();
    let text = out.join("\n");
    assert!(status.success(), "{text}");
    let caller = "over mTLS: 200; api saw caller spiffe://east.local/ns/default/sa/web";
    assert!(text.contains(&format!("web (east) -> api-v2 (west) {caller}")), "{text}");
    assert!(text.contains(&format!("web (east) -> api-v1 (east) {caller}")), "{text}");
    assert!(text.contains("stopped after 8 requests (0 failed)"), "{text}");
    // Each cluster's dashboard, on its control plane's bridge address (HTTPS off loopback).
    assert_eq!(text.matches("dashboard: https://").count(), 2, "{text}");
    assert_nothing_left(&format!("weft{tag}-"));
    assert_nothing_left(&format!("wft{tag}h"));
}

/// `weft up --netns -f` of a file with `clusters`: each cluster on its own network, joined only
/// through the gateways; web (east, the first cluster) calls `{upstream.api}` by name and is
/// answered by api in west, which sees east's caller; SIGTERM removes everything.
#[test]
fn weft_up_netns_runs_a_files_clusters_on_separate_networks() {
    if mcnet::skip("weft_up_netns_runs_a_files_clusters_on_separate_networks") {
        return;
    }
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("weft-up-netns-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mesh.yaml");
    std::fs::write(
        &file,
        "clusters: [{ name: east }, { name: west }]\nservices:\n  - name: api\n    workloads:\n      - name: api-west\n        cluster: west\n        command: [weft, demo-app, --name, api-west, --listen, \"0.0.0.0:{port}\"]\n        check: { http: /health, interval: 1s }\n  - name: web\n    workloads:\n      - name: web\n        command: [weft, demo-app, --name, web, --listen, \"0.0.0.0:{port}\", --upstream, \"{upstream.api}\"]\n        expose: true\n",
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let mut child = std::process::Command::new(mcnet::WEFT)
        .args(["up", "--netns", "-f", file.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let tag = child.id() % 1_000_000;
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill").args(["-TERM", &self.0.to_string()]).status();
        }
    }
    let guard = Kill(child.id());
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut out: Vec<String> = vec![];
    // Bounds the start-up only (six processes and two links; slow when the whole suite runs).
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while let Ok(l) = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
        let up = l.contains("==> mesh is up");
        out.push(l);
        if up {
            break;
        }
    }
    let text = out.join("\n");
    let logs = || std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
    assert!(text.contains("==> mesh is up: 2 clusters"), "{text}\n{}", logs());
    // web's pod, as printed: `pod web <ip> cluster east netns <ns> ...`.
    let web_ns = out
        .iter()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "pod" && w.next()? == "web").then(|| l.split("netns ").nth(1)?.split_whitespace().next())?
        })
        .unwrap_or_else(|| panic!("web's pod is printed: {text}"))
        .to_string();
    assert!(text.contains("api-west") && text.contains("cluster west"), "{text}");
    let v: serde_json::Value = eventually("east's web reaches api in west by name", Duration::from_secs(30), || {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &web_ns,
                mcnet::WEFT,
                "demo-call",
                &format!("127.0.0.1:{APP_PORT}"),
                "--path",
                "/f",
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let v: serde_json::Value = serde_json::from_str(text.split_once('\n')?.1.trim()).ok()?;
        (v["upstream_status"] == 200).then_some(v)
    });
    assert_eq!(v["upstream"]["app"], "api-west", "{v}");
    assert_eq!(v["upstream"]["peer_identity"], "spiffe://east.local/ns/default/sa/web", "{v}");
    drop(guard);
    let status = child.wait().unwrap();
    let rest: Vec<String> = rx.iter().collect();
    assert!(status.success(), "{}", rest.join("\n"));
    assert!(rest.iter().any(|l| l.contains("==> stopped")), "{}", rest.join("\n"));
    assert_nothing_left(&format!("weft{tag}-"));
    assert_nothing_left(&format!("wft{tag}h"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Failover across the WAN: east's web prefers east's own api (locality priority); when every
/// east endpoint dies (app and sidecar, kill -9), web's calls are answered by west through west's
/// gateway, with at most one failed call; when east's endpoint returns, traffic comes back to it.
#[test]
fn every_local_endpoint_killed_fails_over_to_west_and_comes_back() {
    if mcnet::skip("every_local_endpoint_killed_fails_over_to_west_and_comes_back") {
        return;
    }
    let mut mesh = east_web_west_api(&[]);
    mesh.add_pod("east", "api-e", "api", App::Echo);
    // A short ejection (default 30 s), so the return to east is quick to see.
    mesh.apply(
        "east",
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\nspec: { export: true, outlierDetection: { baseEjectionTime: 2s } }\n",
    );
    eventually("east's web routes api to east and west", Duration::from_secs(20), || {
        (mesh.routed_clusters("east", "web", "api") == ["east", "west"]).then_some(())
    });
    let answered = |mesh: &Mesh, path: &str| -> Option<String> {
        let (status, body) = mesh.call("east", "web", &format!("127.0.0.1:{APP_PORT}"), path);
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status.contains("200") && v["upstream_status"] == 200)
            .then(|| v["upstream"]["app"].as_str().unwrap_or_default().to_string())
    };
    // Local first: every call is answered in east.
    for i in 0..5 {
        assert_eq!(answered(&mesh, &format!("/before-{i}")).as_deref(), Some("api-e"), "locality priority");
    }

    mesh.kill_pod("east", "api-e");
    let mut failed = 0;
    let mut by = vec![];
    for i in 0..20 {
        match answered(&mesh, &format!("/during-{i}")) {
            Some(app) => by.push(app),
            None => failed += 1,
        }
    }
    assert!(failed <= 1, "{failed} of 20 calls failed after east's only endpoint died (answers: {by:?})");
    assert!(by.iter().all(|a| a == "api-w"), "answered in west while east is dead: {by:?}");

    mesh.restart_pod("east", "api-e");
    // Back once its health check passes again and its ejection (2 s) has ended.
    eventually("traffic returns to east's api", Duration::from_secs(30), || {
        (answered(&mesh, "/after").as_deref() == Some("api-e")).then_some(())
    });
    drop(mesh);
}
