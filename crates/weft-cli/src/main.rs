//! `weft`: the mesh's command line. `weft up` runs a local mesh; the other verbs are the tools
//! around it.

/// `println!` for command output, returning the write's `io::Result` instead of panicking: when
/// stdout is a pipe whose reader has gone (`weft get workloads | head -3`), the command stops with
/// a `BrokenPipe` error, which `main` turns into a quiet exit.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `print!` as [`outln!`] is `println!`.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod call;
mod client;
mod control;
mod dashboard;
mod describe;
mod diagnose;
mod dns;
mod intention;
mod interrupt;
mod link;
mod netns;
mod netns_wan;
mod resilience_out;
mod routes_out;
mod stat;
mod tap;
mod tls;
mod up;
mod up_multi;
mod up_netns;
mod up_netns_clusters;
mod upfile;
mod verbs;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "weft", version, about = "weft: a multi-cluster service mesh", long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a complete local mesh: two linked clusters (east, west), each with its own control plane,
    /// CA and east-west gateway; demo apps (a web frontend in east calling an api that runs in both)
    /// and their sidecars, with traffic over mTLS crossing between the clusters. Ctrl-C stops
    /// everything.
    Up(up::UpArgs),
    /// Run a control plane: registry, store, CA, discovery for proxies, health checks, DNS, API.
    Control(control::ControlArgs),
    /// Print a one-time URL that logs a browser into the control plane's web dashboard (as the
    /// token in use; the dashboard runs with `weft control --dashboard` and in `weft up`).
    Dashboard(dashboard::DashboardArgs),
    /// Run weft's mesh DNS in a cluster without a control plane (a primary's remote cluster),
    /// answering from the primary's catalog through the primary's east-west gateway.
    Dns(dns::DnsArgs),
    #[command(flatten)]
    Verb(verbs::Verb),
    /// A live line per request the proxies see (like `linkerd viz tap`): `weft tap svc/api -n demo`.
    Tap(tap::TapArgs),
    /// The busiest paths seen by a live tap, refreshing in the terminal (`--once` prints once).
    Top(tap::TopArgs),
    /// What one proxy runs, as it reports it: certificate, routes, endpoints, policies.
    ProxyConfig(tap::ProxyConfigArgs),
    /// Diagnose the mesh: control plane reachable, CA and proxy certificates, links and their
    /// trust, proxies in sync, DNS answering, resources referring to things that do not exist;
    /// each finding with its fix. Exits non-zero when any check fails.
    Diagnose(diagnose::DiagnoseArgs),
    /// Golden metrics (success rate, requests per second, latency p50/p95/p99, open TCP
    /// connections) by service, workload, route or cluster, across linked clusters, from the
    /// control plane's history (or its Prometheus): `weft stat [service|workload|route|cluster]`.
    Stat(stat::StatArgs),
    /// Who calls whom: each pair of services with traffic, their identities, mTLS, RPS and
    /// success rate, across linked clusters.
    Edges(stat::EdgesArgs),
    /// The data-plane proxy (same as the `weft-proxy` binary).
    Proxy {
        #[command(subcommand)]
        cmd: weft_proxy::cli::Cmd,
    },
    /// Create a mesh CA and workload certificates as files (like `consul tls`).
    Tls {
        #[command(subcommand)]
        cmd: tls::TlsCmd,
    },
    /// Run a demo workload: the HTTP/1.1+HTTP/2 echo (default), a TCP echo, or the web frontend.
    DemoApp {
        /// Name reported in every answer.
        #[arg(long, default_value = "demo")]
        name: String,
        /// Address to listen on; port 0 picks one. The bound address is printed as `listening <addr>`.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Run the TCP echo instead of HTTP.
        #[arg(long)]
        tcp: bool,
        /// Run the web frontend, calling this upstream: `host:port`, an address (its sidecar's
        /// upstream listener) or a name resolved through the system resolver (for example
        /// `api.default.svc.cluster.local:8080` with weft's DNS, in transparent mode).
        #[arg(long)]
        upstream: Option<String>,
        /// The version of the app this echo is (e.g. `v2`): in every answer, as `app_version` in
        /// the JSON and the `x-app-version` header, so a traffic split shows which version
        /// answered (the demo's api-v1 and api-v2).
        #[arg(long, value_name = "VERSION")]
        app_version: Option<String>,
        /// Answer every N-th request with 503 (a failure rate of 1/N, for trying retries; 0:
        /// never). The HTTP echo only.
        #[arg(long, value_name = "N", default_value_t = 0)]
        fail_every: u64,
    },
    /// Call a service the way an unmodified app does: a plain HTTP/1.1 GET (or, with --tcp, send
    /// bytes, half-close and read the answer) to an address. Prints what came back.
    DemoCall {
        addr: std::net::SocketAddr,
        #[arg(long, default_value = "/")]
        path: String,
        /// Send these bytes over plain TCP instead of HTTP.
        #[arg(long)]
        tcp: Option<String>,
        /// The HTTP `Host` header (default: the address), e.g. a mesh name that transparent
        /// mode routes by.
        #[arg(long)]
        host: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    weft_proxy::cli::exit(real_main())
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The proxy and the control plane log at info (connects, signings, health changes: what an
    // operator follows); the demo and tools only warn.
    let level = if matches!(cli.cmd, Cmd::Proxy { .. } | Cmd::Control(_) | Cmd::Dns(_)) { "info" } else { "warn" };
    weft_proxy::cli::init_logging(level);
    match cli.cmd {
        Cmd::Proxy { cmd } => weft_proxy::cli::run(cmd),
        Cmd::Tls { cmd } => tls::run(cmd),
        Cmd::Dashboard(args) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(dashboard::run(args))
        }
        Cmd::Up(args) => up::run(args),
        Cmd::Control(args) => control::run(args),
        Cmd::Dns(args) => dns::run(args),
        Cmd::Tap(args) => tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(tap::tap(args)),
        Cmd::Top(args) => tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(tap::top(args)),
        Cmd::ProxyConfig(args) => {
            tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(tap::proxy_config(args))
        }
        Cmd::Diagnose(args) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(diagnose::run(args))
        }
        Cmd::Stat(args) => {
            tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(stat::stat(args))
        }
        Cmd::Edges(args) => {
            tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(stat::edges(args))
        }
        Cmd::Verb(verb) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(verbs::run(verb))
        }
        Cmd::DemoCall { addr, path, tcp, host } => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                match tcp {
                    Some(data) => print!("{}", call::tcp_exchange(addr, data.as_bytes()).await?),
                    None => {
                        let (status, body) = call::http_get_host(addr, &path, host.as_deref()).await?;
                        println!("{status}");
                        println!("{body}");
                    }
                }
                anyhow::Ok(())
            })
        }
        Cmd::DemoApp { name, listen, tcp, upstream, app_version, fail_every } => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind(listen).await?;
                println!("listening {}", l.local_addr()?);
                match (tcp, upstream) {
                    (true, _) => weft_demo::serve_tcp_echo(l).await,
                    (false, Some(up)) => weft_demo::serve_frontend(l, &name, &up).await,
                    (false, None) => {
                        weft_demo::serve_http_echo_failing(l, &name, app_version.as_deref(), fail_every).await
                    }
                }
                anyhow::Ok(())
            })
        }
    }
}
