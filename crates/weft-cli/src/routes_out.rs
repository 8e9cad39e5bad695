//! How `weft get` and `weft describe` print routes: a route's Gateway API conditions, and a
//! Service's effective routes in the order they apply (from `GET /v1/services/.../routes`).

use crate::client::table;
use serde_json::Value;

fn condition<'a>(o: &'a Value, kind: &str) -> Option<&'a Value> {
    o["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind)
}

/// `weft get httproutes`: parents and the two conditions.
pub fn get_detail(o: &Value) -> String {
    let parents: Vec<&str> =
        o["spec"]["parentRefs"].as_array().into_iter().flatten().filter_map(|p| p["name"].as_str()).collect();
    let c = |k: &str| {
        condition(o, k)
            .map(|c| format!("{}={}", k, c["status"].as_str().unwrap_or("?")))
            .unwrap_or_else(|| format!("{k}=?"))
    };
    let hosts: Vec<&str> = o["spec"]["hostnames"].as_array().into_iter().flatten().filter_map(|h| h.as_str()).collect();
    let hosts = if hosts.is_empty() { String::new() } else { format!("  hosts {}", hosts.join(",")) };
    format!("parents {}{hosts}  {}  {}", parents.join(","), c("Accepted"), c("ResolvedRefs"))
}

/// After the route's JSON: the hosts it applies to and its conditions in words.
pub fn describe_route(kind: &str, o: &Value) -> std::io::Result<()> {
    if kind != "TCPRoute" {
        let hosts: Vec<&str> =
            o["spec"]["hostnames"].as_array().into_iter().flatten().filter_map(|h| h.as_str()).collect();
        if hosts.is_empty() {
            outln!("hostnames: every host")?;
        } else {
            outln!("hostnames: {} (other hosts: not this route)", hosts.join(", "))?;
        }
    }
    outln!("conditions:")?;
    for c in o["status"]["conditions"].as_array().into_iter().flatten() {
        outln!(
            "  {:<13} {:<6} {:<17} {}",
            c["type"].as_str().unwrap_or(""),
            c["status"].as_str().unwrap_or(""),
            c["reason"].as_str().unwrap_or(""),
            c["message"].as_str().unwrap_or("")
        )?;
    }
    Ok(())
}

fn backends(v: &Value) -> String {
    let list: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            format!(
                "{} {:.0}%{}",
                b["service"].as_str().unwrap_or(""),
                b["percent"].as_f64().unwrap_or(0.0),
                if b["found"].as_bool() == Some(false) { " (not found: 500)" } else { "" }
            )
        })
        .collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(", ")
    }
}

/// After a Service's JSON: its routes, first match first.
pub fn describe_service(r: &Value) -> std::io::Result<()> {
    let http = r["http"].as_array().cloned().unwrap_or_default();
    if http.is_empty() && r["tcp"].is_null() {
        outln!("routes: none (every call is balanced over this Service's endpoints)")?;
        return Ok(());
    }
    if !http.is_empty() {
        outln!("HTTP/gRPC routes, in the order they apply (first match wins; docs/traffic.md#precedence):")?;
        let rows = http
            .iter()
            .map(|e| {
                let filters: Vec<&str> =
                    e["filters"].as_array().into_iter().flatten().filter_map(|f| f.as_str()).collect();
                vec![
                    e["order"].to_string(),
                    format!("{} {}", e["kind"].as_str().unwrap_or(""), e["route"].as_str().unwrap_or("")),
                    e["rule"].as_str().unwrap_or("").into(),
                    e["match"].as_str().unwrap_or("").into(),
                    if filters.is_empty() { "-".into() } else { filters.join(", ") },
                    backends(&e["backends"]),
                    // The rule's own ResiliencePolicy; `-`: the Service's, if it has one.
                    e["resilience"].as_str().unwrap_or("-").into(),
                ]
            })
            .collect();
        table(&["#", "ROUTE", "RULE", "MATCH", "FILTERS", "BACKENDS", "RESILIENCE"], rows)?;
        outln!("  a request that no entry matches is answered 404 (the Gateway API's rule)")?;
        if http.iter().any(|e| e["resilience"].is_string()) {
            outln!("  RESILIENCE: the ResiliencePolicy a rule's requests take instead of the Service's (`weft describe resiliencepolicy NAME`)")?;
        }
    }
    if !r["tcp"].is_null() {
        outln!("TCP: {} → {}", r["tcp"]["route"].as_str().unwrap_or(""), backends(&r["tcp"]["backends"]))?;
    }
    for c in r["conflicted"].as_array().into_iter().flatten() {
        outln!(
            "  not applied: TCPRoute {}: {}",
            c["route"].as_str().unwrap_or(""),
            c["reason"].as_str().unwrap_or("")
        )?;
    }
    Ok(())
}
