//! The `weft-proxy` binary: config errors name the field and the fix, identity comes from files
//! and rotates when the files change, SIGTERM drains and exits cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use weft_testkit::{eventually, http1_get, Pki};

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("weft-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn validate(dir: &std::path::Path, yaml: &str) -> (bool, String) {
    let p = dir.join("c.yaml");
    std::fs::write(&p, yaml).unwrap();
    let out = Command::new(BIN).args(["validate", "--config"]).arg(&p).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn validate_names_the_field_and_the_fix() {
    let dir = tempdir("validate");
    let pki = Pki::new();
    let (c, k, b) = pki.write_files(&dir, "default", "web");
    let ident = format!("identity: {{ cert: {c}, key: {k}, bundle: {b} }}\n");

    let (ok, out) = validate(&dir, &format!("{ident}inbound: {{ ports: [{{ port: 80 }}] }}\n"));
    assert!(ok, "{out}");
    assert!(out.contains("valid; identity spiffe://cluster.local/ns/default/sa/web"), "{out}");

    let (ok, out) = validate(&dir, &format!("{ident}inbound:\n  ports: [{{ port: 80 }}]\n  lsiten: 1.2.3.4:5\n"));
    assert!(!ok);
    assert!(out.contains("unknown field `lsiten`") && out.contains("line 4"), "{out}");

    let (ok, out) =
        validate(&dir, &format!("{ident}outbound: {{ upstreams: [{{ listen: '127.0.0.1:0', service: db }}] }}\n"));
    assert!(!ok);
    assert!(out.contains("outbound.upstreams[0].service") && out.contains("add it or fix the name"), "{out}");

    let (ok, out) = validate(&dir, "identity: { cert: /nonexistent.pem, key: k, bundle: b }\ninbound: {}\n");
    assert!(!ok);
    assert!(out.contains("identity.cert") && out.contains("/nonexistent.pem"), "{out}");

    let (ok, out) = validate(&dir, ": : :\n\t- [");
    assert!(!ok);
    assert!(out.contains("invalid config"), "{out}");

    // A certificate file with garbage in it.
    std::fs::write(&c, "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n").unwrap();
    let (ok, out) = validate(&dir, &format!("{ident}inbound: {{}}\n"));
    assert!(!ok);
    assert!(out.contains("identity.cert"), "{out}");
}

#[tokio::test]
async fn runs_from_files_rotates_on_file_change_and_drains_on_sigterm() {
    let dir = tempdir("run");
    let pki = Pki::new();
    let (c, k, b) = pki.write_files(&dir, "default", "api");
    let app = weft_testkit::http_echo("api").await;
    let cfg = dir.join("p.yaml");
    std::fs::write(
        &cfg,
        format!(
            "identity: {{ cert: {c}, key: {k}, bundle: {b}, reload_interval: 200ms }}\nadmin: {{ listen: '127.0.0.1:0' }}\ninbound: {{ listen: '127.0.0.1:0', ports: [{{ port: {} }}] }}\n",
            app.port()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut admin = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(a) = line.strip_prefix("admin ") {
            admin = Some(a.parse::<std::net::SocketAddr>().unwrap());
        }
        if line == "ready" {
            break;
        }
    }
    let admin = admin.expect("admin address printed");
    assert_eq!(http1_get(admin, "/ready").await.unwrap().status(), 200);

    // Rotate: new key and certificate written over the old files.
    pki.write_files(&dir, "default", "api");
    eventually("rotated certificate installed", Duration::from_secs(20), || async move {
        let m = http1_get(admin, "/metrics").await.ok()?;
        String::from_utf8_lossy(m.body()).contains("weft_cert_rotations_total 1").then_some(())
    })
    .await;

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "exit after drain: {status}");
}

/// A change of the bundle file alone (a second root added, as when wiring a second cluster) is
/// logged as what it is: a new trust bundle, with its roots and trust domains, not a new
/// workload certificate.
#[tokio::test]
async fn a_bundle_only_change_is_logged_as_a_new_trust_bundle() {
    use std::io::Read;
    let dir = tempdir("bundle-log");
    let pki = Pki::new();
    let (c, k, b) = pki.write_files(&dir, "default", "api");
    let other = tempdir("bundle-log-other");
    let (_, _, other_bundle) = Pki::new().write_files(&other, "default", "api");
    let app = weft_testkit::http_echo("api").await;
    let cfg = dir.join("p.yaml");
    std::fs::write(
        &cfg,
        format!(
            "identity: {{ cert: {c}, key: {k}, bundle: {b}, reload_interval: 200ms }}\nadmin: {{ listen: '127.0.0.1:0' }}\ninbound: {{ listen: '127.0.0.1:0', ports: [{{ port: {} }}] }}\n",
            app.port()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stops the child if an assertion fails before the clean stop below.
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill").args(["-KILL", &self.0.to_string()]).status();
        }
    }
    let stop = KillOnDrop(child.id());
    let mut admin = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(a) = line.strip_prefix("admin ") {
            admin = Some(a.parse::<std::net::SocketAddr>().unwrap());
        }
        if line == "ready" {
            break;
        }
    }
    let admin = admin.expect("admin address printed");

    // The bundle gains a second root; the certificate and key files are untouched.
    let both = format!("{}{}", std::fs::read_to_string(&b).unwrap(), std::fs::read_to_string(&other_bundle).unwrap());
    std::fs::write(&b, both).unwrap();
    eventually("new bundle installed", Duration::from_secs(20), || async move {
        let m = http1_get(admin, "/metrics").await.ok()?;
        String::from_utf8_lossy(m.body()).contains("weft_cert_rotations_total 1").then_some(())
    })
    .await;

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    child.wait().unwrap();
    std::mem::forget(stop);
    let line = log.lines().find(|l| l.contains("installed new trust bundle")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("roots=2") && line.contains("trust_domains=cluster.local"), "{line}");
    assert!(!log.contains("installed new workload certificate"), "the certificate did not change: {log}");
}
