//! The re-mint path: verify a fuzzed-but-valid token, re-mint, verify again. Claims
//! are preserved and the lifetime never reaches past the rules (see
//! `props::remint`).
#![no_main]
use std::time::Duration;

use libfuzzer_sys::{arbitrary::Arbitrary, arbitrary::Unstructured, fuzz_target};
use rotagate::session::rotate::Timing;
use rotagate_fuzz::{props, Claims};

fn run(u: &mut Unstructured<'_>) -> libfuzzer_sys::arbitrary::Result<()> {
    let alg = u.int_in_range(0..=6)?;
    let claims = Claims::arbitrary(u)?.0;
    // a real clock: rotagate never runs in 1970 (see fuzz/README.md)
    let now = props::NOW.saturating_add_signed(u.int_in_range(-300_000i64..=300_000)?);
    let t = Timing {
        rotate_every: Duration::from_secs(u.int_in_range(0..=86_400)?),
        absolute_timeout: Duration::from_secs(u.int_in_range(1..=90 * 86_400)?),
        idle_timeout: if u.ratio(1, 3)? {
            Some(Duration::from_secs(u.int_in_range(1..=86_400)?))
        } else {
            None
        },
        leeway: Duration::from_secs(u.int_in_range(0..=120)?),
    };
    props::remint(alg, &claims, now, &t);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
