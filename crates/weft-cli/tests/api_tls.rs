//! The `weft` CLI against a real `weft control` whose HTTP API is on TLS (the default) or, with
//! `--api-plaintext`, plaintext on loopback: what works, and what each mismatch says.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// A child process killed (SIGKILL) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-cli-apitls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `weft <args>` with only `env` (plus PATH) in its environment.
fn weft(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(WEFT)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `weft control` in `dir` with `extra` flags, ready; returns it, its API address and its stdout
/// up to `ready`.
fn control(dir: &Path, extra: &[&str]) -> (Proc, String, String) {
    control_on(dir, &format!("127.0.0.1:{}", free_port()), extra)
}

fn control_on(dir: &Path, api: &str, extra: &[&str]) -> (Proc, String, String) {
    let api = api.to_string();
    let grpc = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(WEFT)
        .args(["control", "--data-dir", dir.to_str().unwrap(), "--grpc", &grpc, "--api", &api, "--dns", "off"])
        .args(extra)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("weft control exited before it was ready: {seen}");
        }
        if line.trim_end() == "ready" {
            break;
        }
        seen.push_str(&line);
    }
    std::thread::spawn(move || for _ in reader.lines() {});
    (Proc(child), api, seen)
}

#[test]
fn the_cli_calls_the_tls_api_and_explains_a_wrong_root_or_scheme() {
    let dir = tempdir("tls");
    let (_cp, api, out) = control(&dir, &["--api-san", "cp.example.com"]);
    let root = dir.join("ca/root.pem");
    assert!(out.contains(&format!("HTTP API   https://{api}")), "{out}");
    assert!(out.contains(root.to_str().unwrap()), "the CA file is printed: {out}");
    let data = dir.to_str().unwrap();

    // host:port and https:// are TLS, verified against <data-dir>/ca/root.pem or --ca-file.
    for server in [api.clone(), format!("https://{api}")] {
        let out = weft(&["get", "workloads", "--server", &server, "--data-dir", data], &[]);
        assert!(out.status.success(), "{server}: {}", text(&out));
    }
    let token = std::fs::read_to_string(dir.join("admin.token")).unwrap();
    let env = [("WEFT_SERVER", api.as_str()), ("WEFT_TOKEN", token.trim()), ("WEFT_CA_FILE", root.to_str().unwrap())];
    let out = weft(&["get", "workloads"], &env);
    assert!(out.status.success(), "WEFT_CA_FILE: {}", text(&out));
    // `weft ca --pem` prints the root clients trust.
    let out = weft(&["ca", "--pem", "--server", &api, "--data-dir", data], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let pem = String::from_utf8_lossy(&out.stdout).to_string();
    let file = std::fs::read_to_string(&root).unwrap();
    let body = |s: &str| s.lines().filter(|l| !l.starts_with('#')).collect::<String>();
    assert_eq!(body(&pem).trim(), body(&file).trim());

    // Another root: the handshake fails, and the error names the fix.
    let other = dir.join("other.pem");
    let stranger = weft_identity::Authority::new_root("cluster.local", weft_identity::DEFAULT_CA_LIFETIME).unwrap();
    std::fs::write(&other, stranger.cert_pem()).unwrap();
    let out =
        weft(&["get", "workloads", "--server", &api, "--data-dir", data, "--ca-file", other.to_str().unwrap()], &[]);
    let err = text(&out);
    assert!(!out.status.success(), "{err}");
    for fix in ["--ca-file", "WEFT_CA_FILE", "weft ca --pem", "does not chain"] {
        assert!(err.contains(fix), "{fix} missing: {err}");
    }
    // No CA file where it looks: says where it looked and how to give one.
    let empty = tempdir("tls-empty");
    let out = weft(&["get", "workloads", "--server", &api, "--data-dir", empty.to_str().unwrap(), "--token", "x"], &[]);
    let err = text(&out);
    assert!(!out.status.success() && err.contains("ca/root.pem") && err.contains("--ca-file"), "{err}");
    // http:// against the TLS API: the server says it is TLS only.
    let out = weft(&["get", "workloads", "--server", &format!("http://{api}"), "--data-dir", data], &[]);
    let err = text(&out);
    assert!(!out.status.success() && err.contains("over TLS only") && err.contains("https://"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&empty);
}

#[test]
fn api_plaintext_works_on_loopback_with_http_and_is_refused_elsewhere() {
    let dir = tempdir("plain");
    let data = dir.to_str().unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let wild = format!("0.0.0.0:{}", free_port());
    let out =
        weft(&["control", "--data-dir", data, "--grpc", &grpc, "--api", &wild, "--dns", "off", "--api-plaintext"], &[]);
    let err = text(&out);
    assert!(!out.status.success() && err.contains("--api-plaintext") && err.contains(&wild), "{err}");

    let (_cp, api, out) = control(&dir, &["--api-plaintext"]);
    assert!(out.contains(&format!("HTTP API   http://{api}")), "{out}");
    let out = weft(&["get", "workloads", "--server", &format!("http://{api}"), "--data-dir", data], &[]);
    assert!(out.status.success(), "{}", text(&out));
    // A TLS client against the plaintext API: told the server is plaintext and what to use.
    let out = weft(&["get", "workloads", "--server", &api, "--data-dir", data], &[]);
    let err = text(&out);
    assert!(!out.status.success() && err.contains("plaintext") && err.contains(&format!("http://{api}")), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_wildcard_api_answers_on_loopback_and_names_api_san_for_other_addresses() {
    let dir = tempdir("wild");
    let data = dir.to_str().unwrap();
    let port = free_port();
    let (_cp, _, _) = control_on(&dir, &format!("0.0.0.0:{port}"), &["--api-san", "127.0.0.3"]);
    for host in ["127.0.0.1", "localhost", "127.0.0.3"] {
        let out = weft(&["get", "workloads", "--server", &format!("{host}:{port}"), "--data-dir", data], &[]);
        assert!(out.status.success(), "{host}: {}", text(&out));
    }
    // An address the certificate does not name: the error says which flag adds it.
    let out = weft(&["get", "workloads", "--server", &format!("127.0.0.2:{port}"), "--data-dir", data], &[]);
    let err = text(&out);
    assert!(!out.status.success() && err.contains("--api-san 127.0.0.2"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
