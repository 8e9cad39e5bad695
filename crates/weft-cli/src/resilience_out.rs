//! How `weft describe resiliencepolicy` prints a policy: what it attaches to, whether it is in
//! force (its `Accepted` condition: applied, target missing, or conflicted), and its settings
//! as a proxy runs them, every default filled in, in the order a request meets them.

use serde_json::Value;
use weft_api::resilience::{Fault, RateLimit, ResiliencePolicySpec, Retry, RetryOn, TargetKind, GRPC_CODES};

/// The lines printed after the policy's JSON.
pub fn describe(o: &Value) -> Vec<String> {
    let spec: ResiliencePolicySpec = match serde_json::from_value(o["spec"].clone()) {
        Ok(s) => s,
        Err(e) => return vec![format!("spec: not readable by this weft ({e}); upgrade the CLI")],
    };
    let ns = o["metadata"]["namespace"].as_str().unwrap_or("default");
    let t = &spec.target_ref;
    let mut out = vec![match (t.kind, t.section_name.as_deref()) {
        (TargetKind::Service, _) => {
            format!(
                "target: Service {ns}/{} (every call to it; a route rule with a policy of its own keeps that one)",
                t.name
            )
        }
        (TargetKind::HttpRoute | TargetKind::GrpcRoute, Some(rule)) => {
            format!("target: rule {rule} of {} {ns}/{}", t.kind.as_str(), t.name)
        }
        (TargetKind::HttpRoute | TargetKind::GrpcRoute, None) => {
            format!("target: {} {ns}/{} (each rule without a policy of its own)", t.kind.as_str(), t.name)
        }
    }];
    out.push("conditions:".into());
    for c in o["status"]["conditions"].as_array().into_iter().flatten() {
        out.push(format!(
            "  {:<9} {:<6} {:<15} {}",
            c["type"].as_str().unwrap_or(""),
            c["status"].as_str().unwrap_or(""),
            c["reason"].as_str().unwrap_or(""),
            c["message"].as_str().unwrap_or("")
        ));
    }
    let in_force = o["status"]["conditions"][0]["status"] == "True";
    out.push(format!(
        "settings{}, defaults filled in, in the order a request meets them:",
        if in_force { "" } else { " (NOT in force: see the condition)" }
    ));
    let mut n = 0;
    let mut step = |s: String| {
        n += 1;
        out.push(format!("  {n}. {s}"));
    };
    if let Some(r) = &spec.rate_limit {
        step(rate_limit(r, &t.name));
    }
    for (i, f) in spec.faults.iter().enumerate() {
        step(format!("fault[{i}] at callers: {}", fault(f)));
    }
    let t = spec.timeouts.clone().unwrap_or_default();
    step(format!(
        "request timeout: {}",
        t.request.map_or("none (the route's timeouts, if any)".into(), |d| d.to_string())
    ));
    step(format!(
        "try: per-try timeout {}, connect timeout {}",
        t.per_try.map_or("none".into(), |d| d.to_string()),
        t.connect.map_or("the proxy's".into(), |d| d.to_string())
    ));
    match &spec.retry {
        Some(r) => step(retry(r)),
        None => step("retry: none (the proxy's connect-failure retry to another endpoint only)".into()),
    }
    if let Some(d) = t.idle {
        step(format!("response body idle timeout {d}: no data for that long and the response is reset"));
    }
    out
}

/// Which requests the policy `id` (`namespace/name`) covers, from the effective routes of the
/// Services involved (`GET /v1/services/.../routes`): for a Service target, the route rules
/// whose requests take another policy instead; for a whole-route target (`route`: its kind,
/// `HTTPRoute` or `GRPCRoute`, and `namespace/name`), each rule of it and the policy it takes.
pub fn coverage(id: &str, route: Option<(&str, &str)>, services: &[Value]) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = vec![];
    for svc in services {
        for e in svc["http"].as_array().into_iter().flatten() {
            let (r, rule) = (e["route"].as_str().unwrap_or(""), e["rule"].as_str().unwrap_or(""));
            // Entries from before the API said each route's kind are HTTPRoutes.
            let kind = e["kind"].as_str().unwrap_or("HTTPRoute");
            if route.is_some_and(|(k, want)| want != r || k != kind)
                || !seen.insert((kind.to_string(), r.to_string(), rule.to_string()))
            {
                continue;
            }
            let taken = e["resilience"].as_str();
            match (route, taken) {
                (None, Some(other)) => {
                    out.push(format!("  except rule {rule} of {kind} {r}: ResiliencePolicy {other} instead"))
                }
                (None, None) => {}
                (Some(_), Some(p)) if p == id => out.push(format!("  rule {rule}: this policy")),
                (Some(_), Some(p)) => out.push(format!("  rule {rule}: ResiliencePolicy {p} (its own)")),
                (Some(_), None) => out.push(format!("  rule {rule}: not attached to any Service yet")),
            }
        }
    }
    out
}

fn rate_limit(r: &RateLimit, target: &str) -> String {
    format!(
        "rate limit at {target}'s own proxies: bucket of {} requests, {} more every {}, {}; empty: 429 rate-limited (weft_rate_limited_total)",
        r.max_tokens,
        r.tokens_per_fill(),
        r.fill_interval,
        if r.per_caller { "one bucket per caller identity" } else { "one bucket for all callers" }
    )
}

fn fault(f: &Fault) -> String {
    let mut what = vec![];
    if let Some(d) = &f.delay {
        what.push(format!("delay {} for {}%", d.fixed, d.percent));
    }
    if let Some(a) = &f.abort {
        let status = match (a.http_status, a.grpc_status) {
            (_, Some(g)) => format!("gRPC status {} ({})", g.0, GRPC_CODES.get(usize::from(g.0)).unwrap_or(&"?")),
            (Some(h), None) => format!("HTTP {h}"),
            (None, None) => "?".into(),
        };
        what.push(format!("abort with {status} for {}%", a.percent));
    }
    let on = match &f.matches {
        None => "of every request".to_string(),
        Some(m) => {
            let mut c = vec![];
            if let Some(p) = &m.path_prefix {
                c.push(format!("path under {p}"));
            }
            c.extend(m.headers.iter().map(|(k, v)| format!("{k}: {v}")));
            if c.is_empty() {
                "of every request".into()
            } else {
                format!("of requests with {}", c.join(", "))
            }
        }
    };
    format!("{} {on}", what.join(", then "))
}

fn retry(r: &Retry) -> String {
    let on: Vec<&str> = r
        .retry_on
        .iter()
        .map(|o| match o {
            RetryOn::Status5xx => "5xx",
            RetryOn::GatewayError => "gateway-error",
            RetryOn::ConnectFailure => "connect-failure",
            RetryOn::Reset => "reset",
        })
        .collect();
    let mut on = on.join(", ");
    if !r.status_codes.is_empty() {
        let s: Vec<String> = r.status_codes.iter().map(u16::to_string).collect();
        on.push_str(&format!(", status {}", s.join(", ")));
    }
    if !r.grpc_status_codes.is_empty() {
        let s: Vec<&str> =
            r.grpc_status_codes.iter().map(|g| *GRPC_CODES.get(usize::from(g.0)).unwrap_or(&"?")).collect();
        on.push_str(&format!(", grpc-status {}", s.join(", ")));
    }
    let methods = if r.methods.is_empty() {
        "GET, HEAD, OPTIONS, TRACE, PUT, DELETE (idempotent)".into()
    } else {
        r.methods.join(", ")
    };
    let backoff = r.backoff.clone().unwrap_or_default();
    let budget = r.budget.clone().unwrap_or_default();
    format!(
        "retry: up to {} more tries ({} in all) on {on}; methods {methods}; backoff {}..{} with full jitter; budget {}% of requests + {}/s over {}; bodies up to {} bytes replayed",
        r.attempts,
        r.attempts + 1,
        backoff.base,
        backoff.max,
        budget.ratio * 100.0,
        budget.min_per_second,
        budget.window,
        r.max_body_bytes
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn coverage_names_the_rules_that_take_another_policy() {
        let svc = json!({ "http": [
            { "route": "default/r", "rule": "slow", "resilience": "default/slow-res" },
            { "route": "default/r", "rule": "slow", "resilience": "default/slow-res" },
            { "route": "default/r", "rule": "rest", "resilience": null },
            { "route": "default/other", "rule": "x", "resilience": "default/whole" },
            { "kind": "GRPCRoute", "route": "default/other", "rule": "x", "resilience": "default/g" },
        ]});
        assert_eq!(
            coverage("default/api-res", None, std::slice::from_ref(&svc)),
            [
                "  except rule slow of HTTPRoute default/r: ResiliencePolicy default/slow-res instead",
                "  except rule x of HTTPRoute default/other: ResiliencePolicy default/whole instead",
                "  except rule x of GRPCRoute default/other: ResiliencePolicy default/g instead"
            ]
        );
        let whole = |kind| coverage("default/whole", Some((kind, "default/other")), std::slice::from_ref(&svc));
        assert_eq!(whole("HTTPRoute"), ["  rule x: this policy"]);
        assert_eq!(
            whole("GRPCRoute"),
            ["  rule x: ResiliencePolicy default/g (its own)"],
            "a GRPCRoute of the same name"
        );
    }

    #[test]
    fn a_policy_shows_its_target_condition_and_settings_with_defaults() {
        let o = json!({
            "metadata": { "namespace": "shop", "name": "p" },
            "spec": {
                "targetRef": { "kind": "Service", "name": "api" },
                "retry": { "grpcStatusCodes": ["unavailable"] },
                "faults": [{ "match": { "pathPrefix": "/x" }, "abort": { "grpcStatus": 14, "percent": 10.0 } }],
                "rateLimit": { "maxTokens": 5, "fillInterval": "1s", "perCaller": true },
                "timeouts": { "perTry": "500ms" }
            },
            "status": { "conditions": [{ "type": "Accepted", "status": "False", "reason": "TargetNotFound", "message": "no Service shop/api" }] }
        });
        let lines = describe(&o).join("\n");
        for want in [
            "target: Service shop/api",
            "Accepted  False  TargetNotFound  no Service shop/api",
            "NOT in force",
            "1. rate limit at api's own proxies: bucket of 5 requests, 5 more every 1s, one bucket per caller identity",
            "2. fault[0] at callers: abort with gRPC status 14 (unavailable) for 10% of requests with path under /x",
            "3. request timeout: none",
            "4. try: per-try timeout 500ms, connect timeout the proxy's",
            "5. retry: up to 2 more tries (3 in all) on connect-failure, gateway-error, reset, grpc-status unavailable",
            "backoff 25ms..250ms",
            "budget 20% of requests + 10/s over 10s; bodies up to 65536 bytes",
        ] {
            assert!(lines.contains(want), "{want:?} not in:\n{lines}");
        }
    }
}
