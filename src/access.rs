//! Access checks that do not depend on the session: CSRF for unsafe methods
//! (DESIGN §6). Pure functions over the request headers.

use http::HeaderMap;

use crate::config::{Csrf, Origin};

/// CSRF verdict for an unsafe request: `Sec-Fetch-Site` must be `same-origin` or
/// `same-site`; without it, `Origin` must be the public origin (or, when none is
/// configured, the request's own host) or an allowed origin; with neither header
/// (non-browser clients) the request passes unless `require_origin` is set.
pub fn csrf_ok(headers: &HeaderMap, public_origin: Option<&Origin>, host: Option<&str>, cfg: &Csrf) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return matches!(site.trim().to_ascii_lowercase().as_str(), "same-origin" | "same-site");
    }
    let Some(origin) = headers.get(http::header::ORIGIN).and_then(|v| v.to_str().ok()) else {
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
            origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")).is_some_and(|rest| rest == h.to_ascii_lowercase())
        }),
    }
}

/// Methods that change state (everything but GET, HEAD, OPTIONS, TRACE).
pub fn is_unsafe(method: &http::Method) -> bool {
    !matches!(*method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn csrf_rules() {
        let origin = Origin { scheme: "https".into(), host: "app.example.com".into(), port: None };
        let cfg = Csrf::default();
        assert!(csrf_ok(&h(&[("sec-fetch-site", "same-origin")]), Some(&origin), None, &cfg));
        assert!(!csrf_ok(&h(&[("sec-fetch-site", "cross-site"), ("origin", "https://app.example.com")]), Some(&origin), None, &cfg));
        assert!(csrf_ok(&h(&[("origin", "https://app.example.com")]), Some(&origin), None, &cfg));
        assert!(!csrf_ok(&h(&[("origin", "https://evil.example")]), Some(&origin), None, &cfg));
        assert!(!csrf_ok(&h(&[("origin", "null")]), Some(&origin), None, &cfg));
        assert!(csrf_ok(&h(&[]), Some(&origin), None, &cfg));
        assert!(!csrf_ok(&h(&[]), Some(&origin), None, &Csrf { require_origin: true, ..Default::default() }));
        assert!(csrf_ok(&h(&[("origin", "http://127.0.0.1:8080")]), None, Some("127.0.0.1:8080"), &cfg));
        assert!(!csrf_ok(&h(&[("origin", "http://evil:8080")]), None, Some("127.0.0.1:8080"), &cfg));
        let allowed = Csrf { allowed_origins: vec![Origin { scheme: "https".into(), host: "admin.example.com".into(), port: None }], require_origin: false };
        assert!(csrf_ok(&h(&[("origin", "https://admin.example.com")]), Some(&origin), None, &allowed));
    }
}
