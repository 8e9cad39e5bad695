//! The dashboard in a real browser: Debian's `chromium`, headless, loads each page of a running
//! `weft up` mesh (two linked clusters, demo traffic) and the test checks that every page renders
//! with no script error (the page's script records `window.onerror`, unhandled rejections and
//! `console.error` into `#page-errors` and `<html data-errors>`, which the DOM dump shows), and the
//! content each page must show. Each load logs in with a one-time URL from `weft dashboard`.
//!
//! Screenshots of each page go to a scratch directory, and into `docs/img/` with
//! `WEFT_UPDATE_SCREENSHOTS=1` (docs/dashboard.md shows them).
//!
//! chromium is installed with apt-get when missing and this runs as root; otherwise the test skips,
//! saying so.

use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `chromium`, installed from Debian when missing and this runs as root; `Err` saying why not.
fn chromium() -> Result<(), String> {
    let has = || Command::new("chromium").arg("--version").output().is_ok_and(|o| o.status.success());
    if has() {
        return Ok(());
    }
    if !is_root() {
        return Err("chromium is not installed and this test is not root (apt-get install chromium)".into());
    }
    let out = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "chromium"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|e| format!("no apt-get to install chromium: {e}"))?;
    if !out.status.success() || !has() {
        return Err(format!("apt-get install chromium failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

/// `weft up` in the background; SIGTERM and reaped however the test ends.
struct Up {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    seen: String,
}

impl Up {
    fn start(args: &[&str]) -> Up {
        let mut child =
            Command::new(WEFT).arg("up").args(args).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Up { child, lines, seen: String::new() }
    }

    /// Reads lines until one for which `f` holds (weft up bounds its own start-up: no hang).
    fn until(&mut self, max: usize, f: impl Fn(&str) -> bool) -> String {
        for _ in 0..max {
            let line = self.lines.next().unwrap_or_else(|| panic!("weft up ended: {}", self.seen)).unwrap();
            self.seen.push_str(&line);
            self.seen.push('\n');
            if f(&line) {
                return line;
            }
        }
        panic!("no such line in {max} lines: {}", self.seen)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// The east cluster's API server, admin token and API CA file, from its `export` line.
fn east_env(out: &str) -> (String, String, String) {
    let line = out.lines().find(|l| l.trim().starts_with("export WEFT_SERVER=")).expect("an export line");
    let mut server = String::new();
    let mut token = String::new();
    let mut ca_file = String::new();
    for kv in line.trim().trim_start_matches("export ").split_whitespace() {
        match kv.split_once('=') {
            Some(("WEFT_SERVER", v)) => server = v.into(),
            Some(("WEFT_TOKEN", v)) => token = v.into(),
            Some(("WEFT_CA_FILE", v)) => ca_file = v.into(),
            _ => {}
        }
    }
    (server, token, ca_file)
}

struct Browser {
    server: String,
    token: String,
    ca_file: String,
    profile: PathBuf,
}

impl Browser {
    /// A fresh one-time login URL (`weft dashboard --url-only`) that lands on `page`.
    fn login_url(&self, page: &str) -> String {
        let out = Command::new(WEFT)
            .args(["dashboard", "--url-only", "--server", &self.server, "--token", &self.token])
            .args(["--ca-file", &self.ca_file])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(url.starts_with("http://127.0.0.1:") && url.contains("/login?code="), "{url}");
        format!("{url}&next={}", page.replace('&', "%26").replace('?', "%3F"))
    }

    fn chromium(&self, extra: &[&str], url: &str) -> Vec<u8> {
        let out = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1400,1000",
                // Lets the page's script run (and a tap stream a few seconds) before the dump.
                "--virtual-time-budget=4000",
            ])
            .arg(format!("--user-data-dir={}", self.profile.display()))
            .args(extra)
            .arg(url)
            .stderr(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "chromium failed on {url}");
        out.stdout
    }

    /// The page's DOM after its script ran; asserts it rendered with no script error.
    fn dom(&self, page: &str) -> String {
        let dom = String::from_utf8_lossy(&self.chromium(&["--dump-dom"], &self.login_url(page))).into_owned();
        assert!(dom.contains("<main"), "{page}: not a dashboard page: {dom}");
        assert!(!dom.contains("data-errors="), "{page}: script errors: {dom}");
        assert!(dom.contains("id=\"page-errors\" hidden"), "{page}: {dom}");
        // The script ran (it stamps the footer).
        assert!(dom.contains("<span id=\"updated\">updated "), "{page}: the script did not run: {dom}");
        dom
    }

    /// The page's DOM once `condition` (a script expression) holds in it, for content that
    /// arrives after the load event (`--dump-dom` would dump before it): chromium with its
    /// DevTools port, asked by `browser/cdp_wait.py` (PyPI `websocket-client`). The same checks as
    /// [`Browser::dom`].
    fn dom_when(&self, page: &str, condition: &str, seconds: u32) -> String {
        let python = weft_testkit::python::venv(
            Path::new(env!("CARGO_TARGET_TMPDIR")),
            "cdp-venv",
            &["websocket-client==1.8.0"],
            "websocket",
            "the dashboard browser test",
        )
        .expect("PyPI reachable for websocket-client");
        let mut chromium = Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
            .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", self.profile.display()))
            .arg(self.login_url(page))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        struct Kill(Child);
        impl Drop for Kill {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let stderr = chromium.stderr.take().unwrap();
        let chromium = Kill(chromium);
        // Chromium says where its DevTools listen once they do; it runs until killed, so this ends.
        let port = BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.split("DevTools listening on ws://127.0.0.1:").nth(1)?.split('/').next().map(String::from))
            .expect("chromium prints its DevTools address");
        let path = page.split('?').next().unwrap_or(page);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/cdp_wait.py");
        let out = Command::new(python)
            .arg(script)
            .args([port.as_str(), path, condition, &seconds.to_string()])
            .output()
            .unwrap();
        drop(chromium);
        let dom = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{page}: {}\n{dom}", String::from_utf8_lossy(&out.stderr));
        assert!(!dom.contains("data-errors="), "{page}: script errors: {dom}");
        assert!(dom.contains("id=\"page-errors\" hidden"), "{page}: {dom}");
        dom
    }

    fn screenshot(&self, page: &str, file: &Path) {
        let _ = std::fs::remove_file(file);
        self.chromium(&[&format!("--screenshot={}", file.display())], &self.login_url(page));
        let png = std::fs::read(file).unwrap_or_default();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "{page}: no screenshot in {}", file.display());
    }
}

/// Polls `check` until it holds, up to `deadline` (proxies report their metrics every 10 s).
fn poll(what: &str, deadline: std::time::Duration, mut check: impl FnMut() -> Option<String>) -> String {
    let end = std::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(std::time::Instant::now() < end, "{what}: not within {deadline:?}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// `weft edges -o json` of the east cluster, when web → api's two versions show: the demo's
/// HTTPRoute sends web's calls to api on to Service api-v1 (east) and api-v2 (west).
fn demo_edges(b: &Browser) -> Option<String> {
    let out = Command::new(WEFT)
        .args(["edges", "-o", "json", "--server", &b.server, "--token", &b.token, "--ca-file", &b.ca_file])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let edges = v["edges"].as_array()?;
    let to = |service: &str, cluster: &str| {
        edges
            .iter()
            .any(|e| e["src"]["service"] == "web" && e["dst"]["service"] == service && e["dst"]["cluster"] == cluster)
    };
    (to("api-v1", "east") && to("api-v2", "west")).then(|| v.to_string())
}

/// `service.namespace@cluster` → the services page row's `data-success`.
fn row_success(dom: &str, id: &str) -> Option<String> {
    let i = dom.find(&format!("data-service=\"{id}\""))?;
    let rest = &dom[i..dom[i..].find('>').map(|e| i + e).unwrap_or(dom.len())];
    let s = rest.find("data-success=\"")? + "data-success=\"".len();
    Some(rest[s..].split('"').next()?.to_string())
}

#[test]
fn every_page_renders_in_chromium_without_script_errors() {
    if let Err(why) = chromium() {
        eprintln!("SKIP every_page_renders_in_chromium_without_script_errors: {why}");
        return;
    }
    let mut up = Up::start(&["--interval", "200ms"]);
    up.until(200, |l| l.contains("==> demo traffic"));
    // A few requests across both clusters.
    up.until(200, |l| l.contains("-> api-v2 (west) over mTLS: 200"));
    up.until(200, |l| l.contains("-> api-v1 (east) over mTLS: 200"));
    let (server, token, ca_file) = east_env(&up.seen);
    assert!(up.seen.contains("dashboard: http://127.0.0.1:"), "weft up prints the dashboard: {}", up.seen);
    let scratch = std::env::temp_dir().join(format!("weft-dash-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let b = Browser { server, token, ca_file, profile: scratch.join("profile") };
    // The first reports of the demo's traffic (every 10 s) before the pages are loaded.
    poll("web -> api-v1 (east) and api-v2 (west) in `weft edges`", std::time::Duration::from_secs(90), || {
        demo_edges(&b)
    });

    let overview = b.dom("/");
    assert!(overview.contains("Clusters and links") && overview.contains("data-link=\"west\""), "{overview}");
    assert!(overview.contains("badge good\">active"), "the link to west is active: {overview}");
    assert!(overview.contains("<table id=\"audit\""), "recent changes: {overview}");

    let services = b.dom("/services");
    for id in ["web.default@east", "api-v1.default@east"] {
        assert!(services.contains(&format!("data-service=\"{id}")), "{id}: {services}");
    }

    let topology = b.dom("/topology");
    assert!(topology.contains("id=\"topology\""), "{topology}");
    for node in ["web.default@east", "api-v1.default@east", "api-v2.default@west"] {
        assert!(topology.contains(&format!("data-node=\"{node}\"")), "{node}: {topology}");
    }

    let service = b.dom("/services/default/api-v1");
    assert!(service.contains("<table id=\"instances\"") && service.contains("api-v1"), "{service}");

    let proxies = b.dom("/proxies");
    let first =
        proxies.split("data-proxy=\"").nth(1).and_then(|r| r.split('"').next()).expect("a proxy row").to_string();
    assert!(proxies.contains("badge good\">SYNCED"), "{proxies}");
    let proxy_page = format!("/proxies/{first}");
    let proxy = b.dom(&proxy_page);
    assert!(proxy.contains("<table class=\"kv\" id=\"proxy-status\""), "{proxy}");

    let tap_page = "/tap?start=1&namespace=default&max=5&seconds=3";
    let tap = b.dom(tap_page);
    assert!(tap.contains("id=\"tap-form\""), "{tap}");

    // The demo's edges: web in east calls api-v1 in east and, through the gateways, api-v2 in west.
    assert!(topology.contains("data-edge=\"web.default@east to api-v1.default@east\""), "{topology}");
    assert!(topology.contains("data-edge=\"web.default@east to api-v2.default@west\""), "{topology}");
    // The numbers the CLI prints: the same success rate per service and cluster.
    let out = Command::new(WEFT)
        .args(["stat", "service", "-o", "json", "--server", &b.server, "--token", &b.token])
        .args(["--ca-file", &b.ca_file])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["rows"].as_array().expect("weft stat -o json has rows");
    assert!(!rows.is_empty(), "{v}");
    let services = b.dom("/services");
    for r in rows {
        let id = format!(
            "{}.{}@{}",
            r["service"].as_str().unwrap_or_default(),
            r["namespace"].as_str().unwrap_or_default(),
            r["cluster"].as_str().unwrap_or_default()
        );
        if let Some(x) = r["success_rate"].as_f64() {
            assert_eq!(row_success(&services, &id).as_deref(), Some(format!("{x:.4}").as_str()), "{id}: {services}");
        }
    }
    // The tap's rows arrive on a streaming fetch, after the load event.
    let tap = b.dom_when(tap_page, "document.querySelectorAll('#tap-events tbody tr').length > 0", 60);
    // An outbound event names the Service web called (`api`, split by its route), an inbound one
    // the version that answered.
    let named = ["web.default", "api.default", "api-v1.default", "api-v2.default"];
    assert!(named.iter().any(|n| tap.contains(n)), "tap events: {tap}");
    assert!(proxy.contains("data-section="), "the proxy's configuration: {proxy}");

    // Screenshots of each page.
    let update = std::env::var("WEFT_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1");
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/img");
    for (name, page) in [
        ("overview", "/"),
        ("services", "/services"),
        ("topology", "/topology"),
        ("service", "/services/default/api-v1"),
        ("proxies", "/proxies"),
        ("proxy", proxy_page.as_str()),
        ("tap", tap_page),
    ] {
        let file = scratch.join(format!("dashboard-{name}.png"));
        b.screenshot(page, &file);
        if update {
            std::fs::create_dir_all(&docs).unwrap();
            std::fs::copy(&file, docs.join(format!("dashboard-{name}.png"))).unwrap();
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn weft_control_refuses_a_dashboard_off_loopback_with_a_plaintext_api() {
    let dir = std::env::temp_dir().join(format!("weft-dash-refuse-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(WEFT)
        .args(["control", "--api", "127.0.0.1:0", "--api-plaintext", "--grpc", "127.0.0.1:0", "--dns", "off"])
        .args(["--dashboard", "0.0.0.0:15090", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--dashboard 0.0.0.0:15090") && err.contains("--api-plaintext"), "{err}");
    assert!(!dir.exists(), "refused before the data directory is made");
}
