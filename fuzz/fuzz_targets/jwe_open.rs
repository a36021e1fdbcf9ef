//! JWE open for Auth.js v5 (A256CBC-HS512 / A256GCM, dir) and next-auth 4 (A256GCM):
//! arbitrary bytes, structured five-part tokens, and the seal → open → tamper round
//! trip.
#![no_main]
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use libfuzzer_sys::{arbitrary::Arbitrary, arbitrary::Unstructured, fuzz_target};
use rotagate_fuzz::{props, Claims};

fn run(u: &mut Unstructured<'_>) -> libfuzzer_sys::arbitrary::Result<()> {
    match u.int_in_range(0..=1)? {
        0 => {
            let enc = u.choose(&["A256CBC-HS512", "A256GCM", "A128GCM", ""])?;
            let kid = if u.ratio(1, 2)? {
                format!(r#","kid":"{}""#, String::arbitrary(u)?.escape_default())
            } else {
                String::new()
            };
            let alg = u.choose(&["dir", "A256KW", "none"])?;
            let h = B64.encode(format!(r#"{{"alg":"{alg}","enc":"{enc}"{kid}}}"#));
            let iv: Vec<u8> = Vec::arbitrary(u)?;
            let ct: Vec<u8> = Vec::arbitrary(u)?;
            let tag: Vec<u8> = Vec::arbitrary(u)?;
            let ek = if u.ratio(1, 8)? { "x" } else { "" };
            props::jwe_any(&format!(
                "{h}.{ek}.{}.{}.{}",
                B64.encode(iv),
                B64.encode(ct),
                B64.encode(tag)
            ));
        }
        _ => {
            let claims = Claims::arbitrary(u)?.0;
            props::jwe_round_trip(
                bool::arbitrary(u)?,
                &claims,
                usize::arbitrary(u)?,
                u8::arbitrary(u)?,
            );
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    props::jwe_any(&String::from_utf8_lossy(data));
    let _ = run(&mut Unstructured::new(data));
});
