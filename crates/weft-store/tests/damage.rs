//! Damaged files: whatever bytes are in `weft.redb`, `open` returns the store or an error.

mod common;

use common::TestDir;
use std::sync::atomic::{AtomicUsize, Ordering};
use weft_api::resource::parse_documents;
use weft_store::{Store, StoreError};

const RESOURCES: &str = "
apiVersion: weft.io/v1alpha1
kind: Service
metadata: { name: api }
---
apiVersion: weft.io/v1alpha1
kind: Workload
metadata: { name: api-1 }
spec: { service: api, address: 10.0.0.5, port: 8080 }
";

#[test]
fn flipped_bytes_anywhere_never_panic() {
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    let dir = TestDir::new("damage");
    {
        let store = Store::open(dir.path()).unwrap();
        for _ in 0..3 {
            let mut rs = parse_documents(RESOURCES).unwrap();
            for r in &mut rs {
                r.metadata_mut().labels.insert("n".into(), store.revision().to_string());
            }
            store.apply(rs).unwrap();
        }
    }
    let file = dir.path().join(weft_store::FILE_NAME);
    let good = std::fs::read(&file).unwrap();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        eprintln!("panic: {info}");
    }));
    let mut refused = 0;
    let mut try_open = |bytes: &[u8]| {
        std::fs::write(&file, bytes).unwrap();
        match Store::open(dir.path()) {
            Ok(_) => {}
            Err(StoreError::Storage(message)) => {
                assert!(message.contains("weft.redb"), "{message}");
                refused += 1;
            }
            Err(e) => panic!("open failed with a non-storage error: {e:?}"),
        }
    };
    // A flipped byte at ~120 places, including the header and each page.
    for offset in (0..good.len()).step_by((good.len() / 120).max(1)) {
        let mut bad = good.clone();
        bad[offset] ^= 0x5a;
        try_open(&bad);
    }
    // Cut short, as by a copy that did not finish.
    for len in [1, 8, 64, 512, 4096, good.len() / 2, good.len() - 1] {
        try_open(&good[..len]);
    }
    std::panic::set_hook(previous);
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a damaged file made the store panic");
    assert!(refused > 0, "a damaged header is refused");
}
