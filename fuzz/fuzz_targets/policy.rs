//! Policies: any bytes as YAML or JSON through `parse_documents` (parse and validate), and the
//! same bytes as the `spec` of an AuthorizationPolicy, PeerAuthentication and
//! RequestAuthentication, so the fuzzer reaches their validation without having to find the
//! envelope first.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_api::resource::parse_documents;

const KINDS: [&str; 3] = ["AuthorizationPolicy", "PeerAuthentication", "RequestAuthentication"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = parse_documents(text);
    let Some((&selector, rest)) = data.split_first() else { return };
    let Ok(spec) = std::str::from_utf8(rest) else { return };
    let kind = KINDS[usize::from(selector) % KINDS.len()];
    let indented: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    let doc = format!(
        "apiVersion: weft.io/v1alpha1\nkind: {kind}\nmetadata:\n  name: fuzz\n  namespace: default\nspec:\n{indented}"
    );
    let _ = parse_documents(&doc);
});
