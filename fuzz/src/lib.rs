//! Shared parts of rotagate's fuzz targets: the invariants ([`props`], also run by the
//! proptests in `tests/properties.rs`) and the structure-aware inputs (`arbitrary`
//! wrappers that live here, not in the library).

pub mod props;

use arbitrary::{Arbitrary, Result, Unstructured};
use serde_json::{Map, Value};

/// Words the structured inputs are built from: cookie names of every family and
/// twin, chunk suffixes, JOSE header fields, path pieces.
const WORDS: &[&str] = &[
    "session",
    "session.0",
    "session.1",
    "session.64",
    "__Secure-session",
    "__Host-session",
    "authjs.session-token",
    "__Secure-authjs.session-token",
    "authjs.session-token.0",
    "next-auth.session-token",
    "theme",
    "",
    "=",
    ";",
    " ",
    "\t",
    ".",
    "..",
    "%2e",
    "%2F",
    "/",
];

/// A word from [`WORDS`] or a fuzzed string.
fn word(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(2, 3)? {
        Ok((*u.choose(WORDS)?).to_string())
    } else {
        String::arbitrary(u)
    }
}

/// A JSON value of bounded depth: strings, integers, floats, bools, arrays, objects.
pub fn json_value(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    Ok(match u.int_in_range(0..=if depth == 0 { 4 } else { 6 })? {
        0 => Value::Null,
        1 => Value::Bool(bool::arbitrary(u)?),
        2 => Value::from(u64::arbitrary(u)?),
        3 => Value::from(i64::arbitrary(u)?),
        4 => Value::String(word(u)?),
        5 => Value::Array(
            (0..u.int_in_range(0..=3)?)
                .map(|_| json_value(u, depth - 1))
                .collect::<Result<_>>()?,
        ),
        _ => Value::Object(claims_map(u, depth - 1)?),
    })
}

fn claims_map(u: &mut Unstructured<'_>, depth: u32) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    for _ in 0..u.int_in_range(0..=4)? {
        let k = if u.ratio(1, 2)? {
            (*u.choose(&["sub", "name", "email", "role", "jti", "aud", "iss", "plan"])?).to_string()
        } else {
            String::arbitrary(u)?
        };
        m.insert(k, json_value(u, depth)?);
    }
    Ok(m)
}

/// Token claims: arbitrary application claims plus time claims that are, most of the
/// time, near [`props::NOW`] (so that tokens verify and are due, over age or expired).
#[derive(Debug, Clone)]
pub struct Claims(pub Map<String, Value>);

impl<'a> Arbitrary<'a> for Claims {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let mut m = claims_map(u, 2)?;
        for k in ["iat", "exp", "nbf", "auth_time", "rg_auth_time"] {
            match u.int_in_range(0..=5)? {
                0 | 1 => {}
                2 | 3 => {
                    let off: i32 = u.int_in_range(-200_000..=200_000)?;
                    m.insert(
                        k.into(),
                        Value::from(props::NOW.saturating_add_signed(off.into())),
                    );
                }
                4 => {
                    m.insert(k.into(), Value::from(u64::arbitrary(u)?));
                }
                _ => {
                    m.insert(k.into(), json_value(u, 1)?);
                }
            }
        }
        Ok(Claims(m))
    }
}

/// One cookie of a structured `Cookie` header.
#[derive(Debug, Clone)]
pub struct CookieItem(pub String, pub String);

impl<'a> Arbitrary<'a> for CookieItem {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let name = if u.ratio(1, 2)? {
            let base = *u.choose(&[
                "session",
                "__Secure-session",
                "__Host-session",
                "authjs.session-token",
                "__Secure-authjs.session-token",
                "next-auth.session-token",
            ])?;
            match u.int_in_range(0..=3)? {
                0 => base.to_string(),
                1 => format!("{base}.{}", u.int_in_range(0..=66)?),
                2 => format!("{base}.{}", String::arbitrary(u)?),
                _ => format!(" {base}\t"),
            }
        } else {
            word(u)?
        };
        Ok(CookieItem(name, word(u)?))
    }
}

/// A structured `Cookie` header: cookies joined with `; ` (or a fuzzed separator).
#[derive(Debug, Clone)]
pub struct CookieHeader(pub String);

impl<'a> Arbitrary<'a> for CookieHeader {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let items: Vec<CookieItem> = Vec::arbitrary(u)?;
        let mut out = String::new();
        for (i, c) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(*u.choose(&["; ", ";", " ; ", ";;"])?);
            }
            out.push_str(&c.0);
            out.push('=');
            out.push_str(&c.1);
        }
        Ok(CookieHeader(out))
    }
}

/// A path built from segments likely to matter: dot segments in every spelling,
/// encoded separators, `;params`, empty segments, trailing dots.
#[derive(Debug, Clone)]
pub struct PathInput(pub String);

impl<'a> Arbitrary<'a> for PathInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        const SEGS: &[&str] = &[
            "",
            ".",
            "..",
            "%2e",
            "%2E",
            ".%2e",
            "%2e.",
            "%2E%2e",
            "...",
            "a",
            "premium",
            "x;y",
            "a%3Bb",
            "b.",
            "c%2e",
            "%20",
            "d%20",
            "%2F",
            "%5c",
            "%00",
            "%41",
            "é",
            "_next",
            "data",
            "index.json",
            "%",
            "%zz",
            "?",
            "#",
            "\\",
            "a b",
        ];
        let mut p = String::new();
        for _ in 0..u.int_in_range(0..=8)? {
            p.push('/');
            if u.ratio(4, 5)? {
                p.push_str(u.choose(SEGS)?);
            } else {
                p.push_str(&String::arbitrary(u)?);
            }
        }
        if p.is_empty() || u.ratio(1, 8)? {
            p.push('/');
        }
        Ok(PathInput(p))
    }
}

/// Matcher sources built from path-to-regexp 6.3.0 syntax pieces.
#[derive(Debug, Clone)]
pub struct Source(pub String);

impl<'a> Arbitrary<'a> for Source {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        const PIECES: &[&str] = &[
            "/",
            "/about",
            "/:path",
            "/:path*",
            "/:path+",
            "/:path?",
            "/:id(\\d+)",
            "/(.*)",
            "/((?!api|_next/static|_next/image|favicon.ico).*)",
            "/((?!_next).*)",
            "{/:x}?",
            "{-:y}*",
            "(\\d+)",
            "(",
            ")",
            "{",
            "}",
            ":",
            "*",
            "+",
            "?",
            "\\",
            "/api",
            "/_next/data",
            ".json",
            "/:a-:b",
            "/:a.:b",
            "(?:x)",
            "([^/]+)",
            "(a|b)",
            "(?=x)",
            "((?!a).)*",
            "/[x]",
            "^",
            "$",
            "|",
        ];
        let mut s = String::new();
        for _ in 0..u.int_in_range(1..=5)? {
            if u.ratio(5, 6)? {
                s.push_str(u.choose(PIECES)?);
            } else {
                s.push_str(&String::arbitrary(u)?);
            }
        }
        Ok(Source(s))
    }
}

/// Next.js options the matcher wraps sources with.
pub fn next_options(u: &mut Unstructured<'_>) -> Result<rotagate::matcher::NextOptions> {
    Ok(rotagate::matcher::NextOptions {
        base_path: (*u.choose(&["", "", "/docs", "/a.b"])?).to_string(),
        locales: if u.ratio(1, 4)? {
            vec!["en".into(), "de-DE".into()]
        } else {
            Vec::new()
        },
        case_insensitive: u.ratio(1, 4)?,
    })
}

/// Paths to try a compiled matcher on: fuzzed, and variations of the sources.
pub fn paths(u: &mut Unstructured<'_>, sources: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for _ in 0..u.int_in_range(1..=6)? {
        let p = if u.ratio(1, 2)? {
            PathInput::arbitrary(u)?.0
        } else if let (true, Some(s)) = (u.ratio(1, 2)?, sources.first()) {
            // a source's literal text (a likely match) with a suffix
            let lit: String = s.chars().filter(|c| !"():*+?{}\\".contains(*c)).collect();
            format!(
                "{lit}{}",
                u.choose(&["", "/", "/x", ".json", ".rsc", "/a/b"])?
            )
        } else {
            String::arbitrary(u)?
        };
        out.push(p);
    }
    Ok(out)
}
