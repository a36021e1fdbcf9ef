//! Property tests (proptest, stable toolchain) for the invariants the fuzz targets
//! check: the same functions (`fuzz/src/props.rs`, included below), on inputs proptest
//! generates, with case counts set here so the whole file stays well under a minute
//! on two cores. A failure prints the shrunk input; make it a regular test under
//! `tests/` before fixing it.

#[path = "../fuzz/src/props.rs"]
mod props;

use std::time::Duration;

use proptest::prelude::*;
use rotagate::config::TokenFormat;
use rotagate::matcher::NextOptions;
use rotagate::session::rotate::Timing;
use serde_json::{Map, Value};

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        // shrinking a failure is worth its time; passing runs never get here
        max_shrink_iters: 2048,
        ..ProptestConfig::default()
    }
}

/// Strings made mostly of the bytes that matter to the parser under test.
fn text(alphabet: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(alphabet).prop_map(str::to_string),
            1 => any::<String>(),
        ],
        0..max,
    )
    .prop_map(|v| v.concat())
}

const COOKIE_BITS: &[&str] = &[
    "session",
    "session.0",
    "session.1",
    "session.2",
    "__Secure-",
    "__Host-",
    "authjs.session-token",
    "authjs.session-token.0",
    ".",
    "=",
    ";",
    " ",
    "\t",
    "a",
    "v",
    "x=1",
];
const PATH_BITS: &[&str] = &[
    "/", ".", "..", "%2e", "%2E", "%2f", "%5C", "%00", "%20", ";", "a", "b", "%41", "é", "%", "\\",
    "?", "#", "_next", "~", "'", ":", "@",
];
const HOST_BITS: &[&str] = &[
    "example", ".", "com", ":", "8080", "[", "]", "::1", "0", "-", "_", " ", "Ab", "99999",
];
const SOURCE_BITS: &[&str] = &[
    "/", "/about", "/:path", "*", "+", "?", "(", ")", "(.*)", "(\\d+)", "{", "}", "-", ".",
    "(?!api)", "api", ":", "\\",
];
const CC_BITS: &[&str] = &[
    "public",
    "private",
    "no-store",
    "max-age=60",
    "s-maxage=1",
    "must-understand",
    ", ",
    "\"",
    "\\",
    "=",
    "x",
];
const FORM_BITS: &[&str] = &[
    "$ACTION_ID_",
    "$ACTION_REF_1",
    "$ACTION_1:0",
    "ACTION_",
    "abc",
    "=",
    "&",
    "%24",
    "%41",
    "+",
    "%",
    "{\"id\":\"x\"}",
];

fn claims() -> impl Strategy<Value = Map<String, Value>> {
    let time = prop_oneof![
        3 => (-200_000i64..200_000).prop_map(|d| Some(Value::from(props::NOW.saturating_add_signed(d)))),
        1 => Just(None),
        1 => any::<u64>().prop_map(|n| Some(Value::from(n))),
        1 => Just(Some(Value::from("soon"))),
        1 => (0.0f64..4e9).prop_map(|f| Some(Value::from(f))),
    ];
    (
        prop::collection::btree_map("[a-z_]{1,8}", "[ -~]{0,12}", 0..4),
        prop::array::uniform5(time),
    )
        .prop_map(|(extra, times)| {
            let mut m: Map<String, Value> = extra
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            for (k, v) in ["iat", "exp", "nbf", "auth_time", "rg_auth_time"]
                .iter()
                .zip(times)
            {
                match v {
                    Some(v) => m.insert((*k).to_string(), v),
                    None => m.remove(*k),
                };
            }
            m
        })
}

fn format() -> impl Strategy<Value = TokenFormat> {
    prop::sample::select(vec![
        TokenFormat::Jwt,
        TokenFormat::Authjs,
        TokenFormat::AuthjsV4,
    ])
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn cookie_header_parses_bounded_and_rewrites_cleanly(h in text(COOKIE_BITS, 24)) {
        props::cookie_pairs(&h);
        props::cookie_scan(&h);
    }

    #[test]
    fn paths_normalise_to_a_fixed_point_rfc_3986_and_whatwg_agree(p in text(PATH_BITS, 16)) {
        props::path_normalise(&p);
        props::path_normalise(&format!("/{p}"));
    }

    #[test]
    fn hosts_read_back_to_themselves(h in text(HOST_BITS, 8), t in any::<Vec<u8>>()) {
        props::host_authority(&h, &t);
        props::host_authority(&h, format!("http://{h}/x").as_bytes());
    }

    #[test]
    fn return_paths_stay_on_the_origin(
        c in text(PATH_BITS, 10), p in text(PATH_BITS, 10), q in proptest::option::of("[ -~]{0,16}"),
        base in prop::sample::select(vec!["", "/docs", "/", "//"]),
    ) {
        props::return_path(&c, &p, q.as_deref(), base);
    }

    #[test]
    fn set_cookie_for_a_session_name_is_always_seen(v in text(COOKIE_BITS, 12)) {
        props::set_cookie(&v);
    }

    #[test]
    fn rewritten_cache_control_is_never_storable(
        status in any::<u16>(), values in prop::collection::vec(text(CC_BITS, 6), 0..3),
        expires in any::<bool>(), cdn in any::<bool>(),
    ) {
        let values: Vec<Vec<u8>> = values.into_iter().map(String::into_bytes).collect();
        props::cache_control(status, &values, expires, cdn);
    }

    #[test]
    fn spoofable_names_are_stripped_in_every_spelling(
        picks in prop::collection::vec((0usize..29, "[a-z_-]{0,6}", any::<u64>()), 0..6),
        trusted in any::<bool>(),
    ) {
        let all: Vec<&str> = props::ALWAYS_PREFIXES.iter()
            .chain(&props::ALWAYS).chain(&props::PROXY_ONLY).chain(&props::MANAGED)
            .copied().collect();
        let names: Vec<Vec<u8>> = picks.into_iter().map(|(i, tail, flips)| {
            let mut n = all[i % all.len()].to_string();
            if i < props::ALWAYS_PREFIXES.len() { n.push_str(&tail); }
            n.bytes().enumerate().map(|(j, b)| match (b, flips >> (j % 64) & 3) {
                (b'-', 0) => b'_',
                (c, 1) => c.to_ascii_uppercase(),
                (c, _) => c,
            }).collect()
        }).collect();
        props::spoofable(&names, trusted);
    }

    #[test]
    fn action_ids_are_what_url_search_params_reads(
        body in text(FORM_BITS, 12),
        fields in prop::collection::vec((text(FORM_BITS, 3), "[ -~]{0,8}"), 0..4),
    ) {
        props::action_any(b"application/x-www-form-urlencoded", body.as_bytes());
        props::action_urlencoded(body.as_bytes());
        props::action_multipart("----WebKitFormBoundaryX", &fields);
    }

    #[test]
    fn csrf_passes_only_for_the_origin(
        origin in prop_oneof![
            "(https?|HTTPS)://(app\\.example|evil\\.example|\\[::1\\])(:(443|80|8080|8443))?",
            "[ -~]{0,20}",
        ],
        site in prop::sample::select(vec!["", "same-origin", "same-site", "cross-site", " Same-Origin "]),
        cfg in prop::sample::select(vec!["https://app.example", "http://app.example:8080", "https://[::1]:8443", "x"]),
        host in prop::sample::select(vec!["", "app.example", "app.example:8080"]),
    ) {
        props::csrf_origin(origin.as_bytes(), site.as_bytes(), cfg, host);
    }

    #[test]
    fn manifests_read_or_refuse(text in prop_oneof![
        "\\{\"(node|edge)\":\\{\"[0-9a-f]{4}\":\\{\"workers\":\\{\"app/[a-z()\\[\\]./]{0,12}page\":\\{\\}\\}\\}\\}\\}",
        "[ -~]{0,40}",
    ]) {
        props::manifest(&text);
    }
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn the_engine_keeps_one_truth_upstream(
        f in format(), h in text(COOKIE_BITS, 16), d in -100_000i64..100_000, rotate in any::<bool>(),
    ) {
        props::engine_on_header(f, &h, props::NOW.saturating_add_signed(d), rotate);
    }

    #[test]
    fn a_valid_token_among_any_cookies_is_found(
        f in format(), c in claims(), size in 1usize..400,
        before in prop::collection::vec(("[ -:<-~]{0,8}", "[ -:<-~]{0,8}"), 0..4),
        after in prop::collection::vec(("[ -:<-~]{0,8}", "[ -:<-~]{0,8}"), 0..4),
    ) {
        let t = props::valid_token(f, &c, props::NOW);
        props::valid_token_among(f, &t, size, &before, &after);
    }

    #[test]
    fn matchers_compile_or_refuse_and_agree_with_one_by_one_matching(
        sources in prop::collection::vec(text(SOURCE_BITS, 5), 1..4),
        paths in prop::collection::vec(text(PATH_BITS, 6), 1..5),
        base in prop::sample::select(vec!["", "/docs"]),
        i18n in any::<bool>(),
    ) {
        let opts = NextOptions {
            base_path: base.to_string(),
            locales: if i18n { vec!["en".into()] } else { Vec::new() },
            case_insensitive: false,
        };
        props::matcher_compile(&sources, &opts, &paths);
        for s in &sources {
            props::regex_differential(s, &opts, &paths);
        }
    }

    #[test]
    fn configs_load_or_fail_with_a_located_error(text in prop_oneof![
        "\\[(upstream|listen|session|logout|csrf|nextjs)\\]\n[a-z_]{1,12} = (\"[ -~]{0,10}\"|[0-9]{1,4}|true|\\[\\])\n",
        "[ -~\n]{0,60}",
    ]) {
        props::config_load(&text);
    }
}

proptest! {
    #![proptest_config(cases(48))]

    #[test]
    fn tokens_of_every_alg_round_trip_and_refuse_any_change(
        alg in 0usize..7, c in claims(), flip in any::<usize>(), to in any::<u8>(),
    ) {
        props::jws_round_trip(alg, &c, flip, to);
    }

    #[test]
    fn jwe_of_both_generations_round_trip_and_refuse_any_change(
        v5 in any::<bool>(), c in claims(), flip in any::<usize>(), to in any::<u8>(),
    ) {
        props::jwe_round_trip(v5, &c, flip, to);
    }

    #[test]
    fn any_token_bytes_are_refused_without_panicking(t in "[A-Za-z0-9_.-]{0,120}") {
        props::jws_any(&t);
        props::jwe_any(&t);
    }

    #[test]
    fn remint_keeps_claims_and_never_extends_the_lifetime(
        alg in 0usize..7, c in claims(), d in -300_000i64..300_000,
        rotate_every in 0u64..86_400, absolute in 1u64..(90 * 86_400),
        idle in proptest::option::of(1u64..86_400), leeway in 0u64..120,
    ) {
        let t = Timing {
            rotate_every: Duration::from_secs(rotate_every),
            absolute_timeout: Duration::from_secs(absolute),
            idle_timeout: idle.map(Duration::from_secs),
            leeway: Duration::from_secs(leeway),
        };
        props::remint(alg, &c, props::NOW.saturating_add_signed(d), &t);
    }
}

const VAULT_BITS: &[&str] = &[
    "rg=",
    "__Secure-rg=",
    "__Host-rg=",
    "rg.0=",
    "sid=",
    "__Secure-sid=",
    "sid.1=",
    "authjs.session-token=",
    "theme=",
    "v1.",
    "; ",
    ";",
    "=",
    " ",
    "A",
    "_",
    "-",
];
const CLAIMS_BITS: &[&str] = &[
    "{", "}", "[", "]", "\"sub\"", "\"a\"", ":", ",", "1", "1.5e3", "null", "true", "\"",
    "\\u0000", " ",
];

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn vault_cookie_headers_split_handle_captured_and_rest(h in text(VAULT_BITS, 24)) {
        props::vault_request_cookies(&h);
        props::vault_handle_any(&h);
    }

    #[test]
    fn vault_handles_round_trip_under_both_secrets_and_refuse_any_change(
        older in any::<bool>(), family in any::<[u8; 16]>(), generation in any::<u32>(),
        secret in any::<[u8; 32]>(), flip in any::<usize>(), to in any::<u8>(),
    ) {
        props::vault_handle_round_trip(older, family, generation, secret, flip, to);
    }

    #[test]
    fn vault_claims_header_is_exactly_a_small_json_object(v in text(CLAIMS_BITS, 24)) {
        props::vault_claims(v.as_bytes());
    }

    #[test]
    fn vault_claims_round_trip(c in claims()) {
        props::vault_claims_round_trip(&c);
    }
}
