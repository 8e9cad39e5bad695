//! The control plane as a process: `weft control`, proxies as processes following it, the CLI
//! verbs, and a kill -9 in the middle of an apply. After a restart on the same data directory
//! the state is intact (the apply is all there or not at all) and the proxies resync. Health-check
//! state survives kill -9 and SIGTERM too: traffic through the sidecars never fails.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weft_testkit::{eventually, http1_get};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// A child process killed (SIGKILL) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `weft <args>` and waits for a stdout line equal to `ready`; returns the lines before it.
fn start(args: &[&str], env: &[(&str, &str)]) -> (Proc, Vec<String>) {
    let mut cmd = Command::new(WEFT);
    cmd.args(args).envs(env.iter().copied()).stderr(Stdio::null());
    start_cmd(cmd, args)
}

/// What a process has written to stderr so far.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<String>>);

impl Logs {
    /// The first line that contains every one of `parts`.
    fn line_with(&self, parts: &[&str]) -> Option<String> {
        let text = self.0.lock().unwrap();
        text.lines().find(|l| parts.iter().all(|p| l.contains(p))).map(str::to_string)
    }
}

/// As [`start`], with stderr kept in [`Logs`], at the process's default log level (no `RUST_LOG`).
fn start_logged(args: &[&str]) -> (Proc, Logs) {
    let mut cmd = Command::new(WEFT);
    cmd.args(args).env_remove("RUST_LOG").stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let logs = Logs::default();
    let (stderr, sink) = (child.stderr.take().unwrap(), logs.clone());
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut text = sink.0.lock().unwrap();
            text.push_str(&l);
            text.push('\n');
        }
    });
    let (proc, _) = wait_ready(child, args);
    (proc, logs)
}

fn start_cmd(mut cmd: Command, args: &[&str]) -> (Proc, Vec<String>) {
    wait_ready(cmd.stdout(Stdio::piped()).spawn().unwrap(), args)
}

/// Reads the child's stdout up to a line equal to `ready`; returns the lines before it.
fn wait_ready(mut child: Child, args: &[&str]) -> (Proc, Vec<String>) {
    let mut lines = vec![];
    let Some(stdout) = child.stdout.take() else { panic!("weft {args:?}: stdout is not piped") };
    let mut reader = BufReader::new(stdout);
    loop {
        let mut l = String::new();
        if reader.read_line(&mut l).unwrap() == 0 {
            panic!("weft {args:?} exited before it was ready: {lines:?}");
        }
        let l = l.trim_end().to_string();
        if l == "ready" {
            break;
        }
        lines.push(l);
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in reader.lines() {});
    (Proc(child), lines)
}

struct Cp {
    dir: std::path::PathBuf,
    grpc: SocketAddr,
    api: String,
}

impl Cp {
    fn run(&self) -> Proc {
        let grpc = self.grpc.to_string();
        start(
            &["control", "--data-dir", self.dir.to_str().unwrap(), "--grpc", &grpc, "--api", &self.api, "--dns", "off"],
            &[],
        )
        .0
    }

    fn args(&self) -> [String; 9] {
        let (grpc, api, data) = (self.grpc.to_string(), self.api.clone(), self.dir.display().to_string());
        ["control", "--data-dir", &data, "--grpc", &grpc, "--api", &api, "--dns", "off"].map(String::from)
    }

    /// Runs the control plane at its default log level, keeping its stderr.
    fn run_logged(&self) -> (Proc, Logs) {
        let args = self.args();
        start_logged(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Runs a CLI verb against this control plane.
    fn weft(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(WEFT)
            .args(args)
            .env("WEFT_SERVER", &self.api)
            .env("WEFT_DATA_DIR", &self.dir)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    }
}

fn proxy(cp: &Cp, identity: &str, extra: &str) -> (Proc, Vec<String>) {
    let (ok, token) = cp.weft(&["token", "create", "--identity", identity]);
    assert!(ok, "{token}");
    let cfg = cp.dir.join(format!("{}.yaml", identity.replace('/', "-")));
    std::fs::write(
        &cfg,
        format!("control: {{ address: \"{}\", token: \"{}\", proxy_id: \"{}\" }}\nadmin: {{ listen: \"127.0.0.1:0\" }}\n{extra}", cp.grpc, token.trim(), identity.replace('/', "-")),
    )
    .unwrap();
    start(&["proxy", "run", "--config", cfg.to_str().unwrap()], &[("RUST_LOG", "warn")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_apply_then_restart_keeps_state_and_proxies_resync() {
    let dir = std::env::temp_dir().join(format!("weft-control-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cp = Cp {
        dir: dir.clone(),
        grpc: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        api: format!("127.0.0.1:{}", free_port()),
    };
    let mut control = cp.run();

    let app = weft_testkit::http_echo("api").await;
    let inbound_port = free_port();
    let (_server, _) = proxy(
        &cp,
        "default/api",
        &format!("inbound: {{ listen: \"127.0.0.1:{inbound_port}\", ports: [{{ port: {} }}] }}\n", app.port()),
    );
    let (_client, lines) =
        proxy(&cp, "default/web", "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n");
    let upstream: SocketAddr = lines.iter().find_map(|l| l.strip_prefix("upstream ")).unwrap().parse().unwrap();

    let mesh = dir.join("mesh.yaml");
    std::fs::write(
        &mesh,
        format!(
            "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1 }}\nspec: {{ service: api, address: 127.0.0.1, port: {}, sidecar: \"127.0.0.1:{inbound_port}\" }}\n",
            app.port()
        ),
    )
    .unwrap();
    let (ok, out) = cp.weft(&["apply", "-f", mesh.to_str().unwrap()]);
    assert!(ok && out.contains("Workload default/api-1 created"), "{out}");
    eventually("traffic flows through the sidecars", Duration::from_secs(15), || async move {
        (http1_get(upstream, "/").await.ok()?.status() == 200).then_some(())
    })
    .await;

    // A large apply (one transaction), and kill -9 while it may be in flight.
    let mut big = String::new();
    for i in 0..300 {
        big.push_str(&format!("---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: bulk-{i} }}\nspec: {{ service: api, address: 10.9.{}.{}, port: 80 }}\n", i / 250, i % 250 + 1));
    }
    let bulk = dir.join("bulk.yaml");
    std::fs::write(&bulk, big).unwrap();
    let mut apply = Command::new(WEFT)
        .args(["apply", "-f", bulk.to_str().unwrap()])
        .env("WEFT_SERVER", &cp.api)
        .env("WEFT_DATA_DIR", &dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    control.0.kill().unwrap(); // SIGKILL
    let _ = control.0.wait();
    let _ = apply.wait();

    // The mesh keeps working without its control plane.
    assert_eq!(http1_get(upstream, "/while-down").await.unwrap().status(), 200);

    let _control = cp.run();
    let (ok, out) = cp.weft(&["get", "workloads", "-o", "json"]);
    assert!(ok, "{out}");
    let items: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = items.as_array().unwrap().iter().map(|o| o["metadata"]["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"api-1"), "state from before the crash is intact: {names:?}");
    let bulk_count = names.iter().filter(|n| n.starts_with("bulk-")).count();
    assert!(bulk_count == 0 || bulk_count == 300, "an apply is all or nothing, found {bulk_count} of 300");

    let out = eventually("both proxies SYNCED again", Duration::from_secs(20), || {
        let r = cp.weft(&["proxy-status"]);
        async move { (r.0 && r.1.matches("SYNCED").count() == 2).then_some(r.1) }
    })
    .await;
    assert!(out.contains("default-web") && out.contains("spiffe://cluster.local/ns/default/sa/web"), "{out}");
    // Where each proxy was placed, and its mode.
    let web = out.lines().find(|l| l.contains("default-web")).unwrap_or_default();
    assert!(
        out.contains("CLUSTER") && out.contains("MODE") && web.contains(" local ") && web.contains(" sidecar "),
        "{out}"
    );
    assert_eq!(http1_get(upstream, "/after").await.unwrap().status(), 200);

    let (ok, out) = cp.weft(&["check"]);
    assert!(out.contains("√ proxies are in sync"), "{out}");
    assert!(out.contains("√ intermediate CA certificate is valid for more than 30 days"), "{out}");
    assert!(out.contains("√ proxies' certificates are renewed in time"), "{out}");
    let _ = ok;
}

#[test]
fn cli_verbs_explain_their_errors() {
    let dir = std::env::temp_dir().join(format!("weft-control-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cp = Cp {
        dir: dir.clone(),
        grpc: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        api: format!("127.0.0.1:{}", free_port()),
    };
    // No control plane yet.
    let (ok, out) = cp.weft(&["get", "services"]);
    assert!(!ok && out.contains("error:"), "{out}");
    let _control = cp.run();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: Bad_Name }\n").unwrap();
    let (ok, out) = cp.weft(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(!ok && out.contains("metadata.name") && out.contains("DNS label"), "{out}");
    assert!(!out.contains("Stack backtrace"), "errors are one readable line: {out}");
    let (ok, out) = cp.weft(&["get", "gizmos"]);
    assert!(!ok && out.contains("unknown kind"), "{out}");
    let (ok, out) =
        cp.weft(&["register", "--name", "db", "--address", "10.1.2.3", "--port", "5432", "--tag", "primary"]);
    assert!(ok && out.contains("Workload default/db created"), "{out}");
    let (ok, out) = cp.weft(&["get", "services"]);
    assert!(ok && out.contains("db"), "{out}");
    let (ok, out) = cp.weft(&["token", "create", "--identity", "not-an-identity"]);
    assert!(!ok && out.contains("<namespace>/<service-account>"), "{out}");
    // A token for a remote cluster that is not declared (MeshConfig remoteClusters) is refused.
    let (ok, out) = cp.weft(&["token", "create", "--identity", "default/web", "--cluster", "edge"]);
    assert!(!ok && out.contains("cluster") && out.contains("remoteClusters"), "{out}");
    let (ok, out) = cp.weft(&["token", "create", "--identity", "default/web", "--cluster", "local"]);
    assert!(ok && out.starts_with("wft_"), "this cluster's own name: {out}");
    let (ok, out) = cp.weft(&["ca"]);
    assert!(ok && out.contains("sha256"), "{out}");
    let (ok, out) = cp.weft(&["ca", "--pem"]);
    assert!(ok && out.starts_with("# trust_domain: cluster.local\n-----BEGIN CERTIFICATE-----"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_with_the_root_key_offline() {
    let dir = std::env::temp_dir().join(format!("weft-control-offline-root-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cp = Cp {
        dir: dir.clone(),
        grpc: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        api: format!("127.0.0.1:{}", free_port()),
    };
    let args = |cp: &Cp| {
        let (grpc, api, data) = (cp.grpc.to_string(), cp.api.clone(), cp.dir.display().to_string());
        ["control", "--data-dir", &data, "--grpc", &grpc, "--api", &api, "--dns", "off"].map(String::from)
    };
    let first = args(&cp);
    let (control, lines) = start(&first.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let root_key = dir.join("ca/root-key.pem");
    assert!(lines.iter().any(|l| l.contains("root key") && l.contains("on this host")), "{lines:?}");
    drop(control);

    // The root key moved offline: the control plane runs on the intermediate alone and says so.
    let offline = dir.join("offline-root-key.pem");
    std::fs::rename(&root_key, &offline).unwrap();
    let (_control, lines) = start(&first.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(lines.iter().any(|l| l.contains("root key   offline")), "{lines:?}");
    // Proxies still get certificates and talk through each other.
    let app = weft_testkit::http_echo("api").await;
    let inbound_port = free_port();
    let (_server, _) = proxy(
        &cp,
        "default/api",
        &format!("inbound: {{ listen: \"127.0.0.1:{inbound_port}\", ports: [{{ port: {} }}] }}\n", app.port()),
    );
    let (_client, lines) =
        proxy(&cp, "default/web", "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n");
    let upstream: SocketAddr = lines.iter().find_map(|l| l.strip_prefix("upstream ")).unwrap().parse().unwrap();
    let mesh = dir.join("mesh.yaml");
    std::fs::write(
        &mesh,
        format!(
            "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1 }}\nspec: {{ service: api, address: 127.0.0.1, port: {}, sidecar: \"127.0.0.1:{inbound_port}\" }}\n",
            app.port()
        ),
    )
    .unwrap();
    let (ok, out) = cp.weft(&["apply", "-f", mesh.to_str().unwrap()]);
    assert!(ok, "{out}");
    eventually("traffic flows with the root key offline", Duration::from_secs(15), || async move {
        (http1_get(upstream, "/").await.ok()?.status() == 200).then_some(())
    })
    .await;
    assert!(!root_key.exists(), "nothing recreated the root key");

    // `weft ca rotate` with the old root's key offline: a new root is made here; real proxy
    // processes keep serving requests throughout, and none fails.
    let (ok, out) = cp.weft(&["ca", "rotate", "--overlap", "soon"]);
    assert!(!ok && out.contains("--overlap") && out.contains("24h"), "{out}");
    let (ok, out) = cp.weft(&["ca", "rotate", "--help"]);
    assert!(ok && out.contains("trust-both") && out.contains("--abort"), "{out}");
    let traffic = Traffic::start(upstream);
    traffic.more("traffic before the rotation", 5).await;
    let (ok, out) = cp.weft(&["ca", "rotate", "--overlap", "0s", "--wait"]);
    assert!(ok && out.contains("rotation started: phase trust-both") && out.contains("done"), "{out}");
    traffic.more("traffic after the rotation", 10).await;
    let failures = traffic.stop().await;
    assert!(failures.is_empty(), "requests failed during the rotation: {failures:?}");
    let (ok, out) = cp.weft(&["ca"]);
    assert!(ok && out.contains("none in progress") && out.contains("trusted roots 1"), "{out}");
    // proxy-status names the root of each proxy's certificate: the new one.
    let root_sha = out.lines().find_map(|l| l.trim().strip_prefix("sha256 ")).unwrap();
    let prefix: String = root_sha.replace(':', "").to_lowercase().chars().take(16).collect();
    let prefix = &prefix;
    let cp_ref = &cp;
    eventually("both proxies report a certificate of the new root", Duration::from_secs(20), || async move {
        let (ok, out) = cp_ref.weft(&["proxy-status"]);
        (ok && out.contains("CERT ROOT") && out.matches(prefix.as_str()).count() == 2).then_some(())
    })
    .await;
    assert!(root_key.exists(), "the new root's key is written like the first one's (to be moved offline)");
    let (ok, out) = cp.weft(&["ca", "rotate", "--abort"]);
    assert!(!ok && out.contains("nothing to abort"), "{out}");
}

/// `PUT /v1/agent/check/pass/<check>` with the admin token; the HTTP status.
async fn ttl_pass(cp: &Cp, check: &str, note: &str) -> u16 {
    let token = std::fs::read_to_string(cp.dir.join("admin.token")).unwrap();
    let req = http::Request::put(format!("/v1/agent/check/pass/{check}"))
        .header("host", "cp")
        .header("authorization", format!("Bearer {}", token.trim()))
        .body(http_body_util::Full::new(bytes::Bytes::from(note.to_string())))
        .unwrap();
    let pem = std::fs::read_to_string(cp.dir.join("ca/root.pem")).unwrap();
    let roots = weft_identity::https::certs_from_pem(&pem, "root.pem").unwrap();
    let tls = std::sync::Arc::new(weft_identity::https::client_config(&roots).unwrap());
    match weft_testkit::api_request(cp.api.parse().unwrap(), Some(tls), req).await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Requests through `upstream` every 20 ms until stopped: how many succeeded, and every failure.
struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Traffic {
    fn start(upstream: SocketAddr) -> Traffic {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ok = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, o) = (stop.clone(), ok.clone());
        let task = tokio::spawn(async move {
            let mut failures = vec![];
            let mut pace = tokio::time::interval(Duration::from_millis(20));
            while !s.load(Ordering::SeqCst) {
                pace.tick().await;
                match http1_get(upstream, "/").await {
                    Ok(r) if r.status() == 200 => {
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => failures.push(format!(
                        "{} {:?} {}",
                        r.status(),
                        r.headers().get("x-weft-error"),
                        String::from_utf8_lossy(r.body())
                    )),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        });
        Traffic { stop, ok, task }
    }

    fn ok(&self) -> usize {
        self.ok.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until `n` more requests have succeeded.
    async fn more(&self, what: &str, n: usize) {
        let start = self.ok();
        eventually(what, Duration::from_secs(30), || async move { (self.ok() >= start + n).then_some(()) }).await;
    }

    async fn stop(self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

/// The issue-15 repro: a Workload with an HTTP check and a TTL check (`ttl: 5m`) reported
/// passing, traffic through a real sidecar pair, then `weft control` killed (SIGKILL, later
/// SIGTERM) and started again on the same data directory. Not one request fails, and the
/// TTL-checked endpoint stays routed after the proxies have resynced with the new process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_state_survives_kill_9_and_sigterm_under_traffic() {
    let dir = std::env::temp_dir().join(format!("weft-control-health-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cp = Cp {
        dir: dir.clone(),
        grpc: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        api: format!("127.0.0.1:{}", free_port()),
    };
    let mut control = cp.run();
    let app = weft_testkit::http_echo("api").await;
    let inbound_port = free_port();
    let (_server, _) = proxy(
        &cp,
        "default/api",
        &format!("inbound: {{ listen: \"127.0.0.1:{inbound_port}\", ports: [{{ port: {} }}] }}\n", app.port()),
    );
    let (_client, lines) =
        proxy(&cp, "default/web", "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n");
    let upstream: SocketAddr = lines.iter().find_map(|l| l.strip_prefix("upstream ")).unwrap().parse().unwrap();
    let mesh = dir.join("mesh.yaml");
    std::fs::write(
        &mesh,
        format!(
            "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1 }}\nspec:\n  service: api\n  address: 127.0.0.1\n  port: {port}\n  sidecar: \"127.0.0.1:{inbound_port}\"\n  checks:\n  - {{ name: http, http: \"http://127.0.0.1:{port}/health\", interval: 1s, successThreshold: 2 }}\n  - {{ name: heartbeat, ttl: 5m }}\n",
            port = app.port()
        ),
    )
    .unwrap();
    let (ok, out) = cp.weft(&["apply", "-f", mesh.to_str().unwrap()]);
    assert!(ok, "{out}");
    eventually("the TTL report is taken", Duration::from_secs(15), || async {
        (ttl_pass(&cp, "default/api-1/heartbeat", "all good").await == 200).then_some(())
    })
    .await;
    eventually("traffic flows through the sidecars", Duration::from_secs(15), || async move {
        (http1_get(upstream, "/").await.ok()?.status() == 200).then_some(())
    })
    .await;

    let traffic = Traffic::start(upstream);
    traffic.more("traffic before the restart", 10).await;
    for signal in ["-KILL", "-TERM"] {
        let pid = control.0.id().to_string();
        let killed = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(killed.success());
        let _ = control.0.wait();
        traffic.more(&format!("traffic while the control plane is down ({signal})"), 5).await;
        control = cp.run();
        eventually(
            &format!("both proxies SYNCED with the new control plane ({signal})"),
            Duration::from_secs(20),
            || {
                let r = cp.weft(&["proxy-status"]);
                async move { (r.0 && r.1.matches("SYNCED").count() == 2).then_some(()) }
            },
        )
        .await;
        // The proxies run on what the new process sent them.
        traffic.more(&format!("traffic after the restart ({signal})"), 25).await;
        let (ok, out) = cp.weft(&["get", "workloads"]);
        assert!(ok && out.contains("api-1"), "{out}");
        let health = eventually("the workload's health", Duration::from_secs(10), || {
            let r = cp.weft(&["describe", "workload", "api-1"]);
            async move { r.0.then_some(r.1) }
        })
        .await;
        assert!(
            health.contains("health: passing") && health.contains("all good"),
            "the TTL check kept its report ({signal}): {health}"
        );
    }
    let total = traffic.ok();
    let failures = traffic.stop().await;
    assert!(failures.is_empty(), "{} of {} requests failed: {failures:?}", failures.len(), total + failures.len());
}

/// `weft control` at its default level logs what an operator follows, one line each at info:
/// proxies connecting and disconnecting (id, identity, how it was verified, peer), certificates
/// signed (identity, expiry) and check status changes (workload, check, old and new status,
/// output). Logs to a pipe carry no colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_logs_connects_signings_and_check_changes_at_the_default_level() {
    let dir = std::env::temp_dir().join(format!("weft-control-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cp = Cp {
        dir: dir.clone(),
        grpc: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        api: format!("127.0.0.1:{}", free_port()),
    };
    let (_control, logs) = cp.run_logged();
    let app = weft_testkit::http_echo("api").await;
    let inbound_port = free_port();
    let (server, _) = proxy(
        &cp,
        "default/api",
        &format!("inbound: {{ listen: \"127.0.0.1:{inbound_port}\", ports: [{{ port: {} }}] }}\n", app.port()),
    );
    let mesh = dir.join("mesh.yaml");
    std::fs::write(
        &mesh,
        format!(
            "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1 }}\nspec: {{ service: api, address: 127.0.0.1, port: {port}, sidecar: \"127.0.0.1:{inbound_port}\", checks: [{{ name: ready, http: \"http://127.0.0.1:{port}/ready\", interval: 1s }}] }}\n",
            port = app.port()
        ),
    )
    .unwrap();
    let (ok, out) = cp.weft(&["apply", "-f", mesh.to_str().unwrap()]);
    assert!(ok, "{out}");

    let wait = |what: &'static str, parts: &'static [&'static str]| {
        let logs = logs.clone();
        eventually(what, Duration::from_secs(20), move || {
            let line = logs.line_with(parts);
            async move { line }
        })
    };
    let id = "identity=spiffe://cluster.local/ns/default/sa/api";
    let line =
        wait("a connect line", &["INFO", "proxy connected", "proxy=default-api", "verified_by=", "peer=127.0.0.1:"])
            .await;
    assert!(line.contains(id), "{line}");
    let line = wait("a signing line", &["INFO", "signed a workload certificate", "expires="]).await;
    assert!(line.contains(id) && !line.contains("expires=unknown"), "{line}");
    let line = wait(
        "a check change line",
        &[
            "INFO",
            "health check changed",
            "workload=default/api-1",
            "check=ready",
            "from=critical",
            "to=passing",
            "output=\"",
        ],
    )
    .await;
    assert!(!line.contains("not run yet"), "the output is the new result's: {line}");
    drop(server);
    let line = wait("a disconnect line", &["INFO", "proxy disconnected", "proxy=default-api", "peer=127.0.0.1:"]).await;
    assert!(line.contains(id), "{line}");
    assert!(logs.line_with(&["\u{1b}["]).is_none(), "no colour codes in logs to a pipe");
}

/// Routes in the CLI: `weft get httproutes` shows each route's Gateway API conditions (a missing
/// backend is accepted and reported), `weft describe service` the routes in the order they
/// apply, and `weft describe httproute` the conditions in words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_describe_show_routes_their_status_and_their_order() {
    let dir = std::env::temp_dir().join(format!("weft-control-routes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cp = Cp {
        dir: dir.clone(),
        grpc: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        api: format!("127.0.0.1:{}", free_port()),
    };
    let _control = cp.run();
    let file = dir.join("routes.yaml");
    std::fs::write(
        &file,
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\n---\napiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api-v1 }\n---\napiVersion: weft.io/v1alpha1\nkind: HTTPRoute\nmetadata: { name: canary }\nspec:\n  parentRefs: [{ name: api }]\n  hostnames: [api.example.com]\n  rules:\n    - name: split\n      backendRefs: [{ name: api-v1, weight: 90 }, { name: api-v2, weight: 10 }]\n    - name: testers\n      matches: [{ headers: [{ name: x-canary, value: \"on\" }] }]\n      backendRefs: [{ name: api-v2 }]\n",
    )
    .unwrap();
    let (ok, out) = cp.weft(&["apply", "-f", file.to_str().unwrap()]);
    assert!(ok && out.contains("HTTPRoute default/canary created"), "{out}");
    // Conditions come from the catalog, rebuilt just after the write.
    let out = eventually("the route's conditions", Duration::from_secs(10), || {
        let r = cp.weft(&["get", "httproutes"]);
        async move { (r.0 && r.1.contains("Accepted=True")).then_some(r.1) }
    })
    .await;
    assert!(out.contains("canary") && out.contains("ResolvedRefs=False"), "{out}");
    assert!(out.contains("hosts api.example.com"), "{out}");
    let (ok, out) = cp.weft(&["describe", "httproute", "canary"]);
    assert!(ok && out.contains("BackendNotFound") && out.contains("api-v2.default"), "{out}");
    assert!(out.contains("hostnames: api.example.com"), "{out}");
    let (ok, out) = cp.weft(&["describe", "service", "api"]);
    assert!(ok, "{out}");
    // The header rule applies first although it is second in the route (more header matches).
    let testers = out.find("testers").unwrap_or_else(|| panic!("{out}"));
    let split = out.find("split").unwrap_or_else(|| panic!("{out}"));
    assert!(testers < split, "{out}");
    assert!(out.contains("api-v1.default 90%") && out.contains("(not found: 500)"), "{out}");
    assert!(out.contains("host api.example.com, PathPrefix /, header x-canary=on"), "{out}");
    // The security lines: the mTLS mode per port and the RequestAuthentications (none here).
    assert!(out.contains("\nmtls:") && out.contains("request authentication: none"), "{out}");
    let (ok, out) = cp.weft(&["describe", "service", "api-v1"]);
    assert!(ok && out.contains("routes: none"), "{out}");

    // `weft describe resiliencepolicy`: its target, its condition, and its settings with every
    // default filled in, in the order a request meets them; one naming a missing Service says so.
    let file = dir.join("policies.yaml");
    std::fs::write(
        &file,
        "apiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: { name: api-res }\nspec:\n  targetRef: { kind: Service, name: api }\n  rateLimit: { maxTokens: 5, fillInterval: 1s, perCaller: true }\n  timeouts: { request: 2s }\n  retry: { attempts: 1, grpcStatusCodes: [unavailable] }\n---\napiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: { name: ghost-res }\nspec:\n  targetRef: { kind: Service, name: ghost }\n  timeouts: { perTry: 300ms }\n---\napiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: { name: testers-res }\nspec:\n  targetRef: { kind: HTTPRoute, name: canary, sectionName: testers }\n  timeouts: { request: 1s }\n---\napiVersion: weft.io/v1alpha1\nkind: ResiliencePolicy\nmetadata: { name: route-res }\nspec:\n  targetRef: { kind: HTTPRoute, name: canary }\n  timeouts: { request: 3s }\n",
    )
    .unwrap();
    let (ok, out) = cp.weft(&["apply", "-f", file.to_str().unwrap()]);
    assert!(ok, "{out}");
    // The routes' policies come from the catalog, rebuilt just after the write.
    let out = eventually("the catalog has the rule policies", Duration::from_secs(10), || {
        let r = cp.weft(&["describe", "resiliencepolicy", "api-res"]);
        async move { (r.0 && r.1.contains("default/route-res instead")).then_some(r.1) }
    })
    .await;
    for want in [
        "target: Service default/api",
        "Accepted  True   Accepted        applies to Service default/api",
        "1. rate limit at api's own proxies: bucket of 5 requests, 5 more every 1s, one bucket per caller identity",
        "2. request timeout: 2s",
        "3. try: per-try timeout none",
        "4. retry: up to 1 more tries (2 in all) on connect-failure, gateway-error, reset, grpc-status unavailable",
        "budget 20% of requests + 10/s over 10s",
        "applies to: every call to Service default/api:",
        "except rule testers of HTTPRoute default/canary: ResiliencePolicy default/testers-res instead",
        "except rule split of HTTPRoute default/canary: ResiliencePolicy default/route-res instead",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    let (ok, out) = cp.weft(&["describe", "resiliencepolicy", "ghost-res"]);
    assert!(ok, "{out}");
    assert!(out.contains("TargetNotFound") && out.contains("no Service default/ghost"), "{out}");
    assert!(out.contains("NOT in force") && out.contains("per-try timeout 300ms"), "{out}");
    let out = eventually("the route policy covers its rules", Duration::from_secs(10), || {
        let r = cp.weft(&["describe", "resiliencepolicy", "route-res"]);
        async move { (r.0 && r.1.contains("rule split:")).then_some(r.1) }
    })
    .await;
    assert!(out.contains("target: HTTPRoute default/canary (each rule without a policy of its own)"), "{out}");
    assert!(out.contains("rule split: this policy"), "{out}");
    assert!(out.contains("rule testers: ResiliencePolicy default/testers-res (its own)"), "{out}");
}

#[test]
fn tokens_are_created_listed_revoked_and_audited_from_the_cli() {
    let dir = std::env::temp_dir().join(format!("weft-control-tokens-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cp = Cp {
        dir: dir.clone(),
        grpc: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        api: format!("127.0.0.1:{}", free_port()),
    };
    let _control = cp.run();
    let (ok, token) = cp.weft(&["token", "create", "--namespace", "shop", "--name", "shop-ci", "--ttl", "1h"]);
    assert!(ok && token.starts_with("wft_"), "{token}");
    let token = token.trim().to_string();
    let file = |ns: &str| {
        let f = dir.join(format!("{ns}.yaml"));
        std::fs::write(&f, format!("apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: cart, namespace: {ns} }}\nspec: {{}}\n")).unwrap();
        f.display().to_string()
    };
    let (ok, out) = cp.weft(&["apply", "-f", &file("shop"), "--token", &token]);
    assert!(ok, "a writer of shop writes shop: {out}");
    let (ok, out) = cp.weft(&["apply", "-f", &file("default"), "--token", &token]);
    assert!(!ok && out.contains("not \"default\"") && out.contains("HTTP 403"), "{out}");
    let (ok, out) = cp.weft(&["token", "list"]);
    let row = out.lines().find(|l| l.starts_with("shop-ci")).unwrap_or_default().to_string();
    assert!(ok && row.contains("writer") && row.contains("shop"), "{out}");
    assert!(!out.contains(&token), "the list never shows a token: {out}");
    let (ok, out) = cp.weft(&["token", "list", "--token", &token]);
    assert!(!ok && out.contains("admin token"), "a writer cannot list tokens: {out}");
    let (ok, out) = cp.weft(&["token", "revoke", "shop-ci"]);
    assert!(ok && out.contains("shop-ci") && out.contains("revoked"), "{out}");
    let (ok, out) = cp.weft(&["get", "services", "--token", &token]);
    assert!(!ok && out.contains("revoked") && out.contains("HTTP 401"), "{out}");
    let (ok, out) = cp.weft(&["token", "audit"]);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.iter().any(|l| l.contains("shop-ci") && l.contains("POST /v1/apply") && l.contains("200")), "{out}");
    assert!(lines.iter().any(|l| l.contains("shop-ci") && l.contains("403")), "{out}");
    assert!(lines.iter().any(|l| l.contains("bootstrap-admin") && l.contains("DELETE /v1/tokens/shop-ci")), "{out}");
}

/// `weft diagnose` as a user runs it: exit 0 on a healthy control plane, non-zero with the
/// finding and its fix once a resource refers to nothing, `-o json` the API's findings, and a
/// finding of its own (non-zero) when no control plane answers.
#[test]
fn weft_diagnose_fails_on_a_broken_reference_with_its_fix() {
    let dir = std::env::temp_dir().join(format!("weft-control-diagnose-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cp = Cp {
        dir: dir.clone(),
        grpc: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        api: format!("127.0.0.1:{}", free_port()),
    };
    let (ok, out) = cp.weft(&["diagnose"]);
    assert!(!ok && out.contains("× [control-plane]") && out.contains("fix:"), "{out}");
    let _control = cp.run();
    let (ok, out) = cp.weft(&["diagnose", "--all"]);
    assert!(ok && out.contains("√ [certificates]") && out.contains("0 failure(s)"), "{out}");
    let f = dir.join("telemetry.yaml");
    std::fs::write(
        &f,
        "apiVersion: weft.io/v1alpha1\nkind: Telemetry\nmetadata: { name: logs }\n\
         spec: { targetRef: { kind: Service, name: nowhere }, accessLogging: { enabled: true } }\n",
    )
    .unwrap();
    let (ok, out) = cp.weft(&["apply", "-f", f.to_str().unwrap()]);
    assert!(ok, "{out}");
    let (ok, out) = cp.weft(&["diagnose"]);
    assert!(!ok, "a failing check exits non-zero: {out}");
    assert!(out.contains("× [resources] Telemetry default/logs") && out.contains("Service default/nowhere"), "{out}");
    assert!(out.contains("fix: apply Service default/nowhere"), "{out}");
    let (_, out) = cp.weft(&["diagnose", "-o", "json"]);
    let json = &out[..out.rfind('}').map_or(0, |i| i + 1)];
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(
        v["findings"].as_array().unwrap().iter().any(|f| f["check"] == "resources" && f["status"] == "fail"),
        "{v}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
