//! `weft dns`: weft's mesh DNS in a cluster without a control plane (a primary's remote
//! cluster). It follows the primary's control plane (gRPC `Naming.Table`, through the primary's
//! east-west gateway as the remote cluster's proxies do, with a bootstrap token) and answers every
//! naming form from the primary's catalog for its own cluster ([`weft_control::naming`]). It keeps
//! answering from its last table while the primary is out of reach, and reconnects with backoff.

use clap::Args;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use weft_api::pb;

/// Largest naming table accepted (as proxies accept discovery updates).
const MAX_TABLE_BYTES: usize = 256 * 1024 * 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Args, Debug)]
pub(crate) struct DnsArgs {
    /// The primary's control plane: its gRPC address, or (from a remote cluster) its east-west
    /// gateway's `ip:port`.
    #[arg(long)]
    control: SocketAddr,
    /// A bootstrap token file (`weft token create --identity <ns>/<sa> --cluster <this cluster>`
    /// on the primary).
    #[arg(long)]
    token_file: String,
    /// UDP and TCP address to answer on.
    #[arg(long, default_value = "0.0.0.0:53")]
    listen: SocketAddr,
    /// The cluster this DNS serves, when the token names none (the primary's MeshConfig must
    /// declare it in `remoteClusters`). Default: the token's cluster, else the primary's.
    #[arg(long)]
    cluster: Option<String>,
    /// Names outside weft's zones are forwarded here (default: refused).
    #[arg(long)]
    upstream: Option<SocketAddr>,
}

pub(crate) fn run(args: DnsArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let mut cfg = weft_dns::DnsConfig::new(args.listen);
        cfg.upstream = args.upstream;
        let empty = weft_dns::Table { cluster: args.cluster.clone().unwrap_or_default(), ..Default::default() };
        let server = weft_dns::DnsServer::start(cfg, empty).await?;
        println!("listening {}", server.local_addr());
        let mut control = weft_api::proxy::Control::new(args.control, String::new());
        control.token = None;
        control.token_file = Some(args.token_file.clone());
        let cluster = args.cluster.clone().unwrap_or_default();
        tokio::select! {
            () = follow(&control, &cluster, &server) => {}
            () = weft_proxy::cli::shutdown_signal() => {}
        }
        server.shutdown().await;
        anyhow::Ok(())
    })
}

/// Follows the naming table for ever: each table replaces the DNS's; errors reconnect.
async fn follow(control: &weft_api::proxy::Control, cluster: &str, server: &weft_dns::DnsServer) {
    let mut backoff = Duration::from_millis(100);
    let mut ready = false;
    loop {
        let started = Instant::now();
        if let Err(e) = stream(control, cluster, server, &mut ready).await {
            tracing::warn!(error = %e, control = %control.address, retry_in = ?backoff, "naming table stream failed");
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn stream(
    control: &weft_api::proxy::Control,
    cluster: &str,
    server: &weft_dns::DnsServer,
    ready: &mut bool,
) -> anyhow::Result<()> {
    let token = control.read_token()?;
    let channel = weft_proxy::control::connect(control, 0).await?;
    let mut client = pb::naming_client::NamingClient::new(channel).max_decoding_message_size(MAX_TABLE_BYTES);
    let mut req = tonic::Request::new(pb::NamingRequest { cluster: cluster.to_string() });
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
    let mut tables = client.table(req).await.map_err(|s| anyhow::anyhow!("{}", s.message()))?.into_inner();
    while let Some(t) = tables.message().await.map_err(|s| anyhow::anyhow!("{}", s.message()))? {
        match weft_control::naming::dns_table_from(&t) {
            Ok(table) => {
                let services = table.services.len();
                server.set_table(table);
                if !*ready {
                    *ready = true;
                    println!("ready: answering for cluster {} ({services} services)", t.cluster);
                }
            }
            Err(e) => tracing::warn!(error = %e, "naming table refused; answering from the last one"),
        }
    }
    anyhow::bail!("the control plane closed the naming table stream")
}
