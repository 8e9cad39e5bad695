//! `weft stat` and `weft edges`: the golden metrics of `GET /v1/stats` and who calls whom of
//! `GET /v1/edges`, as tables (like `linkerd viz stat` / `linkerd viz edges`) or JSON.

use crate::client::{table, Conn};
use anyhow::bail;
use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct StatArgs {
    /// What rows are: `service` (svc), `workload` (deploy), `route` or `cluster`.
    #[arg(default_value = "service")]
    pub by: String,
    /// Only this namespace (default: every namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// `all` (this cluster and every linked one), this cluster's name, or a linked cluster's.
    #[arg(long, default_value = "all")]
    pub cluster: String,
    /// The time the numbers cover, 10s to 1h (`30s`, `1m`, `10m`, `1h`).
    #[arg(long, default_value = "1m")]
    pub window: String,
    /// `table` or `json` (the API's answer as it is).
    #[arg(short = 'o', long, default_value = "table")]
    pub output: String,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(clap::Args, Debug)]
pub struct EdgesArgs {
    /// Only edges from or to this namespace (default: every namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// `all` (this cluster and every linked one), this cluster's name, or a linked cluster's.
    #[arg(long, default_value = "all")]
    pub cluster: String,
    /// The time the numbers cover, 10s to 1h.
    #[arg(long, default_value = "1m")]
    pub window: String,
    /// `table` or `json`.
    #[arg(short = 'o', long, default_value = "table")]
    pub output: String,
    #[command(flatten)]
    pub conn: Conn,
}

/// `k=v&…` of the values given, form-encoded.
fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    q.finish()
}

fn check_output(o: &str) -> anyhow::Result<bool> {
    match o {
        "table" => Ok(false),
        "json" => Ok(true),
        other => bail!("-o {other:?}: write `table` or `json`"),
    }
}

fn pct(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |r| format!("{:.2}%", r * 100.0))
}

fn rps(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |r| format!("{r:.2}rps"))
}

fn ms(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |m| if m < 10.0 { format!("{m:.1}ms") } else { format!("{m:.0}ms") })
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("-").to_string()
}

/// The name column of a row: what it groups by.
fn name(by: &str, r: &Value) -> String {
    match by {
        "workload" => s(&r["workload"]),
        "route" => s(&r["route"]),
        "cluster" => s(&r["cluster"]),
        _ => s(&r["service"]),
    }
}

/// The header and cells of `weft stat`'s table for an answer of `/v1/stats`.
pub fn stat_table(by: &str, v: &Value) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let by = v.get("by").and_then(Value::as_str).unwrap_or(by);
    // By cluster, the cluster is the name.
    let mut header = if by == "cluster" { vec![] } else { vec!["CLUSTER", "NAMESPACE"] };
    header.extend(["NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TCP_CONN"]);
    let rows = v["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let mut cells = if by == "cluster" { vec![] } else { vec![s(&r["cluster"]), s(&r["namespace"])] };
            cells.extend([
                name(by, r),
                if r["meshed"] == true { "yes".into() } else { "no".into() },
                pct(&r["success_rate"]),
                rps(&r["rps"]),
                ms(&r["p50_ms"]),
                ms(&r["p95_ms"]),
                ms(&r["p99_ms"]),
                r["tcp_connections"].as_i64().unwrap_or(0).to_string(),
            ]);
            cells
        })
        .collect();
    (header, rows)
}

/// `service.namespace@cluster` of an edge end.
fn end(e: &Value) -> String {
    let mut out = s(&e["service"]);
    if let Some(ns) = e["namespace"].as_str() {
        out = format!("{out}.{ns}");
    }
    if let Some(c) = e["cluster"].as_str() {
        out = format!("{out}@{c}");
    }
    out
}

/// The header and cells of `weft edges`' table for an answer of `/v1/edges`.
pub fn edges_table(v: &Value) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let header = vec!["SRC", "DST", "SRC_ID", "DST_ID", "MTLS", "RPS", "SUCCESS", "TCP_CONN"];
    let rows = v["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            vec![
                end(&e["src"]),
                end(&e["dst"]),
                s(&e["src"]["identity"]),
                s(&e["dst"]["identity"]),
                if e["mtls"] == true { "yes".into() } else { "no".into() },
                rps(&e["rps"]),
                pct(&e["success_rate"]),
                e["tcp_connections"].as_u64().unwrap_or(0).to_string(),
            ]
        })
        .collect();
    (header, rows)
}

/// Says on stderr which linked clusters did not answer (their rows are missing).
fn warn_unreachable(v: &Value) {
    for c in v["clusters"].as_array().into_iter().flatten().filter(|c| c["reachable"] == false) {
        eprintln!("warning: cluster {} did not answer: {}", s(&c["name"]), s(&c["error"]));
    }
}

pub async fn stat(a: StatArgs) -> anyhow::Result<()> {
    let json = check_output(&a.output)?;
    let path = format!(
        "/v1/stats?{}",
        query(&[
            ("by", Some(&a.by)),
            ("window", Some(&a.window)),
            ("cluster", Some(&a.cluster)),
            ("namespace", a.namespace.as_deref()),
        ])
    );
    let v = a.conn.call("GET", &path, String::new()).await?;
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    warn_unreachable(&v);
    let (header, rows) = stat_table(&a.by.replace("svc", "service").replace("deploy", "workload"), &v);
    if rows.is_empty() {
        eprintln!("no {} with traffic in the last {} (proxies report every 10 s)", a.by, a.window);
    }
    table(&header, rows)?;
    Ok(())
}

pub async fn edges(a: EdgesArgs) -> anyhow::Result<()> {
    let json = check_output(&a.output)?;
    let path = format!(
        "/v1/edges?{}",
        query(&[("window", Some(&a.window)), ("cluster", Some(&a.cluster)), ("namespace", a.namespace.as_deref())])
    );
    let v = a.conn.call("GET", &path, String::new()).await?;
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    warn_unreachable(&v);
    let (header, rows) = edges_table(&v);
    if rows.is_empty() {
        eprintln!("no requests between services in the last {} (proxies report every 10 s)", a.window);
    }
    table(&header, rows)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stat_rows_read_like_linkerd_viz_stat() {
        let v = json!({"rows":[{"cluster":"east","namespace":"demo","service":"api","workload":null,"route":null,
            "requests":120,"rps":2.0,"success_rate":0.992,"p50_ms":1.1,"p95_ms":3.0,"p99_ms":17.9,
            "tcp_connections":0,"meshed":true},
            {"cluster":"east","namespace":"demo","service":"db","requests":0,"rps":0.0,"success_rate":null,
            "p50_ms":null,"p95_ms":null,"p99_ms":null,"tcp_connections":2,"meshed":false}]});
        let (h, rows) = stat_table("service", &v);
        assert_eq!(h[..4], ["CLUSTER", "NAMESPACE", "NAME", "MESHED"]);
        assert_eq!(rows[0], ["east", "demo", "api", "yes", "99.20%", "2.00rps", "1.1ms", "3.0ms", "18ms", "0"]);
        assert_eq!(rows[1], ["east", "demo", "db", "no", "-", "0.00rps", "-", "-", "-", "2"]);
        let (h, rows) = stat_table("cluster", &json!({"rows":[{"cluster":"west","rps":150.0,"meshed":true}]}));
        assert_eq!((h[0], rows[0][0].as_str(), rows[0][3].as_str()), ("NAME", "west", "150.00rps"));
    }

    #[test]
    fn edges_name_both_ends_and_their_identities() {
        let v = json!({"edges":[{"src":{"cluster":"east","namespace":"demo","service":"web","identity":"spiffe://e/ns/demo/sa/web"},
            "dst":{"cluster":"west","namespace":"demo","service":"api","identity":"spiffe://w/ns/demo/sa/api"},
            "requests":120,"rps":2.0,"success_rate":1.0,"p99_ms":8.0,"mtls":true},
            {"src":{"cluster":"east","namespace":null,"service":"unmeshed","identity":null},
            "dst":{"cluster":"east","namespace":"demo","service":"web","identity":"spiffe://e/ns/demo/sa/web"},
            "requests":3,"rps":0.05,"success_rate":1.0,"p99_ms":1.0,"mtls":false}]});
        let (_, rows) = edges_table(&v);
        assert_eq!(
            rows[0],
            [
                "web.demo@east",
                "api.demo@west",
                "spiffe://e/ns/demo/sa/web",
                "spiffe://w/ns/demo/sa/api",
                "yes",
                "2.00rps",
                "100.00%",
                "0"
            ]
        );
        assert_eq!(rows[1][..5], ["unmeshed@east", "web.demo@east", "-", "spiffe://e/ns/demo/sa/web", "no"]);
    }

    #[test]
    fn query_strings_skip_unset_values_and_encode_the_rest() {
        assert_eq!(
            query(&[("by", Some("service")), ("namespace", None), ("window", Some("1 m"))]),
            "by=service&window=1+m"
        );
    }
}
