//! Path normalisation before matching and forwarding.
//!
//! The upstream must see exactly the path the rules were matched against, or an
//! encoded path could slip past a rule the app would serve (`/x/..%2Fpremium` is
//! `/premium` to many apps). So the proxy resolves dot segments itself, refuses what it
//! cannot resolve unambiguously (encoded `/`, `\`, NUL, control characters), and
//! forwards the result.
//!
//! Some paths mean different things to different servers: Tomcat and Jetty cut
//! `;params` from every segment (`/x/..;/premium` is `/premium` to them), many servers
//! merge `//`, Windows and IIS drop a segment's trailing dots and spaces. By default
//! ([`Strictness::Strict`]) such paths are refused; [`Strictness::Lenient`] lets the
//! `;`, empty-segment and trailing-dot forms through for apps that need them, and then
//! matches rules against the path as those servers read it (see [`Normalised`]).

/// How strictly paths that other servers read differently are refused
/// (`listen.path_strictness`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Strictness {
    /// Refuse `;` in a segment, empty segments and trailing dots (the default).
    #[default]
    Strict,
    /// Let them through; match rules against the path with `;params` cut, empty
    /// segments merged and trailing dots dropped.
    Lenient,
}

/// Why a request path was refused (→ 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (not origin-form).
    #[error("path must start with '/'")]
    NotOriginForm,
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding in path")]
    BadPercentEncoding,
    /// `%2F` / `%5C` / `%00` (encoded slash, backslash or NUL).
    #[error("encoded '/', '\\' or NUL in path")]
    EncodedSeparator,
    /// A raw backslash or control character.
    #[error("invalid character in path")]
    BadCharacter,
    /// An encoded control character (`%01`–`%1F`, `%7F`).
    #[error("encoded control character in path")]
    EncodedControl,
    /// `;` (or `%3B`) in a segment: path parameters, which Java servers cut.
    #[error("';' in a path segment")]
    Semicolon,
    /// An empty segment (`//`) before the last one, which many servers merge.
    #[error("empty path segment")]
    EmptySegment,
    /// A segment ending in `.` (or `%2E`) that is not a dot segment: Windows drops it.
    #[error("path segment ending in '.'")]
    TrailingDot,
    /// A segment ending in encoded whitespace (`%20`): Windows and some frameworks trim it.
    #[error("path segment ending in whitespace")]
    TrailingWhitespace,
}

impl PathError {
    /// The metric reason (`rotagate_hygiene_total{reason=…}`).
    pub fn reason(&self) -> &'static str {
        match self {
            PathError::NotOriginForm => "path_not_origin_form",
            PathError::BadPercentEncoding => "path_bad_encoding",
            PathError::EncodedSeparator => "path_encoded_separator",
            PathError::BadCharacter => "path_bad_character",
            PathError::EncodedControl => "path_control",
            PathError::Semicolon => "path_semicolon",
            PathError::EmptySegment => "path_empty_segment",
            PathError::TrailingDot => "path_trailing_dot",
            PathError::TrailingWhitespace => "path_trailing_whitespace",
        }
    }
}

/// A normalised path: what is forwarded, and what rules are matched against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalised {
    /// The path sent upstream (dot segments resolved).
    pub forward: String,
    /// With [`Strictness::Lenient`], when the path has `;params`, empty segments or
    /// trailing dots: the path as servers that cut, merge or drop them read it, so a
    /// rule for `/premium/:path*` still sees `/premium;v=1/r`. `None`: same as `forward`.
    pub matching: Option<String>,
}

impl Normalised {
    /// The path rules are matched against.
    pub fn matching(&self) -> &str {
        self.matching.as_deref().unwrap_or(&self.forward)
    }
}

/// [`normalise_with`] at [`Strictness::Strict`], returning the forwarded path.
pub fn normalise(raw: &str) -> Result<String, PathError> {
    normalise_with(raw, Strictness::Strict).map(|n| n.forward)
}

/// Normalises a request path (no query): resolves `.`/`..` segments (also written
/// `%2E`); refuses encoded `/`, `\` and NUL, raw backslashes, raw and encoded control
/// characters, bad percent-encoding and segments ending in encoded whitespace; and,
/// when `strictness` is strict, `;` in a segment, empty segments before the last and
/// segments ending in `.`. Other percent-escapes are kept as sent (`/My%20File.pdf` is
/// fine: whitespace inside a segment is not refused).
pub fn normalise_with(raw: &str, strictness: Strictness) -> Result<Normalised, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    let strict = strictness == Strictness::Strict;
    let bytes = raw.as_bytes();
    let mut needs_work = false;
    let mut ambiguous = false;
    let mut seg_start = 1;
    let mut i = 1;
    loop {
        if i >= bytes.len() || bytes[i] == b'/' {
            let last = i >= bytes.len();
            if let Some(e) = segment_problem(&raw[seg_start..i], last) {
                if strict || e == PathError::TrailingWhitespace {
                    return Err(e);
                }
                ambiguous = true;
            }
            if last {
                break;
            }
            i += 1;
            seg_start = i;
            continue;
        }
        match bytes[i] {
            b'%' => {
                let (Some(h), Some(l)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
                    return Err(PathError::BadPercentEncoding);
                };
                let (Some(h), Some(l)) = (hex(*h), hex(*l)) else {
                    return Err(PathError::BadPercentEncoding);
                };
                match h << 4 | l {
                    b'/' | b'\\' | 0 => return Err(PathError::EncodedSeparator),
                    c if c < 0x20 || c == 0x7f => return Err(PathError::EncodedControl),
                    b'.' => needs_work = true,
                    _ => {}
                }
                i += 3;
            }
            b'\\' => return Err(PathError::BadCharacter),
            c if c < 0x20 || c == 0x7f => return Err(PathError::BadCharacter),
            b'.' => {
                needs_work = true;
                i += 1;
            }
            _ => i += 1,
        }
    }
    let forward = if needs_work {
        resolve_dots(raw)
    } else {
        raw.to_string()
    };
    let matching = ambiguous.then(|| resolve_dots(&as_lenient_servers_read(raw)));
    Ok(Normalised { forward, matching })
}

/// What is ambiguous about one segment (`last`: the segment after the final `/`, which
/// may be empty: `/docs/`).
fn segment_problem(seg: &str, last: bool) -> Option<PathError> {
    if is_dot(seg) || is_dotdot(seg) {
        return None;
    }
    if seg.is_empty() {
        return (!last).then_some(PathError::EmptySegment);
    }
    let ends_with = |suffix: &str| ends_with_ignore_case(seg, suffix);
    if ends_with("%20") {
        return Some(PathError::TrailingWhitespace);
    }
    if seg.contains(';') || contains_ignore_case(seg, "%3b") {
        return Some(PathError::Semicolon);
    }
    if ends_with(".") || ends_with("%2e") {
        return Some(PathError::TrailingDot);
    }
    None
}

/// Byte-wise, so a multi-byte character before the suffix cannot split a slice.
fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    let (s, suffix) = (s.as_bytes(), suffix.as_bytes());
    s.len() >= suffix.len() && s[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    hay.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// The path as servers that cut `;params`, merge empty segments and drop trailing dots
/// read it (dot segments not yet resolved): `/x/..;/premium` → `/x/../premium`.
fn as_lenient_servers_read(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let segments: Vec<&str> = raw[1..].split('/').collect();
    let n = segments.len();
    for (k, seg) in segments.into_iter().enumerate() {
        let cut = match (seg.find(';'), find_ignore_case(seg, "%3b")) {
            (Some(a), Some(b)) => &seg[..a.min(b)],
            (Some(a), None) | (None, Some(a)) => &seg[..a],
            (None, None) => seg,
        };
        let mut s = cut;
        if !(is_dot(s) || is_dotdot(s)) {
            loop {
                if let Some(t) = s.strip_suffix('.') {
                    s = t;
                } else if ends_with_ignore_case(s, "%2e") {
                    s = &s[..s.len() - 3];
                } else {
                    break;
                }
            }
        }
        if s.is_empty() && k + 1 < n {
            continue;
        }
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn find_ignore_case(hay: &str, needle: &str) -> Option<usize> {
    hay.as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// RFC 3986 §5.2.4 over segments; a segment is a dot segment when it decodes to
/// "."/"..". A path ending in a dot segment keeps its trailing `/`.
fn resolve_dots(raw: &str) -> String {
    let ends_with_dot = {
        let last = raw.rsplit('/').next().unwrap_or("");
        is_dot(last) || is_dotdot(last)
    };
    let mut out: Vec<&str> = Vec::new();
    for seg in raw[1..].split('/') {
        if is_dot(seg) {
            continue;
        }
        if is_dotdot(seg) {
            out.pop();
            continue;
        }
        out.push(seg);
    }
    let mut path = String::with_capacity(raw.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() || ends_with_dot {
        path.push('/');
    }
    path
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_dot(seg: &str) -> bool {
    seg == "." || seg.eq_ignore_ascii_case("%2e")
}

fn is_dotdot(seg: &str) -> bool {
    matches!(seg.len(), 2 | 4 | 6) && {
        let s = seg.to_ascii_lowercase();
        s == ".." || s == ".%2e" || s == "%2e." || s == "%2e%2e"
    }
}

/// The percent-decoded form of a normalised path, when it differs and is valid UTF-8
/// (rules are tried against both, as DESIGN §3 says).
pub fn decoded(path: &str) -> Option<String> {
    if !path.contains('%') {
        return None;
    }
    let d = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?;
    (d != path).then(|| d.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_dot_segments() {
        for (raw, want) in [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../../a", "/a"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/x/%2e%2e/premium", "/premium"),
            ("/x/.%2E/premium", "/premium"),
            ("/x/%2e/y", "/x/y"),
            ("/a.b/c..d", "/a.b/c..d"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/..", "/"),
        ] {
            assert_eq!(normalise(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn refuses_what_cannot_be_resolved() {
        assert_eq!(
            normalise("/x/..%2Fpremium"),
            Err(PathError::EncodedSeparator)
        );
        assert_eq!(normalise("/x%2f"), Err(PathError::EncodedSeparator));
        assert_eq!(normalise("/a%5Cb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalise("/a%00"), Err(PathError::EncodedSeparator));
        assert_eq!(normalise("/a%zz"), Err(PathError::BadPercentEncoding));
        assert_eq!(normalise("/a%2"), Err(PathError::BadPercentEncoding));
        assert_eq!(normalise("/a%"), Err(PathError::BadPercentEncoding));
        assert_eq!(normalise("/a\\b"), Err(PathError::BadCharacter));
        assert_eq!(normalise("a"), Err(PathError::NotOriginForm));
        assert_eq!(normalise("*"), Err(PathError::NotOriginForm));
    }

    #[test]
    fn strict_refuses_what_other_servers_read_differently() {
        for (raw, want) in [
            ("/x/..;/premium", PathError::Semicolon),
            ("/premium;jsessionid=1/r", PathError::Semicolon),
            ("/premium%3Bx/r", PathError::Semicolon),
            ("//premium/r", PathError::EmptySegment),
            ("/a//b", PathError::EmptySegment),
            ("/premium./r", PathError::TrailingDot),
            ("/file.", PathError::TrailingDot),
            ("/premium.../r", PathError::TrailingDot),
            ("/premium%2e/r", PathError::TrailingDot),
            ("/premium%20/r", PathError::TrailingWhitespace),
            ("/a%09", PathError::EncodedControl),
            ("/a%0Db", PathError::EncodedControl),
            ("/a%7F", PathError::EncodedControl),
            ("/a%1f/b", PathError::EncodedControl),
        ] {
            assert_eq!(normalise(raw), Err(want.clone()), "{raw}");
            assert!(want.reason().starts_with("path_"));
        }
        for ok in [
            "/My%20File.pdf",
            "/a%20b/c",
            "/docs/",
            "/",
            "/a/./b/../c",
            "/a/.",
            "/.well-known/x",
        ] {
            assert!(normalise(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn lenient_matches_as_lenient_servers_read() {
        let n = |raw: &str| normalise_with(raw, Strictness::Lenient);
        for (raw, forward, matching) in [
            ("/x/..;/premium", "/x/..;/premium", Some("/premium")),
            (
                "/premium;jsessionid=1/r",
                "/premium;jsessionid=1/r",
                Some("/premium/r"),
            ),
            ("//premium/r", "//premium/r", Some("/premium/r")),
            ("/a//b/", "/a//b/", Some("/a/b/")),
            ("/file.", "/file.", Some("/file")),
            (
                "/x/%2e%2E;a/premium",
                "/x/%2e%2E;a/premium",
                Some("/premium"),
            ),
            (
                "/x/..%2E;a/premium",
                "/x/..%2E;a/premium",
                Some("/x/premium"),
            ),
            ("/;a/b", "/;a/b", Some("/b")),
            ("/plain/path", "/plain/path", None),
            ("/a/../b", "/b", None),
        ] {
            let got = n(raw).unwrap();
            assert_eq!(got.forward, forward, "{raw}");
            assert_eq!(got.matching.as_deref(), matching, "{raw}");
        }
        // never allowed, even lenient
        assert_eq!(n("/premium%20/r"), Err(PathError::TrailingWhitespace));
        assert_eq!(n("/a%01"), Err(PathError::EncodedControl));
        assert_eq!(n("/a%2Fb"), Err(PathError::EncodedSeparator));
    }

    #[test]
    fn never_panics_on_odd_input() {
        let odd = [
            "/%",
            "/%%",
            "/%e",
            "/é/%C3",
            "/\u{7f}",
            "/%2e%2",
            "/..%",
            "/\u{0}",
            "/a/%2E%2E%2F",
        ];
        for s in odd {
            let _ = normalise(s);
            let _ = normalise_with(s, Strictness::Lenient);
            let _ = decoded(s);
        }
        // every 2-byte combination after "/%" and "/."
        for a in 0u8..=127 {
            for b in 0u8..=127 {
                let s = format!("/%{}{}", a as char, b as char);
                let _ = normalise(&s);
                let s = format!("/.{}{}", a as char, b as char);
                let _ = normalise(&s);
                let s = format!("/;{}/{}%3b.", a as char, b as char);
                let _ = normalise_with(&s, Strictness::Lenient);
            }
        }
    }

    #[test]
    fn never_panics_on_combinations_of_tricky_pieces() {
        const PIECES: [&str; 12] = [
            "é", ".", "%2e", ";", "%3b", "%20", "/", "..", "a", "%C3", "€", "%2E%2e",
        ];
        for a in PIECES {
            for b in PIECES {
                for c in PIECES {
                    for d in PIECES {
                        let s = format!("/{a}{b}{c}{d}");
                        for strictness in [Strictness::Strict, Strictness::Lenient] {
                            if let Ok(n) = normalise_with(&s, strictness) {
                                assert!(n.forward.starts_with('/'), "{s}");
                                assert!(n.matching().starts_with('/'), "{s}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn decoded_form() {
        assert_eq!(decoded("/caf%C3%A9").as_deref(), Some("/café"));
        assert_eq!(decoded("/plain"), None);
        assert_eq!(decoded("/bad%FF"), None);
    }
}
