//! What applying one control-plane update costs a proxy that receives every service at issue
//! 16's scale (5 clusters × 1,000 services × 10 endpoints): a measurement, not a timed
//! assertion. Run it with
//! `cargo test -p weft-proxy --test update_cost -- --ignored --nocapture` (a debug build's
//! numbers are several times a release build's).

use std::collections::HashMap;
use std::time::{Duration, Instant};
use weft_api::pb;
use weft_proxy::routes::Routes;

const CLUSTERS: usize = 5;
const SERVICES: usize = 1_000;
const PER_SERVICE: usize = 10;
const ROUNDS: usize = 5;

fn service(c: usize, s: usize, extra: usize) -> pb::Service {
    pb::Service {
        name: format!("c{c}-s{s:04}"),
        namespace: "default".into(),
        endpoints: (0..PER_SERVICE + extra)
            .map(|e| pb::Endpoint {
                address: format!("10.{c}.{}.{}:8080", s % 250, e + 10 * (s / 250)),
                proxy: format!("10.{c}.{}.{}:15006", s % 250, e + 10 * (s / 250)),
                identity: format!("spiffe://c{c}.example/ns/default/sa/s{s}"),
                cluster: format!("c{c}"),
                weight: 1,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn one_endpoint_change_at_50k_endpoints() {
    let all: Vec<pb::Service> = (0..CLUSTERS).flat_map(|c| (0..SERVICES).map(move |s| service(c, s, 0))).collect();
    let update = pb::ProxyUpdate { services: all, ..Default::default() };
    let (outlier, store) = (Default::default(), Default::default());
    let env = weft_proxy::balance::Env { cluster: "c0", locality: "", outlier: &outlier, store: &store };
    let no_policies = HashMap::new();
    let full = |u: &pb::ProxyUpdate| {
        let services = weft_proxy::control::services_from(u).unwrap();
        Routes::from_services_in(&services, &env, &no_policies).unwrap().with_names("c0", &[])
    };
    let mut prev = full(&update);
    let keys: Vec<String> = update.services.iter().map(|s| format!("{}.{}", s.name, s.namespace)).collect();
    let (mut fulls, mut deltas, mut tables) = (vec![], vec![], vec![]);
    for round in 1..=ROUNDS {
        let mut u = update.clone();
        u.services[SERVICES] = service(1, 0, round);
        // Before: every update is made whole and every service built again.
        let t = Instant::now();
        let _ = full(&u);
        fulls.push(t.elapsed());
        // After: a delta of the one changed service, built on top of the last table.
        let delta = pb::ProxyUpdate { services: vec![u.services[SERVICES].clone()], ..Default::default() };
        let t = Instant::now();
        let changed = weft_proxy::control::services_from(&delta).unwrap();
        let table = Routes::from_changes(&prev, &keys, &changed, &env, &no_policies).unwrap();
        tables.push(t.elapsed());
        let next = table.with_names_from("c0", &[], &prev);
        deltas.push(t.elapsed());
        prev = next;
    }
    println!("proxy with {} services, {} endpoints", keys.len(), keys.len() * PER_SERVICE);
    println!("full update (convert + build every service + names): median {:?}", median(fulls));
    println!("delta of one service (convert + build it + indexes + names): median {:?}", median(deltas));
    println!("… of which the table without the name index: median {:?}", median(tables));
}
