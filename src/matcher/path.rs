//! Path normalisation before matching and forwarding.
//!
//! STUB: the contract below is fixed; the implementation is being written.

/// Why a request path was refused (→ 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (not origin-form).
    #[error("path must start with '/'")]
    NotOriginForm,
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding in path")]
    BadPercentEncoding,
    /// `%2F` / `%5C` / `%00` (encoded slash, backslash or NUL).
    #[error("encoded '/', '\\\\' or NUL in path")]
    EncodedSeparator,
}

/// Normalises a request path (no query): resolves `.`/`..` segments (also their
/// percent-encoded forms), refuses encoded `/`, `\` and NUL and bad percent-encoding.
/// The result is what the upstream will be sent and what rules are matched against.
pub fn normalise(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    Ok(raw.to_string())
}
