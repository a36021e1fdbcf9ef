//! Auth.js session cookies: `format = "authjs"` (Auth.js v5 / `@auth/core`) and
//! `"authjs-v4"` (next-auth 4). Both are JWE compact tokens with `alg = "dir"`:
//!
//! - v5 seals with `A256CBC-HS512` under HKDF-SHA256(ikm = secret, salt = cookie name,
//!   info = `Auth.js Generated Encryption Key (<cookie name>)`, 64 bytes) and puts the
//!   RFC 7638 thumbprint (SHA-512) of that key in `kid`; `A256GCM` tokens (32-byte key,
//!   SHA-256 thumbprint) are accepted on read, as `@auth/core`'s `jwt.ts` does.
//! - v4 seals with `A256GCM` under HKDF-SHA256(secret, salt = "", info =
//!   `NextAuth.js Generated Encryption Key`, 32 bytes), no `kid`.
//!
//! Keys are derived once per secret and cookie name, when the configuration loads.
//! AES-GCM and HMAC come from ring; AES-CBC from the RustCrypto `aes`/`cbc` crates.

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ring::aead::{self, LessSafeKey, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Map, Value};

use super::Invalid;
use crate::secret::{ct_eq, Secret};

/// Which Auth.js generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Auth.js v5 (`@auth/core`).
    V5,
    /// next-auth 4.
    V4,
}

const CBC_HS512: &str = "A256CBC-HS512";
const GCM: &str = "A256GCM";

/// The keys of one secret for one cookie name.
struct Derived {
    /// 64-byte A256CBC-HS512 key (v5 only): MAC key, then encryption key.
    cbc: Option<Secret>,
    cbc_kid: String,
    gcm: LessSafeKey,
    gcm_kid: String,
}

/// Auth.js token codec for one configuration.
pub struct AuthjsCodec {
    version: Version,
    /// (cookie name, per-secret keys; the first secret seals).
    names: Vec<(String, Vec<Derived>)>,
    rng: SystemRandom,
}

impl std::fmt::Debug for AuthjsCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthjsCodec")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

struct Len(usize);
impl ring::hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn hkdf(ikm: &[u8], salt: &[u8], info: &[u8], len: usize) -> Option<Vec<u8>> {
    let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, salt).extract(ikm);
    let info = [info];
    let okm = prk.expand(&info, Len(len)).ok()?;
    let mut out = vec![0u8; len];
    okm.fill(&mut out).ok()?;
    Some(out)
}

/// RFC 7638 thumbprint of an `oct` JWK, with SHA-512 for 64-byte keys, SHA-256 else.
fn thumbprint(key: &[u8]) -> String {
    let jwk = format!(r#"{{"k":"{}","kty":"oct"}}"#, B64.encode(key));
    let alg = if key.len() == 64 {
        &ring::digest::SHA512
    } else {
        &ring::digest::SHA256
    };
    B64.encode(ring::digest::digest(alg, jwk.as_bytes()))
}

impl AuthjsCodec {
    /// Derives the keys of every secret for each cookie name (the v5 HKDF salt).
    pub fn new(version: Version, secrets: &[Secret], names: &[String]) -> Option<AuthjsCodec> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let mut keys = Vec::with_capacity(secrets.len());
            for s in secrets {
                let d = match version {
                    Version::V5 => {
                        let info = format!("Auth.js Generated Encryption Key ({name})");
                        let cbc = hkdf(s.expose(), name.as_bytes(), info.as_bytes(), 64)?;
                        let gcm = hkdf(s.expose(), name.as_bytes(), info.as_bytes(), 32)?;
                        Derived {
                            cbc_kid: thumbprint(&cbc),
                            cbc: Some(Secret::new(cbc)),
                            gcm_kid: thumbprint(&gcm),
                            gcm: LessSafeKey::new(UnboundKey::new(&aead::AES_256_GCM, &gcm).ok()?),
                        }
                    }
                    Version::V4 => {
                        let gcm =
                            hkdf(s.expose(), b"", b"NextAuth.js Generated Encryption Key", 32)?;
                        Derived {
                            cbc: None,
                            cbc_kid: String::new(),
                            gcm_kid: thumbprint(&gcm),
                            gcm: LessSafeKey::new(UnboundKey::new(&aead::AES_256_GCM, &gcm).ok()?),
                        }
                    }
                };
                keys.push(d);
            }
            out.push((name.clone(), keys));
        }
        Some(AuthjsCodec {
            version,
            names: out,
            rng: SystemRandom::new(),
        })
    }

    fn keys(&self, cookie: &str) -> Option<&[Derived]> {
        self.names
            .iter()
            .find(|(n, _)| n == cookie)
            .map(|(_, k)| k.as_slice())
    }

    /// Decrypts a token carried under `cookie` and returns its claims.
    pub fn open(&self, token: &str, cookie: &str) -> Result<Map<String, Value>, Invalid> {
        let keys = self.keys(cookie).ok_or(Invalid::Malformed)?;
        let mut parts = token.split('.');
        let (Some(h), Some(ek), Some(iv), Some(ct), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(Invalid::Malformed);
        };
        let header = super::json_segment(h.as_bytes())?;
        if header.get("alg").and_then(Value::as_str) != Some("dir")
            || !ek.is_empty()
            || header.contains_key("zip")
            || header.contains_key("crit")
        {
            return Err(Invalid::Malformed);
        }
        let enc = header
            .get("enc")
            .and_then(Value::as_str)
            .ok_or(Invalid::Malformed)?;
        let allowed = match self.version {
            Version::V5 => enc == CBC_HS512 || enc == GCM,
            Version::V4 => enc == GCM,
        };
        if !allowed {
            return Err(Invalid::Malformed);
        }
        let (iv, ct, tag) = (
            B64.decode(iv).map_err(|_| Invalid::Malformed)?,
            B64.decode(ct).map_err(|_| Invalid::Malformed)?,
            B64.decode(tag).map_err(|_| Invalid::Malformed)?,
        );
        let kid = header.get("kid").and_then(Value::as_str);
        let candidates: Vec<&Derived> = match (self.version, kid) {
            (Version::V5, Some(kid)) => {
                let found: Vec<&Derived> = keys
                    .iter()
                    .filter(|k| {
                        if enc == GCM {
                            k.gcm_kid == kid
                        } else {
                            k.cbc_kid == kid
                        }
                    })
                    .collect();
                if found.is_empty() {
                    return Err(Invalid::UnknownKid);
                }
                found
            }
            _ => keys.iter().collect(),
        };
        let aad = h.as_bytes();
        let plain = candidates
            .iter()
            .find_map(|k| {
                if enc == GCM {
                    open_gcm(&k.gcm, aad, &iv, &ct, &tag)
                } else {
                    k.cbc
                        .as_ref()
                        .and_then(|key| open_cbc(key.expose(), aad, &iv, &ct, &tag))
                }
            })
            .ok_or(Invalid::BadSignature)?;
        serde_json::from_slice(&plain).map_err(|_| Invalid::Malformed)
    }

    /// Seals `claims` for `cookie` with the first secret, as the library would.
    pub fn seal(&self, claims: &Map<String, Value>, cookie: &str) -> Option<String> {
        let key = self.keys(cookie)?.first()?;
        let payload = serde_json::to_vec(claims).ok()?;
        match self.version {
            Version::V5 => {
                let header = format!(
                    r#"{{"alg":"dir","enc":"{CBC_HS512}","kid":"{}"}}"#,
                    key.cbc_kid
                );
                let h = B64.encode(header);
                let mut iv = [0u8; 16];
                self.rng.fill(&mut iv).ok()?;
                let k = key.cbc.as_ref()?.expose();
                let ct = cbc::Encryptor::<aes::Aes256>::new_from_slices(&k[32..], &iv)
                    .ok()?
                    .encrypt_padded_vec_mut::<Pkcs7>(&payload);
                let tag = cbc_tag(&k[..32], h.as_bytes(), &iv, &ct);
                Some(format!(
                    "{h}..{}.{}.{}",
                    B64.encode(iv),
                    B64.encode(ct),
                    B64.encode(tag)
                ))
            }
            Version::V4 => {
                let h = B64.encode(format!(r#"{{"alg":"dir","enc":"{GCM}"}}"#));
                let mut iv = [0u8; 12];
                self.rng.fill(&mut iv).ok()?;
                let mut buf = payload;
                let tag = key
                    .gcm
                    .seal_in_place_separate_tag(
                        aead::Nonce::assume_unique_for_key(iv),
                        aead::Aad::from(h.as_bytes()),
                        &mut buf,
                    )
                    .ok()?;
                Some(format!(
                    "{h}..{}.{}.{}",
                    B64.encode(iv),
                    B64.encode(buf),
                    B64.encode(tag.as_ref())
                ))
            }
        }
    }
}

/// RFC 7518 §5.2.2.1: HMAC-SHA-512 over AAD ‖ IV ‖ ciphertext ‖ AAD length in bits
/// (64-bit big-endian), truncated to 32 bytes.
fn cbc_tag(mac_key: &[u8], aad: &[u8], iv: &[u8], ct: &[u8]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA512, mac_key);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(aad);
    ctx.update(iv);
    ctx.update(ct);
    ctx.update(&((aad.len() as u64) * 8).to_be_bytes());
    ctx.sign().as_ref()[..32].to_vec()
}

fn open_cbc(key: &[u8], aad: &[u8], iv: &[u8], ct: &[u8], tag: &[u8]) -> Option<Vec<u8>> {
    if key.len() != 64 || iv.len() != 16 || tag.len() != 32 {
        return None;
    }
    // authenticate before decrypting, in constant time
    if !ct_eq(&cbc_tag(&key[..32], aad, iv, ct), tag) {
        return None;
    }
    cbc::Decryptor::<aes::Aes256>::new_from_slices(&key[32..], iv)
        .ok()?
        .decrypt_padded_vec_mut::<Pkcs7>(ct)
        .ok()
}

fn open_gcm(key: &LessSafeKey, aad: &[u8], iv: &[u8], ct: &[u8], tag: &[u8]) -> Option<Vec<u8>> {
    let nonce = aead::Nonce::try_assume_unique_for_key(iv).ok()?;
    let mut buf = Vec::with_capacity(ct.len() + tag.len());
    buf.extend_from_slice(ct);
    buf.extend_from_slice(tag);
    let plain = key
        .open_in_place(nonce, aead::Aad::from(aad), &mut buf)
        .ok()?;
    Some(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn codec(v: Version, secrets: &[&str]) -> AuthjsCodec {
        let s: Vec<Secret> = secrets
            .iter()
            .map(|x| Secret::new(x.as_bytes().to_vec()))
            .collect();
        AuthjsCodec::new(
            v,
            &s,
            &[
                "authjs.session-token".into(),
                "__Secure-authjs.session-token".into(),
            ],
        )
        .unwrap()
    }

    #[test]
    fn round_trips_and_rejects_tampering() {
        for v in [Version::V5, Version::V4] {
            let c = codec(v, &["first-secret", "second-secret"]);
            let claims = json!({"sub": "u1", "name": "Ada"})
                .as_object()
                .cloned()
                .unwrap();
            let t = c.seal(&claims, "authjs.session-token").unwrap();
            assert_eq!(c.open(&t, "authjs.session-token").unwrap(), claims);
            // the cookie name is the v5 salt: a token moved to the other name fails
            if v == Version::V5 {
                assert!(c.open(&t, "__Secure-authjs.session-token").is_err());
            }
            let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
            let mut ct = B64.decode(&parts[3]).unwrap();
            ct[0] ^= 1;
            parts[3] = B64.encode(ct);
            assert_eq!(
                c.open(&parts.join("."), "authjs.session-token"),
                Err(Invalid::BadSignature)
            );
            assert_eq!(
                c.open("a.b.c", "authjs.session-token"),
                Err(Invalid::Malformed)
            );
        }
    }

    #[test]
    fn secret_rollover_reads_old_tokens() {
        let old = codec(Version::V5, &["old-secret"]);
        let new = codec(Version::V5, &["new-secret", "old-secret"]);
        let claims = json!({"sub": "u1"}).as_object().cloned().unwrap();
        let t = old.seal(&claims, "authjs.session-token").unwrap();
        assert_eq!(new.open(&t, "authjs.session-token").unwrap(), claims);
        let unknown = codec(Version::V5, &["other"]);
        assert_eq!(
            unknown.open(&t, "authjs.session-token"),
            Err(Invalid::UnknownKid)
        );
    }
}
