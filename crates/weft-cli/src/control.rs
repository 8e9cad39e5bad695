//! `weft control`: runs a control plane until Ctrl-C / SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use weft_control::ca::PluginCa;
use weft_control::{ControlConfig, ControlPlane};

#[derive(clap::Args)]
pub struct ControlArgs {
    /// Where the store, the CA and the tokens live (created on first start).
    #[arg(long, env = "WEFT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC for proxies (certificates, discovery).
    #[arg(long, default_value = weft_control::server::DEFAULT_GRPC)]
    grpc: SocketAddr,
    /// HTTP API for the CLI and registrations, on TLS: the control plane's own certificate, which
    /// chains to the root of `weft ca --pem` (<data-dir>/ca/root.pem).
    #[arg(long, default_value = weft_control::server::DEFAULT_API)]
    api: SocketAddr,
    /// Serve the HTTP API in plaintext instead of TLS; refused unless --api is a loopback address
    /// (clients then call http://ADDR).
    #[arg(long)]
    api_plaintext: bool,
    /// An extra name for the API's certificate (repeatable): a DNS name or IP address clients dial
    /// (it always names localhost, control.weft and the --api address; 127.0.0.1 and ::1 when
    /// --api is a wildcard).
    #[arg(long = "api-san", value_name = "NAME")]
    api_sans: Vec<String>,
    /// DNS for mesh names (UDP and TCP); `off` disables it.
    #[arg(long, default_value = "127.0.0.1:15053")]
    dns: String,
    /// Resolver that DNS forwards other names to.
    #[arg(long)]
    dns_upstream: Option<SocketAddr>,
    /// DNS's UDP receive buffer in bytes (SO_RCVBUF); the kernel caps it at net.core.rmem_max.
    #[arg(long, default_value_t = weft_dns::DEFAULT_UDP_RECEIVE_BUFFER)]
    dns_udp_buffer: usize,
    /// Resources (YAML/JSON) to serve from a file, reloaded when it changes.
    #[arg(long)]
    registry_file: Option<PathBuf>,
    /// Trust domain, used at first start (later starts keep the stored MeshConfig).
    #[arg(long, default_value = weft_api::kinds::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// This cluster's name, at first start.
    #[arg(long, default_value = weft_api::proxy::DEFAULT_CLUSTER)]
    cluster: String,
    /// Allow script and Docker health checks (they run commands on this host).
    #[arg(long)]
    enable_script_checks: bool,
    /// The most discovery streams one token may hold open at once (each proxy holds one).
    #[arg(long, default_value_t = weft_control::discovery::DEFAULT_MAX_STREAMS_PER_TOKEN)]
    max_streams_per_token: usize,
    /// Serve the web dashboard on this address (default 127.0.0.1:15090 when given without a
    /// value): plain HTTP on a loopback address, HTTPS with the API's certificate elsewhere (not
    /// with --api-plaintext). Log in with an API token, or with the one-time URL `weft dashboard`
    /// prints. See docs/dashboard.md.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = weft_control::dashboard::DEFAULT_DASHBOARD)]
    dashboard: Option<SocketAddr>,
    /// Serve the control plane's own Prometheus metrics at `/metrics` on this address (default
    /// 127.0.0.1:15014, istiod's port, when given without a value): plain HTTP, no token; off
    /// unless given. See docs/observability.md "The control plane's metrics".
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = weft_control::metrics::DEFAULT_METRICS)]
    metrics: Option<SocketAddr>,
    /// Plug-in CA (Istio's model): the intermediate's certificate...
    #[arg(long, requires_all = ["ca_key", "ca_chain"])]
    ca_cert: Option<PathBuf>,
    /// ...its key...
    #[arg(long)]
    ca_key: Option<PathBuf>,
    /// ...and the chain up to and including the root.
    #[arg(long)]
    ca_chain: Option<PathBuf>,
    /// How often proxies send their golden metrics for `weft stat` / `/v1/stats` (100ms to 1h).
    #[arg(long, default_value = "10s")]
    stats_interval: weft_api::Duration,
    /// The most metric series the history keeps (≈11 KB each; a new series past it is dropped
    /// and counted, see docs/observability.md "Metrics history").
    #[arg(long, default_value_t = weft_control::stats::DEFAULT_MAX_SERIES)]
    stats_max_series: usize,
    /// Answer `/v1/stats` (`weft stat`) from this Prometheus (`http://host:9090`) instead of the
    /// control plane's own history; it must scrape the proxies (deploy/prometheus/).
    #[arg(long)]
    prometheus_url: Option<String>,
}

pub fn run(args: ControlArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(crate::client::default_data_dir);
    let mut cfg = ControlConfig::new(data_dir.clone());
    cfg.grpc = args.grpc;
    cfg.api = args.api;
    cfg.api_tls = weft_control::api_tls::ApiTls { plaintext: args.api_plaintext, sans: args.api_sans };
    cfg.dns = if args.dns == "off" {
        None
    } else {
        Some(args.dns.parse().map_err(|_| anyhow::anyhow!("--dns: {:?} is not ip:port or `off`", args.dns))?)
    };
    cfg.dns_upstream = args.dns_upstream;
    cfg.dns_udp_receive_buffer = args.dns_udp_buffer;
    cfg.registry_file = args.registry_file;
    cfg.dashboard = args.dashboard;
    cfg.metrics = args.metrics;
    // Refused before the data directory is made.
    args.dashboard.map(|a| weft_control::dashboard::check_addr(a, !args.api_plaintext)).transpose()?;
    cfg.enable_script_checks = args.enable_script_checks;
    cfg.max_streams_per_token = args.max_streams_per_token;
    let interval = std::time::Duration::from(args.stats_interval);
    if interval < std::time::Duration::from_millis(100) || interval > std::time::Duration::from_secs(3600) {
        anyhow::bail!("--stats-interval must be between 100ms and 1h");
    }
    cfg.stats_interval_ms = interval.as_millis() as u64;
    cfg.stats_max_series = args.stats_max_series;
    if let Some(url) = &args.prometheus_url {
        // Checked before anything starts.
        weft_control::stats::prom::Prometheus::parse(url).map_err(|e| anyhow::anyhow!(e))?;
    }
    cfg.prometheus_url = args.prometheus_url;
    cfg.mesh.trust_domain = args.trust_domain;
    cfg.mesh.cluster.name = args.cluster;
    if let (Some(cert), Some(key), Some(chain)) = (args.ca_cert, args.ca_key, args.ca_chain) {
        cfg.plugin_ca = Some(PluginCa { cert, key, chain });
    }
    // The secrets of an external CA (MeshConfig `ca`), from the environment only.
    cfg.ca_credentials = weft_control::signer::CaCredentials::from_env().map_err(|e| anyhow::anyhow!(e))?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let cp = ControlPlane::start(cfg).await?;
        println!("==> weft control plane ready");
        println!("    data       {}", data_dir.display());
        println!("    root key   {}", cp.root_key);
        println!("    gRPC       {}   (proxies: certificates and discovery)", cp.grpc_addr);
        println!("    HTTP API   {}   (admin token in {})", cp.api_url(), data_dir.join("admin.token").display());
        if cp.api_tls {
            println!(
                "    API CA     {}   (clients: --ca-file / WEFT_CA_FILE; curl --cacert)",
                cp.api_ca_file.display()
            );
        }
        if let Some(d) = cp.dns_addr {
            println!("    DNS        {d}   (try: dig @{} -p {} api.service.consul)", d.ip(), d.port());
        }
        if let Some(m) = cp.metrics_addr {
            println!("    metrics    http://{m}/metrics   (Prometheus: deploy/prometheus/prometheus.yml)");
        }
        if let Some(d) = &cp.dashboard {
            println!(
                "    dashboard  {}   (log in with an API token; `weft dashboard` prints a one-time login URL)",
                d.url()
            );
        }
        println!("    next: weft token create --identity default/web   |   weft apply -f mesh.yaml   |   weft check");
        println!("ready");
        weft_proxy::cli::shutdown_signal().await;
        println!("==> stopping");
        drop(cp);
        anyhow::Ok(())
    })
}
