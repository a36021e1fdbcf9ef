//! rotagate: an edge reverse proxy that owns the session cookie life cycle.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod actions;
pub mod admin;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn;
pub mod demo;
pub mod explain;
pub mod hygiene;
pub mod listeners;
pub mod logging;
pub mod logout;
pub mod matcher;
pub mod metrics;
pub mod proxy;
pub mod secret;
pub mod server;
pub mod session;
pub mod state;
pub mod store;
pub mod tls;
pub mod upgrade;
pub mod upstreams;
pub mod watch;
