//! JWS compact tokens (`format = "jwt"`) over ring: HS256/384/512, RS256, PS256, ES256,
//! EdDSA. Each key pins one algorithm; a token's header `alg` must equal it, so `none`
//! and algorithm confusion (an HS256 token "signed" with an RSA public key) never
//! verify. Keys are looked up only locally, by `kid`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, UnparsedPublicKey};
use serde_json::{Map, Value};

use super::Invalid;
use crate::config::KeySpec;

/// A pinned algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// HMAC SHA-256.
    HS256,
    /// HMAC SHA-384.
    HS384,
    /// HMAC SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 SHA-256.
    RS256,
    /// RSASSA-PSS SHA-256.
    PS256,
    /// ECDSA P-256 SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
}

impl Alg {
    fn parse(s: &str) -> Option<Alg> {
        Some(match s {
            "HS256" => Alg::HS256,
            "HS384" => Alg::HS384,
            "HS512" => Alg::HS512,
            "RS256" => Alg::RS256,
            "PS256" => Alg::PS256,
            "ES256" => Alg::ES256,
            "EdDSA" => Alg::EdDSA,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
            Alg::RS256 => "RS256",
            Alg::PS256 => "PS256",
            Alg::ES256 => "ES256",
            Alg::EdDSA => "EdDSA",
        }
    }
}

enum Material {
    Hmac(ring::hmac::Key),
    Rsa {
        pair: Option<RsaKeyPair>,
        public: Vec<u8>,
    },
    Ecdsa {
        pair: Option<EcdsaKeyPair>,
        public: Vec<u8>,
    },
    Ed25519 {
        pair: Option<Ed25519KeyPair>,
        public: Vec<u8>,
    },
}

/// One verified-and-maybe-signing key.
pub struct Key {
    kid: Option<String>,
    alg: Alg,
    material: Material,
    /// `{"alg":…,"typ":"JWT","kid":…}` base64url, precomputed for minting.
    header_b64: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Key {
    fn can_sign(&self) -> bool {
        match &self.material {
            Material::Hmac(_) => true,
            Material::Rsa { pair, .. } => pair.is_some(),
            Material::Ecdsa { pair, .. } => pair.is_some(),
            Material::Ed25519 { pair, .. } => pair.is_some(),
        }
    }

    fn verify(&self, input: &[u8], sig: &[u8]) -> bool {
        match (&self.material, self.alg) {
            (Material::Hmac(k), _) => ring::hmac::verify(k, input, sig).is_ok(),
            (Material::Rsa { public, .. }, Alg::RS256) => {
                UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, public)
                    .verify(input, sig)
                    .is_ok()
            }
            (Material::Rsa { public, .. }, Alg::PS256) => {
                UnparsedPublicKey::new(&signature::RSA_PSS_2048_8192_SHA256, public)
                    .verify(input, sig)
                    .is_ok()
            }
            (Material::Ecdsa { public, .. }, _) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public)
                    .verify(input, sig)
                    .is_ok()
            }
            (Material::Ed25519 { public, .. }, _) => {
                UnparsedPublicKey::new(&signature::ED25519, public)
                    .verify(input, sig)
                    .is_ok()
            }
            _ => false,
        }
    }

    fn sign(&self, input: &[u8], rng: &SystemRandom) -> Option<Vec<u8>> {
        match (&self.material, self.alg) {
            (Material::Hmac(k), _) => Some(ring::hmac::sign(k, input).as_ref().to_vec()),
            (Material::Rsa { pair: Some(p), .. }, alg) => {
                let enc: &dyn signature::RsaEncoding = if alg == Alg::PS256 {
                    &signature::RSA_PSS_SHA256
                } else {
                    &signature::RSA_PKCS1_SHA256
                };
                let mut sig = vec![0u8; p.public().modulus_len()];
                p.sign(enc, rng, input, &mut sig).ok()?;
                Some(sig)
            }
            (Material::Ecdsa { pair: Some(p), .. }, _) => {
                p.sign(rng, input).ok().map(|s| s.as_ref().to_vec())
            }
            (Material::Ed25519 { pair: Some(p), .. }, _) => Some(p.sign(input).as_ref().to_vec()),
            _ => None,
        }
    }
}

/// The configured keys: the first signs, all verify.
#[derive(Debug)]
pub struct KeySet {
    keys: Vec<Key>,
    rng: SystemRandom,
}

/// Why a key could not be loaded. Names the key's config location; never key bytes.
#[derive(Debug, thiserror::Error)]
#[error("`{origin}`: {reason}")]
pub struct KeyError {
    /// e.g. `session.reissue.keys[1]`.
    pub origin: String,
    /// What is wrong.
    pub reason: String,
}

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_ED25519: &str = "1.3.101.112";

fn pem_der(pem_bytes: &[u8], want: &str) -> Result<Vec<u8>, String> {
    let p = pem::parse(pem_bytes).map_err(|e| format!("not a PEM file: {e}"))?;
    if p.tag() != want {
        return Err(format!(
            "expected a PEM \"{want}\" block, found \"{}\"",
            p.tag()
        ));
    }
    Ok(p.into_contents())
}

/// The raw public key of an SPKI, after checking its algorithm OID.
fn spki_key(der: &[u8], oid: &str) -> Result<Vec<u8>, String> {
    use spki::der::Decode;
    let info = spki::SubjectPublicKeyInfoRef::from_der(der)
        .map_err(|e| format!("not a SubjectPublicKeyInfo: {e}"))?;
    if info.algorithm.oid.to_string() != oid {
        return Err(format!(
            "public key algorithm {} does not fit this key's alg",
            info.algorithm.oid
        ));
    }
    info.subject_public_key
        .as_bytes()
        .map(<[u8]>::to_vec)
        .ok_or_else(|| "malformed public key bits".to_string())
}

impl KeySet {
    /// Loads every key. The first must be able to sign.
    pub fn from_specs(specs: &[KeySpec]) -> Result<KeySet, KeyError> {
        let rng = SystemRandom::new();
        let mut keys = Vec::with_capacity(specs.len());
        for spec in specs {
            let err = |reason: String| KeyError {
                origin: spec.origin.clone(),
                reason,
            };
            let alg = Alg::parse(&spec.alg)
                .ok_or_else(|| err(format!("unsupported alg {:?}", spec.alg)))?;
            let material = match alg {
                Alg::HS256 | Alg::HS384 | Alg::HS512 => {
                    let s = spec
                        .secret
                        .as_ref()
                        .ok_or_else(|| err("missing secret".into()))?;
                    let a = match alg {
                        Alg::HS256 => ring::hmac::HMAC_SHA256,
                        Alg::HS384 => ring::hmac::HMAC_SHA384,
                        _ => ring::hmac::HMAC_SHA512,
                    };
                    Material::Hmac(ring::hmac::Key::new(a, s.expose()))
                }
                Alg::RS256 | Alg::PS256 => {
                    let pair = match &spec.private_key_pem {
                        Some(p) => Some(
                            RsaKeyPair::from_pkcs8(
                                &pem_der(p.expose(), "PRIVATE KEY").map_err(&err)?,
                            )
                            .map_err(|e| err(format!("not an RSA PKCS#8 private key: {e}")))?,
                        ),
                        None => None,
                    };
                    let public = match (&spec.public_key_pem, &pair) {
                        (Some(p), _) => spki_key(&pem_der(p, "PUBLIC KEY").map_err(&err)?, OID_RSA)
                            .map_err(&err)?,
                        (None, Some(kp)) => kp.public_key().as_ref().to_vec(),
                        (None, None) => return Err(err("needs private_key or public_key".into())),
                    };
                    Material::Rsa { pair, public }
                }
                Alg::ES256 => {
                    let pair = match &spec.private_key_pem {
                        Some(p) => Some(
                            EcdsaKeyPair::from_pkcs8(
                                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                                &pem_der(p.expose(), "PRIVATE KEY").map_err(&err)?,
                                &rng,
                            )
                            .map_err(|e| err(format!("not a P-256 PKCS#8 private key: {e}")))?,
                        ),
                        None => None,
                    };
                    let public = match (&spec.public_key_pem, &pair) {
                        (Some(p), _) => spki_key(&pem_der(p, "PUBLIC KEY").map_err(&err)?, OID_EC)
                            .map_err(&err)?,
                        (None, Some(kp)) => kp.public_key().as_ref().to_vec(),
                        (None, None) => return Err(err("needs private_key or public_key".into())),
                    };
                    Material::Ecdsa { pair, public }
                }
                Alg::EdDSA => {
                    let pair = match &spec.private_key_pem {
                        Some(p) => Some(
                            Ed25519KeyPair::from_pkcs8_maybe_unchecked(
                                &pem_der(p.expose(), "PRIVATE KEY").map_err(&err)?,
                            )
                            .map_err(|e| err(format!("not an Ed25519 PKCS#8 private key: {e}")))?,
                        ),
                        None => None,
                    };
                    let public = match (&spec.public_key_pem, &pair) {
                        (Some(p), _) => {
                            spki_key(&pem_der(p, "PUBLIC KEY").map_err(&err)?, OID_ED25519)
                                .map_err(&err)?
                        }
                        (None, Some(kp)) => kp.public_key().as_ref().to_vec(),
                        (None, None) => return Err(err("needs private_key or public_key".into())),
                    };
                    Material::Ed25519 { pair, public }
                }
            };
            let mut header = Map::new();
            header.insert("alg".into(), Value::String(alg.name().into()));
            header.insert("typ".into(), Value::String("JWT".into()));
            if let Some(k) = &spec.kid {
                header.insert("kid".into(), Value::String(k.clone()));
            }
            let header_b64 = B64.encode(Value::Object(header).to_string());
            keys.push(Key {
                kid: spec.kid.clone(),
                alg,
                material,
                header_b64,
            });
        }
        match keys.first() {
            None => Err(KeyError {
                origin: "session.reissue.keys".into(),
                reason: "no keys".into(),
            }),
            Some(k) if !k.can_sign() => Err(KeyError {
                origin: specs[0].origin.clone(),
                reason: "the first key signs re-minted tokens, so it needs a private key or secret"
                    .into(),
            }),
            Some(_) => Ok(KeySet { keys, rng }),
        }
    }

    /// Verifies a compact JWS and returns its claims. Only the signature, the header
    /// and the payload's shape are checked here; time checks are the caller's.
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, Invalid> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Invalid::Malformed);
        };
        let header = super::json_segment(h.as_bytes())?;
        if header.contains_key("crit") {
            // no critical extensions are understood, so none can be honoured
            return Err(Invalid::Malformed);
        }
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(Invalid::Malformed)?;
        let sig = B64.decode(s).map_err(|_| Invalid::Malformed)?;
        let input = &token.as_bytes()[..h.len() + 1 + p.len()];
        match header.get("kid") {
            Some(Value::String(kid)) => {
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.kid.as_deref() == Some(kid))
                    .ok_or(Invalid::UnknownKid)?;
                // the key pins its algorithm: a header naming another one is refused
                if key.alg.name() != alg || !key.verify(input, &sig) {
                    return Err(Invalid::BadSignature);
                }
            }
            Some(_) => return Err(Invalid::Malformed),
            None => {
                let mut candidates = self.keys.iter().filter(|k| k.alg.name() == alg).peekable();
                if candidates.peek().is_none() {
                    return Err(Invalid::BadSignature);
                }
                if !candidates.any(|k| k.verify(input, &sig)) {
                    return Err(Invalid::BadSignature);
                }
            }
        }
        let claims = super::json_segment(p.as_bytes())?;
        Ok(claims)
    }

    /// Signs `claims` with the active (first) key.
    pub fn mint(&self, claims: &Map<String, Value>) -> Option<String> {
        let key = self.keys.first()?;
        let payload = serde_json::to_vec(claims).ok()?;
        let mut token = String::with_capacity(key.header_b64.len() + payload.len() * 4 / 3 + 400);
        token.push_str(&key.header_b64);
        token.push('.');
        B64.encode_string(&payload, &mut token);
        let sig = key.sign(token.as_bytes(), &self.rng)?;
        token.push('.');
        B64.encode_string(sig, &mut token);
        Some(token)
    }
}
