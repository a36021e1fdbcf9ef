//! The Host / authority parser (`hygiene::HostReading::parse`) and the raw
//! request-target readers.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rotagate_fuzz::props;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    props::host_authority(&s, data);
    let (a, b) = s.split_at(
        s.char_indices()
            .nth(s.chars().count() / 2)
            .map_or(0, |(i, _)| i),
    );
    props::host_authority(a, format!("http://{b}/x").as_bytes());
});
