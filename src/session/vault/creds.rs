//! Captured app cookies, sealed for the store: AES-256-GCM under a per-family subkey
//! (HKDF of the secret's credential key with the family id), a random nonce per sealing,
//! the family id as associated data (a record's credentials cannot be moved to another
//! family).

use ring::aead;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::keys::{expand, KeySet, Keys};
use crate::secret::Secret;
use crate::store::{FamilyId, Sealed};

/// One captured app cookie (`name=value` as the upstream set it). The value is a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedCookie {
    /// Cookie name (a chunk `name.N` or a `__Secure-`/`__Host-` twin keeps its full name).
    pub name: String,
    /// Cookie value (redacted in `Debug`).
    pub value: Secret,
}

impl CapturedCookie {
    /// A cookie.
    pub fn new(name: impl Into<String>, value: impl Into<Vec<u8>>) -> CapturedCookie {
        CapturedCookie {
            name: name.into(),
            value: Secret::new(value),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Plain<'a> {
    #[serde(borrow)]
    cookies: Vec<(&'a str, &'a [u8])>,
}

/// Why sealed credentials could not be opened (never a revocation: answered as an
/// anonymous request, counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Sealed under a secret no longer configured.
    UnknownKid,
    /// Authentication failed or the plaintext is not ours.
    Corrupt,
}

fn family_key(set: &KeySet, family: &FamilyId) -> Option<aead::LessSafeKey> {
    let key: [u8; 32] = expand(&set.credentials, &[b"family", &family.0]);
    aead::UnboundKey::new(&aead::AES_256_GCM, &key)
        .ok()
        .map(aead::LessSafeKey::new)
}

/// Seals `cookies` for `family` under the active key.
pub fn seal(keys: &Keys, family: &FamilyId, cookies: &[CapturedCookie]) -> Sealed {
    let set = keys.active();
    let plain = Plain {
        cookies: cookies
            .iter()
            .map(|c| (c.name.as_str(), c.value.expose()))
            .collect(),
    };
    let mut buf = postcard::to_stdvec(&plain).unwrap_or_default();
    let mut nonce = [0u8; 12];
    // the system RNG failing is a broken host; a zero nonce would be reused, so the
    // sealing is refused by leaving the ciphertext empty (opens as Corrupt)
    if SystemRandom::new().fill(&mut nonce).is_err() {
        return Sealed::default();
    }
    let Some(key) = family_key(set, family) else {
        return Sealed::default();
    };
    if key
        .seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(family.0),
            &mut buf,
        )
        .is_err()
    {
        return Sealed::default();
    }
    Sealed {
        kid: set.kid,
        nonce,
        ciphertext: buf,
    }
}

/// Opens what [`seal`] sealed, under whichever configured key has its kid.
pub fn open(
    keys: &Keys,
    family: &FamilyId,
    sealed: &Sealed,
) -> Result<Vec<CapturedCookie>, OpenError> {
    let mut known = false;
    for set in keys.by_kid(sealed.kid) {
        known = true;
        let Some(key) = family_key(set, family) else {
            continue;
        };
        let mut buf = sealed.ciphertext.clone();
        let Ok(plain) = key.open_in_place(
            aead::Nonce::assume_unique_for_key(sealed.nonce),
            aead::Aad::from(family.0),
            &mut buf,
        ) else {
            continue;
        };
        let plain: Plain = postcard::from_bytes(plain).map_err(|_| OpenError::Corrupt)?;
        return Ok(plain
            .cookies
            .into_iter()
            .map(|(n, v)| CapturedCookie::new(n, v))
            .collect());
    }
    Err(if known {
        OpenError::Corrupt
    } else {
        OpenError::UnknownKid
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::vault::VaultSettings;

    fn keys(secrets: &[[u8; 32]]) -> Keys {
        Keys::new(&VaultSettings::with_secrets(
            secrets.iter().map(|s| Secret::new(s.to_vec())).collect(),
        ))
        .unwrap()
    }

    #[test]
    fn seals_and_opens_per_family() {
        let k = keys(&[[1; 32]]);
        let cookies = vec![
            CapturedCookie::new("sid", b"app-session-value".to_vec()),
            CapturedCookie::new("sid.1", b"second chunk".to_vec()),
        ];
        let s = seal(&k, &FamilyId([1; 16]), &cookies);
        assert!(!s.ciphertext.windows(9).any(|w| w == b"app-sessi"));
        assert_eq!(open(&k, &FamilyId([1; 16]), &s).unwrap(), cookies);
        // another family's record cannot carry these credentials
        assert_eq!(
            open(&k, &FamilyId([2; 16]), &s).unwrap_err(),
            OpenError::Corrupt
        );
        let mut t = s.clone();
        t.ciphertext[0] ^= 1;
        assert_eq!(
            open(&k, &FamilyId([1; 16]), &t).unwrap_err(),
            OpenError::Corrupt
        );
    }

    #[test]
    fn old_secret_opens_after_rollover_and_retired_secret_does_not() {
        let cookies = vec![CapturedCookie::new("sid", b"v".to_vec())];
        let s = seal(&keys(&[[1; 32]]), &FamilyId([1; 16]), &cookies);
        assert_eq!(
            open(&keys(&[[2; 32], [1; 32]]), &FamilyId([1; 16]), &s).unwrap(),
            cookies
        );
        assert!(open(&keys(&[[2; 32]]), &FamilyId([1; 16]), &s).is_err());
    }
}
