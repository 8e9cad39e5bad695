//! SVG drawn by weft: sparklines and the topology graph (no chart library, nothing fetched).

use super::html::esc;
use std::collections::BTreeMap;

/// A line over `values` (oldest first) in a `w`×`h` box; "–" with fewer than two points.
pub fn sparkline(values: &[f64], w: u32, h: u32, title: &str) -> String {
    let vals: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if vals.len() < 2 {
        return "<span class=\"muted\">–</span>".into();
    }
    let (min, max) = vals.iter().fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    let range = if (max - min).abs() < f64::EPSILON { 1.0 } else { max - min };
    let step = f64::from(w - 2) / (vals.len() - 1) as f64;
    let points: Vec<String> = vals
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = 1.0 + i as f64 * step;
            let y = 1.0 + (f64::from(h) - 2.0) * (1.0 - (v - min) / range);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    format!(
        "<svg class=\"spark\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\"><title>{}</title><polyline points=\"{}\"/></svg>",
        esc(title),
        points.join(" ")
    )
}

/// A service in the graph.
#[derive(Clone, Debug)]
pub struct Node {
    /// `service.namespace@cluster`
    pub id: String,
    pub service: String,
    pub namespace: String,
    pub cluster: String,
    /// Where clicking goes (empty: nowhere).
    pub href: String,
}

/// A call edge between two nodes.
#[derive(Clone, Debug)]
pub struct Edge {
    pub src: String,
    pub dst: String,
    pub rps: Option<f64>,
    pub success: Option<f64>,
    pub p99_ms: Option<f64>,
    pub mtls: bool,
}

const NODE_W: f64 = 170.0;
const NODE_H: f64 = 46.0;
const COL_GAP: f64 = 130.0;
const ROW_GAP: f64 = 34.0;
const PALETTE: &[&str] = &["#2b6cb0", "#2f855a", "#b7791f", "#6b46c1", "#c53030", "#2c7a7b", "#97266d", "#4a5568"];

/// The graph, laid out in columns: callers left of callees (a node's column is the longest chain
/// of callers before it; cycles are cut after as many rounds as there are nodes).
pub fn topology(nodes: &[Node], edges: &[Edge]) -> String {
    if nodes.is_empty() {
        return "<p class=\"note\">No services yet.</p>".into();
    }
    let index: BTreeMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.id.as_str(), i)).collect();
    let mut depth = vec![0usize; nodes.len()];
    for _ in 0..nodes.len() {
        let mut changed = false;
        for e in edges {
            if let (Some(&s), Some(&d)) = (index.get(e.src.as_str()), index.get(e.dst.as_str())) {
                if s != d && depth[d] < depth[s] + 1 && depth[s] + 1 < nodes.len() {
                    depth[d] = depth[s] + 1;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut columns: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, d) in depth.iter().enumerate() {
        columns.entry(*d).or_default().push(i);
    }
    let mut pos = vec![(0.0, 0.0); nodes.len()];
    let mut rows_max = 0;
    for (col, members) in &columns {
        let mut members = members.clone();
        members.sort_by(|a, b| (&nodes[*a].cluster, &nodes[*a].id).cmp(&(&nodes[*b].cluster, &nodes[*b].id)));
        rows_max = rows_max.max(members.len());
        for (row, i) in members.iter().enumerate() {
            pos[*i] = (20.0 + *col as f64 * (NODE_W + COL_GAP), 30.0 + row as f64 * (NODE_H + ROW_GAP));
        }
    }
    let width = 40.0 + columns.len() as f64 * (NODE_W + COL_GAP) - COL_GAP;
    let height = 50.0 + rows_max as f64 * (NODE_H + ROW_GAP);
    let clusters: Vec<&str> = {
        let mut c: Vec<&str> = nodes.iter().map(|n| n.cluster.as_str()).collect();
        c.sort();
        c.dedup();
        c
    };
    let colour = |cluster: &str| PALETTE[clusters.iter().position(|c| *c == cluster).unwrap_or(0) % PALETTE.len()];

    let mut out = format!(
        "<svg class=\"topology\" id=\"topology\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\" aria-label=\"service topology\">\
<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\"/></marker></defs>"
    );
    for e in edges {
        let (Some(&s), Some(&d)) = (index.get(e.src.as_str()), index.get(e.dst.as_str())) else { continue };
        let (sx, sy) = (pos[s].0 + NODE_W, pos[s].1 + NODE_H / 2.0);
        let (dx, dy) = (pos[d].0, pos[d].1 + NODE_H / 2.0);
        let path = if dx > sx {
            let mid = (sx + dx) / 2.0;
            format!("M {sx:.1} {sy:.1} C {mid:.1} {sy:.1}, {mid:.1} {dy:.1}, {dx:.1} {dy:.1}")
        } else {
            // A call back to an earlier column (or within one): around the top.
            let top = pos[s].1.min(pos[d].1) - 22.0;
            format!(
                "M {:.1} {:.1} C {:.1} {top:.1}, {:.1} {top:.1}, {:.1} {:.1}",
                pos[s].0 + NODE_W / 2.0,
                pos[s].1,
                pos[s].0 + NODE_W / 2.0,
                pos[d].0 + NODE_W / 2.0,
                pos[d].0 + NODE_W / 2.0,
                pos[d].1
            )
        };
        let bad = e.success.is_some_and(|x| x < 0.95);
        let cls = format!("edge{}{}", if bad { " bad" } else { "" }, if e.mtls { "" } else { " plaintext" });
        let label = format!(
            "{} rps · {}",
            super::html::rate(e.rps),
            e.success.map(|x| format!("{:.1}%", x * 100.0)).unwrap_or_else(|| "–".into())
        );
        let (lx, ly) = ((sx + dx) / 2.0, (sy + dy) / 2.0 - 6.0);
        out.push_str(&format!(
            "<g class=\"{cls}\" data-edge=\"{src} to {dst}\"><title>{src} → {dst}: {label}, p99 {p99}, {mtls}</title><path d=\"{path}\" marker-end=\"url(#arrow)\"/><text x=\"{lx:.1}\" y=\"{ly:.1}\" text-anchor=\"middle\">{label}</text></g>",
            src = esc(&e.src),
            dst = esc(&e.dst),
            label = esc(&label),
            p99 = esc(&super::html::ms(e.p99_ms)),
            mtls = if e.mtls { "mTLS" } else { "not mTLS" },
        ));
    }
    for (i, n) in nodes.iter().enumerate() {
        let (x, y) = pos[i];
        let open = if n.href.is_empty() { String::new() } else { format!("<a href=\"{}\">", esc(&n.href)) };
        let close = if n.href.is_empty() { "" } else { "</a>" };
        out.push_str(&format!(
            "{open}<g class=\"node\" data-node=\"{id}\"><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"6\" style=\"stroke:{c}\"/><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"6\" height=\"{NODE_H}\" rx=\"2\" style=\"fill:{c}\"/><text x=\"{tx:.1}\" y=\"{ty1:.1}\" class=\"name\">{svc}</text><text x=\"{tx:.1}\" y=\"{ty2:.1}\" class=\"sub\">{ns} · {cl}</text></g>{close}",
            id = esc(&n.id),
            c = colour(&n.cluster),
            tx = x + 14.0,
            ty1 = y + 19.0,
            ty2 = y + 36.0,
            svc = esc(&n.service),
            ns = esc(&n.namespace),
            cl = esc(&n.cluster),
        ));
    }
    out.push_str("</svg>");
    let legend: String = clusters
        .iter()
        .map(|c| format!("<span class=\"legend\"><i style=\"background:{}\"></i>{}</span>", colour(c), esc(c)))
        .collect();
    format!("<div class=\"legend-row\">{legend}<span class=\"legend\"><i class=\"dash\"></i>not mTLS</span><span class=\"legend\"><i class=\"red\"></i>success &lt; 95%</span></div><div class=\"graph\">{out}</div>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, cluster: &str) -> Node {
        Node {
            id: id.into(),
            service: id.into(),
            namespace: "demo".into(),
            cluster: cluster.into(),
            href: String::new(),
        }
    }

    #[test]
    fn callers_sit_left_of_callees_and_cycles_end() {
        let nodes = vec![node("api", "east"), node("web", "east"), node("db", "west")];
        let edge = |s: &str, d: &str| Edge {
            src: s.into(),
            dst: d.into(),
            rps: Some(1.0),
            success: Some(1.0),
            p99_ms: None,
            mtls: true,
        };
        let svg = topology(&nodes, &[edge("web", "api"), edge("api", "db"), edge("db", "web")]);
        assert!(svg.contains("data-edge=\"web to api\""), "{svg}");
        assert!(svg.contains("data-node=\"db\""));
        let one = topology(&nodes[..2], &[edge("web", "api")]);
        let x = |id: &str| {
            let i = one.find(&format!("data-node=\"{id}\"")).unwrap();
            let rest = &one[i..];
            let xs = rest.find("x=\"").unwrap();
            rest[xs + 3..].split('"').next().unwrap().parse::<f64>().unwrap()
        };
        assert!(x("web") < x("api"));
    }

    #[test]
    fn sparkline_needs_two_points() {
        assert!(sparkline(&[1.0], 80, 20, "t").contains('–'));
        assert!(sparkline(&[1.0, 2.0, f64::NAN, 0.5], 80, 20, "t").contains("polyline"));
    }
}
