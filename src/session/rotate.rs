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

/// What a verified token's claims must say, beyond its times (`[session.reissue]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// `require_exp` (default true): a token without `exp` is not a session.
    pub require_exp: bool,
    /// `issuer`: `iss` must equal it.
    pub issuer: Option<String>,
    /// `audience`: `aud` (a string or an array) must name it.
    pub audience: Option<String>,
}

/// Checks the claims `policy` asks for: `exp` present, `iss`, `aud`. A token that fails
/// is refused but not deleted: the policy is rotagate's configuration, not the token's
/// death.
pub fn check_claims(claims: &Map<String, Value>, policy: &Policy) -> Result<(), Invalid> {
    if policy.require_exp && !claims.contains_key("exp") {
        return Err(Invalid::MissingExp);
    }
    if let Some(iss) = &policy.issuer {
        if claims.get("iss").and_then(Value::as_str) != Some(iss.as_str()) {
            return Err(Invalid::WrongIssuer);
        }
    }
    if let Some(aud) = &policy.audience {
        let ok = match claims.get("aud") {
            Some(Value::String(s)) => s == aud,
            Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(aud.as_str())),
            _ => false,
        };
        if !ok {
            return Err(Invalid::WrongAudience);
        }
    }
    Ok(())
}

fn num(claims: &Map<String, Value>, k: &str) -> Option<u64> {
    claims.get(k).and_then(|v| {
        v.as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
    })
}

/// The first issue time: `auth_time` (OIDC) or `rg_auth_time`, the earlier when both
/// are present (rotagate adds `rg_auth_time` next to an `auth_time` only to carry a
/// stricter limit), else `iat`.
pub fn first_issued(claims: &Map<String, Value>) -> Option<u64> {
    match (num(claims, "auth_time"), num(claims, RG_AUTH_TIME)) {
        (Some(a), Some(r)) => Some(a.min(r)),
        (a, r) => a.or(r).or_else(|| num(claims, "iat")),
    }
}

/// The time claims rotagate reads. One that is present but not a non-negative number
/// makes the token malformed: a limit rotagate cannot read is one it cannot enforce
/// (an unreadable `auth_time` would otherwise let every re-mint count its
/// `absolute_timeout` from the previous `iat`, forever).
const TIME_CLAIMS: [&str; 5] = ["exp", "nbf", "iat", "auth_time", RG_AUTH_TIME];

/// Time checks of a verified token: readable time claims, expiry (with leeway),
/// not-before and issued-at not in the future, a bounded first issue time, absolute
/// age and idleness.
pub fn check_times(claims: &Map<String, Value>, now: u64, t: &Timing) -> Result<(), Invalid> {
    if TIME_CLAIMS
        .iter()
        .any(|k| claims.contains_key(*k) && num(claims, k).is_none())
    {
        return Err(Invalid::Malformed);
    }
    let leeway = t.leeway.as_secs();
    if let Some(exp) = num(claims, "exp") {
        if exp.saturating_add(leeway) <= now {
            return Err(Invalid::Expired);
        }
    }
    // a token issued in the future would never be due, idle or over age
    if num(claims, "nbf")
        .into_iter()
        .chain(num(claims, "iat"))
        .any(|at| at > now.saturating_add(leeway))
    {
        return Err(Invalid::NotYetValid);
    }
    match first_issued(claims) {
        Some(first) if first.saturating_add(t.absolute_timeout.as_secs()) <= now => {
            return Err(Invalid::OverAge);
        }
        // neither an exp nor a first issue time (`require_exp = false`): nothing would
        // bound it, and each replay would be re-minted as if first seen now
        None if !claims.contains_key("exp") => return Err(Invalid::MissingExp),
        // within age; or no first issue time yet, and the re-mint takes one from its
        // exp (see `reissue`)
        _ => {}
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

/// The claims of the re-minted token and its lifetime in seconds from `now` (`None`:
/// the token has no `exp`, and neither has its re-mint). A `jti` is replaced when
/// present, and added when `always_jti` (formats that always have one).
///
/// The new `exp` is now + the token's own lifetime (`exp − iat`, at least 0, or
/// `absolute_timeout` when it has no `iat`), capped at first issue + `absolute_timeout`. A token without
/// `iat` keeps its own `exp` as its limit: its first issue time is taken as the earliest
/// that `exp` allows (`exp − absolute_timeout`) and carried in `rg_auth_time`, so no
/// re-mint, now or later, outlives the `exp` it came with.
pub fn reissue(
    claims: &Map<String, Value>,
    now: u64,
    t: &Timing,
    always_jti: bool,
) -> (Map<String, Value>, Option<u64>) {
    let mut next = claims.clone();
    let absolute = t.absolute_timeout.as_secs();
    let iat = num(claims, "iat");
    let exp = num(claims, "exp");
    let mut first = first_issued(claims);
    if let (None, Some(e)) = (iat, exp) {
        let earliest = e.saturating_sub(absolute);
        if first.is_none_or(|f| f > earliest) {
            next.insert(RG_AUTH_TIME.into(), Value::from(earliest));
            first = Some(earliest);
        }
    }
    // only verified claims come here, and `check_times` refuses a token with neither an
    // exp nor a first issue time: `now` is never what bounds a replayed token
    let first = first.unwrap_or(now);
    if num(claims, "auth_time").is_none() && !next.contains_key(RG_AUTH_TIME) {
        next.insert(RG_AUTH_TIME.into(), Value::from(first));
    }
    next.insert("iat".into(), Value::from(now));
    let lifetime = exp.map(|e| {
        // the token's own lifetime (none left when exp <= iat); without iat it is
        // bounded by the cap, which the rg_auth_time above puts at its own exp
        let own = iat.map_or(absolute, |i| e.saturating_sub(i));
        let cap = first.saturating_add(absolute);
        let new_exp = now.saturating_add(own).min(cap).max(now);
        next.insert("exp".into(), Value::from(new_exp));
        new_exp - now
    });
    if always_jti || claims.contains_key("jti") {
        next.insert("jti".into(), Value::String(new_jti()));
    }
    (next, lifetime)
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
        assert_eq!(life, Some(3600));
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
        assert_eq!(life, Some(600));
        assert_eq!(n["exp"], 1000 + 12 * 3600);
        assert!(
            !n.contains_key(RG_AUTH_TIME),
            "auth_time already carries it"
        );
        assert!(!n.contains_key("jti"));
    }

    #[test]
    fn a_token_without_iat_never_outlives_its_exp() {
        let abs = 12 * 3600;
        let mut c = m(json!({"sub": "u", "exp": 100_000 + 600}));
        for now in [100_000, 100_400, 100_590] {
            let (n, life) = reissue(&c, now, &t(), false);
            assert_eq!(n["exp"], 100_600, "at {now}");
            assert_eq!(life, Some(100_600 - now));
            assert_eq!(n[RG_AUTH_TIME], 100_600 - abs);
            assert_eq!(check_times(&n, now, &t()), Ok(()));
            c = n;
        }
        assert_eq!(check_times(&c, 100_600, &t()), Err(Invalid::OverAge));
        // with an auth_time that allows more, the stricter limit still travels
        let c = m(json!({"auth_time": 100_000, "exp": 100_600}));
        let (n, _) = reissue(&c, 100_100, &t(), false);
        assert_eq!(first_issued(&n), Some(100_600 - abs));
        assert_eq!(n["auth_time"], 100_000, "the app's claim is kept");
        let (n2, _) = reissue(&n, 100_500, &t(), false);
        assert_eq!(n2["exp"], 100_600);
    }

    #[test]
    fn a_token_without_exp_is_reminted_without_one() {
        let c = m(json!({"sub": "u", "iat": 1000}));
        let (n, life) = reissue(&c, 2000, &t(), false);
        assert_eq!(life, None);
        assert!(!n.contains_key("exp"));
        assert_eq!(n[RG_AUTH_TIME], 1000);
        assert_eq!(
            check_times(&n, 1000 + 12 * 3600, &t()),
            Err(Invalid::OverAge),
            "absolute_timeout still ends it"
        );
    }

    #[test]
    fn claims_policy() {
        let p = Policy {
            require_exp: true,
            issuer: Some("https://i".into()),
            audience: Some("app".into()),
        };
        let ok = m(json!({"exp": 1, "iss": "https://i", "aud": ["x", "app"]}));
        assert_eq!(check_claims(&ok, &p), Ok(()));
        for (c, why) in [
            (
                json!({"iss": "https://i", "aud": "app"}),
                Invalid::MissingExp,
            ),
            (
                json!({"exp": 1, "iss": "https://j", "aud": "app"}),
                Invalid::WrongIssuer,
            ),
            (json!({"exp": 1, "aud": "app"}), Invalid::WrongIssuer),
            (
                json!({"exp": 1, "iss": "https://i", "aud": "x"}),
                Invalid::WrongAudience,
            ),
            (
                json!({"exp": 1, "iss": "https://i", "aud": 5}),
                Invalid::WrongAudience,
            ),
            (
                json!({"exp": 1, "iss": "https://i"}),
                Invalid::WrongAudience,
            ),
        ] {
            assert_eq!(check_claims(&m(c.clone()), &p), Err(why), "{c}");
        }
        let lax = Policy::default();
        assert_eq!(check_claims(&m(json!({"sub": "u"})), &lax), Ok(()));
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

    #[test]
    fn unreadable_time_claims_are_malformed() {
        for k in ["auth_time", RG_AUTH_TIME, "iat", "nbf", "exp"] {
            for bad in [json!(null), json!("1000"), json!(-5), json!([1])] {
                let mut c = m(json!({"iat": 1000, "exp": 4600}));
                c.insert(k.into(), bad.clone());
                assert_eq!(
                    check_times(&c, 2000, &t()),
                    Err(Invalid::Malformed),
                    "{k}: {bad}"
                );
            }
        }
        // a readable auth_time still counts, fractions included
        let c = m(json!({"iat": 1000, "exp": 4600, "auth_time": 999.5}));
        assert_eq!(check_times(&c, 2000, &t()), Ok(()));
    }

    #[test]
    fn a_token_with_no_exp_and_no_first_issue_time_is_refused() {
        assert_eq!(
            check_times(&m(json!({"sub": "u"})), 1000, &t()),
            Err(Invalid::MissingExp)
        );
        // any one of them bounds it
        for c in [
            json!({"sub": "u", "iat": 900}),
            json!({"sub": "u", "auth_time": 900}),
            json!({"sub": "u", RG_AUTH_TIME: 900}),
            json!({"sub": "u", "exp": 4600}),
        ] {
            assert_eq!(check_times(&m(c.clone()), 1000, &t()), Ok(()), "{c}");
        }
    }

    #[test]
    fn a_token_issued_in_the_future_is_not_yet_valid() {
        let c = m(json!({"iat": 1031, "exp": 4600}));
        assert_eq!(check_times(&c, 1000, &t()), Err(Invalid::NotYetValid));
        assert!(!Invalid::NotYetValid.certainly_dead());
        // within leeway: a clock a little ahead
        let c = m(json!({"iat": 1030, "exp": 4600}));
        assert_eq!(check_times(&c, 1000, &t()), Ok(()));
    }

    #[test]
    fn a_token_with_no_lifetime_gets_none_on_reissue() {
        for (iat, exp) in [(1000, 1000), (1000, 990)] {
            let c = m(json!({"iat": iat, "exp": exp}));
            let (n, life) = reissue(&c, 1010, &t(), false);
            assert_eq!(life, Some(0), "exp {exp} iat {iat}");
            assert_eq!(n["exp"], 1010);
        }
    }
}
