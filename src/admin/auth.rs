//! Who may call the sessions API: a bearer token compared in constant time, never a
//! browser (DESIGN §7; issue 11 point 4).

use http::HeaderMap;

use crate::secret::{ct_eq, Secret};

/// Why a sessions API request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `admin.token` configured: the API is off (404, as if it did not exist).
    Off,
    /// The request carries `Origin` or `Sec-Fetch-Site`: a browser sent it, and a page
    /// must never drive the admin API with someone's network position (403).
    Browser,
    /// No bearer token, or the wrong one (401).
    Unauthorized,
}

impl Refusal {
    /// The HTTP status of the refusal.
    pub fn status(self) -> u16 {
        match self {
            Refusal::Off => 404,
            Refusal::Browser => 403,
            Refusal::Unauthorized => 401,
        }
    }

    /// The text of the refusal (says nothing about the token).
    pub fn text(self) -> &'static str {
        match self {
            Refusal::Off => "not found\n",
            Refusal::Browser => "forbidden: the sessions API does not serve browsers\n",
            Refusal::Unauthorized => "unauthorized: Authorization: Bearer <admin.token> required\n",
        }
    }
}

/// Decides whether a sessions API request may go on.
pub fn authorize(headers: &HeaderMap, token: Option<&Secret>) -> Result<(), Refusal> {
    let Some(token) = token else {
        return Err(Refusal::Off);
    };
    if headers.contains_key(http::header::ORIGIN) || headers.contains_key("sec-fetch-site") {
        return Err(Refusal::Browser);
    }
    let mut presented = headers.get_all(http::header::AUTHORIZATION).iter();
    let (Some(v), None) = (presented.next(), presented.next()) else {
        return Err(Refusal::Unauthorized);
    };
    let v = v.as_bytes();
    let Some(sent) = v
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case(b"bearer "))
        .and_then(|_| v.get(7..))
    else {
        return Err(Refusal::Unauthorized);
    };
    if ct_eq(sent.trim_ascii(), token.expose()) {
        Ok(())
    } else {
        Err(Refusal::Unauthorized)
    }
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
    fn bearer_token_only_and_never_from_a_browser() {
        let t = Secret::new(b"admin-token-admin-token".to_vec());
        let ok = [("authorization", "Bearer admin-token-admin-token")];
        assert_eq!(authorize(&h(&ok), None), Err(Refusal::Off));
        assert_eq!(authorize(&h(&ok), Some(&t)), Ok(()));
        assert_eq!(
            authorize(
                &h(&[("authorization", "bearer admin-token-admin-token")]),
                Some(&t)
            ),
            Ok(())
        );
        for bad in [
            &[][..],
            &[("authorization", "Bearer admin-token-admin-toke")][..],
            &[("authorization", "Basic admin-token-admin-token")][..],
            &[("authorization", "admin-token-admin-token")][..],
            &[
                ("authorization", "Bearer admin-token-admin-token"),
                ("authorization", "Bearer x"),
            ][..],
        ] {
            assert_eq!(
                authorize(&h(bad), Some(&t)),
                Err(Refusal::Unauthorized),
                "{bad:?}"
            );
        }
        for browser in ["origin", "sec-fetch-site"] {
            let mut m = h(&ok);
            m.insert(browser, HeaderValue::from_static("same-origin"));
            assert_eq!(authorize(&m, Some(&t)), Err(Refusal::Browser));
        }
    }
}
