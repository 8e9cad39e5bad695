//! The overview, services and topology pages.

use super::forward::{get_json, Got};
use super::html::{self, badge, esc, f, note, s, u, Page};
use super::session::Session;
use super::svg;
use super::C;
use axum::extract::State;
use axum::response::Html;
use axum::Extension;
use serde_json::Value;
use std::collections::BTreeMap;

/// Seconds between refreshes of the live pages.
pub const REFRESH: &str = "10";

/// The array `key` of a read, or empty.
pub(crate) fn items<'a>(g: &'a Got, key: &str) -> &'a [Value] {
    g.json().and_then(|v| v.get(key)).and_then(|v| v.as_array()).map(Vec::as_slice).unwrap_or(&[])
}

/// Why a read gave nothing, as a note; empty when it worked.
pub(crate) fn why(g: &Got, what: &str) -> String {
    match g {
        Got::Json(_) => String::new(),
        Got::Missing => note("nodata", &format!("No data yet: {what} is not served by this control plane yet.")),
        Got::Denied(m) => note("denied", &format!("Your token may not read {what}: {m}")),
        Got::Failed(m) => note("bad", &format!("Could not read {what}: {m}")),
    }
}

pub(crate) fn may_act(s: &Session) -> bool {
    matches!(s.role.as_str(), "admin" | "operator")
}

/// A button that page script turns into an API call (after a confirmation).
pub(crate) fn act(method: &str, url: &str, label: &str, confirm: &str) -> String {
    format!(
        "<button class=\"act\" data-method=\"{}\" data-url=\"{}\" data-confirm=\"{}\">{}</button>",
        esc(method),
        esc(url),
        esc(confirm),
        esc(label)
    )
}

/// `service.namespace@cluster`, the id of a node in the graph and of a row of the tables.
pub(crate) fn node_id(cluster: &str, namespace: &str, service: &str) -> String {
    format!("{service}.{namespace}@{cluster}")
}

/// A stats row's history of one field, oldest first.
pub(crate) fn history(row: &Value, field: &str) -> Vec<f64> {
    row.get("history")
        .and_then(|h| h.as_array())
        .map(|h| h.iter().map(|p| p.get(field).and_then(|x| x.as_f64()).unwrap_or(f64::NAN)).collect())
        .unwrap_or_default()
}

pub(crate) async fn overview(State(ctx): C, Extension(sess): Extension<Session>) -> Html<String> {
    let (links, proxies, catalog, ca, audit, stats) = tokio::join!(
        get_json(&ctx, &sess, "/v1/links"),
        get_json(&ctx, &sess, "/v1/proxies"),
        get_json(&ctx, &sess, "/v1/catalog"),
        get_json(&ctx, &sess, "/v1/ca"),
        get_json(&ctx, &sess, "/v1/audit?limit=100"),
        get_json(&ctx, &sess, "/v1/stats?by=service&window=1m"),
    );
    let proxy_list = items(&proxies, "proxies");
    let services = items(&catalog, "services");
    let stale: Vec<&Value> = proxy_list.iter().filter(|p| s(p, "status") != "SYNCED").collect();
    let rejecting: Vec<&Value> = proxy_list.iter().filter(|p| !s(p, "error").is_empty()).collect();
    let unhealthy: Vec<(String, String)> = services
        .iter()
        .flat_map(|svc| {
            items_of(svc, "instances")
                .iter()
                .filter(|i| i.get("healthy").and_then(|h| h.as_bool()) == Some(false))
                .map(|i| (format!("{}.{}", s(svc, "name"), s(svc, "namespace")), s(i, "name")))
                .collect::<Vec<_>>()
        })
        .collect();
    let erroring: Vec<&Value> =
        items(&stats, "rows").iter().filter(|r| f(r, "success_rate").is_some_and(|x| x < 0.99)).collect();
    let link_list = items(&links, "links");
    let active = link_list.iter().filter(|l| s(l, "state").eq_ignore_ascii_case("active")).count();
    let now = html::now_unix();
    let soon: Vec<&Value> = proxy_list
        .iter()
        .filter(|p| {
            let t = u(p, "leaf_not_after_unix");
            t != 0 && t < now + 3600
        })
        .collect();

    let mut body = String::from("<h1>Overview</h1>");
    body.push_str(&format!(
        "<div class=\"cards\">{}{}{}{}{}</div>",
        card("Services", &services.len().to_string(), "/services"),
        card(
            "Proxies",
            &format!("{} <small>{} synced</small>", proxy_list.len(), proxy_list.len() - stale.len()),
            "/proxies"
        ),
        card("Linked clusters", &format!("{} <small>{active} active</small>", link_list.len()), "#links"),
        card("Services with errors", &erroring.len().to_string(), "/services"),
        card("Unhealthy instances", &unhealthy.len().to_string(), "/services"),
    ));

    // Mesh health: what needs looking at.
    let mut problems = vec![];
    for p in &stale {
        problems.push(format!(
            "proxy <a href=\"/proxies/{}\">{}</a> is {} (sent version {}, acknowledged {})",
            html::seg(&s(p, "proxy_id")),
            esc(&s(p, "proxy_id")),
            esc(&s(p, "status")),
            u(p, "sent"),
            u(p, "acked")
        ));
    }
    for p in &rejecting {
        problems.push(format!(
            "proxy <a href=\"/proxies/{}\">{}</a> rejected its latest update: {}",
            html::seg(&s(p, "proxy_id")),
            esc(&s(p, "proxy_id")),
            esc(&s(p, "error"))
        ));
    }
    for p in &soon {
        problems.push(format!(
            "proxy {}'s certificate expires {}",
            esc(&s(p, "proxy_id")),
            html::until(u(p, "leaf_not_after_unix"))
        ));
    }
    for (svc, inst) in &unhealthy {
        problems.push(format!("instance {} of {} is failing its health checks", esc(inst), esc(svc)));
    }
    for r in &erroring {
        problems.push(format!(
            "service <a href=\"/services/{}/{}\">{}.{}</a> in {} succeeds {}",
            html::seg(&s(r, "namespace")),
            html::seg(&s(r, "service")),
            esc(&s(r, "service")),
            esc(&s(r, "namespace")),
            esc(&s(r, "cluster")),
            html::pct(f(r, "success_rate"))
        ));
    }
    for l in link_list.iter().filter(|l| !s(l, "error").is_empty()) {
        problems.push(format!("link to {}: {}", esc(&s(l, "cluster")), esc(&s(l, "error"))));
    }
    body.push_str("<h2>Mesh health</h2>");
    if problems.is_empty() {
        body.push_str("<p class=\"good\" id=\"health-ok\">All proxies synced, no health check failing, no link error, no service with errors.</p>");
    } else {
        body.push_str("<ul class=\"problems\">");
        for p in problems {
            body.push_str(&format!("<li>{p}</li>"));
        }
        body.push_str("</ul>");
    }
    if matches!(stats, Got::Missing) {
        body.push_str(&note("nodata", "Success rates: no data yet (this control plane does not serve /v1/stats yet)."));
    }

    // Clusters and links.
    body.push_str("<h2 id=\"links\">Clusters and links</h2>");
    body.push_str(&why(&links, "the links"));
    let ca_v = ca.json().cloned().unwrap_or(Value::Null);
    let expiry = |k: &str| {
        let secs = ca_v.get(k).map(|x| u(x, "expires_in_seconds")).unwrap_or(0);
        if secs == 0 {
            "–".to_string()
        } else {
            html::until(now + secs)
        }
    };
    body.push_str("<table id=\"clusters\"><thead><tr><th>Cluster</th><th>State</th><th>Trust domain</th><th>Address</th><th>Last sync</th><th>Imported</th><th>Trust / certificate</th><th>Round trip</th><th></th></tr></thead><tbody>");
    body.push_str(&format!(
        "<tr><td><b>{}</b> (this cluster)</td><td>{}</td><td>{}</td><td>{}</td><td>–</td><td>–</td><td>root expires {}; intermediate {}</td><td>–</td><td></td></tr>",
        esc(&ctx.cluster),
        badge("serving"),
        esc(&ctx.trust_domain),
        esc(&ctx.state.api_addr.to_string()),
        expiry("root"),
        expiry("intermediate"),
    ));
    for l in link_list {
        let c = s(l, "cluster");
        let expires = u(l, "expiresUnix");
        let roots = l.get("trustedRoots").and_then(|r| r.as_array()).map(|r| r.len()).unwrap_or(0);
        let err = s(l, "error");
        let remove = if may_act(&sess) {
            act(
                "DELETE",
                &format!("/api/v1/links/{}", html::seg(&c)),
                "Remove link",
                &format!("Remove the link to {c}? Its services are withdrawn at once."),
            )
        } else {
            String::new()
        };
        body.push_str(&format!(
            "<tr data-link=\"{cid}\"><td><b>{cid}</b>{err}</td><td>{state}</td><td>{td}</td><td>{addr}</td><td>{sync}</td><td>{svcs} services, {eps} endpoints</td><td>{roots} root(s) trusted; credential {exp}</td><td><button class=\"check\" data-url=\"/api/v1/links/{cseg}/check\">Check</button> <span class=\"check-result\"></span></td><td>{remove}</td></tr>",
            cid = esc(&c),
            cseg = html::seg(&c),
            err = if err.is_empty() { String::new() } else { format!("<br><small class=\"bad\">{}</small>", esc(&err)) },
            state = badge(&s(l, "state")),
            td = esc(&s(l, "trustDomain")),
            addr = esc(&s(l, "address")),
            sync = html::ago(u(l, "lastSyncUnix")),
            svcs = u(l, "importedServices"),
            eps = u(l, "importedEndpoints"),
            exp = if expires == 0 { "does not expire".to_string() } else { html::until(expires) },
        ));
    }
    body.push_str("</tbody></table>");
    if link_list.is_empty() && links.json().is_some() {
        body.push_str(&note(
            "",
            "No linked clusters: `weft link create` on one cluster, `weft link apply` on the other.",
        ));
    }
    if let Some(st) = stats.json() {
        let cl = items_of(st, "clusters");
        if !cl.is_empty() {
            body.push_str("<p>Metrics from linked clusters: ");
            for c in cl {
                let ok = c.get("reachable").and_then(|x| x.as_bool()).unwrap_or(false);
                body.push_str(&format!("{} {} ", esc(&s(c, "name")), badge(if ok { "ok" } else { "unreachable" })));
            }
            body.push_str("</p>");
        }
    }

    // Recent changes.
    body.push_str("<h2>Recent changes</h2>");
    match &audit {
        Got::Json(v) => {
            // Changes to the mesh: not the dashboard's own login links (they stay in the audit log).
            let all = items_of(v, "entries");
            let kept: Vec<&Value> = all.iter().filter(|e| s(e, "path") != "/v1/dashboard/login").collect();
            let entries = &kept[kept.len().saturating_sub(12)..];
            if entries.is_empty() {
                body.push_str(&note("", "No changes yet."));
            } else {
                body.push_str("<table id=\"audit\"><thead><tr><th>When</th><th>Token</th><th>Role</th><th>Call</th><th>Status</th><th>What</th></tr></thead><tbody>");
                for e in entries.iter().rev() {
                    let status = u(e, "status");
                    body.push_str(&format!(
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{} {}</code></td><td class=\"{}\">{status}</td><td>{}</td></tr>",
                        html::ago(u(e, "timeMs") / 1000),
                        esc(&s(e, "token")),
                        esc(&s(e, "role")),
                        esc(&s(e, "method")),
                        esc(&s(e, "path")),
                        if status < 400 { "good" } else { "bad" },
                        esc(&s(e, "detail")),
                    ));
                }
                body.push_str("</tbody></table>");
            }
        }
        Got::Denied(_) => body.push_str(&note("denied", "Recent changes (the audit log) need an admin token.")),
        other => body.push_str(&why(other, "the audit log")),
    }
    Page::new("Overview", "/", Some(&sess), &ctx.cluster, REFRESH).render(body)
}

pub(crate) fn items_of<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(|x| x.as_array()).map(Vec::as_slice).unwrap_or(&[])
}

fn card(title: &str, value: &str, href: &str) -> String {
    format!("<a class=\"card\" href=\"{}\"><span>{}</span><b>{value}</b></a>", esc(href), esc(title))
}

/// One stats row as table cells: success, RPS, p50/p95/p99, sparklines.
pub(crate) fn stat_cells(r: &Value) -> String {
    format!(
        "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td>",
        html::pct(f(r, "success_rate")),
        html::rate(f(r, "rps")),
        html::ms(f(r, "p50_ms")),
        html::ms(f(r, "p95_ms")),
        html::ms(f(r, "p99_ms")),
        svg::sparkline(&history(r, "rps"), 90, 22, "requests per second, last hour"),
        svg::sparkline(&history(r, "success_rate"), 90, 22, "success rate, last hour"),
    )
}

pub(crate) const STAT_HEAD: &str =
    "<th>Success</th><th>RPS</th><th>p50</th><th>p95</th><th>p99</th><th>RPS, 1 h</th><th>Success, 1 h</th>";

pub(crate) async fn services(State(ctx): C, Extension(sess): Extension<Session>) -> Html<String> {
    let (catalog, stats, routes, edges) = tokio::join!(
        get_json(&ctx, &sess, "/v1/catalog"),
        get_json(&ctx, &sess, "/v1/stats?by=service&window=1m&history=1"),
        get_json(&ctx, &sess, "/v1/stats?by=route&window=1m"),
        get_json(&ctx, &sess, "/v1/edges?window=1m"),
    );
    let mut body = String::from("<h1>Services</h1>");
    body.push_str(&why(&catalog, "the catalog"));
    body.push_str(&why(&stats, "metrics (/v1/stats)"));
    // Stats rows by (namespace, service): one line per cluster.
    let mut by_service: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
    for r in items(&stats, "rows") {
        by_service.entry((s(r, "namespace"), s(r, "service"))).or_default().push(r);
    }
    let mut seen = std::collections::BTreeSet::new();
    body.push_str(&format!(
        "<table id=\"services\"><thead><tr><th>Service</th><th>Cluster</th><th>Instances</th><th>Meshed</th>{STAT_HEAD}</tr></thead><tbody>"
    ));
    let mut rows = vec![];
    for svc in items(&catalog, "services") {
        let (ns, name) = (s(svc, "namespace"), s(svc, "name"));
        let inst = items_of(svc, "instances");
        // Instances (healthy/total) of one cluster, or of all with `None`.
        let count = |cluster: Option<&str>| {
            let of: Vec<&Value> = inst.iter().filter(|i| cluster.is_none_or(|c| s(i, "cluster") == c)).collect();
            let healthy = of.iter().filter(|i| i.get("healthy").and_then(|h| h.as_bool()) != Some(false)).count();
            format!("{healthy}/{} healthy", of.len())
        };
        let mut clusters: Vec<String> = inst.iter().map(|i| s(i, "cluster")).collect();
        clusters.sort();
        clusters.dedup();
        let key = (ns.clone(), name.clone());
        seen.insert(key.clone());
        match by_service.get(&key) {
            Some(stat_rows) => {
                for r in stat_rows {
                    let cluster = s(r, "cluster");
                    rows.push(service_row(&ns, &name, &cluster, &count(Some(&cluster)), Some(r)));
                }
            }
            None => rows.push(service_row(&ns, &name, &clusters.join(", "), &count(None), None)),
        }
    }
    // Services with traffic but not in the catalog (e.g. unmeshed callers' targets).
    for ((ns, name), stat_rows) in &by_service {
        if !seen.contains(&(ns.clone(), name.clone())) {
            for r in stat_rows {
                rows.push(service_row(ns, name, &s(r, "cluster"), "–", Some(r)));
            }
        }
    }
    body.push_str(&rows.concat());
    body.push_str("</tbody></table>");

    let route_rows: Vec<&Value> = items(&routes, "rows").iter().filter(|r| !s(r, "route").is_empty()).collect();
    if !route_rows.is_empty() {
        body.push_str(&format!("<h2>Routes</h2><table id=\"routes\"><thead><tr><th>Route</th><th>Service</th><th>Cluster</th>{STAT_HEAD}</tr></thead><tbody>"));
        for r in route_rows {
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}.{}</td><td>{}</td>{}</tr>",
                esc(&s(r, "route")),
                esc(&s(r, "service")),
                esc(&s(r, "namespace")),
                esc(&s(r, "cluster")),
                stat_cells(r)
            ));
        }
        body.push_str("</tbody></table>");
    }

    body.push_str("<h2>Edges and mTLS</h2>");
    body.push_str(&why(&edges, "edges (/v1/edges)"));
    if edges.json().is_some() {
        body.push_str(&edge_table("edges", items(&edges, "edges")));
    }
    Page::new("Services", "/services", Some(&sess), &ctx.cluster, REFRESH).render(body)
}

fn service_row(ns: &str, name: &str, cluster: &str, instances: &str, stat: Option<&Value>) -> String {
    let meshed = stat.and_then(|r| r.get("meshed")).and_then(|m| m.as_bool());
    let cells = match stat {
        Some(r) => stat_cells(r),
        None => "<td>–</td>".repeat(7),
    };
    // The raw numbers, for scripts and tests comparing with `weft stat -o json`.
    let raw = stat
        .map(|r| {
            let num = |k: &str| f(r, k).map(|x| format!("{x:.4}")).unwrap_or_default();
            format!(" data-success=\"{}\" data-rps=\"{}\"", num("success_rate"), num("rps"))
        })
        .unwrap_or_default();
    format!(
        "<tr data-service=\"{id}\"{raw}><td><a href=\"/services/{nss}/{names}\">{name}</a><small>.{ns}</small></td><td>{cluster}</td><td>{instances}</td><td>{meshed}</td>{cells}</tr>",
        id = esc(&node_id(cluster, ns, name)),
        nss = html::seg(ns),
        names = html::seg(name),
        name = esc(name),
        ns = esc(ns),
        cluster = esc(cluster),
        instances = esc(instances),
        meshed = match meshed {
            Some(true) => badge("yes"),
            Some(false) => badge("no"),
            None => "–".into(),
        },
    )
}

fn end_name(e: &Value, side: &str) -> String {
    let v = e.get(side).cloned().unwrap_or(Value::Null);
    node_id(&s(&v, "cluster"), &s(&v, "namespace"), &s(&v, "service"))
}

/// A table of edges: source, destination, their identities, mTLS, RPS, success, p99.
pub(crate) fn edge_table(id: &str, edges: &[Value]) -> String {
    if edges.is_empty() {
        return format!("<p class=\"empty\" id=\"{id}-empty\">No traffic seen in this window yet.</p>");
    }
    let mut o = format!("<table id=\"{id}\"><thead><tr><th>Source</th><th>Destination</th><th>Source identity</th><th>Destination identity</th><th>mTLS</th><th>RPS</th><th>Success</th><th>p99</th></tr></thead><tbody>");
    for e in edges {
        let src = e.get("src").cloned().unwrap_or(Value::Null);
        let dst = e.get("dst").cloned().unwrap_or(Value::Null);
        let mtls = e.get("mtls").and_then(|m| m.as_bool()).unwrap_or(false);
        o.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td><small>{}</small></td><td><small>{}</small></td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&end_name(e, "src")),
            esc(&end_name(e, "dst")),
            esc(&s(&src, "identity")),
            esc(&s(&dst, "identity")),
            badge(if mtls { "yes" } else { "no" }),
            html::rate(f(e, "rps")),
            html::pct(f(e, "success_rate")),
            html::ms(f(e, "p99_ms")),
        ));
    }
    o.push_str("</tbody></table>");
    o
}

/// The graph of `edges`, with every catalog service as a node even without traffic.
pub(crate) fn graph(local_cluster: &str, catalog: &Got, edges: &[Value], only: Option<(&str, &str)>) -> String {
    let mut nodes: BTreeMap<String, svg::Node> = BTreeMap::new();
    let mut add = |cluster: String, ns: String, svc: String| {
        let id = node_id(&cluster, &ns, &svc);
        let href =
            if svc == "unmeshed" { String::new() } else { format!("/services/{}/{}", html::seg(&ns), html::seg(&svc)) };
        nodes.entry(id.clone()).or_insert(svg::Node { id, service: svc, namespace: ns, cluster, href });
    };
    let touches = |e: &Value| match only {
        None => true,
        Some((ns, name)) => ["src", "dst"].iter().any(|side| {
            let v = e.get(*side).cloned().unwrap_or(Value::Null);
            s(&v, "namespace") == ns && s(&v, "service") == name
        }),
    };
    let mut drawn = vec![];
    for e in edges.iter().filter(|e| touches(e)) {
        for side in ["src", "dst"] {
            let v = e.get(side).cloned().unwrap_or(Value::Null);
            add(s(&v, "cluster"), s(&v, "namespace"), s(&v, "service"));
        }
        drawn.push(svg::Edge {
            src: end_name(e, "src"),
            dst: end_name(e, "dst"),
            rps: f(e, "rps"),
            success: f(e, "success_rate"),
            p99_ms: f(e, "p99_ms"),
            mtls: e.get("mtls").and_then(|m| m.as_bool()).unwrap_or(false),
        });
    }
    if only.is_none() {
        for svc in items(catalog, "services") {
            for i in items_of(svc, "instances") {
                let cluster = s(i, "cluster");
                let cluster = if cluster.is_empty() { local_cluster.to_string() } else { cluster };
                add(cluster, s(svc, "namespace"), s(svc, "name"));
            }
        }
    }
    let nodes: Vec<svg::Node> = nodes.into_values().collect();
    svg::topology(&nodes, &drawn)
}

pub(crate) async fn topology(State(ctx): C, Extension(sess): Extension<Session>) -> Html<String> {
    let (catalog, edges) =
        tokio::join!(get_json(&ctx, &sess, "/v1/catalog"), get_json(&ctx, &sess, "/v1/edges?window=1m&cluster=all"));
    let mut body = String::from("<h1>Topology</h1><p class=\"muted\">Who calls whom, across clusters, over the last minute: requests per second and success rate on each edge. Click a service for its callers and callees.</p>");
    body.push_str(&why(&edges, "edges (/v1/edges)"));
    body.push_str(&graph(&ctx.cluster, &catalog, items(&edges, "edges"), None));
    Page::new("Topology", "/topology", Some(&sess), &ctx.cluster, REFRESH).render(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `/v1/stats` and `/v1/edges` answers as the contract (ctx19) shapes them.
    fn stats() -> Value {
        json!({"window_seconds":60,"generated_unix":1796000000u64,"source":"buffer",
            "rows":[{"cluster":"east","namespace":"demo","service":"api","workload":null,"route":null,
                "requests":120,"rps":2.0,"success_rate":0.992,"p50_ms":1.1,"p95_ms":3.0,"p99_ms":7.9,
                "tcp_connections":0,"meshed":true,
                "history":[{"t_unix":1795996400u64,"rps":2.0,"success_rate":1.0,"p99_ms":7.0},
                           {"t_unix":1795996460u64,"rps":3.0,"success_rate":0.9,"p99_ms":9.0}]}],
            "clusters":[{"name":"west","reachable":true,"error":null}]})
    }

    fn edges() -> Value {
        json!({"window_seconds":60,"edges":[
            {"src":{"cluster":"east","namespace":"demo","service":"web","identity":"spiffe://east.local/ns/demo/sa/web"},
             "dst":{"cluster":"west","namespace":"demo","service":"api","identity":"spiffe://west.local/ns/demo/sa/api"},
             "requests":120,"rps":2.0,"success_rate":0.5,"p99_ms":8.0,"mtls":true},
            {"src":{"cluster":"east","namespace":null,"service":"unmeshed","identity":null},
             "dst":{"cluster":"east","namespace":"demo","service":"web","identity":"spiffe://east.local/ns/demo/sa/web"},
             "requests":3,"rps":0.05,"success_rate":1.0,"p99_ms":2.0,"mtls":false}]})
    }

    #[test]
    fn a_stats_row_shows_its_numbers_and_sparklines() {
        let v = stats();
        let row = &v["rows"][0];
        let html = service_row("demo", "api", "east", "2/2 healthy", Some(row));
        assert!(html.contains("data-service=\"api.demo@east\""), "{html}");
        assert!(html.contains("data-success=\"0.9920\" data-rps=\"2.0000\""), "{html}");
        assert!(html.contains("99.20%") && html.contains("7.9 ms") && html.contains("2.00"), "{html}");
        assert_eq!(html.matches("<polyline").count(), 2, "RPS and success sparklines: {html}");
        let none = service_row("demo", "db", "east", "1/1 healthy", None);
        assert!(!none.contains("data-success"), "{none}");
    }

    #[test]
    fn edges_draw_the_graph_and_the_mtls_table() {
        let e = edges();
        let list = e["edges"].as_array().unwrap();
        let g = graph("east", &Got::Json(json!({"services": []})), list, None);
        assert!(g.contains("data-edge=\"web.demo@east to api.demo@west\""), "{g}");
        assert!(g.contains("class=\"edge bad\""), "success 50% is drawn red: {g}");
        assert!(g.contains("class=\"edge plaintext\""), "the unmeshed caller is not mTLS: {g}");
        assert!(g.contains("data-node=\"unmeshed.@east\""), "{g}");
        // The unmeshed caller has no page to link to.
        assert!(!g.contains("href=\"/services//unmeshed\""), "{g}");
        let only = graph("east", &Got::Json(json!({})), list, Some(("demo", "api")));
        assert!(only.contains("api.demo@west") && !only.contains("unmeshed"), "{only}");
        let t = edge_table("edges", list);
        assert!(t.contains("spiffe://west.local/ns/demo/sa/api") && t.contains("badge bad\">no"), "{t}");
    }

    #[test]
    fn missing_endpoints_say_no_data_yet() {
        assert!(why(&Got::Missing, "edges (/v1/edges)").contains("No data yet"));
        assert!(why(&Got::Denied("x".into()), "the audit log").contains("may not read"));
        assert!(why(&Got::Json(json!({})), "x").is_empty());
        assert!(items(&Got::Missing, "rows").is_empty());
    }
}
