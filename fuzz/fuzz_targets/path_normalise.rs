//! Path normalisation: fixed point, no dot segments or encoded separators, agreement
//! with RFC 3986 `remove_dot_segments` and the WHATWG URL parser (`url`).
#![no_main]
use libfuzzer_sys::{arbitrary::Unstructured, fuzz_target};
use rotagate_fuzz::{props, PathInput};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        props::path_normalise(s);
        props::path_normalise(&format!("/{s}"));
    }
    if let Ok(PathInput(p)) = Unstructured::new(data).arbitrary() {
        props::path_normalise(&p);
    }
});
