//! `regex` (what the RegexSet path runs) against `fancy-regex` (the lookaround
//! fallback) on every compiled source both can compile.
#![no_main]
use libfuzzer_sys::{arbitrary::Arbitrary, arbitrary::Unstructured, fuzz_target};
use rotagate_fuzz::{next_options, paths, props, Source};

fn run(u: &mut Unstructured<'_>) -> libfuzzer_sys::arbitrary::Result<()> {
    let opts = next_options(u)?;
    let s = Source::arbitrary(u)?.0;
    let ps = paths(u, std::slice::from_ref(&s))?;
    props::regex_differential(&s, &opts, &ps);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let (src, p) = s.split_once('\t').unwrap_or((s, "/"));
        props::regex_differential(src, &Default::default(), &[p.to_string()]);
    }
    let _ = run(&mut Unstructured::new(data));
});
