//! HTTPS for the control plane's HTTP API: the server presents the control plane's serving
//! certificate (the one the gRPC listener presents, which also names `localhost`, the listen IP
//! and any `--api-san`), and clients verify it as any HTTPS client would, by the name they dial,
//! against the mesh's root (`weft ca --pem`).
//!
//! ```text
//!  weft CLI / curl --cacert root.pem ──TLS 1.2/1.3, ALPN http/1.1──► API (serving cert, renewed in place)
//! ```

use crate::{CertStore, Error};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::sync::Arc;

/// The only application protocol the API speaks.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The API's server config: `store`'s current leaf on every handshake (so a renewal applies to
/// the next connection), no client certificate (callers authenticate with tokens).
pub fn server_config(store: &CertStore) -> Result<ServerConfig, Error> {
    let mut cfg = ServerConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Current(store.clone())));
    cfg.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(cfg)
}

#[derive(Debug)]
struct Current(CertStore);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified())
    }
}

/// Certificates from PEM text (`what` names the source in errors).
pub fn certs_from_pem(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem { what, reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(Error::Empty { what });
    }
    Ok(certs)
}

/// An API client's config: trusts `roots` (the PEM of `weft ca --pem`, or `<data-dir>/ca/root.pem`)
/// and checks the server's name as usual for HTTPS.
pub fn client_config(roots: &[CertificateDer<'static>]) -> Result<ClientConfig, Error> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).map_err(|e| Error::BadCert(format!("not usable as a trusted root: {e}")))?;
    }
    let mut cfg = ClientConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Authority, DEFAULT_CA_LIFETIME, DEFAULT_LEAF_LIFETIME};
    use rustls_pki_types::ServerName;

    /// A handshake over an in-memory pipe: Ok, or the client's error.
    async fn handshake(server: ServerConfig, client: ClientConfig, name: &str) -> Result<(), std::io::Error> {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        tokio::spawn(async move { acceptor.accept(a).await });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        connector.connect(ServerName::try_from(name.to_string()).unwrap(), b).await.map(|_| ())
    }

    #[tokio::test]
    async fn the_api_certificate_answers_to_its_names_and_chains_to_the_root() {
        let root = Authority::new_root("td", DEFAULT_CA_LIFETIME).unwrap();
        let inter = root.new_intermediate("east", DEFAULT_CA_LIFETIME).unwrap();
        let names = ["localhost".to_string(), "10.1.2.3".into(), "api.example.com".into()];
        let leaf = inter.issue_control_plane_named(DEFAULT_LEAF_LIFETIME, &names).unwrap();
        assert_eq!(leaf.chain().len(), 3, "leaf, intermediate, root");
        let store = CertStore::new(leaf, inter.bundle()).unwrap();
        let client = client_config(std::slice::from_ref(root.cert())).unwrap();
        for name in ["localhost", "10.1.2.3", "api.example.com", "control.weft"] {
            handshake(server_config(&store).unwrap(), client.clone(), name).await.unwrap();
        }
        let wrong = handshake(server_config(&store).unwrap(), client, "other.example.com").await.unwrap_err();
        assert!(wrong.to_string().contains("not valid for name"), "{wrong}");
        // Another root: refused.
        let other = Authority::new_root("td", DEFAULT_CA_LIFETIME).unwrap();
        let stranger = client_config(std::slice::from_ref(other.cert())).unwrap();
        let e = handshake(server_config(&store).unwrap(), stranger, "localhost").await.unwrap_err();
        assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    }

    #[test]
    fn a_name_that_is_not_a_dns_name_is_refused() {
        let root = Authority::new_root("td", DEFAULT_CA_LIFETIME).unwrap();
        let e = root.issue_control_plane_named(DEFAULT_LEAF_LIFETIME, &["bad name\u{e9}".into()]).unwrap_err();
        assert!(e.to_string().contains("bad name"), "{e}");
    }
}
