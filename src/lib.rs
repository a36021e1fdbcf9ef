//! rotagate: an edge reverse proxy that owns the session cookie life cycle.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod clock;
pub mod config;
pub mod matcher;
pub mod secret;
// pub mod admin; // enabled once config::load lands
pub mod hygiene;
pub mod metrics;
// pub mod proxy; // enabled once config::load lands
// pub mod server; // enabled once config::load lands
// pub mod state; // enabled once config::load lands
