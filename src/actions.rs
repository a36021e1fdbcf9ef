//! Server Actions (DESIGN §6): which routes own each action id of Next's
//! server-reference manifest, the strictest rule for actions whose owner cannot be
//! resolved, and the action ids a no-JavaScript form carries in its body. Pure
//! functions; the proxy glue reads the body and writes the answer.
//!
//! Next runs whatever action id arrives, posted to any page, so an action must carry
//! the requirements of the pages that define it wherever it is posted. An owner is
//! every rule whose match fits some URL of a defining page (compared as automata, see
//! [`crate::matcher::owners`]); the non-path half of a rule (method, hosts, `has`,
//! `missing`) is judged on the request itself, as if it had been posted to that page.

use std::collections::HashMap;

use http::HeaderMap;

use crate::matcher::owners::{PageShape, Segment};
use crate::matcher::{RequestParts, RuleSet};

/// Longest form body rotagate reads to find a no-JS action's id. A longer body could
/// carry a later `$ACTION_ID_` field that overrides any id seen in its start (React's
/// `decodeAction` keeps the last), so longer bodies get the strictest action rule.
pub const FORM_LOOK_LIMIT: usize = 16 * 1024;

/// Server Action ids → the `(rule, source)` pairs whose path matches a page that
/// defines them, with the actions that fell back to the strictest rule.
#[derive(Debug, Clone, Default)]
pub struct ActionIndex {
    actions: HashMap<String, Owners>,
    /// Every rule that owns some action, ascending: the strictest action rule.
    strictest: Vec<usize>,
    /// Sorted (id, why) of the actions held to the strictest rule.
    fell_back: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default)]
struct Owners {
    pairs: Vec<(usize, usize)>,
    /// Why the owner could not be resolved; the strictest rule applies then.
    unresolved: Option<String>,
}

/// The `(rule, source)` pairs matching one page, or why they cannot be known.
type PageOwners = Result<Vec<(usize, usize)>, String>;

/// What the index says about one action id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The manifest does not list it.
    Unknown,
    /// Its owners: `(rule, source)` pairs whose path fits a defining page.
    Owned(&'a [(usize, usize)]),
    /// Its owner could not be resolved (why): the strictest rule applies.
    FellBack(&'a str),
}

/// The URL segments of a Next app-router entry (`app/(shop)/premium/[id]/page`):
/// route groups and parallel slots dropped, interception markers (`(.)`, `(..)`,
/// `(...)`) applied, dynamic folders typed. Anything else is refused with why.
pub fn entry_segments(entry: &str) -> Result<Vec<Segment>, String> {
    let rest = entry
        .strip_prefix("app")
        .filter(|r| r.is_empty() || r.starts_with('/'))
        .ok_or("not an app-router entry")?;
    let rest = rest
        .strip_suffix("/page")
        .or_else(|| rest.strip_suffix("/route"))
        .or((rest == "page" || rest == "route").then_some(""))
        .ok_or("not a page or route entry")?;
    let mut segs: Vec<Segment> = Vec::new();
    for folder in rest.split('/').filter(|f| !f.is_empty()) {
        let mut name = folder;
        // interception: the URL is the intercepted route's, relative to this level
        if let Some(r) = name.strip_prefix("(...)") {
            segs.clear();
            name = r;
        } else if name.starts_with("(..)") {
            while let Some(r) = name.strip_prefix("(..)") {
                segs.pop()
                    .ok_or("an interception marker climbs above the app root")?;
                name = r;
            }
        } else if let Some(r) = name.strip_prefix("(.)") {
            name = r;
        }
        if name.is_empty() {
            return Err(format!("cannot read the folder {folder:?}"));
        }
        if (name.starts_with('(') && name.ends_with(')')) || name.starts_with('@') {
            continue;
        }
        if matches!(
            segs.last(),
            Some(Segment::CatchAll | Segment::OptionalCatchAll)
        ) {
            return Err("a catch-all segment is not the last one".to_string());
        }
        let seg = if name.starts_with("[[...") && name.ends_with("]]") {
            Segment::OptionalCatchAll
        } else if name.starts_with("[...") && name.ends_with(']') {
            Segment::CatchAll
        } else if name.starts_with('[') && name.ends_with(']') {
            Segment::Dynamic
        } else if name.contains(['[', ']']) {
            return Err(format!("cannot read the folder {folder:?}"));
        } else {
            // `%5F` names a folder whose URL segment starts with `_`
            Segment::Static(name.replace("%5F", "_").replace("%5f", "_"))
        };
        segs.push(seg);
    }
    Ok(segs)
}

impl ActionIndex {
    /// Resolves each action's defining pages (`actions`: id → manifest entry names)
    /// against the rules `owns` accepts (those with a `require`), under the app's
    /// `base_path` and i18n `locales`.
    pub fn build(
        actions: &[(String, Vec<String>)],
        rules: &RuleSet,
        owns: &dyn Fn(usize) -> bool,
        base_path: &str,
        locales: &[String],
    ) -> ActionIndex {
        let mut analysis = rules.owner_analysis();
        // many actions share pages: resolve each page once
        let mut pages: HashMap<&str, PageOwners> = HashMap::new();
        let mut index = ActionIndex::default();
        let mut strictest: Vec<usize> = Vec::new();
        for (id, entries) in actions {
            let mut owners = Owners::default();
            if entries.is_empty() {
                owners.unresolved = Some("the manifest names no page that defines it".into());
            }
            for entry in entries {
                let page = pages.entry(entry.as_str()).or_insert_with(|| {
                    let segs = entry_segments(entry)?;
                    let shape = PageShape::new(base_path, locales, &segs);
                    let m = analysis.matches(&shape, owns);
                    strictest.extend(m.undecided.iter().map(|u| u.0));
                    match m.undecided.first() {
                        None => Ok(m.pairs),
                        Some((ri, why)) => {
                            strictest.extend(m.pairs.iter().map(|p| p.0));
                            Err(format!("rule {ri} cannot be compared with it: {why}"))
                        }
                    }
                });
                match page {
                    Ok(pairs) => owners.pairs.extend_from_slice(pairs),
                    Err(why) => {
                        owners
                            .unresolved
                            .get_or_insert_with(|| format!("page {entry}: {why}"));
                    }
                }
            }
            owners.pairs.sort_unstable();
            owners.pairs.dedup();
            strictest.extend(owners.pairs.iter().map(|p| p.0));
            if let Some(why) = &owners.unresolved {
                index.fell_back.push((id.clone(), why.clone()));
            }
            index.actions.insert(id.clone(), owners);
        }
        strictest.sort_unstable();
        strictest.dedup();
        index.strictest = strictest;
        index.fell_back.sort();
        index
    }

    /// What the manifest says about action `id`.
    pub fn lookup(&self, id: &str) -> Lookup<'_> {
        match self.actions.get(id) {
            None => Lookup::Unknown,
            Some(Owners {
                unresolved: Some(why),
                ..
            }) => Lookup::FellBack(why),
            Some(o) => Lookup::Owned(&o.pairs),
        }
    }

    /// The rules that own some action (ascending): all of their requirements together
    /// are the strictest action rule.
    pub fn strictest(&self) -> &[usize] {
        &self.strictest
    }

    /// The actions held to the strictest rule, as (id, why), sorted by id.
    pub fn fell_back(&self) -> &[(String, String)] {
        &self.fell_back
    }

    /// True when no manifest was loaded (or it lists no action).
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// How a request asks to run a Server Action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionRequest {
    /// It does not.
    None,
    /// These ids (a `Next-Action` header, or every id a form body names).
    Ids(Vec<String>),
    /// It may, but which action cannot be read (why): the strictest rule applies.
    Unreadable(&'static str),
}

/// What the proxy must do to learn a form action's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormLook {
    /// Not a possible form action.
    NotForm,
    /// Read the whole body (its length is at most [`FORM_LOOK_LIMIT`]).
    Read,
    /// A form body too long, or of unknown length, to read whole.
    TooLong,
    /// Several Content-Type headers, one of them a form type: the ids cannot be read.
    Ambiguous,
}

/// True when a Content-Type value starts like a type Next reads a no-JS action from
/// (Next: `contentType.startsWith('multipart/form-data')`, or the urlencoded type).
/// Read as bytes: a byte that is not ASCII elsewhere in the value (Node reads it as
/// latin1) must not make a form "not a form".
fn is_form_type(value: &[u8]) -> bool {
    let ct = value.trim_ascii_start();
    let starts = |p: &[u8]| ct.len() >= p.len() && ct[..p.len()].eq_ignore_ascii_case(p);
    starts(b"multipart/form-data") || starts(b"application/x-www-form-urlencoded")
}

/// The `Next-Action` header, built once (a `&str` name is parsed on every lookup).
static NEXT_ACTION: http::HeaderName = http::HeaderName::from_static("next-action");

/// True when any Content-Type header of the request starts like a form type.
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::CONTENT_TYPE)
        .iter()
        .any(|v| is_form_type(v.as_bytes()))
}

/// The action a request's headers name: a non-empty `Next-Action` header (several
/// are joined with `, `, as Node hands them to Next); `None` when the body must say
/// (a POST without the header or with an empty one — Next reads an empty one as a
/// form action) or when it is no action at all; see [`form_look`].
pub fn header_action(method: &http::Method, headers: &HeaderMap) -> Option<ActionRequest> {
    // Next runs actions for POSTs only; every other request pays one comparison
    if method != http::Method::POST {
        return None;
    }
    let mut values = headers.get_all(&NEXT_ACTION).iter();
    let first = values.next()?;
    let mut id = String::from_utf8_lossy(first.as_bytes()).trim().to_string();
    for v in values {
        id.push_str(", ");
        id.push_str(String::from_utf8_lossy(v.as_bytes()).trim());
    }
    if id.is_empty() {
        if is_form(headers) {
            return None;
        }
        return Some(ActionRequest::Unreadable("an empty Next-Action header"));
    }
    Some(ActionRequest::Ids(vec![id]))
}

/// Whether a request may be a no-JS form action whose id is in its body: a POST of a
/// form content type whose `Next-Action` header is absent or empty, and whether its
/// body is short enough to read whole.
pub fn form_look(method: &http::Method, headers: &HeaderMap) -> FormLook {
    if method != http::Method::POST {
        return FormLook::NotForm;
    }
    let header_id = headers
        .get_all(&NEXT_ACTION)
        .iter()
        .any(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace));
    if header_id || !is_form(headers) {
        return FormLook::NotForm;
    }
    if headers
        .get_all(http::header::CONTENT_TYPE)
        .iter()
        .nth(1)
        .is_some()
    {
        // which one the app reads is the app's business: none can be trusted
        return FormLook::Ambiguous;
    }
    if headers.contains_key(http::header::TRANSFER_ENCODING) {
        return FormLook::TooLong;
    }
    let mut lengths = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let len = match (lengths.next(), lengths.next()) {
        (Some(v), None) => v.to_str().ok().and_then(|s| s.trim().parse::<usize>().ok()),
        _ => None,
    };
    match len {
        Some(n) if n <= FORM_LOOK_LIMIT => FormLook::Read,
        _ => FormLook::TooLong,
    }
}

/// The action ids a whole form body names, as React's `decodeAction` reads them:
/// every `$ACTION_ID_<id>` field, and every `$ACTION_REF_<n>` whose `$ACTION_<n>:0`
/// field holds `{"id": …}`. All of them count (a later one overrides an earlier one in
/// React). A body that cannot be parsed, or that mentions `ACTION_` anywhere the
/// parse does not account for (a field name the parse read differently from the
/// app's parser), is unreadable. So is a body the app may decode differently from
/// rotagate: a charset other than UTF-8, a part in a transfer encoding (Node's
/// `Request.formData()` decodes base64 parts), or a part header rotagate does not know.
/// `content_type` is the header's raw bytes (Node reads them as latin1).
pub fn form_ids(content_type: &[u8], body: &[u8]) -> ActionRequest {
    let text = String::from_utf8_lossy(content_type);
    if !charset_is_utf8(&text) {
        return ActionRequest::Unreadable("a form body in a charset other than UTF-8");
    }
    let fields = if is_multipart(content_type) {
        let Some(b) = boundary(&text) else {
            return ActionRequest::Unreadable("a form boundary rotagate cannot read");
        };
        match multipart_fields(body, &b) {
            Ok(f) => f,
            Err(why) => return ActionRequest::Unreadable(why),
        }
    } else {
        urlencoded_fields(body)
    };
    // every `ACTION_` in the body must be one the parse saw
    let decoded = percent_encoding::percent_decode(body).collect::<Vec<u8>>();
    let in_body = count(&decoded, b"ACTION_");
    let seen: usize = fields
        .iter()
        .map(|(k, v)| count(k.as_bytes(), b"ACTION_") + count(v.as_bytes(), b"ACTION_"))
        .sum();
    if in_body > seen {
        return ActionRequest::Unreadable("a form field name rotagate cannot read");
    }
    let mut ids = Vec::new();
    for (k, _) in &fields {
        if let Some(id) = k.strip_prefix("$ACTION_ID_") {
            ids.push(id.to_string());
        } else if let Some(n) = k.strip_prefix("$ACTION_REF_") {
            let root = format!("$ACTION_{n}:0");
            let mut roots = fields.iter().filter(|(k, _)| *k == root);
            let (Some((_, json)), None) = (roots.next(), roots.next()) else {
                return ActionRequest::Unreadable("a bound action without its data");
            };
            let id = serde_json::from_str::<serde_json::Value>(json)
                .ok()
                .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string));
            match id {
                // a `$`-string is a reference to another field in React's encoding
                Some(id) if !id.starts_with('$') => ids.push(id),
                _ => return ActionRequest::Unreadable("a bound action whose id cannot be read"),
            }
        }
    }
    if ids.is_empty() {
        ActionRequest::None
    } else {
        ActionRequest::Ids(ids)
    }
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// `application/x-www-form-urlencoded` pairs, decoded as `URLSearchParams` does.
fn urlencoded_fields(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &[u8]| {
        let plus: Vec<u8> = s
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        String::from_utf8_lossy(&percent_encoding::percent_decode(&plus).collect::<Vec<u8>>())
            .into_owned()
    };
    body.split(|&b| b == b'&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let mut it = kv.splitn(2, |&b| b == b'=');
            let k = it.next().unwrap_or_default();
            let v = it.next().unwrap_or_default();
            (decode(k), decode(v))
        })
        .collect()
}

fn is_multipart(content_type: &[u8]) -> bool {
    let ct = content_type.trim_ascii_start();
    ct.len() >= 19 && ct[..19].eq_ignore_ascii_case(b"multipart/form-data")
}

/// The `key=value` parameters of a content type (split on `;`, values unquoted).
fn params(content_type: &str) -> impl Iterator<Item = (&str, &str)> {
    content_type.split(';').skip(1).filter_map(|p| {
        let (k, v) = p.split_once('=')?;
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .unwrap_or(v);
        Some((k.trim(), v))
    })
}

/// False when a content type names a charset other than UTF-8: the app (or a
/// parser it uses) may decode the body in it, and rotagate reads UTF-8.
fn charset_is_utf8(content_type: &str) -> bool {
    params(content_type).all(|(k, v)| {
        !k.eq_ignore_ascii_case("charset")
            || v.eq_ignore_ascii_case("utf-8")
            || v.eq_ignore_ascii_case("utf8")
    })
}

/// The `boundary` parameter of a multipart content type (quoted or not). `None`
/// unless there is exactly one, made only of RFC 2046 boundary characters: anything
/// else (a quote, a `;` inside quotes, a byte that is not ASCII) could be split or
/// decoded differently by the app's parser, which would then see other parts.
fn boundary(content_type: &str) -> Option<String> {
    let mut found = params(content_type).filter(|(k, _)| k.eq_ignore_ascii_case("boundary"));
    let (_, v) = found.next()?;
    if found.next().is_some() {
        return None;
    }
    let bchar = |c: char| c.is_ascii_alphanumeric() || "'()+_,-./:=? ".contains(c);
    (!v.is_empty() && v.len() <= 70 && v.chars().all(bchar)).then(|| v.to_string())
}

/// The (name, value) fields of a multipart/form-data body as browsers write it (RFC
/// 7578; names with `%22`, `%0D`, `%0A` decoded, as the HTML standard and undici do).
/// Why not when it is not well formed, or when a part may decode differently in the
/// app: a `Content-Transfer-Encoding` other than `7bit`/`8bit`/`binary`, a
/// `Content-Type` charset other than UTF-8, or any other part header. Browsers write
/// only `Content-Disposition` and `Content-Type`; every part is checked, not only
/// `$ACTION_` ones, as a bound action's data may point at any field.
fn multipart_fields(body: &[u8], boundary: &str) -> Result<Vec<(String, String)>, &'static str> {
    const MALFORMED: &str = "a form body that cannot be parsed";
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut rest = body.strip_prefix(delim).ok_or(MALFORMED)?;
    let mut fields = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(fields);
        }
        rest = rest.strip_prefix(b"\r\n").ok_or(MALFORMED)?;
        let head_end = find(rest, b"\r\n\r\n").ok_or(MALFORMED)?;
        let head = std::str::from_utf8(&rest[..head_end]).map_err(|_| MALFORMED)?;
        let after = &rest[head_end + 4..];
        let mut close = b"\r\n".to_vec();
        close.extend_from_slice(delim);
        let end = find(after, &close).ok_or(MALFORMED)?;
        let value = String::from_utf8_lossy(&after[..end]).into_owned();
        let mut name = None;
        for line in head.split("\r\n") {
            let (k, v) = line.split_once(':').ok_or(MALFORMED)?;
            let k = k.trim();
            if k.eq_ignore_ascii_case("content-disposition") {
                if name.is_some() {
                    return Err(MALFORMED);
                }
                name = Some(disposition_name(v).ok_or(MALFORMED)?);
            } else if k.eq_ignore_ascii_case("content-type") {
                if !charset_is_utf8(v) {
                    return Err("a form part in a charset other than UTF-8");
                }
            } else if k.eq_ignore_ascii_case("content-transfer-encoding") {
                let cte = v.trim();
                if !["7bit", "8bit", "binary"]
                    .iter()
                    .any(|e| cte.eq_ignore_ascii_case(e))
                {
                    return Err("a form part in a transfer encoding");
                }
            } else {
                return Err("a form part header rotagate cannot account for");
            }
        }
        fields.push((name.ok_or(MALFORMED)?, value));
        rest = &after[end + close.len()..];
    }
}

/// The `name` of a `form-data` Content-Disposition value; `None` for anything else
/// (also a second `name`, or `name*`).
fn disposition_name(v: &str) -> Option<String> {
    let v = v.trim();
    let rest = v.strip_prefix("form-data")?;
    let mut name = None;
    let mut s = rest;
    while !s.trim().is_empty() {
        s = s.trim_start().strip_prefix(';')?.trim_start();
        let eq = s.find('=')?;
        let key = s[..eq].trim();
        let after = s[eq + 1..].strip_prefix('"')?;
        let close = after.find('"')?;
        let value = &after[..close];
        s = &after[close + 1..];
        if key == "name" {
            if name.is_some() {
                return None;
            }
            name = Some(
                value
                    .replace("%22", "\"")
                    .replace("%0D", "\r")
                    .replace("%0A", "\n"),
            );
        } else if key != "filename" {
            return None;
        }
    }
    name
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The owners of `id` that fit this request: the rules of its defining pages whose
/// method, hosts and `has`/`missing` hold for it.
pub fn owners_for(rules: &RuleSet, pairs: &[(usize, usize)], req: &RequestParts<'_>) -> Vec<usize> {
    let mut out: Vec<usize> = pairs
        .iter()
        .filter(|&&(ri, si)| rules.fits_except_path(ri, si, req))
        .map(|&(ri, _)| ri)
        .collect();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::NextOptions;
    use Segment::*;

    #[test]
    fn entries_become_url_segments() {
        assert_eq!(entry_segments("app/page").unwrap(), vec![]);
        assert_eq!(
            entry_segments("app/(shop)/premium/[id]/page").unwrap(),
            vec![Static("premium".into()), Dynamic]
        );
        assert_eq!(
            entry_segments("app/docs/[...slug]/page").unwrap(),
            vec![Static("docs".into()), CatchAll]
        );
        assert_eq!(
            entry_segments("app/shop/[[...slug]]/page").unwrap(),
            vec![Static("shop".into()), OptionalCatchAll]
        );
        assert_eq!(
            entry_segments("app/api/things/route").unwrap(),
            vec![Static("api".into()), Static("things".into())]
        );
        assert_eq!(
            entry_segments("app/feed/@modal/(..)photo/[id]/page").unwrap(),
            vec![Static("photo".into()), Dynamic]
        );
        assert_eq!(
            entry_segments("app/a/b/(...)photo/page").unwrap(),
            vec![Static("photo".into())]
        );
        assert_eq!(
            entry_segments("app/a/(.)photo/page").unwrap(),
            vec![Static("a".into()), Static("photo".into())]
        );
        assert_eq!(
            entry_segments("app/%5Fprivate/page").unwrap(),
            vec![Static("_private".into())]
        );
        for bad in [
            "pages/legacy",
            "app/odd/template",
            "app/(..)up/page",
            "app/[...a]/b/page",
            "app/x[y]/page",
        ] {
            assert!(entry_segments(bad).is_err(), "{bad}");
        }
    }

    fn rules(sources: &[&str]) -> RuleSet {
        crate::matcher::rule_set_of(sources, &NextOptions::default())
    }

    #[test]
    fn owners_and_the_strictest_rule() {
        let set = rules(&["/premium/:id(\\d+)", "/account/:p*", "/:p*"]);
        let actions = vec![
            ("a".to_string(), vec!["app/premium/[id]/page".to_string()]),
            ("b".to_string(), vec!["app/page".to_string()]),
            ("c".to_string(), vec!["app/odd/template".to_string()]),
            ("d".to_string(), vec![]),
        ];
        // rule 2 has no `require`: it owns nothing
        let idx = ActionIndex::build(&actions, &set, &|i| i < 2, "", &[]);
        assert_eq!(idx.lookup("a"), Lookup::Owned(&[(0, 0)]));
        assert_eq!(idx.lookup("b"), Lookup::Owned(&[]));
        assert!(matches!(idx.lookup("c"), Lookup::FellBack(w) if w.contains("app/odd/template")));
        assert!(matches!(idx.lookup("d"), Lookup::FellBack(_)));
        assert_eq!(idx.lookup("zzz"), Lookup::Unknown);
        assert_eq!(idx.strictest(), &[0]);
        let ids: Vec<&str> = idx.fell_back().iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(ids, vec!["c", "d"]);
    }

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, http::HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn header_and_form_actions() {
        let post = http::Method::POST;
        let mp = ("content-type", "multipart/form-data; boundary=x");
        assert_eq!(
            header_action(&post, &h(&[("next-action", " abc ")])),
            Some(ActionRequest::Ids(vec!["abc".into()]))
        );
        assert_eq!(
            header_action(&post, &h(&[("next-action", "a"), ("next-action", "b")])),
            Some(ActionRequest::Ids(vec!["a, b".into()]))
        );
        assert_eq!(header_action(&post, &h(&[("next-action", ""), mp])), None);
        assert!(matches!(
            header_action(&post, &h(&[("next-action", "")])),
            Some(ActionRequest::Unreadable(_))
        ));
        assert_eq!(
            header_action(&http::Method::GET, &h(&[("next-action", "a")])),
            None
        );
        assert_eq!(
            form_look(&post, &h(&[mp, ("content-length", "100")])),
            FormLook::Read
        );
        assert_eq!(
            form_look(
                &post,
                &h(&[("next-action", ""), mp, ("content-length", "1")])
            ),
            FormLook::Read
        );
        assert_eq!(
            form_look(&post, &h(&[mp, ("content-length", "16385")])),
            FormLook::TooLong
        );
        assert_eq!(
            form_look(&post, &h(&[mp, ("transfer-encoding", "chunked")])),
            FormLook::TooLong
        );
        assert_eq!(form_look(&post, &h(&[mp])), FormLook::TooLong);
        assert_eq!(
            form_look(
                &post,
                &h(&[("next-action", "a"), mp, ("content-length", "1")])
            ),
            FormLook::NotForm
        );
        assert_eq!(
            form_look(
                &post,
                &h(&[
                    ("content-type", "application/json"),
                    ("content-length", "1")
                ])
            ),
            FormLook::NotForm
        );
    }

    #[test]
    fn content_type_and_next_action_bytes_that_are_not_ascii() {
        let post = http::Method::POST;
        let mut m = HeaderMap::new();
        m.insert(
            "content-type",
            http::HeaderValue::from_bytes(b"multipart/form-data; boundary=XyZ; x=\xe9").unwrap(),
        );
        m.insert("content-length", http::HeaderValue::from_static("10"));
        assert_eq!(form_look(&post, &m), FormLook::Read);
        // an empty Next-Action header with such a form type: the body says
        m.insert("next-action", http::HeaderValue::from_static(""));
        assert_eq!(header_action(&post, &m), None);
        // a Next-Action id with such a byte is still an action (an unknown id)
        m.insert(
            "next-action",
            http::HeaderValue::from_bytes(b"prem\xe91").unwrap(),
        );
        assert!(matches!(
            header_action(&post, &m),
            Some(ActionRequest::Ids(ids)) if ids.len() == 1 && ids[0] != "prem1"
        ));
        assert_eq!(form_look(&post, &m), FormLook::NotForm);
        // several Content-Type headers, one a form: which the app reads is unknown
        let both = h(&[
            ("content-type", "text/plain"),
            ("content-type", "multipart/form-data; boundary=x"),
            ("content-length", "1"),
        ]);
        assert_eq!(form_look(&post, &both), FormLook::Ambiguous);
        assert!(is_form_type(b"  Multipart/Form-Data; boundary=x"));
        assert!(!is_form_type(b"\xe9multipart/form-data"));
        let body = mp(&[("$ACTION_ID_p", "")]);
        assert_eq!(
            form_ids(b"multipart/form-data; boundary=XyZ; x=\xe9", &body),
            ActionRequest::Ids(vec!["p".into()])
        );
        for ct in [
            &b"multipart/form-data; boundary=X\xe9Z"[..],
            b"multipart/form-data; boundary=\"XyZ;boundary=q\"",
            b"multipart/form-data; boundary=XyZ; boundary=q",
            b"multipart/form-data",
        ] {
            assert!(
                matches!(form_ids(ct, &body), ActionRequest::Unreadable(_)),
                "{}",
                String::from_utf8_lossy(ct)
            );
        }
    }

    #[test]
    fn encodings_and_charsets_make_form_ids_unreadable() {
        let part = |headers: &str| {
            format!(
                "--XyZ\r\nContent-Disposition: form-data; name=\"$ACTION_REF_1\"\r\n\r\n\r\n\
                 --XyZ\r\nContent-Disposition: form-data; name=\"$ACTION_1:0\"\r\n{headers}\r\n\
                 {{\"eyJpZCI6InByZW0xIn0=\":0,\"id\":\"home1\"}}\r\n--XyZ--\r\n"
            )
            .into_bytes()
        };
        for bad in [
            "Content-Transfer-Encoding: base64\r\n",
            "content-transfer-encoding:  BASE64 \r\n",
            "Content-Transfer-Encoding: quoted-printable\r\n",
            "Content-Transfer-Encoding: x-gzip\r\n",
            "Content-Type: text/plain; charset=utf-16le\r\n",
            "Content-Type: text/plain; charset=\"iso-8859-1\"\r\n",
            "Content-Length: 3\r\n",
        ] {
            assert!(
                matches!(form_ids(MP, &part(bad)), ActionRequest::Unreadable(_)),
                "{bad:?}"
            );
        }
        for fine in [
            "",
            "Content-Transfer-Encoding: 8bit\r\n",
            "Content-Transfer-Encoding: Binary\r\n",
            "Content-Type: application/json; charset=UTF-8\r\n",
            "Content-Type: text/plain\r\n",
        ] {
            assert_eq!(
                form_ids(MP, &part(fine)),
                ActionRequest::Ids(vec!["home1".into()]),
                "{fine:?}"
            );
        }
        let url = b"%24ACTION_ID_p1=";
        for ct in [
            &b"application/x-www-form-urlencoded"[..],
            b"application/x-www-form-urlencoded; charset=UTF-8",
            b"application/x-www-form-urlencoded;charset=\"utf8\"",
        ] {
            assert_eq!(form_ids(ct, url), ActionRequest::Ids(vec!["p1".into()]));
        }
        for ct in [
            &b"application/x-www-form-urlencoded; charset=utf-16le"[..],
            b"application/x-www-form-urlencoded; charset=shift_jis",
            b"multipart/form-data; boundary=XyZ; charset=iso-8859-1",
        ] {
            assert!(matches!(form_ids(ct, url), ActionRequest::Unreadable(_)));
        }
    }

    fn mp(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (k, v) in fields {
            b.extend_from_slice(
                format!("--XyZ\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                    .as_bytes(),
            );
        }
        b.extend_from_slice(b"--XyZ--\r\n");
        b
    }

    const MP: &[u8] = b"multipart/form-data; boundary=XyZ";

    #[test]
    fn form_bodies_name_their_actions() {
        let ids = |v: &[&str]| ActionRequest::Ids(v.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            form_ids(MP, &mp(&[("$ACTION_ID_abc", ""), ("x", "1")])),
            ids(&["abc"])
        );
        assert_eq!(
            form_ids(MP, &mp(&[("$ACTION_ID_a", ""), ("$ACTION_ID_b", "")])),
            ids(&["a", "b"])
        );
        assert_eq!(
            form_ids(
                MP,
                &mp(&[
                    ("$ACTION_REF_1", ""),
                    ("$ACTION_1:0", r#"{"id":"p1","bound":"$@1"}"#),
                    ("$ACTION_1:1", "[]"),
                    ("$ACTION_KEY", "k"),
                ])
            ),
            ids(&["p1"])
        );
        assert_eq!(form_ids(MP, &mp(&[("title", "x")])), ActionRequest::None);
        assert_eq!(
            form_ids(
                b"application/x-www-form-urlencoded",
                b"%24ACTION_ID_p1=&a+b=c"
            ),
            ids(&["p1"])
        );
        assert_eq!(
            form_ids(b"application/x-www-form-urlencoded", b"title=hello"),
            ActionRequest::None
        );
        // whatever the parse cannot account for makes the body unreadable
        for bad in [
            b"--XyZ\r\nContent-Disposition: form-data; name*=utf-8''%24ACTION_ID_p\r\n\r\nv\r\n--XyZ--\r\n".to_vec(),
            b"--XyZ\r\nContent-Disposition: form-data; name=$ACTION_ID_p\r\n\r\nv\r\n--XyZ--\r\n".to_vec(),
            b"junk--XyZ\r\nContent-Disposition: form-data; name=\"$ACTION_ID_p\"\r\n\r\nv\r\n--XyZ--\r\n".to_vec(),
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv".to_vec(),
            mp(&[("$ACTION_REF_1", "")]),
            mp(&[("$ACTION_REF_1", ""), ("$ACTION_1:0", r#"{"id":"$2"}"#)]),
            mp(&[("x", "$ACTION_ID_p")])
                .into_iter()
                .chain(b"\r\n--XyZ\r\nX: $%41CTION_ID_q\r\n".iter().copied())
                .collect(),
        ] {
            assert!(
                matches!(form_ids(MP, &bad), ActionRequest::Unreadable(_)),
                "{}",
                String::from_utf8_lossy(&bad)
            );
        }
    }
}
