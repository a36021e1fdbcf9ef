//! The decisions of upstream choice, as pure functions: which address a request goes
//! to, whether a failed connect is tried again elsewhere, and when active health
//! checks flip an address.

use crate::config::HealthCheck;

/// Most times one request is sent again to another address after a connect failure.
pub const MAX_CONNECT_RETRIES: u8 = 2;

/// The address for the next attempt among `n` (at most 64), starting the round at
/// `start`. `tried` has bit `i` set for each address this request already tried.
///
/// Preference: an untried address that is `usable` (healthy and not ejected), then any
/// untried address, then `start`. Choosing an unusable address when none is usable is
/// deliberate (fail open): health checks and ejections can be wrong, and a real attempt
/// that fails answers 502 just as refusing would.
pub fn pick(n: usize, start: usize, tried: u64, usable: impl Fn(usize) -> bool) -> usize {
    if n <= 1 {
        return 0;
    }
    let order = (0..n).map(|k| (start + k) % n);
    let untried = |i: &usize| tried & (1u64 << i) == 0;
    order
        .clone()
        .find(|i| untried(i) && usable(*i))
        .or_else(|| order.clone().find(untried))
        .unwrap_or(start % n)
}

/// Whether a request whose connection to an address could not be made (nothing of it
/// was sent) goes to another address: only idempotent methods (RFC 9110 §9.2.2: GET,
/// HEAD, OPTIONS, PUT, DELETE, TRACE), at most [`MAX_CONNECT_RETRIES`] times, and only
/// while one of the `n` addresses is still untried.
pub fn retry_connect(idempotent: bool, retries: u8, n: usize, tried: u64) -> bool {
    let all = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
    idempotent && retries < MAX_CONNECT_RETRIES && tried & all != all
}

/// One address's run of health probe results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracker {
    /// What the probes say now.
    pub healthy: bool,
    passes: u32,
    fails: u32,
}

impl Tracker {
    /// A tracker starting at `healthy` (addresses start healthy: assumed up until
    /// probes say otherwise, so a start or reload never refuses traffic by itself).
    pub fn new(healthy: bool) -> Tracker {
        Tracker {
            healthy,
            passes: 0,
            fails: 0,
        }
    }

    /// Records one probe; returns the new state when this probe flipped it:
    /// `healthy_threshold` passes in a row make an unhealthy address healthy,
    /// `unhealthy_threshold` failures in a row make a healthy one unhealthy.
    pub fn observe(&mut self, passed: bool, hc: &HealthCheck) -> Option<bool> {
        if passed {
            self.fails = 0;
            self.passes = self.passes.saturating_add(1);
            if !self.healthy && self.passes >= hc.healthy_threshold {
                self.healthy = true;
                return Some(true);
            }
        } else {
            self.passes = 0;
            self.fails = self.fails.saturating_add(1);
            if self.healthy && self.fails >= hc.unhealthy_threshold {
                self.healthy = false;
                return Some(false);
            }
        }
        None
    }
}

/// Whether a request may be sent again after (part of) it went out on a connection
/// that broke: only a safe method (RFC 9110 §9.2.1: GET, HEAD, OPTIONS, TRACE), whose
/// repetition cannot change anything, and only while its body is still buffered.
pub fn resend_after_send(method: &http::Method, body_truncated: bool) -> bool {
    method.is_safe() && !body_truncated
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_safe_methods_are_resent_once_sent() {
        use http::Method;
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(resend_after_send(&m, false), "{m}");
            assert!(!resend_after_send(&m, true), "{m}");
        }
        for m in [Method::PUT, Method::DELETE, Method::POST, Method::PATCH] {
            assert!(!resend_after_send(&m, false), "{m}");
        }
    }

    use super::*;
    use std::time::Duration;

    #[test]
    fn round_robin_over_usable_addresses() {
        let all = |_| true;
        assert_eq!(pick(3, 0, 0, all), 0);
        assert_eq!(pick(3, 1, 0, all), 1);
        assert_eq!(pick(3, 5, 0, all), 2);
        // address 1 is down: its turn goes to the next
        let not1 = |i| i != 1;
        assert_eq!(pick(3, 1, 0, not1), 2);
        assert_eq!(pick(1, 7, u64::MAX, |_| false), 0);
    }

    #[test]
    fn retries_go_to_untried_addresses_and_fail_open() {
        // tried 0: the next untried usable one
        assert_eq!(pick(3, 0, 0b001, |_| true), 1);
        // none usable: still an untried one (fail open)
        assert_eq!(pick(3, 0, 0b001, |_| false), 1);
        // usable ones tried already: an untried unusable one beats a tried usable one
        assert_eq!(pick(3, 0, 0b011, |i| i < 2), 2);
        // everything tried: the round's start
        assert_eq!(pick(3, 2, 0b111, |_| true), 2);
        assert_eq!(pick(64, 63, 0, |_| true), 63);
    }

    #[test]
    fn only_idempotent_requests_retry_and_boundedly() {
        assert!(retry_connect(true, 0, 2, 0b01));
        assert!(!retry_connect(false, 0, 2, 0b01), "never a POST");
        assert!(!retry_connect(true, 0, 2, 0b11), "nothing left to try");
        assert!(!retry_connect(true, 0, 1, 0b1), "one address");
        assert!(retry_connect(true, 1, 3, 0b011));
        assert!(!retry_connect(true, MAX_CONNECT_RETRIES, 5, 0b111));
        assert!(retry_connect(true, 0, 64, 1));
        assert!(!retry_connect(true, 0, 64, u64::MAX));
    }

    #[test]
    fn thresholds_flip_the_state() {
        let hc = HealthCheck {
            path: "/h".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        };
        let mut t = Tracker::new(true);
        assert_eq!(t.observe(false, &hc), None);
        assert_eq!(t.observe(false, &hc), None);
        assert_eq!(t.observe(true, &hc), None, "a pass breaks the run");
        assert_eq!(t.observe(false, &hc), None);
        assert_eq!(t.observe(false, &hc), None);
        assert_eq!(t.observe(false, &hc), Some(false));
        assert_eq!(t.observe(false, &hc), None, "already down");
        assert_eq!(t.observe(true, &hc), None);
        assert_eq!(t.observe(true, &hc), Some(true));
        assert!(t.healthy);
    }
}
