//! `weft up`, the README's main command, end to end: a CA, three demo apps as child processes,
//! three sidecars, and traffic over mTLS; then a clean stop. These run the single cluster
//! (`--clusters 1`); the default two linked clusters are tested in `up_clusters.rs`.

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
    let text = up(&["--clusters", "1", "--requests", "4", "--interval", "100ms"]);
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
    let text = up(&["--clusters", "1", "--requests", "8", "--interval", "400ms", "--cert-lifetime", "2s"]);
    assert!(text.contains("rotated the certificate of web"), "{text}");
    assert!(text.contains("rotated the certificate of api-v1"), "{text}");
    assert!(text.contains("stopped after 8 requests (0 failed)"), "{text}");
}

#[test]
fn weft_up_from_a_file_runs_its_commands_behind_sidecars() {
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("weft-upfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mesh.yaml");
    std::fs::write(
        &file,
        r#"
mesh: { trustDomain: example.org, cluster: { name: east, region: eu } }
services:
  - name: api
    workloads:
      - name: api-v1
        command: [weft, demo-app, --name, api-v1, --listen, "127.0.0.1:{port}"]
        check: { http: /health, interval: 1s }
  - name: web
    workloads:
      - name: web
        command: [weft, demo-app, --name, web, --listen, "127.0.0.1:{port}", --upstream, "{upstream.api}"]
        upstreams: [api]
"#,
    )
    .unwrap();
    let mut child = Command::new(WEFT)
        .args(["up", "-f", file.to_str().unwrap(), "--requests", "60", "--interval", "500ms"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut web = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.trim_start().starts_with("web ") {
            web = line.split_whitespace().nth(2).map(str::to_string);
        }
        if line.starts_with("==> mesh is up") {
            break;
        }
    }
    let web = web.expect("the web workload's app address is printed");
    // The web command calls api through its sidecar, over mTLS, once the health check passes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let body = loop {
        let out = Command::new(WEFT).args(["demo-call", &web]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains("\"upstream_status\":200") {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "web never reached api: {text}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(body.contains("spiffe://example.org/ns/default/sa/web"), "the file's trust domain: {body}");
    // SIGTERM: weft up stops its sidecars and commands (SIGKILL would orphan them).
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert!(status.success(), "clean stop: {status}");
    // A bad file is refused with the field named.
    let refused = |yaml: &str, field: &str| {
        std::fs::write(&file, yaml).unwrap();
        let out = Command::new(WEFT).args(["up", "-f", file.to_str().unwrap()]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted a file with a bad {field}");
        assert!(stderr.contains(field), "the error names {field}: {stderr}");
    };
    refused("mesh: { trustDomain: \"Not Valid\" }\nservices:\n  - name: api\n", "mesh.trustDomain");
    refused(
        "services:\n  - name: api\n    workloads:\n      - name: w\n        command: [x]\n        upstreams: [nope]\n",
        "services[0].workloads[0].upstreams",
    );
}

/// Plain `weft up` registers the same workloads as `weft up --netns`: api-v1, api-v2 and web
/// (web used to be only a client there, so `weft get workloads` left it out).
#[test]
fn weft_up_registers_every_demo_workload() {
    use std::io::BufRead;
    let mut child = Command::new(WEFT)
        .args(["up", "--clusters", "1", "--interval", "200ms"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed (SIGTERM, then reaped) however the test ends.
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
            let _ = self.0.wait();
        }
    }
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let stop = Stop(child);
    let mut env = None;
    let mut metrics = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("metrics: http://") {
            metrics = rest.split('/').next().map(str::to_string);
        }
        if let Some(rest) = line.trim().strip_prefix("and:     export ") {
            let vars: Vec<(String, String)> = rest
                .split_whitespace()
                .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                .collect();
            env = Some(vars);
        }
        if line.starts_with("==> demo traffic") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let env = env.expect("weft up prints WEFT_SERVER and WEFT_TOKEN");
    let out = Command::new(WEFT).args(["get", "workloads", "-o", "json"]).envs(env).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let items: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut names: Vec<&str> =
        items.as_array().unwrap().iter().map(|o| o["metadata"]["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["api-v1", "api-v2", "web"], "the workloads weft up --netns registers");
    // And the control plane's own /metrics, at the address it printed.
    let metrics = metrics.expect("weft up prints the control plane's metrics address");
    let mut conn = std::net::TcpStream::connect(&metrics).unwrap();
    use std::io::{Read, Write};
    conn.write_all(b"GET /metrics HTTP/1.1\r\nhost: m\r\nconnection: close\r\n\r\n").unwrap();
    let mut scrape = String::new();
    conn.read_to_string(&mut scrape).unwrap();
    assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
    let value = |name: &str| -> f64 {
        let line =
            scrape.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {scrape}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("weft_control_plane_endpoints") >= 3.0, "api-v1, api-v2 and web: {scrape}");
    assert!(value("weft_control_plane_proxies_connected") >= 1.0, "the demo's sidecars: {scrape}");
    drop(stop);
}
