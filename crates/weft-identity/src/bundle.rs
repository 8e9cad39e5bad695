//! Trust bundles: the set of roots a proxy accepts. Several roots at once allow root rotation and
//! federation between meshes with independent roots.

use crate::Error;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::sync::Arc;

/// A set of trusted root certificates.
#[derive(Clone, Debug)]
pub struct TrustBundle {
    roots: Vec<CertificateDer<'static>>,
    store: Arc<RootCertStore>,
}

pub(crate) fn to_pem(certs: &[CertificateDer<'_>]) -> String {
    let mut out = String::new();
    for c in certs {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64_encode(c.as_ref());
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl TrustBundle {
    /// A bundle of the given roots. Roots that rustls cannot parse as trust anchors are skipped
    /// with a warning; use [`TrustBundle::from_pem`] to reject them instead.
    pub fn new(roots: Vec<CertificateDer<'static>>) -> Self {
        let mut store = RootCertStore::empty();
        let (_, ignored) = store.add_parsable_certificates(roots.iter().cloned());
        if ignored > 0 {
            tracing::warn!(ignored, "trust bundle: skipped certificates that are not valid roots");
        }
        TrustBundle { roots, store: Arc::new(store) }
    }

    /// Parses a PEM bundle (one or more certificates), refusing it whole if any is malformed.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        let roots = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Pem { what: "trust bundle", reason: e.to_string() })?;
        if roots.is_empty() {
            return Err(Error::Empty { what: "trust bundle" });
        }
        let mut store = RootCertStore::empty();
        for r in &roots {
            store.add(r.clone()).map_err(|e| Error::BadCert(format!("trust bundle root: {e}")))?;
        }
        Ok(TrustBundle { roots, store: Arc::new(store) })
    }

    /// This bundle plus the roots of `other` (duplicates removed): for rotation or federation.
    pub fn merged(&self, other: &TrustBundle) -> TrustBundle {
        let mut roots = self.roots.clone();
        for r in &other.roots {
            if !roots.contains(r) {
                roots.push(r.clone());
            }
        }
        TrustBundle::new(roots)
    }

    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    pub fn root_store(&self) -> Arc<RootCertStore> {
        self.store.clone()
    }

    pub fn to_pem(&self) -> String {
        to_pem(&self.roots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn pem_round_trip_and_merge() {
        let a = crate::Authority::new_root("td", crate::DEFAULT_CA_LIFETIME).unwrap().bundle();
        let b = crate::Authority::new_root("td", crate::DEFAULT_CA_LIFETIME).unwrap().bundle();
        let parsed = TrustBundle::from_pem(&a.to_pem()).unwrap();
        assert_eq!(parsed.roots(), a.roots());
        let both = a.merged(&b).merged(&a);
        assert_eq!(both.roots().len(), 2);
        assert!(TrustBundle::from_pem("").is_err());
        assert!(TrustBundle::from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
    }
}
