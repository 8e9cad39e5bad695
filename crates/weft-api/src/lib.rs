//! weft's typed configuration. Today: the proxy's config file ([`proxy::ProxyConfig`]), read from
//! YAML with unknown fields refused and every cross-field rule checked by `validate()`. The
//! control plane's resources join this crate later, behind the same conventions: wire types here,
//! domain types in the crates that use them, `TryFrom` between them.
#![forbid(unsafe_code)]

mod duration;
pub mod proxy;

pub use duration::Duration;

/// A configuration error: where it is (a field path or file position) and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The YAML did not parse or did not match the schema (the message carries line and column).
    #[error("{0}")]
    Parse(String),
    /// A rule across fields was broken.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl ConfigError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}
