//! The live credentials of one proxy: its current leaf and trust bundle, swapped atomically.

use crate::{tls, Error, SpiffeId, TrustBundle};
use arc_swap::ArcSwap;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
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
        f.debug_struct("Leaf").field("id", &self.id).field("not_after", &self.not_after).finish_non_exhaustive()
    }
}

impl Leaf {
    /// Builds a leaf from its chain (leaf first) and key; the identity is read from the leaf's
    /// URI SAN.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Self, Error> {
        let first = chain.first().ok_or(Error::Empty { what: "certificate chain" })?;
        let id = tls::identity_of(first)?;
        let not_after = tls::not_after(first)?;
        let signing = crate::provider().key_provider.load_private_key(key)?;
        let certified = Arc::new(CertifiedKey::new(chain, signing));
        certified.keys_match().map_err(|e| Error::BadCert(format!("certificate and key do not match: {e}")))?;
        Ok(Leaf { id, not_after, certified })
    }

    /// Loads a leaf from PEM files' contents: the chain (leaf first) and a PKCS#8/SEC1 key.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Pem { what: "certificate chain", reason: e.to_string() })?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| Error::Pem { what: "private key", reason: e.to_string() })?;
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
        self.not_after.duration_since(SystemTime::now()).unwrap_or_default()
    }

    /// Checks that this leaf chains to a root of `bundle`. Validity dates are not judged here
    /// (an expired leaf still "chains"; peers refuse it at handshake).
    pub fn verify_chain(&self, bundle: &TrustBundle) -> Result<(), Error> {
        let chain = self.chain();
        let not_trusted = |reason: String| Error::NotTrusted { id: self.id.uri(), reason };
        let leaf = chain.first().ok_or_else(|| not_trusted("empty chain".into()))?;
        let parsed = rustls::server::ParsedCertificate::try_from(leaf).map_err(|e| not_trusted(e.to_string()))?;
        let result = rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &bundle.store_for(self.id.trust_domain(), self.id.trust_domain()),
            &chain[1..],
            rustls_pki_types::UnixTime::now(),
            crate::provider().signature_verification_algorithms.all,
        );
        use rustls::CertificateError as C;
        match result {
            Ok(()) => Ok(()),
            // Only trust is judged here: dates are the handshake's business.
            Err(rustls::Error::InvalidCertificate(
                C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
            )) => Ok(()),
            Err(e) => Err(not_trusted(e.to_string())),
        }
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
/// The same roots bound to the same trust domains, in the same order.
fn same_bundle(a: &TrustBundle, b: &TrustBundle) -> bool {
    a.domains().eq(b.domains())
}

/// Says what a bundle change installed: how many roots, for which trust domains (`local` is the
/// proxy's own, `local_td`, for roots bound to none).
fn log_bundle(bundle: &TrustBundle, local_td: &str) {
    let mut domains: Vec<&str> = bundle.domains().map(|(d, _)| d.unwrap_or(local_td)).collect();
    domains.sort_unstable();
    domains.dedup();
    tracing::info!(
        roots = bundle.roots().len(),
        trust_domains = %domains.join(", "),
        "installed new trust bundle"
    );
}

#[derive(Clone)]
pub struct CertStore {
    inner: Arc<Inner>,
}

struct Inner {
    leaf: ArcSwap<Leaf>,
    bundle: ArcSwap<TrustBundle>,
    client_verifier: ArcSwap<Arc<dyn ClientCertVerifier>>,
    /// The bundle's roots that may sign for the leaf's trust domain (peers must be in it).
    own_roots: ArcSwap<RootCertStore>,
}

impl CertStore {
    /// A store for `leaf`, which must chain to `bundle`.
    pub fn new(leaf: Leaf, bundle: TrustBundle) -> Result<Self, Error> {
        leaf.verify_chain(&bundle)?;
        let td = leaf.id().trust_domain().to_string();
        let own_roots = bundle.store_for(&td, &td);
        let verifier = tls::webpki_client_verifier(own_roots.clone())?;
        Ok(CertStore {
            inner: Arc::new(Inner {
                leaf: ArcSwap::from_pointee(leaf),
                bundle: ArcSwap::from_pointee(bundle),
                client_verifier: ArcSwap::from_pointee(verifier),
                own_roots: ArcSwap::new(own_roots),
            }),
        })
    }

    /// Installs a new leaf (rotation). It must be for the same identity.
    pub fn set_leaf(&self, leaf: Leaf) -> Result<(), Error> {
        self.replace(leaf, None)
    }

    /// Installs a new leaf and, optionally, a new bundle, as one change: both are checked (same
    /// identity; the leaf chains to the bundle in force afterwards) before either is swapped in.
    pub fn replace(&self, leaf: Leaf, bundle: Option<TrustBundle>) -> Result<(), Error> {
        let current = self.inner.leaf.load();
        if leaf.id() != current.id() {
            return Err(Error::RotationIdentity { new: leaf.id().uri(), current: current.id().uri() });
        }
        let td = leaf.id().trust_domain().to_string();
        let verifier = match &bundle {
            Some(b) => {
                leaf.verify_chain(b)?;
                let own = b.store_for(&td, &td);
                Some((tls::webpki_client_verifier(own.clone())?, own))
            }
            None => {
                leaf.verify_chain(&self.bundle())?;
                None
            }
        };
        let leaf_changed = leaf.chain() != current.chain();
        drop(current);
        if let (Some(b), Some((v, own))) = (bundle, verifier) {
            if !same_bundle(&b, &self.bundle()) {
                log_bundle(&b, &td);
            }
            self.inner.client_verifier.store(Arc::new(v));
            self.inner.own_roots.store(own);
            self.inner.bundle.store(Arc::new(b));
        }
        if leaf_changed {
            tracing::info!(id = %leaf.id(), remaining_s = leaf.remaining().as_secs(), "installed new workload certificate");
        }
        self.inner.leaf.store(Arc::new(leaf));
        Ok(())
    }

    /// Installs a new trust bundle (root rotation, federation). The current leaf must still chain
    /// to it: add a new root first, rotate leaves, then drop the old root.
    pub fn set_bundle(&self, bundle: TrustBundle) -> Result<(), Error> {
        let leaf = self.leaf();
        leaf.verify_chain(&bundle)?;
        let td = leaf.id().trust_domain();
        let own = bundle.store_for(td, td);
        let verifier = tls::webpki_client_verifier(own.clone())?;
        if !same_bundle(&bundle, &self.bundle()) {
            log_bundle(&bundle, td);
        }
        self.inner.client_verifier.store(Arc::new(verifier));
        self.inner.own_roots.store(own);
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

    /// The roots that may sign for this store's own trust domain.
    pub(crate) fn own_roots(&self) -> Arc<RootCertStore> {
        self.inner.own_roots.load_full()
    }

    pub(crate) fn client_verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.inner.client_verifier.load().as_ref().clone()
    }
}
