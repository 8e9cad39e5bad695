//! Crash safety: `weft-store-torture` writes batches until it is killed with SIGKILL, at whatever
//! point it has reached; the store must then reopen with every acknowledged batch, and each batch
//! wholly present or wholly absent. Several rounds run on the same directory, so later rounds
//! also recover from a file that was killed mid-write before.

mod common;

use common::TestDir;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use weft_api::resource::{Key, Kind};
use weft_store::Store;

/// Resources per batch (one `apply`), as the torture binary writes them.
const BATCH: usize = 40;
/// Generous: a debug build on a loaded 2-core machine. The test waits for output, never sleeps.
const DEADLINE: Duration = Duration::from_secs(180);

/// What the torture binary printed: `batch <k> revision <r>`.
fn parse(line: &str) -> (u64, u64) {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["batch", k, "revision", r] => (k.parse().unwrap(), r.parse().unwrap()),
        _ => panic!("unexpected output from weft-store-torture: {line:?}"),
    }
}

#[test]
fn kill_9_at_any_point_loses_no_acknowledged_batch() {
    let dir = TestDir::new("crash");
    let mut acked = (0, 0); // the last (batch, revision) the binary printed
    let mut stored_batches = 0;
    // How many commits to see before each kill; 0 kills it while it opens (and checks) the file.
    for wait_for in [3usize, 8, 0, 1, 13, 5] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weft-store-torture"))
            .arg(dir.path())
            .arg(BATCH.to_string())
            .arg("1000000")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start weft-store-torture");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });

        let deadline = Instant::now() + DEADLINE;
        for _ in 0..wait_for {
            let line = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => line,
                Err(e) => {
                    let _ = child.kill();
                    panic!("weft-store-torture printed no commit ({e:?}); its stderr is above");
                }
            };
            acked = parse(&line);
        }
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("reap");
        assert!(!status.success(), "it was killed, not finished: {status}");
        // Lines it printed before dying are acknowledged commits too.
        reader.join().expect("reader thread");
        for line in rx.try_iter() {
            acked = parse(&line);
        }

        let (batches, revision) = check_store(dir.path());
        assert!(
            batches >= acked.0 && revision >= acked.1,
            "acknowledged batch {} at revision {} but the store has {batches} batches at \
             revision {revision}",
            acked.0,
            acked.1
        );
        assert!(batches >= stored_batches, "batches went backwards");
        stored_batches = batches;
    }
    assert!(stored_batches >= 30, "only {stored_batches} batches were written");
}

/// Opens the store and checks that it holds batches 1..=K, each whole, and nothing else.
/// Returns K and the revision.
fn check_store(dir: &Path) -> (u64, u64) {
    let store = Store::open(dir).expect("the store reopens after kill -9");
    assert!(store.quarantined().is_empty(), "{:?}", store.quarantined());
    let snapshot = store.snapshot();
    let batch_of = |key: &Key| -> u64 {
        let r = &snapshot.resources[key];
        r.metadata().labels["batch"].parse().expect("numeric batch label")
    };
    let counter = Key { kind: Kind::Service, namespace: "default".into(), name: "counter".into() };
    if !snapshot.resources.contains_key(&counter) {
        assert!(snapshot.resources.is_empty(), "resources without their batch's counter");
        return (0, snapshot.revision);
    }
    let last = batch_of(&counter);

    // batch -> (count, the versions its resources carry)
    let mut batches: BTreeMap<u64, (usize, Vec<String>)> = BTreeMap::new();
    for (key, r) in &snapshot.resources {
        let b = batch_of(key);
        assert!(b <= last, "{key} is from batch {b}, after the last batch {last}");
        let entry = batches.entry(b).or_default();
        entry.0 += 1;
        entry.1.push(r.metadata().resource_version.clone().unwrap_or_default());
        if key.kind == Kind::Workload {
            let prefix = format!("wl-{b}-");
            assert!(key.name.starts_with(&prefix), "{key} labelled batch {b}");
        }
    }
    assert_eq!(
        batches.keys().copied().collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>(),
        "every batch up to the last is present"
    );
    for (b, (count, versions)) in &batches {
        // The counter moved on to the last batch; every other batch keeps its Service and Workloads.
        let expected = if *b == last { BATCH } else { BATCH - 1 };
        assert_eq!(*count, expected, "batch {b} is partly written");
        assert!(versions.iter().all(|v| v == &versions[0]), "batch {b} was not one transaction: {versions:?}");
    }
    let last_version: u64 = batches[&last].1[0].parse().expect("numeric version");
    assert_eq!(snapshot.revision, last_version, "the revision is the last batch's");
    (last, snapshot.revision)
}
