//! The vault handle decoder and vault mode's request cookie split: arbitrary bytes as
//! a handle value and as a `Cookie` header, structured headers of handle / captured /
//! other cookies, and the mint → verify → tamper round trip under an active and an
//! older secret.
#![no_main]
use libfuzzer_sys::{arbitrary::Arbitrary, arbitrary::Unstructured, fuzz_target};
use rotagate_fuzz::props;

const NAMES: &[&str] = &[
    "rg",
    "__Secure-rg",
    "__Host-rg",
    "rg.0",
    "rg.1",
    "sid",
    "__Secure-sid",
    "sid.0",
    "authjs.session-token",
    "__Secure-authjs.session-token",
    "authjs.session-token.1",
    "theme",
    "RG",
    "",
];

fn run(u: &mut Unstructured<'_>) -> libfuzzer_sys::arbitrary::Result<()> {
    if u.ratio(1, 2)? {
        let mut header = String::new();
        for _ in 0..u.int_in_range(0..=12)? {
            if !header.is_empty() {
                header.push_str(u.choose(&["; ", ";", " ; ", ";;"])?);
            }
            header.push_str(u.choose(NAMES)?);
            if u.ratio(7, 8)? {
                header.push('=');
            }
            if u.ratio(1, 3)? {
                header.push_str("v1.");
            }
            header.push_str(&String::arbitrary(u)?);
        }
        props::vault_request_cookies(&header);
    } else {
        props::vault_handle_round_trip(
            bool::arbitrary(u)?,
            <[u8; 16]>::arbitrary(u)?,
            u32::arbitrary(u)?,
            <[u8; 32]>::arbitrary(u)?,
            usize::arbitrary(u)?,
            u8::arbitrary(u)?,
        );
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    props::vault_handle_any(&text);
    props::vault_request_cookies(&text);
    let _ = run(&mut Unstructured::new(data));
});
