//! Access rules at the edge (DESIGN §6): `require` with claim predicates, the answer
//! a refused request gets for its kind, Server Actions mapped to the routes of the
//! pages that define them, and CSRF for unsafe methods. Pure functions.

use std::collections::HashMap;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Map, Value};

use crate::config::{ClaimPredicate, ClaimTest, Csrf, OnDeny, Origin, Require};
use crate::logout::{Answer, Kind};
use crate::matcher::{RequestParts, RuleSet};

/// What a `require` says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Allow,
    /// No valid session: send to login.
    Login,
    /// A valid session without the required claims: `on_deny`.
    Deny,
}

/// The claim at a dotted path (`org.tier` → `claims.org.tier`); a literal key with
/// dots is tried first.
pub fn claim<'a>(claims: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    if let Some(v) = claims.get(&path.join(".")) {
        return Some(v);
    }
    let (first, rest) = path.split_first()?;
    rest.iter().try_fold(claims.get(first)?, |v, k| v.get(k))
}

fn holds(p: &ClaimPredicate, claims: &Map<String, Value>) -> bool {
    let v = claim(claims, &p.path);
    match &p.test {
        ClaimTest::Equals(want) => v == Some(want),
        ClaimTest::OneOf(list) => v.is_some_and(|v| list.contains(v)),
        ClaimTest::Contains(x) => v.and_then(Value::as_array).is_some_and(|a| a.contains(x)),
        ClaimTest::Present(want) => v.is_some_and(|v| !v.is_null()) == *want,
    }
}

/// Evaluates every requirement (all must hold) against the claims of a verified
/// session (`None`: no valid session).
pub fn evaluate<'a>(
    requires: impl IntoIterator<Item = &'a Require>,
    claims: Option<&Map<String, Value>>,
) -> Verdict {
    let mut verdict = Verdict::Allow;
    for r in requires {
        if !r.session && r.claims.is_empty() {
            continue;
        }
        let Some(c) = claims else {
            return Verdict::Login;
        };
        if !r.claims.iter().all(|p| holds(p, c)) {
            verdict = Verdict::Deny;
        }
    }
    verdict
}

/// The answer for a request refused by `on_deny`, in the form its kind can follow.
pub fn deny_answer(kind: Kind, on_deny: &OnDeny, base_path: &str) -> Answer {
    let strip = |p: &str| -> String {
        match p.strip_prefix(base_path) {
            Some(r)
                if !base_path.is_empty()
                    && (r.is_empty() || r.starts_with('/') || r.starts_with('?')) =>
            {
                if r.is_empty() {
                    "/".to_string()
                } else {
                    r.to_string()
                }
            }
            _ => p.to_string(),
        }
    };
    let text = |status: u16, body: &str, ct: &str| Answer {
        status,
        headers: vec![("content-type", ct.to_string())],
        set_cookies: Vec::new(),
        body: Bytes::from(body.to_string()),
    };
    let mut a = match (on_deny, kind) {
        (OnDeny::Redirect(to), Kind::Navigation | Kind::Rsc) => Answer { status: 303, headers: vec![("location", to.clone())], set_cookies: Vec::new(), body: Bytes::new() },
        // a 3xx breaks the Next client's action call: it follows x-action-redirect
        (OnDeny::Redirect(to), Kind::ServerAction) => Answer {
            status: 200,
            headers: vec![("x-action-redirect", format!("{};push", strip(to))), ("content-type", "text/plain; charset=utf-8".into())],
            set_cookies: Vec::new(),
            body: Bytes::new(),
        },
        (OnDeny::Redirect(to), Kind::PagesData) => Answer { status: 307, headers: vec![("x-nextjs-redirect", strip(to))], set_cookies: Vec::new(), body: Bytes::new() },
        (OnDeny::Redirect(to), Kind::Fetch) => text(403, &serde_json::json!({ "error": "forbidden", "redirect": to }).to_string(), "application/json"),
        (OnDeny::Status(s), Kind::Fetch) => text(*s, &serde_json::json!({ "error": "forbidden" }).to_string(), "application/json"),
        (OnDeny::Status(s), Kind::Navigation) => text(*s, "<!doctype html><title>Forbidden</title><h1>Forbidden</h1><p>Your account does not have access to this page.</p>", "text/html; charset=utf-8"),
        (OnDeny::Status(s), _) => text(*s, "forbidden", "text/plain; charset=utf-8"),
        (OnDeny::Redirect(_), Kind::Prefetch) => text(403, "forbidden", "text/plain; charset=utf-8"),
    };
    a.headers.push(("cache-control", "no-store".into()));
    a
}

/// CORS preflights (`OPTIONS` with `Access-Control-Request-Method`) carry no
/// credentials: they are exempt from `require` and CSRF.
pub fn is_preflight(method: &http::Method, headers: &HeaderMap) -> bool {
    method == http::Method::OPTIONS && headers.contains_key("access-control-request-method")
}

/// Server Action ids → the routes (indexes) of the pages that define them, from
/// Next's server-reference manifest. Next runs an action for whatever id is posted to
/// any page, so the defining page's `require` must follow the action.
#[derive(Debug, Clone, Default)]
pub struct ActionIndex {
    routes: HashMap<String, Vec<usize>>,
    /// Every route that owns some action (the strictest set for no-JS form posts).
    all: Vec<usize>,
}

/// The URL path of a Next app-router entry (`app/(shop)/premium/[id]/page` →
/// `/premium/_`): route groups and parallel slots dropped, dynamic segments replaced
/// by a placeholder that any `:param` matches.
pub fn entry_path(entry: &str) -> String {
    let e = entry.strip_prefix("app").unwrap_or(entry);
    let e = e
        .strip_suffix("/page")
        .or_else(|| e.strip_suffix("/route"))
        .unwrap_or(e);
    let segs: Vec<&str> = e
        .split('/')
        .filter(|s| {
            !s.is_empty() && !(s.starts_with('(') && s.ends_with(')')) && !s.starts_with('@')
        })
        .map(|s| if s.starts_with('[') { "_" } else { s })
        .collect();
    format!("/{}", segs.join("/"))
}

impl ActionIndex {
    /// Maps each action's defining pages to the routes that match them.
    pub fn build(actions: &[(String, Vec<String>)], rules: &RuleSet) -> ActionIndex {
        let headers = HeaderMap::new();
        let mut routes: HashMap<String, Vec<usize>> = HashMap::new();
        let mut all = Vec::new();
        for (id, workers) in actions {
            let mut rs: Vec<usize> = workers
                .iter()
                .filter_map(|w| {
                    let path = entry_path(w);
                    rules.first_match(&RequestParts {
                        method: "POST",
                        host: None,
                        path: &path,
                        query: None,
                        headers: &headers,
                    })
                })
                .collect();
            rs.sort_unstable();
            rs.dedup();
            all.extend(rs.iter().copied());
            routes.insert(id.clone(), rs);
        }
        all.sort_unstable();
        all.dedup();
        ActionIndex { routes, all }
    }

    /// The routes owning action `id`; `None` when the manifest does not list it.
    pub fn routes_of(&self, id: &str) -> Option<&[usize]> {
        self.routes.get(id).map(Vec::as_slice)
    }

    /// Every route that owns an action.
    pub fn all_routes(&self) -> &[usize] {
        &self.all
    }

    /// True when no manifest was loaded.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// A POST that may be a Server Action submitted without JavaScript: a form body
/// (`multipart/form-data` or urlencoded) without a `Next-Action` header, where Next
/// reads the id from a `$ACTION_ID_<id>` field.
pub fn may_be_form_action(method: &http::Method, headers: &HeaderMap) -> bool {
    method == http::Method::POST
        && !headers.contains_key("next-action")
        && headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let ct = ct.to_ascii_lowercase();
                ct.starts_with("multipart/form-data")
                    || ct.starts_with("application/x-www-form-urlencoded")
            })
}

/// CSRF verdict for an unsafe request: `Sec-Fetch-Site` must be `same-origin` or
/// `same-site`; without it, `Origin` must be the public origin (or, when none is
/// configured, the request's own host) or an allowed origin; with neither header
/// (non-browser clients) the request passes unless `require_origin` is set.
pub fn csrf_ok(
    headers: &HeaderMap,
    public_origin: Option<&Origin>,
    host: Option<&str>,
    cfg: &Csrf,
) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return matches!(
            site.trim().to_ascii_lowercase().as_str(),
            "same-origin" | "same-site"
        );
    }
    let Some(origin) = headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return !cfg.require_origin;
    };
    let origin = origin.trim().to_ascii_lowercase();
    if cfg.allowed_origins.iter().any(|o| o.serialize() == origin) {
        return true;
    }
    match public_origin {
        Some(o) => o.serialize() == origin,
        // no public origin configured: the Origin's host[:port] must be the Host asked for
        None => host.is_some_and(|h| {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|rest| rest == h.to_ascii_lowercase())
        }),
    }
}

/// Methods that change state (everything but GET, HEAD, OPTIONS, TRACE).
pub fn is_unsafe(method: &http::Method) -> bool {
    !matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::json;

    fn pred(path: &str, test: ClaimTest) -> ClaimPredicate {
        ClaimPredicate {
            path: path.split('.').map(str::to_string).collect(),
            test,
        }
    }

    #[test]
    fn claim_predicates() {
        let c = json!({"has_access": true, "plan": "pro", "roles": ["admin", "dev"], "org": {"tier": "gold"}, "email_verified": "2026-01-01"});
        let c = c.as_object().unwrap();
        let req = |p: Vec<ClaimPredicate>| Require {
            session: true,
            claims: p,
        };
        assert_eq!(
            evaluate(
                [&req(vec![pred(
                    "has_access",
                    ClaimTest::Equals(json!(true))
                )])],
                Some(c)
            ),
            Verdict::Allow
        );
        assert_eq!(
            evaluate(
                [&req(vec![pred(
                    "plan",
                    ClaimTest::OneOf(vec![json!("team"), json!("pro")])
                )])],
                Some(c)
            ),
            Verdict::Allow
        );
        assert_eq!(
            evaluate(
                [&req(vec![pred(
                    "roles",
                    ClaimTest::Contains(json!("admin"))
                )])],
                Some(c)
            ),
            Verdict::Allow
        );
        assert_eq!(
            evaluate(
                [&req(vec![pred("email_verified", ClaimTest::Present(true))])],
                Some(c)
            ),
            Verdict::Allow
        );
        assert_eq!(
            evaluate(
                [&req(vec![pred(
                    "org.tier",
                    ClaimTest::Equals(json!("gold"))
                )])],
                Some(c)
            ),
            Verdict::Allow
        );
        assert_eq!(
            evaluate(
                [&req(vec![pred(
                    "org.tier",
                    ClaimTest::Equals(json!("silver"))
                )])],
                Some(c)
            ),
            Verdict::Deny
        );
        assert_eq!(
            evaluate(
                [&req(vec![pred(
                    "roles",
                    ClaimTest::Contains(json!("owner"))
                )])],
                Some(c)
            ),
            Verdict::Deny
        );
        assert_eq!(
            evaluate(
                [&req(vec![pred("missing", ClaimTest::Present(false))])],
                Some(c)
            ),
            Verdict::Allow
        );
        assert_eq!(evaluate([&req(vec![])], None), Verdict::Login);
        assert_eq!(evaluate([&Require::default()], None), Verdict::Allow);
    }

    #[test]
    fn entry_paths() {
        assert_eq!(entry_path("app/premium/page"), "/premium");
        assert_eq!(entry_path("app/(shop)/premium/[id]/page"), "/premium/_");
        assert_eq!(entry_path("app/page"), "/");
        assert_eq!(
            entry_path("app/@modal/(.)photo/[...slug]/page"),
            "/(.)photo/_"
        );
        assert_eq!(entry_path("app/api/things/route"), "/api/things");
    }

    #[test]
    fn deny_answers_by_kind() {
        let r = OnDeny::Redirect("/pricing".into());
        assert_eq!(deny_answer(Kind::Navigation, &r, "").status, 303);
        let a = deny_answer(Kind::ServerAction, &r, "");
        assert_eq!(a.status, 200);
        assert!(a
            .headers
            .contains(&("x-action-redirect", "/pricing;push".into())));
        let a = deny_answer(Kind::ServerAction, &OnDeny::Status(403), "");
        assert_eq!((a.status, &a.body[..]), (403, &b"forbidden"[..]));
        assert!(a
            .headers
            .contains(&("content-type", "text/plain; charset=utf-8".into())));
        let a = deny_answer(Kind::Fetch, &OnDeny::Status(403), "");
        assert_eq!(&a.body[..], br#"{"error":"forbidden"}"#);
    }

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn csrf_rules() {
        let origin = Origin {
            scheme: "https".into(),
            host: "app.example.com".into(),
            port: None,
        };
        let cfg = Csrf::default();
        assert!(csrf_ok(
            &h(&[("sec-fetch-site", "same-origin")]),
            Some(&origin),
            None,
            &cfg
        ));
        assert!(!csrf_ok(
            &h(&[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://app.example.com")
            ]),
            Some(&origin),
            None,
            &cfg
        ));
        assert!(csrf_ok(
            &h(&[("origin", "https://app.example.com")]),
            Some(&origin),
            None,
            &cfg
        ));
        assert!(!csrf_ok(
            &h(&[("origin", "https://evil.example")]),
            Some(&origin),
            None,
            &cfg
        ));
        assert!(!csrf_ok(
            &h(&[("origin", "null")]),
            Some(&origin),
            None,
            &cfg
        ));
        assert!(csrf_ok(&h(&[]), Some(&origin), None, &cfg));
        assert!(!csrf_ok(
            &h(&[]),
            Some(&origin),
            None,
            &Csrf {
                require_origin: true,
                ..Default::default()
            }
        ));
        assert!(csrf_ok(
            &h(&[("origin", "http://127.0.0.1:8080")]),
            None,
            Some("127.0.0.1:8080"),
            &cfg
        ));
        assert!(!csrf_ok(
            &h(&[("origin", "http://evil:8080")]),
            None,
            Some("127.0.0.1:8080"),
            &cfg
        ));
        let allowed = Csrf {
            allowed_origins: vec![Origin {
                scheme: "https".into(),
                host: "admin.example.com".into(),
                port: None,
            }],
            require_origin: false,
        };
        assert!(csrf_ok(
            &h(&[("origin", "https://admin.example.com")]),
            Some(&origin),
            None,
            &allowed
        ));
    }
}
