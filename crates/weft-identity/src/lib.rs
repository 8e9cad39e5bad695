//! Workload identity for weft: SPIFFE IDs, the mesh certificate authority, trust bundles, and the
//! rustls configurations every proxy uses for mutual TLS.
//!
//! ```text
//!   root CA (one per mesh, or several in a bundle during rotation/federation)
//!     └── intermediate CA (one per cluster; lives in the control plane)
//!           └── leaf SVID (one per workload; URI SAN = spiffe://<td>/ns/<ns>/sa/<sa>, 24 h)
//!                 key generated *inside* the proxy; only the CSR travels
//! ```
//!
//! Rotation is hot: [`CertStore`] holds the current leaf and trust bundle behind atomic pointers, and
//! the rustls configs built by [`tls`] read them on every handshake, so a new leaf or bundle applies
//! to the next handshake while open connections keep running.
#![forbid(unsafe_code)]

mod bundle;
mod ca;
pub mod control;
mod csr;
mod error;
pub mod external;
pub mod https;
mod spiffe;
mod store;
pub mod tls;

pub use bundle::{trust_domain_of_ca, TrustBundle, PEM_LABEL};
pub use ca::{Authority, DEFAULT_CA_LIFETIME, DEFAULT_LEAF_LIFETIME};
pub use csr::LeafKey;
pub use error::Error;
pub use spiffe::SpiffeId;
pub use store::{CertStore, Leaf};
/// Re-exported for [`Authority::sign_csr_between`].
pub use time;

/// The crypto provider every weft TLS config uses (aws-lc-rs), so that no process-wide default is
/// needed and a second provider compiled in by another crate can never be picked by accident.
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}
