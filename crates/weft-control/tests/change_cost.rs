//! What one endpoint change costs a control plane at issue 16's scale (1,000 services and
//! 10,000 endpoints per cluster, 4 linked clusters imported): a measurement, not a timed
//! assertion. Run it with
//! `cargo test -p weft-control --test change_cost -- --ignored --nocapture` (in a debug build the
//! numbers are those of a debug build, several times a release one).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_control::catalog::{self, CatalogService, Instance};
use weft_control::federation::{Federation, Peer};
use weft_control::registry::Source;

const SERVICES: usize = 1_000;
const PER_SERVICE: usize = 10;
const LINKS: usize = 4;
const ROUNDS: usize = 5;

/// This cluster's resources: `SERVICES` Services with `PER_SERVICE` Workloads each.
fn own_resources() -> Vec<weft_api::resource::Resource> {
    let mesh =
        "apiVersion: weft.io/v1alpha1\nkind: MeshConfig\nmetadata: { name: mesh }\nspec: { cluster: { name: c0 } }\n";
    let mut out = weft_api::resource::parse_documents(mesh).unwrap();
    // One parse takes at most 1,024 documents: one per service.
    for s in 0..SERVICES {
        let mut yaml = format!(
            "---\napiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {{ name: c0-s{s:04} }}\nspec: {{ export: true, ports: [{{port: 8080}}] }}\n"
        );
        for e in 0..PER_SERVICE {
            let n = s * PER_SERVICE + e;
            yaml += &format!(
                "---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: c0-s{s:04}-{e} }}\nspec: {{ service: c0-s{s:04}, address: 10.{}.{}.{}, port: 8080 }}\n",
                n >> 16,
                (n >> 8) & 255,
                n & 255
            );
        }
        out.extend(weft_api::resource::parse_documents(&yaml).unwrap());
    }
    out
}

/// A linked cluster's export, as its link delivers it.
fn peer_services(cluster: usize, extra: usize) -> Vec<CatalogService> {
    (0..SERVICES)
        .map(|s| CatalogService {
            name: format!("c{cluster}-s{s:04}"),
            namespace: "default".into(),
            ports: vec![(8080, Default::default())],
            export: true,
            clusters: vec![format!("c{cluster}")],
            instances: (0..PER_SERVICE + if s == 0 { extra } else { 0 })
                .map(|e| Instance {
                    name: format!("c{cluster}-s{s:04}-{e}"),
                    address: format!("10.{cluster}.{}.{}:8080", s % 250, e).parse().unwrap(),
                    sidecar: format!("10.{cluster}.{}.{}:15006", s % 250, e).parse().unwrap(),
                    identity: format!("spiffe://c{cluster}.example/ns/default/sa/s{s}"),
                    cluster: format!("c{cluster}"),
                    network: String::new(),
                    locality: String::new(),
                    labels: BTreeMap::new(),
                    tags: vec![],
                    healthy: true,
                    visibility: None,
                    weight: 1,
                    mtls: Default::default(),
                })
                .collect(),
            ..Default::default()
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn one_endpoint_change_at_10k_endpoints() {
    let dir = std::env::temp_dir().join(format!("weft-change-cost-{}", std::process::id()));
    let resources = own_resources();
    // The exporter: a change of its own resources builds the catalog of them all.
    let mut builds = vec![];
    let mut own = catalog::build(0, resources.iter(), &|_| true);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        own = catalog::build(0, resources.iter(), &|_| true);
        builds.push(t.elapsed());
    }
    // The importer: LINKS linked clusters' exports, then one endpoint added in c1, per round.
    let federation = Arc::new(Federation::default());
    for c in 1..=LINKS {
        let peer = Peer { trust_domain: "x", roots: vec![], network: Default::default(), remotes: BTreeMap::new() };
        let td = format!("c{c}.example");
        federation.import_delta(&format!("c{c}"), Peer { trust_domain: &td, ..peer }, peer_services(c, 0), &[]);
    }
    let sources: Vec<Arc<dyn Source>> = vec![federation.clone()];
    let vips = weft_control::vips::Vips::open(dir.join("vips.json"));
    let mut last = step(0, &own, &sources, &vips, None);
    let mut catalogs = vec![last.clone()];
    let (mut imports, mut steps) = (vec![], vec![]);
    for round in 1..=ROUNDS {
        let changed = peer_services(1, round).swap_remove(0);
        let t = Instant::now();
        let peer =
            Peer { trust_domain: "c1.example", roots: vec![], network: Default::default(), remotes: BTreeMap::new() };
        federation.import_delta("c1", peer, vec![changed], &[]);
        imports.push(t.elapsed());
        let t = Instant::now();
        last = step(round as u64, &own, &sources, &vips, Some(&last));
        steps.push(t.elapsed());
        catalogs.push(last.clone());
    }
    let endpoints: usize = last.services.values().map(|s| s.instances.len()).sum();
    println!(
        "catalog: {} services, {endpoints} endpoints ({} own, {LINKS} links imported)",
        last.services.len(),
        SERVICES * PER_SERVICE
    );
    println!("exporter: catalog built from its {} resources: median {:?}", resources.len(), median(builds));
    println!("importer: one endpoint change applied to the link's imports: median {:?}", median(imports));
    println!("importer: catalog after it (imports merged, compared with the last): median {:?}", median(steps));

    // Per proxy (what a discovery stream does per catalog change, without its per-service render
    // cache, so an upper bound for the render): its place, visibility, inbound ports and
    // placement (four scans of the catalog), the render of its view, and the diff against the
    // last update sent. A sidecar of c0-s0000 asking for one service, and a proxy of every service.
    let (identity, ns, workload) = ("spiffe://cluster.local/ns/default/sa/default", "default", "c0-s0000-0");
    let mut scans = vec![];
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let _ = weft_control::remote::place_for(&last, None, identity, ns, workload);
        let _ = weft_control::discovery::visibility_for(&last, identity, ns, workload);
        let _ = weft_control::discovery::inbound_for(&last, identity, ns, workload);
        let _ = weft_control::discovery::placement_for(&last, identity, ns, workload);
        scans.push(t.elapsed());
    }
    println!("per proxy: place, visibility, inbound, placement: median {:?}", median(scans));
    for (what, upstreams) in [("one service", vec!["c1-s0000.default".to_string()]), ("every service", vec![])] {
        let view = weft_control::discovery::View { upstreams, ..Default::default() };
        let before = weft_control::discovery::render(&last, &view, &[]);
        let (mut renders, mut diffs) = (vec![], vec![]);
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let update = weft_control::discovery::render(&last, &view, &[]);
            renders.push(t.elapsed());
            let t = Instant::now();
            let _ = weft_control::federation::export::diff(&before.services, &update.services);
            diffs.push(t.elapsed());
        }
        println!(
            "per proxy of {what}: render (uncached) median {:?}, diff with the last update median {:?}",
            median(renders),
            median(diffs)
        );
    }
    // What a stream does: its view of each new catalog from the shared render cache, compared
    // with the last one it sent, and the delta made of it.
    for (what, upstreams) in [("one service", vec!["c1-s0000.default".to_string()]), ("every service", vec![])] {
        let view = weft_control::discovery::View { upstreams, ..Default::default() };
        let renders = weft_control::discovery::Renders::default();
        let mut sent = renders.get(&catalogs[0], &view, &[]);
        let (mut times, mut copies) = (vec![], vec![]);
        for cat in &catalogs[1..] {
            let t = Instant::now();
            let update = renders.get(cat, &view, &[]);
            let changed = !update.same_as(&sent);
            let (services, _) = update.delta_from(&sent);
            times.push(t.elapsed());
            assert!(changed && services.len() == 1, "c1-s0000 changed, in both views");
            // Before: the view's update held every service's render copied, and the stream
            // compared and diffed them by value.
            let (old, new) = (sent.full(), update.full());
            let t = Instant::now();
            let new = new.clone();
            let _ = old != new;
            let _ = weft_control::federation::export::diff(&old.services, &new.services);
            copies.push(t.elapsed());
            sent = update;
        }
        println!(
            "per proxy stream of {what}: cached render + comparison + delta: median {:?} (the copy, comparison and diff by value it replaces: {:?})",
            median(times),
            median(copies)
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The registry's step for one change (see `registry::run`).
fn step(
    revision: u64,
    own: &catalog::Catalog,
    sources: &[Arc<dyn Source>],
    vips: &weft_control::vips::Vips,
    old: Option<&catalog::Catalog>,
) -> catalog::Catalog {
    weft_control::registry::next(revision, own, sources, vips, old)
}
