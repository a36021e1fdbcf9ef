//! The handle cookie: `v1.` + base64url(ver | kid | family_id(16) | generation(u32) |
//! secret(32) | tag(32)), the tag an HMAC-SHA256 of everything before it under the
//! kid's tag key (DESIGN §4.2). Verification is constant-time; anything that does not
//! verify is no handle.

use base64::Engine as _;
use ring::hmac;

use super::keys::{KeySet, Keys};
use super::AnonReason;
use crate::store::FamilyId;

/// Format version byte (and the `v1.` prefix).
const VERSION: u8 = 1;
const PREFIX: &str = "v1.";
/// Bytes before the tag.
const BODY: usize = 1 + 1 + 16 + 4 + 32;
/// Tag bytes.
const TAG: usize = 32;
/// Length of an encoded handle.
pub const ENCODED_LEN: usize = PREFIX.len() + ((BODY + TAG) * 4).div_ceil(3);

/// A verified handle (or one about to be minted).
#[derive(Clone, PartialEq, Eq)]
pub struct Handle {
    /// The kid it was (or will be) tagged under.
    pub kid: u8,
    /// Its family.
    pub family: FamilyId,
    /// Its generation.
    pub generation: u32,
    /// The generation's secret.
    pub secret: [u8; 32],
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .field("generation", &self.generation)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// An encoded handle, as the cookie value. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct HandleValue(String);

impl HandleValue {
    /// The cookie value, for the `Set-Cookie` the glue writes. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for HandleValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandleValue([redacted])")
    }
}

fn body(kid: u8, family: &FamilyId, generation: u32, secret: &[u8; 32]) -> [u8; BODY] {
    let mut b = [0u8; BODY];
    b[0] = VERSION;
    b[1] = kid;
    b[2..18].copy_from_slice(&family.0);
    b[18..22].copy_from_slice(&generation.to_be_bytes());
    b[22..].copy_from_slice(secret);
    b
}

impl Handle {
    /// Encodes and tags the handle under the key set of its own kid (the active one
    /// when no configured secret has it any more).
    pub fn mint_own(&self, keys: &Keys) -> HandleValue {
        self.mint(keys.by_kid(self.kid).next().unwrap_or(keys.active()))
    }

    /// Encodes and tags the handle under `keys` (whose kid it takes).
    pub fn mint(&self, keys: &KeySet) -> HandleValue {
        let body = body(keys.kid, &self.family, self.generation, &self.secret);
        let tag = hmac::sign(&keys.tag, &body);
        let mut raw = [0u8; BODY + TAG];
        raw[..BODY].copy_from_slice(&body);
        raw[BODY..].copy_from_slice(tag.as_ref());
        let mut s = String::with_capacity(ENCODED_LEN);
        s.push_str(PREFIX);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(raw, &mut s);
        HandleValue(s)
    }

    /// Decodes and verifies a cookie value. Malformed, unknown kid and bad tag are told
    /// apart for metrics only; each is simply no handle.
    pub fn verify(value: &str, keys: &Keys) -> Result<Handle, AnonReason> {
        let rest = value
            .strip_prefix(PREFIX)
            .filter(|r| r.len() == ENCODED_LEN - PREFIX.len())
            .ok_or(AnonReason::Malformed)?;
        let mut raw = [0u8; BODY + TAG + 2];
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode_slice(rest, &mut raw)
            .map_err(|_| AnonReason::Malformed)?;
        if n != BODY + TAG || raw[0] != VERSION {
            return Err(AnonReason::Malformed);
        }
        let (body, tag) = raw[..BODY + TAG].split_at(BODY);
        let kid = body[1];
        let mut known = false;
        for set in keys.by_kid(kid) {
            known = true;
            // ring's verify compares in constant time
            if hmac::verify(&set.tag, body, tag).is_ok() {
                let mut family = [0u8; 16];
                family.copy_from_slice(&body[2..18]);
                let mut generation = [0u8; 4];
                generation.copy_from_slice(&body[18..22]);
                let mut secret = [0u8; 32];
                secret.copy_from_slice(&body[22..]);
                return Ok(Handle {
                    kid,
                    family: FamilyId(family),
                    generation: u32::from_be_bytes(generation),
                    secret,
                });
            }
        }
        Err(if known {
            AnonReason::BadTag
        } else {
            AnonReason::UnknownKid
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::session::vault::VaultSettings;

    fn keys(secrets: &[[u8; 32]]) -> Keys {
        Keys::new(&VaultSettings::with_secrets(
            secrets.iter().map(|s| Secret::new(s.to_vec())).collect(),
        ))
        .unwrap()
    }

    fn handle() -> Handle {
        Handle {
            kid: 0,
            family: FamilyId([7; 16]),
            generation: 41,
            secret: [9; 32],
        }
    }

    #[test]
    fn round_trips_and_carries_the_active_kid() {
        let k = keys(&[[1; 32]]);
        let v = handle().mint(k.active());
        assert_eq!(v.expose().len(), ENCODED_LEN);
        assert!(v.expose().starts_with("v1."));
        let back = Handle::verify(v.expose(), &k).unwrap();
        assert_eq!(back.kid, k.active().kid);
        assert_eq!(
            (back.family, back.generation, back.secret),
            (FamilyId([7; 16]), 41, [9; 32])
        );
    }

    #[test]
    fn a_changed_byte_anywhere_is_no_handle() {
        let k = keys(&[[1; 32]]);
        let v = handle().mint(k.active()).expose().to_string();
        for i in 3..v.len() {
            let mut b = v.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let s = String::from_utf8(b).unwrap();
            assert!(Handle::verify(&s, &k).is_err(), "byte {i}");
        }
        assert_eq!(Handle::verify("", &k).unwrap_err(), AnonReason::Malformed);
        assert_eq!(
            Handle::verify("v1.", &k).unwrap_err(),
            AnonReason::Malformed
        );
        assert_eq!(
            Handle::verify(&v[..v.len() - 1], &k).unwrap_err(),
            AnonReason::Malformed
        );
        assert_eq!(
            Handle::verify(&format!("v2{}", &v[2..]), &k).unwrap_err(),
            AnonReason::Malformed
        );
    }

    #[test]
    fn unknown_kid_and_bad_tag_are_told_apart() {
        let minted_under_other = handle().mint(keys(&[[2; 32]]).active());
        let k = keys(&[[1; 32]]);
        let e = Handle::verify(minted_under_other.expose(), &k).unwrap_err();
        // the other secret's kid byte may collide with ours (1 in 256): then it is a bad tag
        assert!(matches!(e, AnonReason::UnknownKid | AnonReason::BadTag));
    }

    #[test]
    fn old_secrets_still_verify() {
        let old = keys(&[[1; 32]]);
        let v = handle().mint(old.active());
        let rolled = keys(&[[2; 32], [1; 32]]);
        assert_eq!(Handle::verify(v.expose(), &rolled).unwrap().secret, [9; 32]);
    }

    #[test]
    fn debug_never_prints_the_secret_or_the_value() {
        let k = keys(&[[1; 32]]);
        let v = handle().mint(k.active());
        let shown = format!("{:?} {:?}", handle(), v);
        assert!(!shown.contains(&v.expose()[3..20]));
        assert!(!shown.contains("9, 9"));
    }
}
