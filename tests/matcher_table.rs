//! Next.js `config.matcher` compatibility, table-driven. Each expectation was produced
//! by the real `path-to-regexp@6.3.0` with Next's `getMiddlewareMatchers` wrapping
//! (regex source only, so case-sensitive), then written down here; the cases come from
//! Next's middleware docs and path-to-regexp 6's README.

use http::HeaderMap;
use rotagate::matcher::{MatcherSpec, NextOptions, RequestParts, RuleSet, SourceSpec};

/// (source, path, basePath, locales, matches?)
const CASES: &[(&str, &str, &str, &[&str], bool)] = &[
    ("/about/:path*", "/about", "", &[], true),
    ("/about/:path*", "/about/a", "", &[], true),
    ("/about/:path*", "/about/a/b/c", "", &[], true),
    ("/about/:path*", "/aboutx", "", &[], false),
    ("/about/:path*", "/About", "", &[], false),
    ("/dashboard/:path*", "/dashboard/", "", &[], true),
    ("/dashboard/:path*", "/dash", "", &[], false),
    (
        "/((?!api|_next/static|_next/image|favicon.ico).*)",
        "/",
        "",
        &[],
        true,
    ),
    (
        "/((?!api|_next/static|_next/image|favicon.ico).*)",
        "/home",
        "",
        &[],
        true,
    ),
    (
        "/((?!api|_next/static|_next/image|favicon.ico).*)",
        "/api/users",
        "",
        &[],
        false,
    ),
    (
        "/((?!api|_next/static|_next/image|favicon.ico).*)",
        "/apiary",
        "",
        &[],
        false,
    ),
    (
        "/((?!api|_next/static|_next/image|favicon.ico).*)",
        "/_next/static/chunk.js",
        "",
        &[],
        false,
    ),
    (
        "/((?!api|_next/static|_next/image|favicon.ico).*)",
        "/_next/image",
        "",
        &[],
        false,
    ),
    (
        "/((?!api|_next/static|_next/image|favicon.ico).*)",
        "/favicon.ico",
        "",
        &[],
        false,
    ),
    (
        "/((?!api|_next/static|_next/image|favicon.ico).*)",
        "/_next/data/build1/home.json",
        "",
        &[],
        true,
    ),
    ("/:foo/:bar", "/test/route", "", &[], true),
    ("/:foo/:bar", "/test", "", &[], false),
    ("/:foo/:bar?", "/test", "", &[], true),
    ("/:foo/:bar?", "/test/route", "", &[], true),
    ("/:foo*", "/", "", &[], true),
    ("/:foo*", "/bar/baz", "", &[], true),
    ("/:foo+", "/", "", &[], false),
    ("/:foo+", "/bar/baz", "", &[], true),
    ("/icon-:foo(\\d+).png", "/icon-123.png", "", &[], true),
    ("/icon-:foo(\\d+).png", "/icon-abc.png", "", &[], false),
    ("/:foo(\\d+)", "/123", "", &[], true),
    ("/:foo(\\d+)", "/abc", "", &[], false),
    ("/:foo/(.*)", "/test/route", "", &[], true),
    ("/:foo/(.*)", "/test", "", &[], false),
    ("/:attr1?{-:attr2}?{-:attr3}?", "/test", "", &[], true),
    ("/:attr1?{-:attr2}?{-:attr3}?", "/test-test", "", &[], true),
    (
        "/:attr1?{-:attr2}?{-:attr3}?",
        "/test-test-test",
        "",
        &[],
        true,
    ),
    ("/user/:id", "/user/123", "", &[], true),
    ("/user/:id", "/user/123/", "", &[], true),
    ("/user/:id", "/user/123#x", "", &[], false),
    ("/user/:id", "/user/123?", "", &[], true),
    ("/user/:id", "/user/123//", "", &[], false),
    ("/user/:id", "/user/", "", &[], false),
    ("/book{s}?", "/book", "", &[], true),
    ("/book{s}?", "/books", "", &[], true),
    ("/book{s}?", "/bookss", "", &[], false),
    ("/:lang(en|de)/docs", "/en/docs", "", &[], true),
    ("/:lang(en|de)/docs", "/fr/docs", "", &[], false),
    ("/files/:name.:ext", "/files/report.pdf", "", &[], true),
    ("/files/:name.:ext", "/files/report", "", &[], false),
    ("/\\(paren\\)", "/(paren)", "", &[], true),
    ("/about", "/_next/data/abc123/about.json", "", &[], true),
    ("/about", "/about.json", "", &[], true),
    ("/about", "/about.rsc", "", &[], true),
    ("/about", "/about.segments/_tree.segment.rsc", "", &[], true),
    ("/about", "/_next/data/abc/def/about.json", "", &[], false),
    ("/about", "/about.txt", "", &[], false),
    ("/", "/", "", &[], true),
    ("/", "/index", "", &[], true),
    ("/", "/index.json", "", &[], true),
    ("/", "/_next/data/b1/index.json", "", &[], true),
    ("/", "/home", "", &[], false),
    (
        "/blog/:slug",
        "/_next/data/b1/blog/hello.json",
        "",
        &[],
        true,
    ),
    ("/about", "/docs/about", "/docs", &[], true),
    ("/about", "/about", "/docs", &[], false),
    ("/", "/docs", "/docs", &[], true),
    (
        "/about",
        "/docs/_next/data/b/about.json",
        "/docs",
        &[],
        true,
    ),
    ("/about", "/en/about", "", &["en", "fr"], true),
    ("/about", "/about", "", &["en", "fr"], false),
    ("/about", "/_next/x/about", "", &["en", "fr"], false),
    ("/", "/fr", "", &["en", "fr"], true),
    ("/Premium/:path*", "/premium/a", "", &[], false),
    ("/premium/:path*", "/x/premium/a", "", &[], false),
    ("/premium", "/premium/a", "", &[], false),
    ("/api/:path*", "/api", "", &[], true),
    ("/api/:path*", "/api/v1/users", "", &[], true),
    ("/(.*)", "/anything/at/all", "", &[], true),
    ("/:path*", "/", "", &[], true),
    ("/:path*", "/a/b", "", &[], true),
    ("/caf\u{e9}", "/caf\u{e9}", "", &[], true),
];

#[test]
fn next_matcher_table() {
    assert!(CASES.len() >= 60);
    let headers = HeaderMap::new();
    let mut failures = Vec::new();
    for (source, path, base_path, locales, want) in CASES {
        let opts = NextOptions {
            base_path: base_path.to_string(),
            locales: locales.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let spec = MatcherSpec {
            sources: vec![SourceSpec {
                source: source.to_string(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let set = RuleSet::build(&[spec], &opts).unwrap_or_else(|e| panic!("{source}: {e}"));
        let req = RequestParts {
            method: "GET",
            host: None,
            path,
            query: None,
            headers: &headers,
        };
        let got = set.first_match(&req).is_some();
        if got != *want {
            failures.push(format!("{source:?} vs {path:?} (basePath {base_path:?}, locales {locales:?}): want {want}, got {got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
