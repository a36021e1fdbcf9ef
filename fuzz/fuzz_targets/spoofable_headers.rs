//! The spoofable-header name canonicaliser (`hygiene::spoofable_names`): every
//! protected name is stripped in any case and `_`/`-` spelling.
#![no_main]
use libfuzzer_sys::{arbitrary::Arbitrary, arbitrary::Unstructured, fuzz_target};
use rotagate_fuzz::props;

fn name(u: &mut Unstructured<'_>) -> libfuzzer_sys::arbitrary::Result<Vec<u8>> {
    let base: String = match u.int_in_range(0..=4)? {
        0 => format!(
            "{}{}",
            u.choose(&props::ALWAYS_PREFIXES)?,
            String::arbitrary(u)?
        ),
        1 => (*u.choose(&props::ALWAYS)?).to_string(),
        2 => (*u.choose(&props::PROXY_ONLY)?).to_string(),
        3 => (*u.choose(&props::MANAGED)?).to_string(),
        _ => return Vec::arbitrary(u),
    };
    // respell: case flips and `-` ↔ `_`
    base.bytes()
        .map(|b| {
            Ok(match (b, u8::arbitrary(u)? % 4) {
                (b'-', 0) => b'_',
                (c, 1) => c.to_ascii_uppercase(),
                (c, _) => c,
            })
        })
        .collect()
}

fn run(u: &mut Unstructured<'_>) -> libfuzzer_sys::arbitrary::Result<()> {
    let names: Vec<Vec<u8>> = (0..u.int_in_range(0..=6)?)
        .map(|_| name(u))
        .collect::<Result<_, _>>()?;
    props::spoofable(&names, bool::arbitrary(u)?);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let names: Vec<Vec<u8>> = data.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    props::spoofable(&names, false);
    props::spoofable(&names, true);
    let _ = run(&mut Unstructured::new(data));
});
