//! Trust bundles: the roots a proxy accepts, each bound to the trust domain it may sign for
//! (SPIFFE bundles are per trust domain). Several roots at once allow root rotation, and roots of
//! other trust domains allow federation between meshes with independent roots.
//!
//! A root's trust domain comes from, in order: the label it was given (a `# trust_domain: <td>`
//! line before it in a PEM file, or a per-domain bundle on the wire), or its own URI SAN
//! `spiffe://<td>` (weft's roots and intermediates carry one). A root with neither vouches for the
//! *local* trust domain only (the one of the proxy's own identity, or of the control plane a proxy
//! expects). A label that contradicts the root's own SAN is refused.

use crate::Error;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::sync::Arc;

/// The comment that labels the next root of a PEM bundle with its trust domain.
pub const PEM_LABEL: &str = "# trust_domain:";

/// A set of trusted root certificates, each bound to a trust domain (or to the local one).
#[derive(Clone, Debug)]
pub struct TrustBundle {
    roots: Vec<CertificateDer<'static>>,
    /// The trust domain of each root (same index); `None`: the local trust domain.
    domains: Vec<Option<String>>,
    /// Every root (for display and for checks that do not depend on the domain).
    store: Arc<RootCertStore>,
}

pub(crate) fn to_pem(certs: &[CertificateDer<'_>]) -> String {
    let mut out = String::new();
    for c in certs {
        pem_block(&mut out, c);
    }
    out
}

fn pem_block(out: &mut String, c: &CertificateDer<'_>) {
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    let b64 = base64_encode(c.as_ref());
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
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

/// The trust domain a CA certificate names for itself: a URI SAN `spiffe://<td>` (no path).
pub fn trust_domain_of_ca(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(uri) => {
            let td = uri.strip_prefix("spiffe://")?.trim_end_matches('/');
            (!td.is_empty() && !td.contains('/')).then(|| td.to_string())
        }
        _ => None,
    })
}

/// The domain a root is bound to: its label, checked against its own SAN.
fn bind(root: &CertificateDer<'_>, label: Option<String>) -> Result<Option<String>, Error> {
    let own = trust_domain_of_ca(root);
    match (label, own) {
        (Some(l), Some(o)) if l != o => Err(Error::BadCert(format!(
            "a root labelled for trust domain {l:?} names {o:?} in its own URI SAN (spiffe://{o}); fix the label"
        ))),
        (Some(l), _) => {
            crate::SpiffeId::workload(&l, "ns", "sa")
                .map_err(|_| Error::BadCert(format!("trust domain label {l:?} is not a valid trust domain")))?;
            Ok(Some(l))
        }
        (None, own) => Ok(own),
    }
}

impl TrustBundle {
    /// A bundle of the given roots, each bound to the trust domain in its own URI SAN, or else to
    /// the local one. Roots that rustls cannot parse as trust anchors are skipped with a warning;
    /// use [`TrustBundle::from_pem`] to reject them instead.
    pub fn new(roots: Vec<CertificateDer<'static>>) -> Self {
        let labelled = roots.into_iter().map(|r| (None, r)).collect();
        Self::build(labelled).unwrap_or_else(|_| unreachable!("unlabelled roots cannot contradict their SAN"))
    }

    /// A bundle of roots with explicit trust domains (`None`: from the root's SAN, else local),
    /// e.g. from per-domain bundles on the wire. A label that contradicts a root's SAN is refused.
    pub fn labelled(roots: Vec<(Option<String>, CertificateDer<'static>)>) -> Result<Self, Error> {
        Self::build(roots)
    }

    fn build(labelled: Vec<(Option<String>, CertificateDer<'static>)>) -> Result<Self, Error> {
        let mut store = RootCertStore::empty();
        let (mut roots, mut domains) = (Vec::with_capacity(labelled.len()), Vec::with_capacity(labelled.len()));
        let mut ignored = 0;
        for (label, root) in labelled {
            let domain = bind(&root, label)?;
            if store.add(root.clone()).is_err() {
                ignored += 1;
                continue;
            }
            roots.push(root);
            domains.push(domain);
        }
        if ignored > 0 {
            tracing::warn!(ignored, "trust bundle: skipped certificates that are not valid roots");
        }
        Ok(TrustBundle { roots, domains, store: Arc::new(store) })
    }

    /// Parses a PEM bundle (one or more certificates, each optionally preceded by a
    /// `# trust_domain: <td>` line), refusing it whole if any is malformed.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        let mut labelled = vec![];
        let (mut label, mut block): (Option<String>, Option<String>) = (None, None);
        for line in pem.lines() {
            let t = line.trim();
            if let Some(b) = block.as_mut() {
                b.push_str(t);
                b.push('\n');
                if t.starts_with("-----END") {
                    let text = block.take().unwrap_or_default();
                    for c in CertificateDer::pem_slice_iter(text.as_bytes()) {
                        let c = c.map_err(|e| Error::Pem { what: "trust bundle", reason: e.to_string() })?;
                        labelled.push((label.take(), c));
                    }
                }
            } else if t.starts_with("-----BEGIN") {
                block = Some(format!("{t}\n"));
            } else if let Some(td) = t.strip_prefix(PEM_LABEL) {
                label = Some(td.trim().to_string());
            }
        }
        if let Some(b) = block {
            CertificateDer::pem_slice_iter(b.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::Pem { what: "trust bundle", reason: e.to_string() })?;
        }
        if labelled.is_empty() {
            return Err(Error::Empty { what: "trust bundle" });
        }
        let mut check = RootCertStore::empty();
        for (_, r) in &labelled {
            check.add(r.clone()).map_err(|e| Error::BadCert(format!("trust bundle root: {e}")))?;
        }
        Self::build(labelled)
    }

    /// This bundle plus the roots of `other` (duplicates removed): for rotation or federation.
    pub fn merged(&self, other: &TrustBundle) -> TrustBundle {
        let mut out: Vec<(Option<String>, CertificateDer<'static>)> =
            self.domains.iter().cloned().zip(self.roots.iter().cloned()).collect();
        for (d, r) in other.domains.iter().zip(&other.roots) {
            if !out.iter().any(|(od, or)| or == r && od == d) {
                out.push((d.clone(), r.clone()));
            }
        }
        Self::build(out).unwrap_or_else(|_| unreachable!("labels were checked when each bundle was built"))
    }

    /// Every root, whatever its trust domain.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// Each root with the trust domain it is bound to (`None`: the local one).
    pub fn domains(&self) -> impl Iterator<Item = (Option<&str>, &CertificateDer<'static>)> {
        self.domains.iter().map(|d| d.as_deref()).zip(&self.roots)
    }

    /// The roots that may sign for `trust_domain`: those bound to it, plus the unbound ones when
    /// it is the `local` trust domain.
    pub fn roots_for(&self, trust_domain: &str, local: &str) -> Vec<CertificateDer<'static>> {
        self.domains()
            .filter(|(d, _)| match d {
                Some(d) => *d == trust_domain,
                None => trust_domain == local,
            })
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// [`TrustBundle::roots_for`] as a rustls root store (empty when no root may sign for it).
    pub fn store_for(&self, trust_domain: &str, local: &str) -> Arc<RootCertStore> {
        let mut store = RootCertStore::empty();
        store.add_parsable_certificates(self.roots_for(trust_domain, local));
        Arc::new(store)
    }

    /// Every root, whatever its trust domain. Verifiers use [`TrustBundle::store_for`].
    pub fn root_store(&self) -> Arc<RootCertStore> {
        self.store.clone()
    }

    /// The bundle in PEM, each bound root preceded by its `# trust_domain: <td>` label.
    pub fn to_pem(&self) -> String {
        let mut out = String::new();
        for (d, r) in self.domains() {
            if let Some(d) = d {
                out.push_str(&format!("{PEM_LABEL} {d}\n"));
            }
            pem_block(&mut out, r);
        }
        out
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

    #[test]
    fn roots_are_bound_to_their_trust_domain() {
        let a = crate::Authority::new_root("a.mesh", crate::DEFAULT_CA_LIFETIME).unwrap();
        let b = crate::Authority::new_root("b.mesh", crate::DEFAULT_CA_LIFETIME).unwrap();
        assert_eq!(trust_domain_of_ca(a.root()).as_deref(), Some("a.mesh"), "weft roots name their domain");
        let both = a.bundle().merged(&b.bundle());
        assert_eq!(both.roots_for("a.mesh", "a.mesh"), vec![a.root().clone()]);
        assert_eq!(both.roots_for("b.mesh", "a.mesh"), vec![b.root().clone()]);
        assert!(both.roots_for("c.mesh", "a.mesh").is_empty());
        // Labels survive PEM; a label that contradicts the SAN is refused.
        let parsed = TrustBundle::from_pem(&both.to_pem()).unwrap();
        assert_eq!(parsed.roots_for("b.mesh", "x"), vec![b.root().clone()]);
        let lying = format!("{PEM_LABEL} a.mesh\n{}", b.cert_pem());
        let err = TrustBundle::from_pem(&lying).unwrap_err().to_string();
        assert!(err.contains("labelled for trust domain \"a.mesh\"") && err.contains("b.mesh"), "{err}");
        // An unlabelled root without a SAN vouches for the local domain only; a label binds it.
        let plain = plain_root();
        let bundle = TrustBundle::from_pem(&to_pem(std::slice::from_ref(&plain))).unwrap();
        assert_eq!(bundle.roots_for("local.td", "local.td").len(), 1);
        assert!(bundle.roots_for("other.td", "local.td").is_empty());
        let labelled = format!("{PEM_LABEL} other.td\n{}", to_pem(std::slice::from_ref(&plain)));
        let bundle = TrustBundle::from_pem(&labelled).unwrap();
        assert!(bundle.roots_for("local.td", "local.td").is_empty());
        assert_eq!(bundle.roots_for("other.td", "local.td").len(), 1);
        assert!(TrustBundle::from_pem(&format!("{PEM_LABEL} Not A Domain\n{}", to_pem(&[plain]))).is_err());
    }

    /// A root with no URI SAN (as made by other CAs, or by weft before roots named their domain).
    fn plain_root() -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.self_signed(&key).unwrap().der().clone()
    }
}
