//! Trust between linked clusters in network namespaces (root; CI runs it as root, elsewhere it
//! skips with a message): `east`, `west` and `north`, each on its own bridge with its own control
//! plane and root CA (independent roots, one trust domain each), joined only through their
//! gateways on the WAN (harness: `tests/mcnet/mod.rs`). East links to west; north tries to link to
//! west with bad credentials; then west rotates its root while east calls west under load. The
//! loopback versions are `crates/weft-control/tests/link.rs` and `tests/rotation.rs`.

mod mcnet;

use mcnet::{assert_nothing_left, dns_query, eventually, App, Mesh, RecordType, ResponseCode, APP_PORT};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use weft_api::link::Credential;
use weft_control::tokens::{Grant, Tokens};

const API_NAME: &str = "api.default.svc.cluster.local";

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The hex SHA-256 of a cluster's serving root, from `weft ca` (`sha256 AB:CD:...` under `root`).
fn root_of(mesh: &Mesh, cluster: &str) -> String {
    let out = mesh.weft_ok(cluster, &["ca"]);
    let line = out.lines().find(|l| l.trim_start().starts_with("sha256")).unwrap_or_else(|| panic!("{out}"));
    line.trim_start().trim_start_matches("sha256").trim().replace(':', "").to_lowercase()
}

/// The roots a proxy (its admin in namespace `ns`) trusts for trust domain `td`.
fn roots_for(dump: &serde_json::Value, td: &str) -> Vec<String> {
    dump["trust_bundle"]
        .as_array()
        .unwrap_or_else(|| panic!("no trust_bundle in {dump}"))
        .iter()
        .filter(|r| r["trust_domain"] == td)
        .map(|r| r["sha256"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// North imported nothing from west: its link (if any) has no services, and north's DNS does not
/// know west's service.
fn nothing_imported(mesh: &Mesh) {
    let link = mesh.link_status("north", "west");
    if !link.is_null() {
        assert_ne!(link["state"], "active", "{link}");
        assert_eq!(
            (link["importedServices"].as_u64(), link["importedEndpoints"].as_u64()),
            (Some(0), Some(0)),
            "{link}"
        );
    }
    let north = mesh.cluster("north");
    let (code, answers) = dns_query(&north.ns, north.control_ip(), API_NAME, RecordType::A);
    assert_eq!((code, answers), (ResponseCode::NXDomain, vec![]), "north's DNS knows west's api");
}

/// The error north's link to west shows once west refused it (polled until it contains `what`).
fn link_error(mesh: &Mesh, what: &str) -> String {
    let err = eventually(&format!("north's link to west fails with {what:?}"), Duration::from_secs(30), || {
        let l = mesh.link_status("north", "west");
        l["error"].as_str().filter(|e| e.contains(what)).map(str::to_string)
    });
    eprintln!("north's link to west: {err}");
    err
}

/// Steady load from another thread, back to back, counting answers and recording failures: east's
/// web (an unmodified app calling `api` by name, answered in west) and a TCP exchange from web's pod
/// with west's db by its VIP.
struct Load {
    /// db's VIP and port, as east's DNS answers it.
    db: String,
    stop: AtomicBool,
    ok: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Load {
    fn run(&self, mesh: &Mesh) {
        let mut i = 0;
        while !self.stop.load(Ordering::Relaxed) {
            i += 1;
            let (status, body) = mesh.call("east", "web", &format!("127.0.0.1:{APP_PORT}"), &format!("/load-{i}"));
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if status.contains("200") && v["upstream_status"] == 200 && v["upstream"]["app"] == "api-w" {
                self.ok.fetch_add(1, Ordering::Relaxed);
            } else {
                self.failures.lock().unwrap().push(format!("HTTP: {status} {body}"));
            }
            let ping = format!("ping-{i}");
            match mesh.tcp_call("east", "web", &self.db, &ping) {
                Ok(echo) if echo.starts_with(&ping) => {
                    self.ok.fetch_add(1, Ordering::Relaxed);
                }
                other => self.failures.lock().unwrap().push(format!("TCP to {}: {other:?}", self.db)),
            }
        }
    }

    /// Waits until `more` further calls were answered, so the load covers what came before.
    fn go_on(&self, more: u64) {
        let target = self.ok.load(Ordering::Relaxed) + more;
        eventually("the load goes on", Duration::from_secs(60), || {
            (self.ok.load(Ordering::Relaxed) >= target || !self.failures.lock().unwrap().is_empty()).then_some(())
        });
    }
}

/// Bad credentials, in north (nothing imported each time, the error says what to do): east's link
/// secret presented by north; an expired credential (refused at `weft link apply`); a credential
/// whose secret expired (refused by west); a credential whose root is not west's (west's
/// certificate does not verify). Then independent roots: west rotates its root, then east does,
/// while east calls west under steady load (HTTP, and TCP with a TLS handshake per call); no call
/// fails, and after each rotation every proxy of both clusters trusts only the current root of
/// each trust domain and holds a certificate of its own cluster's, and east's link to west trusts
/// only west's current root (not the credential's, retired one); east's `weft link check`
/// trusts west's new certificate, and new connections after both work.
#[test]
fn bad_credentials_are_refused_and_a_root_rotation_under_load_fails_no_call() {
    if mcnet::skip("bad_credentials_are_refused_and_a_root_rotation_under_load_fails_no_call") {
        return;
    }
    let mut mesh = Mesh::new(&["east", "west", "north"]);
    let tag = mesh.tag.clone();
    mesh.add_pod("west", "api-w", "api", App::Echo);
    mesh.add_pod("west", "db-w", "db", App::TcpEcho);
    mesh.add_pod("east", "web", "web", App::Frontend { upstream: format!("{API_NAME}:{APP_PORT}") });
    mesh.link("east", "west");
    eventually("east's web routes api to west", Duration::from_secs(30), || {
        (mesh.routed_clusters("east", "web", "api") == ["west"]
            && mesh.routed_clusters("east", "web", "db") == ["west"])
        .then_some(())
    });
    let cred = Credential::decode(mesh.weft_ok("west", &["link", "create"]).trim()).unwrap();
    // West's token key signs its link secrets: with it the test makes the secrets west gave out.
    let west_tokens = Tokens::open(mesh.cluster("west").data_dir()).unwrap();

    // 1. East's link secret (west issues it to east when east's link is established), presented by
    // north with west's otherwise valid credential: refused by west, naming whose secret it is.
    let mut stolen = cred.clone();
    stolen.secret = west_tokens.issue(Grant::LinkStream { cluster: "east".into(), issued_ms: now_ms() }, None);
    mesh.weft_ok("north", &["link", "add", &stolen.encode()]);
    let err = link_error(&mesh, "belongs to cluster \"east\"");
    assert!(err.contains("weft link create"), "the error says what to do: {err}");
    nothing_imported(&mesh);
    let importers = mesh.weft_ok("west", &["link", "importers", "-o", "json"]);
    assert!(!importers.contains("north"), "west lists north as an importer: {importers}");
    mesh.weft_ok("north", &["link", "remove", "west"]);

    // 2. An expired credential: refused by `weft link apply`, nothing stored.
    let mut expired = cred.clone();
    expired.expires_unix = 1;
    let out = mesh.weft("north", &["link", "add", &expired.encode()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an expired credential was accepted");
    assert!(stderr.contains("expired") && stderr.contains("weft link create"), "{stderr}");
    assert!(mesh.link_status("north", "west").is_null(), "an expired credential was stored");
    nothing_imported(&mesh);

    // 3. A credential whose secret itself has expired (its own expiry, signed by west, passed
    // though the credential's says otherwise): west refuses the stream.
    let short = west_tokens.issue(Grant::Link { issued_ms: now_ms() }, Some(Duration::ZERO));
    eventually("the short secret expires", Duration::from_secs(5), || {
        matches!(west_tokens.verify(&short), Err(weft_control::tokens::TokenError::Expired)).then_some(())
    });
    let mut lapsed = cred.clone();
    lapsed.secret = short;
    mesh.weft_ok("north", &["link", "add", &lapsed.encode()]);
    let err = link_error(&mesh, "has expired");
    assert!(err.contains("weft link create"), "the error says what to do: {err}");
    nothing_imported(&mesh);
    mesh.weft_ok("north", &["link", "remove", "west"]);

    // 4. A peer whose certificate does not verify against the credential's root: west's
    // credential with another root of west's trust domain (as after west was re-created).
    let ca_dir = mesh.write("other-ca", "");
    std::fs::remove_file(&ca_dir).unwrap();
    let out = std::process::Command::new(mcnet::WEFT)
        .args(["tls", "ca-create", "--dir", &ca_dir, "--trust-domain", &mesh.cluster("west").trust_domain()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut untrusted = cred.clone();
    untrusted.root_pem = std::fs::read_to_string(format!("{ca_dir}/ca.pem")).unwrap();
    mesh.weft_ok("north", &["link", "add", &untrusted.encode()]);
    let err = link_error(&mesh, "TLS with the peer control plane");
    assert!(err.contains("weft link create"), "the error says what to do: {err}");
    assert_eq!(err.matches("does not verify").count(), 1, "said once: {err}");
    let check = mesh.weft("north", &["link", "check", "west", "-o", "json"]);
    assert!(!check.status.success());
    let v: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    let trusted = v[0]["checks"].as_array().unwrap().iter().find(|c| c["name"] == "trusted").unwrap().clone();
    assert_eq!(trusted["verdict"], "fail", "{trusted}");
    assert!(trusted["fix"].as_str().unwrap().contains("weft link remove west"), "{trusted}");
    nothing_imported(&mesh);
    mesh.weft_ok("north", &["link", "remove", "west"]);
    // East's link was never disturbed.
    assert_eq!(mesh.link_status("east", "west")["state"], "active");

    // 5. Each cluster's root rotated in turn (west, the exporter, then east, the importer) while
    // east calls west: HTTP through web (pooled connections between the sidecars) and TCP to db
    // (opaque: every call a new TLS handshake from east's sidecar to west's, so each one checks the
    // certificates and bundles in force at that moment).
    let db = mesh.resolve("east", "web", "db.default.svc.cluster.local");
    assert!(db.len() == 1 && db[0].starts_with("240.240."), "db's VIP in east: {db:?}");
    let load = Load {
        db: format!("{}:{APP_PORT}", db[0]),
        stop: AtomicBool::new(false),
        ok: AtomicU64::new(0),
        failures: Mutex::new(vec![]),
    };
    std::thread::scope(|s| {
        // The load stops when this scope ends, also when a check in it panics (the scope joins
        // the load's thread before the panic goes on).
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&load.stop);
        s.spawn(|| load.run(&mesh));
        load.go_on(6);
        let west_proxies = [
            mesh.pod("west", "api-w").ns.clone(),
            mesh.pod("west", "db-w").ns.clone(),
            mesh.cluster("west").gw_ns.clone(),
        ];
        let east_proxies = [mesh.pod("east", "web").ns.clone(), mesh.cluster("east").gw_ns.clone()];
        let mut roots = [("west", root_of(&mesh, "west")), ("east", root_of(&mesh, "east"))];
        assert_eq!(mesh.link_status("east", "west")["trustedRoots"], serde_json::json!([roots[0].1]));
        for i in 0..2 {
            let (rotated, old) = roots[i].clone();
            mesh.weft_ok(rotated, &["ca", "rotate", "--overlap", "0s"]);
            eventually(&format!("{rotated}'s rotation finishes"), Duration::from_secs(90), || {
                mesh.weft_ok(rotated, &["ca"]).contains("rotation      none in progress").then_some(())
            });
            let new = root_of(&mesh, rotated);
            assert_ne!(new, old, "{rotated}'s root");
            roots[i].1 = new;
            // Every proxy of both clusters trusts exactly each cluster's current root for that
            // cluster's trust domain, and holds a certificate of its own cluster's.
            let (west_root, east_root) = (roots[0].1.clone(), roots[1].1.clone());
            eventually(
                &format!("after {rotated}'s rotation, only the new roots everywhere"),
                Duration::from_secs(60),
                || {
                    let fine = |ns: &String, own: &str| {
                        let d = mesh.config_dump(ns);
                        d["certificate"]["root_sha256"] == own
                            && roots_for(&d, "west.local") == [west_root.clone()]
                            && roots_for(&d, "east.local") == [east_root.clone()]
                    };
                    // East's link verifies west's control plane against west's current root only.
                    let link = mesh.link_status("east", "west");
                    (link["trustedRoots"] == serde_json::json!([west_root])
                        && west_proxies.iter().all(|ns| fine(ns, &west_root))
                        && east_proxies.iter().all(|ns| fine(ns, &east_root)))
                    .then_some(())
                },
            );
            load.go_on(6);
        }
    });
    let failures = load.failures.lock().unwrap().clone();
    let ok = load.ok.load(Ordering::Relaxed);
    let sent = ok + failures.len() as u64;
    assert!(failures.is_empty(), "{} of {sent} calls failed during the rotations: {failures:?}", failures.len());
    eprintln!("{sent} calls (HTTP and TCP) from east to west during both root rotations, none failed");
    // East's link follows west's new certificate (the new root came over the verified link).
    assert_eq!(mesh.link_status("east", "west")["state"], "active");
    let check = mesh.weft("east", &["link", "check", "west", "-o", "json"]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    // After both rotations, a new handshake each (TCP), under the new roots only.
    for i in 0..3 {
        let ping = format!("after-{i}");
        let echo = mesh.tcp_call("east", "web", &load.db, &ping);
        assert!(echo.as_ref().is_ok_and(|e| e.starts_with(&ping)), "{echo:?}");
    }

    drop(mesh);
    assert_nothing_left(&tag);
}

/// A link that is down for the whole of the peer's root rotation (east's WAN leg cut while west
/// rotates): west does not wait for it, and when the WAN heals east's link cannot verify west's
/// certificate of the new root (east never got it over the link, and trusting a root offered by
/// the peer unverified would defeat the check). The link's error says so and names the fix; east's
/// imports stay as they were (not replaced by anything unverified). Linking again (`weft link
/// create` on west, `weft link remove` + `weft link apply` on east) brings the link and the calls
/// back, under west's new root.
#[test]
fn a_link_down_during_the_peers_rotation_names_the_fix_and_linking_again_restores_it() {
    if mcnet::skip("a_link_down_during_the_peers_rotation_names_the_fix_and_linking_again_restores_it") {
        return;
    }
    let mut mesh = Mesh::new(&["east", "west"]);
    let tag = mesh.tag.clone();
    mesh.add_pod("west", "api-w", "api", App::Echo);
    mesh.add_pod("east", "web", "web", App::Frontend { upstream: format!("{API_NAME}:{APP_PORT}") });
    mesh.link("east", "west");
    let answered = |mesh: &Mesh| {
        let (status, body) = mesh.call("east", "web", &format!("127.0.0.1:{APP_PORT}"), "/");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        status.contains("200") && v["upstream_status"] == 200
    };
    eventually("east's web reaches west's api", Duration::from_secs(30), || answered(&mesh).then_some(()));
    let west_old = root_of(&mesh, "west");

    mesh.set_wan("east", false);
    mesh.wait_link_state("east", "west", "failing");
    mesh.weft_ok("west", &["ca", "rotate", "--overlap", "0s"]);
    eventually("west's rotation finishes without east", Duration::from_secs(90), || {
        mesh.weft_ok("west", &["ca"]).contains("rotation      none in progress").then_some(())
    });
    let west_new = root_of(&mesh, "west");
    assert_ne!(west_new, west_old);
    mesh.set_wan("east", true);
    let err = eventually("east's link names the fix", Duration::from_secs(60), || {
        let l = mesh.link_status("east", "west");
        l["error"].as_str().filter(|e| e.contains("does not verify")).map(str::to_string)
    });
    assert!(err.contains("weft link create") && err.contains("weft link remove west"), "{err}");
    let link = mesh.link_status("east", "west");
    assert_ne!(link["state"], "active", "{link}");
    assert_eq!(link["trustedRoots"], serde_json::json!([west_old]), "nothing unverified is trusted: {link}");

    // Linking again, as the error says.
    mesh.weft_ok("east", &["link", "remove", "west"]);
    mesh.link("east", "west");
    assert_eq!(mesh.link_status("east", "west")["trustedRoots"], serde_json::json!([west_new]));
    eventually("east's web reaches west's api again", Duration::from_secs(30), || answered(&mesh).then_some(()));
    let web = mesh.config_dump(&mesh.pod("east", "web").ns);
    assert_eq!(roots_for(&web, "west.local"), [west_new]);

    drop(mesh);
    assert_nothing_left(&tag);
}
