//! The family record: one per login, changed only by compare-and-swap (DESIGN §4.2).
//!
//! The record never holds a handle secret in plain: only digests of the current and
//! previous secret. Captured app cookies are sealed (AES-256-GCM) by the vault engine
//! before they reach the store.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A family (login) id: 16 random bytes. Not a secret on its own (a handle also needs
/// its 32-byte secret and the tag), so it is shown in hex by the admin API.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FamilyId(pub [u8; 16]);

impl FamilyId {
    /// Lower-case hex, as the admin API shows and accepts it.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 32 hex digits.
    pub fn from_hex(s: &str) -> Option<FamilyId> {
        let s = s.as_bytes();
        if s.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in s.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(FamilyId(out))
    }
}

impl fmt::Debug for FamilyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FamilyId({})", self.to_hex())
    }
}

impl fmt::Display for FamilyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Why a family was revoked (a metric label and the tombstone's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RevokeReason {
    /// A handle was presented outside the accepted window (RFC 9700 §4.14).
    Reuse,
    /// An operator revoked it (admin API, CLI).
    Admin,
    /// The app deleted a captured cookie (its logout).
    AppLogout,
    /// rotagate's logout flow ran (upstream 401, logout endpoint, `x-rotagate-logout`).
    Logout,
    /// The app's session changed subject: the old family ends, a new one starts.
    SubjectChanged,
}

impl RevokeReason {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Reuse => "reuse",
            RevokeReason::Admin => "admin",
            RevokeReason::AppLogout => "app_logout",
            RevokeReason::Logout => "logout",
            RevokeReason::SubjectChanged => "subject_changed",
        }
    }
}

/// A tombstone: the family is revoked, its credentials are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Why.
    pub reason: RevokeReason,
    /// When (Unix seconds).
    pub at: u64,
}

/// Captured app cookies, sealed with AES-256-GCM under a per-family subkey.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Sealed {
    /// Which vault secret's key sealed it.
    pub kid: u8,
    /// The GCM nonce (random per sealing).
    pub nonce: [u8; 12],
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed({} bytes)", self.ciphertext.len())
    }
}

/// One login's state.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyRecord {
    /// Compare-and-swap version, bumped by the store on every write.
    pub version: u64,
    /// The generation of the current handle.
    pub generation: u32,
    /// Digest of the current handle's secret.
    pub current_digest: [u8; 32],
    /// Digest of the previous generation's secret (none at generation 0).
    pub previous_digest: Option<[u8; 32]>,
    /// Randomness of the next successor: `successor = HMAC(K_succ, family | gen+1 |
    /// secret | r)`. Chosen when this generation was made, so every node derives the
    /// same successor.
    pub successor_r: [u8; 32],
    /// The `r` that derived the current secret from the previous one (so a request
    /// with the predecessor re-derives exactly the current handle).
    pub previous_r: [u8; 32],
    /// The kid of the key that derived the current secret (key rollover safe).
    pub derive_kid: u8,
    /// When the current generation was made (Unix seconds).
    pub rotated_at: u64,
    /// When the current generation was first presented (the predecessor's successor
    /// was seen); `None` while never.
    pub successor_seen_at: Option<u64>,
    /// Predecessor requests accepted since the successor was seen (≤ 64).
    pub predecessor_uses: u32,
    /// Set when the family is revoked (a tombstone).
    pub revoked: Option<Revocation>,
    /// Login time (Unix seconds).
    pub created: u64,
    /// Last request (Unix seconds; written at most every touch interval).
    pub last_seen: u64,
    /// `session.idle_timeout` in seconds when the record was last written (so a store
    /// can expire it on its own: Redis TTLs, cleanup).
    pub idle_timeout: u64,
    /// Absolute end: login + `absolute_timeout`, capped by the captured cookie's own
    /// `Max-Age`/`Expires`.
    pub absolute_deadline: u64,
    /// The app's user, when known (subject index, revoke by subject).
    pub subject: Option<String>,
    /// Claims for access rules, as JSON bytes.
    pub claims: Vec<u8>,
    /// The captured app cookies.
    pub credentials: Sealed,
}

impl fmt::Debug for FamilyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // digests, randomness and credentials are never printed
        f.debug_struct("FamilyRecord")
            .field("version", &self.version)
            .field("generation", &self.generation)
            .field("rotated_at", &self.rotated_at)
            .field("successor_seen_at", &self.successor_seen_at)
            .field("predecessor_uses", &self.predecessor_uses)
            .field("revoked", &self.revoked)
            .field("created", &self.created)
            .field("last_seen", &self.last_seen)
            .field("absolute_deadline", &self.absolute_deadline)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl FamilyRecord {
    /// A record for store tests and benchmarks, never built on the request path:
    /// generation 0 of a login of `subject` created at `created` (30 min idle, 12 h
    /// absolute), fixed digests and randomness, no claims, and a dummy sealed blob of
    /// `sealed_len` bytes.
    #[doc(hidden)]
    pub fn sample(subject: Option<&str>, created: u64, sealed_len: usize) -> FamilyRecord {
        FamilyRecord {
            version: 0,
            generation: 0,
            current_digest: [1; 32],
            previous_digest: None,
            successor_r: [2; 32],
            previous_r: [0; 32],
            derive_kid: 0,
            rotated_at: created,
            successor_seen_at: None,
            predecessor_uses: 0,
            revoked: None,
            created,
            last_seen: created,
            idle_timeout: 1800,
            absolute_deadline: created + 43_200,
            subject: subject.map(str::to_string),
            claims: Vec::new(),
            credentials: Sealed {
                kid: 0,
                nonce: [0; 12],
                ciphertext: vec![9; sealed_len],
            },
        }
    }

    /// When the family ends if nothing happens: the idle deadline or the absolute one,
    /// whichever is first.
    pub fn expires_at(&self) -> u64 {
        self.last_seen
            .saturating_add(self.idle_timeout)
            .min(self.absolute_deadline)
    }

    /// True when the record is a live family past its idle or absolute deadline.
    pub fn expired(&self, now: u64) -> bool {
        now >= self.expires_at()
    }

    /// When a store may forget the record: a live family when it expires; a tombstone
    /// at the absolute deadline (until then it answers its handles with the logout).
    pub fn keep_until(&self) -> u64 {
        match self.revoked {
            Some(_) => self.absolute_deadline,
            None => self.expires_at(),
        }
    }

    /// True when a cleanup pass may remove it (see [`FamilyRecord::keep_until`]).
    pub fn removable(&self, now: u64) -> bool {
        now >= self.keep_until()
    }

    /// Encodes for the store (postcard: compact, versioned by the first byte).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![RECORD_FORMAT];
        // Serializing plain data into a Vec cannot fail.
        out.extend(postcard::to_stdvec(self).unwrap_or_default());
        out
    }

    /// Decodes what [`FamilyRecord::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<FamilyRecord, String> {
        match bytes.split_first() {
            Some((&RECORD_FORMAT, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
            Some((v, _)) => Err(format!("unknown record format {v}")),
            None => Err("empty record".into()),
        }
    }
}

/// The first byte of every encoded record.
const RECORD_FORMAT: u8 = 1;
