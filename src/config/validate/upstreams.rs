//! `[upstream]` and `[upstreams.NAME]`: addresses, TLS trust, passive ejection and
//! active health checks; and the `upstream = "NAME"` of routes.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::Spanned;

use super::{file, Ctx, S};
use crate::config::runtime::*;

/// `[upstream]` (index 0, [`DEFAULT_UPSTREAM`]) then every `[upstreams.NAME]` in name
/// order. A name that is not a plain word is reported and skipped.
pub(super) fn upstreams(
    cx: &mut Ctx<'_>,
    default: &Spanned<file::UpstreamFile>,
    named: &BTreeMap<String, Spanned<file::UpstreamFile>>,
) -> Vec<Upstream> {
    let mut out = vec![upstream(cx, DEFAULT_UPSTREAM, "upstream", default)];
    for (name, u) in named {
        let key = format!("upstreams.{name}");
        if name == DEFAULT_UPSTREAM {
            cx.bad(
                Some(u.span()),
                Some(key),
                "the name \"default\" is the `[upstream]` section's: choose another name",
            );
            continue;
        }
        if !is_upstream_name(name) {
            cx.bad(
                Some(u.span()),
                Some(key),
                format!("expected a name of letters, digits, `-` and `_`, found {name:?}"),
            );
            continue;
        }
        out.push(upstream(cx, name, &key, u));
    }
    out
}

/// Names fit for a metric label and a log field: `[A-Za-z0-9_-]{1,64}`.
fn is_upstream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The index in `upstreams` of a route's `upstream = "NAME"` (0 when absent).
pub(super) fn route_upstream(cx: &mut Ctx<'_>, v: &Option<S>, upstreams: &[Upstream]) -> usize {
    let Some(s) = v else { return 0 };
    match upstreams.iter().position(|u| u.name == *s.get_ref()) {
        Some(i) => i,
        None => {
            let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            cx.bad_at(
                s,
                format!(
                    "expected the name of an upstream ({}), found {:?}",
                    known.join(", "),
                    s.get_ref()
                ),
            );
            0
        }
    }
}

fn upstream(cx: &mut Ctx<'_>, name: &str, key: &str, u: &Spanned<file::UpstreamFile>) -> Upstream {
    let span = u.span();
    let f = u.get_ref();
    let written: Vec<&S> = match (&f.url, &f.urls) {
        (Some(_), Some(list)) => {
            cx.bad_at(list, "give either `url` or `urls`, not both");
            Vec::new()
        }
        (Some(one), None) => vec![one],
        (None, Some(list)) if list.get_ref().is_empty() => {
            cx.bad_at(list, "expected at least one URL");
            Vec::new()
        }
        (None, Some(list)) if list.get_ref().len() > MAX_UPSTREAM_URLS => {
            cx.bad_at(
                list,
                format!(
                    "expected at most {MAX_UPSTREAM_URLS} URLs, found {}",
                    list.get_ref().len()
                ),
            );
            Vec::new()
        }
        (None, Some(list)) => list.get_ref().iter().collect(),
        (None, None) => {
            cx.bad(
                Some(span.clone()),
                Some(key.to_string()),
                "expected `url = \"http://host:port\"` or `urls = [...]`",
            );
            Vec::new()
        }
    };
    let mut urls = Vec::with_capacity(written.len());
    let mut tls = None;
    for s in written {
        match parse_upstream_url(s.get_ref()) {
            Ok((authority, host, is_tls)) => {
                if tls.is_some_and(|t| t != is_tls) {
                    cx.bad_at(
                        s,
                        "every URL of one upstream uses the same scheme (one `ca` applies to all)",
                    );
                }
                tls.get_or_insert(is_tls);
                urls.push(UpstreamUrl {
                    url: s.get_ref().clone(),
                    authority,
                    host,
                });
            }
            Err(why) => cx.bad_at(s, why),
        }
    }
    let tls = tls.unwrap_or(false);
    let ca = f.ca.as_ref().and_then(|r| ca(cx, r, tls));
    let health = health(cx, f);
    let eject_for = cx.duration(&f.eject_for, DEFAULT_EJECT_FOR);
    Upstream {
        name: name.to_string(),
        urls,
        tls,
        ca,
        connect_timeout: cx.duration(&f.connect_timeout, DEFAULT_CONNECT_TIMEOUT),
        read_timeout: cx.duration(&f.read_timeout, DEFAULT_READ_TIMEOUT),
        write_timeout: cx.duration(&f.write_timeout, DEFAULT_WRITE_TIMEOUT),
        idle_timeout: cx.duration(&f.idle_timeout, DEFAULT_UPSTREAM_IDLE_TIMEOUT),
        eject_for,
        health,
    }
}

/// `ca = "file:…"`: a PEM bundle of at least one certificate, each one parsable (pingora
/// parses them again per connection and would panic on a bad one).
fn ca(cx: &mut Ctx<'_>, r: &S, tls: bool) -> Option<Vec<Vec<u8>>> {
    if !tls {
        cx.bad_at(r, "`ca` applies to https:// upstreams only");
        return None;
    }
    if !r.get_ref().starts_with("file:") {
        cx.bad_at(r, "expected \"file:PATH\" (a PEM CA bundle)");
        return None;
    }
    let bytes = cx.secret(r, false)?;
    let ders: Vec<Vec<u8>> = match pem::parse_many(bytes.expose()) {
        Ok(blocks) => blocks
            .into_iter()
            .filter(|b| b.tag() == "CERTIFICATE")
            .map(|b| b.into_contents())
            .collect(),
        Err(_) => Vec::new(),
    };
    let parsable = ders.iter().all(|d| {
        use x509_parser::prelude::FromDer as _;
        x509_parser::certificate::X509Certificate::from_der(d).is_ok()
    });
    if ders.is_empty() || !parsable {
        cx.bad_at(
            r,
            "expected a PEM file of CA certificates (\"-----BEGIN CERTIFICATE-----\")",
        );
        return None;
    }
    Some(ders)
}

/// The health keys: all but `health_path` need `health_path`.
fn health(cx: &mut Ctx<'_>, f: &file::UpstreamFile) -> Option<HealthCheck> {
    let Some(path) = &f.health_path else {
        let strays: [(&str, Option<std::ops::Range<usize>>); 4] = [
            (
                "health_interval",
                f.health_interval.as_ref().map(|s| s.span()),
            ),
            (
                "health_timeout",
                f.health_timeout.as_ref().map(|s| s.span()),
            ),
            (
                "healthy_threshold",
                f.healthy_threshold.as_ref().map(|s| s.span()),
            ),
            (
                "unhealthy_threshold",
                f.unhealthy_threshold.as_ref().map(|s| s.span()),
            ),
        ];
        for (k, span) in strays {
            if let Some(span) = span {
                cx.bad(
                    Some(span),
                    None,
                    format!("`{k}` configures active health checks: it needs `health_path`"),
                );
            }
        }
        return None;
    };
    if !super::is_same_origin_path(path.get_ref()) {
        cx.bad_at(
            path,
            format!(
                "expected a path starting with a single \"/\", like \"/healthz\", found {:?}",
                path.get_ref()
            ),
        );
    }
    let positive = |cx: &mut Ctx<'_>, v: &Option<S>, default: Duration| {
        let d = cx.duration(v, default);
        if let (Some(s), true) = (v, d.is_zero()) {
            cx.bad_at(s, "expected a duration greater than zero");
            return default;
        }
        d
    };
    let interval = positive(cx, &f.health_interval, DEFAULT_HEALTH_INTERVAL);
    let mut timeout = positive(cx, &f.health_timeout, DEFAULT_HEALTH_TIMEOUT.min(interval));
    if timeout > interval {
        match &f.health_timeout {
            Some(s) => cx.bad_at(
                s,
                format!(
                    "expected at most `health_interval` ({}ms), found {:?}",
                    interval.as_millis(),
                    s.get_ref()
                ),
            ),
            None => timeout = interval,
        }
    }
    let threshold = |cx: &mut Ctx<'_>, v: &Option<Spanned<i64>>, default: u32| match v {
        None => default,
        Some(n) if (1..=100).contains(n.get_ref()) => *n.get_ref() as u32,
        Some(n) => {
            cx.bad_at(
                n,
                format!("expected a count between 1 and 100, found {}", n.get_ref()),
            );
            default
        }
    };
    Some(HealthCheck {
        path: path.get_ref().clone(),
        interval,
        timeout,
        healthy_threshold: threshold(cx, &f.healthy_threshold, DEFAULT_HEALTHY_THRESHOLD),
        unhealthy_threshold: threshold(cx, &f.unhealthy_threshold, DEFAULT_UNHEALTHY_THRESHOLD),
    })
}

/// `http[s]://host[:port]` → (`host:port`, host, tls). No path, query or credentials.
pub(super) fn parse_upstream_url(url: &str) -> Result<(String, String, bool), String> {
    // a URL with userinfo may hold a password: it is never echoed
    let shown = if url.contains('@') {
        "a URL with credentials (not shown)".to_string()
    } else {
        format!("{url:?}")
    };
    let expected = format!("expected a URL like \"http://127.0.0.1:3000\", found {shown}");
    let uri: http::Uri = url.parse().map_err(|_| expected.clone())?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(expected),
    };
    if uri
        .path_and_query()
        .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
    {
        return Err(format!(
            "expected no path or query in the upstream URL, found {shown}"
        ));
    }
    let auth = uri.authority().ok_or_else(|| expected.clone())?;
    if auth.as_str().contains('@') {
        return Err(
            "expected no credentials in the upstream URL (user:password@ is not shown)".to_string(),
        );
    }
    let host = auth.host();
    if host.is_empty() {
        return Err(expected);
    }
    let port = auth.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    Ok((format!("{host}:{port}"), bare.to_string(), tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_a_url_is_never_echoed() {
        for bad in [
            "http://u:hunter2pw@app:1",
            "http://u:hunter2pw@app:1/x",
            "ftp://u:hunter2pw@app",
        ] {
            let e = parse_upstream_url(bad).unwrap_err();
            assert!(!e.contains("hunter2pw"), "{e}");
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_upstream_url("http://app:3000").unwrap(),
            ("app:3000".into(), "app".into(), false)
        );
        assert_eq!(parse_upstream_url("http://app").unwrap().0, "app:80");
        assert_eq!(
            parse_upstream_url("https://app.internal").unwrap(),
            ("app.internal:443".into(), "app.internal".into(), true)
        );
        assert_eq!(
            parse_upstream_url("https://[::1]:8443").unwrap(),
            ("[::1]:8443".into(), "::1".into(), true)
        );
        for bad in [
            "http://app/x",
            "http://app?q",
            "http://u:p@app",
            "ftp://app",
            "app:3000",
        ] {
            assert!(parse_upstream_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        for ok in ["api", "api-v2", "static_files", "A1"] {
            assert!(is_upstream_name(ok), "{ok}");
        }
        for bad in ["", "a b", "a.b", "ä", &"x".repeat(65)] {
            assert!(!is_upstream_name(bad), "{bad}");
        }
    }
}
