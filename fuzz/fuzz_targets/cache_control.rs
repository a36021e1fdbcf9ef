//! The `Cache-Control` rewriter: the rewritten response is never storable by a
//! shared cache.
#![no_main]
use libfuzzer_sys::{arbitrary::Arbitrary, arbitrary::Unstructured, fuzz_target};
use rotagate_fuzz::props;

fn run(u: &mut Unstructured<'_>) -> libfuzzer_sys::arbitrary::Result<()> {
    const D: &[&str] = &[
        "public",
        "private",
        "no-store",
        "no-cache",
        "max-age=60",
        "s-maxage=60",
        "must-understand",
        "private=\"set-cookie\"",
        "PUBLIC",
        "\"",
        "\\",
        ",",
        " ",
        "immutable",
    ];
    let mut values = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        let mut v = String::new();
        for i in 0..u.int_in_range(0..=4)? {
            if i > 0 {
                v.push_str(", ");
            }
            if u.ratio(4, 5)? {
                v.push_str(u.choose(D)?)
            } else {
                v.push_str(&String::arbitrary(u)?)
            }
        }
        values.push(v.into_bytes());
    }
    props::cache_control(
        u16::arbitrary(u)?,
        &values,
        bool::arbitrary(u)?,
        bool::arbitrary(u)?,
    );
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let status = data.first().map_or(200, |b| u16::from(*b) * 2);
    let values: Vec<Vec<u8>> = data.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    props::cache_control(status, &values, data.len() % 2 == 0, data.len() % 3 == 0);
    let _ = run(&mut Unstructured::new(data));
});
