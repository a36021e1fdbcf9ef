//! The validated runtime configuration: the only configuration the proxy reads while it
//! runs. Built from the TOML file model by [`crate::config::load`] / [`crate::config::parse`];
//! every value here has already been checked, defaults applied and secrets resolved.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::matcher::RuleSet;
use crate::secret::Secret;

/// Default proxy listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Where the default `listen.upgrade_socket` lives: `/tmp/rotagate-<euid>/`, a directory
/// of our own with mode 0700 (tmux's pattern), so no other local user can put a socket
/// or a symlink at the path (a world-writable `/tmp/…sock` let one redirect or squat
/// upgrades). Several rotagate processes of one user on a host each need their own.
pub const DEFAULT_UPGRADE_DIR_PREFIX: &str = "/tmp/rotagate-";
/// The socket file's name in the default directory.
pub const DEFAULT_UPGRADE_SOCKET_NAME: &str = "upgrade.sock";

/// The default `listen.upgrade_socket` of this process: `/tmp/rotagate-<euid>/upgrade.sock`.
pub fn default_upgrade_socket() -> std::path::PathBuf {
    default_upgrade_dir().join(DEFAULT_UPGRADE_SOCKET_NAME)
}

/// The directory of [`default_upgrade_socket`]: `/tmp/rotagate-<euid>`.
pub fn default_upgrade_dir() -> std::path::PathBuf {
    format!(
        "{DEFAULT_UPGRADE_DIR_PREFIX}{}",
        rustix::process::geteuid().as_raw()
    )
    .into()
}
/// Longest Unix socket path (`sun_path` holds 108 bytes with the closing NUL).
pub const MAX_UNIX_SOCKET_PATH: usize = 107;
/// Default limit of a request header block, in bytes (larger → 431).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Default limit for reading one request's whole header block, from its first byte
/// (from the connection's accept for its first request).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit for an idle keep-alive connection between two requests.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default limit between two reads of a request body (and two writes of a response).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Default limit of client connections served at once; more wait in the accept backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default limit of concurrent HTTP/2 streams per connection (`SETTINGS_MAX_CONCURRENT_STREAMS`).
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Default upstream connect timeout (→ 502 when exceeded).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default upstream read timeout (→ 504 when exceeded).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default upstream write timeout.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long idle upstream keep-alive connections are kept.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this configuration was read from (for messages only).
    pub source: PathBuf,
    /// `[listen]`.
    pub listen: Listen,
    /// `[upstream]` first (index 0, named [`DEFAULT_UPSTREAM`]), then each
    /// `[upstreams.NAME]` in name order; [`Route::upstream`] indexes this.
    pub upstreams: Vec<Upstream>,
    /// `[admin]`; `None` when the section is absent (no admin listener).
    pub admin: Option<Admin>,
    /// `[nextjs]`.
    pub nextjs: NextJs,
    /// `[[route]]` in file order; index `i` here is rule `i` of [`Config::rules`].
    pub routes: Vec<Route>,
    /// The compiled matchers of `routes`, same order.
    pub rules: RuleSet,
    /// `[session]`; `None` when absent (routes then do no session work).
    pub session: Option<Session>,
    /// `[logout]` (defaults when absent).
    pub logout: Logout,
    /// `[csrf]` (defaults when absent).
    pub csrf: Csrf,
    /// `[identity]`: headers that tell the upstream who the user is.
    pub identity: Identity,
    /// `[log]` (defaults when absent).
    pub log: Log,
    /// Warnings found while validating (rules that can never match, …), for `rotagate check`.
    pub warnings: Vec<String>,
    /// The files this configuration read besides its own file (`file:` references,
    /// the Server Action manifest), in the order read; watched for changes.
    pub files: Vec<PathBuf>,
}

impl Config {
    /// The default upstream, `[upstream]`: requests no route sends elsewhere go there.
    pub fn upstream(&self) -> &Upstream {
        &self.upstreams[0]
    }
}

/// `[log]`: what rotagate logs besides warnings and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Log {
    /// `access` (default true): one access line per request (method, path without its
    /// query, route, status, session outcome, duration).
    pub access: bool,
}

impl Default for Log {
    fn default() -> Self {
        Log { access: true }
    }
}

/// `[listen]`: the proxy's own listener.
#[derive(Debug, Clone)]
pub struct Listen {
    /// Address to bind (`address`, default [`DEFAULT_LISTEN`]).
    pub address: SocketAddr,
    /// `public_origin`, e.g. `https://app.example.com` (no path); used for redirects,
    /// `Secure` cookie decisions and same-origin checks. `None` when not configured.
    pub public_origin: Option<Origin>,
    /// `trusted_proxies`: peers whose `X-Forwarded-*` headers are honoured.
    pub trusted_proxies: Vec<IpNet>,
    /// `max_header_bytes` (default [`DEFAULT_MAX_HEADER_BYTES`]).
    pub max_header_bytes: usize,
    /// `h2c` (default true): accept HTTP/2 with prior knowledge over cleartext.
    pub h2c: bool,
    /// `threads`: worker threads serving connections (default: one per core).
    pub threads: usize,
    /// `allowed_hosts`: hosts besides the public origin's that requests may name
    /// (others get 421); only with `public_origin`. Empty by default.
    pub allowed_hosts: Vec<AllowedHost>,
    /// `path_strictness` (default [`PathStrictness::Strict`]).
    pub path_strictness: PathStrictness,
    /// `case_insensitive_paths` (default false): route patterns match paths in any
    /// letter case, for apps that serve paths case-insensitively (IIS, Express with
    /// its default router).
    pub case_insensitive_paths: bool,
    /// Time limits and counts that keep slow or greedy clients from holding the proxy.
    pub limits: ConnLimits,
    /// `upgrade_socket` (default [`default_upgrade_socket`]; relative to the config
    /// file's directory): the Unix socket where `rotagate run --upgrade` takes the
    /// listening sockets over from the running process (see [`crate::upgrade`]).
    pub upgrade_socket: std::path::PathBuf,
    /// `[listen.tls]`: the TLS listener; `None` when not configured.
    pub tls: Option<Tls>,
}

impl Listen {
    /// True when browsers reach this site over https: the public origin says so, or
    /// rotagate terminates TLS itself. Decides the `Secure` cookie defaults.
    pub fn https(&self) -> bool {
        self.tls.is_some()
            || self
                .public_origin
                .as_ref()
                .is_some_and(|o| o.scheme == "https")
    }
}

/// `[listen.tls]`: the TLS listener (see [`crate::tls`]).
#[derive(Debug, Clone)]
pub struct Tls {
    /// `address` to bind; read at start only.
    pub address: SocketAddr,
    /// `redirect_http` (default false): the plain listener answers only 308 to https.
    pub redirect_http: bool,
    /// `hsts`: the `Strict-Transport-Security` value of TLS responses, `None` for none.
    pub hsts: Option<String>,
    /// `[[listen.tls.certificates]]`, loaded and checked; the first is the default.
    pub certificates: std::sync::Arc<crate::tls::Certificates>,
}

/// `[listen]` connection limits (DESIGN §10 "bounded work per request").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// `header_timeout` (default [`DEFAULT_HEADER_TIMEOUT`]): one request's whole header
    /// block, counted from its first byte.
    pub header_timeout: Duration,
    /// `keepalive_timeout` (default [`DEFAULT_KEEPALIVE_TIMEOUT`]): idle time between
    /// requests (HTTP/1) or without streams (HTTP/2).
    pub keepalive_timeout: Duration,
    /// `body_timeout` (default [`DEFAULT_BODY_TIMEOUT`]): between two body reads from,
    /// or two writes to, the client.
    pub body_timeout: Duration,
    /// `max_connections` (default [`DEFAULT_MAX_CONNECTIONS`]); read at start only.
    pub max_connections: usize,
    /// `h2_max_concurrent_streams` (default [`DEFAULT_H2_MAX_CONCURRENT_STREAMS`]); read at
    /// start only.
    pub h2_max_concurrent_streams: u32,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
        }
    }
}

pub use crate::matcher::path::Strictness as PathStrictness;

/// One `listen.allowed_hosts` entry: `name`, `*.domain` (any subdomain, any depth, not
/// the domain itself) and an optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    /// Lower-case name without trailing dot; `*.example.com` for subdomains.
    pub name: String,
    /// The port, `None` for the public origin's default port (or none written).
    pub port: Option<u16>,
}

impl AllowedHost {
    /// True when a vetted host (`name` lower-case, `port` without the default) is this
    /// entry.
    pub fn matches(&self, name: &str, port: Option<u16>) -> bool {
        if port != self.port {
            return false;
        }
        match self.name.strip_prefix("*.") {
            Some(domain) => {
                name.len() > domain.len() + 1
                    && name.ends_with(domain)
                    && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
            }
            None => self.name == name,
        }
    }
}

/// A scheme://host[:port] origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: String,
    /// Lower-cased host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// Explicit port, `None` when it is the scheme's default.
    pub port: Option<u16>,
}

impl Origin {
    /// The serialised origin as browsers send it in `Origin` (`https://app.example.com`).
    pub fn serialize(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(p) => format!("{}://{}:{}", self.scheme, host, p),
            None => format!("{}://{}", self.scheme, host),
        }
    }
}

/// The name of the default upstream (`[upstream]`) in metrics, `/config` and `explain`;
/// routes may also name it in `upstream = "default"`.
pub const DEFAULT_UPSTREAM: &str = "default";
/// Most addresses one upstream may list in `urls`.
pub const MAX_UPSTREAM_URLS: usize = 64;
/// Default `eject_for`: how long an address that failed to connect is skipped.
pub const DEFAULT_EJECT_FOR: Duration = Duration::from_secs(10);
/// Default `health_interval`: time between two probes of one address.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(10);
/// Default `health_timeout`: how long one probe may take (connect and answer).
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Default `healthy_threshold`: passed probes in a row that make an address healthy.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
/// Default `unhealthy_threshold`: failed probes in a row that make an address unhealthy.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;

/// `[upstream]` (the default upstream) or one `[upstreams.NAME]`: one app behind the
/// proxy, at one or several addresses.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// [`DEFAULT_UPSTREAM`] for `[upstream]`, else the `NAME` of `[upstreams.NAME]`.
    pub name: String,
    /// `url`, or each of `urls`, in file order (at least one).
    pub urls: Vec<UpstreamUrl>,
    /// Connect with TLS (`https://`; every URL of one upstream has the same scheme).
    pub tls: bool,
    /// `ca`: the DER certificates TLS connections trust instead of the system roots.
    pub ca: Option<Vec<Vec<u8>>>,
    /// `connect_timeout` (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// `read_timeout` (default [`DEFAULT_READ_TIMEOUT`]).
    pub read_timeout: Duration,
    /// `write_timeout` (default [`DEFAULT_WRITE_TIMEOUT`]).
    pub write_timeout: Duration,
    /// `idle_timeout` for pooled keep-alive connections (default [`DEFAULT_UPSTREAM_IDLE_TIMEOUT`]).
    pub idle_timeout: Duration,
    /// `eject_for` (default [`DEFAULT_EJECT_FOR`]): an address that failed to connect is
    /// skipped this long (only when the upstream has another address to use).
    pub eject_for: Duration,
    /// Active health checks, when `health_path` is set.
    pub health: Option<HealthCheck>,
}

/// One address of an upstream, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// The URL as written (e.g. `http://127.0.0.1:3000`), for messages.
    pub url: String,
    /// `host:port` to connect to (resolved once per configuration load).
    pub authority: String,
    /// The host (IPv6 without brackets): the TLS server name and the probes' `Host`.
    pub host: String,
}

/// Active health checks of an upstream's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `health_path`: requested with `GET`; a 2xx or 3xx answer passes.
    pub path: String,
    /// `health_interval` (default [`DEFAULT_HEALTH_INTERVAL`]).
    pub interval: Duration,
    /// `health_timeout` (default [`DEFAULT_HEALTH_TIMEOUT`], at most the interval).
    pub timeout: Duration,
    /// `healthy_threshold` (default [`DEFAULT_HEALTHY_THRESHOLD`]).
    pub healthy_threshold: u32,
    /// `unhealthy_threshold` (default [`DEFAULT_UNHEALTHY_THRESHOLD`]).
    pub unhealthy_threshold: u32,
}

/// `[admin]`: health, readiness and metrics listener.
#[derive(Debug, Clone)]
pub struct Admin {
    /// `address` to bind, e.g. `127.0.0.1:9091`.
    pub address: SocketAddr,
    /// `token`: the bearer token of the sessions API (`/sessions`, `/sessions/revoke`);
    /// `None` turns that API off (404).
    pub token: Option<Secret>,
}

/// `[nextjs]`: facts about the Next.js app behind the proxy.
#[derive(Debug, Clone, Default)]
pub struct NextJs {
    /// `base_path` ("" or "/docs": starts with `/`, no trailing `/`).
    pub base_path: String,
    /// `locales` (i18n), empty when the app has none.
    pub locales: Vec<String>,
    /// `server_reference_manifest` path, if configured.
    pub server_reference_manifest: Option<PathBuf>,
    /// The manifest's action ids and the pages (entry names, e.g. `app/premium/page`)
    /// that define each. Its encryption key is never read into memory we keep.
    pub actions: Vec<(String, Vec<String>)>,
    /// `unknown_actions = "deny"`: refuse action ids the manifest does not list.
    pub deny_unknown_actions: bool,
    /// `default_locale` (Next's `i18n.defaultLocale`; default: the first of `locales`,
    /// empty without locales): what a path without a locale is matched with.
    pub default_locale: String,
    /// The owners of each action in `actions`, resolved against the routes.
    pub action_index: crate::actions::ActionIndex,
}

/// One `[[route]]`.
#[derive(Debug, Clone)]
pub struct Route {
    /// `name` (default `route[<index>]`).
    pub name: String,
    /// `bypass = true`: no session work at all.
    pub bypass: bool,
    /// `on_401` (default [`UpstreamStatusAction::Logout`] on session routes).
    pub on_401: UpstreamStatusAction,
    /// `on_403` (default [`UpstreamStatusAction::Pass`]).
    pub on_403: UpstreamStatusAction,
    /// `require = { session = …, claims = … }`, if any.
    pub require: Option<Require>,
    /// `on_deny`: what a request that fails `require.claims` gets (default 403).
    pub on_deny: OnDeny,
    /// `upstream`: index into [`Config::upstreams`] (default 0, `[upstream]`).
    pub upstream: usize,
}

impl Route {
    /// True when the route does session work (everything but `bypass = true`).
    pub fn handles_sessions(&self) -> bool {
        !self.bypass
    }
}

/// What to do with an upstream 401/403 on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamStatusAction {
    /// Rewrite into the logout answer.
    Logout,
    /// Forward untouched.
    Pass,
}

/// `require` of a route.
#[derive(Debug, Clone, Default)]
pub struct Require {
    /// `session = true`: a valid session is needed.
    pub session: bool,
    /// `claims = { … }`: each predicate must hold (implies `session`).
    pub claims: Vec<ClaimPredicate>,
}

/// One claim predicate: a dotted path into the claims and a test.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimPredicate {
    /// The claim path split at dots (`"org.tier"` → `["org", "tier"]`).
    pub path: Vec<String>,
    /// The test applied to the value found there.
    pub test: ClaimTest,
}

/// The tests a claim predicate can make.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimTest {
    /// The claim equals this JSON value (`has_access = true`).
    Equals(serde_json::Value),
    /// The claim equals one of these (`{ one_of = [...] }`).
    OneOf(Vec<serde_json::Value>),
    /// The claim is an array containing this (`{ contains = "admin" }`).
    Contains(serde_json::Value),
    /// The claim is present (`{ present = true }`) or absent (`{ present = false }`).
    Present(bool),
}

/// `on_deny` of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnDeny {
    /// Answer with this status (`{ status = 403 }`).
    Status(u16),
    /// Redirect to this same-origin path (`{ redirect = "/pricing" }`).
    Redirect(String),
}

/// `[session]`: all session timing, and the mode.
#[derive(Debug, Clone)]
pub struct Session {
    /// `rotate_every` (default 5m).
    pub rotate_every: Duration,
    /// `absolute_timeout` (default per format: jwt 12h, authjs 30d).
    pub absolute_timeout: Duration,
    /// `idle_timeout` (default off for reissue formats).
    pub idle_timeout: Option<Duration>,
    /// `leeway` for `exp`/`nbf` checks (default 30s for jwt, 15s for the Auth.js formats).
    pub leeway: Duration,
    /// The mode and its settings.
    pub mode: SessionMode,
}

/// `[session] mode`.
#[derive(Debug, Clone)]
pub enum SessionMode {
    /// `mode = "reissue"` with `[session.reissue]`.
    Reissue(Reissue),
    /// `mode = "vault"` with `[session.vault]`.
    Vault(Vault),
}

impl SessionMode {
    /// The reissue settings, when that is the mode.
    pub fn reissue(&self) -> Option<&Reissue> {
        match self {
            SessionMode::Reissue(r) => Some(r),
            SessionMode::Vault(_) => None,
        }
    }

    /// The vault settings, when that is the mode.
    pub fn vault(&self) -> Option<&Vault> {
        match self {
            SessionMode::Vault(v) => Some(v),
            SessionMode::Reissue(_) => None,
        }
    }
}

/// Default `slack` of vault mode: how long a predecessor handle stays good after its
/// successor was first presented.
pub const DEFAULT_SLACK: Duration = Duration::from_secs(10);
/// Largest `slack` accepted.
pub const MAX_SLACK: Duration = Duration::from_secs(60);
/// Default `idle_timeout` in vault mode.
pub const DEFAULT_VAULT_IDLE: Duration = Duration::from_secs(30 * 60);
/// Default `absolute_timeout` in vault mode.
pub const DEFAULT_VAULT_ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
/// Default `store_path` of the embedded store.
pub const DEFAULT_STORE_PATH: &str = "/var/lib/rotagate/sessions.redb";
/// Default captured cookie names.
pub const DEFAULT_CAPTURE: &str = "sid";
/// Default vault secret reference.
pub const DEFAULT_VAULT_SECRET: &str = "env:ROTAGATE_VAULT_KEY";

/// `[session] mode = "vault"`: the browser holds only a rotating handle; the app's own
/// cookies are kept server-side (DESIGN §4.2).
#[derive(Debug, Clone)]
pub struct Vault {
    /// `[session.vault] cookie`: the handle cookie (default `__Host-Http-rg` when the
    /// public origin is https, else `rg`).
    pub cookie: String,
    /// Attributes of the handle cookie: `HttpOnly; Path=/; SameSite=Lax`, `Secure` on
    /// https.
    pub attributes: CookieAttributes,
    /// `capture`: the app's cookies kept server-side (default `["sid"]`).
    pub capture: Vec<String>,
    /// `secrets`: first is active, all verify; each ≥ 32 bytes.
    pub secrets: Vec<Secret>,
    /// `adopt_existing` (default true): a browser holding a captured cookie but no
    /// handle (logged in before vault mode) is adopted once into a new family.
    pub adopt_existing: bool,
    /// `[session] slack` (default [`DEFAULT_SLACK`], at most [`MAX_SLACK`]).
    pub slack: Duration,
    /// `[session] store` / `store_path`.
    pub store: StoreSpec,
}

/// Where vault families are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// `store = "memory"`: in this process only (lost on restart).
    Memory,
    /// `store = "embedded"` (default): one redb file at this absolute path.
    Embedded(PathBuf),
    /// `store = "redis://…"` / `"rediss://…"` with `store_username` / `store_password`.
    Redis(crate::store::redis::RedisConfig),
}

/// `[session.reissue]`: the app's own token, re-minted.
#[derive(Debug, Clone)]
pub struct Reissue {
    /// `cookie` name (default per format: jwt `session`, authjs `authjs.session-token`,
    /// authjs-v4 `next-auth.session-token`).
    pub cookie: String,
    /// `format`.
    pub format: TokenFormat,
    /// Cookie attributes for re-issued cookies.
    pub attributes: CookieAttributes,
    /// `chunk_size` (default 3936; 3933 for authjs-v4).
    pub chunk_size: usize,
    /// `[[session.reissue.keys]]` (format = "jwt"): first signs, all verify.
    pub keys: Vec<KeySpec>,
    /// `secrets = [...]` (authjs formats): first encrypts, all decrypt.
    pub secrets: Vec<Secret>,
    /// `require_exp` (default true): a token without `exp` is not a session; with
    /// `false` it is, and its re-mint carries no `exp` either (a browser-session cookie).
    pub require_exp: bool,
    /// `issuer`: when set, a token's `iss` must equal it.
    pub issuer: Option<String>,
    /// `audience`: when set, a token's `aud` (string or array) must name it.
    pub audience: Option<String>,
}

/// `format` of re-issued tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFormat {
    /// JWS compact.
    Jwt,
    /// Auth.js v5 JWE.
    Authjs,
    /// next-auth v4 JWE.
    AuthjsV4,
}

/// Attributes written on re-issued session cookies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieAttributes {
    /// `path` (default `/`).
    pub path: String,
    /// `domain` (default none: host-only).
    pub domain: Option<String>,
    /// `secure` (default: true when the cookie name starts `__Secure-`/`__Host-` or the
    /// public origin is https).
    pub secure: bool,
    /// `http_only` (default true).
    pub http_only: bool,
    /// `same_site` (default Lax).
    pub same_site: SameSite,
}

/// `SameSite` attribute values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// `SameSite=Strict`.
    Strict,
    /// `SameSite=Lax`.
    Lax,
    /// `SameSite=None` (needs `Secure`).
    None,
}

/// One `[[session.reissue.keys]]` entry, secrets resolved.
#[derive(Debug, Clone)]
pub struct KeySpec {
    /// `kid`, if given.
    pub kid: Option<String>,
    /// `alg`, pinned: HS256, HS384, HS512, RS256, PS256, ES256, EdDSA.
    pub alg: String,
    /// `secret` (HS*), resolved from its `env:`/`file:` reference.
    pub secret: Option<Secret>,
    /// `private_key` PEM contents (asymmetric algs; signs and verifies).
    pub private_key_pem: Option<Secret>,
    /// `public_key` PEM contents (asymmetric algs; verifies only).
    pub public_key_pem: Option<Vec<u8>>,
    /// Where this key was configured, e.g. `session.reissue.keys[1]`, for messages.
    pub origin: String,
}

/// `[logout]`.
#[derive(Debug, Clone)]
pub struct Logout {
    /// `login_url` (default `/login`).
    pub login_url: String,
    /// `return_to_param` (default `callbackUrl`).
    pub return_to_param: String,
    /// `endpoint` (default `/.rotagate/logout`).
    pub endpoint: String,
    /// `allow_get` (default false): the endpoint also answers GET.
    pub allow_get: bool,
    /// `after_logout` (default `/`).
    pub after_logout: String,
    /// `clear_cookies`: extra cookies to delete on logout.
    pub clear_cookies: Vec<ClearCookie>,
    /// `clear_site_data` (default false): add `Clear-Site-Data: "cookies"`.
    pub clear_site_data: bool,
    /// `loop_max` (default 3) redirects to login within `loop_window` (default 30s)
    /// before the loop breaker answers with an error page.
    pub loop_max: u32,
    /// `loop_window` (default 30s).
    pub loop_window: Duration,
}

/// One `clear_cookies` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClearCookie {
    /// Cookie name.
    pub name: String,
    /// `domain`, if the cookie was set with one.
    pub domain: Option<String>,
    /// `path` (default `/`).
    pub path: String,
}

/// `[csrf]`.
#[derive(Debug, Clone, Default)]
pub struct Csrf {
    /// `allowed_origins`: extra origins accepted in `Origin`.
    pub allowed_origins: Vec<Origin>,
    /// `require_origin` (default false): refuse unsafe requests with neither
    /// `Sec-Fetch-Site` nor `Origin`.
    pub require_origin: bool,
    /// `allow_same_site` (default false): `Sec-Fetch-Site: same-site` passes too
    /// (sibling subdomains); otherwise only `same-origin` passes without an `Origin`
    /// check.
    pub allow_same_site: bool,
}

/// `[identity]`: identity headers sent upstream for verified sessions (always stripped
/// from client requests first).
#[derive(Debug, Clone)]
pub struct Identity {
    /// `subject_header` (default `x-rotagate-subject`): carries the `sub` claim.
    pub subject_header: String,
    /// `claim_headers = { "x-user-email" = "email" }`: header name → dotted claim path.
    pub claim_headers: Vec<(String, Vec<String>)>,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            subject_header: "x-rotagate-subject".into(),
            claim_headers: Vec::new(),
        }
    }
}
