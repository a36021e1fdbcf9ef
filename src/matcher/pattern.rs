//! A port of path-to-regexp **6.3.0** (`lexer`, `parse`, `tokensToRegexp`), the version
//! Next.js bundles, with the options Next uses for middleware matchers (`tryToParsePath`:
//! default options; only the regex *source* is kept, so matching is case-sensitive).
//! Error messages are 6.3.0's, word for word.

/// A token of a parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// Literal text.
    Text(String),
    /// A parameter (named `:id` or unnamed `(…)`) or a `{…}` group.
    Key(Key),
}

/// A parameter or group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// Name (`id`), or the index of an unnamed group, or empty for a plain group.
    pub name: String,
    /// Text before the parameter that belongs to it (`/` in `/:id`).
    pub prefix: String,
    /// Text after it (only in `{…}` groups).
    pub suffix: String,
    /// The regex the parameter matches (JS syntax, as written).
    pub pattern: String,
    /// `""`, `?`, `*` or `+`.
    pub modifier: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Modifier,
    EscapedChar,
    Open,
    Close,
    Name,
    Pattern,
    Char,
    End,
}

impl Kind {
    fn js_name(self) -> &'static str {
        match self {
            Kind::Modifier => "MODIFIER",
            Kind::EscapedChar => "ESCAPED_CHAR",
            Kind::Open => "OPEN",
            Kind::Close => "CLOSE",
            Kind::Name => "NAME",
            Kind::Pattern => "PATTERN",
            Kind::Char => "CHAR",
            Kind::End => "END",
        }
    }
}

struct LexToken {
    kind: Kind,
    index: usize,
    value: String,
}

const DELIMITER: &str = "/#?";
const PREFIXES: &str = "./";

/// Escapes regex metacharacters as 6.3.0's `escapeString` does.
pub fn escape_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if ".+*?=^!:${}()[]|/\\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn lexer(s: &str) -> Result<Vec<LexToken>, String> {
    // path-to-regexp indexes UTF-16 code units; for the ASCII patterns of real configs
    // char indexes are the same
    let chars: Vec<char> = s.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' | '+' | '?' => {
                tokens.push(LexToken {
                    kind: Kind::Modifier,
                    index: i,
                    value: c.to_string(),
                });
                i += 1;
            }
            '\\' => {
                let v = chars.get(i + 1).map(|c| c.to_string()).unwrap_or_default();
                tokens.push(LexToken {
                    kind: Kind::EscapedChar,
                    index: i,
                    value: v,
                });
                i += 2;
            }
            '{' => {
                tokens.push(LexToken {
                    kind: Kind::Open,
                    index: i,
                    value: "{".into(),
                });
                i += 1;
            }
            '}' => {
                tokens.push(LexToken {
                    kind: Kind::Close,
                    index: i,
                    value: "}".into(),
                });
                i += 1;
            }
            ':' => {
                let mut name = String::new();
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                    name.push(chars[j]);
                    j += 1;
                }
                if name.is_empty() {
                    return Err(format!("Missing parameter name at {i}"));
                }
                tokens.push(LexToken {
                    kind: Kind::Name,
                    index: i,
                    value: name,
                });
                i = j;
            }
            '(' => {
                let mut count = 1;
                let mut pattern = String::new();
                let mut j = i + 1;
                if chars.get(j) == Some(&'?') {
                    return Err(format!("Pattern cannot start with \"?\" at {j}"));
                }
                while j < chars.len() {
                    if chars[j] == '\\' {
                        pattern.push(chars[j]);
                        if let Some(n) = chars.get(j + 1) {
                            pattern.push(*n);
                        }
                        j += 2;
                        continue;
                    }
                    if chars[j] == ')' {
                        count -= 1;
                        if count == 0 {
                            j += 1;
                            break;
                        }
                    } else if chars[j] == '(' {
                        count += 1;
                        if chars.get(j + 1) != Some(&'?') {
                            return Err(format!("Capturing groups are not allowed at {j}"));
                        }
                    }
                    pattern.push(chars[j]);
                    j += 1;
                }
                if count != 0 {
                    return Err(format!("Unbalanced pattern at {i}"));
                }
                if pattern.is_empty() {
                    return Err(format!("Missing pattern at {i}"));
                }
                tokens.push(LexToken {
                    kind: Kind::Pattern,
                    index: i,
                    value: pattern,
                });
                i = j;
            }
            _ => {
                tokens.push(LexToken {
                    kind: Kind::Char,
                    index: i,
                    value: c.to_string(),
                });
                i += 1;
            }
        }
    }
    tokens.push(LexToken {
        kind: Kind::End,
        index: i,
        value: String::new(),
    });
    Ok(tokens)
}

/// Parses a pattern into tokens (6.3.0 `parse` with default options).
pub fn parse(s: &str) -> Result<Vec<Token>, String> {
    let tokens = lexer(s)?;
    let mut result: Vec<Token> = Vec::new();
    let mut key = 0usize;
    let mut i = 0usize;
    let mut path = String::new();

    let try_consume = |i: &mut usize, kind: Kind| -> Option<String> {
        if *i < tokens.len() && tokens[*i].kind == kind {
            *i += 1;
            Some(tokens[*i - 1].value.clone())
        } else {
            None
        }
    };
    let must_consume = |i: &mut usize, kind: Kind| -> Result<String, String> {
        if *i < tokens.len() && tokens[*i].kind == kind {
            *i += 1;
            return Ok(tokens[*i - 1].value.clone());
        }
        let (next, index) = tokens
            .get(*i)
            .map_or(("END", s.len()), |t| (t.kind.js_name(), t.index));
        Err(format!(
            "Unexpected {next} at {index}, expected {}",
            kind.js_name()
        ))
    };
    let consume_text = |i: &mut usize| -> String {
        let mut out = String::new();
        while let Some(v) = try_consume(i, Kind::Char).or_else(|| try_consume(i, Kind::EscapedChar))
        {
            // JS `||` treats "" as false: an escaped char at the very end stops the loop
            if v.is_empty() {
                break;
            }
            out.push_str(&v);
        }
        out
    };
    let is_safe = |v: &str| DELIMITER.chars().any(|c| v.contains(c));
    let safe_pattern = |result: &Vec<Token>, prefix: &str| -> Result<String, String> {
        let prev = result.last();
        let prev_text = if !prefix.is_empty() {
            prefix.to_string()
        } else {
            match prev {
                Some(Token::Text(t)) => t.clone(),
                _ => String::new(),
            }
        };
        if let (Some(p), true) = (prev, prev_text.is_empty()) {
            let name = match p {
                Token::Key(k) => k.name.clone(),
                Token::Text(t) => t.clone(),
            };
            return Err(format!(
                "Must have text between two parameters, missing text after \"{name}\""
            ));
        }
        if prev_text.is_empty() || is_safe(&prev_text) {
            return Ok(format!("[^{}]+?", escape_string(DELIMITER)));
        }
        Ok(format!(
            "(?:(?!{})[^{}])+?",
            escape_string(&prev_text),
            escape_string(DELIMITER)
        ))
    };

    while i < tokens.len() {
        let ch = try_consume(&mut i, Kind::Char);
        let name = try_consume(&mut i, Kind::Name);
        let pattern = try_consume(&mut i, Kind::Pattern);
        if name.is_some() || pattern.is_some() {
            let mut prefix = ch.unwrap_or_default();
            if !PREFIXES.contains(prefix.as_str()) || prefix.is_empty() {
                // JS: prefixes.indexOf("") is 0, so an empty prefix stays empty either way
                if !prefix.is_empty() {
                    path.push_str(&prefix);
                }
                prefix = String::new();
            }
            if !path.is_empty() {
                result.push(Token::Text(std::mem::take(&mut path)));
            }
            let pat = match pattern {
                Some(p) => p,
                None => safe_pattern(&result, &prefix)?,
            };
            let name = match name {
                Some(n) => n,
                None => {
                    key += 1;
                    (key - 1).to_string()
                }
            };
            let modifier = try_consume(&mut i, Kind::Modifier).unwrap_or_default();
            result.push(Token::Key(Key {
                name,
                prefix,
                suffix: String::new(),
                pattern: pat,
                modifier,
            }));
            continue;
        }
        if let Some(v) = ch.or_else(|| try_consume(&mut i, Kind::EscapedChar)) {
            if !v.is_empty() {
                path.push_str(&v);
                continue;
            }
        }
        if !path.is_empty() {
            result.push(Token::Text(std::mem::take(&mut path)));
        }
        if try_consume(&mut i, Kind::Open).is_some() {
            let prefix = consume_text(&mut i);
            let name = try_consume(&mut i, Kind::Name).unwrap_or_default();
            let pattern = try_consume(&mut i, Kind::Pattern).unwrap_or_default();
            let suffix = consume_text(&mut i);
            must_consume(&mut i, Kind::Close)?;
            let (name, pattern) = if !name.is_empty() && pattern.is_empty() {
                let p = safe_pattern(&result, &prefix)?;
                (name, p)
            } else if name.is_empty() && !pattern.is_empty() {
                key += 1;
                ((key - 1).to_string(), pattern)
            } else {
                (name, pattern)
            };
            let modifier = try_consume(&mut i, Kind::Modifier).unwrap_or_default();
            result.push(Token::Key(Key {
                name,
                prefix,
                suffix,
                pattern,
                modifier,
            }));
            continue;
        }
        must_consume(&mut i, Kind::End)?;
    }
    Ok(result)
}

/// Builds the regex source (JS syntax) as 6.3.0's `tokensToRegexp` with default
/// options: `^…[\/#\?]?$` (non-strict: one trailing delimiter tolerated).
pub fn to_regex_source(tokens: &[Token]) -> Result<String, String> {
    let mut route = String::from("^");
    for t in tokens {
        match t {
            Token::Text(s) => route.push_str(&escape_string(s)),
            Token::Key(k) => {
                let prefix = escape_string(&k.prefix);
                let suffix = escape_string(&k.suffix);
                if !k.pattern.is_empty() {
                    if !prefix.is_empty() || !suffix.is_empty() {
                        if k.modifier == "+" || k.modifier == "*" {
                            let m = if k.modifier == "*" { "?" } else { "" };
                            route.push_str(&format!(
                                "(?:{prefix}((?:{p})(?:{suffix}{prefix}(?:{p}))*){suffix}){m}",
                                p = k.pattern
                            ));
                        } else {
                            route.push_str(&format!(
                                "(?:{prefix}({}){suffix}){}",
                                k.pattern, k.modifier
                            ));
                        }
                    } else {
                        if k.modifier == "+" || k.modifier == "*" {
                            return Err(format!(
                                "Can not repeat \"{}\" without a prefix and suffix",
                                k.name
                            ));
                        }
                        route.push_str(&format!("({}){}", k.pattern, k.modifier));
                    }
                } else {
                    route.push_str(&format!("(?:{prefix}{suffix}){}", k.modifier));
                }
            }
        }
    }
    route.push_str(&format!("[{}]?$", escape_string(DELIMITER)));
    Ok(route)
}

/// `pathToRegexp(source)` as Next's `tryToParsePath` runs it: the regex source. Like
/// Next 16 (`safeTokensToRegexp`), a repeated parameter without prefix and suffix,
/// which 6.3.0 refuses (`/x-:slug*`), is retried with the prefix `/`
/// (`normalizeTokensForRegexp`).
pub fn compile_source(source: &str) -> Result<String, String> {
    let tokens = parse(source)?;
    to_regex_source(&tokens).or_else(|_| {
        let normalised: Vec<Token> = tokens
            .into_iter()
            .map(|t| match t {
                Token::Key(mut k)
                    if (k.modifier == "*" || k.modifier == "+")
                        && k.prefix.is_empty()
                        && k.suffix.is_empty() =>
                {
                    k.prefix = "/".into();
                    Token::Key(k)
                }
                t => t,
            })
            .collect();
        to_regex_source(&normalised)
    })
}

/// JS whitespace (`\s` in a `RegExp`): ECMA-262 WhiteSpace and LineTerminator.
const JS_SPACE: &str =
    r"\t\n\x0B\x0C\r \xA0\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}\x{FEFF}";

/// What `.` matches in a JS `RegExp` without the `s` flag: anything but a line
/// terminator.
const JS_DOT: &str = r"[^\n\r\x{2028}\x{2029}]";

/// A JS `RegExp` source (as Next compiles matchers and `has` values: no flags) in the
/// regex crate's syntax *with JS meaning*: the regex crate reads `\d`, `\w` and `\b`
/// as Unicode classes and lets `.` match `\r`, U+2028 and U+2029, where JS is ASCII
/// and stops at every line terminator. Left as they are, `/post/:id(\d+)` would match
/// `/post/١٢` and `/((?!\d).*)` would not match it, unlike Next (differential corpus,
/// `tests/matcher_differential.rs`). `[]` (nothing) and `[^]` (anything) are JS's too.
pub fn js_semantics(js: &str) -> String {
    let mut out = String::with_capacity(js.len() + 16);
    let mut chars = js.chars().peekable();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('d') if in_class => out.push_str("0-9"),
                Some('d') => out.push_str("[0-9]"),
                Some('D') => out.push_str("[^0-9]"),
                Some('w') if in_class => out.push_str("0-9A-Za-z_"),
                Some('w') => out.push_str("[0-9A-Za-z_]"),
                Some('W') => out.push_str("[^0-9A-Za-z_]"),
                Some('s') if in_class => out.push_str(JS_SPACE),
                Some('s') => {
                    out.push('[');
                    out.push_str(JS_SPACE);
                    out.push(']');
                }
                Some('S') => {
                    out.push_str("[^");
                    out.push_str(JS_SPACE);
                    out.push(']');
                }
                Some('b') if !in_class => out.push_str("(?-u:\\b)"),
                Some('B') if !in_class => out.push_str("(?-u:\\B)"),
                Some(o) => {
                    out.push('\\');
                    out.push(o);
                }
                None => out.push('\\'),
            },
            '[' if !in_class => {
                let negated = chars.next_if_eq(&'^').is_some();
                if chars.next_if_eq(&']').is_some() {
                    // JS: `[]` matches nothing, `[^]` any character
                    out.push_str(if negated { "(?s:.)" } else { "[a&&b]" });
                } else {
                    in_class = true;
                    out.push_str(if negated { "[^" } else { "[" });
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            // a `[` inside a class is a literal in JS, a nested class in the regex crate
            '[' => out.push_str("\\["),
            '.' if !in_class => out.push_str(JS_DOT),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_sources_match_path_to_regexp_6_3_0() {
        // expected strings from path-to-regexp@6.3.0 `pathToRegexp(src).source`
        assert_eq!(compile_source("/about").unwrap(), "^\\/about[\\/#\\?]?$");
        assert_eq!(
            compile_source("/about/:path*").unwrap(),
            "^\\/about(?:\\/((?:[^\\/#\\?]+?)(?:\\/(?:[^\\/#\\?]+?))*))?[\\/#\\?]?$"
        );
        assert_eq!(
            compile_source("/user/:id(\\d+)").unwrap(),
            "^\\/user(?:\\/(\\d+))[\\/#\\?]?$"
        );
        assert_eq!(
            compile_source("/((?!api|_next/static).*)").unwrap(),
            "^(?:\\/((?!api|_next/static).*))[\\/#\\?]?$"
        );
    }

    #[test]
    fn js_classes_keep_their_js_meaning() {
        let re = |js: &str| regex::Regex::new(&js_semantics(js)).unwrap();
        assert!(re(r"^\d+$").is_match("123") && !re(r"^\d+$").is_match("١٢"));
        assert!(re(r"^[\d_]+$").is_match("1_2") && !re(r"^[\d]$").is_match("１"));
        assert!(re(r"^\w+$").is_match("a_1") && !re(r"^\w+$").is_match("été"));
        assert!(re(r"^\s$").is_match("\u{3000}") && !re(r"^\s$").is_match("\u{85}"));
        assert!(re(r"^.$").is_match("a") && !re(r"^.$").is_match("\u{2028}"));
        assert!(!re(r"^.$").is_match("\r") && re(r"^[.]$").is_match("."));
        assert!(!re(r"^a[]$").is_match("a") && re(r"^[^]$").is_match("\n"));
        assert!(re(r"^[[]$").is_match("[") && re(r"^\.$").is_match("."));
        assert!(re(r"^\D\W\S$").is_match("a-x"));
        // ASCII word boundary: `é` is no word character in JS
        assert!(re(r"^a\b").is_match("a-") && re(r"^a\b").is_match("aé"));
    }

    #[test]
    fn errors_are_6_3_0_words() {
        assert_eq!(
            compile_source("/:").unwrap_err(),
            "Missing parameter name at 1"
        );
        assert_eq!(
            compile_source("/(abc").unwrap_err(),
            "Unbalanced pattern at 1"
        );
        assert_eq!(
            compile_source("/(?abc)").unwrap_err(),
            "Pattern cannot start with \"?\" at 2"
        );
        assert_eq!(
            compile_source("/((a))").unwrap_err(),
            "Capturing groups are not allowed at 2"
        );
        assert_eq!(compile_source("/()").unwrap_err(), "Missing pattern at 1");
        assert_eq!(
            compile_source("/{abc").unwrap_err(),
            "Unexpected END at 5, expected CLOSE"
        );
        assert_eq!(
            compile_source("/:a:b").unwrap_err(),
            "Must have text between two parameters, missing text after \"a\""
        );
        assert_eq!(
            to_regex_source(&parse("/x-:slug*").unwrap()).unwrap_err(),
            "Can not repeat \"slug\" without a prefix and suffix"
        );
        // … which Next 16 retries with a `/` prefix
        assert_eq!(
            compile_source("/x-:slug*").unwrap(),
            "^\\/x-(?:\\/((?:[^\\/#\\?]+?)(?:\\/(?:[^\\/#\\?]+?))*))?[\\/#\\?]?$"
        );
    }
}
