//! The workload side of issuance: a private key made (and kept) in this process, and its CSR.

use crate::{Error, Leaf, SpiffeId};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PublicKeyData, SanType};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A freshly generated key pair for one workload identity. Only [`LeafKey::csr_der`] leaves the
/// process; the key itself goes into the [`Leaf`] once the CA answers.
pub struct LeafKey {
    /// `None`: the CA decides (it signs whatever identity the caller's credentials prove).
    id: Option<SpiffeId>,
    key: KeyPair,
}

impl LeafKey {
    /// Generates an ECDSA P-256 key for `id`.
    pub fn generate(id: &SpiffeId) -> Result<Self, Error> {
        Ok(LeafKey { id: Some(id.clone()), key: KeyPair::generate()? })
    }

    /// Generates a key whose CSR names no identity: for a proxy that learns its identity from
    /// its bootstrap token, which the CA checks.
    pub fn generate_unnamed() -> Result<Self, Error> {
        Ok(LeafKey { id: None, key: KeyPair::generate()? })
    }

    pub fn id(&self) -> Option<&SpiffeId> {
        self.id.as_ref()
    }

    /// The certificate signing request (DER) asking for this key's identity.
    pub fn csr_der(&self) -> Result<Vec<u8>, Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(id) = &self.id {
            params.subject_alt_names = vec![SanType::URI(id.uri().try_into()?)];
        }
        Ok(params.serialize_request(&self.key)?.der().to_vec())
    }

    /// The private key in PKCS#8 PEM, for handing to a process that will *use* it on this host
    /// (e.g. writing the proxy's key file). Never send it over the network.
    pub fn private_key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Combines the key with the chain the CA returned, checking that the leaf certifies this very
    /// key and identity.
    pub fn into_leaf(self, chain: Vec<CertificateDer<'static>>) -> Result<Leaf, Error> {
        let first = chain.first().ok_or(Error::Empty { what: "issued chain" })?;
        let (_, cert) = x509_parser::parse_x509_certificate(first).map_err(|e| Error::BadCert(e.to_string()))?;
        if cert.public_key().raw != self.key.subject_public_key_info().as_slice() {
            return Err(Error::BadCert("the issued certificate is for a different key".into()));
        }
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()));
        let leaf = Leaf::new(chain, key)?;
        if let Some(id) = &self.id {
            if leaf.id() != id {
                return Err(Error::IdentityMismatch { requested: id.uri(), authorised: leaf.id().uri() });
            }
        }
        Ok(leaf)
    }
}
