//! JWS verification with keys of every algorithm (HS256/384/512, RS256, PS256,
//! ES256, EdDSA; by kid, kid-less, public-only): arbitrary bytes, structured tokens
//! (fuzzed header and payload, real or fuzzed signature), and the mint → verify →
//! tamper round trip.
#![no_main]
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use libfuzzer_sys::{arbitrary::Arbitrary, arbitrary::Unstructured, fuzz_target};
use rotagate_fuzz::{json_value, props, Claims};

fn run(u: &mut Unstructured<'_>) -> libfuzzer_sys::arbitrary::Result<()> {
    match u.int_in_range(0..=1)? {
        0 => {
            let mut header = serde_json::Map::new();
            header.insert(
                "alg".into(),
                serde_json::Value::from(*u.choose(&[
                    "HS256", "HS384", "HS512", "RS256", "PS256", "ES256", "EdDSA", "none", "hs256",
                    "RS512",
                ])?),
            );
            if u.ratio(2, 3)? {
                let kid = u.choose(&["HS256", "RS256", "ES256-pub", "EdDSA", "x"])?;
                header.insert("kid".into(), serde_json::Value::from(*kid));
            }
            if u.ratio(1, 8)? {
                header.insert(String::arbitrary(u)?, json_value(u, 1)?);
            }
            let payload = Claims::arbitrary(u)?.0;
            let h = B64.encode(serde_json::Value::Object(header).to_string());
            let p = B64.encode(serde_json::Value::Object(payload).to_string());
            let sig: Vec<u8> = Vec::arbitrary(u)?;
            props::jws_any(&format!("{h}.{p}.{}", B64.encode(sig)));
        }
        _ => {
            let alg = u.int_in_range(0..=6)?;
            let claims = Claims::arbitrary(u)?.0;
            props::jws_round_trip(alg, &claims, usize::arbitrary(u)?, u8::arbitrary(u)?);
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    props::jws_any(&String::from_utf8_lossy(data));
    let _ = run(&mut Unstructured::new(data));
});
