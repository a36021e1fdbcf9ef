//! `x-rotagate-claims` (the app's claims for vault mode) and the claims read from a
//! captured app cookie: arbitrary bytes, and structured claims serialised as an app
//! would.
#![no_main]
use libfuzzer_sys::{arbitrary::Arbitrary, arbitrary::Unstructured, fuzz_target};
use rotagate_fuzz::{props, Claims};

fuzz_target!(|data: &[u8]| {
    props::vault_claims(data);
    if let Ok(c) = Claims::arbitrary(&mut Unstructured::new(data)) {
        props::vault_claims_round_trip(&c.0);
    }
});
