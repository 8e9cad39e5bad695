//! Writes batches to a store until killed, for the crash test (`tests/crash.rs`).
//!
//! Usage: `weft-store-torture <dir> <batch-size> <max-batches>`
//!
//! Batch `k` is one `apply` of `batch-size` resources, every one labelled `batch: k`:
//! the Service `counter` (overwritten by every batch), the Service `svc-k`, and the Workloads
//! `wl-k-0`, `wl-k-1`, ... of `svc-k`. After each commit it prints `batch <k> revision <r>`.
//! It continues from the batch in `counter`, so runs on the same directory add up. It stops after
//! `max-batches` batches, or when stdout is closed (the test went away).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use weft_api::resource::{Key, Kind, Metadata, Object, Resource, API_VERSION, DEFAULT_NAMESPACE};
use weft_store::Store;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-store-torture: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, size, max] = args.as_slice() else {
        return Err("usage: weft-store-torture <dir> <batch-size> <max-batches>".into());
    };
    let size: usize = size.parse().ok().filter(|n| *n >= 2).ok_or("batch-size must be a number, at least 2")?;
    let max: u64 = max.parse().map_err(|_| "max-batches must be a number")?;
    let store = Store::open(&PathBuf::from(dir)).map_err(|e| e.to_string())?;
    let counter = Key { kind: Kind::Service, namespace: DEFAULT_NAMESPACE.into(), name: "counter".into() };
    let last = match store.get(&counter).map_err(|e| e.to_string())? {
        Some(r) => r
            .metadata()
            .labels
            .get("batch")
            .and_then(|b| b.parse::<u64>().ok())
            .ok_or("the counter Service has no batch label")?,
        None => 0,
    };
    let mut stdout = std::io::stdout();
    for batch in last + 1..=last + max {
        let applied = store.apply(batch_resources(batch, size)?).map_err(|e| e.to_string())?;
        let revision = applied.first().map(|a| a.version()).unwrap_or_default();
        if writeln!(stdout, "batch {batch} revision {revision}").is_err() {
            return Ok(());
        }
    }
    Ok(())
}

fn batch_resources(batch: u64, size: usize) -> Result<Vec<Resource>, String> {
    let service = format!("svc-{batch}");
    let mut objects = vec![
        object(Kind::Service, "counter", batch, serde_json::json!({})),
        object(Kind::Service, &service, batch, serde_json::json!({})),
    ];
    for i in 0..size - 2 {
        let spec = serde_json::json!({
            "service": service,
            "address": format!("10.{}.{}.{}", (batch >> 8) & 255, batch & 255, i % 256),
            "port": 8000 + (i % 1000),
        });
        objects.push(object(Kind::Workload, &format!("wl-{batch}-{i}"), batch, spec));
    }
    objects.into_iter().map(|o| Resource::try_from(o).map_err(|e| e.to_string())).collect()
}

fn object(kind: Kind, name: &str, batch: u64, spec: serde_json::Value) -> Object {
    Object {
        api_version: API_VERSION.into(),
        kind,
        metadata: Metadata {
            name: name.into(),
            namespace: DEFAULT_NAMESPACE.into(),
            labels: BTreeMap::from([("batch".to_string(), batch.to_string())]),
            resource_version: None,
            creation_revision: None,
        },
        spec,
    }
}
