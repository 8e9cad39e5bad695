//! Properties of each algorithm over many picks, on real routing tables.
//!
//! Statistics: a pick is a draw from the endpoints with probability pᵢ = wᵢ / Σw; over N picks
//! endpoint i's count has mean N·pᵢ and σ = √(N·pᵢ·(1−pᵢ)). With N = 100 000 and pᵢ ≥ 0.1,
//! σ ≤ 158 (≤ 0.16 percentage points); the tolerance for the exact-share algorithms (round
//! robin, random, least request and peak EWMA with equal load, Maglev) is 1 percentage point,
//! over 6σ. The ring's own shares vary with its point count (Ketama: roughly 1/√(points per
//! endpoint) relative, 6% at the default 256 points per unit of weight), so RingHash gets 3
//! points.

use super::super::Env;
use super::*;
use crate::outlier::Store;
use crate::routes::Service;
use crate::Routes;
use std::collections::HashMap;
use std::time::Instant;
use weft_api::backend_policy::{BackendPolicy, HashOn as HashOnConfig, LoadBalancer};
use weft_api::proxy::Service as SvcConfig;
use weft_api::traffic::OutlierDetection;

fn config(weights: &[u32], algo: Algorithm) -> SvcConfig {
    let endpoints = weights
        .iter()
        .enumerate()
        .map(|(i, w)| weft_api::proxy::Endpoint {
            address: format!("10.0.0.{}:8080", i + 1).parse().unwrap(),
            proxy: None,
            identity: "spiffe://cluster.local/ns/default/sa/api".into(),
            cluster: "local".into(),
            network: String::new(),
            locality: String::new(),
            labels: Default::default(),
            weight: *w,
            plaintext: false,
        })
        .collect();
    let hashing = matches!(algo, Algorithm::RingHash | Algorithm::Maglev);
    SvcConfig {
        name: "api".into(),
        namespace: "default".into(),
        ports: vec![],
        endpoints,
        failover: vec![],
        cluster_weights: Default::default(),
        outlier_detection: None,
        routes: vec![],
        resilience: None,
        backend_policy: Some(BackendPolicy {
            name: "p".into(),
            load_balancer: Some(LoadBalancer {
                algorithm: algo,
                hash_on: hashing.then(|| HashOnConfig { header: Some("x-key".into()), ..Default::default() }),
                ring_size: None,
                table_size: None,
            }),
            connection_limits: None,
        }),
    }
}

fn service(cfg: &SvcConfig, store: &Store) -> Arc<Service> {
    let outlier = OutlierDetection::default();
    let env = Env { cluster: "local", locality: "", outlier: &outlier, store };
    let r = Routes::from_services_with(std::slice::from_ref(cfg), &env).unwrap();
    r.service("api", "default").unwrap().clone()
}

/// Picks `n` times (hashing algorithms: a fresh key each time) and counts by address.
fn shares(s: &Service, n: usize) -> HashMap<String, f64> {
    let now = Instant::now();
    let mut out: HashMap<String, f64> = HashMap::new();
    for i in 0..n {
        let key = hash64(&(i as u64).to_le_bytes(), 7);
        *out.entry(s.pick_keyed(now, Some(key)).unwrap().address.to_string()).or_default() += 1.0;
    }
    out.values_mut().for_each(|v| *v /= n as f64);
    out
}

#[test]
fn every_algorithm_honours_endpoint_weights() {
    let weights = [1, 2, 3, 4];
    for (algo, tolerance) in [
        (Algorithm::RoundRobin, 0.01),
        (Algorithm::Random, 0.01),
        (Algorithm::LeastRequest, 0.01),
        (Algorithm::PeakEwma, 0.01),
        (Algorithm::Maglev, 0.01),
        (Algorithm::RingHash, 0.03),
    ] {
        let s = service(&config(&weights, algo), &Store::default());
        let got = shares(&s, 100_000);
        for (i, w) in weights.iter().enumerate() {
            let want = f64::from(*w) / 10.0;
            let share = got.get(&format!("10.0.0.{}:8080", i + 1)).copied().unwrap_or(0.0);
            assert!(
                (share - want).abs() <= tolerance,
                "{algo:?}: endpoint {i} got {share:.4}, want {want} ± {tolerance}"
            );
        }
    }
}

#[test]
fn equal_weights_round_robin_is_exact() {
    let s = service(&config(&[1, 1, 1], Algorithm::RoundRobin), &Store::default());
    let got = shares(&s, 3000);
    assert!(got.values().all(|v| (*v - 1.0 / 3.0).abs() < 1e-9), "{got:?}");
}

/// Where each of `keys` lands.
fn placements(s: &Service, keys: &[u64]) -> Vec<String> {
    let now = Instant::now();
    keys.iter().map(|k| s.pick_keyed(now, Some(*k)).unwrap().address.to_string()).collect()
}

#[test]
fn consistent_hashing_moves_about_one_nth_of_the_keys_when_one_of_n_leaves() {
    const N: usize = 10;
    let keys: Vec<u64> = (0..20_000u64).map(|i| hash64(&i.to_le_bytes(), 3)).collect();
    for algo in [Algorithm::RingHash, Algorithm::Maglev] {
        let all = config(&[1; N], algo);
        let before = placements(&service(&all, &Store::default()), &keys);
        let mut fewer = all.clone();
        let gone = fewer.endpoints.remove(4).address.to_string();
        let after = placements(&service(&fewer, &Store::default()), &keys);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count() as f64 / keys.len() as f64;
        let on_gone = before.iter().filter(|a| **a == gone).count() as f64 / keys.len() as f64;
        // Every key of the endpoint that left must move; ideally nothing else does. 1/N = 10%.
        assert!(moved >= on_gone, "{algo:?}: the leaving endpoint's keys all move");
        let limit = match algo {
            Algorithm::RingHash => 1.0 / N as f64 * 1.3, // exactly its own keys; its share varies
            _ => 1.0 / N as f64 * 1.5,                   // Maglev trades a little disruption for balance
        };
        assert!(moved <= limit, "{algo:?}: {moved:.4} of the keys moved, expected about {:.2}", 1.0 / N as f64);
        if algo == Algorithm::RingHash {
            assert_eq!(moved, on_gone, "ring hash moves only the leaving endpoint's keys");
        }
        // And a key stays where it was from one table to the next (same endpoints).
        assert_eq!(before, placements(&service(&all, &Store::default()), &keys), "{algo:?} is stable");
    }
}

#[test]
fn a_hashing_balancer_skips_an_ejected_endpoint_and_keeps_the_others_keys() {
    let keys: Vec<u64> = (0..5000u64).map(|i| hash64(&i.to_le_bytes(), 5)).collect();
    for algo in [Algorithm::RingHash, Algorithm::Maglev] {
        let store = Store::default();
        let s = service(&config(&[1; 5], algo), &store);
        let before = placements(&s, &keys);
        let ep = s.endpoints[2].clone();
        assert!((0..10).find_map(|_| s.report(&ep, crate::outlier::Outcome::ConnectFailure)).is_some());
        let after = placements(&s, &keys);
        let gone = ep.address.to_string();
        assert!(after.iter().all(|a| *a != gone), "{algo:?}: never the ejected one");
        assert!(before.iter().zip(&after).all(|(b, a)| b == &gone || a == b), "{algo:?}: keys of the others stay put");
    }
}

#[test]
fn least_request_prefers_the_less_busy() {
    let s = service(&config(&[1, 1, 1, 1], Algorithm::LeastRequest), &Store::default());
    let busy = s.endpoints[0].clone();
    let _held: Vec<_> = (0..10).map(|_| super::super::load::Load::start(&busy.health)).collect();
    let got = shares(&s, 10_000);
    // Of two distinct candidates the idle one always wins, so the busy one is never picked.
    assert_eq!(got.get(&busy.address.to_string()), None, "{got:?}");
    // Equal load: equal shares (within 2 points over 10 000 picks: σ ≈ 0.43 points).
    drop(_held);
    let got = shares(&s, 10_000);
    assert!(got.values().all(|v| (v - 0.25).abs() < 0.02), "{got:?}");
}

#[test]
fn peak_ewma_moves_load_away_from_a_slow_endpoint() {
    let s = service(&config(&[1, 1, 1, 1], Algorithm::PeakEwma), &Store::default());
    let now = super::super::load::now_ns();
    for (i, e) in s.endpoints.iter().enumerate() {
        // One 100× slower than the others.
        e.health.load.observe(if i == 0 { 100e6 } else { 1e6 }, now);
    }
    let got = shares(&s, 10_000);
    let slow = got.get(&s.endpoints[0].address.to_string()).copied().unwrap_or(0.0);
    // With two choices it is picked only when drawn twice... which distinct draws never do.
    assert!(slow < 0.01, "the slow endpoint still took {slow:.4}");
    // Fast endpoints share the rest evenly.
    for e in &s.endpoints[1..] {
        let v = got[&e.address.to_string()];
        assert!((v - 1.0 / 3.0).abs() < 0.03, "{v}");
    }
}

#[test]
fn maglev_tables_fill_every_slot_in_proportion() {
    let eps: Vec<Arc<Endpoint>> = {
        let s = service(&config(&[1, 3], Algorithm::Maglev), &Store::default());
        s.endpoints.clone()
    };
    let t = maglev(&[0, 1], &eps, 65_537);
    assert!(t.iter().all(|&p| p < 2), "every slot is filled");
    let ones = t.iter().filter(|&&p| p == 1).count() as f64 / t.len() as f64;
    assert!((ones - 0.75).abs() < 0.001, "weight 3 of 4 takes 3/4 of the slots: {ones}");
}
