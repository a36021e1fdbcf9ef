//! The CSRF `Origin` check and the config's origin parser.
#![no_main]
use libfuzzer_sys::{arbitrary::Arbitrary, arbitrary::Unstructured, fuzz_target};
use rotagate_fuzz::props;

fn run(u: &mut Unstructured<'_>) -> libfuzzer_sys::arbitrary::Result<()> {
    let cfg = *u.choose(&[
        "https://app.example",
        "http://app.example:8080",
        "https://APP.example:443",
        "",
        "https://[::1]:8443",
    ])?;
    let origin = if u.ratio(1, 2)? {
        format!(
            "{}{}",
            u.choose(&["https://", "http://", "HTTPS://", " https://", "null", ""])?,
            u.choose(&[
                "app.example",
                "app.example:443",
                "app.example:8080",
                "[::1]:8443",
                "evil.example",
                "app.example."
            ])?
        )
    } else {
        String::arbitrary(u)?
    };
    let site = *u.choose(&[
        "",
        "same-origin",
        "same-site",
        "cross-site",
        "none",
        " Same-Origin ",
    ])?;
    let host = *u.choose(&["", "app.example", "app.example:8080", "[::1]:8443"])?;
    props::csrf_origin(origin.as_bytes(), site.as_bytes(), cfg, host);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    props::csrf_origin(data, b"cross-site", &s, "app.example");
    props::csrf_origin(data, b"", "https://app.example", "");
    let _ = run(&mut Unstructured::new(data));
});
