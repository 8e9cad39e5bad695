use super::*;
use crate::catalog::{Catalog, CatalogService};

fn service(ns: &str, name: &str, clusters: &[&str]) -> CatalogService {
    CatalogService {
        name: name.into(),
        namespace: ns.into(),
        instances: vec![],
        clusters: clusters.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    }
}

fn catalog(range: &str, services: Vec<CatalogService>) -> Catalog {
    let mut mesh = weft_api::kinds::MeshConfigSpec::default();
    mesh.cluster.name = "east".into();
    mesh.virtual_ips.range = range.into();
    Catalog {
        revision: 0,
        mesh,
        services: services.into_iter().map(|s| ((s.namespace.clone(), s.name.clone()), s.into())).collect(),
        ..Default::default()
    }
}

fn key(ns: &str, name: &str, cluster: &str) -> VipKey {
    (ns.into(), name.into(), cluster.into())
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("weft-vips-{}-{:?}", std::process::id(), std::thread::current().id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn one_per_spanning_service_and_per_other_clusters_mirror_none_for_local_only() {
    let vips = Vips::in_memory();
    let mut cat = catalog(
        "240.240.0.0/16",
        vec![
            service("default", "local", &["east"]),
            service("default", "web", &["east", "west"]),
            service("shop", "api", &["west", "north"]),
        ],
    );
    vips.assign(&mut cat);
    let keys: Vec<&VipKey> = cat.vips.keys().collect();
    assert_eq!(
        keys,
        vec![
            &key("default", "web", ""),
            &key("default", "web", "west"),
            &key("shop", "api", ""),
            &key("shop", "api", "north"),
            &key("shop", "api", "west"),
        ]
    );
    let distinct: BTreeSet<_> = cat.vips.values().collect();
    assert_eq!(distinct.len(), 5);
    assert!(cat.vips.values().all(|ip| ip.octets()[..2] == [240, 240]));
}

#[test]
fn with_remote_clusters_every_service_and_every_clusters_mirror_has_one() {
    let vips = Vips::in_memory();
    let mut cat = catalog(
        "240.240.0.0/16",
        vec![service("default", "local", &["east"]), service("default", "web", &["east", "edge"])],
    );
    cat.mesh.remote_clusters =
        vec![weft_api::kinds::RemoteCluster { name: "edge".into(), network: "net-edge".into(), gateways: vec![] }];
    vips.assign(&mut cat);
    let keys: Vec<&VipKey> = cat.vips.keys().collect();
    assert_eq!(
        keys,
        vec![
            &key("default", "local", ""),
            &key("default", "local", "east"),
            &key("default", "web", ""),
            &key("default", "web", "east"),
            &key("default", "web", "edge"),
        ]
    );
}

#[test]
fn addresses_survive_a_restart_and_new_names_do_not_move_old_ones() {
    let dir = tempdir();
    let path = dir.join("vips.json");
    let mut first = catalog("240.240.0.0/16", vec![service("default", "web", &["east", "west"])]);
    Vips::open(path.clone()).assign(&mut first);
    // Restarted, with more services: web keeps its addresses.
    let mut second = catalog(
        "240.240.0.0/16",
        vec![service("default", "web", &["east", "west"]), service("default", "api", &["west"])],
    );
    Vips::open(path.clone()).assign(&mut second);
    for (k, ip) in &first.vips {
        assert_eq!(second.vips.get(k), Some(ip), "{k:?}");
    }
    assert_eq!(second.vips.len(), 4);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn collisions_probe_to_the_next_free_address_and_a_full_range_reuses_names_gone() {
    let vips = Vips::in_memory();
    // A /24 holds 254: 127 services of two names each fill it.
    let many =
        |prefix: &str, n: usize| (0..n).map(|i| service("default", &format!("{prefix}{i}"), &["west"])).collect();
    let mut cat = catalog("10.99.0.0/24", many("a", 127));
    vips.assign(&mut cat);
    assert_eq!(cat.vips.len(), 254);
    assert_eq!(cat.vips.values().collect::<BTreeSet<_>>().len(), 254, "no two names share an address");
    // Another name: none free, none gone: left without (and says so).
    let mut more = many("a", 127);
    more.push(service("default", "late", &["west"]));
    let mut cat = catalog("10.99.0.0/24", more);
    vips.assign(&mut cat);
    assert_eq!(cat.vips.len(), 254);
    // The old services gone: the range is reclaimed for the new ones.
    let mut cat = catalog("10.99.0.0/24", many("b", 10));
    vips.assign(&mut cat);
    assert_eq!(cat.vips.len(), 20);
}

#[test]
fn a_new_range_reallocates_and_an_empty_range_turns_vips_off() {
    let vips = Vips::in_memory();
    let mut cat = catalog("10.98.0.0/16", vec![service("default", "web", &["west"])]);
    vips.assign(&mut cat);
    assert!(cat.vips.values().all(|ip| ip.octets()[..2] == [10, 98]));
    let mut cat = catalog("", vec![service("default", "web", &["west"])]);
    vips.assign(&mut cat);
    assert!(cat.vips.is_empty());
}

#[test]
fn an_unreadable_file_is_set_aside() {
    let dir = tempdir();
    let path = dir.join("vips.json");
    std::fs::write(&path, b"not json").unwrap();
    let mut cat = catalog("240.240.0.0/16", vec![service("default", "web", &["west"])]);
    Vips::open(path.clone()).assign(&mut cat);
    assert_eq!(cat.vips.len(), 2);
    assert!(path.with_extension("json.bad").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
