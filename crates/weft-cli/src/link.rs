//! `weft link`: link this cluster to another (docs/multicluster.md, "Linking clusters").
//! `create` runs on the cluster to be linked to and prints a credential; `apply`/`add` run on the
//! cluster that links and store it; `list` and `remove` manage the links.

use crate::client::table;
use anyhow::Context;
use clap::Subcommand;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum LinkCmd {
    /// Print a link credential (one line) for another cluster to link to this one.
    Create {
        /// How long the credential may be applied, e.g. 24h, 30m, 7d (default 24h).
        #[arg(long)]
        expires: Option<String>,
    },
    /// Link to the cluster whose credential is in a file (`-` for stdin).
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Import only the services of these namespaces, e.g. shop,web (default: every namespace).
        #[arg(long, value_delimiter = ',')]
        namespaces: Vec<String>,
    },
    /// Link to the cluster whose credential is given on the command line.
    Add {
        credential: String,
        /// Import only the services of these namespaces, e.g. shop,web (default: every namespace).
        #[arg(long, value_delimiter = ',')]
        namespaces: Vec<String>,
    },
    /// Change which namespaces the link to a cluster imports (services of the others are
    /// withdrawn at once).
    Namespaces {
        cluster: String,
        /// The namespaces to import, e.g. shop,web.
        #[arg(value_delimiter = ',', required_unless_present = "all")]
        namespaces: Vec<String>,
        /// Import every namespace again.
        #[arg(long, conflicts_with = "namespaces")]
        all: bool,
    },
    /// Every link: state, last sync, imported services and endpoints, credential expiry.
    List {
        /// `table` or `json`.
        #[arg(short = 'o', long, default_value = "table")]
        output: String,
    },
    /// On the exporting cluster: the clusters that import from this one (opened a link stream
    /// since this control plane started), with whether their stream is open now.
    Importers {
        /// `table` or `json`.
        #[arg(short = 'o', long, default_value = "table")]
        output: String,
    },
    /// Remove the link to a cluster; everything imported from it is withdrawn at once.
    Remove { cluster: String },
    /// On the exporting cluster: stop a cluster from importing (its link is cut and its imports
    /// withdrawn) and void every credential made before now.
    Revoke { cluster: String },
    /// Probe every link (or one) now: reachability of the peer, trust in its certificate, the
    /// secret, the stream and the last sync, each with a verdict and the fix for a failure.
    /// Exits non-zero when any check fails.
    Check {
        /// Only the link to this cluster.
        cluster: Option<String>,
        /// `text` or `json`.
        #[arg(short = 'o', long, default_value = "text")]
        output: String,
    },
}

fn ago(unix: Option<u64>) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    match unix {
        Some(t) if t <= now => format!("{}s ago", now - t),
        Some(t) => format!("in {}s", t - now),
        None => "never".into(),
    }
}

pub async fn run(cmd: LinkCmd, conn: &crate::client::Conn) -> anyhow::Result<()> {
    match cmd {
        LinkCmd::Create { expires } => {
            crate::outln!("{}", create(conn, expires).await?)?;
        }
        LinkCmd::Apply { file, namespaces } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?
            };
            apply(conn, text, namespaces).await?;
        }
        LinkCmd::Add { credential, namespaces } => apply(conn, credential, namespaces).await?,
        LinkCmd::Namespaces { cluster, namespaces, all } => {
            let namespaces = if all { vec![] } else { namespaces };
            let body = json!({ "namespaces": namespaces }).to_string();
            let v = conn.call("PUT", &format!("/v1/links/{cluster}/namespaces"), body).await?;
            for r in v["results"].as_array().into_iter().flatten() {
                crate::outln!("{}", r.as_str().unwrap_or_default())?;
            }
        }
        LinkCmd::List { output } => {
            let v = conn.call("GET", "/v1/links", String::new()).await?;
            let links = v["links"].as_array().cloned().unwrap_or_default();
            if output == "json" {
                crate::outln!("{}", serde_json::to_string_pretty(&links)?)?;
                return Ok(());
            }
            if links.is_empty() {
                crate::outln!("No links. Link a cluster with `weft link apply -f <credential>`.")?;
                return Ok(());
            }
            let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
            let rows = links
                .iter()
                .map(|l| {
                    vec![
                        s(&l["cluster"]),
                        s(&l["state"]),
                        ago(l["lastSyncUnix"].as_u64()),
                        format!("{}/{}", l["importedServices"], l["importedEndpoints"]),
                        ago(l["expiresUnix"].as_u64()),
                        s(&l["address"]),
                        match l["namespaces"].as_array() {
                            Some(ns) if !ns.is_empty() => {
                                ns.iter().filter_map(|n| n.as_str()).collect::<Vec<_>>().join(",")
                            }
                            _ => "*".into(),
                        },
                        l["error"].as_str().unwrap_or("").to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    "CLUSTER",
                    "STATE",
                    "LAST SYNC",
                    "SERVICES/ENDPOINTS",
                    "CREDENTIAL EXPIRES",
                    "ADDRESS",
                    "NAMESPACES",
                    "ERROR",
                ],
                rows,
            )?;
        }
        LinkCmd::Importers { output } => importers(conn, &output).await?,
        LinkCmd::Revoke { cluster } => {
            let v = conn.call("POST", &format!("/v1/links/{cluster}/revoke"), String::new()).await?;
            for r in v["results"].as_array().into_iter().flatten() {
                crate::outln!("{}", r.as_str().unwrap_or_default())?;
            }
        }
        LinkCmd::Check { cluster, output } => check(conn, cluster, &output).await?,
        LinkCmd::Remove { cluster } => {
            let v = conn.call("DELETE", &format!("/v1/links/{cluster}"), String::new()).await?;
            for r in v["results"].as_array().into_iter().flatten() {
                crate::outln!("{}", r.as_str().unwrap_or_default())?;
            }
        }
    }
    Ok(())
}

/// `weft link importers`: one row per importing cluster.
async fn importers(conn: &crate::client::Conn, output: &str) -> anyhow::Result<()> {
    if output != "table" && output != "json" {
        anyhow::bail!("--output: {output:?} is not a format; use table or json");
    }
    let v = conn.call("GET", "/v1/importers", String::new()).await?;
    let importers = v["importers"].as_array().cloned().unwrap_or_default();
    if output == "json" {
        crate::outln!("{}", serde_json::to_string_pretty(&importers)?)?;
        return Ok(());
    }
    if importers.is_empty() {
        crate::outln!("No cluster has imported from this one since its control plane started.")?;
        return Ok(());
    }
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let rows = importers
        .iter()
        .map(|i| {
            let stream = if i["streamOpen"] == true {
                "open".to_string()
            } else {
                format!("closed {}", ago(i["disconnectedUnix"].as_u64()))
            };
            vec![
                s(&i["cluster"]),
                s(&i["trustDomain"]),
                ago(i["sinceUnix"].as_u64()),
                ago(i["connectedUnix"].as_u64()),
                stream,
                s(&i["peer"]),
            ]
        })
        .collect();
    table(&["CLUSTER", "TRUST DOMAIN", "SINCE", "LAST CONNECTED", "STREAM", "FROM"], rows)?;
    Ok(())
}

async fn apply(conn: &crate::client::Conn, credential: String, namespaces: Vec<String>) -> anyhow::Result<()> {
    for r in apply_scoped(conn, &credential, &namespaces).await? {
        crate::outln!("{r}")?;
    }
    Ok(())
}

/// `weft link create`: a credential (one line) for another cluster to link to `conn`'s cluster.
/// `weft up` links its clusters with this too.
pub async fn create(conn: &crate::client::Conn, expires: Option<String>) -> anyhow::Result<String> {
    let v = conn.call("POST", "/v1/links/credential", json!({ "expires": expires }).to_string()).await?;
    Ok(v["credential"].as_str().unwrap_or_default().to_string())
}

/// `weft link apply`: links `conn`'s cluster to the credential's; returns the API's result lines.
pub async fn apply_credential(conn: &crate::client::Conn, credential: &str) -> anyhow::Result<Vec<String>> {
    apply_scoped(conn, credential, &[]).await
}

/// `weft link apply --namespaces`: as [`apply_credential`], importing only `namespaces` (empty:
/// every namespace).
async fn apply_scoped(
    conn: &crate::client::Conn,
    credential: &str,
    namespaces: &[String],
) -> anyhow::Result<Vec<String>> {
    // Checked here first, so a damaged paste is named before anything is sent.
    weft_api::link::Credential::decode(credential).map_err(anyhow::Error::msg)?;
    let body = if namespaces.is_empty() {
        credential.trim().to_string()
    } else {
        json!({ "credential": credential.trim(), "namespaces": namespaces }).to_string()
    };
    let v = conn.call("POST", "/v1/links", body).await?;
    Ok(v["results"].as_array().into_iter().flatten().map(|r| r.as_str().unwrap_or_default().to_string()).collect())
}

/// `weft link check`: one block per link, a line per check (`✓`/`✗`/`-` on a terminal, `[ok]`,
/// `[FAIL]`, `[skip]` otherwise) and the fix under each failure; an error (exit 1) naming the
/// failed checks when any failed.
async fn check(conn: &crate::client::Conn, cluster: Option<String>, output: &str) -> anyhow::Result<()> {
    if output != "text" && output != "json" {
        anyhow::bail!("--output: {output:?} is not a format; use text or json");
    }
    let clusters: Vec<String> = match cluster {
        Some(c) => vec![c],
        None => {
            let v = conn.call("GET", "/v1/links", String::new()).await?;
            v["links"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l["cluster"].as_str().map(String::from))
                .collect()
        }
    };
    if clusters.is_empty() {
        if output == "json" {
            crate::outln!("[]")?;
        } else {
            crate::outln!("No links. Link a cluster with `weft link apply -f <credential>`.")?;
        }
        return Ok(());
    }
    let mut reports = vec![];
    for c in &clusters {
        reports.push(conn.call("GET", &format!("/v1/links/{c}/check"), String::new()).await?);
    }
    let failed: Vec<String> = reports
        .iter()
        .filter_map(|r| {
            let names: Vec<&str> = r["checks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["verdict"] == "fail")
                .filter_map(|c| c["name"].as_str())
                .collect();
            (!names.is_empty()).then(|| format!("{} ({})", r["cluster"].as_str().unwrap_or("?"), names.join(", ")))
        })
        .collect();
    if output == "json" {
        crate::outln!("{}", serde_json::to_string_pretty(&reports)?)?;
    } else {
        use std::io::IsTerminal;
        let tty = std::io::stdout().is_terminal();
        for r in &reports {
            crate::outln!(
                "link to {} ({})",
                r["cluster"].as_str().unwrap_or("?"),
                r["address"].as_str().unwrap_or("?")
            )?;
            for c in r["checks"].as_array().into_iter().flatten() {
                let mark = match (c["verdict"].as_str(), tty) {
                    (Some("pass"), true) => "\u{1b}[32m✓\u{1b}[0m",
                    (Some("fail"), true) => "\u{1b}[31m✗\u{1b}[0m",
                    (_, true) => "-",
                    (Some("pass"), false) => "[ok]",
                    (Some("fail"), false) => "[FAIL]",
                    (_, false) => "[skip]",
                };
                crate::outln!(
                    "  {mark} {}: {}",
                    c["name"].as_str().unwrap_or("?"),
                    c["detail"].as_str().unwrap_or("")
                )?;
                if let Some(fix) = c["fix"].as_str() {
                    crate::outln!("      fix: {fix}")?;
                }
            }
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("link check failed: {}", failed.join("; "));
    }
    if output == "text" {
        crate::outln!("all link checks passed")?;
    }
    Ok(())
}
