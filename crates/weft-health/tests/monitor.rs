//! The Monitor: initial status, TTL reports, aliases, thresholds, replacement and removal,
//! change notifications and `expired()`.

mod support;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use support::*;
use weft_api::kinds::CheckSpec;
use weft_health::{HealthError, Monitor, Status};

fn ttl(name: &str, secs: u64) -> CheckSpec {
    CheckSpec { ttl: Some(weft_api::Duration::from_secs(secs)), ..check(name) }
}

fn tcp(name: &str, addr: std::net::SocketAddr) -> CheckSpec {
    CheckSpec { tcp: Some(addr), interval: ms(100), ..check(name) }
}

#[tokio::test]
async fn checks_start_critical_and_workloads_without_checks_pass() {
    let m = Monitor::new();
    let echo = weft_testkit::tcp_echo().await;
    m.set_checks("default/api-1", vec![tcp("port", echo)]);
    m.set_checks("default/idle", vec![]);
    assert_eq!(m.workload_status("default/idle"), Some(Status::Passing));
    assert_eq!(m.workload_status("default/nobody"), None);
    assert!(m.checks("default/nobody").is_empty());
    let checks = until_status(&m, "default/api-1", Status::Passing).await;
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].0, "port");
    assert_eq!(
        m.workloads(),
        [("default/api-1".to_string(), Status::Passing), ("default/idle".to_string(), Status::Passing)]
    );
}

#[tokio::test]
async fn ttl_reports_and_expiry() {
    let m = Monitor::new();
    m.set_checks("default/api-1", vec![ttl("heartbeat", 1), tcp("port", weft_testkit::tcp_echo().await)]);
    // Critical until first reported, whatever the other check says.
    let checks = m.checks("default/api-1");
    assert_eq!(checks[0].1.status, Status::Critical);
    assert!(checks[0].1.output.contains("no update"), "{checks:?}");
    assert_eq!(m.workload_status("default/api-1"), Some(Status::Critical));

    let mut changes = m.subscribe();
    changes.borrow_and_update();
    m.ttl_update("default/api-1/heartbeat", Status::Passing, "all good").unwrap();
    assert_eq!(m.checks("default/api-1")[0].1.status, Status::Passing);
    assert_eq!(m.checks("default/api-1")[0].1.output, "all good");
    until_status(&m, "default/api-1", Status::Passing).await;
    assert!(changes.has_changed().unwrap());

    m.ttl_update("default/api-1/heartbeat", Status::Warning, "slow").unwrap();
    assert_eq!(m.workload_status("default/api-1"), Some(Status::Warning));
    m.ttl_update("default/api-1/heartbeat", Status::Passing, "ok again").unwrap();

    // Silent for the TTL: critical.
    let checks = until_status(&m, "default/api-1", Status::Critical).await;
    assert!(checks[0].1.output.contains("TTL expired"), "{checks:?}");

    // A report brings it back.
    m.ttl_update("default/api-1/heartbeat", Status::Passing, "").unwrap();
    assert_eq!(m.checks("default/api-1")[0].1.status, Status::Passing);

    assert_eq!(
        m.ttl_update("default/api-1/nope", Status::Passing, ""),
        Err(HealthError::NotFound("default/api-1/nope".into()))
    );
    assert_eq!(m.ttl_update("nothing", Status::Passing, ""), Err(HealthError::NotFound("nothing".into())));
    assert_eq!(
        m.ttl_update("default/api-1/port", Status::Passing, ""),
        Err(HealthError::NotTtl("default/api-1/port".into()))
    );
}

#[tokio::test]
async fn check_names_with_slashes_still_resolve() {
    let m = Monitor::new();
    m.set_checks("default/api-1", vec![ttl("svc/ready", 60)]);
    m.ttl_update("default/api-1/svc/ready", Status::Passing, "").unwrap();
    assert_eq!(m.workload_status("default/api-1"), Some(Status::Passing));
}

#[tokio::test]
async fn alias_mirrors_another_workload() {
    let m = Monitor::new();
    // The target's health is driven by a TTL check the test reports.
    m.set_checks("default/db-1", vec![ttl("alive", 60)]);
    // Same name in another namespace, passing: must not be what the alias reads.
    m.set_checks("other/db-1", vec![]);
    let alias = CheckSpec { alias: Some("db-1".into()), interval: ms(10_000), ..check("db") };
    m.set_checks("default/api-1", vec![alias]);

    let first = weft_testkit::eventually("the alias to run", DEADLINE, || async {
        m.checks("default/api-1").pop().filter(|(_, r)| r.output.contains("alias of default/db-1"))
    })
    .await;
    assert_eq!(first.1.status, Status::Critical, "{first:?}");

    // Changes propagate at once (the interval is 10 s): the alias watches the monitor.
    m.ttl_update("default/db-1/alive", Status::Passing, "").unwrap();
    until_status(&m, "default/api-1", Status::Passing).await;
    m.ttl_update("default/db-1/alive", Status::Warning, "").unwrap();
    until_status(&m, "default/api-1", Status::Warning).await;
    m.ttl_update("default/db-1/alive", Status::Passing, "").unwrap();
    until_status(&m, "default/api-1", Status::Passing).await;

    m.remove("default/db-1");
    let checks = until_status(&m, "default/api-1", Status::Critical).await;
    assert!(checks[0].1.output.contains("no such workload"), "{checks:?}");
}

#[tokio::test]
async fn aliases_of_each_other_do_not_spin() {
    let m = Monitor::new();
    let alias = |to: &str| CheckSpec { alias: Some(to.into()), interval: ms(100), ..check("peer") };
    m.set_checks("default/a", vec![alias("b")]);
    m.set_checks("default/b", vec![alias("a")]);
    m.set_checks("default/c", vec![alias("c")]);
    // They start critical and stay so; nothing panics or loops forever.
    for w in ["default/a", "default/b", "default/c"] {
        let (_, r) = weft_testkit::eventually("the alias to run", DEADLINE, || async {
            m.checks(w).pop().filter(|(_, r)| r.output.starts_with("alias of"))
        })
        .await;
        assert_eq!(r.status, Status::Critical, "{w}: {r:?}");
    }
}

/// Polls the single check of `workload`, recording every distinct (status, output) seen, until
/// it shows `target`.
async fn watch_until(m: &Monitor, workload: &str, target: Status) -> Vec<(Status, String)> {
    let mut seen: Vec<(Status, String)> = Vec::new();
    weft_testkit::eventually(&format!("{workload} to be {target}"), DEADLINE, || {
        let now = m.checks(workload).pop().map(|(_, r)| (r.status, r.output));
        if let Some(now) = now.clone() {
            if seen.last() != Some(&now) {
                seen.push(now);
            }
        }
        async move { (now?.0 == target).then_some(()) }
    })
    .await;
    seen
}

#[tokio::test]
async fn failure_threshold_needs_three_failures() {
    let code = Arc::new(AtomicU16::new(200));
    let addr = status_server(code.clone()).await;
    let m = Monitor::new();
    let spec = CheckSpec {
        http: Some(format!("http://{addr}/health")),
        interval: ms(500),
        failure_threshold: 3,
        ..check("http")
    };
    m.set_checks("default/api-1", vec![spec]);
    until_status(&m, "default/api-1", Status::Passing).await;

    code.store(500, Ordering::SeqCst);
    let seen = watch_until(&m, "default/api-1", Status::Critical).await;
    let note = |n: u32| format!("failure {n} of 3 before critical");
    for n in [1, 2] {
        let at = seen
            .iter()
            .find(|(_, out)| out.contains(&note(n)))
            .unwrap_or_else(|| panic!("never saw {:?}: {seen:#?}", note(n)));
        assert_eq!(at.0, Status::Passing, "{seen:#?}");
    }
    let (status, last) = seen.last().unwrap();
    assert_eq!(*status, Status::Critical);
    assert!(last.contains("500") && !last.contains(" of 3 "), "{seen:#?}");
    // Nothing turned critical before the third failure.
    let first_critical = seen.iter().position(|(s, _)| *s == Status::Critical).unwrap();
    assert_eq!(first_critical, seen.len() - 1, "{seen:#?}");
}

#[tokio::test]
async fn success_threshold_needs_two_passes() {
    let code = Arc::new(AtomicU16::new(200));
    let addr = status_server(code).await;
    let m = Monitor::new();
    let spec = CheckSpec {
        http: Some(format!("http://{addr}/health")),
        interval: ms(500),
        success_threshold: 2,
        ..check("http")
    };
    m.set_checks("default/api-1", vec![spec]);
    let seen = watch_until(&m, "default/api-1", Status::Passing).await;
    let at = seen
        .iter()
        .find(|(_, out)| out.contains("success 1 of 2 before passing"))
        .unwrap_or_else(|| panic!("never saw the first success: {seen:#?}"));
    assert_eq!(at.0, Status::Critical, "{seen:#?}");
    let first_passing = seen.iter().position(|(s, _)| *s == Status::Passing).unwrap();
    assert_eq!(first_passing, seen.len() - 1, "{seen:#?}");
}

#[tokio::test]
async fn set_checks_replaces_and_remove_forgets() {
    let m = Monitor::new();
    let mut changes = m.subscribe();
    let closed = closed_port().await;
    m.set_checks("default/api-1", vec![tcp("old", closed)]);
    assert!(changes.has_changed().unwrap());
    changes.borrow_and_update();
    until_status(&m, "default/api-1", Status::Critical).await;

    let echo = weft_testkit::tcp_echo().await;
    m.set_checks("default/api-1", vec![tcp("new", echo)]);
    let checks = until_status(&m, "default/api-1", Status::Passing).await;
    assert_eq!(checks.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), ["new"]);
    assert!(changes.has_changed().unwrap());
    changes.borrow_and_update();

    m.remove("default/api-1");
    assert_eq!(m.workload_status("default/api-1"), None);
    assert!(m.checks("default/api-1").is_empty());
    assert!(changes.has_changed().unwrap());
    // Removing what is not there is fine.
    m.remove("default/api-1");
}

#[tokio::test]
async fn subscribers_see_status_changes() {
    let m = Monitor::new();
    m.set_checks("default/api-1", vec![ttl("heartbeat", 60)]);
    let mut changes = m.subscribe();
    changes.borrow_and_update();
    let waiter = tokio::spawn(async move {
        changes.changed().await.unwrap();
        *changes.borrow()
    });
    m.ttl_update("default/api-1/heartbeat", Status::Passing, "").unwrap();
    let generation = tokio::time::timeout(DEADLINE, waiter).await.unwrap().unwrap();
    assert!(generation > 0);
}

#[tokio::test]
async fn expired_lists_workloads_critical_too_long() {
    let m = Monitor::new();
    let echo = weft_testkit::tcp_echo().await;
    let after = Some(weft_api::Duration::from_millis(300));
    m.set_checks("default/up", vec![CheckSpec { deregister_critical_after: after, ..tcp("port", echo) }]);
    until_status(&m, "default/up", Status::Passing).await;
    m.set_checks(
        "default/down",
        vec![CheckSpec { deregister_critical_after: after, ..tcp("port", closed_port().await) }],
    );
    // Critical, but without deregister_critical_after: never expires.
    m.set_checks("default/kept", vec![tcp("port", closed_port().await)]);
    weft_testkit::eventually("default/down to expire", DEADLINE, || async {
        (m.expired() == ["default/down"]).then_some(())
    })
    .await;
    assert_eq!(m.workload_status("default/up"), Some(Status::Passing));
}

#[tokio::test]
async fn bad_specs_never_panic() {
    let m = Monitor::new();
    m.set_checks(
        "default/odd",
        vec![
            check("no-probe"),
            CheckSpec { http: Some("http://[::1".into()), interval: ms(0), ..check("bad-url") },
            CheckSpec { script: Some(vec![]), ..check("empty-script") },
            CheckSpec { alias: Some(String::new()), ..check("empty-alias") },
            CheckSpec { ttl: Some(weft_api::Duration::from_millis(0)), ..check("zero-ttl") },
        ],
    );
    let checks = until_status(&m, "default/odd", Status::Critical).await;
    assert_eq!(checks.len(), 5);
    weft_testkit::eventually("every odd check to have run", DEADLINE, || async {
        m.checks("default/odd").iter().all(|(_, r)| r.output != "not run yet").then_some(())
    })
    .await;
    assert!(m.ttl_update("default/odd/", Status::Passing, "").is_err());
    assert!(m.ttl_update("/", Status::Passing, "").is_err());
    assert!(m.ttl_update("", Status::Passing, "").is_err());
}

#[tokio::test]
async fn script_checks_run_only_when_allowed() {
    let dir = std::env::temp_dir().join(format!("weft-health-scripts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let script = |name: &str| {
        let mark = dir.join(name);
        let cmd = format!("echo ran > {}", mark.display());
        CheckSpec { script: Some(vec!["sh".into(), "-c".into(), cmd]), interval: ms(100), ..check(name) }
    };
    let off = Monitor::new();
    off.set_checks("default/off", vec![script("off")]);
    let on = Monitor::with_script_checks(true);
    on.set_checks("default/on", vec![script("on")]);
    until_status(&on, "default/on", Status::Passing).await;
    assert!(dir.join("on").exists());
    // By now the refused check would have run too: it has no task, and says why.
    let checks = off.checks("default/off");
    assert_eq!(checks[0].1.status, Status::Critical);
    assert_eq!(checks[0].1.output, weft_health::SCRIPT_CHECKS_OFF);
    assert!(!dir.join("off").exists(), "a refused script never runs");
    assert_eq!(off.workload_status("default/off"), Some(Status::Critical));
}

#[test]
fn outside_a_runtime_checks_are_critical_and_say_why() {
    let m = Monitor::new();
    m.set_checks("default/api-1", vec![ttl("heartbeat", 60)]);
    let checks = m.checks("default/api-1");
    assert_eq!(checks[0].1.status, Status::Critical);
    assert!(checks[0].1.output.contains("Tokio runtime"), "{checks:?}");
}

/// A workload without checks, before and after, changes nothing a watcher reads (it is routable
/// whatever its status): its registration and removal do not bump the watch, so a registry does
/// not rebuild its catalog a second time for it. Checks added or dropped do.
#[tokio::test]
async fn a_workload_without_checks_does_not_bump_the_watch() {
    let m = Monitor::new();
    let mut changes = m.subscribe();
    changes.borrow_and_update();
    m.set_checks("default/api-1", vec![]);
    assert!(!changes.has_changed().unwrap());
    m.remove("default/api-1");
    assert!(!changes.has_changed().unwrap());
    m.set_checks("default/api-1", vec![ttl("heartbeat", 1)]);
    assert!(changes.has_changed().unwrap());
    changes.borrow_and_update();
    m.set_checks("default/api-1", vec![]);
    assert!(changes.has_changed().unwrap(), "its checks dropped");
}
