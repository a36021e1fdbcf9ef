//! The session cookie on the wire: reading it (plain or in chunks) from a request's
//! `Cookie` header, writing `Set-Cookie` values for a new token (chunked, with stale
//! chunks deleted), deletions browsers honour, and the rewritten upstream `Cookie`.

use cookie::time::{Duration as CDuration, OffsetDateTime};
use cookie::{Cookie, SameSite as CSameSite};

use crate::config::{CookieAttributes, SameSite};

/// `name=value` pairs of a `Cookie` header, in order (malformed pairs skipped).
pub fn pairs(header: &str) -> Vec<(&str, &str)> {
    header
        .split(';')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k, v.trim()))
        })
        .collect()
}

/// The session token a request carried, and under which cookie names.
#[derive(Clone, PartialEq, Eq)]
pub struct Carried {
    /// The token (chunks joined). Never formatted by `Debug`.
    pub token: String,
    /// Every cookie name that belongs to the session: the plain name and/or `name.N`.
    pub names: Vec<String>,
}

impl std::fmt::Debug for Carried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Carried")
            .field("token", &"[redacted]")
            .field("names", &self.names)
            .finish()
    }
}

/// Chunk index of `cookie` if it is `name.N`.
fn chunk_index(cookie: &str, name: &str) -> Option<usize> {
    cookie.strip_prefix(name)?.strip_prefix('.')?.parse().ok()
}

/// Reads the session token named `name`: the chunks `name.0`, `name.1`, … joined in
/// index order when `name.0` is present (Auth.js' SessionStore), else the plain
/// cookie. Every session cookie seen is listed so stale ones can be deleted.
pub fn read(pairs: &[(&str, &str)], name: &str) -> Option<Carried> {
    let mut plain: Option<&str> = None;
    let mut chunks: Vec<(usize, &str)> = Vec::new();
    let mut names = Vec::new();
    for (k, v) in pairs {
        if *k == name {
            // the first of duplicate names wins, as browsers send the most specific first
            if plain.is_none() {
                plain = Some(v);
                names.push(k.to_string());
            }
        } else if let Some(i) = chunk_index(k, name) {
            if !chunks.iter().any(|(j, _)| *j == i) {
                chunks.push((i, v));
                names.push(k.to_string());
            }
        }
    }
    chunks.sort_unstable_by_key(|(i, _)| *i);
    let token = if chunks.first().is_some_and(|(i, _)| *i == 0) {
        // only the contiguous run from 0: a gap means a lost chunk, and the rest is junk
        let mut t = String::new();
        for (n, (i, v)) in chunks.iter().enumerate() {
            if *i != n {
                break;
            }
            t.push_str(v);
        }
        t
    } else {
        plain?.to_string()
    };
    (!token.is_empty()).then_some(Carried { token, names })
}

/// The cookies a token is stored in: `[(name, value)]`, chunked at `chunk_size`.
pub fn split(name: &str, token: &str, chunk_size: usize) -> Vec<(String, String)> {
    if token.len() <= chunk_size {
        return vec![(name.to_string(), token.to_string())];
    }
    // tokens are ASCII (base64url and dots), so byte chunks are char chunks
    token
        .as_bytes()
        .chunks(chunk_size.max(1))
        .enumerate()
        .map(|(i, c)| {
            (
                format!("{name}.{i}"),
                String::from_utf8_lossy(c).into_owned(),
            )
        })
        .collect()
}

fn same_site(s: SameSite) -> CSameSite {
    match s {
        SameSite::Strict => CSameSite::Strict,
        SameSite::Lax => CSameSite::Lax,
        SameSite::None => CSameSite::None,
    }
}

/// Applies the prefix rules browsers enforce: `__Host-` needs Secure, Path=/ and no
/// Domain; `__Secure-` needs Secure. Without them the browser drops the cookie.
fn attrs_for(name: &str, a: &CookieAttributes) -> (String, Option<String>, bool) {
    if name.starts_with("__Host-") {
        ("/".to_string(), None, true)
    } else {
        (
            a.path.clone(),
            a.domain.clone(),
            a.secure || name.starts_with("__Secure-"),
        )
    }
}

fn build(name: &str, value: &str, a: &CookieAttributes, max_age: i64, now: u64) -> String {
    let (path, domain, secure) = attrs_for(name, a);
    let expires = OffsetDateTime::from_unix_timestamp(now as i64 + max_age)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let mut c = Cookie::build((name.to_string(), value.to_string()))
        .path(path)
        .secure(secure)
        .http_only(a.http_only)
        .same_site(same_site(a.same_site))
        .max_age(CDuration::seconds(max_age))
        .expires(expires);
    if let Some(d) = domain {
        c = c.domain(d);
    }
    c.build().to_string()
}

/// A `Set-Cookie` that deletes `name` with the given attributes: empty value,
/// `Max-Age=0` and an `Expires` in the past, same Path/Domain, prefix rules applied.
pub fn deletion(name: &str, a: &CookieAttributes) -> String {
    let (path, domain, secure) = attrs_for(name, a);
    let mut c = Cookie::build((name.to_string(), String::new()))
        .path(path)
        .secure(secure)
        .http_only(a.http_only)
        .same_site(same_site(a.same_site))
        .max_age(CDuration::ZERO)
        .expires(OffsetDateTime::UNIX_EPOCH);
    if let Some(d) = domain {
        c = c.domain(d);
    }
    c.build().to_string()
}

/// `Set-Cookie` values for a new token's cookies (from [`split`]), then
/// deletions of every session cookie the request carried that the new set does not
/// overwrite (a plain cookie after chunking, chunks past the new count, …).
pub fn set_cookies(
    parts: &[(String, String)],
    a: &CookieAttributes,
    max_age: i64,
    now: u64,
    carried: &[String],
) -> Vec<String> {
    let mut out: Vec<String> = parts
        .iter()
        .map(|(n, v)| build(n, v, a, max_age, now))
        .collect();
    for old in carried {
        if !parts.iter().any(|(n, _)| n == old) {
            out.push(deletion(old, a));
        }
    }
    out
}

/// The merged upstream `Cookie` value with the session cookies replaced by `new`
/// (or removed when `new` is empty) where the first of them stood; other cookies keep
/// their order. `None` when nothing is left.
pub fn rewrite(pairs: &[(&str, &str)], name: &str, new: &[(String, String)]) -> Option<String> {
    let mut out = String::new();
    let mut placed = false;
    let push = |out: &mut String, k: &str, v: &str| {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    };
    for (k, v) in pairs {
        if *k == name || chunk_index(k, name).is_some() {
            if !placed {
                for (nk, nv) in new {
                    push(&mut out, nk, nv);
                }
                placed = true;
            }
            continue;
        }
        push(&mut out, k, v);
    }
    if !placed {
        for (nk, nv) in new {
            push(&mut out, nk, nv);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// True when a response `Set-Cookie` value sets the session cookie (or a chunk of it):
/// then the app's own value wins and rotagate adds none.
pub fn sets_session_cookie(set_cookie: &str, name: &str) -> bool {
    let n = set_cookie.split_once('=').map_or("", |(k, _)| k.trim());
    n == name || chunk_index(n, name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs() -> CookieAttributes {
        CookieAttributes {
            path: "/".into(),
            domain: None,
            secure: false,
            http_only: true,
            same_site: SameSite::Lax,
        }
    }

    #[test]
    fn reads_plain_and_chunked() {
        let p = pairs("a=1; s=tok; b=2");
        assert_eq!(read(&p, "s").unwrap().token, "tok");
        let p = pairs("s.1=def; a=1; s.0=abc; s.2=ghi");
        let c = read(&p, "s").unwrap();
        assert_eq!(c.token, "abcdefghi");
        assert_eq!(c.names, vec!["s.1", "s.0", "s.2"]);
        assert!(read(&pairs("a=1; sx=2; s.x=3"), "s").is_none());
        // a gap stops the join
        assert_eq!(read(&pairs("s.0=ab; s.2=zz"), "s").unwrap().token, "ab");
    }

    #[test]
    fn chunking_round_trips() {
        let token = "x".repeat(10_000);
        let parts = split("s", &token, 3936);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].0, "s.0");
        let header = parts
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        assert_eq!(read(&pairs(&header), "s").unwrap().token, token);
    }

    #[test]
    fn stale_chunks_are_deleted() {
        let carried = vec!["s.0".to_string(), "s.1".to_string(), "s.2".to_string()];
        let out = set_cookies(&split("s", "short", 3936), &attrs(), 300, 1_000, &carried);
        assert_eq!(out.len(), 4);
        assert!(out[0].starts_with("s=short; "), "{}", out[0]);
        assert!(out[0].contains("Max-Age=300"));
        for (i, d) in out[1..].iter().enumerate() {
            assert!(d.starts_with(&format!("s.{i}=; ")), "{d}");
            assert!(
                d.contains("Max-Age=0") && d.contains("Expires=Thu, 01 Jan 1970 00:00:00 GMT"),
                "{d}"
            );
        }
    }

    #[test]
    fn deletion_follows_prefix_rules() {
        let mut a = attrs();
        a.domain = Some("example.com".into());
        a.path = "/app".into();
        let d = deletion("__Host-s", &a);
        assert!(
            d.contains("Path=/") && d.contains("Secure") && !d.contains("Domain"),
            "{d}"
        );
        let d = deletion("__Secure-s", &a);
        assert!(
            d.contains("Secure") && d.contains("Domain=example.com") && d.contains("Path=/app"),
            "{d}"
        );
    }

    #[test]
    fn rewrite_replaces_in_place() {
        let p = pairs("a=1; s.0=x; b=2; s.1=y");
        let new = vec![("s".to_string(), "new".to_string())];
        assert_eq!(rewrite(&p, "s", &new).as_deref(), Some("a=1; s=new; b=2"));
        assert_eq!(rewrite(&p, "s", &[]).as_deref(), Some("a=1; b=2"));
        assert_eq!(rewrite(&pairs("s=1"), "s", &[]), None);
    }

    #[test]
    fn recognises_the_apps_own_session_cookie() {
        assert!(sets_session_cookie("s=abc; Path=/", "s"));
        assert!(sets_session_cookie("s.1=abc", "s"));
        assert!(!sets_session_cookie("sx=abc", "s"));
    }
}
