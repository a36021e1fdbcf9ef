//! The session engine on whole `Cookie` headers (jwt, Auth.js v5, next-auth 4):
//! one truth upstream, bounded work; and a complete valid token among any other
//! cookies is always found, plain or in chunks.
#![no_main]
use libfuzzer_sys::{arbitrary::Arbitrary, arbitrary::Unstructured, fuzz_target};
use rotagate::config::TokenFormat;
use rotagate_fuzz::{props, Claims, CookieHeader, CookieItem};

const FORMATS: [TokenFormat; 3] = [TokenFormat::Jwt, TokenFormat::Authjs, TokenFormat::AuthjsV4];

fn run(u: &mut Unstructured<'_>) -> libfuzzer_sys::arbitrary::Result<()> {
    let format = *u.choose(&FORMATS)?;
    let now = props::NOW.saturating_add_signed(u.int_in_range(-100_000i64..=100_000)?);
    let may_rotate = bool::arbitrary(u)?;
    match u.int_in_range(0..=2)? {
        0 => {
            let CookieHeader(h) = CookieHeader::arbitrary(u)?;
            props::engine_on_header(format, &h, now, may_rotate);
        }
        1 => {
            // fuzzed cookies with valid tokens (chunked or not) spliced in
            let mut parts: Vec<String> = Vec::new();
            for _ in 0..u.int_in_range(0..=6)? {
                if u.ratio(1, 3)? {
                    let t = props::valid_token(format, &Claims::arbitrary(u)?.0, props::NOW);
                    let size = u.int_in_range(8..=4000)?;
                    for (k, v) in
                        rotagate::session::cookies::split(props::engine_cookie(format), &t, size)
                    {
                        parts.push(format!("{k}={v}"));
                    }
                } else {
                    let CookieItem(k, v) = CookieItem::arbitrary(u)?;
                    parts.push(format!("{k}={v}"));
                }
            }
            if u.ratio(1, 4)? && parts.len() > 1 {
                let i = u.choose_index(parts.len())?;
                let j = u.choose_index(parts.len())?;
                parts.swap(i, j);
            }
            props::engine_on_header(format, &parts.join("; "), now, may_rotate);
        }
        _ => {
            let t = props::valid_token(format, &Claims::arbitrary(u)?.0, props::NOW);
            let others = |u: &mut Unstructured<'_>| -> libfuzzer_sys::arbitrary::Result<Vec<(String, String)>> {
                (0..u.int_in_range(0..=5)?)
                    .map(|_| CookieItem::arbitrary(u).map(|c| (c.0, c.1)))
                    .collect()
            };
            let before = others(u)?;
            let after = others(u)?;
            let size = u.int_in_range(1..=5000)?;
            props::valid_token_among(format, &t, size, &before, &after);
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    props::engine_on_header(FORMATS[data.len() % 3], &raw, props::NOW, true);
    let _ = run(&mut Unstructured::new(data));
});
