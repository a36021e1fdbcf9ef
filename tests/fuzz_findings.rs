//! Issue 14: what the fuzz targets and property tests found, each as a regular test
//! written before its fix (the matcher's differential findings are in
//! `tests/matcher_differential.rs`). See `fuzz/README.md` for the campaign.

mod common;

use common::*;
use serde_json::{json, Map, Value};

const SECRET: &str = "fuzz-findings-secret-fuzz-findings-secret-0";

/// Found by `host_authority` (property: a host reads back to itself through its
/// authority): `admin.test..` was read as the host `admin.test.` (one trailing dot
/// cut), which no `hosts = ["admin.test"]` rule matches, while DNS-minded apps and
/// proxies behind read it as `admin.test`. A host with an empty label is no host name:
/// it is refused with 400, so a host-scoped `require` cannot be stepped around.
#[tokio::test]
async fn a_host_with_an_empty_label_is_refused_not_read_past_a_host_rule() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let up = upstream_ok().await;
    let text = config_with_listen(
        up.addr,
        "",
        "[session]\n[session.reissue]\ncookie = \"session\"\nformat = \"jwt\"\n[[session.reissue.keys]]\nalg = \"HS256\"\nsecret = \"file:secret\"\n\n[[route]]\nname = \"admin\"\nmatch = \"/:path*\"\nhosts = [\"admin.test\"]\nrequire = { session = true }\n\n[[route]]\nname = \"app\"\nmatch = \"/:path*\"\n",
    );
    let h = Harness::start_text(dir, up, &text).await;
    for host in [
        "admin.test..",
        "admin.test..:8080",
        "admin..test",
        ".admin.test",
        ".",
    ] {
        let req = format!("GET /secret HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let resp = within(host, raw(h.addr(), req.as_bytes())).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "Host: {host}: {resp}");
    }
    assert_eq!(
        h.upstream.count(),
        0,
        "the admin app was reached anonymously"
    );
    // the spellings DNS reads as the same host still meet the rule
    let req = "GET /secret HTTP/1.1\r\nHost: Admin.Test.\r\nConnection: close\r\n\r\n";
    let resp = within("one dot", raw(h.addr(), req.as_bytes())).await;
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    h.shutdown().await;
}

/// Found while writing the `host_authority` invariant (a host reads back to itself):
/// anything in brackets made of hex digits, `:` and `.` was taken as an IPv6 literal,
/// so `[a..]` read as the name `a.` (whose authority reads back as `a`) and
/// `[cafe.de]` as the name `cafe.de`. An IP-literal is an IPv6 address (RFC 3986
/// §3.2.2); anything else in brackets is no host.
#[test]
fn a_bracketed_host_must_be_an_ipv6_address() {
    use rotagate::hygiene::{HostReading, RequestHost};
    for bad in [
        "[a..]",
        "[cafe.de]",
        "[1.2.3.4]",
        "[::1::2]",
        "[a]:80",
        "[]",
    ] {
        assert_eq!(HostReading::parse(bad), HostReading::Invalid, "{bad}");
    }
    for (good, name, port) in [
        ("[::1]", "::1", None),
        ("[2001:DB8::1]:8443", "2001:db8::1", Some(8443)),
        ("[::ffff:1.2.3.4]", "::ffff:1.2.3.4", None),
    ] {
        let want = RequestHost {
            name: name.into(),
            port,
        };
        assert_eq!(
            HostReading::parse(good),
            HostReading::Host(want.clone()),
            "{good}"
        );
        assert_eq!(
            HostReading::parse(&want.authority()),
            HostReading::Host(want)
        );
    }
}

/// Found by `remint`, `jws_verify` and `jwe_open` (property: claims survive the
/// verify → re-mint → verify round trip): a fractional claim (`iat` of libraries that
/// write milliseconds, any app claim) came back one unit in the last place off,
/// because serde_json's default float parsing is not exact. Every claim rotagate
/// re-mints must be the app's, bit for bit.
#[test]
fn fractional_claims_survive_the_round_trip_exactly() {
    use rotagate::config::KeySpec;
    use rotagate::secret::Secret;
    use rotagate::session::authjs::{AuthjsCodec, Version};
    use rotagate::session::jwt::KeySet;
    let mut claims = Map::new();
    for (k, v) in [
        ("iat", json!(1_866_733_309.817_210_7)),
        ("auth_time", json!(1_425_432_129.061_955_7)),
        ("score", json!(0.1 + 0.2)),
        ("sub", json!("user-1")),
    ] {
        claims.insert(k.into(), v);
    }
    let keys = KeySet::from_specs(&[KeySpec {
        kid: None,
        alg: "HS256".into(),
        secret: Some(Secret::new(SECRET.as_bytes())),
        private_key_pem: None,
        public_key_pem: None,
        origin: "test".into(),
    }])
    .unwrap();
    let token = keys.mint(&claims).unwrap();
    assert_eq!(keys.verify(&token).unwrap(), claims, "JWS");
    for (v, name) in [
        (Version::V5, "authjs.session-token"),
        (Version::V4, "next-auth.session-token"),
    ] {
        let codec = AuthjsCodec::new(v, &[Secret::new(SECRET.as_bytes())], &[name.into()]).unwrap();
        let token = codec.seal(&claims, name).unwrap();
        assert_eq!(codec.open(&token, name).unwrap(), claims, "{v:?}");
    }
    // the value the app wrote is the value that comes back, as text too
    let text: Value = serde_json::from_str("{\"iat\":1866733309.8172107}").unwrap();
    assert_eq!(text["iat"].to_string(), "1866733309.8172107");
}

/// Found by `config_load` (property: every problem says what is wrong): a file cut
/// off inside an inline table got a problem with an empty message.
#[test]
fn a_config_cut_off_anywhere_names_what_is_wrong() {
    let text = "[upstream]\nurl = \"http://127.0.0.1:3000\"\n[[route]]\nname = \"p\"\nmatch = [\"/premium/:path*\", { source = \"/((?!api).*)\", has = [{ type =";
    for end in 0..=text.len() {
        if !text.is_char_boundary(end) {
            continue;
        }
        if let Err(e) = rotagate::config::parse(&text[..end], std::path::Path::new("cut.toml")) {
            for p in &e.problems {
                assert!(!p.message.is_empty(), "{:?}: {p:?}", &text[..end]);
            }
        }
    }
}

/// Found by `csrf_origin` (property: a configured origin serialises back to itself):
/// `https://:4ample` was accepted as an origin with an empty host, which no browser's
/// `Origin` can ever equal. An origin needs a host and a numeric port.
#[test]
fn an_origin_needs_a_host_and_a_port_number() {
    // … and a host that is a host, read as request hosts are: `Ap[::1]p.x'8` was taken
    for bad in [
        "https://:4ample",
        "https://:8080",
        "http://",
        "https://a:b",
        "http://Ap[::1]p.examp0l8'8:0",
        "https://a..b",
    ] {
        assert!(rotagate::config::parse_origin(bad).is_err(), "{bad}");
    }
    let o = rotagate::config::parse_origin("https://[::1]:8443").unwrap();
    assert_eq!(o.serialize(), "https://[::1]:8443");
    let err = rotagate::config::parse(
        "[upstream]\nurl = \"http://127.0.0.1:3000\"\n[listen]\npublic_origin = \"https://:8080\"\n",
        std::path::Path::new("origin.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("origin.toml:4:") && err.contains("public_origin"),
        "{err}"
    );
}

/// Found by `host_authority` (property: a host is spelled by its own authority):
/// `a1:0` was not, so its `Host` would be rewritten on every request to the same text.
#[test]
fn a_host_is_spelled_by_its_own_authority() {
    use rotagate::hygiene::HostReading;
    for raw in ["a1:0", "x:1", "x:65535", "[::1]:0"] {
        let h = HostReading::parse(raw).into_host().unwrap();
        assert!(h.is_spelled(h.authority().as_bytes()), "{raw}");
    }
    let h = HostReading::parse("x:0080").into_host().unwrap();
    assert!(!h.is_spelled(b"x:0080") && h.is_spelled(b"x:80"));
}

#[path = "../fuzz/src/props.rs"]
#[allow(dead_code, unused_imports)]
mod props;

/// Found by `session_cookies` (property: one truth upstream — what is forwarded
/// verifies again): a valid token sent in a few large chunks, re-minted and re-chunked
/// at the configured chunk size, needed more than `MAX_CHUNKS` (64) chunks. The app
/// and rotagate itself would have read the new cookie set as malformed on the very
/// next request — rotagate's own work ending a session. A re-mint too large to be read
/// back is not made: the valid session goes on as it came.
#[test]
fn a_remint_too_large_to_be_read_back_keeps_the_session_as_it_came() {
    use rotagate::config::TokenFormat;
    use rotagate::session::{cookies, Outcome};
    for format in [TokenFormat::Jwt, TokenFormat::Authjs, TokenFormat::AuthjsV4] {
        let mut extra = Map::new();
        extra.insert("pad".into(), Value::from("p".repeat(3200)));
        let token = props::valid_token(format, &extra, props::NOW);
        let name = props::engine_cookie(format);
        // the fixture chunks at 64 characters: the re-mint would need > 64 chunks
        assert!(token.len() > 64 * cookies::MAX_CHUNKS, "{}", token.len());
        let header: Vec<String> = cookies::split(name, &token, 2500)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let header = header.join("; ");
        let now = props::NOW + 769;
        let d = props::engine(format).process(Some(&header), now, true);
        assert_eq!(d.outcome, Outcome::Valid, "{format:?}: not re-minted");
        assert!(
            d.set_cookies.is_empty(),
            "{format:?}: {:?}",
            d.set_cookies.len()
        );
        props::engine_on_header(format, &header, now, true);
    }
}
