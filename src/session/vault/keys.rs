//! Vault keys (DESIGN §4.3): every configured secret yields purpose keys by HKDF, so
//! one secret never serves two purposes. The first secret is active (mints handles,
//! derives successors, seals credentials); every secret verifies and opens.
//!
//! A kid is one byte derived from the secret itself (not its position), so reordering
//! the list or adding a new active secret in front never changes an old handle's kid.
//! Two secrets may share a kid byte (1 in 256): lookups then try each of them.

use ring::{hkdf, hmac};

use super::{VaultError, VaultSettings, MIN_SECRET_LEN};

/// HKDF salt of every vault key (a version label: a new scheme gets a new salt).
const SALT: &[u8] = b"rotagate vault v1";

/// The purpose keys of one secret.
pub struct KeySet {
    /// The kid byte handles carry.
    pub kid: u8,
    /// Tags handles.
    pub tag: hmac::Key,
    /// Derives successor secrets.
    pub successor: hmac::Key,
    /// Derives per-family credential keys.
    pub credentials: hkdf::Prk,
}

/// Every secret's keys, the active one first.
pub struct Keys {
    sets: Vec<KeySet>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} secrets)", self.sets.len())
    }
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand of `prk` with `info` into `N` bytes.
pub(crate) fn expand<const N: usize>(prk: &hkdf::Prk, info: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    // N ≤ 255 × 32 for every caller, the only failure ring reports
    if let Ok(okm) = prk.expand(info, Len(N)) {
        let _ = okm.fill(&mut out);
    }
    out
}

impl Keys {
    /// Derives the keys of `settings.secrets`, checking each is long enough.
    pub fn new(settings: &VaultSettings) -> Result<Keys, VaultError> {
        if settings.secrets.is_empty() {
            return Err(VaultError::NoSecret);
        }
        let mut sets = Vec::with_capacity(settings.secrets.len());
        for (index, secret) in settings.secrets.iter().enumerate() {
            if secret.len() < MIN_SECRET_LEN {
                return Err(VaultError::ShortSecret {
                    index,
                    len: secret.len(),
                });
            }
            let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(secret.expose());
            let kid: [u8; 1] = expand(&prk, &[b"kid"]);
            let tag: [u8; 32] = expand(&prk, &[b"handle tag"]);
            let successor: [u8; 32] = expand(&prk, &[b"successor"]);
            let credentials: [u8; 32] = expand(&prk, &[b"credentials"]);
            sets.push(KeySet {
                kid: kid[0],
                tag: hmac::Key::new(hmac::HMAC_SHA256, &tag),
                successor: hmac::Key::new(hmac::HMAC_SHA256, &successor),
                credentials: hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(&credentials),
            });
        }
        Ok(Keys { sets })
    }

    /// The active secret's keys.
    pub fn active(&self) -> &KeySet {
        &self.sets[0]
    }

    /// Every key set whose kid is `kid`, active first.
    pub fn by_kid(&self, kid: u8) -> impl Iterator<Item = &KeySet> {
        self.sets.iter().filter(move |s| s.kid == kid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn settings(secrets: &[&[u8]]) -> VaultSettings {
        VaultSettings::with_secrets(secrets.iter().map(|s| Secret::new(s.to_vec())).collect())
    }

    #[test]
    fn kids_follow_the_secret_not_its_position() {
        let a = [b'a'; 32];
        let b = [b'b'; 32];
        let one = Keys::new(&settings(&[&a, &b])).unwrap();
        let two = Keys::new(&settings(&[&b, &a])).unwrap();
        assert_eq!(one.active().kid, two.sets[1].kid);
        assert_eq!(one.sets[1].kid, two.active().kid);
    }

    #[test]
    fn short_and_missing_secrets_are_refused_without_their_value() {
        let e = Keys::new(&settings(&[&[b'x'; 32], b"short-secret"])).unwrap_err();
        assert_eq!(e, VaultError::ShortSecret { index: 1, len: 12 });
        assert!(!e.to_string().contains("short-secret"));
        assert_eq!(Keys::new(&settings(&[])).unwrap_err(), VaultError::NoSecret);
    }
}
