//! When a valid token is re-minted and what the new one says (DESIGN §4.1), for any
//! token format: pure functions over the claims and "now".

use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Map, Value};

use super::Invalid;

/// Session timing from `[session]`.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// `rotate_every`.
    pub rotate_every: Duration,
    /// `absolute_timeout`, counted from the first issue time.
    pub absolute_timeout: Duration,
    /// `idle_timeout`: a token not re-minted for this long is dead.
    pub idle_timeout: Option<Duration>,
    /// Allowed clock skew for `exp`/`nbf`.
    pub leeway: Duration,
}

/// Claim that carries the first issue time when the token has no `auth_time`.
pub const RG_AUTH_TIME: &str = "rg_auth_time";

fn num(claims: &Map<String, Value>, k: &str) -> Option<u64> {
    claims.get(k).and_then(|v| {
        v.as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
    })
}

/// The first issue time: `auth_time` (OIDC), else `rg_auth_time`, else `iat`.
pub fn first_issued(claims: &Map<String, Value>) -> Option<u64> {
    num(claims, "auth_time")
        .or_else(|| num(claims, RG_AUTH_TIME))
        .or_else(|| num(claims, "iat"))
}

/// Time checks of a verified token: expiry (with leeway), not-before, absolute age and
/// idleness.
pub fn check_times(claims: &Map<String, Value>, now: u64, t: &Timing) -> Result<(), Invalid> {
    let leeway = t.leeway.as_secs();
    if claims.contains_key("exp") {
        let exp = num(claims, "exp").ok_or(Invalid::Malformed)?;
        if exp.saturating_add(leeway) <= now {
            return Err(Invalid::Expired);
        }
    }
    if claims.contains_key("nbf") {
        let nbf = num(claims, "nbf").ok_or(Invalid::Malformed)?;
        if nbf > now.saturating_add(leeway) {
            return Err(Invalid::NotYetValid);
        }
    }
    if let Some(first) = first_issued(claims) {
        if first.saturating_add(t.absolute_timeout.as_secs()) <= now {
            return Err(Invalid::OverAge);
        }
    }
    if let (Some(idle), Some(iat)) = (t.idle_timeout, num(claims, "iat")) {
        // stateless: every rotation refreshes iat, so an old iat means no activity
        if iat.saturating_add(idle.as_secs()) <= now {
            return Err(Invalid::Expired);
        }
    }
    Ok(())
}

/// True when a valid token is due for re-minting (no `iat` counts as due: it is
/// stamped from first sight).
pub fn due(claims: &Map<String, Value>, now: u64, t: &Timing) -> bool {
    match num(claims, "iat") {
        Some(iat) => now.saturating_sub(iat) >= t.rotate_every.as_secs(),
        None => true,
    }
}

/// The claims of the re-minted token and its lifetime in seconds from `now`. A `jti`
/// is replaced when present, and added when `always_jti` (formats that always have one).
pub fn reissue(
    claims: &Map<String, Value>,
    now: u64,
    t: &Timing,
    always_jti: bool,
) -> (Map<String, Value>, u64) {
    let mut next = claims.clone();
    let iat = num(claims, "iat");
    let first = first_issued(claims).unwrap_or(now);
    let lifetime = match (iat, num(claims, "exp")) {
        (Some(i), Some(e)) if e > i => e - i,
        _ => t.absolute_timeout.as_secs(),
    };
    let cap = first.saturating_add(t.absolute_timeout.as_secs());
    let exp = now.saturating_add(lifetime).min(cap).max(now);
    if !claims.contains_key("auth_time") && !claims.contains_key(RG_AUTH_TIME) {
        next.insert(RG_AUTH_TIME.into(), Value::from(first));
    }
    next.insert("iat".into(), Value::from(now));
    next.insert("exp".into(), Value::from(exp));
    if always_jti || claims.contains_key("jti") {
        next.insert("jti".into(), Value::String(new_jti()));
    }
    (next, exp - now)
}

/// A random UUID v4, as Auth.js and most JWT libraries write `jti`.
pub fn new_jti() -> String {
    let mut b = [0u8; 16];
    // SystemRandom only fails when the OS has no entropy source; a zero jti is still
    // unique enough paired with iat, and never a reason to fail a request
    let _ = SystemRandom::new().fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t() -> Timing {
        Timing {
            rotate_every: Duration::from_secs(300),
            absolute_timeout: Duration::from_secs(12 * 3600),
            idle_timeout: None,
            leeway: Duration::from_secs(30),
        }
    }
    fn m(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn due_exactly_at_rotate_every() {
        let c = m(json!({"iat": 1000, "exp": 4600}));
        assert!(!due(&c, 1299, &t()));
        assert!(due(&c, 1300, &t()));
        assert!(due(&m(json!({"sub": "x"})), 1, &t()));
    }

    #[test]
    fn reissue_keeps_claims_and_lifetime_and_first_issue() {
        let c = m(json!({"sub": "u1", "role": ["a"], "iat": 1000, "exp": 4600, "jti": "old"}));
        let (n, life) = reissue(&c, 2000, &t(), false);
        assert_eq!(n["iat"], 2000);
        assert_eq!(n["exp"], 5600);
        assert_eq!(life, 3600);
        assert_eq!(n["sub"], "u1");
        assert_eq!(n["role"], json!(["a"]));
        assert_eq!(n[RG_AUTH_TIME], 1000);
        assert_ne!(n["jti"], "old");
        // the next rotation keeps the first issue time
        let (n2, _) = reissue(&n, 3000, &t(), false);
        assert_eq!(n2[RG_AUTH_TIME], 1000);
    }

    #[test]
    fn reissue_is_capped_by_absolute_timeout() {
        let c = m(json!({"iat": 1000, "exp": 4600, "auth_time": 1000}));
        let now = 1000 + 12 * 3600 - 600;
        let (n, life) = reissue(&c, now, &t(), false);
        assert_eq!(life, 600);
        assert_eq!(n["exp"], 1000 + 12 * 3600);
        assert!(
            !n.contains_key(RG_AUTH_TIME),
            "auth_time already carries it"
        );
        assert!(!n.contains_key("jti"));
    }

    #[test]
    fn jti_is_a_uuid_v4() {
        let j = new_jti();
        assert_eq!(j.len(), 36);
        let parts: Vec<&str> = j.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert_ne!(new_jti(), j);
    }

    #[test]
    fn time_checks() {
        let c = m(json!({"iat": 1000, "exp": 2000}));
        assert_eq!(check_times(&c, 2029, &t()), Ok(()));
        assert_eq!(check_times(&c, 2030, &t()), Err(Invalid::Expired));
        let c = m(json!({"iat": 1000, "nbf": 5000}));
        assert_eq!(check_times(&c, 1000, &t()), Err(Invalid::NotYetValid));
        let c = m(json!({"iat": 1000, "exp": 99_999_999}));
        assert_eq!(
            check_times(&c, 1000 + 12 * 3600, &t()),
            Err(Invalid::OverAge)
        );
        let c = m(json!({"exp": "soon"}));
        assert_eq!(check_times(&c, 1, &t()), Err(Invalid::Malformed));
        let mut idle = t();
        idle.idle_timeout = Some(Duration::from_secs(600));
        assert_eq!(
            check_times(&m(json!({"iat": 1000})), 1600, &idle),
            Err(Invalid::Expired)
        );
    }
}
