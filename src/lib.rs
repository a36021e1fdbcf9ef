//! rotagate: an edge reverse proxy that owns the session cookie life cycle.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod clock;
pub mod config;
pub mod matcher;
pub mod secret;
