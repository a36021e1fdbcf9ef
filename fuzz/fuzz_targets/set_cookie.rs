//! The upstream `Set-Cookie` reader (`sets_session_cookie`): never misses a cookie a
//! browser would store under a session name.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rotagate_fuzz::props;

fuzz_target!(|data: &[u8]| {
    props::set_cookie(&String::from_utf8_lossy(data));
});
