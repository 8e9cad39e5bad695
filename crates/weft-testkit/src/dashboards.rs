//! The metric names deploy/grafana's dashboards use, and the names a real `/metrics` scrape lets a
//! query use: shared by the proxy's dashboard test (`weft-proxy/tests/dashboards.rs`) and the
//! control plane's (`weft-control/tests/metrics.rs`), each checking the names it exports.

use std::collections::BTreeSet;
use std::path::PathBuf;

/// The prefix of the control plane's own metrics (`weft control --metrics`); every other
/// `weft_*` name is a proxy's.
pub const CONTROL_PLANE_PREFIX: &str = "weft_control_plane_";

/// The repository's root (this crate is `crates/weft-testkit`).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every name a `/metrics` text lets a query use, from its `# TYPE` lines and samples: a
/// counter as `<name>_total`, a histogram as `_bucket`, `_sum`, `_count`, a gauge as itself.
pub fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (Some(name), Some(kind)) = (it.next(), it.next()) else { continue };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !l.starts_with('#') && !l.is_empty() {
            let name = l.split(['{', ' ']).next().unwrap_or_default();
            names.insert(name.to_string());
        }
    }
    names
}

/// The `weft_*` metric names in a PromQL expression (a word starting `weft_`).
pub fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("weft_") && w.len() > "weft_".len())
        .map(str::to_string)
        .collect()
}

/// Every query string of a dashboard (panel targets, template variables), with where it is.
pub fn queries(v: &serde_json::Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let here = format!("{at}.{k}");
                match (k.as_str(), x) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => out.push((here, s.clone())),
                    _ => queries(x, &here, out),
                }
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                queries(x, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// deploy/grafana's dashboards, each checked to be JSON with a uid and panels.
pub fn dashboards() -> Vec<(PathBuf, serde_json::Value)> {
    let dir = repo().join("deploy/grafana");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/grafana")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap_or_else(|e| panic!("{f:?}: {e}"));
            assert!(v["uid"].as_str().is_some_and(|u| !u.is_empty()), "{f:?}: uid");
            assert!(v["panels"].as_array().is_some_and(|p| !p.is_empty()), "{f:?}: panels");
            (f, v)
        })
        .collect()
}

/// Every `weft_*` name the dashboards use that `pick` selects, with where: (name, file.path).
pub fn used_names(pick: impl Fn(&str) -> bool) -> Vec<(String, String)> {
    let mut out = vec![];
    for (f, v) in dashboards() {
        let mut qs = vec![];
        queries(&v, "", &mut qs);
        let file = f.file_name().unwrap_or_default().to_string_lossy().to_string();
        for (at, q) in qs {
            out.extend(metric_names(&q).into_iter().filter(|n| pick(n)).map(|n| (n, format!("{file}{at}"))));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_in_queries_and_types_give_their_sample_names() {
        assert_eq!(
            metric_names("sum(rate(weft_http_requests_total{dst=~\"$s\"}[5m])) / weft_x + my_weft_y"),
            ["weft_http_requests_total", "weft_x"]
        );
        let n = exported("# TYPE weft_a counter\n# TYPE weft_b histogram\n# TYPE weft_c gauge\nweft_c 1\n");
        for want in ["weft_a_total", "weft_b_bucket", "weft_b_sum", "weft_b_count", "weft_c"] {
            assert!(n.contains(want), "{want}: {n:?}");
        }
        assert!(!n.contains("weft_a"), "a counter is queried with _total");
    }
}
