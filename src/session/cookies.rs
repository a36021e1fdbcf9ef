//! The session cookie on the wire: reading it (plain or in chunks) from a request's
//! `Cookie` header, writing `Set-Cookie` values for a new token (chunked, with stale
//! chunks deleted), deletions browsers honour, and the rewritten upstream `Cookie`.

use cookie::time::{Duration as CDuration, OffsetDateTime};
use cookie::{Cookie, SameSite as CSameSite};

use crate::config::{CookieAttributes, SameSite};

/// Most cookies read from one request. No browser keeps more for one site (Chrome's
/// cap is 180), and every cookie read costs work on each request that handles
/// sessions; on those routes the cookies past this are not forwarded either
/// (DESIGN §10 "Bounded work per request").
pub const MAX_COOKIES: usize = 256;

/// `name=value` pairs of a `Cookie` header, in order (malformed pairs skipped).
pub fn pairs(header: &str) -> Vec<(&str, &str)> {
    pairs_bounded(header, usize::MAX).0
}

/// Trims optional whitespace (RFC 9110 OWS: spaces and tabs).
fn ows(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// The first `max` `name=value` pairs of a `Cookie` header, and whether there were
/// more. One pass over the bytes: a `Cookie` value is visible ASCII, so only spaces
/// and tabs are trimmed.
pub fn pairs_bounded(header: &str, max: usize) -> (Vec<(&str, &str)>, bool) {
    let mut out = Vec::with_capacity((header.len() / 16 + 1).min(max));
    for kv in header.split(';') {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        let k = ows(k);
        if k.is_empty() {
            continue;
        }
        if out.len() == max {
            return (out, true);
        }
        out.push((k, ows(v)));
    }
    (out, false)
}

/// Most chunks a session token is read from: a chunk set with more is malformed, so a
/// request cannot make rotagate join and verify an unbounded token (DESIGN §10).
pub const MAX_CHUNKS: usize = 64;

/// Most candidate tokens (duplicate cookies, several chunk sets) verified per request:
/// each costs a signature check, so a flood of duplicates cannot multiply the work. The
/// ones past this are never verified, so they are removed from the upstream request.
pub const MAX_CANDIDATES: usize = 4;

/// The chunks a valid session can have: all of them must fit in one request header
/// block (`max_header_bytes`, else the request is refused with 431), and never more
/// than [`MAX_CHUNKS`]. Deletions on logout stop there.
pub fn max_valid_chunks(max_header_bytes: usize, chunk_size: usize) -> usize {
    max_header_bytes.div_ceil(chunk_size.max(1)).min(MAX_CHUNKS)
}

/// The name prefixes browsers give meaning to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    /// No prefix.
    None,
    /// `__Secure-`.
    Secure,
    /// `__Host-`.
    Host,
}

impl Prefix {
    /// All three, in the order deletions are written.
    pub const ALL: [Prefix; 3] = [Prefix::None, Prefix::Secure, Prefix::Host];

    /// The prefix as written in a cookie name.
    pub fn as_str(self) -> &'static str {
        match self {
            Prefix::None => "",
            Prefix::Secure => "__Secure-",
            Prefix::Host => "__Host-",
        }
    }

    /// Splits a cookie name into its prefix and the rest.
    pub fn split(name: &str) -> (Prefix, &str) {
        if let Some(rest) = name.strip_prefix("__Secure-") {
            (Prefix::Secure, rest)
        } else if let Some(rest) = name.strip_prefix("__Host-") {
            (Prefix::Host, rest)
        } else {
            (Prefix::None, name)
        }
    }

    fn index(self) -> usize {
        match self {
            Prefix::None => 0,
            Prefix::Secure => 1,
            Prefix::Host => 2,
        }
    }
}

/// What a cookie of a session family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The plain name.
    Plain,
    /// A chunk `name.N` (an index too large for `usize` saturates).
    Chunk(usize),
    /// Another name the app reads as part of the session (Auth.js joins every cookie
    /// whose name starts with the session name): never read, always removed upstream.
    Stray,
}

/// Where a cookie name sits in a session family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Which twin.
    pub prefix: Prefix,
    /// Which part.
    pub part: Part,
}

/// Every name a session cookie may have: the configured name without its prefix (the
/// base), its plain, `__Secure-` and `__Host-` twins, and every chunk `name.N` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    base: String,
    /// Any name that starts with a twin belongs (Auth.js' `SessionStore` reads them all).
    loose: bool,
}

impl Family {
    /// The family of `cookie`; `loose` for apps that read every cookie whose name starts
    /// with the session name (the Auth.js formats).
    pub fn new(cookie: &str, loose: bool) -> Family {
        Family {
            base: Prefix::split(cookie).1.to_string(),
            loose,
        }
    }

    /// The name without prefix.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The twin of the base with prefix `p`.
    pub fn name(&self, p: Prefix) -> String {
        format!("{}{}", p.as_str(), self.base)
    }

    /// `Some` when `name` belongs to the family.
    pub fn member(&self, name: &str) -> Option<Member> {
        member(name, &self.base, self.loose)
    }
}

/// `Some` when `name` is `base`, a twin of it or a chunk of either; with `loose`, also
/// any other name that starts with one of them.
pub fn member(name: &str, base: &str, loose: bool) -> Option<Member> {
    let (prefix, rest) = Prefix::split(name);
    let tail = rest.strip_prefix(base)?;
    let part = if tail.is_empty() {
        Part::Plain
    } else {
        match tail.strip_prefix('.') {
            Some(d) if !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) => {
                // `.0001` is chunk 1 to apps that parseInt it; huge indexes are junk
                Part::Chunk(d.parse().unwrap_or(usize::MAX))
            }
            _ if loose => Part::Stray,
            _ => return None,
        }
    };
    Some(Member { prefix, part })
}

/// The cookies a candidate token is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Parts<'a> {
    Plain([(&'a str, &'a str); 1]),
    Chunks(Vec<(&'a str, &'a str)>),
}

/// One token a request carries: a plain cookie or a chunk set, under one of the names
/// the engine reads. Its value is never formatted by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Index into the names read (see [`scan`]).
    pub name: usize,
    /// More than [`MAX_CHUNKS`] chunks: malformed, never verified.
    pub too_many_chunks: bool,
    parts: Parts<'a>,
    pos: usize,
}

impl std::fmt::Debug for Candidate<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidate")
            .field("name", &self.name)
            .field(
                "cookies",
                &self.cookies().iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            )
            .field("too_many_chunks", &self.too_many_chunks)
            .finish()
    }
}

impl<'a> Candidate<'a> {
    /// The `(name, value)` cookies it is made of, in chunk order.
    pub fn cookies(&self) -> &[(&'a str, &'a str)] {
        match &self.parts {
            Parts::Plain(p) => p,
            Parts::Chunks(c) => c,
        }
    }

    /// The token: the plain value, or the chunks joined.
    pub fn token(&self) -> std::borrow::Cow<'a, str> {
        match &self.parts {
            Parts::Plain([(_, v)]) => std::borrow::Cow::Borrowed(v),
            Parts::Chunks(c) => std::borrow::Cow::Owned(c.iter().map(|(_, v)| *v).collect()),
        }
    }
}

/// The session cookies of one request, as [`scan`] found them.
#[derive(Debug, Default)]
pub struct Scan<'a> {
    /// Tokens to try, best first: by the preference of the name read, then by position
    /// (browsers send the most specific cookie first). At most [`MAX_CANDIDATES`].
    pub candidates: Vec<Candidate<'a>>,
    /// How many cookies of the family the request carried (twins, chunks, strays, empty
    /// ones): when it differs from what is forwarded, the upstream `Cookie` is rewritten.
    pub members: usize,
    /// More candidates than [`MAX_CANDIDATES`] were carried; the rest were not kept.
    pub dropped: bool,
}

/// Chunk slots of one chunk set: (position, name, value) by index, up to one past
/// [`MAX_CHUNKS`] so an oversized set is seen.
type Slots<'a> = Vec<Option<(usize, &'a str, &'a str)>>;

/// Finds every token the request carries under the names in `read` (prefixes of the
/// family's base, in preference order), in one pass over the cookies: each plain cookie
/// is a candidate, and the k-th `name.0`, `name.1`, … form the k-th chunk set (the
/// contiguous run from 0: a gap means a lost chunk, and the rest is junk). Empty values
/// hold no token (as Auth.js reads them).
pub fn scan<'a>(pairs: &[(&'a str, &'a str)], family: &Family, read: &[Prefix]) -> Scan<'a> {
    let mut out = Scan::default();
    let mut plains: Vec<(usize, usize, &'a str, &'a str)> = Vec::new();
    let mut plain_count = [0usize; 3];
    let mut occurrences = [[0u8; MAX_CHUNKS + 1]; 3];
    let mut sets: Vec<(usize, usize, Slots<'a>)> = Vec::new();
    for (pos, (k, v)) in pairs.iter().enumerate() {
        let Some(m) = family.member(k) else { continue };
        out.members += 1;
        let Some(r) = read.iter().position(|p| *p == m.prefix) else {
            continue;
        };
        if v.is_empty() {
            continue;
        }
        match m.part {
            Part::Plain => {
                let count = &mut plain_count[m.prefix.index()];
                *count += 1;
                if *count <= MAX_CANDIDATES {
                    plains.push((r, pos, k, v));
                } else {
                    out.dropped = true;
                }
            }
            Part::Chunk(i) if i <= MAX_CHUNKS => {
                let seen = &mut occurrences[m.prefix.index()][i];
                let k_th = *seen as usize;
                *seen = seen.saturating_add(1);
                if k_th >= MAX_CANDIDATES {
                    out.dropped = true;
                    continue;
                }
                let slots = match sets.iter().position(|(sr, sk, _)| *sr == r && *sk == k_th) {
                    Some(j) => &mut sets[j].2,
                    None => {
                        sets.push((r, k_th, vec![None; MAX_CHUNKS + 1]));
                        let last = sets.len() - 1;
                        &mut sets[last].2
                    }
                };
                slots[i] = Some((pos, k, v));
            }
            // chunks past the limit and strays are never read (and never forwarded)
            Part::Chunk(_) | Part::Stray => {}
        }
    }
    for r in 0..read.len() {
        let start = out.candidates.len();
        for (_, pos, k, v) in plains.iter().filter(|p| p.0 == r) {
            out.candidates.push(Candidate {
                name: r,
                too_many_chunks: false,
                parts: Parts::Plain([(k, v)]),
                pos: *pos,
            });
        }
        for (_, _, slots) in sets.iter().filter(|s| s.0 == r) {
            let run: Vec<(usize, &str, &str)> = slots.iter().map_while(|s| *s).collect();
            if run.is_empty() {
                continue;
            }
            out.candidates.push(Candidate {
                name: r,
                too_many_chunks: run.len() > MAX_CHUNKS,
                pos: run.iter().map(|(p, _, _)| *p).min().unwrap_or(0),
                parts: Parts::Chunks(run.into_iter().map(|(_, k, v)| (k, v)).collect()),
            });
        }
        out.candidates[start..].sort_by_key(|c| c.pos);
    }
    if out.candidates.len() > MAX_CANDIDATES {
        out.candidates.truncate(MAX_CANDIDATES);
        out.dropped = true;
    }
    out
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

fn build(name: &str, value: &str, a: &CookieAttributes, max_age: Option<i64>, now: u64) -> String {
    let (path, domain, secure) = attrs_for(name, a);
    let mut c = Cookie::build((name.to_string(), value.to_string()))
        .path(path)
        .secure(secure)
        .http_only(a.http_only)
        .same_site(same_site(a.same_site));
    // no lifetime: a session cookie, gone when the browser closes
    if let Some(max_age) = max_age {
        let expires = OffsetDateTime::from_unix_timestamp(now as i64 + max_age)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        c = c.max_age(CDuration::seconds(max_age)).expires(expires);
    }
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
/// deletions of every session cookie in `carried` that the new set does not
/// overwrite (a plain cookie after chunking, chunks past the new count, …), each once.
/// `max_age` `None` writes session cookies (no `Max-Age`/`Expires`).
pub fn set_cookies(
    parts: &[(String, String)],
    a: &CookieAttributes,
    max_age: Option<i64>,
    now: u64,
    carried: &[&str],
) -> Vec<String> {
    let mut out: Vec<String> = parts
        .iter()
        .map(|(n, v)| build(n, v, a, max_age, now))
        .collect();
    out.extend(deletions_except(
        carried,
        parts.iter().map(|(n, _)| n.as_str()),
        a,
    ));
    out
}

/// Deletions of the names in `names` (each once) that are not in `keep`.
pub fn deletions_except<'k>(
    names: &[&str],
    keep: impl Iterator<Item = &'k str> + Clone,
    a: &CookieAttributes,
) -> Vec<String> {
    let mut done: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut w = DeletionWriter::new(a);
    names
        .iter()
        .filter(|n| !keep.clone().any(|k| k == **n) && done.insert(n))
        .map(|n| w.line(n))
        .collect()
}

/// Writes [`deletion`] lines for many names with one set of attributes cheaply: the
/// attributes depend only on the name's prefix, so each prefix's attribute text is
/// formatted once and every line is the name plus that text.
pub struct DeletionWriter<'a> {
    attributes: &'a CookieAttributes,
    rest: [Option<String>; 3],
}

impl<'a> DeletionWriter<'a> {
    /// A writer for cookies set with `attributes`.
    pub fn new(attributes: &'a CookieAttributes) -> Self {
        DeletionWriter {
            attributes,
            rest: [None, None, None],
        }
    }

    /// The same line [`deletion`] writes for `name`.
    pub fn line(&mut self, name: &str) -> String {
        let prefix = Prefix::split(name).0;
        let rest = self.rest[prefix.index()].get_or_insert_with(|| {
            let full = deletion(name, self.attributes);
            // the name is written as is, so what follows it is the same for every name
            full.get(name.len()..).unwrap_or_default().to_string()
        });
        let mut out = String::with_capacity(name.len() + rest.len());
        out.push_str(name);
        out.push_str(rest);
        out
    }
}

/// The merged upstream `Cookie` value with every cookie of the session family replaced
/// by `keep` (or removed when `keep` is empty) where the first of them stood; other
/// cookies keep their order. `None` when nothing is left.
pub fn rewrite(pairs: &[(&str, &str)], family: &Family, keep: &[(&str, &str)]) -> Option<String> {
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
        if family.member(k).is_some() {
            if !placed {
                for (nk, nv) in keep {
                    push(&mut out, nk, nv);
                }
                placed = true;
            }
            continue;
        }
        push(&mut out, k, v);
    }
    if !placed {
        for (nk, nv) in keep {
            push(&mut out, nk, nv);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// True when a response `Set-Cookie` value sets (or deletes) any cookie of the session
/// family — any twin, any chunk: then the app's own value wins and rotagate adds none.
pub fn sets_session_cookie(set_cookie: &str, family: &Family) -> bool {
    let n = set_cookie.split_once('=').map_or("", |(k, _)| k.trim());
    !n.is_empty() && family.member(n).is_some()
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

    fn family() -> Family {
        Family::new("s", false)
    }

    fn tokens(header: &str, read: &[Prefix]) -> Vec<String> {
        let p = pairs(header);
        scan(&p, &family(), read)
            .candidates
            .iter()
            .map(|c| c.token().into_owned())
            .collect()
    }

    #[test]
    fn family_members() {
        let f = Family::new("__Secure-authjs.session-token", false);
        assert_eq!(f.base(), "authjs.session-token");
        for (name, want) in [
            ("authjs.session-token", Some((Prefix::None, Part::Plain))),
            (
                "__Host-authjs.session-token",
                Some((Prefix::Host, Part::Plain)),
            ),
            (
                "__Secure-authjs.session-token.3",
                Some((Prefix::Secure, Part::Chunk(3))),
            ),
            (
                "authjs.session-token.0001",
                Some((Prefix::None, Part::Chunk(1))),
            ),
            (
                "authjs.session-token.99999999999999999999999",
                Some((Prefix::None, Part::Chunk(usize::MAX))),
            ),
            ("authjs.session-token.x", None),
            ("authjs.session-tokenX", None),
            ("authjs.csrf-token", None),
        ] {
            assert_eq!(f.member(name).map(|m| (m.prefix, m.part)), want, "{name}");
        }
        let loose = Family::new("authjs.session-token", true);
        assert_eq!(
            loose.member("authjs.session-tokenX").map(|m| m.part),
            Some(Part::Stray)
        );
        assert_eq!(loose.member("authjs.csrf-token"), None);
    }

    #[test]
    fn reads_plain_and_chunked() {
        let none = [Prefix::None];
        assert_eq!(tokens("a=1; s=tok; b=2", &none), ["tok"]);
        assert_eq!(
            tokens("s.1=def; a=1; s.0=abc; s.2=ghi", &none),
            ["abcdefghi"]
        );
        assert!(tokens("a=1; sx=2; s.x=3; s=", &none).is_empty());
        // a gap stops the join
        assert_eq!(tokens("s.0=ab; s.2=zz", &none), ["ab"]);
    }

    #[test]
    fn every_way_of_carrying_a_token_is_a_candidate_in_order() {
        let read = [Prefix::Secure, Prefix::None];
        // preference of the name first, then position
        assert_eq!(
            tokens("s=p1; __Secure-s=sec; s.0=c; s.1=d; s=p2", &read),
            ["sec", "p1", "cd", "p2"]
        );
        // the k-th occurrence of each index forms the k-th set
        assert_eq!(
            tokens("s.0=a; s.1=b; s.0=c; s.1=d", &[Prefix::None]),
            ["ab", "cd"]
        );
        // twins that are not read are members, not candidates
        let p = pairs("__Host-s=x; s=y; other=1");
        let sc = scan(&p, &family(), &[Prefix::None]);
        assert_eq!(sc.members, 2);
        assert_eq!(sc.candidates.len(), 1);
    }

    #[test]
    fn candidates_and_chunks_are_bounded() {
        let many: Vec<String> = (0..100).map(|i| format!("s=t{i}")).collect();
        let p_s = many.join("; ");
        let p = pairs(&p_s);
        let sc = scan(&p, &family(), &[Prefix::None]);
        assert_eq!(sc.candidates.len(), MAX_CANDIDATES);
        assert!(sc.dropped);
        assert_eq!(sc.members, 100);
        for (n, too_many) in [(64, false), (65, true)] {
            let h: Vec<String> = (0..n).map(|i| format!("s.{i}=x")).collect();
            let h = h.join("; ");
            let p = pairs(&h);
            let sc = scan(&p, &family(), &[Prefix::None]);
            assert_eq!(sc.candidates.len(), 1);
            assert_eq!(sc.candidates[0].too_many_chunks, too_many, "{n}");
        }
        assert_eq!(max_valid_chunks(65_536, 3936), 17);
        assert_eq!(max_valid_chunks(1 << 20, 512), MAX_CHUNKS);
    }

    #[test]
    fn cookie_pairs_are_read_up_to_the_limit() {
        assert_eq!(
            pairs(" a=1;b = 2 ;;noequals; =x; c=\t3\t"),
            [("a", "1"), ("b", "2"), ("c", "3")]
        );
        let h: Vec<String> = (0..MAX_COOKIES + 5).map(|i| format!("c{i}=x")).collect();
        let h = h.join("; ");
        let (p, more) = pairs_bounded(&h, MAX_COOKIES);
        assert_eq!((p.len(), more), (MAX_COOKIES, true));
        assert_eq!(
            pairs_bounded("a=1; b=2", 2),
            (vec![("a", "1"), ("b", "2")], false)
        );
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
        assert_eq!(tokens(&header, &[Prefix::None]), [token]);
    }

    #[test]
    fn stale_chunks_are_deleted_once() {
        let carried = ["s.0", "s.1", "s.2", "s.1", "s"];
        let out = set_cookies(
            &split("s", "short", 3936),
            &attrs(),
            Some(300),
            1_000,
            &carried,
        );
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
        let session = set_cookies(&split("s", "t", 3936), &attrs(), None, 1_000, &[]);
        assert_eq!(session, ["s=t; HttpOnly; SameSite=Lax; Path=/"]);
    }

    #[test]
    fn the_deletion_writer_writes_what_deletion_writes() {
        let mut a = attrs();
        a.domain = Some(".example.com".into());
        a.same_site = SameSite::None;
        let mut w = DeletionWriter::new(&a);
        for n in [
            "s",
            "s.3",
            "__Secure-s.0",
            "__Secure-s",
            "__Host-s.12",
            "__Host-s",
        ] {
            assert_eq!(w.line(n), deletion(n, &a), "{n}");
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
    fn rewrite_replaces_the_whole_family_in_place() {
        let p = pairs("a=1; s.0=x; b=2; s.1=y; __Host-s=z");
        let f = family();
        assert_eq!(
            rewrite(&p, &f, &[("s", "new")]).as_deref(),
            Some("a=1; s=new; b=2")
        );
        assert_eq!(rewrite(&p, &f, &[]).as_deref(), Some("a=1; b=2"));
        assert_eq!(rewrite(&pairs("s=1"), &f, &[]), None);
    }

    #[test]
    fn recognises_the_apps_own_session_cookie_under_any_name() {
        let f = Family::new("authjs.session-token", false);
        for yes in [
            "authjs.session-token=abc; Path=/",
            "authjs.session-token.1=; Max-Age=0",
            "__Secure-authjs.session-token=; Max-Age=0; Path=/; Secure",
            "__Secure-authjs.session-token.2=x",
            "__Host-authjs.session-token=x",
        ] {
            assert!(sets_session_cookie(yes, &f), "{yes}");
        }
        for no in ["authjs.csrf-token=x", "=x", "authjs.session-tokens=x"] {
            assert!(!sets_session_cookie(no, &f), "{no}");
        }
    }
}
