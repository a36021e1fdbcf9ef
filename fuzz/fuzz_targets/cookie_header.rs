//! The `Cookie` header parser and chunk reassembly (`session::cookies`): raw bytes
//! and structured cookie sets (family names, twins, chunk indexes).
#![no_main]
use libfuzzer_sys::{arbitrary::Unstructured, fuzz_target};
use rotagate_fuzz::{props, CookieHeader};

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    props::cookie_pairs(&raw);
    props::cookie_scan(&raw);
    if let Ok(CookieHeader(h)) = Unstructured::new(data).arbitrary() {
        props::cookie_pairs(&h);
        props::cookie_scan(&h);
    }
});
