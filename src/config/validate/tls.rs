//! `[listen.tls]`: the TLS listener's address, redirect and HSTS settings, and its
//! certificates, loaded and checked here so a bad certificate is a configuration error
//! (a reload with one is refused and the certificates in force stay).

use std::net::SocketAddr;
use std::sync::Arc;

use toml::Spanned;

use super::super::file::{self, S};
use super::super::runtime::*;
use super::Ctx;
use crate::tls::{self as t, CertError};

/// Validates `[listen.tls]`; `plain` is `listen.address`.
pub(super) fn listener(
    cx: &mut Ctx<'_>,
    tf: &Spanned<file::TlsFile>,
    origin: Option<&Origin>,
    plain: Option<SocketAddr>,
) -> Option<Tls> {
    let f = tf.get_ref();
    let address = cx.socket_addr(&f.address);
    // port 0 (any free port) twice is two different ports
    if address.is_some_and(|a| a.port() != 0) && address == plain {
        cx.bad_at(
            &f.address,
            "expected an address other than listen.address (the plain listener's)",
        );
    }
    let redirect_http = f.redirect_http.unwrap_or(false);
    match origin {
        Some(o) if o.scheme != "https" => cx.bad(
            Some(tf.span()),
            Some("listen.public_origin".into()),
            format!(
                "with [listen.tls], browsers reach the site over https: expected listen.public_origin = \"https://…\", found {:?}",
                o.serialize()
            ),
        ),
        None if redirect_http => cx.bad(
            Some(tf.span()),
            Some("listen.tls.redirect_http".into()),
            "redirect_http needs listen.public_origin = \"https://…\": the redirect goes to the public origin (never to a Host the client sent)",
        ),
        _ => {}
    }
    let hsts = f.hsts.as_ref().and_then(|h| {
        let v = h.get_ref();
        let max_age = v
            .split(';')
            .any(|d| d.trim().to_ascii_lowercase().starts_with("max-age="));
        if max_age && http::HeaderValue::from_str(v).is_ok() && !v.trim().is_empty() {
            Some(v.trim().to_string())
        } else {
            cx.bad_at(
                h,
                format!("expected a Strict-Transport-Security value with max-age, like \"max-age=31536000\" or \"max-age=31536000; includeSubDomains\", found {v:?}"),
            );
            None
        }
    });
    if f.certificates.is_empty() {
        cx.bad(
            Some(tf.span()),
            Some("listen.tls.certificates".into()),
            "expected at least one [[listen.tls.certificates]] with cert and key",
        );
    }
    let before = cx.problems.len();
    let list: Vec<t::Certificate> = f
        .certificates
        .iter()
        .enumerate()
        .filter_map(|(i, c)| certificate(cx, i, c))
        .collect();
    if cx.problems.len() > before || list.len() != f.certificates.len() {
        return None;
    }
    Some(Tls {
        address: address?,
        redirect_http,
        hsts,
        certificates: Arc::new(t::Certificates { list }),
    })
}

/// One `[[listen.tls.certificates]]`: read (recorded in `Config.files` for the watcher),
/// parsed, the key matched with the certificate.
fn certificate(
    cx: &mut Ctx<'_>,
    i: usize,
    c: &Spanned<file::TlsCertFile>,
) -> Option<t::Certificate> {
    let f = c.get_ref();
    let names = match &f.names {
        None => None,
        Some(list) => {
            let mut ok = Vec::with_capacity(list.len());
            for n in list {
                if t::is_cert_name(n.get_ref()) {
                    ok.push(n.get_ref().clone());
                } else {
                    cx.bad_at(
                        n,
                        format!(
                            "expected a DNS name like \"app.example.com\" or \"*.example.com\", found {:?}",
                            n.get_ref()
                        ),
                    );
                }
            }
            if list.is_empty() {
                cx.bad(
                    Some(c.span()),
                    Some(format!("listen.tls.certificates[{i}].names")),
                    "expected at least one name (leave `names` out to use the certificate's own names)",
                );
            }
            Some(ok)
        }
    };
    // both are read before either is judged, so both paths reach the file watcher
    let cert = cx.secret(&f.cert, false);
    let key = cx.secret(&f.key, false);
    let (cert, key) = (cert?, key?);
    let at = |e: &CertError| -> &S {
        match e {
            CertError::NoKey
            | CertError::BadKeyPem
            | CertError::UnsupportedKey
            | CertError::KeyMismatch => &f.key,
            _ => &f.cert,
        }
    };
    match t::load(cert.expose(), key.expose(), names) {
        Ok(loaded) => {
            if loaded.names.is_empty() && i > 0 {
                cx.bad_at(
                    &f.cert,
                    "this certificate names no DNS host (no subject alternative names) and only the first certificate is a default: add names = [\"…\"]",
                );
                return None;
            }
            Some(loaded)
        }
        Err(e) => {
            let s = at(&e);
            // the reference (a path or a variable name), never its content
            cx.bad_at(s, format!("cannot use {}: {e}", s.get_ref()));
            None
        }
    }
}
