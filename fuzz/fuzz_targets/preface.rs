//! Protocol detection: the client sidecar's and the server sidecar's classification of a
//! connection's first bytes, on every prefix (detection classifies after each read).
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_proxy::detect::{classify, classify_any_method, MAX_DETECT};

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(MAX_DETECT)];
    let _ = classify(data);
    let _ = classify_any_method(data);
    for i in 0..data.len().min(256) {
        let _ = classify(&data[..i]);
        let _ = classify_any_method(&data[..i]);
    }
});
