//! The file model: what `rotagate.toml` may say, as serde structs. Unknown keys are
//! refused. Values that need checking beyond their TOML type are kept as
//! [`Spanned`] so the validation in [`super::validate`] can point at them.

use serde::Deserialize;
use toml::Spanned;

/// A string value with its position in the file.
pub type S = Spanned<String>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[listen]`.
    #[serde(default)]
    pub listen: ListenFile,
    /// `[upstream]`: the default upstream.
    pub upstream: Spanned<UpstreamFile>,
    /// `[upstreams.NAME]`: further upstreams that routes choose by name.
    #[serde(default)]
    pub upstreams: std::collections::BTreeMap<String, Spanned<UpstreamFile>>,
    /// `[admin]`.
    pub admin: Option<AdminFile>,
    /// `[nextjs]`.
    #[serde(default)]
    pub nextjs: NextFile,
    /// `[session]`.
    pub session: Option<SessionFile>,
    /// `[logout]`.
    #[serde(default)]
    pub logout: LogoutFile,
    /// `[csrf]`.
    #[serde(default)]
    pub csrf: CsrfFile,
    /// `[identity]`.
    #[serde(default)]
    pub identity: IdentityFile,
    /// `[log]`.
    #[serde(default)]
    pub log: LogFile,
    /// `[[route]]`.
    #[serde(default)]
    pub route: Vec<RouteFile>,
}

/// `[listen]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenFile {
    /// `address`.
    pub address: Option<S>,
    /// `public_origin`.
    pub public_origin: Option<S>,
    /// `trusted_proxies`.
    #[serde(default)]
    pub trusted_proxies: Vec<S>,
    /// `max_header_bytes`.
    pub max_header_bytes: Option<Spanned<i64>>,
    /// `h2c`.
    pub h2c: Option<bool>,
    /// `threads`.
    pub threads: Option<Spanned<i64>>,
    /// `allowed_hosts`.
    #[serde(default)]
    pub allowed_hosts: Vec<S>,
    /// `path_strictness`.
    pub path_strictness: Option<S>,
    /// `case_insensitive_paths`.
    pub case_insensitive_paths: Option<bool>,
    // connection limits (issue 9, point 18)
    /// `header_timeout`.
    pub header_timeout: Option<S>,
    /// `keepalive_timeout`.
    pub keepalive_timeout: Option<S>,
    /// `body_timeout`.
    pub body_timeout: Option<S>,
    /// `max_connections`.
    pub max_connections: Option<Spanned<i64>>,
    /// `h2_max_concurrent_streams`.
    pub h2_max_concurrent_streams: Option<Spanned<i64>>,
    /// `upgrade_socket`.
    pub upgrade_socket: Option<S>,
    /// `[listen.tls]`.
    pub tls: Option<Spanned<TlsFile>>,
}

/// `[listen.tls]`: the TLS listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// `address`.
    pub address: S,
    /// `redirect_http`.
    pub redirect_http: Option<bool>,
    /// `hsts`.
    pub hsts: Option<S>,
    /// `[[listen.tls.certificates]]`.
    #[serde(default)]
    pub certificates: Vec<Spanned<TlsCertFile>>,
}

/// One `[[listen.tls.certificates]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCertFile {
    /// `cert`: the PEM chain (`file:`/`env:` reference).
    pub cert: S,
    /// `key`: the PEM private key (`file:`/`env:` reference).
    pub key: S,
    /// `names`.
    pub names: Option<Vec<S>>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// `access`.
    pub access: Option<bool>,
}

/// `[upstream]` and each `[upstreams.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    /// `url`: one address.
    pub url: Option<S>,
    /// `urls`: several addresses of one app, chosen in turn.
    pub urls: Option<Spanned<Vec<S>>>,
    /// `ca`: `file:` reference to a PEM CA bundle for `https://` URLs.
    pub ca: Option<S>,
    /// `eject_for`: how long an address that refused a connection is skipped.
    pub eject_for: Option<S>,
    /// `health_path`: the path active health checks request.
    pub health_path: Option<S>,
    /// `health_interval`.
    pub health_interval: Option<S>,
    /// `health_timeout`.
    pub health_timeout: Option<S>,
    /// `healthy_threshold`.
    pub healthy_threshold: Option<Spanned<i64>>,
    /// `unhealthy_threshold`.
    pub unhealthy_threshold: Option<Spanned<i64>>,
    /// `connect_timeout`.
    pub connect_timeout: Option<S>,
    /// `read_timeout`.
    pub read_timeout: Option<S>,
    /// `write_timeout`.
    pub write_timeout: Option<S>,
    /// `idle_timeout`.
    pub idle_timeout: Option<S>,
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// `address`.
    pub address: S,
    /// `token`: bearer token for the sessions API (`env:`/`file:` reference).
    pub token: Option<S>,
}

/// `[nextjs]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextFile {
    /// `base_path`.
    pub base_path: Option<S>,
    /// `locales`.
    #[serde(default)]
    pub locales: Vec<String>,
    /// `server_reference_manifest`.
    pub server_reference_manifest: Option<S>,
    /// `unknown_actions`.
    pub unknown_actions: Option<S>,
    /// `default_locale`.
    pub default_locale: Option<S>,
}

/// `[identity]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityFile {
    /// `subject_header`.
    pub subject_header: Option<S>,
    /// `claim_headers`.
    #[serde(default)]
    pub claim_headers: std::collections::BTreeMap<String, String>,
}

/// `[session]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFile {
    /// `mode`.
    pub mode: Option<S>,
    /// `rotate_every`.
    pub rotate_every: Option<S>,
    /// `absolute_timeout`.
    pub absolute_timeout: Option<S>,
    /// `idle_timeout`.
    pub idle_timeout: Option<S>,
    /// `leeway`.
    pub leeway: Option<S>,
    /// `slack` (vault mode).
    pub slack: Option<S>,
    /// `store` (vault mode).
    pub store: Option<S>,
    /// `store_path` (vault mode, embedded store).
    pub store_path: Option<S>,
    /// `store_username` (Redis store): an `env:`/`file:` reference.
    pub store_username: Option<S>,
    /// `store_password` (Redis store): an `env:`/`file:` reference.
    pub store_password: Option<S>,
    /// `store_ca` (Redis store over TLS): `file:` reference to a PEM CA bundle.
    pub store_ca: Option<S>,
    /// `store_sentinel_password` (Redis Sentinel): an `env:`/`file:` reference.
    pub store_sentinel_password: Option<S>,
    /// `[session.reissue]`.
    pub reissue: Option<ReissueFile>,
    /// `[session.vault]`.
    pub vault: Option<Spanned<VaultFile>>,
}

impl SessionFile {
    /// The keys of the Redis store, by name (each applies to a Redis `store` only).
    pub fn redis_keys(&self) -> [(&'static str, &Option<S>); 4] {
        [
            ("store_username", &self.store_username),
            ("store_password", &self.store_password),
            ("store_ca", &self.store_ca),
            ("store_sentinel_password", &self.store_sentinel_password),
        ]
    }
}

/// `[session.vault]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultFile {
    /// `cookie`.
    pub cookie: Option<S>,
    /// `capture`.
    pub capture: Option<Spanned<Vec<S>>>,
    /// `secrets`.
    pub secrets: Option<Spanned<Vec<S>>>,
    /// `adopt_existing`.
    pub adopt_existing: Option<bool>,
}

/// `[session.reissue]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReissueFile {
    /// `cookie`.
    pub cookie: Option<S>,
    /// `format`.
    pub format: Option<S>,
    /// `path`.
    pub path: Option<S>,
    /// `domain`.
    pub domain: Option<S>,
    /// `secure`.
    pub secure: Option<bool>,
    /// `http_only`.
    pub http_only: Option<bool>,
    /// `same_site`.
    pub same_site: Option<S>,
    /// `chunk_size`.
    pub chunk_size: Option<Spanned<i64>>,
    /// `secrets`.
    #[serde(default)]
    pub secrets: Vec<S>,
    /// `[[session.reissue.keys]]`.
    #[serde(default)]
    pub keys: Vec<Spanned<KeyFile>>,
    /// `require_exp`.
    pub require_exp: Option<bool>,
    /// `issuer`.
    pub issuer: Option<S>,
    /// `audience`.
    pub audience: Option<S>,
}

/// One `[[session.reissue.keys]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// `kid`.
    pub kid: Option<String>,
    /// `alg`.
    pub alg: S,
    /// `secret`.
    pub secret: Option<S>,
    /// `private_key`.
    pub private_key: Option<S>,
    /// `public_key`.
    pub public_key: Option<S>,
}

/// `[logout]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogoutFile {
    /// `login_url`.
    pub login_url: Option<S>,
    /// `return_to_param`.
    pub return_to_param: Option<S>,
    /// `endpoint`.
    pub endpoint: Option<S>,
    /// `allow_get`.
    pub allow_get: Option<bool>,
    /// `after_logout`.
    pub after_logout: Option<S>,
    /// `clear_cookies`.
    #[serde(default)]
    pub clear_cookies: Vec<Spanned<ClearCookieFile>>,
    /// `clear_site_data`.
    pub clear_site_data: Option<bool>,
    /// `loop_max`.
    pub loop_max: Option<u32>,
    /// `loop_window`.
    pub loop_window: Option<S>,
}

/// A `clear_cookies` entry: a name, or `{ name, domain, path }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ClearCookieFile {
    /// `"name"`.
    Name(String),
    /// `{ name, domain, path }`.
    Full(ClearCookieTable),
}

/// `{ name, domain, path }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearCookieTable {
    /// `name`.
    pub name: String,
    /// `domain`.
    pub domain: Option<String>,
    /// `path`.
    pub path: Option<String>,
}

/// `[csrf]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsrfFile {
    /// `allowed_origins`.
    #[serde(default)]
    pub allowed_origins: Vec<S>,
    /// `require_origin`.
    pub require_origin: Option<bool>,
    /// `allow_same_site`.
    pub allow_same_site: Option<bool>,
}

/// One `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// `name`.
    pub name: Option<String>,
    /// `match`.
    #[serde(rename = "match")]
    pub matcher: Spanned<MatchFile>,
    /// `methods`.
    #[serde(default)]
    pub methods: Vec<S>,
    /// `hosts`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `bypass`.
    pub bypass: Option<Spanned<bool>>,
    /// `require`.
    pub require: Option<Spanned<RequireFile>>,
    /// `on_deny`.
    pub on_deny: Option<Spanned<OnDenyFile>>,
    /// `on_401`.
    pub on_401: Option<S>,
    /// `on_403`.
    pub on_403: Option<S>,
    /// `upstream`: the name of an `[upstreams.NAME]` (default: `[upstream]`).
    pub upstream: Option<S>,
}

/// `match`: one item or a list, as Next's `config.matcher`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MatchFile {
    /// A single item.
    One(MatchItem),
    /// A list.
    Many(Vec<MatchItem>),
}

/// One matcher: a source string or `{ source, has, missing }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MatchItem {
    /// `"/path/:p*"`.
    Source(String),
    /// `{ source, has, missing }`.
    Object(MatchObject),
}

/// `{ source, has, missing }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchObject {
    /// `source`.
    pub source: String,
    /// `has`.
    #[serde(default)]
    pub has: Vec<ConditionFile>,
    /// `missing`.
    #[serde(default)]
    pub missing: Vec<ConditionFile>,
    /// `locale`: only `false` is accepted (as in Next): the source gets no i18n locale
    /// prefix.
    pub locale: Option<bool>,
}

/// A `has`/`missing` item.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionFile {
    /// `type`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `key`.
    pub key: Option<String>,
    /// `value`.
    pub value: Option<String>,
}

/// `require`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequireFile {
    /// `session`.
    pub session: Option<bool>,
    /// `claims`.
    pub claims: Option<toml::Table>,
}

/// `on_deny`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnDenyFile {
    /// `status`.
    pub status: Option<u16>,
    /// `redirect`.
    pub redirect: Option<String>,
}
