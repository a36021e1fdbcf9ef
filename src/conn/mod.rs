//! Connection guards: the time limits, the connection limit and the lingering close that
//! keep slow or greedy clients from holding the proxy (DESIGN §10, "bounded work").
//!
//! This file decides (pure functions over phases, instants and errors, unit-tested);
//! [`stream`] is the pingora IO wrapper that enforces the decisions on each socket, and
//! `server.rs` runs the accept loop and the per-connection request loop around it.

pub mod stream;

use std::io;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::ConnLimits;

/// What a client connection is doing, as far as its time limits go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Reading a request's header block: `header_timeout`, counted from the block's
    /// first byte (from the accept, for a connection's first request).
    Header = 0,
    /// Between two requests: `keepalive_timeout`, counted from the end of the last one.
    Idle = 1,
    /// A request is being served (or the connection speaks HTTP/2): no deadline here;
    /// pingora applies `body_timeout` to each body read and write, and HTTP/2 its own
    /// idle timeout.
    Busy = 2,
}

impl Phase {
    /// The phase stored as `n` by [`Phase::as_u8`]; unknown values read as `Busy` (no
    /// deadline), which only a bug could produce.
    pub fn from_u8(n: u8) -> Phase {
        match n {
            0 => Phase::Header,
            1 => Phase::Idle,
            _ => Phase::Busy,
        }
    }

    /// The phase as a byte, for an atomic.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The phase after bytes arrived from the client: the first byte after an idle
    /// wait starts the next request's header block.
    pub fn on_bytes(self) -> Phase {
        match self {
            Phase::Idle => Phase::Header,
            other => other,
        }
    }
}

/// When a connection in `phase` since `since` must have made progress, or `None` when
/// the phase has no deadline of ours.
pub fn deadline(phase: Phase, since: Instant, limits: &ConnLimits) -> Option<Instant> {
    match phase {
        Phase::Header => Some(since + limits.header_timeout),
        Phase::Idle => Some(since + limits.keepalive_timeout),
        Phase::Busy => None,
    }
}

/// How long the proxy keeps reading (and discarding) from a client after it has sent
/// its last answer and shut down its side of the connection (RFC 9112 §9.6): closing
/// with unread request bytes makes the kernel reset the connection, and a client still
/// sending its body then loses the answer.
pub const LINGER: Duration = Duration::from_secs(2);

/// First pause after an accept error that a retry cannot fix at once.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between accept attempts while such errors go on.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The pause before the next `accept` after an error of `kind` (`previous` is the pause
/// taken after the error before it, if the last accept failed too), or `None` to retry
/// at once.
///
/// Errors about one connection that died in the backlog (`ECONNABORTED`, a signal)
/// are retried at once. Everything else — `EMFILE`/`ENFILE` above all, which leave the
/// connection in the backlog so that an immediate retry fails again — backs off,
/// doubling up to [`ACCEPT_BACKOFF_MAX`], instead of spinning a core.
pub fn accept_backoff(kind: io::ErrorKind, previous: Option<Duration>) -> Option<Duration> {
    match kind {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::Interrupted
        | io::ErrorKind::WouldBlock => None,
        _ => Some(match previous {
            None => ACCEPT_BACKOFF_MIN,
            Some(p) => (p * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnLimits {
        ConnLimits {
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            ..ConnLimits::default()
        }
    }

    #[test]
    fn each_phase_has_its_own_deadline() {
        let t = Instant::now();
        let l = limits();
        assert_eq!(
            deadline(Phase::Header, t, &l),
            Some(t + Duration::from_secs(10))
        );
        assert_eq!(
            deadline(Phase::Idle, t, &l),
            Some(t + Duration::from_secs(60))
        );
        assert_eq!(deadline(Phase::Busy, t, &l), None);
    }

    #[test]
    fn the_first_byte_after_idle_starts_a_header_block() {
        assert_eq!(Phase::Idle.on_bytes(), Phase::Header);
        assert_eq!(Phase::Header.on_bytes(), Phase::Header);
        assert_eq!(Phase::Busy.on_bytes(), Phase::Busy);
    }

    #[test]
    fn phases_round_trip_through_a_byte() {
        for p in [Phase::Header, Phase::Idle, Phase::Busy] {
            assert_eq!(Phase::from_u8(p.as_u8()), p);
        }
        assert_eq!(Phase::from_u8(200), Phase::Busy);
    }

    #[test]
    fn running_out_of_descriptors_backs_off_and_doubles() {
        let emfile = io::Error::from_raw_os_error(24).kind();
        let first = accept_backoff(emfile, None);
        assert_eq!(first, Some(ACCEPT_BACKOFF_MIN));
        assert_eq!(accept_backoff(emfile, first), Some(ACCEPT_BACKOFF_MIN * 2));
        let mut d = first;
        for _ in 0..20 {
            d = accept_backoff(emfile, d);
        }
        assert_eq!(d, Some(ACCEPT_BACKOFF_MAX));
    }

    #[test]
    fn a_connection_aborted_in_the_backlog_is_retried_at_once() {
        assert_eq!(accept_backoff(io::ErrorKind::ConnectionAborted, None), None);
        assert_eq!(
            accept_backoff(io::ErrorKind::Interrupted, Some(ACCEPT_BACKOFF_MAX)),
            None
        );
    }
}
