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
//! Either way the leaf must carry the control identity of the trust domain the proxy expects (its
//! token's `td`), never one derived from the server's own certificate, and the DNS SAN
//! [`CONTROL_SERVER_NAME`], which only [`crate::Authority::issue_control_plane`] puts in a
//! certificate: workload certificates carry their URI SAN alone, and the CA refuses to sign any
//! identity in [`CONTROL_NAMESPACE`] for a caller.

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
/// The DNS SAN only the control plane's serving certificate carries (and the name proxies dial).
pub const CONTROL_SERVER_NAME: &str = "control.weft";

/// Whether `id` is in the namespace reserved for the control plane.
pub fn is_reserved(id: &SpiffeId) -> bool {
    is_reserved_namespace(id.namespace())
}

/// Whether `namespace` is reserved for the control plane (`weft-system`).
pub fn is_reserved_namespace(namespace: &str) -> bool {
    namespace == CONTROL_NAMESPACE
}

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

/// The control plane's gRPC server: presents `store`'s current leaf (renewed in place), TLS 1.3,
/// ALPN h2. A client certificate is optional (a proxy has none before its first `Identity.Sign`);
/// one that is sent must chain to the roots of `store`'s trust domain, and
/// [`tls::peer_identity`](crate::tls::peer_identity) then names the proxy.
pub fn server_config(store: &CertStore) -> Result<ServerConfig, Error> {
    // Checked against the store's bundle *now* (it gains the new root during a root rotation).
    let clients = Arc::new(OptionalClientCert(store.clone()));
    let mut cfg = ServerConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(clients)
        .with_cert_resolver(Arc::new(Current(store.clone())));
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

#[derive(Debug)]
struct Current(CertStore);

/// A client certificate is optional; one that is sent is verified by the store's current
/// verifier (its bundle's roots of its trust domain), so a bundle change applies to the next
/// handshake.
struct OptionalClientCert(CertStore);

impl std::fmt::Debug for OptionalClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OptionalClientCert")
    }
}

impl rustls::server::danger::ClientCertVerifier for OptionalClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.0.client_verifier().verify_client_cert(end_entity, intermediates, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.client_verifier().verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.client_verifier().verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.client_verifier().supported_verify_schemes()
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified())
    }
}

/// A proxy's client config for its control plane of `trust_domain`. Tokens authenticate; with
/// `presenting`, the proxy also shows its current certificate, so that the control plane lists the
/// identity it verified (a proxy has no certificate before its first `Identity.Sign`).
pub fn client_config(
    trust: ControlTrust,
    trust_domain: &str,
    presenting: Option<&CertStore>,
) -> Result<ClientConfig, Error> {
    let want = control_identity(trust_domain)?;
    let provider = crate::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ControlVerifier { trust, want, provider }));
    let mut cfg = match presenting {
        Some(store) => builder.with_client_cert_resolver(Arc::new(crate::tls::Resolver { store: store.clone() })),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

#[derive(Debug)]
struct ControlVerifier {
    trust: ControlTrust,
    /// The control identity of the trust domain the proxy expects.
    want: SpiffeId,
    provider: Arc<CryptoProvider>,
}

fn refuse(reason: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(Error::BadCert(
        reason,
    )))))
}

fn has_dns_name(der: &CertificateDer<'_>, name: &str) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return false };
    let Ok(Some(san)) = cert.subject_alternative_name() else { return false };
    san.value.general_names.iter().any(|n| matches!(n, x509_parser::extensions::GeneralName::DNSName(d) if *d == name))
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
        // Only roots bound to the expected trust domain may vouch for its control plane.
        let td = self.want.trust_domain();
        let anchors = roots.store_for(td, td);
        if anchors.is_empty() {
            return Err(refuse(format!(
                "no trusted root may sign for trust domain {td} (each root is bound to the trust domain in its `spiffe://` URI SAN or `{}` label)",
                crate::bundle::PEM_LABEL
            )));
        }
        crate::tls::verify_server_chain(&self.provider, &anchors, end_entity, intermediates, now)?;
        let id = crate::tls::identity_of(end_entity).map_err(|e| refuse(e.to_string()))?;
        let want = &self.want;
        if id != *want {
            return Err(refuse(format!("the server is {id}, not a weft control plane ({want})")));
        }
        if !has_dns_name(end_entity, CONTROL_SERVER_NAME) {
            return Err(refuse(format!(
                "the server's certificate names {id} but lacks the DNS name {CONTROL_SERVER_NAME} that only the control plane's own certificate carries: not a weft control plane"
            )));
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
