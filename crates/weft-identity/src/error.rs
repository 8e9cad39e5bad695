use thiserror::Error;

/// Errors from identity handling. Each says what was wrong and, where there is one, the fix.
#[derive(Debug, Error)]
pub enum Error {
    #[error(
        "invalid SPIFFE ID {id:?}: {reason} (expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>)"
    )]
    InvalidSpiffeId { id: String, reason: &'static str },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("invalid PEM in {what}: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("{what} holds no certificate")]
    Empty { what: &'static str },
    #[error("certificate is not usable: {0}")]
    BadCert(String),
    #[error("the CSR asks for {requested} but the caller is authorised only for {authorised}")]
    IdentityMismatch { requested: String, authorised: String },
    #[error("a certificate for {new} cannot replace the one for {current}: rotation keeps the identity")]
    RotationIdentity { new: String, current: String },
    #[error("the certificate for {id} does not chain to the trust bundle ({reason}); issue it from a CA whose root is in the bundle")]
    NotTrusted { id: String, reason: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the signing CA expired at {expired}; rotate it (a new intermediate, or a plug-in CA) before issuing more certificates")]
    CaExpired { expired: String },
    #[error(
        "{id} is in the namespace `weft-system`, reserved for the control plane's own identity; pick another namespace"
    )]
    Reserved { id: String },
    #[error("{id} is outside this CA's trust domain {trust_domain}; a CA signs only for its own")]
    OutsideTrustDomain { id: String, trust_domain: String },
    #[error("io on {path}: {source}")]
    Io { path: String, source: std::io::Error },
}
