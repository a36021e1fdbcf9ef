//! The matcher compiler: any sources compile or error, never panic or hang; a
//! compiled rule set (RegexSet + leftmost-first meta regex + fancy-regex fallback)
//! answers as the sources tried one by one with fancy-regex.
#![no_main]
use libfuzzer_sys::{arbitrary::Arbitrary, arbitrary::Unstructured, fuzz_target};
use rotagate_fuzz::{next_options, paths, props, Source};

fn run(u: &mut Unstructured<'_>) -> libfuzzer_sys::arbitrary::Result<()> {
    let opts = next_options(u)?;
    let sources: Vec<String> = (0..u.int_in_range(1..=4)?)
        .map(|_| Source::arbitrary(u).map(|s| s.0))
        .collect::<Result<_, _>>()?;
    let ps = paths(u, &sources)?;
    props::matcher_compile(&sources, &opts, &ps);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        // raw bytes as one source (the corpus' lines are `source\tpath`)
        let (src, p) = s.split_once('\t').unwrap_or((s, "/"));
        props::matcher_compile(&[src.to_string()], &Default::default(), &[p.to_string()]);
    }
    let _ = run(&mut Unstructured::new(data));
});
