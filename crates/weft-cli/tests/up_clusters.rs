//! `weft up` as linked clusters: the default east and west, `--clusters 3`, a file with
//! `clusters:`, and the refusals. Each cluster is a real control plane with its own root and trust
//! domain; the links are made with the `weft link create` / `apply` API; the demo's web in east
//! calls api in both clusters over mTLS.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `weft up` running in the background; SIGTERM and reaped however the test ends.
struct Up {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Everything read so far.
    seen: String,
}

impl Up {
    fn start(args: &[&str]) -> Up {
        let mut child =
            Command::new(WEFT).arg("up").args(args).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Up { child, lines, seen: String::new() }
    }

    /// Reads lines until one for which `f` holds (at most `max` lines; weft up bounds its own
    /// start-up and each demo request, so this cannot hang).
    fn until(&mut self, max: usize, f: impl Fn(&str) -> bool) -> String {
        for _ in 0..max {
            let line = self.lines.next().unwrap_or_else(|| panic!("weft up ended: {}", self.seen)).unwrap();
            self.seen.push_str(&line);
            self.seen.push('\n');
            if f(&line) {
                return line;
            }
        }
        panic!("no such line in {max} lines: {}", self.seen)
    }

    /// SIGTERM, then the rest of the output and whether it exited 0.
    fn stop(mut self) -> (String, bool) {
        assert!(Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap().success());
        for line in self.lines.by_ref() {
            self.seen.push_str(&line.unwrap());
            self.seen.push('\n');
        }
        let ok = self.child.wait().unwrap().success();
        (std::mem::take(&mut self.seen), ok)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// Per cluster, the `WEFT_SERVER`/`WEFT_TOKEN` of its `export` line under `cluster <name>`.
fn cluster_envs(out: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut envs = BTreeMap::new();
    let mut current = None;
    for line in out.lines() {
        if let Some(rest) = line.trim().strip_prefix("cluster ") {
            current = rest.split_whitespace().next().map(String::from);
        }
        if let (Some(rest), Some(c)) = (line.trim().strip_prefix("export "), &current) {
            let vars = rest
                .split_whitespace()
                .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                .collect();
            envs.insert(c.clone(), vars);
        }
    }
    envs
}

fn weft(env: &[(String, String)], args: &[&str]) -> Output {
    Command::new(WEFT).args(args).env_remove("WEFT_DATA_DIR").envs(env.iter().cloned()).output().unwrap()
}

#[test]
fn weft_up_runs_east_and_west_linked_and_crosses_between_them() {
    let mut up = Up::start(&["--interval", "100ms"]);
    up.until(200, |l| l.starts_with("==> demo traffic"));
    let envs = cluster_envs(&up.seen);
    assert_eq!(envs.keys().collect::<Vec<_>>(), ["east", "west"], "{}", up.seen);
    assert!(up.seen.contains("trust domain east.local") && up.seen.contains("trust domain west.local"), "{}", up.seen);

    // Each cluster lists its link to the other as active, with west's api imported into east;
    // the link goes through the peer's gateway (each cluster on its own network).
    let gateway = |cluster: &str| {
        let line = up.seen.lines().find(|l| l.trim().starts_with(&format!("cluster {cluster} "))).unwrap();
        line.split_whitespace().skip_while(|w| *w != "gateway").nth(1).unwrap().to_string()
    };
    for (me, peer) in [("east", "west"), ("west", "east")] {
        let out = weft(&envs[me], &["link", "list", "-o", "json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let links = links.as_array().unwrap();
        assert_eq!(links.len(), 1, "{links:?}");
        assert_eq!((links[0]["cluster"].as_str(), links[0]["state"].as_str()), (Some(peer), Some("active")));
        assert!(links[0]["importedServices"].as_u64() >= Some(1), "{me} imports {peer}'s api: {links:?}");
        assert_eq!(links[0]["address"].as_str(), Some(gateway(peer).as_str()), "through {peer}'s gateway: {links:?}");
        assert_eq!(links[0]["network"].as_str(), Some(peer), "{links:?}");
    }
    let out = weft(&envs["west"], &["get", "workloads", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ws: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = ws.as_array().unwrap().iter().map(|w| w["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["api-v2"], "west runs api-v2 only");

    // The demo answers from both clusters; west's api saw east's web identity.
    let crossed = "web (east) -> api-v2 (west) over mTLS: 200; api saw caller spiffe://east.local/ns/default/sa/web";
    // The demo's HTTPRoute sends 1 request in 10 to api-v2 (in west), spread evenly: within 40.
    up.until(40, |l| l.contains(crossed));
    up.until(40, |l| l.contains("web (east) -> api-v1 (east) over mTLS: 200"));
    let (out, ok) = up.stop();
    assert!(ok, "clean stop: {out}");
    assert!(out.contains("(0 failed)"), "{out}");
}

/// The demo is a GAMMA canary: web calls Service api, whose HTTPRoute (in east) sends 90 % to
/// Service api-v1 (east) and 10 % to api-v2 (west). Over 200 answers api-v2's share is about 10 %;
/// after `weft apply` of weights 0/100 (the docs' blue/green cut-over) every answer is api-v2's,
/// and no request fails across the change.
#[test]
fn weft_up_splits_api_90_10_and_cuts_over_to_v2() {
    let mut up = Up::start(&["--interval", "20ms"]);
    up.until(200, |l| l.starts_with("==> demo traffic"));
    let east = cluster_envs(&up.seen).remove("east").expect("east's export line");
    let out = weft(&east, &["get", "httproutes"]);
    let got = text(&out.stdout);
    assert!(out.status.success() && got.contains("api-split") && got.contains("Accepted=True"), "{got}");
    let out = weft(&east, &["describe", "service", "api"]);
    let described = text(&out.stdout);
    assert!(described.contains("api-v1.default 90%, api-v2.default 10%"), "{described}");
    assert!(described.contains("api-resilience"), "the route's policy: {described}");

    let answered = |l: &str| l.contains(" over mTLS: 200; ");
    let is_v2 = |l: &str| {
        let v2 = l.contains("web (east) -> api-v2 (west) ");
        assert!(
            (v2 && l.ends_with("; version v2"))
                || (l.contains("web (east) -> api-v1 (east) ") && l.ends_with("; version v1")),
            "an answer of api-v1 or api-v2, naming its version: {l}"
        );
        v2
    };
    // The route's pick is low-discrepancy (route::tests: 100 ± 3 in every 1,000), so 20 of 200
    // give or take a few; the tolerance is loose.
    let v2 = (0..200).filter(|_| is_v2(&up.until(5, answered))).count();
    assert!((10..=35).contains(&v2), "api-v2 answered {v2} of 200 (about 10 % expected): {}", up.seen);

    let dir = std::env::temp_dir().join(format!("weft-up-split-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("api-split.yaml");
    std::fs::write(
        &file,
        "apiVersion: weft.io/v1alpha1\nkind: HTTPRoute\nmetadata: { name: api-split }\nspec:\n  parentRefs: [{ name: api }]\n  rules:\n    - name: split\n      backendRefs:\n        - { name: api-v1, weight: 0 }\n        - { name: api-v2, weight: 100 }\n",
    )
    .unwrap();
    let out = weft(&east, &["apply", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    // Once web's sidecar has the new weights, every answer is api-v2's. 20 in a row mark that
    // moment (the 90/10 split never gives more than 1 in a row); bounded in answers, not time.
    let mut in_a_row = 0;
    for _ in 0..5000 {
        if in_a_row == 20 {
            break;
        }
        in_a_row = if is_v2(&up.until(5, answered)) { in_a_row + 1 } else { 0 };
    }
    assert_eq!(in_a_row, 20, "api-v2 never took every request after 0/100: {}", up.seen);
    for _ in 0..100 {
        let line = up.until(5, answered);
        assert!(is_v2(&line), "after the cut-over, api-v1 still answered: {line}");
    }
    let (out, ok) = up.stop();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok && out.contains("(0 failed)"), "no request failed across the weight change: {out}");
}

#[test]
fn weft_up_clusters_3_links_every_pair() {
    let mut up = Up::start(&["--clusters", "3", "--interval", "50ms"]);
    up.until(200, |l| l.starts_with("==> demo traffic"));
    assert!(up.seen.contains("east <-> west, east <-> c3, west <-> c3"), "{}", up.seen);
    assert_eq!(cluster_envs(&up.seen).keys().collect::<Vec<_>>(), ["c3", "east", "west"], "{}", up.seen);
    // Web's calls reach every cluster (lines read until each was seen, at most 100).
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..100 {
        if answered.len() == 3 {
            break;
        }
        // (2 lines: every 20 answers the demo prints a line with their split.)
        let line = up.until(2, |l| l.contains(" over mTLS: 200; api saw caller spiffe://east.local/"));
        for (app, cluster) in [("api-v1", "east"), ("api-v2", "west"), ("api-v3", "c3")] {
            if line.contains(&format!("web (east) -> {app} ({cluster}) over")) {
                answered.insert(cluster);
            }
        }
    }
    assert_eq!(answered.len(), 3, "web's calls reach east, west and c3: {}", up.seen);
    let (out, ok) = up.stop();
    assert!(ok && out.contains("(0 failed)"), "{out}");
}

#[test]
fn weft_up_file_places_workloads_in_its_clusters() {
    let dir = std::env::temp_dir().join(format!("weft-up-clusters-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mesh.yaml");
    std::fs::write(
        &file,
        r#"
clusters:
  - { name: east, region: eu }
  - { name: west, trustDomain: west.example.org }
services:
  - name: api
    workloads:
      - name: api-west
        cluster: west
        command: [weft, demo-app, --name, api-west, --listen, "127.0.0.1:{port}"]
        check: { http: /health, interval: 1s }
  - name: web
    workloads:
      - name: web
        command: [weft, demo-app, --name, web, --listen, "127.0.0.1:{port}", --upstream, "{upstream.api}"]
        upstreams: [api]
"#,
    )
    .unwrap();
    let mut up = Up::start(&["-f", file.to_str().unwrap()]);
    up.until(200, |l| l.contains("Ctrl-C stops everything"));
    assert!(up.seen.contains("trust domain west.example.org"), "{}", up.seen);
    // web (in east, the first cluster: no `cluster`) is printed under east with its app address.
    let (east, west) = up.seen.split_once("cluster west").expect("both clusters printed");
    assert!(east.contains("      web ") && west.contains("      api-west "), "{}", up.seen);
    let web = east.lines().find(|l| l.trim_start().starts_with("web ")).unwrap().split_whitespace().nth(2).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let out = Command::new(WEFT).args(["demo-call", web]).output().unwrap();
        let t = text(&out.stdout);
        if t.contains("\"upstream_status\":200") {
            break t;
        }
        assert!(Instant::now() < deadline, "web in east never reached api in west: {t}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(body.contains("api-west") && body.contains("spiffe://east.local/ns/default/sa/web"), "{body}");
    let (out, ok) = up.stop();
    assert!(ok, "clean stop: {out}");
}

#[test]
fn weft_up_refuses_bad_cluster_layouts() {
    let dir = std::env::temp_dir().join(format!("weft-up-bad-clusters-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mesh.yaml");
    let f = file.to_str().unwrap();
    let refused = |args: &[&str], says: &str| {
        let out = Command::new(WEFT).arg("up").args(args).output().unwrap();
        let err = text(&out.stderr);
        assert!(!out.status.success(), "accepted {args:?}");
        assert!(err.contains(says), "{args:?}: the error says {says:?}: {err}");
        assert!(!text(&out.stdout).contains("==> mesh is up"), "refused before starting anything");
    };
    refused(&["--clusters", "0"], "--clusters: 0 is not a number of clusters");
    refused(&["--clusters", "9"], "give 1 (a single cluster) to 8");
    refused(&["--netns", "--clusters", "9"], "give 1 (a single cluster) to 8");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    refused(&["--web-port", &port], "pick another --web-port");
    let service = "services:\n  - name: api\n    workloads:\n      - name: w\n        command: [x]\n";
    std::fs::write(&file, format!("clusters: [{{ name: east }}, {{ name: west }}]\n{service}        cluster: north\n"))
        .unwrap();
    refused(
        &["-f", f],
        "services[0].workloads[0].cluster: no cluster \"north\" in this file's `clusters` (known: east, west)",
    );
    std::fs::write(&file, format!("{service}        cluster: east\n")).unwrap();
    refused(
        &["-f", f],
        "services[0].workloads[0].cluster: \"east\" names a cluster, but this file has no `clusters:` list",
    );
    std::fs::write(&file, format!("clusters: [{{ name: east }}, {{ name: east }}]\n{service}")).unwrap();
    refused(&["-f", f], "clusters[1].name: \"east\" is also clusters[0]");
    std::fs::write(
        &file,
        format!("clusters: [{{ name: a, trustDomain: x.org }}, {{ name: b, trustDomain: x.org }}]\n{service}"),
    )
    .unwrap();
    refused(&["-f", f], "clusters[1].trustDomain: \"x.org\" is also the trust domain of \"a\"");
    std::fs::write(&file, format!("mesh: {{ trustDomain: x.org }}\nclusters: [{{ name: a }}]\n{service}")).unwrap();
    refused(&["-f", f], "mesh: describes one cluster");
    refused(&["-f", f, "--clusters", "2"], "lays out its own clusters");
    // A file with clusters in network namespaces is checked as one with a single cluster, before
    // anything starts.
    std::fs::write(
        &file,
        format!("clusters: [{{ name: east }}, {{ name: west }}]\n{service}        check: {{ tcp: true }}\n"),
    )
    .unwrap();
    refused(&["--netns", "-f", f], "services[0].workloads[0].check.tcp: with --netns the app port takes mTLS only");
}

/// `--data-dir` keeps each cluster's state in `<dir>/<cluster>`; the links (which point at one
/// run's ports) are removed on exit, so a second run links again, quietly, and crosses between
/// the clusters.
#[test]
fn weft_up_runs_again_on_its_data_dir() {
    let dir = std::env::temp_dir().join(format!("weft-up-clusters-dd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for run in 0..2 {
        let out = Command::new(WEFT)
            // 20 requests: the demo's route sends 1 in 10 to api-v2 in west.
            .args(["up", "--data-dir", dir.to_str().unwrap(), "--requests", "20", "--interval", "100ms"])
            .output()
            .unwrap();
        let t = text(&out.stdout);
        assert!(out.status.success(), "run {run}: {t}{}", text(&out.stderr));
        assert!(t.contains("web (east) -> api-v2 (west) over mTLS: 200"), "run {run}: {t}");
        assert!(t.contains("stopped after 20 requests (0 failed)"), "run {run}: {t}");
        // No link of this run is left to point at its ports, so the next run logs no failing link.
        let err = text(&out.stderr);
        assert!(!err.contains("link to cluster failing"), "run {run}: {err}");
    }
    assert!(dir.join("east").is_dir() && dir.join("west").is_dir(), "one directory per cluster");
    let _ = std::fs::remove_dir_all(&dir);
}
