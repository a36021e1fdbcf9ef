//! `rotagate explain`: which rule a request matches and why, as text.

use std::fmt::Write as _;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::access::{self, Verdict};
use crate::actions::{self, ActionRequest, FormLook, Lookup};
use crate::clock::{Clock, SystemClock};
use crate::config::{ClaimPredicate, ClaimTest, Config, OnDeny, Require};
use crate::hygiene;
use crate::matcher::{locale, path, RequestParts};
use crate::session::{Outcome, SessionEngine};

/// A request described on the command line.
#[derive(Debug, Clone)]
pub struct ExplainRequest {
    /// Method, e.g. `GET`.
    pub method: String,
    /// A path (`/a?b`) or an absolute URL (`https://host/a?b`).
    pub target: String,
    /// `name: value` header lines.
    pub headers: Vec<String>,
}

/// Explains how `cfg` treats `req`. Errors describe bad input (a header line without a
/// colon, a path the proxy would refuse) in words a user can act on.
pub fn explain(cfg: &Config, req: &ExplainRequest) -> Result<String, String> {
    let method = req.method.to_ascii_uppercase();
    let (authority, path_and_query) = split_target(&req.target)?;
    let mut headers = HeaderMap::new();
    for line in &req.headers {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("header `{line}`: expected `name: value`"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("header `{line}`: invalid header name"))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("header `{name}`: invalid header value"))?;
        headers.append(name, value);
    }
    if let Some(a) = &authority {
        if !headers.contains_key(http::header::HOST) {
            if let Ok(v) = HeaderValue::from_str(a) {
                headers.insert(http::header::HOST, v);
            }
        }
    }
    let (raw_path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (path_and_query.clone(), None),
    };
    let mut out = String::new();
    // the host as the proxy reads and vets it; a command line without one has no host
    let listen = &cfg.listen;
    let host = match hygiene::request_host(b"", None, &headers) {
        hygiene::HostReading::Missing => None,
        reading => match hygiene::vet_host(
            reading,
            false,
            listen.public_origin.as_ref(),
            &listen.allowed_hosts,
        ) {
            Ok(h) => h,
            Err(refusal) => {
                let _ = writeln!(
                    out,
                    "{method} {raw_path}: refused with {} before any rule runs ({})",
                    refusal.status(),
                    refusal.reason()
                );
                return Ok(out);
            }
        },
    };
    let normalised = match path::normalise_with(&raw_path, listen.path_strictness) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(
                out,
                "{method} {raw_path}: refused with 400 before any rule runs ({e})"
            );
            return Ok(out);
        }
    };
    if normalised.forward != raw_path {
        let _ = writeln!(out, "path normalised: {raw_path} -> {}", normalised.forward);
    }
    if let Some(m) = &normalised.matching {
        let _ = writeln!(
            out,
            "path matched as servers that cut ';' parameters, merge '//' and drop trailing dots read it: {m} (listen.path_strictness = \"lenient\")"
        );
    }
    if listen.case_insensitive_paths {
        let _ = writeln!(
            out,
            "route patterns match paths in any letter case (listen.case_insensitive_paths = true)"
        );
    }
    let normalised = normalised.matching().to_string();
    let nx = &cfg.nextjs;
    let match_path = locale::localise(&normalised, &nx.base_path, &nx.locales, &nx.default_locale);
    if *match_path != *normalised {
        let _ = writeln!(
            out,
            "path matched as {match_path} (no locale in it: the default locale is added, as Next does)"
        );
    }
    let parts = RequestParts {
        method: &method,
        host: host.as_ref().map(|h| h.name.as_str()),
        path: &match_path,
        query: query.as_deref(),
        headers: &headers,
    };
    let first = cfg.rules.first_match(&parts);
    for report in cfg.rules.explain(&parts) {
        let name = cfg.routes.get(report.rule).map_or("?", |r| r.name.as_str());
        let verdict = if Some(report.rule) == first {
            "MATCH (first match wins)"
        } else if report.matched {
            "matches, but an earlier rule wins"
        } else {
            "no match"
        };
        let _ = writeln!(out, "route[{}] \"{}\": {}", report.rule, name, verdict);
        for r in &report.reasons {
            let _ = writeln!(out, "    {r}");
        }
    }
    match first.and_then(|i| cfg.routes.get(i).map(|r| (i, r))) {
        Some((i, r)) => {
            let _ = writeln!(
                out,
                "=> {method} {normalised} is handled by route[{i}] \"{}\"{}",
                r.name,
                if r.bypass {
                    " (bypass: no session work)"
                } else {
                    " (session handling on)"
                }
            );
        }
        None => {
            let _ = writeln!(out, "=> {method} {normalised} matches no rule: proxied with hygiene only, no session work");
        }
    }
    let ui = first
        .and_then(|i| cfg.routes.get(i))
        .map_or(0, |r| r.upstream);
    if let Some(up) = cfg.upstreams.get(ui) {
        let urls: Vec<&str> = up.urls.iter().map(|u| u.url.as_str()).collect();
        let why = match first {
            Some(_) if ui != 0 => "the route's `upstream`",
            Some(_) => "the route names none: the default, [upstream]",
            None => "no route matched: the default, [upstream]",
        };
        let _ = writeln!(
            out,
            "upstream: {:?} ({why}): {}{}",
            up.name,
            urls.join(", "),
            if urls.len() > 1 { " (round robin)" } else { "" }
        );
    }
    if let Some(v) = cfg.session.as_ref().and_then(|s| s.mode.vault()) {
        let bypass = first
            .and_then(|i| cfg.routes.get(i))
            .is_some_and(|r| r.bypass);
        let _ = writeln!(
            out,
            "session: vault mode, handle cookie {:?}, captured {:?}: {}",
            v.cookie,
            v.capture,
            if bypass {
                "on this bypass route neither the handle nor the app's cookies are forwarded"
            } else {
                "the app's cookies come from the store (explain does not open it); the handle never goes upstream"
            }
        );
    }
    explain_access(cfg, first, &parts, &mut out);
    Ok(out)
}

/// The requirements that apply (the route's own; for a Server Action, those of every
/// matching route and of the action's owners) and, when the request carries a session
/// cookie, whether it would pass them. Never prints a token, a secret or the
/// manifest's key.
fn explain_access(cfg: &Config, route: Option<usize>, parts: &RequestParts<'_>, out: &mut String) {
    let headers = parts.headers;
    let method = http::Method::from_bytes(parts.method.as_bytes()).unwrap_or(http::Method::GET);
    let index = &cfg.nextjs.action_index;
    let action = match actions::header_action(&method, headers) {
        Some(a) => a,
        None => {
            if actions::form_look(&method, headers) != FormLook::NotForm {
                let _ = writeln!(out, "a form post: if its body names a Server Action ($ACTION_ID_…), that action's requirements apply too (explain cannot see the body)");
            }
            ActionRequest::None
        }
    };
    if let ActionRequest::Ids(ids) = &action {
        for id in ids {
            match index.lookup(id) {
                Lookup::Unknown if index.is_empty() => {
                    let _ = writeln!(out, "Server Action {id}: no manifest is loaded, so only rules that match the request apply");
                }
                Lookup::Unknown if cfg.nextjs.deny_unknown_actions => {
                    let _ = writeln!(
                        out,
                        "Server Action {id} is not in the manifest: refused (unknown_actions = \"deny\")"
                    );
                }
                Lookup::Unknown => {
                    let _ = writeln!(out, "Server Action {id} is not in the manifest: held to the strictest action rule");
                }
                Lookup::Owned(pairs) => {
                    for r in actions::owners_for(&cfg.rules, pairs, parts) {
                        let name = cfg.routes.get(r).map_or("?", |x| x.name.as_str());
                        let _ = writeln!(out, "Server Action {id} is defined by a page of route[{r}] \"{name}\": its requirements apply here too");
                    }
                }
                Lookup::FellBack(why) => {
                    let _ = writeln!(out, "Server Action {id}: its owning route cannot be resolved ({why}): held to the strictest action rule");
                }
            }
        }
        let _ = writeln!(
            out,
            "as a Server Action request it gets the requirements of every route that matches, not only the first"
        );
    }
    let reqs = access::requirements(cfg, index, route, parts, &action);
    if reqs.unknown_action {
        return;
    }
    if let Some(why) = &reqs.fallback {
        let _ = writeln!(out, "strictest action rule applied: {why}");
    }
    let owners = reqs.routes;
    if owners.is_empty() {
        return;
    }
    let cookie = crate::hygiene::merged_cookie(headers);
    let engine = cfg
        .session
        .as_ref()
        .and_then(|s| SessionEngine::new(s).ok());
    let claims = match (&cookie, &engine) {
        (Some(c), Some(e)) => {
            let d = e.process(Some(c), SystemClock.now_unix(), false);
            if d.outcome != Outcome::Valid {
                let _ = writeln!(out, "session cookie: {}", d.outcome.as_str());
            }
            d.claims
        }
        _ => None,
    };
    for i in owners {
        let Some(r) = cfg.routes.get(i) else { continue };
        let Some(req) = &r.require else { continue };
        let preds: Vec<String> = req.claims.iter().map(describe).collect();
        let what = if preds.is_empty() {
            "a valid session".to_string()
        } else {
            format!("claims {}", preds.join(", "))
        };
        let _ = writeln!(out, "route[{i}] \"{}\" requires: {what}", r.name);
        let deny = match &r.on_deny {
            OnDeny::Redirect(p) => format!("on_deny redirect {p}"),
            OnDeny::Status(s) => format!("on_deny status {s}"),
        };
        match &claims {
            None if cookie.is_none() || engine.is_none() => {
                let _ = writeln!(out, "    no session cookie: would get the login answer");
            }
            None => {
                let _ = writeln!(out, "    no valid session: would get the login answer");
            }
            Some(c) => {
                let failed: Vec<String> = req
                    .claims
                    .iter()
                    .filter(|p| {
                        access::evaluate(
                            [&Require {
                                session: true,
                                claims: vec![(*p).clone()],
                            }],
                            Some(c),
                        ) != Verdict::Allow
                    })
                    .map(describe)
                    .collect();
                if failed.is_empty() {
                    let _ = writeln!(out, "    passes");
                } else {
                    let _ = writeln!(
                        out,
                        "    fails claims {}: would get {deny}",
                        failed.join(", ")
                    );
                }
            }
        }
    }
}

fn describe(p: &ClaimPredicate) -> String {
    let path = p.path.join(".");
    match &p.test {
        ClaimTest::Equals(v) => format!("{path} = {v}"),
        ClaimTest::OneOf(v) => format!("{path} one_of {}", serde_json::Value::Array(v.clone())),
        ClaimTest::Contains(v) => format!("{path} contains {v}"),
        ClaimTest::Present(true) => format!("{path} present"),
        ClaimTest::Present(false) => format!("{path} absent"),
    }
}

fn split_target(target: &str) -> Result<(Option<String>, String), String> {
    if target.starts_with('/') {
        return Ok((None, target.to_string()));
    }
    let uri: http::Uri = target.parse().map_err(|_| {
        format!("`{target}`: expected a path like /a/b or a URL like https://host/a/b")
    })?;
    let authority = uri.authority().map(|a| a.to_string());
    let pq = uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    if authority.is_none() {
        return Err(format!(
            "`{target}`: expected a path like /a/b or a URL like https://host/a/b"
        ));
    }
    Ok((authority, pq))
}
