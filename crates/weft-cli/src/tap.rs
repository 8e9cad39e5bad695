//! `weft tap` (a live line per request, like `linkerd viz tap`), `weft top` (the busiest paths,
//! refreshing) and `weft proxy-config` (what one proxy runs). Tap and top read `GET /v1/tap`
//! (NDJSON) through [`Conn::stream_lines`]; proxy-config reads `GET /v1/proxies/{id}/config`.

use crate::client::{table, Conn};
use anyhow::bail;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use weft_api::tap::TapEvent;

/// Which requests to tap: the proxies of a resource, and filters on the requests.
#[derive(clap::Args, Clone, Debug)]
pub struct TapFilters {
    /// What to tap: `svc/<name>` (the proxies of a service's workloads), `workload/<name>`
    /// (`deploy/<name>` also works), `ns/<name>` (every proxy of a namespace). Empty: every proxy,
    /// so each request shows twice, as its caller's proxy (outbound) and its callee's (inbound).
    pub resource: Option<String>,
    /// The namespace of the resource (and of the proxies tapped).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Only requests from this caller: a prefix or glob (`*`) of its identity
    /// (`spiffe://…/ns/demo/sa/web`) or of `sa.namespace` (`web.demo`).
    #[arg(long)]
    pub from: Option<String>,
    /// Only requests to this callee: a prefix or glob of `service.namespace` (`api.demo`) or of its
    /// identity.
    #[arg(long)]
    pub to: Option<String>,
    /// Only paths with this prefix (or matching this glob, `/items/*`).
    #[arg(long)]
    pub path: Option<String>,
    /// Only this method (GET, POST, ...).
    #[arg(long)]
    pub method: Option<String>,
    /// Only this status (`200`) or class (`5xx`).
    #[arg(long)]
    pub status: Option<String>,
    /// Tap the proxies of this linked cluster (through the link), or `all` for this cluster's
    /// and every linked one's. Default: this cluster's.
    #[arg(long)]
    pub cluster: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct TapArgs {
    #[command(flatten)]
    pub filters: TapFilters,
    /// Stop after this many requests (at most 10000).
    #[arg(long, default_value_t = 100)]
    pub max: u64,
    /// Stop after this many seconds (at most 600).
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// `text` (one line per request), `wide` (also proxy, cluster, endpoint, identities, route)
    /// or `json` (the API's NDJSON lines as they come).
    #[arg(short = 'o', long, default_value = "text")]
    pub output: String,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(clap::Args, Debug)]
pub struct TopArgs {
    #[command(flatten)]
    pub filters: TapFilters,
    /// How long to watch, in seconds (at most 600).
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Stop after this many tapped requests (at most 10000).
    #[arg(long, default_value_t = weft_api::tap::MAX_EVENTS)]
    pub max: u64,
    /// Print the table once, when `--seconds` are over, instead of refreshing it (the default
    /// when stdout is not a terminal).
    #[arg(long)]
    pub once: bool,
    /// Count requests at their caller's proxy (outbound) instead of their callee's (inbound): for
    /// callees outside the mesh.
    #[arg(long)]
    pub outbound: bool,
    /// Rows shown at most.
    #[arg(long, default_value_t = 20)]
    pub rows: usize,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(clap::Args, Debug)]
pub struct ProxyConfigArgs {
    /// The proxy's id, as `weft proxy-status` lists it.
    pub proxy: String,
    /// `text` (sections: certificate, routes, endpoints, policies) or `json` (all of it).
    #[arg(short = 'o', long, default_value = "text")]
    pub output: String,
    #[command(flatten)]
    pub conn: Conn,
}

/// `%`-encodes a path segment (a proxy id).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' | b'*' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `GET /v1/tap` path for these filters.
pub fn tap_path(f: &TapFilters, max: u64, seconds: u64) -> anyhow::Result<String> {
    let mut q: Vec<(&str, String)> = vec![];
    if let Some(r) = &f.resource {
        let Some((kind, name)) = r.split_once('/') else {
            bail!("resource {r:?}: write svc/<name>, workload/<name> or ns/<name>");
        };
        match kind {
            "svc" | "service" | "services" => q.push(("service", name.into())),
            "workload" | "workloads" | "deploy" | "deployment" | "po" | "pod" => q.push(("workload", name.into())),
            "ns" | "namespace" => q.push(("namespace", name.into())),
            _ => bail!("resource {r:?}: unknown kind {kind:?}; use svc/<name>, workload/<name> or ns/<name>"),
        }
    }
    for (k, v) in [
        ("namespace", &f.namespace),
        ("src", &f.from),
        ("dst", &f.to),
        ("path", &f.path),
        ("method", &f.method),
        ("status", &f.status),
        ("cluster", &f.cluster),
    ] {
        if let Some(v) = v {
            if !(k == "namespace" && q.iter().any(|(k, _)| *k == "namespace")) {
                q.push((k, v.clone()));
            }
        }
    }
    q.push(("max", max.to_string()));
    q.push(("seconds", seconds.to_string()));
    let query = form_urlencoded::Serializer::new(String::new()).extend_pairs(q).finish();
    Ok(format!("/v1/tap?{query}"))
}

/// `sa.namespace` of a workload identity, else the identity; the address for a caller without one.
fn who(identity: Option<&str>, address: Option<&str>) -> String {
    match identity {
        Some(id) => match id.split('/').collect::<Vec<_>>()[..] {
            ["spiffe:", "", _, "ns", ns, "sa", sa] => format!("{sa}.{ns}"),
            _ => id.to_string(),
        },
        None => address.map_or_else(|| "-".to_string(), |a| format!("{a} (unmeshed)")),
    }
}

fn dst_name(e: &TapEvent) -> String {
    match (&e.dst.service, &e.dst.namespace) {
        (Some(s), Some(ns)) => format!("{s}.{ns}"),
        _ => e.dst.endpoint.clone().unwrap_or_else(|| "-".into()),
    }
}

/// One `weft tap` line.
pub fn tap_line(e: &TapEvent, wide: bool) -> String {
    let dir = if e.direction == "inbound" { "in " } else { "out" };
    let mut line = format!(
        "{dir} src={} dst={} :method={} :authority={} :path={} :status={} latency={:.1}ms tls={}",
        who(e.src.identity.as_deref(), e.src.address.as_deref()),
        dst_name(e),
        e.method,
        e.authority,
        e.path,
        e.status,
        e.duration_ms,
        e.mtls
    );
    if wide {
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        line.push_str(&format!(
            " proxy={} cluster={} endpoint={} src_id={} dst_id={} route={}",
            e.proxy,
            e.cluster,
            opt(&e.dst.endpoint),
            opt(&e.src.identity),
            opt(&e.dst.identity),
            opt(&e.route)
        ));
    }
    line
}

pub async fn tap(args: TapArgs) -> anyhow::Result<()> {
    let wide = match args.output.as_str() {
        "text" => false,
        "wide" => true,
        "json" => false,
        o => bail!("-o {o:?}: use text, wide or json"),
    };
    let path = tap_path(&args.filters, args.max, args.seconds)?;
    let json = args.output == "json";
    args.conn
        .stream_lines(&path, |line| {
            if json {
                outln!("{line}")?;
            } else {
                let e: TapEvent = serde_json::from_str(line)?;
                outln!("{}", tap_line(&e, wide))?;
            }
            Ok(true)
        })
        .await
}

/// One row of `weft top`.
#[derive(Default, Debug, Clone)]
pub struct Row {
    pub count: u64,
    pub ok: u64,
    pub best_ms: f64,
    pub worst_ms: f64,
    pub last_ms: f64,
}

/// Requests by (source, destination, method, path).
#[derive(Default)]
pub struct Top {
    pub rows: HashMap<(String, String, String, String), Row>,
    /// Name the destination's cluster (`api.demo@west`): when tapping other clusters.
    pub by_cluster: bool,
}

impl Top {
    pub fn add(&mut self, e: &TapEvent) {
        let dst = match self.by_cluster && !e.cluster.is_empty() {
            true => format!("{}@{}", dst_name(e), e.cluster),
            false => dst_name(e),
        };
        let key = (
            who(e.src.identity.as_deref(), e.src.address.as_deref()),
            dst,
            e.method.clone(),
            e.path.split('?').next().unwrap_or("").to_string(),
        );
        let r = self.rows.entry(key).or_default();
        if r.count == 0 || e.duration_ms < r.best_ms {
            r.best_ms = e.duration_ms;
        }
        r.worst_ms = r.worst_ms.max(e.duration_ms);
        r.last_ms = e.duration_ms;
        r.count += 1;
        if e.status < 500 {
            r.ok += 1;
        }
    }

    /// The busiest `n` rows, as table cells.
    pub fn table(&self, n: usize) -> Vec<Vec<String>> {
        let mut rows: Vec<_> = self.rows.iter().collect();
        rows.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(b.0)));
        rows.into_iter()
            .take(n)
            .map(|((src, dst, method, path), r)| {
                vec![
                    src.clone(),
                    dst.clone(),
                    method.clone(),
                    path.clone(),
                    r.count.to_string(),
                    format!("{:.1}ms", r.best_ms),
                    format!("{:.1}ms", r.worst_ms),
                    format!("{:.1}ms", r.last_ms),
                    format!("{:.2}%", 100.0 * r.ok as f64 / r.count.max(1) as f64),
                ]
            })
            .collect()
    }

    fn print(&self, n: usize) -> std::io::Result<()> {
        const HEADER: [&str; 9] =
            ["SOURCE", "DESTINATION", "METHOD", "PATH", "COUNT", "BEST", "WORST", "LAST", "SUCCESS"];
        table(&HEADER, self.table(n))
    }
}

pub async fn top(args: TopArgs) -> anyhow::Result<()> {
    let refresh = !args.once && std::io::stdout().is_terminal();
    let path = tap_path(&args.filters, args.max, args.seconds)?;
    let want = if args.outbound { "outbound" } else { "inbound" };
    // The cluster is named when other clusters' proxies are tapped.
    let mut top = Top { by_cluster: args.filters.cluster.is_some(), ..Default::default() };
    let mut drawn = Instant::now();
    let draw = |top: &Top, clear: bool| -> std::io::Result<()> {
        if clear {
            crate::out!("\x1b[2J\x1b[H")?;
        }
        top.print(args.rows)
    };
    if refresh {
        draw(&top, true)?;
    }
    args.conn
        .stream_lines(&path, |line| {
            let e: TapEvent = serde_json::from_str(line)?;
            if e.direction == want {
                top.add(&e);
            }
            if refresh && drawn.elapsed() >= Duration::from_secs(1) {
                draw(&top, true)?;
                drawn = Instant::now();
            }
            Ok(true)
        })
        .await?;
    draw(&top, refresh)?;
    if top.rows.is_empty() {
        outln!("(no {want} requests seen in {} s)", args.seconds)?;
    }
    Ok(())
}

fn duration(secs: u64) -> String {
    match secs {
        s if s >= 86400 => format!("{}d{}h", s / 86400, s % 86400 / 3600),
        s if s >= 3600 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s => format!("{}m{}s", s / 60, s % 60),
    }
}

pub async fn proxy_config(args: ProxyConfigArgs) -> anyhow::Result<()> {
    if !matches!(args.output.as_str(), "text" | "json") {
        bail!("-o {:?}: use text or json", args.output);
    }
    let v = args.conn.call("GET", &format!("/v1/proxies/{}/config", enc(&args.proxy)), String::new()).await?;
    if args.output == "json" {
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    let cert = &v["certificate"];
    outln!("PROXY        {}", args.proxy)?;
    outln!("IDENTITY     {}", s(&v["identity"]))?;
    outln!(
        "CERTIFICATE  expires in {} (chain of {}), issued under root {}",
        duration(cert["expires_in_seconds"].as_u64().unwrap_or(0)),
        s(&cert["chain_length"]),
        s(&cert["root_sha256"])
    )?;
    let domains: Vec<String> = v["trust_bundle"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| format!("{} ({}…)", s(&r["trust_domain"]), s(&r["sha256"]).chars().take(12).collect::<String>()))
        .collect();
    outln!("TRUSTS       {}", if domains.is_empty() { "-".into() } else { domains.join(", ") })?;
    outln!()?;
    outln!("ROUTES")?;
    let services = v["routes"].as_array().cloned().unwrap_or_default();
    let rows = services
        .iter()
        .map(|r| {
            let routes = r["routes"].as_array().map_or(0, Vec::len);
            vec![
                format!("{}.{}", s(&r["name"]), s(&r["namespace"])),
                r["endpoints"].as_array().map_or(0, Vec::len).to_string(),
                r["balance"]["type"].as_str().or(r["balance"]["load_balancer"].as_str()).unwrap_or("-").to_string(),
                if routes == 0 { "-".into() } else { routes.to_string() },
                if r["resilience"].is_null() { "-".into() } else { "yes".into() },
            ]
        })
        .collect();
    table(&["SERVICE", "ENDPOINTS", "BALANCE", "ROUTE RULES", "RESILIENCE"], rows)?;
    outln!()?;
    outln!("ENDPOINTS")?;
    let rows =
        services
            .iter()
            .flat_map(|r| {
                let name = format!("{}.{}", s(&r["name"]), s(&r["namespace"]));
                r["endpoints"].as_array().cloned().unwrap_or_default().into_iter().map(move |e| {
                    vec![name.clone(), s(&e["address"]), s(&e["proxy"]), s(&e["identity"]), s(&e["cluster"])]
                })
            })
            .collect();
    table(&["SERVICE", "ADDRESS", "VIA", "IDENTITY", "CLUSTER"], rows)?;
    outln!()?;
    outln!("POLICIES")?;
    for (name, key) in [
        ("authorization", "authorization"),
        ("inbound rate limit", "inbound_resilience"),
        ("extension providers", "extension_providers"),
        ("inbound ports", "inbound_ports_from_control_plane"),
    ] {
        let val = &v[key];
        let empty = val.is_null() || val.as_array().is_some_and(Vec::is_empty);
        outln!("  {name}: {}", if empty { "-".to_string() } else { val.to_string() })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::tap::{Destination, Source};

    fn filters() -> TapFilters {
        TapFilters {
            resource: None,
            namespace: None,
            from: None,
            to: None,
            path: None,
            method: None,
            status: None,
            cluster: None,
        }
    }

    #[test]
    fn flags_become_the_tap_query() {
        let f = TapFilters {
            resource: Some("svc/api".into()),
            namespace: Some("demo".into()),
            path: Some("/a b".into()),
            status: Some("5xx".into()),
            cluster: Some("all".into()),
            ..filters()
        };
        assert_eq!(
            tap_path(&f, 5, 10).unwrap(),
            "/v1/tap?service=api&namespace=demo&path=%2Fa+b&status=5xx&cluster=all&max=5&seconds=10"
        );
        let f = TapFilters { resource: Some("ns/demo".into()), namespace: Some("other".into()), ..filters() };
        assert_eq!(tap_path(&f, 1, 1).unwrap(), "/v1/tap?namespace=demo&max=1&seconds=1");
        assert!(tap_path(&TapFilters { resource: Some("api".into()), ..filters() }, 1, 1).is_err());
        assert!(tap_path(&TapFilters { resource: Some("cm/api".into()), ..filters() }, 1, 1).is_err());
    }

    fn event(path: &str, status: u16, ms: f64) -> TapEvent {
        TapEvent {
            direction: "inbound".into(),
            src: Source { identity: Some("spiffe://td/ns/demo/sa/web".into()), address: None },
            dst: Destination { namespace: Some("demo".into()), service: Some("api".into()), ..Default::default() },
            method: "GET".into(),
            path: path.into(),
            status,
            duration_ms: ms,
            mtls: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_tap_line_names_both_ends() {
        let line = tap_line(&event("/x", 200, 1.25), false);
        assert!(line.starts_with("in  src=web.demo dst=api.demo :method=GET"), "{line}");
        assert!(line.contains(":status=200 latency=1.2ms tls=true") || line.contains("latency=1.3ms"), "{line}");
    }

    #[test]
    fn top_counts_the_busiest_paths_first() {
        let mut top = Top::default();
        for (p, st, ms) in [("/a", 200, 2.0), ("/b", 200, 1.0), ("/b", 500, 3.0), ("/b?q=1", 200, 0.5)] {
            top.add(&event(p, st, ms));
        }
        let t = top.table(10);
        assert_eq!(t[0], ["web.demo", "api.demo", "GET", "/b", "3", "0.5ms", "3.0ms", "0.5ms", "66.67%"]);
        assert_eq!(t[1][3], "/a");
    }
}
