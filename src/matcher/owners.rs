//! Which rules can match a page, for Server Action owners (DESIGN §6): a page's URL
//! shape (literal, dynamic, catch-all and optional catch-all segments) is compared
//! with each rule's compiled path pattern by intersecting their automata. Typed
//! params (`:id(\\d+)`), catch-alls and optional segments are decided exactly, not by
//! trying one sample path; only lookarounds written by the user fall back to sample
//! paths, and what those cannot decide is reported, never guessed.
//!
//! Also here: the request-time queries only Server Action requests pay for — every
//! rule whose match fits a request, and the non-path half of a rule's match.

use std::collections::{HashMap, HashSet, VecDeque};

use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind};

use super::{conditions_ok, host_ok, method_ok, path, pattern, ConditionKind, Re};
use super::{RequestParts, RuleSet, SourceSpec};

/// One URL segment of an app-router page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A literal folder name.
    Static(String),
    /// `[id]`: one segment, any value.
    Dynamic,
    /// `[...slug]`: one or more segments.
    CatchAll,
    /// `[[...slug]]`: zero or more segments.
    OptionalCatchAll,
}

/// The URLs a page answers at: `base_path`, a locale when the app has i18n locales
/// (the rules see one on every path, see [`super::locale`]), then its segments.
#[derive(Debug, Clone)]
pub struct PageShape {
    /// Anchored regex of every URL path of the page.
    regex: String,
    /// A few concrete paths of the page, for patterns no automaton can hold.
    probes: Vec<String>,
    /// The probes are every URL of the page (it has no dynamic segment).
    exhaustive: bool,
    /// The literal start of the page's URLs after `base_path`, per locale (with the
    /// locale, and after it): a rule whose own literal start disagrees cannot match.
    literals: Vec<(String, String)>,
}

impl PageShape {
    /// The shape of a page with `segments` under `base_path` and `locales`.
    pub fn new(base_path: &str, locales: &[String], segments: &[Segment]) -> PageShape {
        let mut prefix = regex::escape(base_path);
        if !locales.is_empty() {
            let alts: Vec<String> = locales.iter().map(|l| regex::escape(l)).collect();
            prefix.push_str(&format!("/(?:{})", alts.join("|")));
        }
        let mut body = String::new();
        let mut may_be_empty = true;
        for s in segments {
            match s {
                Segment::Static(name) => {
                    body.push('/');
                    body.push_str(&regex::escape(name));
                    may_be_empty = false;
                }
                Segment::Dynamic => {
                    body.push_str("/[^/]+");
                    may_be_empty = false;
                }
                Segment::CatchAll => {
                    body.push_str("(?:/[^/]+)+");
                    may_be_empty = false;
                }
                Segment::OptionalCatchAll => body.push_str("(?:/[^/]+)*"),
            }
        }
        let regex = if prefix.is_empty() && may_be_empty {
            // the root page is `/`, never the empty path
            format!("^(?:/|{body})$").replace("|)$", ")$")
        } else {
            format!("^{prefix}{body}$")
        };
        let mut probes = Vec::new();
        let locale_variants: Vec<Option<&str>> = if locales.is_empty() {
            vec![None]
        } else {
            locales.iter().map(|l| Some(l.as_str())).collect()
        };
        for locale in locale_variants {
            // the last value shares no character with any word a lookahead may list
            for value in ["_", "0", "a", "\u{e000}"] {
                for with_optional in [false, true] {
                    let mut p = base_path.to_string();
                    if let Some(l) = locale {
                        p.push('/');
                        p.push_str(l);
                    }
                    for s in segments {
                        match s {
                            Segment::Static(name) => {
                                p.push('/');
                                p.push_str(name);
                            }
                            Segment::Dynamic | Segment::CatchAll => {
                                p.push('/');
                                p.push_str(value);
                            }
                            Segment::OptionalCatchAll if with_optional => {
                                p.push('/');
                                p.push_str(value);
                            }
                            Segment::OptionalCatchAll => {}
                        }
                    }
                    if p.is_empty() {
                        p.push('/');
                    }
                    if !probes.contains(&p) {
                        probes.push(p);
                    }
                }
            }
        }
        let exhaustive = segments.iter().all(|s| matches!(s, Segment::Static(_)));
        let mut body = String::new();
        for s in segments {
            match s {
                Segment::Static(name) => {
                    body.push('/');
                    body.push_str(name);
                }
                Segment::Dynamic | Segment::CatchAll => {
                    body.push('/');
                    break;
                }
                Segment::OptionalCatchAll => break,
            }
        }
        let literals = if locales.is_empty() {
            vec![(body.clone(), body)]
        } else {
            locales
                .iter()
                .map(|l| (format!("/{l}{body}"), body.clone()))
                .collect()
        };
        PageShape {
            regex,
            probes,
            exhaustive,
            literals,
        }
    }

    /// False when `source` cannot match any URL of the page because the literal text
    /// it starts with disagrees with the page's (a quick test before any automaton).
    fn literal_fits(&self, source: &SourceSpec) -> bool {
        let src = source.source.as_str();
        let end = src.find([':', '(', ')', '{', '}', '*', '+', '?', '\\']);
        let lit = match end {
            // the `/` before a parameter belongs to it (and may be optional)
            Some(e) => src[..e].strip_suffix('/').unwrap_or(&src[..e]),
            None => src,
        };
        self.literals.iter().any(|(with_locale, after_locale)| {
            let page = if source.no_locale {
                with_locale
            } else {
                after_locale
            };
            let n = lit.len().min(page.len());
            // case-insensitively: never refuse what a case-insensitive rule may match
            lit.as_bytes()[..n].eq_ignore_ascii_case(&page.as_bytes()[..n])
        })
    }

    /// The anchored regex of the page's URL paths (for messages and tests).
    pub fn regex(&self) -> &str {
        &self.regex
    }
}

/// What [`OwnerAnalysis::matches`] found for one page.
#[derive(Debug, Clone, Default)]
pub struct ShapeMatches {
    /// `(rule, source)` pairs whose path pattern matches some URL of the page.
    pub pairs: Vec<(usize, usize)>,
    /// Rules that could not be compared with the page, and why.
    pub undecided: Vec<(usize, String)>,
}

type Dfa = dense::DFA<Vec<u32>>;

/// Largest automaton built for one comparison (bytes); larger ones are reported.
const DFA_LIMIT: usize = 8 << 20;
/// Most state pairs visited for one comparison.
const PAIR_LIMIT: usize = 200_000;

/// Compares page shapes with the rules, caching each rule's automaton.
pub struct OwnerAnalysis<'a> {
    rules: &'a RuleSet,
    /// Per (rule, source): its automaton (lookarounds dropped) and how exact that
    /// is, or why none could be built.
    cache: HashMap<(usize, usize), Result<SourceAutomaton, String>>,
}

/// A rule source prepared for comparison with pages.
struct SourceAutomaton {
    /// The pattern without lookarounds.
    dfa: Dfa,
    /// `None`: `dfa` is exact. Otherwise the pattern without lookarounds as a regex,
    /// and whether every lookaround the user wrote is a negative lookahead of literal
    /// alternatives (the `/((?!api|_next/static).*)` idiom).
    superset: Option<(regex::Regex, bool)>,
}

impl RuleSet {
    /// A comparison of page shapes against this rule set.
    pub fn owner_analysis(&self) -> OwnerAnalysis<'_> {
        OwnerAnalysis {
            rules: self,
            cache: HashMap::new(),
        }
    }

    /// Whether rule `rule`'s source `source` fits `req` apart from its path: method,
    /// hosts and the source's `has`/`missing`.
    pub fn fits_except_path(&self, rule: usize, source: usize, req: &RequestParts<'_>) -> bool {
        let Some(r) = self.rules.get(rule) else {
            return false;
        };
        let Some(src) = r.sources.get(source) else {
            return false;
        };
        method_ok(r, req.method) && host_ok(r, req.host) && conditions_ok(src, req)
    }

    /// Every rule whose match fits the request, in file order (the requirements of a
    /// Server Action request are those of all of them, not only the first).
    pub fn all_matches(&self, req: &RequestParts<'_>) -> Vec<usize> {
        let decoded = path::decoded(req.path);
        let hits = match &decoded {
            Some(d) => self.path_hits(&[req.path, d]),
            None => self.path_hits(&[req.path]),
        };
        let mut out: Vec<usize> = hits
            .into_iter()
            .filter(|&(ri, si)| self.fits_except_path(ri, si, req))
            .map(|(ri, _)| ri)
            .collect();
        out.dedup();
        out
    }

    /// True when some source has a `has`/`missing` item on request header `name`
    /// (lower-case).
    pub fn mentions_header(&self, name: &str) -> bool {
        self.rules.iter().any(|r| {
            r.sources.iter().any(|s| {
                s.has
                    .iter()
                    .chain(&s.missing)
                    .any(|c| c.kind == ConditionKind::Header && c.key == name)
            })
        })
    }
}

impl OwnerAnalysis<'_> {
    /// The sources of the rules `wanted` accepts whose path pattern matches some URL of
    /// `shape`.
    pub fn matches(&mut self, shape: &PageShape, wanted: &dyn Fn(usize) -> bool) -> ShapeMatches {
        let rules = self.rules;
        let mut out = ShapeMatches::default();
        // concrete URLs of the page settle most rules at once: the set is exact
        let mut probe_hits = HashSet::new();
        for p in &shape.probes {
            for i in rules.set.matches(p).iter() {
                probe_hits.insert(rules.set_owner[i]);
            }
        }
        let mut page: Option<Result<Dfa, String>> = None;
        for ri in 0..rules.rules.len() {
            if !wanted(ri) {
                continue;
            }
            for si in 0..rules.rules[ri].sources.len() {
                let src = &rules.rules[ri].sources[si];
                if probe_hits.contains(&(ri, si)) {
                    out.pairs.push((ri, si));
                    continue;
                }
                if let (true, Some(re)) = (shape.exhaustive, &src.fancy) {
                    // every URL of the page is a probe: exact
                    if shape.probes.iter().any(|p| re.is_match_or(p, true)) {
                        out.pairs.push((ri, si));
                    }
                    continue;
                }
                if shape.exhaustive || !shape.literal_fits(&rules.specs[ri].sources[si]) {
                    continue;
                }
                let page = match page.get_or_insert_with(|| dfa(&shape.regex)) {
                    Ok(d) => d,
                    Err(e) => {
                        out.undecided
                            .push((ri, format!("its URL pattern cannot be compiled ({e})")));
                        continue;
                    }
                };
                match self.source_matches(ri, si, page, shape) {
                    Ok(true) => out.pairs.push((ri, si)),
                    Ok(false) => {}
                    Err(why) => out.undecided.push((ri, why)),
                }
            }
        }
        out.undecided.dedup_by_key(|(ri, _)| *ri);
        out
    }

    fn source_matches(
        &mut self,
        ri: usize,
        si: usize,
        page: &Dfa,
        shape: &PageShape,
    ) -> Result<bool, String> {
        let rules = self.rules;
        let entry = self
            .cache
            .entry((ri, si))
            .or_insert_with(|| source_dfa(rules, ri, si));
        let prepared = match entry {
            Ok(p) => p,
            Err(e) => return Err(e.clone()),
        };
        if !intersects(page, &prepared.dfa)? {
            // lookarounds only narrow a pattern: without them it already misses
            return Ok(false);
        }
        let Some((superset, literal_idiom)) = &prepared.superset else {
            return Ok(true);
        };
        // a lookaround the user wrote: decided on concrete URLs of the page
        if let Some(re) = rules.rules[ri].sources[si].fancy.as_ref() {
            if shape.probes.iter().any(|p| re.is_match_or(p, true)) {
                return Ok(true);
            }
            if shape.exhaustive {
                return Ok(false);
            }
            // every sample, even one whose dynamic parts share no character with the
            // lookahead's words, fits the pattern but for the lookahead: the page's
            // literal segments are what it refuses, for every value of the others
            if *literal_idiom && shape.probes.iter().all(|p| superset.is_match(p)) {
                return Ok(false);
            }
        }
        Err(format!(
            "its source {:?} uses a lookaround rotagate cannot compare with every URL of the page",
            rules.specs[ri].sources[si].source
        ))
    }
}

/// The automaton of a rule source's wrapped pattern with lookarounds dropped, and
/// whether that is exact: the only lookaround it may hold is Next's own i18n
/// `(?!_next/)`, which never excludes a page URL (those start with a locale).
fn source_dfa(rules: &RuleSet, ri: usize, si: usize) -> Result<SourceAutomaton, String> {
    let src = &rules.rules[ri].sources[si];
    let js = pattern::compile_source(&src.wrapped).map_err(|e| format!("invalid pattern: {e}"))?;
    if src.fancy.is_none() {
        return dfa(&js).map(|dfa| SourceAutomaton {
            dfa,
            superset: None,
        });
    }
    let user = &rules.specs[ri].sources[si].source;
    let user_js = pattern::compile_source(user).map_err(|e| format!("invalid pattern: {e}"))?;
    let user_lookaround = Re::new(&user_js).map_or(true, |r| matches!(r, Re::Fancy(_)));
    let stripped = strip_lookarounds(&js);
    let dfa = dfa(&stripped)?;
    let superset = if user_lookaround {
        let re = regex::Regex::new(&pattern::js_semantics(&stripped))
            .map_err(|e| format!("too large to compare ({e})"))?;
        Some((re, literal_negative_lookaheads(&user_js)))
    } else {
        None
    };
    Ok(SourceAutomaton { dfa, superset })
}

/// True when every lookaround in `re` is a negative lookahead whose body is a list of
/// words (`(?!api|_next/static|favicon.ico)`): no groups, classes or repetition.
fn literal_negative_lookaheads(re: &str) -> bool {
    let b = re.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let at = &re[i..];
        if at.starts_with("(?=") || at.starts_with("(?<=") || at.starts_with("(?<!") {
            return false;
        }
        if at.starts_with("(?!") {
            let end = skip_group(b, i);
            let body = &re[i + 3..end.saturating_sub(1)];
            let mut j = 0;
            let bb = body.as_bytes();
            while j < bb.len() {
                match bb[j] {
                    b'\\' => j += 2,
                    b'(' | b')' | b'[' | b']' | b'*' | b'+' | b'?' | b'{' | b'}' | b'^' | b'$' => {
                        return false
                    }
                    _ => j += 1,
                }
            }
            i = end;
            continue;
        }
        i = copy_atom(b, i);
    }
    true
}

fn dfa(pattern: &str) -> Result<Dfa, String> {
    dense::Builder::new()
        .configure(
            dense::Config::new()
                .match_kind(MatchKind::All)
                .start_kind(StartKind::Anchored)
                .dfa_size_limit(Some(DFA_LIMIT))
                .determinize_size_limit(Some(DFA_LIMIT)),
        )
        .build(&pattern::js_semantics(pattern))
        .map_err(|e| format!("too large to compare ({e})"))
}

/// True when some string is matched by both anchored automata (a search of their
/// product, over the byte classes that tell their transitions apart).
fn intersects(a: &Dfa, b: &Dfa) -> Result<bool, String> {
    let cfg = start::Config::new().anchored(Anchored::Yes);
    let too_large = |_| "too large to compare".to_string();
    let sa = a.start_state(&cfg).map_err(too_large)?;
    let sb = b.start_state(&cfg).map_err(too_large)?;
    // one representative byte per distinct pair of classes
    let mut seen_classes = HashSet::new();
    let reps: Vec<u8> = (0..=255u8)
        .filter(|&byte| {
            seen_classes.insert((a.byte_classes().get(byte), b.byte_classes().get(byte)))
        })
        .collect();
    let mut seen = HashSet::new();
    let mut queue = VecDeque::new();
    seen.insert((sa, sb));
    queue.push_back((sa, sb));
    while let Some((x, y)) = queue.pop_front() {
        if a.is_match_state(a.next_eoi_state(x)) && b.is_match_state(b.next_eoi_state(y)) {
            return Ok(true);
        }
        for &byte in &reps {
            let (nx, ny) = (a.next_state(x, byte), b.next_state(y, byte));
            if a.is_dead_state(nx) || b.is_dead_state(ny) {
                continue;
            }
            if a.is_quit_state(nx) || b.is_quit_state(ny) {
                return Err("too large to compare".to_string());
            }
            if seen.insert((nx, ny)) {
                if seen.len() > PAIR_LIMIT {
                    return Err("too large to compare".to_string());
                }
                queue.push_back((nx, ny));
            }
        }
    }
    Ok(false)
}

/// The regex without its lookaround groups `(?=…)`, `(?!…)`, `(?<=…)`, `(?<!…)`: a
/// pattern that matches everything the original matches, and possibly more.
fn strip_lookarounds(re: &str) -> String {
    let b = re.as_bytes();
    let mut out = String::with_capacity(re.len());
    let mut i = 0;
    while i < b.len() {
        let starts = |p: &str| re[i..].starts_with(p);
        if starts("(?=") || starts("(?!") || starts("(?<=") || starts("(?<!") {
            i = skip_group(b, i);
            continue;
        }
        let next = copy_atom(b, i);
        out.push_str(&re[i..next]);
        i = next;
    }
    out
}

/// End (exclusive) of the atom at `i`: an escape, a character class, or one char.
fn copy_atom(b: &[u8], i: usize) -> usize {
    match b[i] {
        b'\\' => (i + 1 + b.get(i + 1).map_or(0, |c| utf8_len(*c))).min(b.len()),
        b'[' => {
            let mut j = i + 1;
            if b.get(j) == Some(&b'^') {
                j += 1;
            }
            if b.get(j) == Some(&b']') {
                j += 1;
            }
            while j < b.len() && b[j] != b']' {
                j = if b[j] == b'\\' {
                    j + 2
                } else {
                    j + utf8_len(b[j])
                };
            }
            (j + 1).min(b.len())
        }
        c => i + utf8_len(c),
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        0xc0..=0xdf => 2,
        _ => 1,
    }
}

/// End (exclusive) of the group that opens at `i`.
fn skip_group(b: &[u8], i: usize) -> usize {
    let mut depth = 0usize;
    let mut j = i;
    while j < b.len() {
        match b[j] {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j = copy_atom(b, j).max(j + 1);
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::{MatcherSpec, NextOptions, SourceSpec};

    fn set(sources: &[&str], opts: &NextOptions) -> RuleSet {
        crate::matcher::rule_set_of(sources, opts)
    }

    fn owners(rules: &RuleSet, shape: &PageShape) -> (Vec<usize>, Vec<usize>) {
        let m = rules.owner_analysis().matches(shape, &|_| true);
        (
            m.pairs.iter().map(|p| p.0).collect(),
            m.undecided.iter().map(|u| u.0).collect(),
        )
    }

    #[test]
    fn shapes_meet_typed_params_catch_alls_and_optionals() {
        use Segment::*;
        let rules = set(
            &[
                "/shop/:id(\\d+)",
                "/shop/new",
                "/docs/:path+",
                "/cart/:path*",
                "/((?!api|login).*)",
                "/api/:path*",
            ],
            &NextOptions::default(),
        );
        let shop = PageShape::new("", &[], &[Static("shop".into()), Dynamic]);
        assert_eq!(owners(&rules, &shop), (vec![0, 1, 4], vec![]));
        let docs = PageShape::new("", &[], &[Static("docs".into()), CatchAll]);
        assert_eq!(owners(&rules, &docs).0, vec![2, 4]);
        let cart = PageShape::new("", &[], &[Static("cart".into()), OptionalCatchAll]);
        assert_eq!(owners(&rules, &cart).0, vec![3, 4]);
        let login = PageShape::new("", &[], &[Static("login".into())]);
        assert_eq!(owners(&rules, &login), (vec![], vec![]));
        // the catch-all idiom's words exclude a dynamic page under them too
        let provider = PageShape::new("", &[], &[Static("login".into()), Dynamic]);
        assert_eq!(owners(&rules, &provider), (vec![], vec![]));
        let loginx = PageShape::new("", &[], &[Static("loginx".into()), Dynamic]);
        assert_eq!(
            owners(&rules, &loginx),
            (vec![], vec![]),
            "(?!login) refuses loginx too"
        );
        let other = PageShape::new("", &[], &[Static("blog".into()), Dynamic]);
        assert_eq!(owners(&rules, &other), (vec![4], vec![]));
        let api = PageShape::new("", &[], &[Static("api".into()), Dynamic]);
        assert_eq!(owners(&rules, &api).0, vec![5]);
        let root = PageShape::new("", &[], &[]);
        assert_eq!(root.regex(), "^(?:/)$");
        assert_eq!(owners(&rules, &root).0, vec![4]);
    }

    #[test]
    fn base_path_and_locales_are_part_of_the_shape() {
        use Segment::*;
        let opts = NextOptions {
            case_insensitive: false,
            base_path: "/b".into(),
            locales: vec!["en".into(), "de".into()],
        };
        let rules = set(&["/premium/:path*", "/:path*", "/((?!premium).*)"], &opts);
        let page = PageShape::new(
            "/b",
            &["en".into(), "de".into()],
            &[Static("premium".into()), Dynamic],
        );
        assert_eq!(
            owners(&rules, &page),
            (vec![0, 1], vec![]),
            "{}",
            page.regex()
        );
        // without the locale in the shape the premium rule would miss it: its
        // pattern needs a locale segment before `premium`
        let bare = PageShape::new("/b", &[], &[Static("premium".into())]);
        assert_eq!(owners(&rules, &bare).0, vec![1]);
    }

    #[test]
    fn locale_false_sources_compare_with_the_locale_in_the_url() {
        use Segment::*;
        let opts = NextOptions {
            case_insensitive: false,
            base_path: String::new(),
            locales: vec!["en".into(), "de".into()],
        };
        let spec = |s: &str| MatcherSpec {
            sources: vec![SourceSpec {
                source: s.to_string(),
                no_locale: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        let rules =
            RuleSet::build(&[spec("/en/legacy/:p*"), spec("/fr/legacy/:p*")], &opts).unwrap();
        let locales = ["en".to_string(), "de".to_string()];
        let page = PageShape::new("", &locales, &[Static("legacy".into()), Dynamic]);
        assert_eq!(owners(&rules, &page), (vec![0], vec![]));
    }

    #[test]
    fn lookarounds_that_samples_cannot_settle_are_reported() {
        use Segment::*;
        // matches /x/<value> only when the value starts with "zz": no sample does
        let rules = set(&["/x/((?=zz).*)"], &NextOptions::default());
        let page = PageShape::new("", &[], &[Static("x".into()), Dynamic]);
        assert_eq!(owners(&rules, &page), (vec![], vec![0]));
        let other = PageShape::new("", &[], &[Static("y".into()), Dynamic]);
        assert_eq!(
            owners(&rules, &other),
            (vec![], vec![]),
            "no lookaround can help"
        );
    }

    #[test]
    fn lookarounds_are_stripped_outside_classes_and_escapes() {
        assert_eq!(
            strip_lookarounds("^(?:\\/((?!api|_next).*))$"),
            "^(?:\\/(.*))$"
        );
        assert_eq!(strip_lookarounds("a[(?!]b\\(?!c"), "a[(?!]b\\(?!c");
        assert_eq!(strip_lookarounds("(?<=x(y))z(?=[)])"), "z");
        // never a slice inside a character
        assert_eq!(strip_lookarounds("a\\é[é\\]]b(?!é)"), "a\\é[é\\]]b");
        assert!(literal_negative_lookaheads(
            "^(?:\\/((?!api|_next/static|a\\.b).*))$"
        ));
        assert!(!literal_negative_lookaheads("^(?:\\/((?!a.*).*))$"));
        assert!(!literal_negative_lookaheads("^x(?=y)"));
    }

    #[test]
    fn all_matches_lists_every_fitting_rule() {
        let rules = set(&["/a/:p*", "/:p*", "/b"], &NextOptions::default());
        let h = http::HeaderMap::new();
        let req = RequestParts {
            method: "POST",
            host: None,
            path: "/a/x",
            query: None,
            headers: &h,
        };
        assert_eq!(rules.all_matches(&req), vec![0, 1]);
        assert!(!rules.mentions_header("next-action"));
    }
}
