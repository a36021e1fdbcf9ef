//! Path normalisation before matching and forwarding.
//!
//! The upstream must see exactly the path the rules were matched against, or an
//! encoded path could slip past a rule the app would serve (`/x/..%2Fpremium` is
//! `/premium` to many apps). So the proxy resolves dot segments itself, refuses what it
//! cannot resolve unambiguously (encoded `/`, `\`, NUL), and forwards the result.

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
}

/// Normalises a request path (no query): resolves `.`/`..` segments (also written
/// `%2E`), refuses encoded `/`, `\` and NUL, raw backslashes and control characters,
/// and bad percent-encoding. Other percent-escapes and `//` are kept as sent: they
/// mean something to some apps, and they cannot move a path across a segment.
pub fn normalise(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    let bytes = raw.as_bytes();
    let mut needs_work = false;
    let mut i = 0;
    while i < bytes.len() {
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
    if !needs_work {
        return Ok(raw.to_string());
    }
    // RFC 3986 §5.2.4 over segments; a segment is a dot segment when it decodes to "."/".."
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
    Ok(path)
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
            ("/a//b", "/a//b"),
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
            let _ = decoded(s);
        }
        // every 2-byte combination after "/%" and "/."
        for a in 0u8..=127 {
            for b in 0u8..=127 {
                let s = format!("/%{}{}", a as char, b as char);
                let _ = normalise(&s);
                let s = format!("/.{}{}", a as char, b as char);
                let _ = normalise(&s);
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
