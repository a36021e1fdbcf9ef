//! Access rules at the edge (DESIGN §6): `require` with claim predicates, the answer
//! a refused request gets for its kind, Server Actions mapped to the routes of the
//! pages that define them, and CSRF for unsafe methods. Pure functions.

use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Map, Value};

use crate::actions::{ActionRequest, Lookup};
use crate::config::{ClaimPredicate, ClaimTest, Config, Csrf, OnDeny, Origin, Require, Route};
use crate::logout::{Answer, Kind};
use crate::matcher::RequestParts;

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

/// A CORS preflight, as the Fetch standard sends one: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`, and no body. Preflights carry no credentials, so
/// they are exempt from `require` and CSRF; anything else sent as `OPTIONS` is not a
/// preflight and gets the route's rules. `body_empty` is the transport's word that
/// the request certainly has no body (HTTP/1.1: no length or length 0; HTTP/2: the
/// stream ended with its headers, or `content-length: 0`) — an HTTP/2 request needs
/// neither header to carry DATA frames, so the headers alone cannot say.
pub fn is_preflight(method: &http::Method, headers: &HeaderMap, body_empty: bool) -> bool {
    method == http::Method::OPTIONS
        && body_empty
        && headers.contains_key(http::header::ORIGIN)
        && headers.contains_key("access-control-request-method")
        && !headers.contains_key(http::header::TRANSFER_ENCODING)
        && headers
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .all(|v| v.as_bytes().trim_ascii() == b"0")
}

/// The response headers a preflight on a `require` route may carry back: the
/// status line aside, only CORS (`Access-Control-*`) and `Vary` — never the app's
/// cookies, body or other headers, which a preflight's anonymous caller must not see.
pub fn kept_on_preflight(name: &http::HeaderName) -> bool {
    let n = name.as_str();
    n == "vary" || n.starts_with("access-control-")
}

pub use crate::actions::ActionIndex;

/// The routes whose `require` applies to a request, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirements {
    /// Route indexes, ascending; each route has a `require`.
    pub routes: Vec<usize>,
    /// Why the strictest action rule was applied, when it was.
    pub fallback: Option<String>,
    /// A Server Action id the manifest does not list, with `unknown_actions = "deny"`.
    pub unknown_action: bool,
}

/// The requirements of a request (DESIGN §6, §10 "every requirement that applies"):
/// the matched route's `require`; and for a Server Action request, the `require` of
/// every route whose match fits the request (a `bypass` route first in file order
/// exempts nothing) and of the routes owning the action's defining pages, judged on
/// this request as if it had been posted to that page. An action whose owner cannot be
/// resolved, or whose id cannot be read, gets the strictest action rule as well.
/// A form action's id is matched as if it had come in a `Next-Action` header, so
/// rules written for that header hold for no-JS forms too.
pub fn requirements(
    cfg: &Config,
    index: &ActionIndex,
    route: Option<usize>,
    req: &RequestParts<'_>,
    action: &ActionRequest,
) -> Requirements {
    let has_require = |i: &usize| {
        cfg.routes
            .get(*i)
            .is_some_and(|r| r.handles_sessions() && r.require.is_some())
    };
    let mut out = Requirements::default();
    out.routes.extend(route.filter(has_require));
    match action {
        ActionRequest::None => {}
        ActionRequest::Unreadable(why) => {
            out.routes.extend(cfg.rules.all_matches(req));
            out.fallback = Some(format!("the request carries {why}"));
        }
        ActionRequest::Ids(ids) => {
            for id in ids {
                let sent = req
                    .headers
                    .get("next-action")
                    .is_some_and(|v| v.as_bytes().trim_ascii() == id.as_bytes());
                let virtual_headers;
                let parts = if sent {
                    *req
                } else {
                    virtual_headers = with_action_header(req.headers, id);
                    RequestParts {
                        headers: &virtual_headers,
                        ..*req
                    }
                };
                out.routes.extend(cfg.rules.all_matches(&parts));
                match index.lookup(id) {
                    Lookup::Unknown if index.is_empty() => {}
                    Lookup::Unknown if cfg.nextjs.deny_unknown_actions => out.unknown_action = true,
                    Lookup::Unknown => {
                        out.fallback.get_or_insert_with(|| {
                            format!("Server Action {id} is not in the manifest")
                        });
                    }
                    Lookup::Owned(pairs) => out
                        .routes
                        .extend(crate::actions::owners_for(&cfg.rules, pairs, &parts)),
                    Lookup::FellBack(why) => {
                        out.fallback
                            .get_or_insert_with(|| format!("Server Action {id}: {why}"));
                    }
                }
            }
        }
    }
    if out.fallback.is_some() {
        out.routes.extend_from_slice(index.strictest());
    }
    out.routes.retain(has_require);
    out.routes.sort_unstable();
    out.routes.dedup();
    out
}

/// A copy of `headers` whose `Next-Action` is `id` (for judging a form action).
fn with_action_header(headers: &HeaderMap, id: &str) -> HeaderMap {
    let mut h = headers.clone();
    match http::HeaderValue::from_str(id) {
        Ok(v) => {
            h.insert("next-action", v);
        }
        // an id no header can carry matches no header rule
        Err(_) => {
            h.remove("next-action");
        }
    }
    h
}

/// The first route, in file order, whose `require` the claims fail, and how.
pub fn first_failure(
    routes: &[Route],
    requirements: &[usize],
    claims: Option<&Map<String, Value>>,
) -> Option<(usize, Verdict)> {
    requirements.iter().find_map(|&i| {
        let r = routes.get(i)?.require.as_ref()?;
        match evaluate([r], claims) {
            Verdict::Allow => None,
            v => Some((i, v)),
        }
    })
}

/// CSRF verdict for an unsafe request (or a WebSocket upgrade): `Sec-Fetch-Site:
/// same-origin` passes, `same-site` too when `allow_same_site`; any other value, or
/// none, falls back to `Origin`, which must be the public origin (or, when none is
/// configured, the request's own host) or an allowed origin. A browser that sends
/// `Sec-Fetch-Site` but no `Origin` is refused; with neither header (non-browser
/// clients) the request passes unless `require_origin` is set.
pub fn csrf_ok(
    headers: &HeaderMap,
    public_origin: Option<&Origin>,
    host: Option<&str>,
    cfg: &Csrf,
) -> bool {
    let site = headers
        .get("sec-fetch-site")
        .map(|v| v.as_bytes().trim_ascii().to_ascii_lowercase());
    match site.as_deref() {
        Some(b"same-origin") => return true,
        Some(b"same-site") if cfg.allow_same_site => return true,
        _ => {}
    }
    let Some(origin) = headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return site.is_none() && !cfg.require_origin;
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
        // any Sec-Fetch-Site but same-origin falls back to the Origin check
        for site in ["cross-site", "same-site", "none"] {
            assert!(
                !csrf_ok(
                    &h(&[("sec-fetch-site", site), ("origin", "https://evil.example")]),
                    Some(&origin),
                    None,
                    &cfg
                ),
                "{site}"
            );
            assert!(
                !csrf_ok(&h(&[("sec-fetch-site", site)]), Some(&origin), None, &cfg),
                "{site} without Origin"
            );
        }
        let same_site = Csrf {
            allow_same_site: true,
            ..Default::default()
        };
        assert!(csrf_ok(
            &h(&[("sec-fetch-site", "Same-Site")]),
            Some(&origin),
            None,
            &same_site
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
            ..Default::default()
        };
        assert!(csrf_ok(
            &h(&[("origin", "https://admin.example.com")]),
            Some(&origin),
            None,
            &allowed
        ));
        assert!(csrf_ok(
            &h(&[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://admin.example.com")
            ]),
            Some(&origin),
            None,
            &allowed
        ));
    }

    #[test]
    fn preflights_are_bodiless_options_with_origin_and_method() {
        let o = http::Method::OPTIONS;
        let pre = [
            ("origin", "https://a.example"),
            ("access-control-request-method", "POST"),
        ];
        assert!(is_preflight(&o, &h(&pre), true));
        // an h2 stream that did not end with its headers may carry DATA frames
        assert!(!is_preflight(&o, &h(&pre), false));
        assert!(!is_preflight(&http::Method::GET, &h(&pre), true));
        assert!(!is_preflight(
            &o,
            &h(&[("access-control-request-method", "POST")]),
            true
        ));
        let mut with_body = pre.to_vec();
        with_body.push(("content-length", "5"));
        assert!(!is_preflight(&o, &h(&with_body), true));
        let mut chunked = pre.to_vec();
        chunked.push(("transfer-encoding", "chunked"));
        assert!(!is_preflight(&o, &h(&chunked), true));
        assert!(kept_on_preflight(&http::HeaderName::from_static(
            "access-control-allow-origin"
        )));
        assert!(!kept_on_preflight(&http::header::SET_COOKIE));
    }
}
