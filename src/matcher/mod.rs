//! Route matchers: Next.js `config.matcher` semantics (path-to-regexp 6.3.0 dialect,
//! Next 16's `getMiddlewareMatchers` wrapping), `has`/`missing`, methods and hosts,
//! compiled into one ordered rule set where the first match wins.
//!
//! Cost stays flat as rules grow: every source the `regex` crate can compile goes into
//! one [`regex::RegexSet`], scanned once per request; only sources that need lookaround
//! (the `/((?!api|_next/static).*)` idiom, i18n locale prefixes) fall back to
//! `fancy_regex`, tried one by one.

pub mod locale;
pub mod owners;
pub mod path;
pub mod pattern;

use http::HeaderMap;

/// What one `[[route]]` matches on, as written in the file (already parsed, not compiled).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatcherSpec {
    /// The `match` entries: a string becomes one source with no conditions.
    pub sources: Vec<SourceSpec>,
    /// `methods = [...]` (upper-cased); empty = any method.
    pub methods: Vec<String>,
    /// `hosts = [...]`, exact or `*.example.com`; empty = any host.
    pub hosts: Vec<String>,
    /// Set for rules with `require`: when a lookaround regex of this rule hits the
    /// engine's backtracking limit, the rule counts as matching (fail closed) instead
    /// of not matching.
    pub fail_closed: bool,
}

/// One Next.js matcher object `{ source, has, missing }`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceSpec {
    /// The path-to-regexp source, e.g. `/premium/:path*`.
    pub source: String,
    /// Every `has` condition must hold.
    pub has: Vec<Condition>,
    /// No `missing` condition may hold.
    pub missing: Vec<Condition>,
    /// `locale = false`: not wrapped in the i18n locale prefix (Next's `locale: false`;
    /// the source then names its locales itself).
    pub no_locale: bool,
}

/// A `has`/`missing` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// `type`.
    pub kind: ConditionKind,
    /// `key` (header/cookie/query name; ignored for host).
    pub key: String,
    /// `value`: an anchored regex; `None` = presence (non-empty) only.
    pub value: Option<String>,
}

/// `type` of a `has`/`missing` item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionKind {
    /// A request header (case-insensitive name).
    Header,
    /// A cookie.
    Cookie,
    /// A query parameter.
    Query,
    /// The request host.
    Host,
}

/// Next.js app facts that change how sources are wrapped.
#[derive(Debug, Clone, Default)]
pub struct NextOptions {
    /// `basePath` ("" or "/docs").
    pub base_path: String,
    /// i18n locales (empty when none).
    pub locales: Vec<String>,
    /// `listen.case_insensitive_paths`: path patterns match in any letter case.
    pub case_insensitive: bool,
}

/// The parts of a request that matching looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// Method, upper-case.
    pub method: &'a str,
    /// Host without port, lower-case, if known.
    pub host: Option<&'a str>,
    /// The normalised path (see [`path::normalise`]), without query.
    pub path: &'a str,
    /// The raw query string without `?`, if any.
    pub query: Option<&'a str>,
    /// All request headers (cookies are read from `Cookie`).
    pub headers: &'a HeaderMap,
}

/// A pattern or condition the rule set refused to compile.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct BuildError {
    /// Index of the rule.
    pub rule: usize,
    /// Index of the source within the rule, when the error is about one.
    pub source_index: Option<usize>,
    /// Why, in path-to-regexp 6.3.0's words where it has them.
    pub reason: String,
}

/// Longest source Next.js accepts.
const MAX_SOURCE_LEN: usize = 4096;

/// A regex compiled with the `regex` crate when it can, `fancy_regex` when the
/// pattern needs lookaround.
#[derive(Debug, Clone)]
enum Re {
    Fast(regex::Regex),
    Fancy(fancy_regex::Regex),
}

impl Re {
    /// Compiles a JS regex source (with its JS meaning, see [`pattern::js_semantics`]).
    fn new(js: &str) -> Result<Re, String> {
        let src = pattern::js_semantics(js);
        match regex::Regex::new(&src) {
            Ok(r) => Ok(Re::Fast(r)),
            Err(_) => fancy_regex::Regex::new(&src)
                .map(Re::Fancy)
                .map_err(|e| e.to_string()),
        }
    }
    /// Whether `s` matches; when the backtracking engine gives up (its limit, or any
    /// other run-time error) the answer is `on_limit` (the rule's fail-closed flag), the
    /// event is logged (without the input: it may be a path with secrets in it) and
    /// noted for [`take_regex_limit_hits`].
    fn is_match_or(&self, s: &str, on_limit: bool) -> bool {
        match self {
            Re::Fast(r) => r.is_match(s),
            Re::Fancy(r) => r.is_match(s).unwrap_or_else(|e| {
                tracing::warn!(
                    error = %e,
                    counted_as_match = on_limit,
                    "route pattern hit the regex engine's backtracking limit"
                );
                REGEX_LIMIT_HITS.with(|c| c.set(c.get() + 1));
                on_limit
            }),
        }
    }
}

thread_local! {
    /// Backtracking-limit hits on this thread since the last [`take_regex_limit_hits`].
    /// Matching is synchronous, so the glue reads it right after matching one request on
    /// the same thread (a counter without threading one through every matcher call).
    static REGEX_LIMIT_HITS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Returns and resets the number of times, on this thread, a lookaround pattern hit the
/// regex engine's backtracking limit since the last call (for the metric).
pub fn take_regex_limit_hits() -> u32 {
    REGEX_LIMIT_HITS.with(|c| c.replace(0))
}

#[derive(Debug, Clone)]
struct CompiledCondition {
    kind: ConditionKind,
    key: String,
    value: Option<Re>,
    /// Whether the condition holds when `value` hits the backtracking limit: for a
    /// fail-closed rule, `has` holds and `missing` does not, so the rule matches.
    on_limit: bool,
}

#[derive(Debug, Clone)]
struct CompiledSource {
    /// The wrapped source (after Next's `getMiddlewareMatchers`), for `explain`.
    wrapped: String,
    /// The regex, when it needs lookaround (otherwise it lives in the set).
    fancy: Option<Re>,
    has: Vec<CompiledCondition>,
    missing: Vec<CompiledCondition>,
}

#[derive(Debug, Clone)]
struct CompiledRule {
    sources: Vec<CompiledSource>,
    methods: Vec<String>,
    hosts: Vec<String>,
    fail_closed: bool,
}

/// The compiled, ordered rule set.
#[derive(Debug, Clone)]
pub struct RuleSet {
    specs: Vec<MatcherSpec>,
    rules: Vec<CompiledRule>,
    /// All fast sources; pattern `i` belongs to `set_owner[i]` = (rule, source).
    set: regex::RegexSet,
    /// The same sources as one leftmost-first multi-pattern regex: `find` reports the
    /// lowest-index source that matches, without computing every overlapping match.
    first: Option<regex_automata::meta::Regex>,
    set_owner: Vec<(usize, usize)>,
    /// Sources compiled with fancy_regex, as (rule, source).
    fancy: Vec<(usize, usize)>,
}

impl Default for RuleSet {
    fn default() -> Self {
        RuleSet {
            specs: Vec::new(),
            rules: Vec::new(),
            set: regex::RegexSet::empty(),
            first: None,
            set_owner: Vec::new(),
            fancy: Vec::new(),
        }
    }
}

/// Wraps a user source the way Next 16's `getMiddlewareMatchers` does: optional
/// `/_next/data/<buildId>` prefix, optional data/RSC suffix, i18n locale prefix and
/// `basePath`.
pub fn next_wrap(source: &str, opts: &NextOptions) -> String {
    next_wrap_with(source, opts, true)
}

/// [`next_wrap`], with the i18n locale prefix only when `locale` (a matcher with
/// `locale: false` gets none, as in Next).
pub fn next_wrap_with(source: &str, opts: &NextOptions, locale: bool) -> String {
    let is_root = source == "/";
    let i18n = !opts.locales.is_empty() && locale;
    let mut s = source.to_string();
    if i18n {
        s = format!(
            "/:nextInternalLocale((?!_next/)[^/.]{{1,}}){}",
            if is_root { "" } else { source }
        );
    }
    // Next 16.4.6: the root also matches its App Router transport forms
    // (`/index.rsc`, `/index.segments/….segment.rsc`), as every other source does
    let suffix = if is_root {
        format!(
            "({}/?index|/?index\\.json|/?index(?:\\.rsc|\\.segments/.+\\.segment\\.rsc))?",
            // keyed on the app's i18n config, not on this matcher's `locale`
            if opts.locales.is_empty() {
                ""
            } else {
                "|\\.json|"
            }
        )
    } else {
        "{(\\.json|\\.rsc|\\.segments/.+\\.segment\\.rsc)}?".to_string()
    };
    s = format!("/:nextData(_next/data/[^/]{{1,}})?{s}{suffix}");
    if !opts.base_path.is_empty() {
        s = format!("{}{s}", opts.base_path);
    }
    s
}

fn compile_condition(c: &Condition) -> Result<CompiledCondition, String> {
    if c.kind != ConditionKind::Host && c.key.is_empty() {
        return Err("`key` is required for header, cookie and query items".to_string());
    }
    if c.kind == ConditionKind::Host && c.value.is_none() {
        return Err("`value` is required for host items".to_string());
    }
    let value = match &c.value {
        Some(v) => Some(
            Re::new(&format!("^(?:{v})$")).map_err(|e| format!("invalid `value` regex: {e}"))?,
        ),
        None => None,
    };
    let key = if c.kind == ConditionKind::Header {
        c.key.to_ascii_lowercase()
    } else {
        c.key.clone()
    };
    Ok(CompiledCondition {
        kind: c.kind,
        key,
        value,
        on_limit: false,
    })
}

impl RuleSet {
    /// Compiles the rules in order. A source that Next.js / path-to-regexp 6.3.0 would
    /// reject is rejected with its reason.
    pub fn build(specs: &[MatcherSpec], opts: &NextOptions) -> Result<RuleSet, BuildError> {
        let mut rules = Vec::with_capacity(specs.len());
        let mut fast_sources = Vec::new();
        let mut set_owner = Vec::new();
        let mut fancy = Vec::new();
        for (ri, spec) in specs.iter().enumerate() {
            let err = |si: Option<usize>, reason: String| BuildError {
                rule: ri,
                source_index: si,
                reason,
            };
            let mut sources = Vec::with_capacity(spec.sources.len());
            for (si, src) in spec.sources.iter().enumerate() {
                let s = &src.source;
                if !s.starts_with('/') {
                    return Err(err(
                        Some(si),
                        format!("`source` does not start with / for route {s}"),
                    ));
                }
                if s.len() > MAX_SOURCE_LEN {
                    return Err(err(
                        Some(si),
                        format!("exceeds max built length of {MAX_SOURCE_LEN} for route {s}"),
                    ));
                }
                // the user's source must parse on its own (Next checks before wrapping)
                pattern::compile_source(s).map_err(|e| err(Some(si), e))?;
                let wrapped = next_wrap_with(s, opts, !src.no_locale);
                let js = pattern::compile_source(&wrapped).map_err(|e| err(Some(si), e))?;
                let js = if opts.case_insensitive {
                    format!("(?i){js}")
                } else {
                    js
                };
                let re =
                    Re::new(&js).map_err(|e| err(Some(si), format!("Invalid source: {s}: {e}")))?;
                let fancy_re = match re {
                    Re::Fast(_) => {
                        fast_sources.push(pattern::js_semantics(&js));
                        set_owner.push((ri, si));
                        None
                    }
                    Re::Fancy(_) => {
                        fancy.push((ri, si));
                        Some(re)
                    }
                };
                // a fail-closed rule matches when a condition regex gives up
                let on_limit = |holds: bool| {
                    move |mut c: CompiledCondition| {
                        c.on_limit = holds;
                        c
                    }
                };
                let has = src
                    .has
                    .iter()
                    .map(|c| compile_condition(c).map(on_limit(spec.fail_closed)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| err(Some(si), format!("has: {e}")))?;
                let missing = src
                    .missing
                    .iter()
                    .map(|c| compile_condition(c).map(on_limit(!spec.fail_closed)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| err(Some(si), format!("missing: {e}")))?;
                sources.push(CompiledSource {
                    wrapped,
                    fancy: fancy_re,
                    has,
                    missing,
                });
            }
            if spec.sources.is_empty() {
                return Err(err(None, "`match` needs at least one source".to_string()));
            }
            let methods = spec
                .methods
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect();
            // request hosts are read without a trailing dot (hygiene::request_host)
            let hosts = spec
                .hosts
                .iter()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                .collect();
            rules.push(CompiledRule {
                sources,
                methods,
                hosts,
                fail_closed: spec.fail_closed,
            });
        }
        let set = regex::RegexSetBuilder::new(&fast_sources)
            // a thousand wrapped sources are far past the default size limit
            .size_limit(512 * 1024 * 1024)
            .dfa_size_limit(64 * 1024 * 1024)
            .build()
            .map_err(|e| BuildError {
                rule: 0,
                source_index: None,
                reason: format!("cannot compile the rule set: {e}"),
            })?;
        let first = regex_automata::meta::Regex::builder()
            .configure(
                regex_automata::meta::Config::new()
                    .nfa_size_limit(Some(512 * 1024 * 1024))
                    .hybrid_cache_capacity(64 * 1024 * 1024),
            )
            .build_many(&fast_sources)
            .map_err(|e| BuildError {
                rule: 0,
                source_index: None,
                reason: format!("cannot compile the rule set: {e}"),
            })?;
        Ok(RuleSet {
            specs: specs.to_vec(),
            rules,
            set,
            first: Some(first),
            set_owner,
            fancy,
        })
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Per rule, a bit mask of which sources matched one of `paths` (raw, decoded).
    fn path_hits(&self, paths: &[&str]) -> Vec<(usize, usize)> {
        let mut hits = Vec::new();
        for p in paths {
            for i in self.set.matches(p).iter() {
                hits.push(self.set_owner[i]);
            }
            for &(ri, si) in &self.fancy {
                if let Some(re) = &self.rules[ri].sources[si].fancy {
                    if re.is_match_or(p, self.rules[ri].fail_closed) {
                        hits.push((ri, si));
                    }
                }
            }
        }
        hits.sort_unstable();
        hits.dedup();
        hits
    }

    /// The index of the first rule that matches, if any.
    pub fn first_match(&self, req: &RequestParts<'_>) -> Option<usize> {
        if self.rules.is_empty() {
            return None;
        }
        let decoded = path::decoded(req.path);
        let fits = |&(ri, si): &(usize, usize)| {
            let rule = &self.rules[ri];
            method_ok(rule, req.method)
                && host_ok(rule, req.host)
                && conditions_ok(&rule.sources[si], req)
        };
        // fast path: the lowest-index fast source that matches, if it fits and no
        // lookaround source of a lower rule matches, is the answer
        if let Some(first) = &self.first {
            let mut best: Option<(usize, usize)> = None;
            for p in std::iter::once(req.path).chain(decoded.as_deref()) {
                if let Some(m) = first.find(p) {
                    let hit = self.set_owner[m.pattern().as_usize()];
                    best = Some(best.map_or(hit, |b: (usize, usize)| b.min(hit)));
                }
            }
            let below = |limit: usize| self.fancy.iter().any(|&(ri, _)| ri < limit);
            match best {
                Some(hit) if fits(&hit) && !below(hit.0) => return Some(hit.0),
                // no fast source matches: only lookaround sources can
                None => {
                    return self
                        .fancy
                        .iter()
                        .find(|&&(ri, si)| {
                            self.rules[ri].sources[si].fancy.as_ref().is_some_and(|re| {
                                std::iter::once(req.path)
                                    .chain(decoded.as_deref())
                                    .any(|p| re.is_match_or(p, self.rules[ri].fail_closed))
                            }) && fits(&(ri, si))
                        })
                        .map(|&(ri, _)| ri)
                }
                _ => {}
            }
        }
        let hits = match &decoded {
            Some(d) => self.path_hits(&[req.path, d]),
            None => self.path_hits(&[req.path]),
        };
        // hits are sorted by rule, then source: the first full match is the winner
        hits.into_iter()
            .find(|&(ri, si)| {
                let rule = &self.rules[ri];
                method_ok(rule, req.method)
                    && host_ok(rule, req.host)
                    && conditions_ok(&rule.sources[si], req)
            })
            .map(|(ri, _)| ri)
    }

    /// Warnings about rules that can never match, as (rule index, message): rules after
    /// an unconditional catch-all, and exact duplicates of an earlier rule.
    pub fn unreachable_rules(&self) -> Vec<(usize, String)> {
        // a source that matches all of these paths is treated as a catch-all
        const PROBES: [&str; 8] = [
            "/",
            "/a",
            "/a/b/c",
            "/_next/static/x.js",
            "/api/x",
            "/x.json",
            "/.well-known/y",
            "/favicon.ico",
        ];
        let mut out = Vec::new();
        let mut catch_all: Option<usize> = None;
        for (ri, rule) in self.rules.iter().enumerate() {
            if let Some(c) = catch_all {
                out.push((
                    ri,
                    format!("can never match: rule {c} before it matches every request"),
                ));
                continue;
            }
            if let Some(prev) = self.specs[..ri].iter().position(|s| *s == self.specs[ri]) {
                out.push((ri, format!("can never match: duplicate of rule {prev}")));
                continue;
            }
            let unconditional = rule.methods.is_empty() && rule.hosts.is_empty();
            let all = unconditional
                && rule.sources.iter().enumerate().any(|(si, s)| {
                    s.has.is_empty()
                        && s.missing.is_empty()
                        && PROBES
                            .iter()
                            .all(|p| self.path_hits(&[p]).contains(&(ri, si)))
                });
            if all {
                catch_all = Some(ri);
            }
        }
        out
    }

    /// Per rule, whether it matches the request and why (for `rotagate explain`).
    pub fn explain(&self, req: &RequestParts<'_>) -> Vec<RuleReport> {
        let decoded = path::decoded(req.path);
        let mut paths = vec![req.path];
        if let Some(d) = &decoded {
            paths.push(d);
        }
        let hits = self.path_hits(&paths);
        self.rules
            .iter()
            .enumerate()
            .map(|(ri, rule)| {
                let mut reasons = Vec::new();
                let m_ok = method_ok(rule, req.method);
                if !rule.methods.is_empty() {
                    reasons.push(format!(
                        "method {} {} [{}]",
                        req.method,
                        if m_ok { "is in" } else { "is not in" },
                        rule.methods.join(", ")
                    ));
                }
                let h_ok = host_ok(rule, req.host);
                if !rule.hosts.is_empty() {
                    reasons.push(format!(
                        "host {} {} [{}]",
                        req.host.unwrap_or("(none)"),
                        if h_ok { "matches" } else { "does not match" },
                        rule.hosts.join(", ")
                    ));
                }
                let mut matched = false;
                for (si, src) in rule.sources.iter().enumerate() {
                    let original = &self.specs[ri].sources[si].source;
                    if !hits.contains(&(ri, si)) {
                        reasons.push(format!(
                            "source {original:?}: path does not match (wrapped as {:?})",
                            src.wrapped
                        ));
                        continue;
                    }
                    let failed: Vec<String> = src
                        .has
                        .iter()
                        .filter(|c| !condition_holds(c, req))
                        .map(|c| format!("has {} not satisfied", describe(c)))
                        .chain(
                            src.missing
                                .iter()
                                .filter(|c| condition_holds(c, req))
                                .map(|c| format!("missing {} is present", describe(c))),
                        )
                        .collect();
                    if failed.is_empty() {
                        reasons.push(format!("source {original:?}: path matches"));
                        matched |= m_ok && h_ok;
                    } else {
                        reasons.push(format!(
                            "source {original:?}: path matches, but {}",
                            failed.join("; ")
                        ));
                    }
                }
                RuleReport {
                    rule: ri,
                    matched,
                    reasons,
                }
            })
            .collect()
    }
}

fn describe(c: &CompiledCondition) -> String {
    let kind = match c.kind {
        ConditionKind::Header => "header",
        ConditionKind::Cookie => "cookie",
        ConditionKind::Query => "query",
        ConditionKind::Host => "host",
    };
    if c.kind == ConditionKind::Host {
        kind.to_string()
    } else {
        format!("{kind} {:?}", c.key)
    }
}

fn method_ok(rule: &CompiledRule, method: &str) -> bool {
    rule.methods.is_empty() || rule.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
}

/// `*.example.com` matches any subdomain (any depth) of example.com, not example.com.
fn host_ok(rule: &CompiledRule, host: Option<&str>) -> bool {
    if rule.hosts.is_empty() {
        return true;
    }
    let Some(host) = host else { return false };
    rule.hosts.iter().any(|h| match h.strip_prefix("*.") {
        Some(domain) => {
            host.len() > domain.len() + 1
                && host.ends_with(domain)
                && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
        }
        None => h.eq_ignore_ascii_case(host),
    })
}

fn conditions_ok(src: &CompiledSource, req: &RequestParts<'_>) -> bool {
    src.has.iter().all(|c| condition_holds(c, req))
        && !src.missing.iter().any(|c| condition_holds(c, req))
}

/// Next's `matchHas` for one item: the value must be present and non-empty, and match
/// the anchored `value` regex when one is given.
fn condition_holds(c: &CompiledCondition, req: &RequestParts<'_>) -> bool {
    let value: Option<std::borrow::Cow<'_, str>> = match c.kind {
        ConditionKind::Header => {
            let vals: Vec<&str> = req
                .headers
                .get_all(c.key.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            match vals.len() {
                0 => None,
                1 => Some(vals[0].into()),
                _ => Some(vals.join(", ").into()),
            }
        }
        ConditionKind::Cookie => cookie_value(req.headers, &c.key).map(Into::into),
        ConditionKind::Query => req
            .query
            .and_then(|q| query_value(q, &c.key))
            .map(Into::into),
        ConditionKind::Host => req.host.map(Into::into),
    };
    match (value, &c.value) {
        (Some(v), None) => !v.is_empty(),
        (Some(v), Some(re)) => !v.is_empty() && re.is_match_or(&v, c.on_limit),
        (None, _) => false,
    }
}

/// The first cookie of that name, percent-decoded (as the `cookie` npm parser does).
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    for h in headers.get_all(http::header::COOKIE) {
        // read lossily, as the session decision does: a stray non-ASCII byte must not
        // hide a cookie from `has` / `missing`
        let s = String::from_utf8_lossy(h.as_bytes());
        for pair in s.split(';') {
            let Some((k, v)) = pair.split_once('=') else {
                continue;
            };
            if k.trim() == name {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|x| x.strip_suffix('"'))
                    .unwrap_or(v);
                return Some(
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned(),
                );
            }
        }
    }
    None
}

/// The last value of a query parameter (Node's `querystring` gives an array; Next
/// takes its last element), `+` read as space, percent-decoded.
fn query_value(query: &str, name: &str) -> Option<String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k) == name).then(|| decode(v))
        })
        .next_back()
}

/// Why one rule matched or not.
#[derive(Debug, Clone)]
pub struct RuleReport {
    /// Rule index.
    pub rule: usize,
    /// Whether the whole rule matched.
    pub matched: bool,
    /// Human-readable reasons, one per check (source tried, method, host, has/missing).
    pub reasons: Vec<String>,
}

/// A rule set of one plain source per rule (unit tests of modules that query rules).
#[cfg(test)]
pub(crate) fn rule_set_of(sources: &[&str], opts: &NextOptions) -> RuleSet {
    let specs: Vec<MatcherSpec> = sources
        .iter()
        .map(|s| MatcherSpec {
            sources: vec![SourceSpec {
                source: s.to_string(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    RuleSet::build(&specs, opts).expect("test rules compile")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn src(s: &str) -> SourceSpec {
        SourceSpec {
            source: s.to_string(),
            ..Default::default()
        }
    }
    fn rule(sources: Vec<SourceSpec>) -> MatcherSpec {
        MatcherSpec {
            sources,
            ..Default::default()
        }
    }
    fn req<'a>(
        method: &'a str,
        host: Option<&'a str>,
        path: &'a str,
        query: Option<&'a str>,
        h: &'a HeaderMap,
    ) -> RequestParts<'a> {
        RequestParts {
            method,
            host,
            path,
            query,
            headers: h,
        }
    }
    fn cond(kind: ConditionKind, key: &str, value: Option<&str>) -> Condition {
        Condition {
            kind,
            key: key.to_string(),
            value: value.map(str::to_string),
        }
    }

    #[test]
    fn first_match_wins_in_order() {
        let set = RuleSet::build(
            &[rule(vec![src("/a/:p*")]), rule(vec![src("/:p*")])],
            &NextOptions::default(),
        )
        .unwrap();
        let h = HeaderMap::new();
        assert_eq!(
            set.first_match(&req("GET", None, "/a/b", None, &h)),
            Some(0)
        );
        assert_eq!(set.first_match(&req("GET", None, "/b", None, &h)), Some(1));
    }

    #[test]
    fn has_and_missing_follow_next_match_has() {
        let mut s = src("/:p*");
        s.has = vec![
            cond(ConditionKind::Header, "X-Flag", Some("on|yes")),
            cond(ConditionKind::Cookie, "session", None),
        ];
        s.missing = vec![cond(ConditionKind::Query, "preview", None)];
        let set = RuleSet::build(&[rule(vec![s])], &NextOptions::default()).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-flag", HeaderValue::from_static("yes"));
        h.insert("cookie", HeaderValue::from_static("a=1; session=abc"));
        assert_eq!(set.first_match(&req("GET", None, "/x", None, &h)), Some(0));
        assert_eq!(
            set.first_match(&req("GET", None, "/x", Some("preview=1"), &h)),
            None
        );
        // an empty value counts as absent, for `missing` too
        assert_eq!(
            set.first_match(&req("GET", None, "/x", Some("preview="), &h)),
            Some(0)
        );
        // the value regex is anchored
        h.insert("x-flag", HeaderValue::from_static("yes-please"));
        assert_eq!(set.first_match(&req("GET", None, "/x", None, &h)), None);
        h.insert("x-flag", HeaderValue::from_static("on"));
        h.insert("cookie", HeaderValue::from_static("session="));
        assert_eq!(set.first_match(&req("GET", None, "/x", None, &h)), None);
    }

    #[test]
    fn host_condition_and_hosts_and_methods() {
        let mut s = src("/:p*");
        s.has = vec![cond(ConditionKind::Host, "", Some("admin\\.example\\.com"))];
        let mut r0 = rule(vec![s]);
        r0.methods = vec!["POST".into()];
        let mut r1 = rule(vec![src("/:p*")]);
        r1.hosts = vec!["*.example.com".into()];
        let set = RuleSet::build(&[r0, r1], &NextOptions::default()).unwrap();
        let h = HeaderMap::new();
        assert_eq!(
            set.first_match(&req("POST", Some("admin.example.com"), "/", None, &h)),
            Some(0)
        );
        assert_eq!(
            set.first_match(&req("GET", Some("admin.example.com"), "/", None, &h)),
            Some(1)
        );
        assert_eq!(
            set.first_match(&req("GET", Some("a.b.example.com"), "/", None, &h)),
            Some(1)
        );
        assert_eq!(
            set.first_match(&req("GET", Some("example.com"), "/", None, &h)),
            None
        );
        assert_eq!(
            set.first_match(&req("GET", Some("evilexample.com"), "/", None, &h)),
            None
        );
    }

    #[test]
    fn raw_and_decoded_paths_are_both_tried() {
        let set =
            RuleSet::build(&[rule(vec![src("/caf\u{e9}")])], &NextOptions::default()).unwrap();
        let h = HeaderMap::new();
        assert_eq!(
            set.first_match(&req("GET", None, "/caf%C3%A9", None, &h)),
            Some(0)
        );
    }

    #[test]
    fn invalid_sources_are_refused_with_reasons() {
        let e = RuleSet::build(
            &[rule(vec![src("/ok"), src("/(abc")])],
            &NextOptions::default(),
        )
        .unwrap_err();
        assert_eq!(
            (e.rule, e.source_index, e.reason.as_str()),
            (0, Some(1), "Unbalanced pattern at 1")
        );
        let e =
            RuleSet::build(&[rule(vec![src("no-slash")])], &NextOptions::default()).unwrap_err();
        assert!(e.reason.contains("does not start with /"), "{}", e.reason);
        let mut s = src("/x");
        s.has = vec![cond(ConditionKind::Header, "x", Some("("))];
        assert!(RuleSet::build(&[rule(vec![s])], &NextOptions::default()).is_err());
    }

    #[test]
    fn unreachable_rules_are_reported() {
        let set = RuleSet::build(
            &[
                rule(vec![src("/a")]),
                rule(vec![src("/a")]),
                rule(vec![src("/((?!api).*)")]),
                rule(vec![src("/:path*")]),
                rule(vec![src("/b")]),
            ],
            &NextOptions::default(),
        )
        .unwrap();
        let w = set.unreachable_rules();
        assert_eq!(w.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1, 4]);
        assert!(w[0].1.contains("duplicate of rule 0"));
        assert!(w[1].1.contains("rule 3"));
    }

    #[test]
    fn backtracking_limit_fails_closed_only_for_flagged_rules() {
        // needs fancy-regex (lookaround) and backtracks exponentially without a `b`
        let hard = "/((?:(?!z)a|a)+b)";
        let mut closed = rule(vec![src(hard)]);
        closed.fail_closed = true;
        let open = rule(vec![src(hard)]);
        let h = HeaderMap::new();
        let run = format!("/{}", "a".repeat(40));
        let _ = take_regex_limit_hits();
        let set = RuleSet::build(&[closed.clone()], &NextOptions::default()).unwrap();
        assert_eq!(set.first_match(&req("GET", None, &run, None, &h)), Some(0));
        assert!(take_regex_limit_hits() >= 1);
        assert_eq!(take_regex_limit_hits(), 0);
        let set =
            RuleSet::build(&[open, rule(vec![src("/:p*")])], &NextOptions::default()).unwrap();
        assert_eq!(set.first_match(&req("GET", None, &run, None, &h)), Some(1));
        assert!(take_regex_limit_hits() >= 1);
        // a `has` value regex that gives up: the fail-closed rule still matches
        let mut s = src("/:p*");
        s.has = vec![cond(
            ConditionKind::Header,
            "x-a",
            Some("(?:(?:(?!z)a|a)+b)"),
        )];
        let mut r = rule(vec![s]);
        r.fail_closed = true;
        let set = RuleSet::build(&[r], &NextOptions::default()).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_str(&"a".repeat(40)).unwrap());
        assert_eq!(set.first_match(&req("GET", None, "/x", None, &h)), Some(0));
        let _ = take_regex_limit_hits();
    }

    #[test]
    fn case_insensitive_paths() {
        let rules = [
            rule(vec![src("/premium/:p*")]),
            rule(vec![src("/((?!api).*)")]),
        ];
        let h = HeaderMap::new();
        let ci = NextOptions {
            case_insensitive: true,
            ..Default::default()
        };
        let set = RuleSet::build(&rules, &ci).unwrap();
        assert_eq!(
            set.first_match(&req("GET", None, "/PREMIUM/x", None, &h)),
            Some(0)
        );
        assert_eq!(set.first_match(&req("GET", None, "/API/x", None, &h)), None);
        let set = RuleSet::build(&rules, &NextOptions::default()).unwrap();
        assert_eq!(
            set.first_match(&req("GET", None, "/PREMIUM/x", None, &h)),
            Some(1)
        );
        assert_eq!(
            set.first_match(&req("GET", None, "/API/x", None, &h)),
            Some(1)
        );
    }

    #[test]
    fn host_rules_ignore_a_trailing_dot() {
        let mut r = rule(vec![src("/:p*")]);
        r.hosts = vec!["Admin.Test.".into()];
        let set = RuleSet::build(&[r], &NextOptions::default()).unwrap();
        let h = HeaderMap::new();
        assert_eq!(
            set.first_match(&req("GET", Some("admin.test"), "/", None, &h)),
            Some(0)
        );
    }

    #[test]
    fn explain_says_why() {
        let mut r = rule(vec![src("/premium/:p*")]);
        r.methods = vec!["POST".into()];
        let set = RuleSet::build(&[r, rule(vec![src("/:p*")])], &NextOptions::default()).unwrap();
        let h = HeaderMap::new();
        let rep = set.explain(&req("GET", None, "/premium/x", None, &h));
        assert!(!rep[0].matched);
        assert!(rep[0]
            .reasons
            .iter()
            .any(|r| r.contains("method GET is not in [POST]")));
        assert!(rep[1].matched);
    }
}
