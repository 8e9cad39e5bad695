//! `/v1/stats` from a real Prometheus (`weft control --prometheus-url`): Debian's `prometheus`
//! (installed with apt-get when missing and this runs as root; skipped otherwise, saying so)
//! scrapes two real sidecars' `/metrics`, and the control plane's rows come from PromQL.
//! History points (`history=1`) come from `/api/v1/query_range` and edges from PromQL too.
//! Prometheus' `increase()` extrapolates, so counts are checked as present, not exact (the
//! buffer's exact counts are checked in tests/stats.rs).

use std::process::{Child, Command, Stdio};
use std::time::Duration;
use weft_control::{ControlConfig, ControlPlane};
use weft_testkit::{eventually, http1_get};

mod common;
use common::{admin_api, sidecar, tempdir};

const WAIT: Duration = Duration::from_secs(60);

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `prometheus`, installed from Debian when missing and this runs as root; `Err` saying why not.
fn prometheus() -> Result<(), String> {
    let has = || Command::new("prometheus").arg("--version").output().is_ok_and(|o| o.status.success());
    if has() {
        return Ok(());
    }
    if !is_root() {
        return Err("prometheus is not installed and this test is not root (apt-get install prometheus)".into());
    }
    let out = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "prometheus"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|e| format!("no apt-get to install prometheus: {e}"))?;
    if !out.status.success() || !has() {
        return Err(format!("apt-get install prometheus failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_come_from_prometheus_when_configured() {
    weft_testkit::init_tracing();
    if let Err(why) = prometheus() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let dir = tempdir("stats-prometheus");
    let prom_port = free_port();
    let mut cfg = ControlConfig::new(dir.join("cp"));
    cfg.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.api = "127.0.0.1:0".parse().unwrap();
    cfg.prometheus_url = Some(format!("http://127.0.0.1:{prom_port}"));
    let cp = ControlPlane::start(cfg).await.expect("control plane");

    let app = weft_testkit::http_echo("api").await;
    let server = sidecar(&cp, "default/api", Some("api-1"), "inbound: { listen: \"127.0.0.1:0\" }\n").await;
    let resources = format!(
        "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: api }}\nspec: {{}}\n---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-1 }}\nspec: {{ service: api, address: 127.0.0.1, port: {}, sidecar: \"{}\" }}\n",
        app.port(),
        server.addrs.inbound.unwrap()
    );
    assert_eq!(admin_api(&cp, "POST", "/v1/apply", &resources).await.0, 200);
    let client =
        sidecar(&cp, "default/web", None, "outbound: { upstreams: [{ listen: \"127.0.0.1:0\", service: api }] }\n")
            .await;
    let upstream = client.addrs.upstreams[0];

    // Prometheus scraping both sidecars every second.
    let config = format!(
        "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nscrape_configs:\n  - job_name: weft-proxies\n    static_configs:\n      - targets: [\"{}\", \"{}\"]\n",
        server.addrs.admin.unwrap(),
        client.addrs.admin.unwrap()
    );
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let _prom = Proc(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );

    // Traffic until Prometheus has seen the counters grow (a series' first sample is not an
    // increase), then the rows come from it.
    let cp_ref = &cp;
    let row = eventually("api's row from Prometheus", WAIT, || async move {
        for _ in 0..5 {
            let _ = http1_get(upstream, "/").await;
        }
        let _ = http1_get(upstream, "/status/500").await;
        let (status, v) = admin_api(cp_ref, "GET", "/v1/stats?window=1m", "").await;
        if status != 200 {
            // Prometheus not up yet: the API says so (502), naming it.
            assert!(v["error"].as_str().unwrap_or_default().contains("Prometheus"), "{v}");
            return None;
        }
        assert_eq!(v["source"], "prometheus", "{v}");
        let row = v["rows"].as_array()?.iter().find(|r| r["service"] == "api")?.clone();
        let rate = row["success_rate"].as_f64()?;
        (row["requests"].as_u64()? > 0 && rate < 1.0 && rate > 0.5 && row["p99_ms"].as_f64().is_some()).then_some(row)
    })
    .await;
    assert_eq!((row["cluster"].as_str(), row["namespace"].as_str()), (Some("local"), Some("default")), "{row}");

    // The sparkline points too (range queries over the hour of minutes), and the edges.
    let history = eventually("api's history from Prometheus", WAIT, || async move {
        let _ = http1_get(upstream, "/").await;
        let (status, v) = admin_api(cp_ref, "GET", "/v1/stats?window=1m&history=1", "").await;
        assert_eq!(status, 200, "{v}");
        let row = v["rows"].as_array()?.iter().find(|r| r["service"] == "api")?.clone();
        let h = row["history"].as_array()?.clone();
        h.iter().any(|p| p["rps"].as_f64().is_some_and(|r| r > 0.0)).then_some(h)
    })
    .await;
    assert_eq!(history.len(), 60, "one point a minute over the hour, as the buffer's");
    let edge = eventually("the web → api edge from Prometheus", WAIT, || async move {
        let (status, v) = admin_api(cp_ref, "GET", "/v1/edges?window=1m", "").await;
        assert_eq!(status, 200, "{v}");
        v["edges"]
            .as_array()?
            .iter()
            .find(|e| e["dst"]["service"] == "api" && e["requests"].as_u64() > Some(0))
            .cloned()
    })
    .await;
    assert_eq!((edge["src"]["service"].as_str(), edge["mtls"].as_bool()), (Some("web"), Some(true)), "{edge}");
}
