//! `[session] mode = "vault"`: the handle cookie, the captured app cookies, the vault
//! secrets, the timing and the store (DESIGN §4.2–4.4).

use std::path::Path;
use std::time::Duration;

use super::super::file::{self, S};
use super::super::runtime::*;
use super::{Ctx, MIN_HMAC_SECRET};

/// Validates a `[session]` whose `mode` is `"vault"`.
pub(super) fn session(cx: &mut Ctx<'_>, s: &file::SessionFile, https: bool) -> Option<Session> {
    if s.reissue.is_some() {
        cx.bad(
            None,
            Some("session.reissue".into()),
            "[session.reissue] belongs to mode = \"reissue\"; mode = \"vault\" takes [session.vault]",
        );
    }
    let vf = s.vault.as_ref().map(|v| v.get_ref());
    let cookie = match vf.and_then(|v| v.cookie.as_ref()) {
        None if https => "__Host-Http-rg".to_string(),
        None => "rg".to_string(),
        Some(c) => {
            let name = c.get_ref();
            if !is_cookie_name(name) {
                cx.bad_at(
                    c,
                    format!("expected a cookie name (RFC 6265 token), found {name:?}"),
                );
            } else if (name.starts_with("__Host-") || name.starts_with("__Secure-")) && !https {
                cx.bad_at(
                    c,
                    format!("cookie {name:?} needs Secure, which browsers only keep from an https origin: set `listen.public_origin = \"https://…\"` (or `[listen.tls]`) or use a name without the prefix (e.g. \"rg\")"),
                );
            }
            name.clone()
        }
    };
    let mut capture = Vec::new();
    match vf.and_then(|v| v.capture.as_ref()) {
        None => capture.push(DEFAULT_CAPTURE.to_string()),
        Some(list) => {
            if list.get_ref().is_empty() {
                cx.bad_at(
                    list,
                    "expected at least one cookie name to capture, e.g. [\"sid\"]",
                );
            }
            for c in list.get_ref() {
                let name = c.get_ref();
                let base = crate::session::cookies::Prefix::split(name).1;
                if !is_cookie_name(name) {
                    cx.bad_at(
                        c,
                        format!("expected a cookie name (RFC 6265 token), found {name:?}"),
                    );
                } else if base == crate::session::cookies::Prefix::split(&cookie).1 {
                    cx.bad_at(
                        c,
                        format!("{name:?} is the handle cookie's own name; the app's cookies need names of their own"),
                    );
                } else if capture
                    .iter()
                    .any(|k: &String| crate::session::cookies::Prefix::split(k).1 == base)
                {
                    cx.bad_at(c, format!("{name:?} is listed twice (twins `__Secure-`/`__Host-` and chunks `.N` are captured with their base name)"));
                } else {
                    capture.push(name.clone());
                }
            }
        }
    }
    let mut secrets = Vec::new();
    let default_ref;
    let refs: Vec<&S> = match vf.and_then(|v| v.secrets.as_ref()) {
        Some(list) => {
            if list.get_ref().is_empty() {
                cx.bad_at(list, "expected at least one secret, e.g. [\"env:ROTAGATE_VAULT_KEY\"] (first is active, all verify)");
            }
            list.get_ref().iter().collect()
        }
        None => {
            default_ref = S::new(0..0, DEFAULT_VAULT_SECRET.to_string());
            vec![&default_ref]
        }
    };
    let defaulted = vf.and_then(|v| v.secrets.as_ref()).is_none();
    for (i, r) in refs.into_iter().enumerate() {
        let before = cx.problems.len();
        let resolved = cx.secret(r, true);
        if defaulted && cx.problems.len() > before {
            // the default reference has no place in the file: name the key instead
            for p in &mut cx.problems[before..] {
                p.line = 0;
                p.column = 0;
                p.key = "session.vault.secrets".into();
                p.message = format!(
                    "{} (the default `secrets = [\"{DEFAULT_VAULT_SECRET}\"]`; make one with `rotagate keygen`)",
                    p.message
                );
            }
        }
        if let Some(v) = resolved {
            if v.len() < MIN_HMAC_SECRET {
                let msg = format!(
                    "expected a secret of at least {MIN_HMAC_SECRET} bytes, found {} bytes (make one with `rotagate keygen`)",
                    v.len()
                );
                if defaulted {
                    cx.bad(None, Some("session.vault.secrets".into()), msg);
                } else {
                    cx.bad(
                        Some(r.span()),
                        Some(format!("session.vault.secrets[{i}]")),
                        msg,
                    );
                }
            } else {
                secrets.push(v);
            }
        }
    }
    let slack = cx.duration(&s.slack, DEFAULT_SLACK);
    if slack > MAX_SLACK {
        if let Some(v) = &s.slack {
            cx.bad_at(
                v,
                format!(
                    "expected at most \"60s\" (a predecessor handle is good this long after its successor was seen), found {:?}",
                    v.get_ref()
                ),
            );
        }
    }
    let store = store(cx, s);
    let rotate_every = cx.duration(&s.rotate_every, super::DEFAULT_ROTATE_EVERY);
    let absolute_timeout = cx.duration(&s.absolute_timeout, DEFAULT_VAULT_ABSOLUTE);
    let idle_timeout = cx.duration(&s.idle_timeout, DEFAULT_VAULT_IDLE);
    for (key, v, d) in [
        ("rotate_every", &s.rotate_every, rotate_every),
        ("absolute_timeout", &s.absolute_timeout, absolute_timeout),
        ("idle_timeout", &s.idle_timeout, idle_timeout),
    ] {
        if let (Some(v), true) = (v, d.is_zero()) {
            cx.bad_at(v, format!("expected `{key}` longer than zero"));
        }
    }
    let leeway = cx.duration(&s.leeway, Duration::from_secs(15));
    Some(Session {
        rotate_every,
        absolute_timeout,
        idle_timeout: Some(idle_timeout),
        leeway,
        mode: SessionMode::Vault(Vault {
            attributes: CookieAttributes {
                path: "/".into(),
                domain: None,
                secure: https || cookie.starts_with("__Host-") || cookie.starts_with("__Secure-"),
                http_only: true,
                same_site: SameSite::Lax,
            },
            cookie,
            capture,
            secrets,
            adopt_existing: vf.and_then(|v| v.adopt_existing).unwrap_or(true),
            slack: slack.min(MAX_SLACK),
            store,
        }),
    })
}

/// The URL schemes of the Redis store.
const REDIS_SCHEMES: [&str; 4] = [
    "redis://",
    "rediss://",
    "redis+sentinel://",
    "rediss+sentinel://",
];

/// `store` and `store_path`.
fn store(cx: &mut Ctx<'_>, s: &file::SessionFile) -> StoreSpec {
    let kind = s.store.as_ref().map(|v| (v, v.get_ref().as_str()));
    let redis_url = kind
        .map(|(_, k)| k)
        .filter(|k| REDIS_SCHEMES.iter().any(|p| k.starts_with(p)));
    if redis_url.is_none() {
        for (key, v) in s.redis_keys() {
            if let Some(v) = v {
                cx.bad_at(
                    v,
                    format!("`{key}` applies to a Redis store only (store = \"redis://…\", \"rediss://…\" or \"redis+sentinel://…\")"),
                );
            }
        }
    }
    match kind {
        None | Some((_, "embedded")) => {}
        Some((v, "memory")) => {
            if let Some(p) = &s.store_path {
                cx.bad_at(p, "`store_path` applies to store = \"embedded\" only");
            }
            let _ = v;
            return StoreSpec::Memory;
        }
        Some((v, url)) if redis_url.is_some() => {
            if let Some(p) = &s.store_path {
                cx.bad_at(p, "`store_path` applies to store = \"embedded\" only");
            }
            return redis_store(cx, s, v, url);
        }
        Some((v, other)) => {
            // a URL of another scheme may carry a password: never echo one
            let found = if other.contains("://") || other.contains('@') {
                "an unsupported URL (the scheme must be one of these, in lower case)".to_string()
            } else {
                format!("{other:?}")
            };
            cx.bad_at(
                v,
                format!("expected \"embedded\", \"memory\", \"redis://…\", \"rediss://…\" or \"redis+sentinel://…\", found {found}"),
            );
            return StoreSpec::Memory;
        }
    }
    let path = match &s.store_path {
        None => Path::new(DEFAULT_STORE_PATH).to_path_buf(),
        Some(p) if p.get_ref().trim().is_empty() => {
            cx.bad_at(p, "expected a file path, found an empty string");
            Path::new(DEFAULT_STORE_PATH).to_path_buf()
        }
        // a relative path is relative to the config file, as `file:` references are
        Some(p) => cx.dir.join(p.get_ref()),
    };
    let path = if path.is_relative() {
        std::env::current_dir().map_or(path.clone(), |d| d.join(&path))
    } else {
        path
    };
    StoreSpec::Embedded(path)
}

/// `store = "redis://host:port/db"` (or `rediss://`, or a Sentinel URL): the URL may
/// name a user but never a password (it would end up in logs and process listings);
/// credentials come from `store_username` / `store_password` references.
fn redis_store(cx: &mut Ctx<'_>, s: &file::SessionFile, v: &file::S, url: &str) -> StoreSpec {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", ""));
    let tls = scheme.starts_with("rediss");
    let sentinel = scheme.ends_with("+sentinel");
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if url.contains(['?', '#']) {
        // rotagate reads no URL parameters; one would only hide a password or an
        // option that is silently ignored
        cx.bad_at(
            v,
            "a store URL takes no query string or fragment: credentials go in `session.store_username` / `session.store_password`, a private CA in `session.store_ca`",
        );
        return StoreSpec::Memory;
    }
    let mut url_user = None;
    if let Some(u) = userinfo {
        if u.contains(':') {
            // never echo the URL: it holds a password
            cx.bad_at(
                v,
                "a password inside the store URL is refused (it would show in logs and process listings): write \"redis://host:port/db\" and set `session.store_password = \"env:NAME\"` (or \"file:PATH\")",
            );
            return StoreSpec::Memory;
        }
        url_user = Some(u.to_string());
    }
    if sentinel {
        if let Err(e) = crate::store::redis::parse_sentinel_url(url) {
            cx.bad_at(v, e);
            return StoreSpec::Memory;
        }
    } else {
        if host.is_empty() {
            cx.bad_at(
                v,
                format!("expected \"{scheme}://host:port/db\", found no host"),
            );
            return StoreSpec::Memory;
        }
        if let Some(db) = rest
            .split_once('/')
            .map(|(_, d)| d.split(['?', '#']).next().unwrap_or(""))
        {
            if !db.is_empty() && db.parse::<u16>().is_err() {
                cx.bad_at(v, format!("expected a database number after the host (\"{scheme}://host:port/0\"), found {db:?}"));
                return StoreSpec::Memory;
            }
        }
        if let Some(p) = &s.store_sentinel_password {
            cx.bad_at(
                p,
                "`store_sentinel_password` applies to store = \"redis+sentinel://…\" only",
            );
        }
    }
    if url_user.is_some() && s.store_username.is_some() {
        cx.bad_at(
            v,
            "the user is named twice: in the URL and in `store_username`; keep one",
        );
    }
    let ca = match &s.store_ca {
        None => None,
        Some(r) if !tls => {
            cx.bad_at(
                r,
                "`store_ca` applies to TLS stores only (\"rediss://…\" or \"rediss+sentinel://…\")",
            );
            None
        }
        Some(r) if !r.get_ref().starts_with("file:") => {
            cx.bad_at(r, "expected \"file:PATH\" (a PEM CA bundle)");
            None
        }
        Some(r) => cx.secret(r, false).and_then(|pem_bytes| {
            let bytes = pem_bytes.expose().to_vec();
            match pem::parse_many(&bytes) {
                Ok(blocks) if blocks.iter().any(|b| b.tag() == "CERTIFICATE") => Some(bytes),
                _ => {
                    cx.bad_at(
                        r,
                        "expected a PEM file of CA certificates (\"-----BEGIN CERTIFICATE-----\")",
                    );
                    None
                }
            }
        }),
    };
    let username = s.store_username.as_ref().and_then(|r| cx.secret(r, true));
    let password = s.store_password.as_ref().and_then(|r| cx.secret(r, true));
    let sentinel_password = s
        .store_sentinel_password
        .as_ref()
        .filter(|_| sentinel)
        .and_then(|r| cx.secret(r, true));
    StoreSpec::Redis(crate::store::redis::RedisConfig {
        url: url.to_string(),
        username,
        password,
        ca,
        sentinel_password,
    })
}

fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|ch| ch.is_ascii_graphic() && !"()<>@,;:\\\"/[]?={}".contains(ch))
}
