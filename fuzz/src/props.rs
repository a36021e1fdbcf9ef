//! The invariants of rotagate's parsers (issue 14), as plain functions that panic when
//! one does not hold. The fuzz targets (`fuzz/fuzz_targets/`) call them on libFuzzer's
//! inputs; the proptests in `tests/properties.rs` include this file (`#[path]`) and
//! call them on proptest's, so CI checks the same properties on every change.
//!
//! Depends only on rotagate and crates rotagate already uses (plus `url`, the WHATWG
//! URL parser, as the second opinion on paths and origins).

#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

use rotagate::config::{
    CookieAttributes, Csrf, KeySpec, Origin, Reissue, SameSite, Session, SessionMode, TokenFormat,
};
use rotagate::matcher::{self, path, pattern, MatcherSpec, NextOptions, RequestParts, RuleSet};
use rotagate::secret::Secret;
use rotagate::session::authjs::{AuthjsCodec, Version};
use rotagate::session::cookies::{self, Family, Part, Prefix};
use rotagate::session::jwt::KeySet;
use rotagate::session::rotate::{self, Timing};
use rotagate::session::{Outcome, SessionEngine};

// ------------------------------------------------------------------------------------
// fixtures: keys of every algorithm, engines

/// HMAC secret of the HS* keys.
pub const HS_SECRET: &[u8] = b"fuzz-hmac-secret-0123456789-abcdefghijklmnopqrstuvwxyz";
/// Auth.js secret of the JWE codecs.
pub const AUTHJS_SECRET: &[u8] = b"fuzz-authjs-secret-0123456789abcdef";
/// The fixed "now" of the engines (2026-11-01, the harness' `T0`).
pub const NOW: u64 = 1_793_491_200;

const RSA: &[u8] = include_bytes!("../keys/rsa.pem");
const RSA_PUB: &[u8] = include_bytes!("../keys/rsa.pub.pem");
const EC: &[u8] = include_bytes!("../keys/ec.pem");
const EC_PUB: &[u8] = include_bytes!("../keys/ec.pub.pem");
const ED: &[u8] = include_bytes!("../keys/ed25519.pem");
const ED_PUB: &[u8] = include_bytes!("../keys/ed25519.pub.pem");

/// Every algorithm rotagate pins.
pub const ALGS: [&str; 7] = [
    "HS256", "HS384", "HS512", "RS256", "PS256", "ES256", "EdDSA",
];

fn spec(alg: &str, kid: Option<&str>, public_only: bool) -> KeySpec {
    let (private, public) = match alg {
        "RS256" | "PS256" => (RSA, RSA_PUB),
        "ES256" => (EC, EC_PUB),
        "EdDSA" => (ED, ED_PUB),
        _ => (&b""[..], &b""[..]),
    };
    let hs = alg.starts_with("HS");
    KeySpec {
        kid: kid.map(str::to_string),
        alg: alg.to_string(),
        secret: hs.then(|| Secret::new(HS_SECRET)),
        private_key_pem: (!hs && !public_only).then(|| Secret::new(private)),
        public_key_pem: (!hs && public_only).then(|| public.to_vec()),
        origin: format!("fuzz.{alg}"),
    }
}

/// One signing key set per algorithm (kid = the alg's name): `signers()[i]` mints
/// with `ALGS[i]`.
pub fn signers() -> &'static [KeySet] {
    static S: OnceLock<Vec<KeySet>> = OnceLock::new();
    S.get_or_init(|| {
        ALGS.iter()
            .map(|a| KeySet::from_specs(&[spec(a, Some(a), false)]).expect("fixture key"))
            .collect()
    })
}

/// A verifying key set with every algorithm: by kid (the alg's name), plus kid-less
/// HS256 and public-only RS256/ES256/EdDSA keys (kid `<alg>-pub`).
pub fn verifier() -> &'static KeySet {
    static V: OnceLock<KeySet> = OnceLock::new();
    V.get_or_init(|| {
        let mut specs: Vec<KeySpec> = ALGS.iter().map(|a| spec(a, Some(a), false)).collect();
        specs.push(spec("HS256", None, false));
        for a in ["RS256", "ES256", "EdDSA"] {
            specs.push(spec(a, Some(&format!("{a}-pub")), true));
        }
        KeySet::from_specs(&specs).expect("fixture keys")
    })
}

/// Auth.js codecs: v5 for `authjs.session-token` (and its `__Secure-` twin), v4 for
/// `next-auth.session-token`.
pub fn authjs(v: Version) -> &'static AuthjsCodec {
    static V5: OnceLock<AuthjsCodec> = OnceLock::new();
    static V4: OnceLock<AuthjsCodec> = OnceLock::new();
    let (cell, names) = match v {
        Version::V5 => (
            &V5,
            ["authjs.session-token", "__Secure-authjs.session-token"],
        ),
        Version::V4 => (
            &V4,
            [
                "next-auth.session-token",
                "__Secure-next-auth.session-token",
            ],
        ),
    };
    cell.get_or_init(|| {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        AuthjsCodec::new(v, &[Secret::new(AUTHJS_SECRET)], &names).expect("fixture codec")
    })
}

/// The session timing of the engines.
pub const TIMING: Timing = Timing {
    rotate_every: Duration::from_secs(300),
    absolute_timeout: Duration::from_secs(12 * 3600),
    idle_timeout: None,
    leeway: Duration::from_secs(30),
};

/// The cookie name of engine `format`.
pub fn engine_cookie(format: TokenFormat) -> &'static str {
    match format {
        TokenFormat::Jwt => "session",
        TokenFormat::Authjs => "authjs.session-token",
        TokenFormat::AuthjsV4 => "next-auth.session-token",
    }
}

/// A session engine of each format (HS256 for jwt, small chunks so chunk sets appear).
pub fn engine(format: TokenFormat) -> &'static SessionEngine {
    static E: OnceLock<Vec<SessionEngine>> = OnceLock::new();
    let all = E.get_or_init(|| {
        [TokenFormat::Jwt, TokenFormat::Authjs, TokenFormat::AuthjsV4]
            .into_iter()
            .map(|f| {
                let s = Session {
                    rotate_every: TIMING.rotate_every,
                    absolute_timeout: TIMING.absolute_timeout,
                    idle_timeout: None,
                    leeway: TIMING.leeway,
                    mode: SessionMode::Reissue(Reissue {
                        cookie: engine_cookie(f).to_string(),
                        format: f,
                        attributes: CookieAttributes {
                            path: "/".into(),
                            domain: None,
                            secure: false,
                            http_only: true,
                            same_site: SameSite::Lax,
                        },
                        chunk_size: 64,
                        keys: vec![spec("HS256", Some("HS256"), false)],
                        secrets: vec![Secret::new(AUTHJS_SECRET)],
                        require_exp: true,
                        issuer: None,
                        audience: None,
                    }),
                };
                SessionEngine::new(&s).expect("fixture engine")
            })
            .collect()
    });
    &all[match format {
        TokenFormat::Jwt => 0,
        TokenFormat::Authjs => 1,
        TokenFormat::AuthjsV4 => 2,
    }]
}

// ------------------------------------------------------------------------------------
// Cookie header and chunk reassembly

/// `pairs_bounded`: bounded, trimmed, no separators; a prefix of the unbounded parse.
pub fn cookie_pairs(header: &str) {
    let all = cookies::pairs(header);
    for (k, v) in &all {
        assert!(!k.is_empty());
        assert!(!k.contains(';') && !k.contains('=') && !v.contains(';'));
        for s in [k, v] {
            assert!(!s.starts_with([' ', '\t']) && !s.ends_with([' ', '\t']));
        }
    }
    for max in [0, 1, 3, cookies::MAX_COOKIES] {
        let (some, more) = cookies::pairs_bounded(header, max);
        assert!(some.len() <= max);
        assert_eq!(some[..], all[..some.len()]);
        assert_eq!(more, all.len() > max);
    }
}

/// Families the cookie properties are checked with: the jwt default, and Auth.js
/// (loose: read with and without the `__Secure-` prefix).
pub fn families() -> [Family; 2] {
    [
        Family::new("session", false),
        Family::new("authjs.session-token", true),
    ]
}

/// `scan` and `rewrite`: candidates are family members in chunk order and bounded; the
/// rewritten header has no family member left and keeps every other cookie in order.
pub fn cookie_scan(header: &str) {
    let pairs = cookies::pairs(header);
    for family in families() {
        for read in [
            &[Prefix::None][..],
            &[Prefix::Secure, Prefix::None][..],
            &Prefix::ALL[..],
        ] {
            let scan = cookies::scan(&pairs, &family, read);
            assert!(scan.candidates.len() <= cookies::MAX_CANDIDATES);
            assert!(scan.members <= pairs.len());
            for c in &scan.candidates {
                assert!(c.name < read.len());
                let cs = c.cookies();
                assert!(!cs.is_empty());
                let mut joined = String::new();
                for (i, (k, v)) in cs.iter().enumerate() {
                    let m = family
                        .member(k)
                        .expect("a candidate is made of family cookies");
                    assert_eq!(m.prefix, read[c.name]);
                    assert!(!v.is_empty(), "an empty value holds no token");
                    if cs.len() > 1 || m.part != Part::Plain {
                        assert_eq!(m.part, Part::Chunk(i), "chunks in order from 0");
                    }
                    joined.push_str(v);
                }
                assert_eq!(c.token(), joined);
                assert_eq!(c.too_many_chunks, cs.len() > cookies::MAX_CHUNKS);
            }
            let rest: Vec<(&str, &str)> = pairs
                .iter()
                .copied()
                .filter(|(k, _)| family.member(k).is_none())
                .collect();
            let out = cookies::rewrite(&pairs, &family, &[]);
            match &out {
                None => assert!(rest.is_empty()),
                Some(v) => assert_eq!(cookies::pairs(v), rest),
            }
        }
    }
}

/// The engine on any `Cookie` header: never panics; one truth upstream (the upstream
/// sees exactly one token, and it verifies, or no cookie of the family at all); the
/// work stays bounded.
pub fn engine_on_header(format: TokenFormat, header: &str, now: u64, may_rotate: bool) {
    let e = engine(format);
    let d = e.process(Some(header), now, may_rotate);
    assert!(d.set_cookies.len() <= 2 * cookies::MAX_CHUNKS + 2 * cookies::MAX_CANDIDATES + 4);
    let forwarded: Option<String> = match &d.upstream_cookie {
        None => Some(header.to_string()),
        Some(v) => v.clone(),
    };
    let fwd = forwarded.unwrap_or_default();
    let (fwd_pairs, _) = cookies::pairs_bounded(&fwd, cookies::MAX_COOKIES);
    let members = fwd_pairs
        .iter()
        .filter(|(k, _)| e.family().member(k).is_some())
        .count();
    match d.outcome {
        Outcome::Valid | Outcome::Rotated => {
            let claims = d.claims.as_ref().expect("a valid session has claims");
            assert!(members >= 1);
            // the forwarded cookies are one token that verifies, with these claims
            // (at the same instant, without rotating again)
            let again = e.process(Some(&fwd), now, false);
            assert_eq!(again.outcome, Outcome::Valid, "forwarded token must verify");
            assert_eq!(again.claims.as_deref(), Some(&**claims));
            if !cookies::pairs_bounded(&fwd, cookies::MAX_COOKIES).1 {
                assert!(again.upstream_cookie.is_none(), "nothing left to remove");
            }
        }
        Outcome::None | Outcome::Invalid(_) => {
            assert!(d.claims.is_none());
            if d.upstream_cookie.is_some() || members > 0 {
                // whatever the family sent is not forwarded as if valid
                assert_eq!(members, 0, "an unverified token went upstream");
            }
        }
    }
}

/// A valid token of `format` for claims at `now` (iat now, exp in an hour).
pub fn valid_token(format: TokenFormat, extra: &Map<String, Value>, now: u64) -> String {
    let mut c = extra.clone();
    c.insert("sub".into(), Value::from("user-1"));
    c.insert("iat".into(), Value::from(now));
    c.insert("exp".into(), Value::from(now + 3600));
    for k in ["nbf", "auth_time", rotate::RG_AUTH_TIME] {
        c.remove(k);
    }
    engine(format)
        .seal(&c, engine_cookie(format))
        .expect("fixture seals")
}

/// A request whose only session cookie is one complete valid token (plain or chunked,
/// among other cookies) has a valid session, whatever the other cookies are.
pub fn valid_token_among(
    format: TokenFormat,
    token: &str,
    chunk_size: usize,
    before: &[(String, String)],
    after: &[(String, String)],
) {
    let e = engine(format);
    let name = engine_cookie(format);
    let others = |v: &[(String, String)]| -> Vec<(String, String)> {
        v.iter()
            .filter(|(k, v)| {
                let k = k.trim_matches([' ', '\t']);
                !k.is_empty()
                    && !k.contains([';', '='])
                    && !v.contains(';')
                    && e.family().member(k).is_none()
            })
            .cloned()
            .collect()
    };
    let mut all = others(before);
    all.extend(cookies::split(name, token, chunk_size.max(1)));
    all.extend(others(after));
    if all.len() > cookies::MAX_COOKIES {
        return;
    }
    let header = all
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let d = e.process(Some(&header), NOW, false);
    if cookies::split(name, token, chunk_size.max(1)).len() > cookies::MAX_CHUNKS {
        assert_ne!(d.outcome, Outcome::Valid);
        return;
    }
    assert_eq!(
        d.outcome,
        Outcome::Valid,
        "a complete valid token is a session"
    );
    engine_on_header(format, &header, NOW, true);
}

// ------------------------------------------------------------------------------------
// JWS and JWE

/// Any token: verify never panics, and what verifies has an `alg` one of the keys pins.
pub fn jws_any(token: &str) {
    let _ = verifier().verify(token);
    for s in signers() {
        let _ = s.verify(token);
    }
}

/// Mint with every algorithm, verify (by each signer and by the all-keys verifier)
/// to the same claims; a token changed in any byte never verifies.
pub fn jws_round_trip(alg: usize, claims: &Map<String, Value>, flip: usize, to: u8) {
    let signer = &signers()[alg % ALGS.len()];
    let Some(token) = signer.mint(claims) else {
        panic!("minting with a fixture key failed")
    };
    assert_eq!(signer.verify(&token).as_ref(), Ok(claims));
    assert_eq!(verifier().verify(&token).as_ref(), Ok(claims));
    let mut bytes = token.clone().into_bytes();
    let i = flip % bytes.len();
    if bytes[i] != to {
        bytes[i] = to;
        if let Ok(t) = String::from_utf8(bytes) {
            assert!(signer.verify(&t).is_err(), "a changed token verified");
            assert!(verifier().verify(&t).is_err(), "a changed token verified");
        }
    }
}

/// Any token under any name: open never panics.
pub fn jwe_any(token: &str) {
    for v in [Version::V5, Version::V4] {
        let c = authjs(v);
        for name in [
            "authjs.session-token",
            "__Secure-authjs.session-token",
            "next-auth.session-token",
            "other",
        ] {
            let _ = c.open(token, name);
        }
    }
}

/// Seal and open (v5 and v4) to the same claims; a token changed in any byte never
/// opens.
pub fn jwe_round_trip(v5: bool, claims: &Map<String, Value>, flip: usize, to: u8) {
    let (v, name) = if v5 {
        (Version::V5, "authjs.session-token")
    } else {
        (Version::V4, "next-auth.session-token")
    };
    let c = authjs(v);
    let token = c.seal(claims, name).expect("fixture seals");
    assert_eq!(c.open(&token, name).as_ref(), Ok(claims));
    let mut bytes = token.into_bytes();
    let i = flip % bytes.len();
    if bytes[i] != to {
        bytes[i] = to;
        if let Ok(t) = String::from_utf8(bytes) {
            assert!(c.open(&t, name).is_err(), "a changed JWE opened");
        }
    }
}

// ------------------------------------------------------------------------------------
// the re-mint path

fn num(c: &Map<String, Value>, k: &str) -> Option<u64> {
    c.get(k).and_then(|v| {
        v.as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
    })
}

/// Verify a valid token, re-mint it, verify again: the claims other than the times
/// and `jti` are preserved; the new lifetime never reaches past the token's first
/// issue + `absolute_timeout`, nor past now + the token's own lifetime, nor (for a
/// token without `iat`) past its own `exp`; the re-mint is valid at `now`.
pub fn remint(alg: usize, claims: &Map<String, Value>, now: u64, t: &Timing) {
    let signer = &signers()[alg % ALGS.len()];
    let Some(token) = signer.mint(claims) else {
        return;
    };
    let Ok(verified) = signer.verify(&token) else {
        panic!("a freshly minted token did not verify")
    };
    assert_eq!(&verified, claims);
    if rotate::check_times(&verified, now, t).is_err() {
        return;
    }
    let (next, lifetime) = rotate::reissue(&verified, now, t, false);
    let token2 = signer.mint(&next).expect("re-mint");
    let again = signer.verify(&token2).expect("the re-mint verifies");
    assert_eq!(again, next);
    for (k, v) in claims {
        if !["iat", "exp", "jti", rotate::RG_AUTH_TIME].contains(&k.as_str()) {
            assert_eq!(next.get(k), Some(v), "claim {k} changed");
        }
    }
    assert_eq!(num(&next, "iat"), Some(now));
    let absolute = t.absolute_timeout.as_secs();
    let first_before = rotate::first_issued(claims);
    let first_after = rotate::first_issued(&next).expect("a re-mint has a first issue time");
    if let Some(f) = first_before {
        assert!(first_after <= f, "the first issue time moved later");
    }
    match (num(claims, "exp"), lifetime) {
        (None, l) => {
            assert_eq!(l, None);
            assert!(!next.contains_key("exp"));
        }
        (Some(exp), Some(l)) => {
            let new_exp = num(&next, "exp").expect("exp kept");
            assert_eq!(new_exp, now + l);
            assert!(
                new_exp <= first_after.saturating_add(absolute).max(now),
                "past absolute"
            );
            match num(claims, "iat") {
                Some(iat) => assert!(l <= exp.saturating_sub(iat), "lifetime extended"),
                None => assert!(new_exp <= exp.max(now), "past the token's own exp"),
            }
        }
        (Some(_), None) => panic!("a token with exp re-minted without a lifetime"),
    }
    // valid at now unless its lifetime ran out exactly now (exp == now is in leeway)
    let checked = rotate::check_times(&next, now, t);
    if lifetime.is_none_or(|l| l > 0) {
        assert_eq!(checked, Ok(()), "the re-mint is invalid at now");
    }
}

// ------------------------------------------------------------------------------------
// paths

/// RFC 3986 §5.2.4 `remove_dot_segments`, as written in the RFC (input buffer, output
/// buffer, the five rules), on a path whose dot segments are literal.
pub fn remove_dot_segments(input: &str) -> String {
    let mut inp = input.to_string();
    let mut out = String::new();
    while !inp.is_empty() {
        if let Some(r) = inp.strip_prefix("../") {
            inp = r.to_string();
        } else if let Some(r) = inp.strip_prefix("./") {
            inp = r.to_string();
        } else if inp.starts_with("/./") {
            inp.replace_range(..3, "/");
        } else if inp == "/." {
            inp = "/".into();
        } else if inp.starts_with("/../") {
            inp.replace_range(..4, "/");
            truncate_last_segment(&mut out);
        } else if inp == "/.." {
            inp = "/".into();
            truncate_last_segment(&mut out);
        } else if inp == "." || inp == ".." {
            inp.clear();
        } else {
            let start = usize::from(inp.starts_with('/'));
            let end = inp[start..].find('/').map_or(inp.len(), |i| i + start);
            out.push_str(&inp[..end]);
            inp.replace_range(..end, "");
        }
    }
    out
}

fn truncate_last_segment(out: &mut String) {
    match out.rfind('/') {
        Some(i) => out.truncate(i),
        None => out.clear(),
    }
}

/// Dot segments spelled with `%2E` turned into literal dots (RFC 3986 §6.2.2.2: `%2E`
/// is `.`), so the RFC's algorithm sees them.
fn literal_dots(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for (i, seg) in p.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let lower = seg.to_ascii_lowercase();
        match lower.as_str() {
            "%2e" => out.push('.'),
            ".%2e" | "%2e." | "%2e%2e" => out.push_str(".."),
            _ => out.push_str(seg),
        }
    }
    out
}

fn segments_are_clean(p: &str) {
    for seg in p.split('/') {
        let l = seg.to_ascii_lowercase();
        assert!(
            !matches!(l.as_str(), "." | ".." | "%2e" | ".%2e" | "%2e." | "%2e%2e"),
            "dot segment left in {p:?}"
        );
    }
    let l = p.to_ascii_lowercase();
    assert!(!l.contains("%2f") && !l.contains("%5c") && !l.contains("%00"));
    assert!(!p.contains('\\'));
}

/// Bytes whose meaning in a path every parser agrees on (no encoding the WHATWG parser
/// would add, no `?`/`#`): the inputs on which rotagate and `url` must agree.
fn url_neutral(p: &str) -> bool {
    p.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@%/".contains(&b))
}

/// Path normalisation: the result is a fixed point, starts with `/`, has no dot
/// segment and no encoded `/`, `\` or NUL; it agrees with RFC 3986
/// `remove_dot_segments` and with the WHATWG URL parser (`url`) on every path both
/// accept; lenient reading is a superset of strict.
pub fn path_normalise(raw: &str) {
    let strict = path::normalise_with(raw, path::Strictness::Strict);
    let lenient = path::normalise_with(raw, path::Strictness::Lenient);
    if let Ok(s) = &strict {
        assert_eq!(lenient.as_ref().ok().map(|l| &l.forward), Some(&s.forward));
        assert_eq!(s.matching, None);
    }
    let Ok(n) = lenient else { return };
    for p in [&n.forward, n.matching()] {
        assert!(p.starts_with('/'), "{p:?}");
        segments_are_clean(p);
    }
    let again = path::normalise_with(&n.forward, path::Strictness::Lenient)
        .expect("a normalised path is accepted again");
    assert_eq!(again.forward, n.forward, "not a fixed point: {raw:?}");
    if strict.is_ok() {
        assert_eq!(path::normalise(&n.forward).as_ref(), Ok(&n.forward));
    }
    // RFC 3986 §5.2.4 on the path with its %2E dot segments made literal
    let rfc = remove_dot_segments(&literal_dots(raw));
    let rfc = if rfc.is_empty() { "/".to_string() } else { rfc };
    assert_eq!(
        literal_dots(&n.forward),
        rfc,
        "differs from remove_dot_segments: {raw:?}"
    );
    // WHATWG: the path component of http://h<raw>. The `url` crate (2.5) never pops a
    // segment that looks like a Windows drive letter (`/a/e:/..` stays `/a/e:/`), which
    // the URL Standard does only for `file:` URLs: such paths are left out
    let drive_letter = |s: &str| {
        let b = s.as_bytes();
        b.len() == 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
    };
    if url_neutral(raw) && !raw.split('/').any(drive_letter) {
        if let Ok(u) = url::Url::parse(&format!("http://h{raw}")) {
            assert_eq!(
                u.path(),
                n.forward,
                "differs from the WHATWG URL parser: {raw:?}"
            );
        }
    }
    if let Some(d) = path::decoded(&n.forward) {
        assert_ne!(d, n.forward);
    }
}

// ------------------------------------------------------------------------------------
// Host / authority

/// The Host parser: a host reads back to itself through its authority, is lower-case
/// without a trailing dot, and is spelled by exactly its authority. Also the raw
/// request-target readers.
pub fn host_authority(raw: &str, target: &[u8]) {
    use rotagate::hygiene::{self, HostReading};
    match HostReading::parse(raw) {
        HostReading::Host(h) => {
            assert!(!h.name.is_empty());
            assert_eq!(h.name, h.name.to_ascii_lowercase());
            let a = h.authority();
            assert!(h.is_spelled(a.as_bytes()), "{a:?} not spelled");
            assert_eq!(HostReading::parse(&a), HostReading::Host(h.clone()));
            assert!(HeaderValue::from_str(&a).is_ok());
            // no byte of a host can end a header or smuggle a path or userinfo
            assert!(!a.contains(['/', '?', '#', '@', ' ', '\r', '\n', '\\']));
        }
        HostReading::Missing => assert!(raw.trim().is_empty()),
        HostReading::Invalid => {}
    }
    let ok = hygiene::request_target_ok(target);
    if let Some(a) = hygiene::absolute_form_authority(target) {
        assert!(!a.contains(['/', '?', '#']));
    }
    if ok && target.first() != Some(&b'/') {
        assert!(hygiene::absolute_form_authority(target).is_some());
    }
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(raw) {
        headers.insert(http::header::HOST, v);
    }
    let _ = hygiene::request_host(target, None, &headers);
}

// ------------------------------------------------------------------------------------
// matcher

/// What `first_match` must answer, computed the slow way: every wrapped source
/// compiled alone with `fancy_regex`, tried in rule order on the path and its decoded
/// form. `None` when an engine gave up (backtracking limit) or cannot compile.
fn oracle_first_match(
    sources: &[String],
    opts: &NextOptions,
    path_: &str,
) -> Option<Option<usize>> {
    let decoded = path::decoded(path_);
    for (i, s) in sources.iter().enumerate() {
        let js =
            pattern::js_semantics(&pattern::compile_source(&matcher::next_wrap(s, opts)).ok()?);
        let js = if opts.case_insensitive {
            format!("(?i){js}")
        } else {
            js
        };
        let re = fancy_regex::Regex::new(&js).ok()?;
        for p in std::iter::once(path_).chain(decoded.as_deref()) {
            if re.is_match(p).ok()? {
                return Some(Some(i));
            }
        }
    }
    Some(None)
}

/// The matcher compiler: any sources either compile or error (never panic); a compiled
/// set answers every path as the sources tried one by one do.
pub fn matcher_compile(sources: &[String], opts: &NextOptions, paths: &[String]) {
    for s in sources {
        if let Ok(tokens) = pattern::parse(s) {
            let _ = pattern::to_regex_source(&tokens);
        }
    }
    let specs: Vec<MatcherSpec> = sources
        .iter()
        .map(|s| MatcherSpec {
            sources: vec![matcher::SourceSpec {
                source: s.clone(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    let Ok(rules) = RuleSet::build(&specs, opts) else {
        return;
    };
    let headers = HeaderMap::new();
    for p in paths {
        let req = RequestParts {
            method: "GET",
            host: Some("example.com"),
            path: p,
            query: None,
            headers: &headers,
        };
        let got = rules.first_match(&req);
        let _ = rules.explain(&req);
        if let Some(want) = oracle_first_match(sources, opts, p) {
            assert_eq!(
                got, want,
                "rule set and one-by-one fancy-regex differ on {p:?}"
            );
        }
    }
    let _ = rules.unreachable_rules();
}

/// `regex` (the `RegexSet` path) and `fancy-regex` (the lookaround fallback) agree on
/// every compiled source both can compile, for every path.
pub fn regex_differential(source: &str, opts: &NextOptions, paths: &[String]) {
    let Ok(js) = pattern::compile_source(&matcher::next_wrap(source, opts)) else {
        return;
    };
    let js = pattern::js_semantics(&js);
    let (Ok(fast), Ok(fancy)) = (regex::Regex::new(&js), fancy_regex::Regex::new(&js)) else {
        return;
    };
    let set = regex::RegexSet::new([&js]).expect("a regex that compiles is a set");
    // an empty lookahead in front makes fancy-regex run its own backtracking VM (with
    // the regex crate only for the pieces it delegates), not hand the whole to `regex`
    let vm = fancy_regex::Regex::new(&format!("(?=){js}")).ok();
    for p in paths {
        let a = fast.is_match(p);
        assert_eq!(
            set.is_match(p),
            a,
            "RegexSet and Regex differ on {js:?} / {p:?}"
        );
        if let Ok(b) = fancy.is_match(p) {
            assert_eq!(a, b, "regex and fancy-regex differ on {js:?} / {p:?}");
        }
        if let Some(vm) = &vm {
            if let Ok(b) = vm.is_match(p) {
                assert_eq!(a, b, "regex and fancy-regex's VM differ on {js:?} / {p:?}");
            }
        }
    }
}

// ------------------------------------------------------------------------------------
// config, manifest

/// The config loader: any text is a config or an error with at least one problem,
/// each located within the text (line 0 = no position) and naming the file.
pub fn config_load(text: &str) {
    let file = std::path::Path::new("/nonexistent/rotagate-fuzz/rotagate.toml");
    match rotagate::config::parse(text, file) {
        Ok(_) => {}
        Err(e) => {
            assert!(!e.problems.is_empty(), "an error without a problem");
            let lines = text.split('\n').count();
            for p in &e.problems {
                assert!(
                    p.line <= lines + 1,
                    "line {} past the text ({lines})",
                    p.line
                );
                assert!(!p.message.is_empty());
            }
            let shown = e.to_string();
            assert!(shown.starts_with(file.to_str().unwrap_or_default()));
        }
    }
}

/// The manifest reader: any text is a list of actions or an error, and the list feeds
/// the action index without panicking.
pub fn manifest(text: &str) {
    let Ok(actions) = rotagate::config::parse_manifest(text) else {
        return;
    };
    let mut ids: Vec<&String> = actions.iter().map(|(i, _)| i).collect();
    ids.sort();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "an action listed twice");
    for (_, entries) in &actions {
        for e in entries {
            let _ = rotagate::actions::entry_segments(e);
        }
    }
    let rules = RuleSet::build(
        &[MatcherSpec {
            sources: vec![matcher::SourceSpec {
                source: "/premium/:path*".into(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        &NextOptions::default(),
    )
    .expect("fixture rule");
    let index = rotagate::actions::ActionIndex::build(&actions, &rules, &|_| true, "", &[]);
    for (id, _) in &actions {
        assert_ne!(index.lookup(id), rotagate::actions::Lookup::Unknown);
    }
}

// ------------------------------------------------------------------------------------
// return path

fn same_origin(out: &str) {
    assert!(rotagate::config::is_same_origin_path(out), "{out:?}");
    let base = url::Url::parse("https://app.example/base/page").expect("base");
    let u = base.join(out).expect("a relative path joins");
    assert_eq!(u.origin(), base.origin(), "{out:?} leaves the origin");
    assert_eq!(u.username(), "");
    assert!(u.password().is_none());
}

/// The return-path validator: its output is always a same-origin relative path (by
/// rotagate's rule and by the WHATWG parser), and survives the login URL round trip.
pub fn return_path(candidate: &str, path_: &str, query: Option<&str>, base_path: &str) {
    let safe = rotagate::logout::safe_return_to(candidate);
    same_origin(&safe);
    let out = rotagate::logout::return_path(path_, query, base_path);
    same_origin(&out);
    let cfg = rotagate::config::Logout {
        login_url: "/login".into(),
        return_to_param: "callbackUrl".into(),
        endpoint: "/.rotagate/logout".into(),
        allow_get: false,
        after_logout: "/".into(),
        clear_cookies: Vec::new(),
        clear_site_data: false,
        loop_max: 3,
        loop_window: Duration::from_secs(30),
    };
    let loc = rotagate::logout::login_location(&cfg, &out);
    assert!(HeaderValue::from_str(&loc).is_ok());
    let base = url::Url::parse("https://app.example/").expect("base");
    let u = base.join(&loc).expect("login location");
    assert_eq!(u.origin(), base.origin());
    assert_eq!(u.path(), "/login");
    let back: Vec<(String, String)> = u.query_pairs().into_owned().collect();
    assert_eq!(back, vec![("callbackUrl".to_string(), out.clone())]);
}

// ------------------------------------------------------------------------------------
// Server Action body sniffer

/// Any body and content type: never panics.
pub fn action_any(content_type: &[u8], body: &[u8]) {
    let _ = rotagate::actions::form_ids(content_type, body);
}

/// A urlencoded body: what `URLSearchParams` (the `url` crate's `form_urlencoded`)
/// reads as `$ACTION_ID_` fields, rotagate reads too — or refuses to read (fail
/// closed); it never reads fewer or other ids.
pub fn action_urlencoded(body: &[u8]) {
    use rotagate::actions::ActionRequest;
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    if fields.iter().any(|(k, _)| k.starts_with("$ACTION_REF_")) {
        return;
    }
    let want: Vec<String> = fields
        .iter()
        .filter_map(|(k, _)| k.strip_prefix("$ACTION_ID_").map(str::to_string))
        .collect();
    match rotagate::actions::form_ids(b"application/x-www-form-urlencoded", body) {
        ActionRequest::Unreadable(_) => {}
        ActionRequest::None => assert!(want.is_empty(), "missed ids {want:?}"),
        ActionRequest::Ids(got) => assert_eq!(got, want),
    }
}

/// A multipart body as browsers write it: the ids are the `$ACTION_ID_` field names.
pub fn action_multipart(boundary: &str, fields: &[(String, String)]) {
    use rotagate::actions::ActionRequest;
    let bchar = |c: char| c.is_ascii_alphanumeric() || "'()+_,-./:=? ".contains(c);
    if boundary.is_empty() || boundary.len() > 70 || !boundary.chars().all(bchar) {
        return;
    }
    let delim = format!("--{boundary}");
    let mut body = String::new();
    for (k, v) in fields {
        // what a browser escapes in a name; values must not contain the delimiter
        let k = k
            .replace('"', "%22")
            .replace('\r', "%0D")
            .replace('\n', "%0A");
        if v.contains(&delim) || k.contains(&delim) || k.contains("\r\n") {
            return;
        }
        body.push_str(&format!(
            "{delim}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
        ));
    }
    body.push_str(&format!("{delim}--\r\n"));
    if fields.iter().any(|(k, _)| k.starts_with("$ACTION_REF_")) {
        return;
    }
    // the names as the app's parser (undici, per the HTML standard) reads them back: a
    // literal `%22` in a name is indistinguishable from an escaped `"`
    let want: Vec<String> = fields
        .iter()
        .map(|(k, _)| {
            k.replace('"', "%22")
                .replace('\r', "%0D")
                .replace('\n', "%0A")
                .replace("%22", "\"")
                .replace("%0D", "\r")
                .replace("%0A", "\n")
        })
        .filter_map(|k| k.strip_prefix("$ACTION_ID_").map(str::to_string))
        .collect();
    let ct = format!("multipart/form-data; boundary={boundary}");
    match rotagate::actions::form_ids(ct.as_bytes(), body.as_bytes()) {
        ActionRequest::Unreadable(_) => {}
        ActionRequest::None => assert!(want.is_empty(), "missed ids {want:?}"),
        ActionRequest::Ids(got) => assert_eq!(got, want),
    }
}

// ------------------------------------------------------------------------------------
// upstream Set-Cookie

/// The cookie name a browser stores for a `Set-Cookie` value (RFC 6265bis §5.6): the
/// name-value pair is everything before the first `;`; with no `=` the name is empty;
/// name and value are trimmed of spaces and tabs.
pub fn browser_cookie_name(set_cookie: &str) -> &str {
    let pair = set_cookie.split(';').next().unwrap_or("");
    match pair.split_once('=') {
        Some((n, _)) => n.trim_matches([' ', '\t']),
        None => "",
    }
}

/// `sets_session_cookie`: every `Set-Cookie` a browser would store under a name of
/// the session family is seen (the app wins); so is every one the `cookie` crate reads
/// so.
pub fn set_cookie(value: &str) {
    for family in families() {
        let sees = cookies::sets_session_cookie(value, &family);
        let name = browser_cookie_name(value);
        if !name.is_empty() && family.member(name).is_some() {
            assert!(sees, "missed the app's Set-Cookie for {name:?}");
        }
        if let Ok(c) = cookie::Cookie::parse(value) {
            if family.member(c.name()).is_some() {
                assert!(sees, "missed the app's Set-Cookie for {:?}", c.name());
            }
        }
        for p in Prefix::ALL {
            let n = family.name(p);
            assert!(cookies::sets_session_cookie(
                &format!("{n}=x; Path=/"),
                &family
            ));
            assert!(cookies::sets_session_cookie(
                &format!("{n}.3=; Max-Age=0"),
                &family
            ));
        }
    }
}

// ------------------------------------------------------------------------------------
// Cache-Control rewriter

/// `private_for_shared_caches`: applying its answer leaves a response no shared cache
/// may store (asking again changes nothing), with a valid header value.
pub fn cache_control(status: u16, values: &[Vec<u8>], expires: bool, cdn: bool) {
    let mut headers = HeaderMap::new();
    for v in values {
        if let Ok(v) = HeaderValue::from_bytes(v) {
            headers.append(http::header::CACHE_CONTROL, v);
        }
    }
    if expires {
        headers.insert(http::header::EXPIRES, HeaderValue::from_static("0"));
    }
    if cdn {
        headers.insert("cdn-cache-control", HeaderValue::from_static("max-age=60"));
        headers.insert("x-accel-expires", HeaderValue::from_static("60"));
    }
    let status = 100 + status % 500;
    let fix = rotagate::hygiene::private_for_shared_caches(status, &headers);
    if let Some(cc) = &fix.cache_control {
        let v = HeaderValue::from_str(cc).expect("the rewritten Cache-Control is a header value");
        headers.remove(http::header::CACHE_CONTROL);
        headers.insert(http::header::CACHE_CONTROL, v);
    }
    for n in &fix.remove {
        headers.remove(n);
    }
    let again = rotagate::hygiene::private_for_shared_caches(status, &headers);
    assert!(
        again.is_empty(),
        "still storable after the rewrite: {again:?}"
    );
    let directives: Vec<String> = headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(split_directives)
        .collect();
    if fix.cache_control.is_some() {
        assert!(!directives.iter().any(|d| d == "public" || d == "s-maxage"));
        assert!(directives.iter().any(|d| d == "private" || d == "no-store"));
    }
}

/// Directive names of a `Cache-Control` value (RFC 9111 §5.2: commas inside quoted
/// strings do not split), lower-cased.
fn split_directives(v: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut escaped) = (Vec::new(), String::new(), false, false);
    for c in v.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.iter()
        .map(|d| {
            d.split('=')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .collect()
}

// ------------------------------------------------------------------------------------
// CSRF Origin

/// `csrf_ok`: a request that passes on its `Origin` names exactly an allowed origin
/// (by the WHATWG parser's reading too); the config's origin parser round-trips.
pub fn csrf_origin(origin: &[u8], site: &[u8], config_origin: &str, host: &str) {
    let parsed = rotagate::config::parse_origin(config_origin);
    if let Ok(o) = &parsed {
        let again = rotagate::config::parse_origin(&o.serialize()).expect("serialized origin");
        assert_eq!(&again, o);
    }
    let public: Option<Origin> = parsed.ok();
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(origin) {
        headers.insert(http::header::ORIGIN, v);
    }
    if let Ok(v) = HeaderValue::from_bytes(site) {
        headers.insert("sec-fetch-site", v);
    }
    let host = (!host.is_empty()).then_some(host);
    for allow_same_site in [false, true] {
        let cfg = Csrf {
            allowed_origins: Vec::new(),
            require_origin: true,
            allow_same_site,
        };
        if !rotagate::access::csrf_ok(&headers, public.as_ref(), host, &cfg) {
            continue;
        }
        let site = headers
            .get("sec-fetch-site")
            .map(|v| v.as_bytes().trim_ascii().to_ascii_lowercase());
        if site.as_deref() == Some(b"same-origin")
            || (allow_same_site && site.as_deref() == Some(b"same-site"))
        {
            continue;
        }
        // it passed on Origin: that must be the public origin, or the host asked for
        let sent = headers
            .get(http::header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .expect("passed without an Origin although require_origin")
            .trim()
            .to_ascii_lowercase();
        match &public {
            Some(o) => {
                assert_eq!(sent, o.serialize());
                // a browser's Origin is a WHATWG URL (a configured `http://app.00` is
                // none: no browser sends it, and only non-browsers can pass with it)
                if let Ok(u) = url::Url::parse(&sent) {
                    assert_eq!(u.scheme(), o.scheme);
                    assert_eq!(u.port(), o.port);
                }
            }
            None => {
                let h = host.expect("passed on Origin with no host to compare");
                let rest = sent
                    .strip_prefix("http://")
                    .or_else(|| sent.strip_prefix("https://"))
                    .expect("an accepted Origin has an http(s) scheme");
                assert_eq!(rest, h.to_ascii_lowercase());
            }
        }
    }
}

// ------------------------------------------------------------------------------------
// spoofable headers

/// Header names no client may send, whatever their case or `_`/`-` spelling (the
/// lists of DESIGN §10 / `hygiene.rs`, written down independently here).
pub const ALWAYS_PREFIXES: [&str; 3] = ["x-rotagate-", "x-middleware-", "x-invoke-"];
/// Always stripped.
pub const ALWAYS: [&str; 8] = [
    "x-original-url",
    "x-rewrite-url",
    "x-forwarded-prefix",
    "x-now-route-matches",
    "x-matched-path",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];
/// Stripped unless the peer is a trusted proxy (and then still in a `_` spelling).
pub const PROXY_ONLY: [&str; 15] = [
    "forwarded",
    "x-real-ip",
    "x-forwarded-port",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "x-host",
    "x-original-host",
    "x-forwarded-server",
    "x-forwarded-scheme",
    "x-url-scheme",
    "front-end-https",
    "x-forwarded-ssl",
];
/// Set by rotagate: any `_` spelling is stripped.
pub const MANAGED: [&str; 3] = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];

fn fold(n: &str) -> String {
    n.to_ascii_lowercase().replace('_', "-")
}

/// `spoofable_names` strips exactly the names the rules say, in every spelling.
pub fn spoofable(names: &[Vec<u8>], trusted: bool) {
    let own = ["x-user-email", "x-rotagate-subject"];
    let mut headers = HeaderMap::new();
    for n in names {
        if let Ok(h) = HeaderName::from_bytes(n) {
            headers.append(h, HeaderValue::from_static("1"));
        }
    }
    let stripped = rotagate::hygiene::spoofable_names(&headers, trusted, own.iter().copied());
    for name in headers.keys() {
        let n = name.as_str();
        let f = fold(n);
        let underscore = n.contains('_');
        let want = ALWAYS_PREFIXES.iter().any(|p| f.starts_with(p))
            || ALWAYS.contains(&f.as_str())
            || ((!trusted || underscore) && PROXY_ONLY.contains(&f.as_str()))
            || (underscore && (MANAGED.contains(&f.as_str()) || own.contains(&f.as_str())));
        assert_eq!(
            stripped.contains(name),
            want,
            "{n:?} (trusted peer: {trusted})"
        );
    }
}

// ------------------------------------------------------------------------------------
// vault mode: the handle decoder, the request cookie split, `x-rotagate-claims`

use rotagate::session::vault::handle::Handle;
use rotagate::session::vault::keys::Keys;
use rotagate::session::vault::VaultSettings;
use rotagate::session::vault_capture::{self as vcap, Names};
use rotagate::store::FamilyId;

/// The vault's keys: an active secret and an older one (a key rollover).
pub fn vault_keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| {
        Keys::new(&VaultSettings::with_secrets(vec![
            Secret::new(&b"fuzz-vault-active-secret-0123456789abcdef"[..]),
            Secret::new(&b"fuzz-vault-older-secret-0123456789abcdefgh"[..]),
        ]))
        .expect("fixture vault keys")
    })
}

/// Keys of a secret the vault never had.
fn foreign_keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| {
        Keys::new(&VaultSettings::with_secrets(vec![Secret::new(
            &b"fuzz-vault-foreign-secret-0123456789abcdef"[..],
        )]))
        .expect("fixture vault keys")
    })
}

/// The names vault mode reads cookies with in these properties.
pub fn vault_names() -> &'static Names {
    static N: OnceLock<Names> = OnceLock::new();
    N.get_or_init(|| {
        Names::new(
            "rg",
            &["sid".to_string(), "authjs.session-token".to_string()],
        )
    })
}

/// Any cookie value: the decoder never panics, and whatever verifies is exactly the
/// canonical encoding of what it decoded to (one handle, one spelling: no padding, no
/// trailing bits, no other alphabet), under one of the vault's own keys, never under a
/// stranger's.
pub fn vault_handle_any(value: &str) {
    let keys = vault_keys();
    if let Ok(h) = Handle::verify(value, keys) {
        assert_eq!(
            h.mint_own(keys).expose(),
            value,
            "a second spelling verified"
        );
        assert!(
            Handle::verify(value, foreign_keys()).is_err(),
            "a handle verified under a secret the vault never had"
        );
    }
}

/// A handle minted under the active or the older secret verifies to its fields under
/// the vault's keys, never under a stranger's, and no single changed byte verifies.
pub fn vault_handle_round_trip(
    older: bool,
    family: [u8; 16],
    generation: u32,
    secret: [u8; 32],
    flip: usize,
    to: u8,
) {
    let keys = vault_keys();
    let set = if older {
        keys.by_kid(kid_of_older()).last().expect("older kid")
    } else {
        keys.active()
    };
    let h = Handle {
        kid: set.kid,
        family: FamilyId(family),
        generation,
        secret,
    };
    let v = h.mint(set);
    let back = Handle::verify(v.expose(), keys).expect("a minted handle verifies");
    assert_eq!(back, h);
    assert!(Handle::verify(v.expose(), foreign_keys()).is_err());
    let mut bytes = v.expose().as_bytes().to_vec();
    let i = flip % bytes.len();
    if bytes[i] != to {
        bytes[i] = to;
        let changed = String::from_utf8_lossy(&bytes);
        assert!(
            Handle::verify(&changed, keys).is_err(),
            "a changed handle verified"
        );
    }
}

fn kid_of_older() -> u8 {
    // the older secret's kid: the one key set that is not the active one
    let keys = vault_keys();
    (0..=255u8)
        .find(|k| keys.by_kid(*k).any(|s| !std::ptr::eq(s, keys.active())))
        .expect("two secrets")
}

/// Any `Cookie` header in vault mode: the handle and the captured cookies are split
/// off (the handle never goes upstream; a client never plants an app cookie), at most
/// `MAX_HANDLES` handle values are read, and the rest goes on in order.
pub fn vault_request_cookies(header: &str) {
    let names = vault_names();
    let rc = vcap::read_request(Some(header), names);
    assert!(rc.handles.len() <= vcap::MAX_HANDLES);
    let (pairs, more) = cookies::pairs_bounded(header, cookies::MAX_COOKIES);
    assert_eq!(rc.too_many_cookies, more);
    let expected_rest: Vec<(&str, &str)> = pairs
        .iter()
        .copied()
        .filter(|(k, _)| !names.is_handle(k) && !names.is_captured(k))
        .collect();
    assert_eq!(rc.rest, expected_rest);
    let expected_handles: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| *k == names.handle)
        .map(|(_, v)| *v)
        .take(vcap::MAX_HANDLES)
        .collect();
    assert_eq!(rc.handles, expected_handles);
    let touched = pairs.len() != expected_rest.len() || more;
    assert_eq!(rc.rewrite, touched);
    if let Some(up) = vcap::upstream_cookie(&rc.rest, &[]) {
        for (k, _) in cookies::pairs(&up) {
            assert!(
                !names.is_handle(k) && !names.is_captured(k),
                "{k:?} went upstream"
            );
        }
    }
    for h in &rc.handles {
        vault_handle_any(h);
    }
}

/// Any `x-rotagate-claims` value: a JSON object of at most `MAX_CLAIMS_BYTES` is read
/// as exactly what a JSON parser reads; anything else (too long, not JSON, not an
/// object) is no claims. The subject is the `sub` claim when it is a string.
pub fn vault_claims(value: &[u8]) {
    let got = vcap::claims_from_header(value);
    let parsed = serde_json::from_slice::<Value>(value).ok();
    match &got {
        Some(m) => {
            assert!(value.len() <= vcap::MAX_CLAIMS_BYTES);
            assert_eq!(parsed.as_ref(), Some(&Value::Object(m.clone())));
            assert_eq!(
                vcap::subject(Some(m)),
                m.get("sub").and_then(Value::as_str).map(str::to_string)
            );
        }
        None => assert!(
            value.len() > vcap::MAX_CLAIMS_BYTES || !matches!(parsed, Some(Value::Object(_))),
            "a small JSON object was ignored"
        ),
    }
    // the same bytes as a captured app cookie: a JWS payload is read, nothing panics
    let text = String::from_utf8_lossy(value).into_owned();
    let jar = vec![("sid".to_string(), text)];
    if let Some(c) = vcap::claims_from_jar(&jar, vault_names()) {
        assert_eq!(
            jar[0].1.split('.').count(),
            3,
            "claims from a non-JWS cookie"
        );
        let _ = c;
    }
}

/// Claims an app sends come back as they were, serialised as any JSON library would.
pub fn vault_claims_round_trip(claims: &Map<String, Value>) {
    let bytes = serde_json::to_vec(claims).expect("claims serialise");
    let got = vcap::claims_from_header(&bytes);
    if bytes.len() <= vcap::MAX_CLAIMS_BYTES {
        assert_eq!(got.as_ref(), Some(claims));
    } else {
        assert!(got.is_none());
    }
}
