//! A monitor with a store resumes check state on restart: a reported TTL stays passing and runs
//! on to its saved deadline, a critical check stays critical (with its output), a TTL whose
//! deadline passed while nothing ran is critical, threshold counts carry over, a changed
//! definition starts fresh, and unchanged results are not written again.
//!
//! The store here is a map in memory: the control plane's redb store is exercised end to end by
//! weft-control's `tests/health_restart.rs` and weft-cli's `tests/control.rs`.

mod support;

use std::collections::HashMap;
use std::sync::atomic::AtomicU16;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;
use weft_api::kinds::CheckSpec;
use weft_health::{CheckStateStore, Monitor, Status};

/// Saved records by check id, and how many times each id was written.
#[derive(Default)]
struct MemStore {
    rows: Mutex<HashMap<String, Vec<u8>>>,
    writes: Mutex<HashMap<String, usize>>,
}

impl CheckStateStore for MemStore {
    fn load(&self) -> Result<Vec<(String, Vec<u8>)>, String> {
        Ok(self.rows.lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn save(&self, changes: &[(String, Option<Vec<u8>>)]) -> Result<(), String> {
        let mut rows = self.rows.lock().unwrap();
        for (id, value) in changes {
            *self.writes.lock().unwrap().entry(id.clone()).or_default() += 1;
            match value {
                Some(v) => rows.insert(id.clone(), v.clone()),
                None => rows.remove(id),
            };
        }
        Ok(())
    }
}

impl MemStore {
    fn record(&self, id: &str) -> Option<serde_json::Value> {
        Some(serde_json::from_slice(self.rows.lock().unwrap().get(id)?).unwrap())
    }

    fn set_record(&self, id: &str, v: &serde_json::Value) {
        self.rows.lock().unwrap().insert(id.into(), serde_json::to_vec(v).unwrap());
    }

    fn writes(&self, id: &str) -> usize {
        self.writes.lock().unwrap().get(id).copied().unwrap_or(0)
    }
}

fn ttl(name: &str, secs: u64) -> CheckSpec {
    CheckSpec { ttl: Some(weft_api::Duration::from_secs(secs)), ..check(name) }
}

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A monitor on `store`, as a control plane makes it at start.
fn restart(store: &Arc<MemStore>) -> Monitor {
    Monitor::with_store(false, store.clone())
}

#[tokio::test(start_paused = true)]
async fn a_reported_ttl_survives_and_runs_on_to_its_saved_deadline() {
    let store = Arc::new(MemStore::default());
    let m = restart(&store);
    m.set_checks("default/api-1", vec![ttl("heartbeat", 300)]);
    m.ttl_update("default/api-1/heartbeat", Status::Passing, "all good").unwrap();
    // On disk when the report returns: nothing else had to run.
    let saved = store.record("default/api-1/heartbeat").expect("the report is saved");
    assert_eq!(saved["status"], "passing", "{saved}");
    drop(m);

    // The saved deadline is one minute away (the report was four minutes ago).
    let mut saved = store.record("default/api-1/heartbeat").unwrap();
    saved["ttlDeadlineMs"] = (unix_ms_now() + 60_000).into();
    store.set_record("default/api-1/heartbeat", &saved);

    let m = restart(&store);
    m.set_checks("default/api-1", vec![ttl("heartbeat", 300)]);
    assert_eq!(m.workload_status("default/api-1"), Some(Status::Passing));
    assert_eq!(m.checks("default/api-1")[0].1.output, "all good");
    tokio::time::advance(Duration::from_secs(50)).await;
    assert_eq!(m.workload_status("default/api-1"), Some(Status::Passing));
    // Critical at the saved deadline, not a whole TTL after the restart.
    tokio::time::advance(Duration::from_secs(15)).await;
    let checks = until_status(&m, "default/api-1", Status::Critical).await;
    assert!(checks[0].1.output.contains("TTL expired"), "{checks:?}");
}

#[tokio::test]
async fn a_ttl_whose_deadline_passed_while_down_is_critical_at_start() {
    let store = Arc::new(MemStore::default());
    let m = restart(&store);
    m.set_checks("default/api-1", vec![ttl("heartbeat", 300)]);
    m.ttl_update("default/api-1/heartbeat", Status::Passing, "all good").unwrap();
    drop(m);
    let mut saved = store.record("default/api-1/heartbeat").unwrap();
    saved["ttlDeadlineMs"] = (unix_ms_now() - 1_000).into();
    store.set_record("default/api-1/heartbeat", &saved);

    let m = restart(&store);
    m.set_checks("default/api-1", vec![ttl("heartbeat", 300)]);
    assert_eq!(m.workload_status("default/api-1"), Some(Status::Critical));
    let out = &m.checks("default/api-1")[0].1.output;
    assert!(out.contains("TTL expired") && out.contains("while the control plane was down"), "{out}");
    // A report brings it back.
    m.ttl_update("default/api-1/heartbeat", Status::Passing, "back").unwrap();
    assert_eq!(m.workload_status("default/api-1"), Some(Status::Passing));
}

#[tokio::test]
async fn a_critical_check_stays_critical_with_its_output() {
    let store = Arc::new(MemStore::default());
    let m = restart(&store);
    m.set_checks("default/api-1", vec![ttl("heartbeat", 300)]);
    m.ttl_update("default/api-1/heartbeat", Status::Passing, "fine").unwrap();
    m.ttl_update("default/api-1/heartbeat", Status::Critical, "disk full").unwrap();
    drop(m);

    let m = restart(&store);
    m.set_checks("default/api-1", vec![ttl("heartbeat", 300)]);
    let checks = m.checks("default/api-1");
    assert_eq!((checks[0].1.status, checks[0].1.output.as_str()), (Status::Critical, "disk full"));
}

#[tokio::test]
async fn a_passing_check_with_a_success_threshold_stays_passing() {
    let code = Arc::new(AtomicU16::new(200));
    let addr = status_server(code).await;
    let spec = CheckSpec {
        http: Some(format!("http://{addr}/health")),
        interval: ms(100),
        success_threshold: 3,
        ..check("http")
    };
    let store = Arc::new(MemStore::default());
    let m = restart(&store);
    m.set_checks("default/api-1", vec![spec.clone()]);
    until_status(&m, "default/api-1", Status::Passing).await;
    drop(m);

    // Without its saved state it would be critical until three more passes.
    let m = restart(&store);
    m.set_checks("default/api-1", vec![spec]);
    assert_eq!(m.workload_status("default/api-1"), Some(Status::Passing));
}

#[tokio::test]
async fn failure_counts_carry_over() {
    let code = Arc::new(AtomicU16::new(200));
    let addr = status_server(code.clone()).await;
    let spec = CheckSpec {
        http: Some(format!("http://{addr}/health")),
        interval: ms(100),
        failure_threshold: 5,
        ..check("http")
    };
    let store = Arc::new(MemStore::default());
    let m = restart(&store);
    m.set_checks("default/api-1", vec![spec.clone()]);
    until_status(&m, "default/api-1", Status::Passing).await;
    code.store(503, std::sync::atomic::Ordering::SeqCst);
    weft_testkit::eventually("a failure counted", DEADLINE, || async {
        m.checks("default/api-1")[0].1.output.contains("(failure 2 of 5").then_some(())
    })
    .await;
    drop(m);
    let saved = store.record("default/api-1/http").unwrap();
    let failures = saved["failures"].as_u64().unwrap();
    assert!((2..5).contains(&failures), "{saved}");

    let m = restart(&store);
    m.set_checks("default/api-1", vec![spec]);
    let out = m.checks("default/api-1")[0].1.output.clone();
    assert!(out.contains(&format!("(failure {failures} of 5")), "restored as saved: {out}");
    // The next failure counts on from the saved count.
    let next = format!("(failure {} of 5", failures + 1);
    weft_testkit::eventually("the count goes on", DEADLINE, || async {
        let c = &m.checks("default/api-1")[0].1;
        (c.output.contains(&next) || (failures == 4 && c.status == Status::Critical)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_changed_definition_starts_fresh_and_gone_checks_are_dropped() {
    let store = Arc::new(MemStore::default());
    let m = restart(&store);
    m.set_checks("default/api-1", vec![ttl("heartbeat", 300)]);
    m.set_checks("default/db-1", vec![ttl("alive", 300)]);
    m.ttl_update("default/api-1/heartbeat", Status::Passing, "").unwrap();
    m.ttl_update("default/db-1/alive", Status::Passing, "").unwrap();
    drop(m);

    let m = restart(&store);
    // Re-applied with another TTL: a new check.
    m.set_checks("default/api-1", vec![ttl("heartbeat", 600)]);
    assert_eq!(m.workload_status("default/api-1"), Some(Status::Critical));
    assert!(m.checks("default/api-1")[0].1.output.contains("no update"));
    // db-1 is no longer registered: its saved state goes.
    m.forget_unclaimed();
    assert!(store.record("default/db-1/alive").is_none());
    m.flush();
    let saved = store.record("default/api-1/heartbeat").unwrap();
    assert_eq!(saved["status"], "critical", "the fresh check replaced the old record: {saved}");
    // Removing a workload removes its saved state.
    m.remove("default/api-1");
    m.flush();
    assert!(store.record("default/api-1/heartbeat").is_none());
}

#[tokio::test(start_paused = true)]
async fn unchanged_results_are_not_written_again() {
    let store = Arc::new(MemStore::default());
    let m = restart(&store);
    let echo = weft_testkit::tcp_echo().await;
    let tcp = CheckSpec { tcp: Some(echo), interval: ms(100), ..check("port") };
    m.set_checks("default/api-1", vec![tcp, ttl("heartbeat", 300)]);
    until_status(&m, "default/api-1", Status::Critical).await;
    weft_testkit::eventually("the tcp check passes", DEADLINE, || async {
        (m.checks("default/api-1")[0].1.status == Status::Passing).then_some(())
    })
    .await;
    // Fifty probes that all pass, and fifty identical TTL reports at once.
    for _ in 0..50 {
        m.ttl_update("default/api-1/heartbeat", Status::Passing, "ok").unwrap();
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    m.flush();
    // Written when set (fresh), when it turned passing, perhaps once more by the writer's batch.
    assert!(store.writes("default/api-1/port") <= 3, "{}", store.writes("default/api-1/port"));
    // The first report, then what the writer batched.
    assert!(store.writes("default/api-1/heartbeat") <= 3, "{}", store.writes("default/api-1/heartbeat"));
    assert_eq!(store.record("default/api-1/heartbeat").unwrap()["status"], "passing");
}

#[tokio::test(start_paused = true)]
async fn damaged_records_start_fresh_and_a_deadline_past_the_ttl_is_capped() {
    let store = Arc::new(MemStore::default());
    store.rows.lock().unwrap().insert("default/api-1/port".into(), b"not json".to_vec());
    let m = restart(&store);
    m.set_checks("default/api-1", vec![ttl("heartbeat", 60)]);
    m.ttl_update("default/api-1/heartbeat", Status::Passing, "ok").unwrap();
    drop(m);
    assert!(store.record("default/api-1/port").is_none(), "the unreadable record was removed");
    // A deadline a year away (a clock set back, or a damaged file) counts as at most one TTL.
    let mut saved = store.record("default/api-1/heartbeat").unwrap();
    saved["ttlDeadlineMs"] = (unix_ms_now() + 365 * 86_400_000).into();
    store.set_record("default/api-1/heartbeat", &saved);
    // Times no clock can show: no panic, and the check still resumes.
    let mut extreme = saved.clone();
    extreme["spec"]["name"] = "extreme".into();
    for field in ["atMs", "criticalSinceMs", "ttlDeadlineMs"] {
        extreme[field] = u64::MAX.into();
    }
    store.set_record("default/api-1/extreme", &extreme);
    let m = restart(&store);
    m.set_checks("default/api-1", vec![ttl("heartbeat", 60), ttl("extreme", 60)]);
    assert_eq!(m.workload_status("default/api-1"), Some(Status::Passing));
    tokio::time::advance(Duration::from_secs(61)).await;
    until_status(&m, "default/api-1", Status::Critical).await;
}

#[tokio::test]
async fn a_resumed_alias_does_not_flap_while_its_target_is_not_set_yet() {
    let alias = CheckSpec { alias: Some("db-1".into()), ..check("db") };
    let store = Arc::new(MemStore::default());
    let m = restart(&store);
    m.set_checks("default/db-1", vec![ttl("alive", 300)]);
    m.set_checks("default/api-1", vec![alias.clone()]);
    m.ttl_update("default/db-1/alive", Status::Passing, "").unwrap();
    until_status(&m, "default/api-1", Status::Passing).await;
    drop(m);

    // At start, workloads are set one by one: here the alias before its target.
    let m = restart(&store);
    m.set_checks("default/api-1", vec![alias]);
    // Let the alias task run its first evaluation (current-thread runtime: it runs on a yield).
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(m.workload_status("default/api-1"), Some(Status::Passing), "{:?}", m.checks("default/api-1"));
    m.set_checks("default/db-1", vec![ttl("alive", 300)]);
    until_status(&m, "default/api-1", Status::Passing).await;
    // And it still follows its target.
    m.ttl_update("default/db-1/alive", Status::Critical, "down").unwrap();
    until_status(&m, "default/api-1", Status::Critical).await;
}
