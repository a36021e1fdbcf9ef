//! Configuration: the TOML file model ([`file`]) and its validation into the runtime
//! configuration ([`runtime`]), with errors that name file, line, column, key and what
//! was expected.
//!
//! STUB: being written.

pub mod runtime;

pub use runtime::*;
