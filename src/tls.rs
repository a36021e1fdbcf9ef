//! TLS termination (`[listen.tls]`): loading certificates, choosing one by SNI, the
//! rustls server configuration, and the decisions that depend on a request having
//! arrived over TLS (its scheme, the plain listener's redirect, HSTS).
//!
//! The certificates live in the runtime configuration, so a reload swaps them: the
//! resolver reads the configuration in force at each handshake, and connections already
//! established keep the keys they were made with.

use std::fmt;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::{AllowedHost, Origin};
use crate::hygiene::RequestHost;
use crate::state::Shared;

/// The ALPN protocols offered, in preference order: HTTP/2 for browsers, then HTTP/1.1.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// One certificate chain with its key and the names it answers for.
#[derive(Clone)]
pub struct Certificate {
    /// Lower-case DNS names, `*.domain` for a wildcard (one label).
    pub names: Vec<String>,
    key: Arc<CertifiedKey>,
}

impl fmt::Debug for Certificate {
    // the key never reaches a log, not even its type
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("names", &self.names)
            .field("chain_len", &self.key.cert.len())
            .finish_non_exhaustive()
    }
}

/// The certificates of `[[listen.tls.certificates]]`, in file order; the first is the
/// default (no SNI, or a name no certificate has).
#[derive(Debug, Clone, Default)]
pub struct Certificates {
    /// In file order.
    pub list: Vec<Certificate>,
}

impl Certificates {
    /// The certificate for the SNI name `sni`: one naming it exactly, else one whose
    /// wildcard covers it, else the first.
    pub fn pick(&self, sni: Option<&str>) -> Option<&Certificate> {
        if let Some(name) = sni.map(normalise_name) {
            let exact = self.list.iter().find(|c| c.names.contains(&name));
            let wild = || {
                self.list
                    .iter()
                    .find(|c| c.names.iter().any(|n| wildcard_matches(n, &name)))
            };
            if let Some(c) = exact.or_else(wild) {
                return Some(c);
            }
        }
        self.list.first()
    }
}

/// Lower case, without a trailing dot.
fn normalise_name(n: &str) -> String {
    n.trim_end_matches('.').to_ascii_lowercase()
}

/// `*.example.com` covers `a.example.com`, not `example.com` nor `a.b.example.com`
/// (RFC 6125 §6.4.3: the wildcard is one whole label).
pub fn wildcard_matches(pattern: &str, name: &str) -> bool {
    let Some(domain) = pattern.strip_prefix("*.") else {
        return false;
    };
    match name.split_once('.') {
        Some((label, rest)) => !label.is_empty() && rest == domain,
        None => false,
    }
}

/// True for a name `names` may list: DNS labels of letters, digits and `-`, with an
/// optional leading `*.` wildcard label.
pub fn is_cert_name(n: &str) -> bool {
    let body = n.strip_prefix("*.").unwrap_or(n);
    !body.is_empty()
        && body.len() <= 253
        && body.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Why a certificate or key could not be used. The messages name no key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// No `BEGIN CERTIFICATE` block.
    #[error("expected a PEM certificate chain (-----BEGIN CERTIFICATE-----), found none")]
    NoCertificate,
    /// A PEM block that does not decode.
    #[error("the PEM certificate chain does not decode")]
    BadPem,
    /// The leaf does not parse as X.509.
    #[error("the first certificate is not a valid X.509 certificate")]
    BadCertificate,
    /// No private key block.
    #[error("expected a PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY), found none")]
    NoKey,
    /// A private key block that does not decode.
    #[error("the PEM private key does not decode")]
    BadKeyPem,
    /// A key rustls (ring) cannot sign with.
    #[error("the private key is not a usable RSA, ECDSA (P-256, P-384) or Ed25519 key")]
    UnsupportedKey,
    /// The key is not the certificate's.
    #[error("the private key does not match the certificate (the first certificate of the chain must be the one the key belongs to)")]
    KeyMismatch,
}

/// The crypto provider of every TLS listener: ring (no OpenSSL, no aws-lc).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM chain and key and checks that they belong together. `names` are the
/// configured names; `None` takes the leaf's SAN DNS names.
pub fn load(
    cert_pem: &[u8],
    key_pem: &[u8],
    names: Option<Vec<String>>,
) -> Result<Certificate, CertError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| CertError::BadPem)?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::NoCertificate);
    };
    let leaf_names = san_names(leaf)?;
    let key = match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(k) => k,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => return Err(CertError::NoKey),
        Err(_) => return Err(CertError::BadKeyPem),
    };
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|_| CertError::UnsupportedKey)?;
    let key = CertifiedKey::new(chain, signing);
    match key.keys_match() {
        Ok(()) => {}
        // ring's keys always know their public key; an unknown one is not refused
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => return Err(CertError::KeyMismatch),
    }
    let names = names
        .unwrap_or(leaf_names)
        .iter()
        .map(|n| normalise_name(n))
        .collect();
    Ok(Certificate {
        names,
        key: Arc::new(key),
    })
}

/// The DNS names of the leaf's subject alternative names (wildcards included).
fn san_names(leaf: &CertificateDer<'_>) -> Result<Vec<String>, CertError> {
    let cert = webpki::EndEntityCert::try_from(leaf).map_err(|_| CertError::BadCertificate)?;
    Ok(cert.valid_dns_names().map(normalise_name).collect())
}

/// Chooses the certificate of each handshake from the configuration in force.
pub struct Resolver {
    shared: Arc<Shared>,
}

impl Resolver {
    /// A resolver over the configuration `shared` holds now and after each reload.
    pub fn new(shared: Arc<Shared>) -> Resolver {
        Resolver { shared }
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let rt = self.shared.current();
        // a reload that removes [listen.tls] is refused (state::Shared::reload); were
        // it not, the handshake would fail here rather than answer with stale keys
        let tls = rt.config.listen.tls.as_ref()?;
        tls.certificates
            .pick(hello.server_name())
            .map(|c| c.key.clone())
    }
}

/// The rustls configuration of the TLS listener: TLS 1.2 and 1.3 only, no client
/// certificates, ALPN [`ALPN`], certificates from `resolver`.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// The scheme a request arrived with as the app should see it (`X-Forwarded-Proto`):
/// `https` over TLS. On the plain listener: `http` when rotagate has a TLS listener of
/// its own (then the plain one is plain HTTP, whatever the public origin says: an app
/// enforcing https must see plaintext as plaintext); otherwise the public origin's (a
/// TLS terminator in front of rotagate), else `http`.
pub fn own_proto(tls: bool, has_tls_listener: bool, public_origin: Option<&Origin>) -> &str {
    if tls {
        return "https";
    }
    if has_tls_listener {
        return "http";
    }
    public_origin.map_or("http", |o| o.scheme.as_str())
}

/// The origin same-origin checks compare with: the public origin when configured;
/// else, over TLS, `https://` + the Host asked for (`host`: `name[:port]`); else none
/// (the check then accepts the Host's own origin under either scheme).
pub fn site_origin<'a>(
    tls: bool,
    public_origin: Option<&'a Origin>,
    host: Option<&str>,
) -> Option<std::borrow::Cow<'a, Origin>> {
    if let Some(o) = public_origin {
        return Some(std::borrow::Cow::Borrowed(o));
    }
    if !tls {
        return None;
    }
    let o = crate::config::parse_origin(&format!("https://{}", host?)).ok()?;
    Some(std::borrow::Cow::Owned(o))
}

/// Where the plain listener sends a request when `redirect_http` is on:
/// `https://` + the public origin's host and port + `path_and_query`. The request's
/// host is used only when it is one of the allowed hosts (with that entry's port):
/// never a host the client made up, so the redirect cannot point elsewhere.
pub fn https_redirect(
    host: Option<&RequestHost>,
    path_and_query: &str,
    public_origin: &Origin,
    allowed_hosts: &[AllowedHost],
) -> String {
    let allowed = host.and_then(|h| {
        let name = h.name.as_str();
        if name == public_origin.host {
            return None; // the public origin itself, with its own port
        }
        allowed_hosts
            .iter()
            .find(|a| a.matches(name, a.port))
            .map(|a| (name.to_string(), a.port))
    });
    let origin = match allowed {
        Some((host, port)) => Origin {
            scheme: "https".into(),
            host,
            port: port.filter(|p| *p != 443),
        },
        None => Origin {
            scheme: "https".into(),
            host: public_origin.host.clone(),
            port: public_origin.port.filter(|p| *p != 443),
        },
    };
    let pq = if path_and_query.starts_with('/') {
        path_and_query
    } else {
        "/"
    };
    format!("{}{pq}", origin.serialize())
}

/// The `Strict-Transport-Security` value to add to a response, if any: only over TLS
/// (RFC 6797 §7.2: a browser ignores it over plain HTTP, and it must not be sent
/// there), and not when the app set its own (the app knows its subdomains).
pub fn hsts_to_add(tls: bool, configured: Option<&str>, app_set: bool) -> Option<&str> {
    if tls && !app_set {
        configured
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(host: &str, port: Option<u16>) -> Origin {
        Origin {
            scheme: "https".into(),
            host: host.into(),
            port,
        }
    }

    fn host(name: &str, port: Option<u16>) -> RequestHost {
        RequestHost {
            name: name.into(),
            port,
        }
    }

    #[test]
    fn wildcards_cover_one_label() {
        assert!(wildcard_matches("*.example.com", "a.example.com"));
        assert!(!wildcard_matches("*.example.com", "example.com"));
        assert!(!wildcard_matches("*.example.com", "a.b.example.com"));
        assert!(!wildcard_matches("*.example.com", ".example.com"));
        assert!(!wildcard_matches("example.com", "example.com"));
    }

    #[test]
    fn cert_names() {
        assert!(is_cert_name("app.example.com"));
        assert!(is_cert_name("*.example.com"));
        assert!(is_cert_name("localhost"));
        assert!(!is_cert_name("*"));
        assert!(!is_cert_name("a.*.com"));
        assert!(!is_cert_name("-a.com"));
        assert!(!is_cert_name("a..com"));
        assert!(!is_cert_name("https://a.com"));
        assert!(!is_cert_name(""));
    }

    #[test]
    fn proto_follows_the_connection_first() {
        let https = origin("app.example.com", None);
        let http = Origin {
            scheme: "http".into(),
            ..https.clone()
        };
        assert_eq!(own_proto(true, true, None), "https");
        assert_eq!(own_proto(true, true, Some(&http)), "https");
        assert_eq!(own_proto(false, false, Some(&https)), "https");
        assert_eq!(own_proto(false, false, Some(&http)), "http");
        assert_eq!(own_proto(false, false, None), "http");
        // rotagate terminates TLS itself: its plain listener is plain
        assert_eq!(own_proto(false, true, Some(&https)), "http");
    }

    #[test]
    fn the_site_origin_over_tls_is_https() {
        let o = origin("app.example.com", None);
        assert_eq!(
            site_origin(true, Some(&o), Some("x.test")).as_deref(),
            Some(&o)
        );
        assert_eq!(site_origin(false, Some(&o), None).as_deref(), Some(&o));
        assert_eq!(site_origin(false, None, Some("x.test")), None);
        assert_eq!(
            site_origin(true, None, Some("x.test:8443")).map(|o| o.serialize()),
            Some("https://x.test:8443".to_string())
        );
        assert_eq!(site_origin(true, None, None), None);
    }

    #[test]
    fn redirects_never_reflect_a_foreign_host() {
        let o = origin("app.example.com", Some(8443));
        let allowed = vec![
            AllowedHost {
                name: "www.example.com".into(),
                port: None,
            },
            AllowedHost {
                name: "*.apps.example.com".into(),
                port: None,
            },
        ];
        let r = |h: Option<RequestHost>, pq: &str| https_redirect(h.as_ref(), pq, &o, &allowed);
        assert_eq!(
            r(Some(host("evil.test", None)), "/a?b=c"),
            "https://app.example.com:8443/a?b=c"
        );
        assert_eq!(r(None, "/"), "https://app.example.com:8443/");
        assert_eq!(
            r(Some(host("app.example.com", Some(8080))), "/x"),
            "https://app.example.com:8443/x"
        );
        assert_eq!(
            r(Some(host("www.example.com", None)), "/x"),
            "https://www.example.com/x"
        );
        assert_eq!(
            r(Some(host("a.apps.example.com", None)), "/x"),
            "https://a.apps.example.com/x"
        );
        // a target that is not a path cannot turn the Location into another origin
        assert_eq!(
            r(None, "//evil.test/x"),
            "https://app.example.com:8443//evil.test/x"
        );
        assert_eq!(r(None, "*"), "https://app.example.com:8443/");
        let plain = origin("app.example.com", None);
        assert_eq!(
            https_redirect(None, "/p", &plain, &[]),
            "https://app.example.com/p"
        );
    }

    #[test]
    fn hsts_only_over_tls_and_never_over_the_apps() {
        assert_eq!(
            hsts_to_add(true, Some("max-age=1"), false),
            Some("max-age=1")
        );
        assert_eq!(hsts_to_add(false, Some("max-age=1"), false), None);
        assert_eq!(hsts_to_add(true, Some("max-age=1"), true), None);
        assert_eq!(hsts_to_add(true, None, false), None);
    }

    fn make(names: &[&str]) -> (String, String) {
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn loads_checks_and_picks() {
        let (a_cert, a_key) = make(&["a.test", "*.wild.test"]);
        let (b_cert, b_key) = make(&["b.test"]);
        let a = load(a_cert.as_bytes(), a_key.as_bytes(), None).unwrap();
        assert_eq!(a.names, vec!["a.test", "*.wild.test"]);
        let b = load(b_cert.as_bytes(), b_key.as_bytes(), None).unwrap();
        let given = load(
            b_cert.as_bytes(),
            b_key.as_bytes(),
            Some(vec!["Other.Test.".into()]),
        )
        .unwrap();
        assert_eq!(given.names, vec!["other.test"]);
        let set = Certificates { list: vec![a, b] };
        let pick = |sni: Option<&str>| set.pick(sni).unwrap().names[0].clone();
        assert_eq!(pick(Some("b.test")), "b.test");
        assert_eq!(pick(Some("B.TEST")), "b.test");
        assert_eq!(pick(Some("x.wild.test")), "a.test");
        assert_eq!(pick(Some("unknown.test")), "a.test");
        assert_eq!(pick(None), "a.test");
        assert!(Certificates::default().pick(Some("a.test")).is_none());

        assert_eq!(
            load(a_cert.as_bytes(), b_key.as_bytes(), None).unwrap_err(),
            CertError::KeyMismatch
        );
        assert_eq!(
            load(b"not pem", a_key.as_bytes(), None).unwrap_err(),
            CertError::NoCertificate
        );
        assert_eq!(
            load(a_cert.as_bytes(), b"not pem", None).unwrap_err(),
            CertError::NoKey
        );
        assert_eq!(
            load(a_key.as_bytes(), a_key.as_bytes(), None).unwrap_err(),
            CertError::NoCertificate
        );
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(
            load(garbage.as_bytes(), a_key.as_bytes(), None).unwrap_err(),
            CertError::BadCertificate
        );
        // the debug form names no key material
        let dbg = format!("{:?}", set.list[0]);
        assert!(!dbg.contains("PRIVATE") && !dbg.contains("key:"), "{dbg}");
    }
}
