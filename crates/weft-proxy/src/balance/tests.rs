use super::*;
use crate::outlier::Outcome;
use crate::Routes;
use std::collections::HashMap;
use weft_api::proxy::Service as SvcConfig;

fn places(eps: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    eps.to_vec()
}

fn members(tiers: &[Tier]) -> Vec<Vec<Vec<usize>>> {
    tiers.iter().map(|t| t.groups.iter().map(|g| g.members.clone()).collect()).collect()
}

#[test]
fn default_tiers_are_zone_then_region_then_the_rest() {
    let eps = places(&[
        ("east", "us/a"),    // 0: same cluster, same zone
        ("east", "us/b"),    // 1: same cluster, other zone
        ("west", "us/a"),    // 2: other cluster, same region
        ("central", "eu/x"), // 3: other region
        ("east", "us/a/rack1"),
    ]);
    let tiers = layout(("east", "us/a"), &eps, Policy::default());
    assert_eq!(members(&tiers), vec![vec![vec![0, 4]], vec![vec![1, 2]], vec![vec![3]]]);
    // No localities anywhere: own cluster first, then every other cluster.
    let eps = places(&[("west", ""), ("east", ""), ("central", "")]);
    assert_eq!(members(&layout(("east", ""), &eps, Policy::default())), vec![vec![vec![1]], vec![vec![0, 2]]]);
    // The proxy's own locality unknown: its cluster first (localities or not), then the rest.
    let eps = places(&[("west", "us/a"), ("east", "us/a"), ("east", "")]);
    assert_eq!(members(&layout(("east", ""), &eps, Policy::default())), vec![vec![vec![1, 2]], vec![vec![0]]]);
    // An own-cluster endpoint of unknown locality is not put behind the same region's others.
    let eps = places(&[("west", "us/a"), ("east", "")]);
    assert_eq!(members(&layout(("east", "us/a"), &eps, Policy::default())), vec![vec![vec![1]], vec![vec![0]]]);
    // Only remote endpoints: the first non-empty tier is the first tier.
    let eps = places(&[("west", "")]);
    assert_eq!(members(&layout(("east", ""), &eps, Policy::default())), vec![vec![vec![0]]]);
}

#[test]
fn failover_follows_the_list_and_leaves_out_other_clusters() {
    let eps = places(&[("central", ""), ("west", ""), ("east", ""), ("south", ""), ("west", "")]);
    let list = vec!["west".to_string(), "east".to_string(), "central".to_string()];
    let tiers =
        layout(("east", ""), &eps, Policy { failover: &list, cluster_weights: None, outlier: None, backend: None });
    assert_eq!(members(&tiers), vec![vec![vec![2]], vec![vec![1, 4]], vec![vec![0]]], "own first, listed once");
}

#[test]
fn cluster_weights_make_one_weighted_tier() {
    let eps = places(&[("east", ""), ("west", ""), ("east", ""), ("central", "")]);
    let w: BTreeMap<String, u32> = [("east".into(), 90), ("west".into(), 10), ("central".into(), 0)].into();
    let tiers =
        layout(("east", ""), &eps, Policy { failover: &[], cluster_weights: Some(&w), outlier: None, backend: None });
    assert_eq!(tiers.len(), 1);
    assert_eq!(
        tiers[0].groups,
        vec![Group { weight: 90, members: vec![0, 2] }, Group { weight: 10, members: vec![1] }]
    );
    assert_eq!(tiers[0].total_weight, 100);
}

/// The table in docs/multicluster.md ("Failover between clusters").
#[test]
fn spill_arithmetic() {
    let round = |v: Vec<f64>| v.into_iter().map(|x| (x * 100.0).round() / 100.0).collect::<Vec<_>>();
    assert_eq!(round(loads(&[(4, 4), (4, 4)])), vec![1.0, 0.0], "all healthy: all local");
    assert_eq!(round(loads(&[(4, 5), (4, 4)])), vec![1.0, 0.0], "80% × 1.4 ≥ 100%: still all local");
    assert_eq!(round(loads(&[(3, 5), (4, 4)])), vec![0.84, 0.16], "60% × 1.4 = 84%; the rest spills");
    assert_eq!(round(loads(&[(1, 4), (4, 4)])), vec![0.35, 0.65]);
    assert_eq!(round(loads(&[(0, 4), (4, 4)])), vec![0.0, 1.0], "local dead: all to the next tier");
    assert_eq!(round(loads(&[(1, 4), (1, 4), (4, 4)])), vec![0.35, 0.35, 0.3], "spills through tiers");
    assert_eq!(round(loads(&[(2, 5), (0, 4)])), vec![1.0, 0.0], "nowhere to spill: normalised to the local tier");
    assert_eq!(round(loads(&[(0, 4), (0, 4)])), vec![0.0, 0.0], "none healthy (panic: balance over tier 0)");
}

fn svc(eps: &[(&str, &str)], failover: &[&str], weights: &[(&str, u32)]) -> SvcConfig {
    let endpoints = eps
        .iter()
        .enumerate()
        .map(|(i, (cluster, locality))| weft_api::proxy::Endpoint {
            address: format!("127.0.0.1:{}", 10000 + i).parse().unwrap(),
            proxy: None,
            identity: "spiffe://cluster.local/ns/default/sa/api".into(),
            cluster: cluster.to_string(),
            network: String::new(),
            locality: locality.to_string(),
            labels: Default::default(),
            weight: 1,
            plaintext: false,
        })
        .collect();
    SvcConfig {
        name: "api".into(),
        namespace: "default".into(),
        ports: vec![],
        endpoints,
        failover: failover.iter().map(|s| s.to_string()).collect(),
        cluster_weights: weights.iter().map(|(c, w)| (c.to_string(), *w)).collect(),
        outlier_detection: None,
        routes: vec![],
        backend_policy: None,
        resilience: None,
    }
}

fn routes(s: &SvcConfig, store: &Store, outlier: &OutlierDetection) -> Routes {
    let env = Env { cluster: "east", locality: "", outlier, store };
    Routes::from_services_with(std::slice::from_ref(s), &env).unwrap()
}

/// Picks `n` times and counts answers by cluster.
fn by_cluster(r: &Routes, n: usize) -> HashMap<String, usize> {
    let s = r.service("api", "default").unwrap();
    let mut out = HashMap::new();
    let now = Instant::now();
    for _ in 0..n {
        *out.entry(s.pick_at(now).unwrap().cluster.clone()).or_default() += 1;
    }
    out
}

fn eject(r: &Routes, i: usize) {
    let s = r.service("api", "default").unwrap();
    let ep = s.endpoints[i].clone();
    let ejected = (0..10).find_map(|_| s.report(&ep, Outcome::ConnectFailure));
    assert!(ejected.is_some(), "endpoint {i} ejected");
}

#[test]
fn picks_spill_by_healthy_share_and_come_back() {
    let (store, outlier) = (Store::default(), OutlierDetection::default());
    let cfg = svc(&[("east", ""), ("east", ""), ("east", ""), ("east", ""), ("west", ""), ("west", "")], &[], &[]);
    let r = routes(&cfg, &store, &outlier);
    assert_eq!(by_cluster(&r, 1000).get("east"), Some(&1000), "nothing ejected: all local");
    eject(&r, 0);
    assert_eq!(by_cluster(&r, 1000).get("east"), Some(&1000), "3 of 4 × 1.4 > 1: still all local");
    eject(&r, 1);
    let east = by_cluster(&r, 10_000)["east"];
    assert!((6_800..=7_200).contains(&east), "2 of 4 × 1.4 = 70% local: {east}");
    eject(&r, 2);
    eject(&r, 3);
    assert_eq!(by_cluster(&r, 1000).get("west"), Some(&1000), "local all ejected: all to west");
    // A new routing table (a discovery update) keeps the ejections.
    let r2 = routes(&cfg, &store, &outlier);
    assert_eq!(by_cluster(&r2, 100).get("west"), Some(&100), "health outlives the routing table");
    // An ejected endpoint is never picked while out.
    let s = r2.service("api", "default").unwrap();
    assert!((0..100).all(|_| !s.endpoints[..4].iter().any(|e| Arc::ptr_eq(e, s.pick().unwrap()))));
}

#[test]
fn ejections_come_back_after_their_time() {
    let store = Store::default();
    let outlier = OutlierDetection { base_ejection_time: weft_api::Duration::from_millis(1), ..Default::default() };
    let cfg = svc(&[("east", ""), ("west", "")], &[], &[]);
    let r = routes(&cfg, &store, &outlier);
    eject(&r, 0);
    // Later than the 1 ms ejection: back in (pick takes the time as an argument).
    let s = r.service("api", "default").unwrap();
    let later = Instant::now() + std::time::Duration::from_millis(5);
    assert!((0..10).all(|_| s.pick_at(later).unwrap().cluster == "east"));
}

#[test]
fn max_ejection_percent_keeps_endpoints_in() {
    let store = Store::default();
    let outlier = OutlierDetection { max_ejection_percent: 50, ..Default::default() };
    let cfg = svc(&[("east", ""), ("east", ""), ("east", ""), ("east", "")], &[], &[]);
    let r = routes(&cfg, &store, &outlier);
    eject(&r, 0);
    eject(&r, 1);
    let s = r.service("api", "default").unwrap();
    let ep = s.endpoints[2].clone();
    assert!((0..20).all(|_| s.report(&ep, Outcome::ConnectFailure).is_none()), "a third of four is over 50%");
}

#[test]
fn failover_and_weights_in_picks() {
    let (store, outlier) = (Store::default(), OutlierDetection::default());
    let eps = [("east", ""), ("west", ""), ("central", ""), ("south", "")];
    let r = routes(&svc(&eps, &["central", "west"], &[]), &store, &outlier);
    eject(&r, 0);
    assert_eq!(by_cluster(&r, 100).get("central"), Some(&100), "the first listed cluster, not the nearest");
    eject(&r, 2);
    assert_eq!(by_cluster(&r, 100).get("west"), Some(&100), "then the next");
    let s = r.service("api", "default").unwrap();
    let tried = vec![s.endpoints[1].clone()];
    let other = s.pick_other(&tried, Instant::now()).unwrap();
    assert_ne!(other.cluster, "south", "a cluster the list leaves out never gets a request");

    let store = Store::default();
    let r = routes(&svc(&eps, &[], &[("east", 90), ("west", 10)]), &store, &outlier);
    let got = by_cluster(&r, 1000);
    assert_eq!((got["east"], got["west"]), (900, 100), "{got:?}");
    eject(&r, 0);
    assert_eq!(by_cluster(&r, 100).get("west"), Some(&100), "east's share goes to west while east is out");
}

#[test]
fn pick_other_skips_what_was_tried() {
    let (store, outlier) = (Store::default(), OutlierDetection::default());
    let r = routes(&svc(&[("east", ""), ("east", ""), ("west", "")], &[], &[]), &store, &outlier);
    let s = r.service("api", "default").unwrap();
    let now = Instant::now();
    let a = s.endpoints[0].clone();
    let b = s.pick_other(std::slice::from_ref(&a), now).unwrap().clone();
    assert!(!Arc::ptr_eq(&a, &b));
    let c = s.pick_other(&[a.clone(), b.clone()], now).unwrap();
    assert_eq!(c.cluster, "west", "the local tier is exhausted: the next tier");
    assert!(s.pick_other(&[a, b, c.clone()], now).is_none(), "every endpoint tried");
}

#[test]
fn a_service_outlier_setting_replaces_the_proxy_one() {
    let (store, outlier) = (Store::default(), OutlierDetection::default());
    let mut cfg = svc(&[("east", ""), ("east", "")], &[], &[]);
    cfg.outlier_detection =
        Some(weft_api::traffic::OutlierOverrides { consecutive_connect_failures: Some(1), ..Default::default() });
    let r = routes(&cfg, &store, &outlier);
    let s = r.service("api", "default").unwrap();
    let ep = s.endpoints[0].clone();
    assert!(s.report(&ep, Outcome::ConnectFailure).is_some(), "one failure is the service's threshold (proxy's: 5)");
}

#[test]
fn success_rate_outliers_are_ejected_at_the_end_of_an_interval_and_come_back() {
    use weft_api::traffic::SuccessRate;
    let store = Store::default();
    let outlier = OutlierDetection {
        consecutive_5xx: 0,
        interval: weft_api::Duration::from_millis(10),
        base_ejection_time: weft_api::Duration::from_millis(50),
        max_ejection_time: weft_api::Duration::from_millis(50),
        success_rate: Some(SuccessRate { minimum_hosts: 3, request_volume: 20, stdev_factor: 1000 }),
        ..Default::default()
    };
    let cfg = svc(&[("east", ""); 5], &[], &[]);
    let r = routes(&cfg, &store, &outlier);
    let s = r.service("api", "default").unwrap();
    let mut ejected = vec![];
    // Polled with a deadline: each round is 20 responses per endpoint, endpoint 0 failing them all;
    // the first report after an interval ends compares the rates.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while ejected.is_empty() {
        for (i, ep) in s.endpoints.iter().enumerate() {
            for _ in 0..20 {
                let status = if i == 0 { 503 } else { 200 };
                let mut seen = |e: &Endpoint, j: Ejection| ejected.push((e.address, j.reason));
                if let Some(j) = s.report_with(ep, Outcome::Status(status), &mut seen) {
                    panic!("no consecutive-error detector is on, yet {:?}", j.reason);
                }
            }
        }
        assert!(Instant::now() < deadline, "no success-rate ejection within 10s");
    }
    assert_eq!(ejected, vec![(s.endpoints[0].address, crate::outlier::REASON_SUCCESS_RATE)], "only the outlier");
    let now = Instant::now();
    assert!((0..100).all(|_| s.pick_at(now).unwrap().address != s.endpoints[0].address), "not picked while out");
    // Its time is up: back (polled with a deadline).
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let clock = store.clock;
    while s.endpoints[0].health.is_ejected(clock.ms(Instant::now())) {
        assert!(Instant::now() < deadline, "never came back");
        std::thread::yield_now();
    }
}
