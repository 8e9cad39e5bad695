//! `weft tls cert-create` and the trust bundle beside the certificates it writes: a hand-made
//! bundle holding more than the CA's root (another cluster's root, or an old root during rotation)
//! is never silently dropped.

use std::path::Path;
use std::process::{Command, Output};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

fn weft(args: &[&str]) -> Output {
    Command::new(WEFT).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = weft(args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "weft {args:?}: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

fn roots(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().matches("-----BEGIN CERTIFICATE-----").count()
}

#[test]
fn cert_create_keeps_a_bundle_that_holds_other_roots() {
    let dir = std::env::temp_dir().join(format!("weft-tls-bundle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (ca_a, ca_b, out) = (dir.join("a"), dir.join("b"), dir.join("out"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    ok(&["tls", "ca-create", "--dir", &s(&ca_a)]);
    ok(&["tls", "ca-create", "--dir", &s(&ca_b)]);
    let cert = |ca: &Path, sa: &str, extra: &[&str]| {
        let mut args = vec!["tls", "cert-create", "--service-account", sa];
        let (ca, out) = (s(ca), s(&out));
        args.extend(["--ca-dir", &ca, "--out", &out]);
        args.extend(extra);
        ok(&args)
    };
    let bundle = out.join("bundle.pem");

    // A fresh directory: the bundle is this CA's root.
    cert(&ca_a, "web", &[]);
    assert_eq!(roots(&bundle), 1);

    // A hand-made combined bundle (A's root and B's) survives another certificate from A.
    let combined = format!(
        "{}{}",
        std::fs::read_to_string(&bundle).unwrap(),
        std::fs::read_to_string(ca_b.join("ca.pem")).unwrap()
    );
    std::fs::write(&bundle, &combined).unwrap();
    let text = cert(&ca_a, "api", &[]);
    assert_eq!(std::fs::read_to_string(&bundle).unwrap(), combined, "kept byte for byte");
    assert!(text.contains("kept") && text.contains("1 other root") && text.contains("--force"), "{text}");

    // A bundle without this CA's root gets it added; the roots it held stay.
    std::fs::write(&bundle, std::fs::read_to_string(ca_a.join("ca.pem")).unwrap()).unwrap();
    let text = cert(&ca_b, "db", &[]);
    assert_eq!(roots(&bundle), 2, "A's root kept, B's added");
    assert!(text.contains("added this CA's root"), "{text}");

    // --force replaces it with this CA's root alone.
    cert(&ca_b, "db", &["--force"]);
    assert_eq!(roots(&bundle), 1);
    assert_eq!(
        std::fs::read_to_string(&bundle).unwrap().trim_start_matches(|c| c != '-').trim(),
        std::fs::read_to_string(ca_b.join("ca.pem")).unwrap().trim()
    );

    // A file that is not a bundle is refused, not overwritten.
    std::fs::write(&bundle, "not a certificate\n-----BEGIN CERTIFICATE-----\nxx\n").unwrap();
    let args = ["tls", "cert-create", "--ca-dir", &s(&ca_a), "--service-account", "web", "--out", &s(&out)];
    let fail = weft(&args);
    let err = String::from_utf8_lossy(&fail.stderr);
    assert!(!fail.status.success() && err.contains("not a trust bundle") && err.contains("--force"), "{err}");
    assert!(std::fs::read_to_string(&bundle).unwrap().starts_with("not a certificate"));
    let _ = std::fs::remove_dir_all(&dir);
}
