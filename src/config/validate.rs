//! File model → runtime config. Every check reports through [`Ctx::bad`], which records
//! the position, the key and the expectation; validation goes on after a problem so
//! one run reports everything it can.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::file::{self, FileConfig, S};
use super::runtime::*;
use super::{ConfigError, Locator, Problem};
use crate::matcher::{Condition, ConditionKind, MatcherSpec, NextOptions, RuleSet, SourceSpec};
use crate::secret::Secret;

mod tls;
mod upstreams;
mod vault;

/// Default `rotate_every`.
pub const DEFAULT_ROTATE_EVERY: Duration = Duration::from_secs(5 * 60);
/// Default chunk size for `jwt` and `authjs` cookies.
pub const DEFAULT_CHUNK_SIZE: usize = 3936;
/// Default chunk size for `authjs-v4` cookies (next-auth 4's own).
pub const DEFAULT_CHUNK_SIZE_V4: usize = 3933;
/// Smallest HMAC secret accepted, in bytes.
pub const MIN_HMAC_SECRET: usize = 32;
/// Smallest `admin.token` accepted, in bytes.
pub const MIN_ADMIN_TOKEN: usize = 16;

struct Ctx<'a> {
    loc: &'a Locator<'a>,
    dir: PathBuf,
    problems: Vec<Problem>,
    /// Every file read besides the config file (`file:` references, the manifest):
    /// the config watcher reloads when one of them changes.
    files: Vec<PathBuf>,
}

impl Ctx<'_> {
    fn bad(&mut self, span: Option<Range<usize>>, key: Option<String>, message: impl Into<String>) {
        self.problems
            .push(self.loc.problem(span, key, message.into()));
    }
    fn bad_at<T>(&mut self, v: &Spanned<T>, message: impl Into<String>) {
        self.bad(Some(v.span()), None, message);
    }

    fn duration(&mut self, v: &Option<S>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => parse_duration(s.get_ref()).unwrap_or_else(|| {
                self.bad_at(
                    s,
                    format!(
                        "expected a duration like \"5m\" (units ms, s, m, h, d), found {:?}",
                        s.get_ref()
                    ),
                );
                default
            }),
        }
    }

    fn socket_addr(&mut self, s: &S) -> Option<SocketAddr> {
        s.get_ref()
            .parse()
            .map_err(|_| {
                self.bad_at(
                    s,
                    format!(
                        "expected an address like \"0.0.0.0:8080\", found {:?}",
                        s.get_ref()
                    ),
                )
            })
            .ok()
    }

    /// Resolves an `env:NAME` / `file:PATH` reference; the value never reaches a message.
    fn secret(&mut self, s: &S, trim: bool) -> Option<Secret> {
        let r = s.get_ref();
        if let Some(name) = r.strip_prefix("env:") {
            match std::env::var_os(name) {
                Some(v) if !v.is_empty() => Some(Secret::new(v.into_encoded_bytes())),
                _ => {
                    self.bad_at(
                        s,
                        format!("environment variable {name} is not set or empty"),
                    );
                    None
                }
            }
        } else if let Some(p) = r.strip_prefix("file:") {
            let path = self.dir.join(p);
            self.files.push(path.clone());
            match super::read_bounded(&path, super::MAX_FILE_BYTES) {
                Ok(mut bytes) => {
                    if trim {
                        while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
                            bytes.pop();
                        }
                    }
                    if bytes.is_empty() {
                        self.bad_at(s, format!("secret file {} is empty", path.display()));
                        return None;
                    }
                    Some(Secret::new(bytes))
                }
                Err(e) => {
                    self.bad_at(
                        s,
                        format!("cannot read secret file {}: {e}", path.display()),
                    );
                    None
                }
            }
        } else {
            // do not echo the value: it may be a secret pasted inline
            self.bad_at(s, "expected a secret reference \"env:NAME\" or \"file:PATH\"; secrets are never written inline");
            None
        }
    }

    fn same_origin_path(&mut self, v: &Option<S>, default: &str) -> String {
        match v {
            None => default.to_string(),
            Some(s) => {
                if is_same_origin_path(s.get_ref()) {
                    s.get_ref().clone()
                } else {
                    self.bad_at(
                        s,
                        format!(
                            "expected a same-origin path starting with a single \"/\", found {:?}",
                            s.get_ref()
                        ),
                    );
                    default.to_string()
                }
            }
        }
    }
}

/// A path that stays on this origin: one leading `/`, no `//` or `/\` start, no
/// scheme, no control characters.
pub fn is_same_origin_path(p: &str) -> bool {
    p.starts_with('/')
        && !p.starts_with("//")
        && !p.starts_with("/\\")
        && !p.chars().any(|c| c.is_control() || c == '\\')
}

/// Parses `"10s"`, `"5m"`, `"12h"`, `"30d"`, `"500ms"`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "ms" => return Some(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(secs).map(Duration::from_secs)
}

pub(super) fn validate(
    f: FileConfig,
    source: &Path,
    loc: &Locator<'_>,
) -> Result<Config, ConfigError> {
    let dir = source.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut cx = Ctx {
        loc,
        dir,
        problems: Vec::new(),
        files: Vec::new(),
    };

    // [listen]
    let address = match &f.listen.address {
        Some(s) => cx.socket_addr(s),
        None => DEFAULT_LISTEN.parse().ok(),
    };
    let public_origin = f.listen.public_origin.as_ref().and_then(|s| {
        parse_origin(s.get_ref())
            .map_err(|why| {
                cx.bad_at(
                    s,
                    format!(
                        "expected an origin like \"https://app.example.com\" ({why}), found {:?}",
                        s.get_ref()
                    ),
                )
            })
            .ok()
    });
    let trusted_proxies = f
        .listen
        .trusted_proxies
        .iter()
        .filter_map(|s| {
            let v = s.get_ref();
            v.parse::<IpNet>()
                .or_else(|_| v.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    cx.bad_at(
                        s,
                        format!(
                            "expected a CIDR like \"10.0.0.0/8\" or an IP address, found {v:?}"
                        ),
                    )
                })
                .ok()
        })
        .collect();
    let max_header_bytes = match &f.listen.max_header_bytes {
        None => DEFAULT_MAX_HEADER_BYTES,
        Some(v) if (1024..=1024 * 1024).contains(v.get_ref()) => *v.get_ref() as usize,
        Some(v) => {
            cx.bad_at(
                v,
                format!(
                    "expected a size in bytes between 1024 and 1048576, found {}",
                    v.get_ref()
                ),
            );
            DEFAULT_MAX_HEADER_BYTES
        }
    };

    let threads = match &f.listen.threads {
        None => std::thread::available_parallelism().map_or(2, |n| n.get()),
        Some(v) if (1..=1024).contains(v.get_ref()) => *v.get_ref() as usize,
        Some(v) => {
            cx.bad_at(
                v,
                format!(
                    "expected a thread count between 1 and 1024, found {}",
                    v.get_ref()
                ),
            );
            1
        }
    };

    let allowed_hosts = allowed_hosts(&mut cx, &f.listen.allowed_hosts, public_origin.as_ref());
    let path_strictness = match &f.listen.path_strictness {
        None => PathStrictness::Strict,
        Some(s) if s.get_ref() == "strict" => PathStrictness::Strict,
        Some(s) if s.get_ref() == "lenient" => PathStrictness::Lenient,
        Some(s) => {
            cx.bad_at(
                s,
                format!(
                    "expected \"strict\" or \"lenient\", found {:?}",
                    s.get_ref()
                ),
            );
            PathStrictness::Strict
        }
    };
    let case_insensitive_paths = f.listen.case_insensitive_paths.unwrap_or(false);
    let upgrade_socket = upgrade_socket(&mut cx, f.listen.upgrade_socket.as_ref());
    let limits = conn_limits(&mut cx, &f.listen);
    let listen_tls = f
        .listen
        .tls
        .as_ref()
        .and_then(|t| tls::listener(&mut cx, t, public_origin.as_ref(), address));
    // what Listen::https says, before Listen exists
    let https =
        f.listen.tls.is_some() || public_origin.as_ref().is_some_and(|o| o.scheme == "https");

    // [upstream], [upstreams.NAME]
    let upstreams = upstreams::upstreams(&mut cx, &f.upstream, &f.upstreams);

    // [admin]
    let admin = f
        .admin
        .as_ref()
        .and_then(|a| {
            let token = a.token.as_ref().and_then(|t| {
                let v = cx.secret(t, true)?;
                if v.len() < MIN_ADMIN_TOKEN {
                    cx.bad_at(
                        t,
                        format!("expected an admin token of at least {MIN_ADMIN_TOKEN} bytes, found {} bytes (make one with `rotagate keygen`)", v.len()),
                    );
                    return None;
                }
                Some(v)
            });
            cx.socket_addr(&a.address)
                .map(|address| Admin { address, token })
        });

    // [nextjs]
    let base_path = match &f.nextjs.base_path {
        None => String::new(),
        Some(s) => {
            let v = s.get_ref();
            if v.is_empty() || (v.starts_with('/') && !v.ends_with('/') && is_same_origin_path(v)) {
                v.clone()
            } else {
                cx.bad_at(s, format!("expected \"\" or a path like \"/docs\" (leading /, no trailing /), found {v:?}"));
                String::new()
            }
        }
    };
    let manifest = f
        .nextjs
        .server_reference_manifest
        .as_ref()
        .map(|s| (s, cx.dir.join(s.get_ref())));
    if let Some((_, path)) = &manifest {
        cx.files.push(path.clone());
    }
    let actions = match &manifest {
        Some((s, path)) => read_manifest(path).unwrap_or_else(|why| {
            cx.bad_at(s, format!("cannot use {}: {why}", path.display()));
            Vec::new()
        }),
        None => Vec::new(),
    };
    let deny_unknown_actions = match &f.nextjs.unknown_actions {
        None => false,
        Some(s) if s.get_ref() == "allow" => false,
        Some(s) if s.get_ref() == "deny" => {
            if manifest.is_none() {
                cx.bad_at(
                    s,
                    "\"deny\" needs `server_reference_manifest` to know which actions exist",
                );
            }
            true
        }
        Some(s) => {
            cx.bad_at(
                s,
                format!("expected \"allow\" or \"deny\", found {:?}", s.get_ref()),
            );
            false
        }
    };
    let locales = f.nextjs.locales.clone();
    let mut locale_warning = None;
    let default_locale = match &f.nextjs.default_locale {
        Some(s) if locales.is_empty() => {
            cx.bad_at(s, "a default locale needs `locales`");
            String::new()
        }
        Some(s) if locales.contains(s.get_ref()) => s.get_ref().clone(),
        Some(s) => {
            cx.bad_at(
                s,
                format!(
                    "expected one of `locales` ({}), found {:?}",
                    locales.join(", "),
                    s.get_ref()
                ),
            );
            String::new()
        }
        None => match locales.first() {
            Some(first) => {
                locale_warning = Some(format!(
                    "nextjs.default_locale is not set: paths without a locale are matched as {first:?}, the first of `locales`; set it to the app's i18n.defaultLocale"
                ));
                first.clone()
            }
            None => String::new(),
        },
    };
    let mut nextjs = NextJs {
        base_path,
        locales,
        server_reference_manifest: manifest.as_ref().map(|(_, p)| p.clone()),
        actions,
        deny_unknown_actions,
        default_locale,
        action_index: Default::default(),
    };

    // [session]
    let session = f.session.as_ref().and_then(|s| session(&mut cx, s, https));

    // [logout]
    let lf = &f.logout;
    let logout = Logout {
        login_url: cx.same_origin_path(&lf.login_url, "/login"),
        return_to_param: match &lf.return_to_param {
            Some(s)
                if !s.get_ref().is_empty()
                    && s.get_ref()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) =>
            {
                s.get_ref().clone()
            }
            Some(s) => {
                cx.bad_at(
                    s,
                    format!(
                        "expected a query parameter name like \"callbackUrl\", found {:?}",
                        s.get_ref()
                    ),
                );
                "callbackUrl".to_string()
            }
            None => "callbackUrl".to_string(),
        },
        endpoint: cx.same_origin_path(&lf.endpoint, "/.rotagate/logout"),
        allow_get: lf.allow_get.unwrap_or(false),
        after_logout: cx.same_origin_path(&lf.after_logout, "/"),
        clear_cookies: lf
            .clear_cookies
            .iter()
            .map(|c| match c.get_ref() {
                file::ClearCookieFile::Name(n) => ClearCookie {
                    name: n.clone(),
                    domain: None,
                    path: "/".into(),
                },
                file::ClearCookieFile::Full(t) => ClearCookie {
                    name: t.name.clone(),
                    domain: t.domain.clone(),
                    path: t.path.clone().unwrap_or_else(|| "/".into()),
                },
            })
            .collect(),
        clear_site_data: lf.clear_site_data.unwrap_or(false),
        loop_max: lf.loop_max.unwrap_or(3),
        loop_window: cx.duration(&lf.loop_window, Duration::from_secs(30)),
    };

    // [csrf]
    let csrf = Csrf {
        allowed_origins: f
            .csrf
            .allowed_origins
            .iter()
            .filter_map(|s| {
                parse_origin(s.get_ref())
                    .map_err(|why| cx.bad_at(s, format!("expected an origin like \"https://app.example.com\" ({why}), found {:?}", s.get_ref())))
                    .ok()
            })
            .collect(),
        require_origin: f.csrf.require_origin.unwrap_or(false),
        allow_same_site: f.csrf.allow_same_site.unwrap_or(false),
    };

    // [identity]
    let header_name = |v: &str| http::HeaderName::from_bytes(v.as_bytes()).is_ok() && !v.is_empty();
    let subject_header = match &f.identity.subject_header {
        None => "x-rotagate-subject".to_string(),
        Some(s) if header_name(s.get_ref()) => s.get_ref().to_ascii_lowercase(),
        Some(s) => {
            cx.bad_at(
                s,
                format!("expected a header name, found {:?}", s.get_ref()),
            );
            "x-rotagate-subject".to_string()
        }
    };
    let mut claim_headers = Vec::new();
    for (name, claim) in &f.identity.claim_headers {
        if !header_name(name) {
            cx.bad(
                None,
                Some(format!("identity.claim_headers.{name}")),
                "expected a header name",
            );
            continue;
        }
        claim_headers.push((
            name.to_ascii_lowercase(),
            claim.split('.').map(str::to_string).collect(),
        ));
    }
    let identity = Identity {
        subject_header,
        claim_headers,
    };

    // [[route]]
    let mut routes = Vec::with_capacity(f.route.len());
    let mut specs = Vec::with_capacity(f.route.len());
    for (i, r) in f.route.iter().enumerate() {
        let (mut route, spec) = route(&mut cx, i, r);
        route.upstream = upstreams::route_upstream(&mut cx, &r.upstream, &upstreams);
        routes.push(route);
        specs.push(spec);
    }
    let opts = NextOptions {
        base_path: nextjs.base_path.clone(),
        locales: nextjs.locales.clone(),
        case_insensitive: case_insensitive_paths,
    };
    let rules = match RuleSet::build(&specs, &opts) {
        Ok(set) => set,
        Err(e) => {
            let key = match e.source_index {
                Some(si)
                    if matches!(
                        f.route.get(e.rule).map(|r| r.matcher.get_ref()),
                        Some(file::MatchFile::Many(_))
                    ) =>
                {
                    format!("route[{}].match[{si}]", e.rule)
                }
                _ => format!("route[{}].match", e.rule),
            };
            let span = f.route.get(e.rule).map(|r| r.matcher.span());
            cx.bad(span, Some(key), format!("invalid pattern: {}", e.reason));
            RuleSet::default()
        }
    };

    if !cx.problems.is_empty() {
        cx.problems.sort_by_key(|p| (p.line, p.column));
        return Err(ConfigError {
            file: source.to_path_buf(),
            problems: cx.problems,
        });
    }
    let mut warnings: Vec<String> = rules
        .unreachable_rules()
        .into_iter()
        .map(|(i, why)| {
            let why = why.replace("rule ", "route ");
            format!("route[{i}] \"{}\": {why}", routes[i].name)
        })
        .collect();
    warnings.extend(locale_warning);
    nextjs.action_index = crate::actions::ActionIndex::build(
        &nextjs.actions,
        &rules,
        &|i| {
            routes
                .get(i)
                .is_some_and(|r| r.handles_sessions() && r.require.is_some())
        },
        &nextjs.base_path,
        &nextjs.locales,
    );
    let strictest: Vec<String> = nextjs
        .action_index
        .strictest()
        .iter()
        .filter_map(|i| routes.get(*i).map(|r| format!("route[{i}] \"{}\"", r.name)))
        .collect();
    for (id, why) in nextjs.action_index.fell_back() {
        warnings.push(format!(
            "Server Action {id}: its owning route cannot be resolved ({why}); it is held to the strictest action rule: {}",
            if strictest.is_empty() { "no route owns an action".to_string() } else { strictest.join(", ") }
        ));
    }
    if let Some(SessionMode::Reissue(r)) = session.as_ref().map(|s| &s.mode) {
        if r.format == TokenFormat::Jwt && r.issuer.is_none() && r.audience.is_none() {
            warnings.push(
                "session.reissue: neither `issuer` nor `audience` is set: any token these keys sign is taken as a session (set them when the keys also sign tokens for other services)"
                    .to_string(),
            );
        }
        if r.attributes.path != "/" {
            warnings.push(format!(
                "session.reissue.path is {:?}: if the app sets its cookie with another Path, browsers keep two cookies of one name",
                r.attributes.path
            ));
        }
    }
    let Some(address) = address else {
        return Err(ConfigError {
            file: source.to_path_buf(),
            problems: cx.problems,
        });
    };
    Ok(Config {
        source: source.to_path_buf(),
        listen: Listen {
            address,
            public_origin,
            trusted_proxies,
            max_header_bytes,
            h2c: f.listen.h2c.unwrap_or(true),
            threads,
            allowed_hosts,
            path_strictness,
            case_insensitive_paths,
            limits,
            upgrade_socket,
            tls: listen_tls,
        },
        upstreams,
        admin,
        nextjs,
        routes,
        rules,
        session,
        logout,
        csrf,
        identity,
        log: Log {
            access: f.log.access.unwrap_or(true),
        },
        warnings,
        files: cx.files,
    })
}

/// `[listen]` connection limits: timeouts must be positive, counts within sane bounds.
fn conn_limits(cx: &mut Ctx<'_>, l: &file::ListenFile) -> ConnLimits {
    let d = ConnLimits::default();
    let positive = |cx: &mut Ctx<'_>, v: &Option<S>, default: Duration| {
        let got = cx.duration(v, default);
        match v {
            Some(s) if got.is_zero() => {
                cx.bad_at(
                    s,
                    format!("expected a duration above zero, found {:?}", s.get_ref()),
                );
                default
            }
            _ => got,
        }
    };
    let header_timeout = positive(cx, &l.header_timeout, d.header_timeout);
    let keepalive_timeout = positive(cx, &l.keepalive_timeout, d.keepalive_timeout);
    let body_timeout = positive(cx, &l.body_timeout, d.body_timeout);
    let count = |cx: &mut Ctx<'_>, v: &Option<Spanned<i64>>, max: i64, default: i64| match v {
        None => default,
        Some(n) if (1..=max).contains(n.get_ref()) => *n.get_ref(),
        Some(n) => {
            cx.bad_at(
                n,
                format!(
                    "expected a count between 1 and {max}, found {}",
                    n.get_ref()
                ),
            );
            default
        }
    };
    let max_connections =
        count(cx, &l.max_connections, 1_000_000, d.max_connections as i64) as usize;
    let h2_max_concurrent_streams = count(
        cx,
        &l.h2_max_concurrent_streams,
        10_000,
        i64::from(d.h2_max_concurrent_streams),
    ) as u32;
    ConnLimits {
        header_timeout,
        keepalive_timeout,
        body_timeout,
        max_connections,
        h2_max_concurrent_streams,
    }
}

/// `https`: browsers reach the site over https ([`Listen::https`]), which makes cookies
/// `Secure` by default.
fn session(cx: &mut Ctx<'_>, s: &file::SessionFile, https: bool) -> Option<Session> {
    if let Some(m) = &s.mode {
        match m.get_ref().as_str() {
            "reissue" => {}
            "vault" => return vault::session(cx, s, https),
            other => cx.bad_at(
                m,
                format!("expected \"reissue\" or \"vault\", found {other:?}"),
            ),
        }
    }
    let vault_only = [
        ("slack", &s.slack),
        ("store", &s.store),
        ("store_path", &s.store_path),
    ];
    for (key, v) in vault_only.into_iter().chain(s.redis_keys()) {
        if let Some(v) = v {
            cx.bad_at(
                v,
                format!(
                    "`{key}` applies to mode = \"vault\" only (set `session.mode = \"vault\"`)"
                ),
            );
        }
    }
    if let Some(v) = &s.vault {
        cx.bad_at(
            v,
            "[session.vault] applies to mode = \"vault\" only (set `session.mode = \"vault\"`)",
        );
    }
    let Some(r) = &s.reissue else {
        cx.bad(
            None,
            Some("session.reissue".into()),
            "the [session.reissue] section is required when [session] is present",
        );
        return None;
    };
    let format = match r.format.as_ref().map(|f| (f, f.get_ref().as_str())) {
        None | Some((_, "jwt")) => TokenFormat::Jwt,
        Some((_, "authjs")) => TokenFormat::Authjs,
        Some((_, "authjs-v4")) => TokenFormat::AuthjsV4,
        Some((f, other)) => {
            cx.bad_at(
                f,
                format!("expected \"jwt\", \"authjs\" or \"authjs-v4\", found {other:?}"),
            );
            TokenFormat::Jwt
        }
    };
    let (default_cookie, default_abs, default_chunk, default_leeway) = match format {
        TokenFormat::Jwt => (
            "session",
            Duration::from_secs(12 * 3600),
            DEFAULT_CHUNK_SIZE,
            Duration::from_secs(30),
        ),
        TokenFormat::Authjs => (
            "authjs.session-token",
            Duration::from_secs(30 * 86_400),
            DEFAULT_CHUNK_SIZE,
            Duration::from_secs(15),
        ),
        TokenFormat::AuthjsV4 => (
            "next-auth.session-token",
            Duration::from_secs(30 * 86_400),
            DEFAULT_CHUNK_SIZE_V4,
            Duration::from_secs(15),
        ),
    };
    let cookie = r
        .cookie
        .as_ref()
        .map_or(default_cookie.to_string(), |c| c.get_ref().clone());
    if let Some(c) = &r.cookie {
        if c.get_ref().is_empty()
            || !c
                .get_ref()
                .chars()
                .all(|ch| ch.is_ascii_graphic() && !"()<>@,;:\\\"/[]?={}".contains(ch))
        {
            cx.bad_at(
                c,
                format!(
                    "expected a cookie name (RFC 6265 token), found {:?}",
                    c.get_ref()
                ),
            );
        }
    }
    let host_prefix = cookie.starts_with("__Host-");
    let secure_prefix = host_prefix || cookie.starts_with("__Secure-");
    let path = r
        .path
        .as_ref()
        .map_or("/".to_string(), |p| p.get_ref().clone());
    if host_prefix {
        if let Some(d) = &r.domain {
            cx.bad_at(d, "a __Host- cookie must not have a Domain");
        }
        if let Some(p) = &r.path {
            if p.get_ref() != "/" {
                cx.bad_at(p, "a __Host- cookie must have Path=/");
            }
        }
    }
    let same_site = match r
        .same_site
        .as_ref()
        .map(|s| (s, s.get_ref().to_ascii_lowercase()))
    {
        None => SameSite::Lax,
        Some((_, v)) if v == "lax" => SameSite::Lax,
        Some((_, v)) if v == "strict" => SameSite::Strict,
        Some((_, v)) if v == "none" => SameSite::None,
        Some((s, _)) => {
            cx.bad_at(
                s,
                format!(
                    "expected \"Lax\", \"Strict\" or \"None\", found {:?}",
                    s.get_ref()
                ),
            );
            SameSite::Lax
        }
    };
    let secure = r
        .secure
        .unwrap_or(secure_prefix || https || same_site == SameSite::None);
    if secure_prefix && r.secure == Some(false) {
        cx.bad(
            None,
            Some("session.reissue.secure".into()),
            format!("cookie {cookie:?} needs Secure (its prefix demands it)"),
        );
    }
    let chunk_size = match &r.chunk_size {
        None => default_chunk,
        Some(v) if (512..=4096).contains(v.get_ref()) => *v.get_ref() as usize,
        Some(v) => {
            cx.bad_at(
                v,
                format!(
                    "expected a chunk size between 512 and 4096 characters, found {}",
                    v.get_ref()
                ),
            );
            default_chunk
        }
    };
    let mut keys = Vec::new();
    let mut secrets = Vec::new();
    match format {
        TokenFormat::Jwt => {
            if !r.secrets.is_empty() {
                cx.bad_at(
                    &r.secrets[0],
                    "format \"jwt\" takes [[session.reissue.keys]], not `secrets`",
                );
            }
            if r.keys.is_empty() {
                cx.bad(
                    None,
                    Some("session.reissue.keys".into()),
                    "format \"jwt\" needs at least one [[session.reissue.keys]] entry",
                );
            }
            for (i, k) in r.keys.iter().enumerate() {
                if let Some(spec) = key_spec(cx, i, k) {
                    keys.push(spec);
                }
            }
        }
        TokenFormat::Authjs | TokenFormat::AuthjsV4 => {
            if let Some(k) = r.keys.first() {
                cx.bad_at(
                    k,
                    "Auth.js formats take `secrets = [...]`, not [[session.reissue.keys]]",
                );
            }
            if r.secrets.is_empty() {
                cx.bad(None, Some("session.reissue.secrets".into()), "Auth.js formats need `secrets = [\"env:AUTH_SECRET\"]` (first encrypts, all decrypt)");
            }
            for s in &r.secrets {
                if let Some(v) = cx.secret(s, true) {
                    secrets.push(v);
                }
            }
        }
    }
    let rotate_every = cx.duration(&s.rotate_every, DEFAULT_ROTATE_EVERY);
    let absolute_timeout = cx.duration(&s.absolute_timeout, default_abs);
    let idle_timeout = s
        .idle_timeout
        .as_ref()
        .map(|_| cx.duration(&s.idle_timeout, Duration::ZERO));
    let leeway = cx.duration(&s.leeway, default_leeway);
    let mut claim = |v: &Option<file::S>, what: &str| -> Option<String> {
        let v = v.as_ref()?;
        if v.get_ref().trim().is_empty() {
            cx.bad_at(
                v,
                format!("expected the {what} tokens must name, found an empty string"),
            );
            return None;
        }
        Some(v.get_ref().clone())
    };
    let issuer = claim(&r.issuer, "issuer (`iss`)");
    let audience = claim(&r.audience, "audience (`aud`)");
    Some(Session {
        rotate_every,
        absolute_timeout,
        idle_timeout,
        leeway,
        mode: SessionMode::Reissue(Reissue {
            cookie,
            format,
            attributes: CookieAttributes {
                path,
                domain: r.domain.as_ref().map(|d| d.get_ref().clone()),
                secure,
                http_only: r.http_only.unwrap_or(true),
                same_site,
            },
            chunk_size,
            keys,
            secrets,
            require_exp: r.require_exp.unwrap_or(true),
            issuer,
            audience,
        }),
    })
}

const ALGS: [&str; 7] = [
    "HS256", "HS384", "HS512", "RS256", "PS256", "ES256", "EdDSA",
];

fn key_spec(cx: &mut Ctx<'_>, i: usize, k: &Spanned<file::KeyFile>) -> Option<KeySpec> {
    let kf = k.get_ref();
    let alg = kf.alg.get_ref().clone();
    if !ALGS.contains(&alg.as_str()) {
        cx.bad_at(
            &kf.alg,
            format!("expected one of {}, found {alg:?}", ALGS.join(", ")),
        );
        return None;
    }
    let origin = format!("session.reissue.keys[{i}]");
    if alg.starts_with("HS") {
        if kf.private_key.is_some() || kf.public_key.is_some() {
            cx.bad_at(
                k,
                format!("{alg} takes `secret`, not private_key/public_key"),
            );
        }
        let Some(s) = &kf.secret else {
            cx.bad(
                Some(k.span()),
                Some(origin),
                format!("{alg} needs `secret = \"env:NAME\"` or \"file:PATH\""),
            );
            return None;
        };
        let secret = cx.secret(s, true)?;
        if secret.len() < MIN_HMAC_SECRET {
            cx.bad_at(s, format!("an {alg} secret needs at least {MIN_HMAC_SECRET} bytes, found {} (make one with `rotagate keygen`)", secret.len()));
            return None;
        }
        Some(KeySpec {
            kid: kf.kid.clone(),
            alg,
            secret: Some(secret),
            private_key_pem: None,
            public_key_pem: None,
            origin,
        })
    } else {
        if let Some(s) = &kf.secret {
            cx.bad_at(
                s,
                format!("{alg} takes private_key and/or public_key PEM files, not `secret`"),
            );
        }
        if kf.private_key.is_none() && kf.public_key.is_none() {
            cx.bad(Some(k.span()), Some(origin), format!("{alg} needs `private_key = \"file:key.pem\"` (signs) or `public_key` (verifies only)"));
            return None;
        }
        let private_key_pem = kf.private_key.as_ref().and_then(|s| cx.secret(s, false));
        let public_key_pem = kf
            .public_key
            .as_ref()
            .and_then(|s| cx.secret(s, false))
            .map(|s| s.expose().to_vec());
        Some(KeySpec {
            kid: kf.kid.clone(),
            alg,
            secret: None,
            private_key_pem,
            public_key_pem,
            origin,
        })
    }
}

fn route(cx: &mut Ctx<'_>, i: usize, r: &file::RouteFile) -> (Route, MatcherSpec) {
    let name = r.name.clone().unwrap_or_else(|| format!("route[{i}]"));
    let bypass = r.bypass.as_ref().is_some_and(|b| *b.get_ref());
    if bypass {
        if let Some(req) = &r.require {
            cx.bad_at(req, "a route with `bypass = true` does no session work, so it cannot `require` anything");
        }
        if let Some(o) = &r.on_401 {
            cx.bad_at(
                o,
                "a route with `bypass = true` does no session work, so `on_401` has no meaning",
            );
        }
    }
    let action = |cx: &mut Ctx<'_>, v: &Option<S>, default| match v
        .as_ref()
        .map(|s| (s, s.get_ref().as_str()))
    {
        None => default,
        Some((_, "logout")) => UpstreamStatusAction::Logout,
        Some((_, "pass")) => UpstreamStatusAction::Pass,
        Some((s, other)) => {
            cx.bad_at(
                s,
                format!("expected \"logout\" or \"pass\", found {other:?}"),
            );
            default
        }
    };
    let on_401 = action(
        cx,
        &r.on_401,
        if bypass {
            UpstreamStatusAction::Pass
        } else {
            UpstreamStatusAction::Logout
        },
    );
    let on_403 = action(cx, &r.on_403, UpstreamStatusAction::Pass);
    let require = r.require.as_ref().map(|req| {
        let rf = req.get_ref();
        let claims = rf
            .claims
            .as_ref()
            .map(|t| claim_predicates(cx, req, t))
            .unwrap_or_default();
        Require {
            session: rf.session.unwrap_or(false) || !claims.is_empty(),
            claims,
        }
    });
    let on_deny = match &r.on_deny {
        None => OnDeny::Status(403),
        Some(d) => match (&d.get_ref().status, &d.get_ref().redirect) {
            (Some(s), None) if (400..=599).contains(s) => OnDeny::Status(*s),
            (None, Some(p)) if is_same_origin_path(p) => OnDeny::Redirect(p.clone()),
            _ => {
                cx.bad_at(d, "expected `{ status = 403 }` (a 4xx/5xx) or `{ redirect = \"/pricing\" }` (a same-origin path)");
                OnDeny::Status(403)
            }
        },
    };
    let items: Vec<&file::MatchItem> = match r.matcher.get_ref() {
        file::MatchFile::One(m) => vec![m],
        file::MatchFile::Many(v) => v.iter().collect(),
    };
    let mut sources = Vec::with_capacity(items.len());
    for item in items {
        match item {
            file::MatchItem::Source(s) => sources.push(SourceSpec {
                source: s.clone(),
                ..Default::default()
            }),
            file::MatchItem::Object(o) => {
                let conv = |cx: &mut Ctx<'_>,
                            list: &[file::ConditionFile],
                            what: &str|
                 -> Vec<Condition> {
                    list.iter()
                        .filter_map(|c| {
                            let kind = match c.kind.as_str() {
                                "header" => ConditionKind::Header,
                                "cookie" => ConditionKind::Cookie,
                                "query" => ConditionKind::Query,
                                "host" => ConditionKind::Host,
                                other => {
                                    cx.bad(Some(r.matcher.span()), Some(format!("route[{i}].match.{what}")), format!("expected type \"header\", \"cookie\", \"query\" or \"host\", found {other:?}"));
                                    return None;
                                }
                            };
                            Some(Condition { kind, key: c.key.clone().unwrap_or_default(), value: c.value.clone() })
                        })
                        .collect()
                };
                let has = conv(cx, &o.has, "has");
                let missing = conv(cx, &o.missing, "missing");
                if o.locale == Some(true) {
                    cx.bad(
                        Some(r.matcher.span()),
                        Some(format!("route[{i}].match.locale")),
                        "expected `locale = false` (a source without the i18n locale prefix) or no `locale`",
                    );
                }
                sources.push(SourceSpec {
                    source: o.source.clone(),
                    has,
                    missing,
                    no_locale: o.locale == Some(false),
                });
            }
        }
    }
    let methods = r
        .methods
        .iter()
        .filter_map(|m| {
            let v = m.get_ref().to_ascii_uppercase();
            if !v.is_empty() && v.chars().all(|c| c.is_ascii_alphabetic()) {
                Some(v)
            } else {
                cx.bad_at(
                    m,
                    format!(
                        "expected an HTTP method like \"GET\", found {:?}",
                        m.get_ref()
                    ),
                );
                None
            }
        })
        .collect();
    // access decisions fail closed: a rule with `require` matches when its regex gives up
    let fail_closed = require.is_some();
    let route = Route {
        name,
        bypass,
        on_401,
        on_403,
        require,
        on_deny,
        upstream: 0,
    };
    (
        route,
        MatcherSpec {
            sources,
            methods,
            hosts: r.hosts.clone(),
            fail_closed,
        },
    )
}

fn claim_predicates(
    cx: &mut Ctx<'_>,
    at: &Spanned<file::RequireFile>,
    t: &toml::Table,
) -> Vec<ClaimPredicate> {
    let mut out = Vec::new();
    for (k, v) in t {
        let path: Vec<String> = k.split('.').map(str::to_string).collect();
        let test = match v {
            toml::Value::Table(inner) if inner.len() == 1 => {
                let (op, arg) = inner
                    .iter()
                    .next()
                    .map(|(a, b)| (a.as_str(), b))
                    .unwrap_or(("", v));
                match (op, arg) {
                    ("one_of", toml::Value::Array(a)) => {
                        ClaimTest::OneOf(a.iter().map(to_json).collect())
                    }
                    ("contains", x) => ClaimTest::Contains(to_json(x)),
                    ("present", toml::Value::Boolean(b)) => ClaimTest::Present(*b),
                    _ => {
                        cx.bad_at(at, format!("claim {k:?}: expected a value, or {{ one_of = [...] }}, {{ contains = x }} or {{ present = true }}"));
                        continue;
                    }
                }
            }
            toml::Value::Table(_) => {
                cx.bad_at(at, format!("claim {k:?}: expected a value, or {{ one_of = [...] }}, {{ contains = x }} or {{ present = true }}; use a dotted key for nested claims"));
                continue;
            }
            other => ClaimTest::Equals(to_json(other)),
        };
        out.push(ClaimPredicate { path, test });
    }
    out
}

fn to_json(v: &toml::Value) -> serde_json::Value {
    match v {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        toml::Value::Table(t) => {
            serde_json::Value::Object(t.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

/// `listen.upgrade_socket`: a path (relative to the config file's directory) short
/// enough for a Unix socket.
fn upgrade_socket(cx: &mut Ctx<'_>, s: Option<&S>) -> std::path::PathBuf {
    let Some(s) = s else {
        return default_upgrade_socket();
    };
    let v = s.get_ref();
    let path = cx.dir.join(v);
    let len = path.as_os_str().len();
    if v.is_empty() || v.ends_with('/') {
        cx.bad_at(s, format!("expected a file path for a Unix socket, like \"/run/rotagate/upgrade.sock\", found {v:?}"));
    } else if len > MAX_UNIX_SOCKET_PATH {
        cx.bad_at(s, format!("expected a path of at most {MAX_UNIX_SOCKET_PATH} bytes (a Unix socket's limit), found {len} bytes ({})", path.display()));
    }
    path
}

/// `listen.allowed_hosts`: `name`, `*.domain` or either with `:port`; only meaningful
/// (and only accepted) with a public origin, whose scheme sets the default port.
fn allowed_hosts(cx: &mut Ctx<'_>, entries: &[S], origin: Option<&Origin>) -> Vec<AllowedHost> {
    if let (Some(first), None) = (entries.first(), origin) {
        cx.bad_at(
            first,
            "`allowed_hosts` needs `listen.public_origin`: hosts are vetted against the public origin",
        );
        return Vec::new();
    }
    let default_port = match origin {
        Some(o) if o.scheme == "https" => 443,
        _ => 80,
    };
    let mut out = Vec::with_capacity(entries.len());
    for s in entries {
        let v = s.get_ref();
        let (wild, rest) = match v.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, v.as_str()),
        };
        match crate::hygiene::HostReading::parse(rest) {
            crate::hygiene::HostReading::Host(h) if !(wild && h.name.contains(':')) => {
                out.push(AllowedHost {
                    name: if wild { format!("*.{}", h.name) } else { h.name },
                    port: h.port.filter(|p| *p != default_port),
                })
            }
            _ => cx.bad_at(
                s,
                format!("expected a host like \"www.example.com\", \"*.example.com\" or \"internal:8080\", found {v:?}"),
            ),
        }
    }
    out
}

/// Parses an origin as written in the config (`listen.public_origin`,
/// `csrf.allowed_origins`): `scheme://host[:port]` with no path, scheme `http` or
/// `https`; the host lower-cased and the scheme's default port dropped.
pub fn parse_origin(s: &str) -> Result<Origin, &'static str> {
    let uri: http::Uri = s.parse().map_err(|_| "not a URL")?;
    let scheme = match uri.scheme_str() {
        Some("http") => "http",
        Some("https") => "https",
        _ => return Err("scheme must be http or https"),
    };
    if uri
        .path_and_query()
        .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
    {
        return Err("no path allowed");
    }
    let auth = uri.authority().ok_or("no host")?;
    if auth.host().is_empty() {
        return Err("no host");
    }
    let a = auth.as_str();
    let port_text = match a.strip_prefix('[') {
        Some(rest) => rest.split_once("]:").map(|(_, p)| p),
        None => a.rsplit_once(':').map(|(_, p)| p),
    };
    if port_text.is_some_and(|p| !p.is_empty() && p.parse::<u16>().is_err()) {
        return Err("the port must be a number");
    }
    // the host as request hosts are read (hygiene::HostReading), so that an origin is
    // one a browser can send: `Ap[::1]p.x'8` is not
    let host = match crate::hygiene::HostReading::parse(auth.as_str()) {
        crate::hygiene::HostReading::Host(h) => h.name,
        _ => return Err("not a host name or IP address"),
    };
    let default_port = if scheme == "https" { 443 } else { 80 };
    let port = auth.port_u16().filter(|p| *p != default_port);
    Ok(Origin {
        scheme: scheme.to_string(),
        host,
        port,
    })
}

/// Reads Next's `server-reference-manifest.json` from disk (see [`parse_manifest`]).
fn read_manifest(path: &Path) -> Result<Vec<(String, Vec<String>)>, String> {
    let bytes = super::read_bounded(path, super::MAX_FILE_BYTES).map_err(|e| e.to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    parse_manifest(&text)
}

/// Parses the text of Next's `server-reference-manifest.json`: each action id (under
/// `node` and `edge`) with the entry names in its `workers` (e.g. `app/premium/page`).
/// The manifest's `encryptionKey` is not kept.
pub fn parse_manifest(text: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for runtime in ["node", "edge"] {
        let Some(actions) = v.get(runtime).and_then(|a| a.as_object()) else {
            continue;
        };
        for (id, a) in actions {
            let workers: Vec<String> = a
                .get("workers")
                .and_then(|w| w.as_object())
                .map(|w| w.keys().cloned().collect())
                .unwrap_or_default();
            match out.iter_mut().find(|(i, _)| i == id) {
                Some((_, w)) => w.extend(workers),
                None => out.push((id.clone(), workers)),
            }
        }
    }
    if v.get("node").is_none() && v.get("edge").is_none() {
        return Err(
            "expected a server-reference-manifest with \"node\"/\"edge\" action maps".to_string(),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("12h"), Some(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("30d"), Some(Duration::from_secs(2_592_000)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        for bad in [
            "five",
            "5",
            "m",
            "5 m",
            "-5m",
            "5y",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn origins_and_urls() {
        assert_eq!(
            parse_origin("https://App.Example.com").unwrap(),
            Origin {
                scheme: "https".into(),
                host: "app.example.com".into(),
                port: None
            }
        );
        assert_eq!(
            parse_origin("http://localhost:8080").unwrap().port,
            Some(8080)
        );
        assert!(parse_origin("https://x.com/path").is_err());
        assert!(parse_origin("ftp://x.com").is_err());
    }

    #[test]
    fn same_origin_paths() {
        for ok in ["/", "/login", "/a?b=c"] {
            assert!(is_same_origin_path(ok), "{ok}");
        }
        for bad in [
            "//evil.com",
            "/\\evil.com",
            "https://evil.com",
            "login",
            "/a\r\nb",
        ] {
            assert!(!is_same_origin_path(bad), "{bad}");
        }
    }
}
