//! A service's page, the workloads and proxies, a proxy's page, and the tap.

use super::forward::{get_json, Got};
use super::html::{self, badge, esc, note, s, u, Page};
use super::pages::{act, edge_table, graph, items, items_of, may_act, stat_cells, why, REFRESH, STAT_HEAD};
use super::session::Session;
use super::C;
use axum::extract::{Path, Query, State};
use axum::response::Html;
use axum::Extension;
use serde_json::Value;

pub(crate) async fn service(
    State(ctx): C,
    Extension(sess): Extension<Session>,
    Path((ns, name)): Path<(String, String)>,
) -> Html<String> {
    let q = format!("namespace={}", html::url_encode(&ns));
    let res_path = format!("/v1/resources/service/{}/{}", html::seg(&ns), html::seg(&name));
    let routes_path = format!("/v1/services/{}/{}/routes", html::seg(&ns), html::seg(&name));
    let stats_path = format!("/v1/stats?by=workload&window=1m&history=1&{q}");
    let (catalog, resource, routes, stats, edges) = tokio::join!(
        get_json(&ctx, &sess, "/v1/catalog"),
        get_json(&ctx, &sess, &res_path),
        get_json(&ctx, &sess, &routes_path),
        get_json(&ctx, &sess, &stats_path),
        get_json(&ctx, &sess, "/v1/edges?window=1m&cluster=all"),
    );
    let title = format!("{name}.{ns}");
    let mut body = format!("<h1>Service {} <small>namespace {}</small></h1>", esc(&name), esc(&ns));
    let svc = items(&catalog, "services").iter().find(|v| s(v, "namespace") == ns && s(v, "name") == name);
    if let (Some(_), true) = (resource.json(), may_act(&sess) || sess.role == "writer") {
        body.push_str(&act(
            "DELETE",
            &format!("/api/v1/resources/service/{}/{}", html::seg(&ns), html::seg(&name)),
            "Delete this Service resource",
            &format!("Delete the Service {ns}/{name}? Its workloads stay; callers lose the name."),
        ));
    }

    body.push_str("<h2>Instances</h2>");
    match svc {
        Some(svc) => {
            body.push_str("<table id=\"instances\"><thead><tr><th>Instance</th><th>Cluster</th><th>Address</th><th>Sidecar</th><th>Identity</th><th>Health</th></tr></thead><tbody>");
            for i in items_of(svc, "instances") {
                let healthy = i.get("healthy").and_then(|h| h.as_bool()).unwrap_or(true);
                body.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><small>{}</small></td><td>{}</td></tr>",
                    esc(&s(i, "name")),
                    esc(&s(i, "cluster")),
                    esc(&s(i, "address")),
                    esc(&s(i, "sidecar")),
                    esc(&s(i, "identity")),
                    badge(if healthy { "healthy" } else { "failing" }),
                ));
            }
            body.push_str("</tbody></table>");
        }
        None => {
            body.push_str(&note("", "Not in the catalog (no instance registered, or not visible to this cluster)."))
        }
    }

    body.push_str("<h2>Golden metrics by workload</h2>");
    body.push_str(&why(&stats, "metrics (/v1/stats)"));
    let rows: Vec<&Value> = items(&stats, "rows").iter().filter(|r| s(r, "service") == name).collect();
    if !rows.is_empty() {
        body.push_str(&format!(
            "<table id=\"workload-stats\"><thead><tr><th>Workload</th><th>Cluster</th>{STAT_HEAD}</tr></thead><tbody>"
        ));
        for r in rows {
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td>{}</tr>",
                esc(&s(r, "workload")),
                esc(&s(r, "cluster")),
                stat_cells(r)
            ));
        }
        body.push_str("</tbody></table>");
    }

    let all = items(&edges, "edges");
    let side_is = |e: &Value, side: &str| {
        let v = e.get(side).cloned().unwrap_or(Value::Null);
        s(&v, "namespace") == ns && s(&v, "service") == name
    };
    let callers: Vec<Value> = all.iter().filter(|e| side_is(e, "dst")).cloned().collect();
    let callees: Vec<Value> = all.iter().filter(|e| side_is(e, "src")).cloned().collect();
    body.push_str("<h2>Callers and callees</h2>");
    body.push_str(&why(&edges, "edges (/v1/edges)"));
    if edges.json().is_some() {
        body.push_str(&graph(&ctx.cluster, &catalog, all, Some((&ns, &name))));
        body.push_str("<h3>Callers</h3>");
        body.push_str(&if callers.is_empty() {
            note("", "No callers in the last minute.")
        } else {
            edge_table("callers", &callers)
        });
        body.push_str("<h3>Callees</h3>");
        body.push_str(&if callees.is_empty() {
            note("", "No callees in the last minute.")
        } else {
            edge_table("callees", &callees)
        });
    }

    body.push_str("<h2>Routes</h2>");
    match &routes {
        Got::Json(v) => body.push_str(&format!("<pre class=\"json\">{}</pre>", esc(&pretty(v)))),
        other => body.push_str(&why(other, "the routes")),
    }
    body.push_str("<h2>Resource and policies</h2>");
    match &resource {
        Got::Json(v) => {
            let status = v.get("status").cloned().unwrap_or(Value::Null);
            for (k, label) in [("mtls", "mTLS"), ("authorization", "Authorization"), ("requestAuthentications", "Request authentication")] {
                if let Some(x) = status.get(k) {
                    body.push_str(&format!("<details><summary>{label}</summary><pre class=\"json\">{}</pre></details>", esc(&pretty(x))));
                }
            }
            body.push_str(&format!("<details><summary>The Service resource</summary><pre class=\"json\">{}</pre></details>", esc(&pretty(v))));
        }
        Got::Missing => body.push_str(&note("", "No Service resource of this name (its instances registered themselves, or it is imported from a linked cluster).")),
        other => body.push_str(&why(other, "the Service resource")),
    }
    Page::new(&title, "/services", Some(&sess), &ctx.cluster, REFRESH).render(body)
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

pub(crate) async fn proxies(State(ctx): C, Extension(sess): Extension<Session>) -> Html<String> {
    let (proxies, workloads) =
        tokio::join!(get_json(&ctx, &sess, "/v1/proxies"), get_json(&ctx, &sess, "/v1/resources?kind=Workload"));
    let mut body = String::from("<h1>Workloads and proxies</h1><h2>Connected proxies</h2>");
    body.push_str(&why(&proxies, "the proxies"));
    let list = items(&proxies, "proxies");
    body.push_str("<table id=\"proxies\"><thead><tr><th>Proxy</th><th>Mode</th><th>Identity</th><th>Cluster</th><th>Sync</th><th>Version sent / acked</th><th>Certificate expires</th><th>Connected</th></tr></thead><tbody>");
    for p in list {
        let id = s(p, "proxy_id");
        let err = s(p, "error");
        body.push_str(&format!(
            "<tr data-proxy=\"{idh}\"><td><a href=\"/proxies/{ids}\">{idh}</a>{err}</td><td>{mode}</td><td><small>{ident}</small></td><td>{cluster}</td><td>{status}</td><td class=\"num\">{sent} / {acked}</td><td>{cert}</td><td>{conn}</td></tr>",
            idh = esc(&id),
            ids = html::seg(&id),
            err = if err.is_empty() { String::new() } else { format!("<br><small class=\"bad\">rejected: {}</small>", esc(&err)) },
            mode = esc(&s(p, "mode")),
            ident = esc(&s(p, "identity")),
            cluster = esc(&s(p, "cluster")),
            status = badge(&s(p, "status")),
            sent = u(p, "sent"),
            acked = u(p, "acked"),
            cert = html::until(u(p, "leaf_not_after_unix")),
            conn = html::ago(u(p, "connected_at_unix")),
        ));
    }
    body.push_str("</tbody></table>");
    if list.is_empty() && proxies.json().is_some() {
        body.push_str(&note("", "No proxy is connected."));
    }
    body.push_str("<h2>Workloads</h2>");
    body.push_str(&why(&workloads, "the workloads"));
    let wl = items(&workloads, "items");
    if !wl.is_empty() {
        body.push_str("<table id=\"workloads\"><thead><tr><th>Workload</th><th>Namespace</th><th>Service</th><th>Address</th><th></th></tr></thead><tbody>");
        for w in wl {
            let m = w.get("metadata").cloned().unwrap_or(Value::Null);
            let spec = w.get("spec").cloned().unwrap_or(Value::Null);
            let (ns, name) = (s(&m, "namespace"), s(&m, "name"));
            let del = if may_act(&sess) || sess.role == "writer" {
                act(
                    "DELETE",
                    &format!("/api/v1/resources/workload/{}/{}", html::seg(&ns), html::seg(&name)),
                    "Delete",
                    &format!("Delete the Workload {ns}/{name}?"),
                )
            } else {
                String::new()
            };
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td><a href=\"/services/{}/{}\">{}</a></td><td>{}</td><td>{del}</td></tr>",
                esc(&name),
                esc(&ns),
                html::seg(&ns),
                html::seg(&s(&spec, "service")),
                esc(&s(&spec, "service")),
                esc(&s(&spec, "address")),
            ));
        }
        body.push_str("</tbody></table>");
    }
    Page::new("Workloads and proxies", "/proxies", Some(&sess), &ctx.cluster, REFRESH).render(body)
}

pub(crate) async fn proxy(State(ctx): C, Extension(sess): Extension<Session>, Path(id): Path<String>) -> Html<String> {
    let config_path = format!("/v1/proxies/{}/config", html::seg(&id));
    let (proxies, config) = tokio::join!(get_json(&ctx, &sess, "/v1/proxies"), get_json(&ctx, &sess, &config_path));
    let mut body = format!("<h1>Proxy {}</h1>", esc(&id));
    match items(&proxies, "proxies").iter().find(|p| s(p, "proxy_id") == id) {
        Some(p) => {
            body.push_str("<table class=\"kv\" id=\"proxy-status\"><tbody>");
            let rows = [
                (
                    "Identity",
                    format!("{} <small>(from its {})</small>", esc(&s(p, "identity")), esc(&s(p, "identity_from"))),
                ),
                ("Mode", esc(&s(p, "mode"))),
                ("Cluster / network", format!("{} / {}", esc(&s(p, "cluster")), esc(&s(p, "network")))),
                (
                    "Sync",
                    format!(
                        "{} (version sent {}, acknowledged {})",
                        badge(&s(p, "status")),
                        u(p, "sent"),
                        u(p, "acked")
                    ),
                ),
                ("Rejected update", esc(&s(p, "error"))),
                ("Certificate expires", html::until(u(p, "leaf_not_after_unix"))),
                ("Certificate's root", format!("<small>{}</small>", esc(&s(p, "leaf_root")))),
                ("Connected", html::ago(u(p, "connected_at_unix"))),
                ("Upstreams asked for", {
                    let ups: Vec<String> =
                        items_of(p, "upstreams").iter().filter_map(|x| x.as_str().map(esc)).collect();
                    if ups.is_empty() {
                        "all (none named)".to_string()
                    } else {
                        ups.join(", ")
                    }
                }),
            ];
            for (k, v) in rows {
                body.push_str(&format!("<tr><th>{k}</th><td>{v}</td></tr>"));
            }
            body.push_str("</tbody></table>");
        }
        None => body.push_str(&why(&proxies, "the proxies")),
    }
    body.push_str("<h2>Effective configuration</h2>");
    match &config {
        Got::Json(v) => {
            let sections: Vec<(String, Value)> = match v.as_object() {
                Some(o) => o.iter().map(|(k, x)| (k.clone(), x.clone())).collect(),
                None => vec![("config".into(), v.clone())],
            };
            for (k, x) in sections {
                body.push_str(&format!(
                    "<details open data-section=\"{}\"><summary>{}</summary><pre class=\"json\">{}</pre></details>",
                    esc(&k),
                    esc(&k),
                    esc(&pretty(&x))
                ));
            }
        }
        Got::Missing => body.push_str(&note(
            "nodata",
            "No data yet: this control plane does not serve a proxy's effective configuration (/v1/proxies/{id}/config) yet, or the proxy is gone.",
        )),
        other => body.push_str(&why(other, "the proxy's configuration")),
    }
    Page::new(&id, "/proxies", Some(&sess), &ctx.cluster, "").render(body)
}

/// The tap form's fields (the query of `/v1/tap`).
const TAP_FIELDS: &[(&str, &str, &str)] = &[
    ("namespace", "Namespace", "demo"),
    ("service", "Service", "api"),
    ("workload", "Workload", "api-v1"),
    ("src", "Source", "web.* or spiffe://…"),
    ("dst", "Destination", "api.demo"),
    ("path", "Path", "/items*"),
    ("method", "Method", "GET"),
    ("status", "Status", "200 or 5xx"),
    ("max", "Max events", "100"),
    ("seconds", "Seconds", "30"),
    ("cluster", "Cluster", "all, or a linked one"),
];

pub(crate) async fn tap(
    State(ctx): C,
    Extension(sess): Extension<Session>,
    Query(q): Query<Vec<(String, String)>>,
) -> Html<String> {
    let value = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let mut fields = String::new();
    for (name, label, hint) in TAP_FIELDS {
        fields.push_str(&format!(
            "<label>{label} <input name=\"{name}\" value=\"{}\" placeholder=\"{}\"></label>",
            esc(&value(name)),
            esc(hint)
        ));
    }
    let auto = if value("start") == "1" { " data-autostart=\"1\"" } else { "" };
    let body = format!(
        r#"<h1>Live tap</h1>
<p class="muted">Requests as the proxies see them, live. Filters match by prefix or glob; nothing is kept after the tap ends.</p>
<form id="tap-form"{auto}>{fields}
<button type="submit" id="tap-start">Start</button> <button type="button" id="tap-stop" disabled>Stop</button></form>
<p id="tap-status" class="muted">Not running.</p>
<table id="tap-events"><thead><tr><th>Time</th><th>Proxy</th><th>Dir</th><th>Source</th><th>Destination</th><th>Method</th><th>Path</th><th>Status</th><th>Latency</th><th>mTLS</th></tr></thead><tbody></tbody></table>"#
    );
    Page::new("Tap", "/tap", Some(&sess), &ctx.cluster, "").render(body)
}
