//! TLS between proxies and their control plane.
//!
//! The control plane serves gRPC with its own identity, `spiffe://<td>/ns/weft-system/sa/control`,
//! issued by its intermediate from a key made in its process, and sends its root in the chain.
//! Callers authenticate with tokens, not client certificates: a proxy has no certificate before its
//! first `Identity.Sign`. The proxy verifies the control plane in one of two ways:
//!
//! - [`ControlTrust::Roots`]: the chain ends at one of these roots (`control.ca_file`, the PEM
//!   that `weft ca --pem` prints; Istio's and Consul's model);
//! - [`ControlTrust::Pin`]: the chain ends at a root whose SHA-256 is the pin. Bootstrap tokens
//!   carry the pin of the root of the control plane that issued them (kubeadm's
//!   `discovery-token-ca-cert-hash`), so a token alone is enough to join safely.
//!
//! Either way the leaf must carry the control identity of the root's trust domain.

use crate::{CertStore, Error, SpiffeId, TrustBundle};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;

/// The namespace and service account of the control plane's own identity.
pub const CONTROL_NAMESPACE: &str = "weft-system";
pub const CONTROL_SERVICE_ACCOUNT: &str = "control";

/// `spiffe://<trust_domain>/ns/weft-system/sa/control`.
pub fn control_identity(trust_domain: &str) -> Result<SpiffeId, Error> {
    SpiffeId::workload(trust_domain, CONTROL_NAMESPACE, CONTROL_SERVICE_ACCOUNT)
}

/// SHA-256 of a certificate (DER), as pinned in tokens.
pub fn sha256(der: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// How a proxy decides that it talks to its control plane.
#[derive(Clone, Debug)]
pub enum ControlTrust {
    /// The chain must end at one of these roots.
    Roots(TrustBundle),
    /// The chain must end at the root (sent by the server) with this SHA-256.
    Pin([u8; 32]),
}

/// The control plane's gRPC server: presents `store`'s current leaf (renewed in place), asks for
/// no client certificate, TLS 1.3, ALPN h2.
pub fn server_config(store: &CertStore) -> Result<ServerConfig, Error> {
    let mut cfg = ServerConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Current(store.clone())));
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

#[derive(Debug)]
struct Current(CertStore);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified())
    }
}

/// A proxy's client config for its control plane (no client certificate; tokens authenticate).
pub fn client_config(trust: ControlTrust) -> Result<ClientConfig, Error> {
    let provider = crate::provider();
    let mut cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ControlVerifier { trust, provider }))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

#[derive(Debug)]
struct ControlVerifier {
    trust: ControlTrust,
    provider: Arc<CryptoProvider>,
}

fn refuse(reason: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(Error::BadCert(
        reason,
    )))))
}

impl ServerCertVerifier for ControlVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let roots = match &self.trust {
            ControlTrust::Roots(bundle) => bundle.clone(),
            ControlTrust::Pin(pin) => {
                let root = intermediates.iter().find(|c| sha256(c) == *pin).ok_or_else(|| {
                    refuse("the control plane's CA is not the one the token names (its SHA-256 differs): is this the control plane that issued the token?".into())
                })?;
                TrustBundle::new(vec![root.clone().into_owned()])
            }
        };
        crate::tls::verify_server_chain(&self.provider, &roots, end_entity, intermediates, now)?;
        let id = crate::tls::identity_of(end_entity).map_err(|e| refuse(e.to_string()))?;
        let want = control_identity(id.trust_domain()).map_err(|e| refuse(e.to_string()))?;
        if id != want {
            return Err(refuse(format!("the server is {id}, not a weft control plane ({want})")));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
