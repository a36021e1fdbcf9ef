//! Route matchers: Next.js `config.matcher` semantics (path-to-regexp 6.3.0 dialect,
//! Next 16's `getMiddlewareMatchers` wrapping), `has`/`missing`, methods and hosts,
//! compiled into one ordered rule set where the first match wins.
//!
//! STUB: the contract below is fixed; the implementation is being written.

pub mod path;

use http::HeaderMap;

/// What one `[[route]]` matches on, as written in the file (already parsed, not compiled).
#[derive(Debug, Clone, Default)]
pub struct MatcherSpec {
    /// The `match` entries: a string becomes one source with no conditions.
    pub sources: Vec<SourceSpec>,
    /// `methods = [...]` (upper-cased); empty = any method.
    pub methods: Vec<String>,
    /// `hosts = [...]`, exact or `*.example.com`; empty = any host.
    pub hosts: Vec<String>,
}

/// One Next.js matcher object `{ source, has, missing }`.
#[derive(Debug, Clone, Default)]
pub struct SourceSpec {
    /// The path-to-regexp source, e.g. `/premium/:path*`.
    pub source: String,
    /// Every `has` condition must hold.
    pub has: Vec<Condition>,
    /// No `missing` condition may hold.
    pub missing: Vec<Condition>,
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

/// The compiled, ordered rule set.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    specs: Vec<MatcherSpec>,
}

impl RuleSet {
    /// Compiles the rules in order.
    pub fn build(specs: &[MatcherSpec], _opts: &NextOptions) -> Result<RuleSet, BuildError> {
        Ok(RuleSet { specs: specs.to_vec() })
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// The index of the first rule that matches, if any.
    pub fn first_match(&self, _req: &RequestParts<'_>) -> Option<usize> {
        None
    }

    /// Warnings about rules that can never match (after an unconditional catch-all,
    /// duplicates), as (rule index, message).
    pub fn unreachable_rules(&self) -> Vec<(usize, String)> {
        Vec::new()
    }

    /// Per rule, whether it matches the request and why (for `rotagate explain`).
    pub fn explain(&self, _req: &RequestParts<'_>) -> Vec<RuleReport> {
        Vec::new()
    }
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
