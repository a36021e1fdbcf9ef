//! The return-path validator and the login redirect: the output is always a
//! same-origin relative path.
#![no_main]
use libfuzzer_sys::{arbitrary::Arbitrary, arbitrary::Unstructured, fuzz_target};
use rotagate_fuzz::{props, PathInput};

fn run(u: &mut Unstructured<'_>) -> libfuzzer_sys::arbitrary::Result<()> {
    let candidate = if u.ratio(1, 2)? {
        PathInput::arbitrary(u)?.0
    } else {
        String::arbitrary(u)?
    };
    let path = PathInput::arbitrary(u)?.0;
    let query: Option<String> = Option::arbitrary(u)?;
    let base = *u.choose(&["", "/docs", "/", "//", "/\\", "/a b"])?;
    props::return_path(&candidate, &path, query.as_deref(), base);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    props::return_path(&s, &s, Some(&s), "");
    let _ = run(&mut Unstructured::new(data));
});
