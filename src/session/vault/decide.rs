//! The per-request algorithm of DESIGN §4.2 as a pure function: a verified handle, the
//! family's record and the time in; a verdict and the record to write out. No I/O, no
//! clock, no randomness of its own (the caller passes the fresh successor randomness),
//! so every case is a unit test.

use ring::{digest as sha, hmac};

use super::handle::Handle;
use super::keys::Keys;
use super::{creds, Accepted, AnonReason, MAX_PREDECESSOR_USES};
use crate::store::{FamilyId, FamilyRecord, RevokeReason};

/// The timings of one configuration, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Rotation interval before jitter.
    pub rotate_every: u64,
    /// Idle limit.
    pub idle: u64,
    /// Absolute limit.
    pub absolute: u64,
    /// Predecessor grace after the successor was first seen.
    pub slack: u64,
}

impl Timing {
    /// How stale `last_seen` may get before a request writes it: a tenth of the idle
    /// limit, at most a minute (bounds the idle error, spares a write per request).
    pub fn touch_every(&self) -> u64 {
        (self.idle / 10).clamp(1, 60)
    }

    /// The rotation interval of one generation: `rotate_every` ± 10 %, decided by the
    /// generation's successor randomness, so every node agrees on it and families
    /// spread out instead of rotating in step.
    pub fn rotation_interval(&self, record: &FamilyRecord) -> u64 {
        let x = u16::from_be_bytes([record.successor_r[0], record.successor_r[1]]) as u64;
        // per mille in 900..=1100
        self.rotate_every.saturating_mul(900 + x % 201) / 1000
    }
}

/// Digest of a handle secret, as the record keeps it. Unkeyed on purpose: the secrets
/// are 32 random bytes (nothing to guess), and a digest that needs no key survives key
/// rollover.
pub fn digest(secret: &[u8; 32]) -> [u8; 32] {
    let mut ctx = sha::Context::new(&sha::SHA256);
    ctx.update(b"rotagate vault secret v1");
    ctx.update(secret);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The successor secret: HMAC(K_succ, family | next generation | secret | r). Every
/// request holding `secret`, on any node, derives the same bytes.
pub fn successor(
    key: &hmac::Key,
    family: &FamilyId,
    next_generation: u32,
    secret: &[u8; 32],
    r: &[u8; 32],
) -> [u8; 32] {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(&family.0);
    ctx.update(&next_generation.to_be_bytes());
    ctx.update(secret);
    ctx.update(r);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// What the record needs written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Nothing.
    None,
    /// Bookkeeping whose loss is harmless (successor first seen, predecessor uses,
    /// `last_seen`): may be batched with other requests of the family and written
    /// after the response (a lost one only makes the next request more lenient).
    Soft(FamilyRecord),
    /// A change a `Set-Cookie` or a security decision depends on (a rotation, a
    /// revocation): compare-and-swap, durably, before answering.
    Hard(FamilyRecord),
}

/// The verdict for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No session (see the reason).
    Anonymous(AnonReason),
    /// The family is a tombstone.
    Tombstone(RevokeReason),
    /// Reuse detected: write the tombstone ([`Write::Hard`]) and log the user out.
    Reuse(FamilyRecord),
    /// Accepted.
    Accept {
        /// How.
        accepted: Accepted,
        /// The handle the browser holds after this response (its generation is the
        /// record's current one).
        current: Handle,
        /// What to write.
        write: Write,
    },
}

/// Decides one request. `record` is the family's stored record, `handle` the verified
/// handle, `fresh_r` the randomness a rotation would give the new generation.
pub fn judge(
    record: &FamilyRecord,
    handle: &Handle,
    now: u64,
    timing: &Timing,
    keys: &Keys,
    may_rotate: bool,
    fresh_r: [u8; 32],
) -> Verdict {
    if let Some(rev) = record.revoked {
        return Verdict::Tombstone(rev.reason);
    }
    if record.expired(now) {
        return Verdict::Anonymous(AnonReason::Expired);
    }
    let current_gen = record.generation;
    if handle.generation > current_gen {
        return Verdict::Anonymous(AnonReason::Ahead);
    }
    let mut next = record.clone();
    let mut soft = false;
    if now.saturating_sub(record.last_seen) >= timing.touch_every() {
        next.last_seen = now;
        next.idle_timeout = timing.idle;
        soft = true;
    }

    if handle.generation == current_gen {
        if !crate::secret::ct_eq(&digest(&handle.secret), &record.current_digest) {
            return Verdict::Anonymous(AnonReason::SecretMismatch);
        }
        if record.successor_seen_at.is_none() && current_gen > 0 {
            next.successor_seen_at = Some(now);
            soft = true;
        }
        let due = now
            >= record
                .rotated_at
                .saturating_add(timing.rotation_interval(record));
        if due && may_rotate {
            let active = keys.active();
            let next_gen = current_gen.wrapping_add(1);
            let secret = successor(
                &active.successor,
                &handle.family,
                next_gen,
                &handle.secret,
                &record.successor_r,
            );
            next.generation = next_gen;
            next.previous_digest = Some(record.current_digest);
            next.current_digest = digest(&secret);
            next.previous_r = record.successor_r;
            next.successor_r = fresh_r;
            next.derive_kid = active.kid;
            next.rotated_at = now;
            next.successor_seen_at = None;
            next.predecessor_uses = 0;
            next.last_seen = now;
            next.idle_timeout = timing.idle;
            // key rollover: credentials sealed under an older secret move to the active one
            if record.credentials.kid != active.kid {
                if let Ok(cookies) = creds::open(keys, &handle.family, &record.credentials) {
                    next.credentials = creds::seal(keys, &handle.family, &cookies);
                }
            }
            return Verdict::Accept {
                accepted: Accepted::Rotated,
                current: Handle {
                    kid: active.kid,
                    family: handle.family,
                    generation: next_gen,
                    secret,
                },
                write: Write::Hard(next),
            };
        }
        return Verdict::Accept {
            accepted: Accepted::Current,
            current: handle.clone(),
            write: if soft { Write::Soft(next) } else { Write::None },
        };
    }

    if handle.generation.wrapping_add(1) == current_gen {
        let Some(previous) = record.previous_digest else {
            return Verdict::Anonymous(AnonReason::SecretMismatch);
        };
        if !crate::secret::ct_eq(&digest(&handle.secret), &previous) {
            return Verdict::Anonymous(AnonReason::SecretMismatch);
        }
        let within_slack = match record.successor_seen_at {
            None => false,
            Some(seen) => {
                if now >= seen.saturating_add(timing.slack)
                    || record.predecessor_uses >= MAX_PREDECESSOR_USES
                {
                    return reuse(record, now);
                }
                true
            }
        };
        // the successor is derived again, under the key that first derived it
        let derived = keys.by_kid(record.derive_kid).find_map(|set| {
            let s = successor(
                &set.successor,
                &handle.family,
                current_gen,
                &handle.secret,
                &record.previous_r,
            );
            crate::secret::ct_eq(&digest(&s), &record.current_digest).then_some(s)
        });
        // minted under the kid that rotated it: byte-identical to the rotating
        // response's cookie even across a key rollover in between
        let Some(secret) = derived else {
            return Verdict::Anonymous(if keys.by_kid(record.derive_kid).next().is_none() {
                AnonReason::KeyRetired
            } else {
                AnonReason::SecretMismatch
            });
        };
        if within_slack {
            next.predecessor_uses = record.predecessor_uses + 1;
            soft = true;
        }
        return Verdict::Accept {
            accepted: if within_slack {
                Accepted::PredecessorSlack
            } else {
                Accepted::PredecessorUnseen
            },
            current: Handle {
                kid: record.derive_kid,
                family: handle.family,
                generation: current_gen,
                secret,
            },
            write: if soft { Write::Soft(next) } else { Write::None },
        };
    }

    // older than the immediate predecessor: reuse
    reuse(record, now)
}

/// The tombstone of a reuse.
fn reuse(record: &FamilyRecord, now: u64) -> Verdict {
    Verdict::Reuse(tombstone(record, RevokeReason::Reuse, now))
}

/// `record` revoked: credentials and claims dropped, subject and times kept (listing).
pub fn tombstone(record: &FamilyRecord, reason: RevokeReason, now: u64) -> FamilyRecord {
    let mut t = record.clone();
    t.revoked = Some(crate::store::Revocation { reason, at: now });
    t.credentials = Default::default();
    t.claims = Vec::new();
    t
}
