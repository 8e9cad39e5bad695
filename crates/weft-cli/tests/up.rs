//! `weft up`, the README's main command, end to end: a CA, three demo apps as child processes,
//! three sidecars, and traffic over mTLS; then a clean stop.

use std::process::Command;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// Runs `weft up <args>`, asserts it succeeded, returns its stdout.
fn up(args: &[&str]) -> String {
    let out = Command::new(WEFT).arg("up").args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

#[test]
fn weft_up_runs_the_demo_mesh_and_stops_cleanly() {
    let text = up(&["--requests", "4", "--interval", "100ms"]);
    assert!(text.contains("==> mesh is up"), "{text}");
    let ok = text
        .lines()
        .filter(|l| l.contains("over mTLS: 200; api saw caller spiffe://cluster.local/ns/default/sa/web"))
        .count();
    assert_eq!(ok, 4, "{text}");
    assert!(
        text.contains("web -> api-v1") && text.contains("web -> api-v2"),
        "round robin across both versions: {text}"
    );
    assert!(text.contains("stopped after 4 requests (0 failed)"), "{text}");
}

#[test]
fn tls_commands_refuse_to_clobber_and_explain() {
    let dir = std::env::temp_dir().join(format!("weft-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    let run = |args: &[&str]| Command::new(WEFT).args(args).output().unwrap();
    let out = run(&["tls", "cert-create", "--ca-dir", d, "--service-account", "web", "--out", d]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("weft tls ca-create"), "says how to fix it");
    assert!(run(&["tls", "ca-create", "--dir", d]).status.success());
    let again = run(&["tls", "ca-create", "--dir", d]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert!(run(&["tls", "cert-create", "--ca-dir", d, "--service-account", "web", "--out", d]).status.success());
    let key_mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.join("web-key.pem")).unwrap().permissions());
    assert_eq!(key_mode & 0o777, 0o600, "private keys are written 0600");
    let out = run(&["tls", "cert-create", "--ca-dir", d, "--service-account", "Bad Name", "--out", d]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid SPIFFE ID"));
}

#[test]
fn weft_up_rotates_certificates_without_failing_requests() {
    let text = up(&["--requests", "8", "--interval", "400ms", "--cert-lifetime", "2s"]);
    assert!(text.contains("rotated the certificate of web"), "{text}");
    assert!(text.contains("rotated the certificate of api-v1"), "{text}");
    assert!(text.contains("stopped after 8 requests (0 failed)"), "{text}");
}
