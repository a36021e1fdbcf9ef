//! `rotagate explain`: which rule a request matches and why, as text.

use std::fmt::Write as _;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::Config;
use crate::hygiene;
use crate::matcher::{path, RequestParts};

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
    let normalised = match path::normalise(&raw_path) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(out, "{method} {raw_path}: refused with 400 before any rule runs ({e})");
            return Ok(out);
        }
    };
    if normalised != raw_path {
        let _ = writeln!(out, "path normalised: {raw_path} -> {normalised}");
    }
    let host = hygiene::request_host(None, &headers);
    let parts = RequestParts {
        method: &method,
        host: host.as_deref(),
        path: &normalised,
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
                if r.bypass { " (bypass: no session work)" } else { " (session handling on)" }
            );
        }
        None => {
            let _ = writeln!(out, "=> {method} {normalised} matches no rule: proxied with hygiene only, no session work");
        }
    }
    Ok(out)
}

fn split_target(target: &str) -> Result<(Option<String>, String), String> {
    if target.starts_with('/') {
        return Ok((None, target.to_string()));
    }
    let uri: http::Uri = target.parse().map_err(|_| format!("`{target}`: expected a path like /a/b or a URL like https://host/a/b"))?;
    let authority = uri.authority().map(|a| a.to_string());
    let pq = uri.path_and_query().map_or("/".to_string(), |p| p.to_string());
    if authority.is_none() {
        return Err(format!("`{target}`: expected a path like /a/b or a URL like https://host/a/b"));
    }
    Ok((authority, pq))
}
