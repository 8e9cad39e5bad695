//! SNI: the ClientHello reader (`peek_sni`) on any first bytes, and the mesh SNI name parser on
//! any name, including what `peek_sni` found.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_proxy::sni::{peek_sni, Peek, SniTarget};

fn check_name(name: &str) {
    if let Some(t) = SniTarget::parse(name) {
        // What the mesh writes, it reads back unchanged.
        assert_eq!(SniTarget::parse(&t.to_sni()), Some(t));
    }
}

fuzz_target!(|data: &[u8]| {
    if let Peek::Sni(Some(name)) = peek_sni(data) {
        check_name(&name);
    }
    for i in 0..data.len().min(64) {
        let _ = peek_sni(&data[..i]);
    }
    check_name(&String::from_utf8_lossy(data));
});
