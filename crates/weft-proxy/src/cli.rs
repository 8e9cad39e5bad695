//! The `weft-proxy` command line, shared by the `weft-proxy` binary and `weft proxy`.

use crate::iptables::{self, InitOptions};
use crate::Proxy;
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use weft_api::proxy::ProxyConfig;

#[derive(Parser)]
#[command(name = "weft-proxy", version, about = "weft's data plane: an mTLS sidecar and east-west gateway proxy")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run the proxy from a YAML config file (see docs/proxy.md). SIGTERM/SIGINT drain it gracefully.
    Run {
        #[arg(short, long, env = "WEFT_PROXY_CONFIG")]
        config: PathBuf,
        /// Worker threads, each with its own single-threaded runtime; connections are spread over
        /// them at accept and stay on theirs (default: one per CPU).
        #[arg(long, env = "WEFT_PROXY_WORKERS", value_parser = clap::value_parser!(u16).range(1..=256))]
        workers: Option<u16>,
    },
    /// Check a config file and the identity files it names, then exit.
    Validate {
        #[arg(short, long, env = "WEFT_PROXY_CONFIG")]
        config: PathBuf,
    },
    /// Install transparent-interception iptables rules in this network namespace (needs root /
    /// CAP_NET_ADMIN). Run it in the workload's namespace before the app starts.
    Init {
        /// Port of the proxy's inbound listener; inbound TCP is redirected here.
        #[arg(long, default_value_t = weft_api::proxy::DEFAULT_INBOUND_PORT)]
        inbound_port: u16,
        /// Port of the proxy's transparent outbound listener; the app's outgoing TCP goes here.
        #[arg(long, default_value_t = weft_api::proxy::DEFAULT_TRANSPARENT_PORT)]
        outbound_port: u16,
        /// SO_MARK the proxy sets on its own connections (config `outbound.mark`); never redirected.
        #[arg(long, default_value_t = weft_api::proxy::DEFAULT_MARK)]
        proxy_mark: u32,
        /// Uid the proxy runs as, if it has its own user; its traffic is never redirected.
        #[arg(long)]
        proxy_uid: Option<u32>,
        /// Inbound ports not to redirect (comma-separated), e.g. the admin port.
        #[arg(long, value_delimiter = ',', default_value = "15000")]
        exclude_inbound_ports: Vec<u16>,
        /// The mesh's virtual IP range (MeshConfig `virtualIps.range`): routed to this namespace
        /// itself (`ip route replace local <range> dev lo`), so an app in a pod with no route
        /// there still connects and is intercepted. Empty: no route.
        #[arg(long, default_value = weft_api::kinds::DEFAULT_VIP_RANGE)]
        virtual_ip_range: String,
        /// Print the rules instead of installing them.
        #[arg(long)]
        dry_run: bool,
        /// Remove weft's rules and chains instead.
        #[arg(long)]
        remove: bool,
    },
}

fn load(path: &PathBuf) -> anyhow::Result<ProxyConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
    ProxyConfig::from_yaml(&text).with_context(|| format!("invalid config {}", path.display()))
}

/// Logs to stderr, filtered by `RUST_LOG` (default: `default_level`, e.g. `info`).
///
/// `RUST_LOG` takes levels, per target or not: `debug`, `weft_proxy=debug`,
/// `weft_proxy=trace,hyper=info,warn`. It is parsed as a `Targets` filter rather than an
/// `EnvFilter`: the same syntax for levels, without the regex engine that span and field filters
/// (`[span{field=value}]`) need, which is about 0.3 MB of every proxy's binary. A value that
/// does not parse falls back to the default.
pub fn init_logging(default_level: &str) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| v.parse::<Targets>().ok())
        .or_else(|| default_level.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(log_colour()))
        .with(filter)
        .try_init();
}

/// Colour in logs only when stderr is a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>): files, pipes and journald get plain text.
fn log_colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// An error and its causes as one line, `outer: cause: root`, each message once: a cause whose
/// text its parent already carries (`cannot listen on …: Address already in use (os error 98)`
/// over the io::Error itself) is left out, and so is a leading `error: ` inside a message (the
/// line already starts with one).
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let mut text = text.trim();
        while let Some(rest) = text.strip_prefix("error: ") {
            text = rest.trim_start();
        }
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line
}

/// Whether `error` comes from writing to a pipe whose reader has gone (`weft get | head -3`).
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().filter_map(|c| c.downcast_ref::<std::io::Error>()).any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// A command's result as the process exit: errors as one readable line (with their causes, each
/// once; see [`error_line`]), not a debug dump. Output cut short because the reader of stdout has
/// gone (`| head`) is no error: the command exits quietly, with success. Shared by `weft-proxy`
/// and `weft`.
pub fn exit(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Entry point of the `weft-proxy` binary.
pub fn main() -> anyhow::Result<()> {
    init_logging("info");
    run(Cli::parse().cmd)
}

/// Runs one command.
pub fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Validate { config } => {
            let cfg = load(&config)?;
            crate::Routes::try_from(&cfg)?;
            match (&cfg.identity, &cfg.control) {
                (Some(files), _) => {
                    let store = crate::load_identity(files)?;
                    let left = store.leaf().remaining().as_secs();
                    println!("{}: valid; identity {} (expires in {left}s)", config.display(), store.id());
                }
                (None, Some(control)) => {
                    control.read_token()?;
                    println!("{}: valid; identity from the control plane at {}", config.display(), control.address);
                }
                (None, None) => anyhow::bail!("set `identity` or `control` in the config"),
            }
            Ok(())
        }
        Cmd::Init {
            inbound_port,
            outbound_port,
            proxy_mark,
            proxy_uid,
            exclude_inbound_ports,
            virtual_ip_range,
            dry_run,
            remove,
        } => {
            let range = (!virtual_ip_range.is_empty()).then(|| {
                weft_api::kinds::VirtualIps { range: virtual_ip_range.clone() }.parse().map_err(|e| {
                    anyhow::anyhow!("--virtual-ip-range: {}", e.to_string().replace("virtualIps.range", ""))
                })
            });
            if let Some(Err(e)) = range {
                return Err(e);
            }
            let range = range.map(|_| virtual_ip_range);
            if remove {
                iptables::remove()?;
                if let Some(r) = &range {
                    iptables::remove_vip_route(r);
                }
                println!("removed weft interception rules");
                return Ok(());
            }
            let o = InitOptions { inbound_port, outbound_port, proxy_mark, proxy_uid, exclude_inbound_ports };
            if dry_run {
                for r in iptables::chain_setup().into_iter().chain(iptables::rules(&o)) {
                    println!("iptables {}", r.join(" "));
                }
                if let Some(r) = &range {
                    println!("ip {}", iptables::vip_route(r).join(" "));
                }
                return Ok(());
            }
            for line in iptables::apply(&o)? {
                println!("iptables {line}");
            }
            if let Some(r) = &range {
                println!("ip {}", iptables::add_vip_route(r)?);
            }
            Ok(())
        }
        Cmd::Run { config, workers } => {
            let cfg = load(&config)?;
            let n = workers
                .map(usize::from)
                .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
            // Thread-per-core: this thread drives worker 0, see `crate::workers`.
            let (rt, threads) = crate::workers::Threads::start(n)?;
            let workers = threads.workers();
            let result = rt.block_on(async move {
                let control = cfg.control.clone();
                let store = match (&cfg.identity, &control) {
                    (Some(files), _) => crate::load_identity(files)?,
                    (None, Some(control)) => crate::control::bootstrap(control, cfg.mark()).await?,
                    (None, None) => anyhow::bail!("set `identity` or `control` in the config"),
                };
                let mut proxy = Proxy::start_on(cfg, store, workers).await?;
                match control {
                    Some(control) => {
                        let id = proxy.follow_control_plane(control);
                        println!("proxy-id {id}");
                    }
                    None => proxy.watch_identity_files(),
                }
                if let Some(a) = proxy.addrs.admin {
                    // One line on stdout per bound address, for scripts and tests.
                    println!("admin {a}");
                }
                for (name, a) in [
                    ("inbound", proxy.addrs.inbound),
                    ("transparent", proxy.addrs.transparent),
                    ("gateway", proxy.addrs.gateway),
                ] {
                    if let Some(a) = a {
                        println!("{name} {a}");
                    }
                }
                for a in &proxy.addrs.upstreams {
                    println!("upstream {a}");
                }
                println!("ready");
                shutdown_signal().await;
                tracing::info!("draining");
                let left = proxy.shutdown().await;
                tracing::info!(left, "stopped");
                anyhow::Ok(())
            });
            // Drain has finished: do not wait on idle background work (pool timers and the like).
            rt.shutdown_timeout(std::time::Duration::from_millis(100));
            drop(threads);
            result
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
