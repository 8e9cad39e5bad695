//! The live credentials of one proxy: its current leaf and trust bundle, swapped atomically.

use crate::{tls, Error, SpiffeId, TrustBundle};
use arc_swap::ArcSwap;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A workload certificate chain with its private key, ready for rustls.
#[derive(Clone)]
pub struct Leaf {
    id: SpiffeId,
    not_after: SystemTime,
    certified: Arc<CertifiedKey>,
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf")
            .field("id", &self.id)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Leaf {
    /// Builds a leaf from its chain (leaf first) and key; the identity is read from the leaf's
    /// URI SAN.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, Error> {
        let first = chain.first().ok_or(Error::Empty {
            what: "certificate chain",
        })?;
        let id = tls::identity_of(first)?;
        let not_after = tls::not_after(first)?;
        let signing = crate::provider().key_provider.load_private_key(key)?;
        let certified = Arc::new(CertifiedKey::new(chain, signing));
        certified
            .keys_match()
            .map_err(|e| Error::BadCert(format!("certificate and key do not match: {e}")))?;
        Ok(Leaf {
            id,
            not_after,
            certified,
        })
    }

    /// Loads a leaf from PEM files' contents: the chain (leaf first) and a PKCS#8/SEC1 key.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Pem {
                what: "certificate chain",
                reason: e.to_string(),
            })?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| Error::Pem {
            what: "private key",
            reason: e.to_string(),
        })?;
        Leaf::new(chain, key)
    }

    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Time left before expiry (zero when expired).
    pub fn remaining(&self) -> Duration {
        self.not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default()
    }

    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }

    pub(crate) fn certified(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }
}

/// A cheaply clonable handle on a proxy's current credentials. Every TLS handshake reads the
/// current leaf and bundle; [`CertStore::set_leaf`] and [`CertStore::set_bundle`] swap them without
/// touching established connections.
#[derive(Clone)]
pub struct CertStore {
    inner: Arc<Inner>,
}

struct Inner {
    leaf: ArcSwap<Leaf>,
    bundle: ArcSwap<TrustBundle>,
    client_verifier: ArcSwap<Arc<dyn ClientCertVerifier>>,
}

impl CertStore {
    pub fn new(leaf: Leaf, bundle: TrustBundle) -> Result<Self, Error> {
        let verifier = tls::webpki_client_verifier(&bundle)?;
        Ok(CertStore {
            inner: Arc::new(Inner {
                leaf: ArcSwap::from_pointee(leaf),
                bundle: ArcSwap::from_pointee(bundle),
                client_verifier: ArcSwap::from_pointee(verifier),
            }),
        })
    }

    /// Installs a new leaf (rotation). It must be for the same identity.
    pub fn set_leaf(&self, leaf: Leaf) -> Result<(), Error> {
        let current = self.inner.leaf.load();
        if leaf.id() != current.id() {
            return Err(Error::IdentityMismatch {
                requested: leaf.id().uri(),
                authorised: current.id().uri(),
            });
        }
        tracing::info!(id = %leaf.id(), remaining_s = leaf.remaining().as_secs(), "installed new workload certificate");
        self.inner.leaf.store(Arc::new(leaf));
        Ok(())
    }

    /// Installs a new trust bundle (root rotation, federation).
    pub fn set_bundle(&self, bundle: TrustBundle) -> Result<(), Error> {
        let verifier = tls::webpki_client_verifier(&bundle)?;
        self.inner.client_verifier.store(Arc::new(verifier));
        self.inner.bundle.store(Arc::new(bundle));
        Ok(())
    }

    pub fn leaf(&self) -> Arc<Leaf> {
        self.inner.leaf.load_full()
    }

    pub fn bundle(&self) -> Arc<TrustBundle> {
        self.inner.bundle.load_full()
    }

    pub fn id(&self) -> SpiffeId {
        self.inner.leaf.load().id().clone()
    }

    pub(crate) fn certified(&self) -> Arc<CertifiedKey> {
        self.inner.leaf.load().certified()
    }

    pub(crate) fn client_verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.inner.client_verifier.load().as_ref().clone()
    }
}
