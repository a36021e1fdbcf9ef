//! The config loader: any bytes are a config or a located error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rotagate_fuzz::props;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        props::config_load(s);
    }
});
