//! Next's `server-reference-manifest.json` reader, and the action index built from it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rotagate_fuzz::props;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        props::manifest(s);
    }
});
