//! JWT: what a request's token goes through before any signature check: reading it from a
//! header / query parameter / cookie, and decoding its header and claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_proxy::jwt::fuzzing;

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = fuzzing::decode(token);
    }
    fuzzing::request(data);
});
