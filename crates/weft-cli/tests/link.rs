//! `weft link` from the binary: two `weft control` processes with their own roots and trust
//! domains; a credential made on one is applied on the other; the link becomes active; bad
//! credentials are refused with one clear error; removal empties the list.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn weft(args: &[&str]) -> Output {
    Command::new(WEFT)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap()
}

struct Control {
    _proc: Proc,
    api: String,
    dir: PathBuf,
}

impl Control {
    fn start(cluster: &str, trust_domain: &str) -> Control {
        let dir = std::env::temp_dir().join(format!("weft-cli-link-{cluster}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let api = format!("127.0.0.1:{}", free_port());
        let grpc = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(WEFT)
            .args(["control", "--data-dir", dir.to_str().unwrap(), "--grpc", &grpc, "--api", &api, "--dns", "off"])
            .args(["--cluster", cluster, "--trust-domain", trust_domain])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        loop {
            let mut line = String::new();
            assert_ne!(reader.read_line(&mut line).unwrap(), 0, "weft control exited before it was ready");
            if line.trim_end() == "ready" {
                break;
            }
        }
        std::thread::spawn(move || for _ in reader.lines() {});
        Control { _proc: Proc(child), api, dir }
    }

    fn weft(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--server", &self.api, "--data-dir", self.dir.to_str().unwrap()]);
        weft(&all)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn link_create_apply_list_remove() {
    let west = Control::start("west", "west.example");
    let east = Control::start("east", "east.example");

    let out = west.weft(&["link", "create", "--expires", "2h"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cred = text(&out.stdout);
    assert_eq!(cred.lines().count(), 1, "one line: {cred}");
    let file = west.dir.join("west.link");
    std::fs::write(&file, &cred).unwrap();

    let out = east.weft(&["link", "apply", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("link to cluster west created"), "{}", text(&out.stdout));

    // The link becomes active (polled, with a deadline).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = east.weft(&["link", "list"]);
        let list = text(&out.stdout);
        if list.lines().any(|l| l.starts_with("west") && l.contains("active")) {
            assert!(list.contains("0/0"), "nothing exported yet: {list}");
            break;
        }
        assert!(Instant::now() < deadline, "the link never became active: {list}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Refusals: one `error:` line naming what is wrong and what to do.
    let out = east.weft(&["link", "add", cred.trim()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert!(err.contains("weft link remove west"), "{err}");
    let out = west.weft(&["link", "add", cred.trim()]);
    assert!(text(&out.stderr).contains("cannot link to itself"), "{}", text(&out.stderr));
    let out = east.weft(&["link", "add", "not-a-credential"]);
    assert!(text(&out.stderr).contains("starts with \"weftlink1.\""), "{}", text(&out.stderr));
    // `weft get links` never shows the secret.
    let out = east.weft(&["get", "links", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("(hidden)") && !text(&out.stdout).contains("wft_"), "{}", text(&out.stdout));

    let out = east.weft(&["link", "remove", "west"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = east.weft(&["link", "list"]);
    assert!(text(&out.stdout).starts_with("No links."), "{}", text(&out.stdout));
    let out = east.weft(&["link", "remove", "west"]);
    assert!(text(&out.stderr).contains("no link to cluster"), "{}", text(&out.stderr));
}

/// Polls `weft link check` on `cp` until `done` holds of its (stdout, exit success), with a deadline.
fn check_until(cp: &Control, args: &[&str], done: impl Fn(&str, bool) -> bool) -> (String, String, bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = cp.weft(args);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        if done(&stdout, out.status.success()) {
            return (stdout, stderr, out.status.success());
        }
        assert!(Instant::now() < deadline, "weft {args:?} never got there:\n{stdout}\n{stderr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn link_check_passes_a_healthy_link_and_names_the_fix_when_the_peer_is_down() {
    let west = Control::start("west-chk", "west-chk.example");
    let east = Control::start("east-chk", "east-chk.example");
    let west_grpc_dir = west.dir.clone();

    // No links: nothing to check, exit 0.
    let out = east.weft(&["link", "check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("No links."), "{}", text(&out.stdout));

    let out = west.weft(&["link", "create"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cred = text(&out.stdout);
    let out = east.weft(&["link", "add", cred.trim()]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Healthy: every check passes (stdout is not a terminal here: plain verdicts), exit 0.
    let (stdout, _, ok) = check_until(&east, &["link", "check"], |_, ok| ok);
    assert!(ok);
    for name in ["reachable", "trusted", "secret", "stream", "synced", "network"] {
        assert!(stdout.lines().any(|l| l.trim_start().starts_with(&format!("[ok] {name}:"))), "{name}: {stdout}");
    }
    assert!(stdout.starts_with("link to west-chk (127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("control marker") && stdout.contains("established"), "{stdout}");
    assert!(!stdout.contains('\u{1b}') && !stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.trim_end().ends_with("all link checks passed"), "{stdout}");
    // One link by name, and as JSON.
    let out = east.weft(&["link", "check", "west-chk", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["ok"], true, "{v}");
    assert_eq!(v[0]["checks"].as_array().unwrap().len(), 6, "{v}");
    // A link that does not exist: one error, exit 1.
    let out = east.weft(&["link", "check", "nowhere"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no link to cluster \"nowhere\""), "{}", text(&out.stderr));

    // The peer goes down: reachability fails with the fix named, trust is not checked, exit 1.
    drop(west);
    let (stdout, stderr, ok) = check_until(&east, &["link", "check"], |out, _| out.contains("[FAIL] reachable:"));
    assert!(!ok, "a failed check exits non-zero: {stdout}");
    assert!(stdout.contains("cannot connect to the peer control plane at 127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("fix: check that `weft control` runs on cluster west-chk"), "{stdout}");
    assert!(stdout.contains("[skip] trusted: not checked: the peer is unreachable"), "{stdout}");
    assert!(stderr.contains("error: link check failed: west-chk (reachable"), "{stderr}");
    let _ = std::fs::remove_dir_all(west_grpc_dir);
}

/// Polls `weft <args>` on `cp` until its stdout satisfies `done`, with a deadline.
fn stdout_until(cp: &Control, args: &[&str], done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = cp.weft(args);
        let stdout = text(&out.stdout);
        if done(&stdout) {
            return stdout;
        }
        assert!(Instant::now() < deadline, "weft {args:?} never got there:\n{stdout}\n{}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `weft link apply --namespaces`, `weft link namespaces` and, on the exporting side,
/// `weft link importers`.
#[test]
fn link_namespaces_and_importers() {
    let west = Control::start("west-ns", "west-ns.example");
    let east = Control::start("east-ns", "east-ns.example");
    let out = west.weft(&["link", "importers"]);
    assert!(text(&out.stdout).starts_with("No cluster has imported"), "{}", text(&out.stdout));

    let out = west.weft(&["link", "create"]);
    let file = west.dir.join("west.link");
    std::fs::write(&file, text(&out.stdout)).unwrap();
    // A bad namespace: one error naming it, nothing stored.
    let out = east.weft(&["link", "apply", "-f", file.to_str().unwrap(), "--namespaces", "shop,Web"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("namespaces[1]"), "{}", text(&out.stderr));
    let out = east.weft(&["link", "apply", "-f", file.to_str().unwrap(), "--namespaces", "shop,web"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = stdout_until(&east, &["link", "list"], |l| l.contains("active"));
    assert!(list.lines().any(|l| l.starts_with("west-ns") && l.contains("shop,web")), "{list}");

    let out = east.weft(&["link", "namespaces", "west-ns", "shop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("imports shop"), "{}", text(&out.stdout));
    let out = east.weft(&["link", "namespaces", "west-ns", "--all"]);
    assert!(text(&out.stdout).contains("imports every namespace"), "{}", text(&out.stdout));
    // Kept (the link task storing its stream secret meanwhile does not undo it).
    let list = stdout_until(&east, &["link", "list"], |l| l.contains("active"));
    assert!(list.lines().any(|l| l.starts_with("west-ns") && l.split_whitespace().any(|c| c == "*")), "{list}");

    // West lists east as an importer with its stream open (east's link reconnects after each
    // change of its Link, so the stream may show closed for a moment).
    let open = |l: &str| l.lines().any(|r| r.starts_with("east-ns") && r.split_whitespace().any(|c| c == "open"));
    let rows = stdout_until(&west, &["link", "importers"], open);
    assert!(rows.starts_with("CLUSTER") && rows.contains("east-ns.example"), "{rows}");
    let json = stdout_until(&west, &["link", "importers", "-o", "json"], |o| {
        serde_json::from_str::<serde_json::Value>(o).is_ok_and(|v| v[0]["streamOpen"] == true)
    });
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[0]["cluster"], "east-ns", "{v}");
}
