//! rustls configurations for mesh mTLS (TLS 1.3 only), and reading identities from certificates.
//!
//! - Servers require a client certificate that chains to the trust bundle and carries a SPIFFE ID.
//! - Clients verify the server's chain against the bundle and require a SPIFFE ID; the *expected*
//!   identity is compared after the handshake with [`peer_identity`] (before any byte is sent),
//!   so one client config serves every destination.

use crate::{CertStore, Error, SpiffeId};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Reads the SPIFFE ID from a certificate's URI SAN.
pub fn identity_of(der: &CertificateDer<'_>) -> Result<SpiffeId, Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| Error::BadCert(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| Error::BadCert(e.to_string()))?
        .ok_or_else(|| Error::BadCert("certificate has no subject alternative name".into()))?;
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(uri) = name {
            if uri.starts_with("spiffe://") {
                return uri.parse();
            }
        }
    }
    Err(Error::BadCert("certificate has no spiffe:// URI SAN".into()))
}

/// The certificate's notAfter.
pub fn not_after(der: &CertificateDer<'_>) -> Result<SystemTime, Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| Error::BadCert(e.to_string()))?;
    let ts = cert.validity().not_after.timestamp();
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(ts.max(0) as u64))
}

/// A certificate's subject and notAfter (RFC 3339-ish), for display.
pub fn describe(der: &[u8]) -> Result<(String, String), Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| Error::BadCert(e.to_string()))?;
    Ok((cert.subject().to_string(), cert.validity().not_after.to_string()))
}

/// The verified SPIFFE ID of the peer of an established connection.
pub fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Option<SpiffeId> {
    identity_of(certs?.first()?).ok()
}

/// A client verifier over `roots`; with no root, one that refuses every client (saying why).
pub(crate) fn webpki_client_verifier(roots: Arc<RootCertStore>) -> Result<Arc<dyn ClientCertVerifier>, Error> {
    WebPkiClientVerifier::builder_with_provider(roots, crate::provider())
        .build()
        .map_err(|e| Error::BadCert(format!("trust bundle: no root may sign for this proxy's trust domain ({e})")))
}

/// A server config for a mesh listener: mTLS required, client must present a SPIFFE SVID.
pub fn server_config(store: &CertStore, alpn: &[&[u8]]) -> Result<ServerConfig, Error> {
    let mut cfg = ServerConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier { store: store.clone() }))
        .with_cert_resolver(Arc::new(Resolver { store: store.clone() }));
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// A client config for connecting to peer proxies: presents this proxy's SVID, verifies the peer's.
pub fn client_config(store: &CertStore, alpn: &[&[u8]]) -> Result<ClientConfig, Error> {
    let provider = crate::provider();
    let mut cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier { store: store.clone(), provider }))
        .with_client_cert_resolver(Arc::new(Resolver { store: store.clone() }));
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// Serves the store's current leaf on both sides of the handshake.
#[derive(Debug)]
pub(crate) struct Resolver {
    pub(crate) store: CertStore,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").field("id", &self.id()).finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.store.certified())
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.store.certified())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn no_spiffe(e: Error) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(e))))
}

/// The roots a peer's chain must end at: those bound to the peer's own trust domain, never
/// another's (SPIFFE federation). Peers of this proxy's trust domain use `own`; peers of another
/// trust domain are accepted only when the bundle holds roots bound to it (a linked cluster's,
/// `weft link`), and are verified against those roots only.
fn roots_for_peer(store: &CertStore, peer: &SpiffeId) -> Result<Option<Arc<RootCertStore>>, rustls::Error> {
    let own = store.id();
    if peer.trust_domain() == own.trust_domain() {
        return Ok(None);
    }
    let roots = store.bundle().store_for(peer.trust_domain(), own.trust_domain());
    if roots.is_empty() {
        return Err(no_spiffe(Error::BadCert(format!(
            "peer {peer} is outside trust domain {} and this proxy trusts no root for trust domain {} (link the clusters with `weft link`, or add that domain's root to the bundle)",
            own.trust_domain(),
            peer.trust_domain()
        ))));
    }
    Ok(Some(roots))
}

#[derive(Debug)]
struct SpiffeClientVerifier {
    store: CertStore,
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let peer = identity_of(end_entity).map_err(no_spiffe)?;
        match roots_for_peer(&self.store, &peer)? {
            None => self.store.client_verifier().verify_client_cert(end_entity, intermediates, now)?,
            Some(roots) => {
                webpki_client_verifier(roots).map_err(no_spiffe)?.verify_client_cert(end_entity, intermediates, now)?
            }
        };
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.store.client_verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.store.client_verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.store.client_verifier().supported_verify_schemes()
    }
}

/// A server's chain must end at one of `roots` (shared by the mesh and control-plane verifiers).
pub(crate) fn verify_server_chain(
    provider: &CryptoProvider,
    roots: &RootCertStore,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<(), rustls::Error> {
    let cert = ParsedCertificate::try_from(end_entity)?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &cert,
        roots,
        intermediates,
        now,
        provider.signature_verification_algorithms.all,
    )?;
    Ok(())
}

#[derive(Debug)]
struct SpiffeServerVerifier {
    store: CertStore,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let peer = identity_of(end_entity).map_err(no_spiffe)?;
        let roots = roots_for_peer(&self.store, &peer)?.unwrap_or_else(|| self.store.own_roots());
        verify_server_chain(&self.provider, &roots, end_entity, intermediates, now)?;
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
