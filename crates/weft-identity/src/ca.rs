//! The mesh certificate authority: a root, an intermediate per cluster, and leaf signing from CSRs.
//!
//! The CA never sees a workload's private key: [`Authority::sign_csr`] takes the CSR a proxy made
//! and the identity the caller has proved, and puts *that* identity (not whatever the CSR asked
//! for) in the certificate.

use crate::{Error, LeafKey, SpiffeId, TrustBundle};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use std::time::Duration;
use time::OffsetDateTime;

/// Default lifetime of a workload (leaf) certificate: 24 hours, as Istio and Linkerd use.
pub const DEFAULT_LEAF_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Default lifetime of a generated root or intermediate: one year.
pub const DEFAULT_CA_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Clock skew allowance: certificates are valid from a minute before they are made.
const BACKDATE: Duration = Duration::from_secs(60);

/// A certificate authority: its certificate, its key (which never leaves this struct), and the
/// chain from it up to (not including) the root.
pub struct Authority {
    cert: CertificateDer<'static>,
    key: KeyPair,
    /// Certificates between this CA and the root, nearest first. Empty for a root.
    parents: Vec<CertificateDer<'static>>,
    /// The root that anchors this CA.
    root: CertificateDer<'static>,
    trust_domain: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("trust_domain", &self.trust_domain).finish_non_exhaustive()
    }
}

/// A CA certificate's parameters. It names the trust domain it signs for as a URI SAN
/// `spiffe://<td>` (as SPIFFE's CA certificates do), which binds it to that domain in bundles.
fn ca_params(
    common_name: &str,
    trust_domain: &str,
    lifetime: Duration,
    path_len: Option<u8>,
) -> Result<CertificateParams, Error> {
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::URI(format!("spiffe://{trust_domain}").try_into()?)];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "weft");
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    p.is_ca = match path_len {
        None => IsCa::Ca(BasicConstraints::Unconstrained),
        Some(n) => IsCa::Ca(BasicConstraints::Constrained(n)),
    };
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - BACKDATE;
    p.not_after = now + lifetime;
    Ok(p)
}

/// A short tag unique to a CA's key (the first 8 bytes of its public key's SHA-256, in hex), put
/// in the CA's common name. Every generated CA then has its own subject: a verifier that is shown
/// a certificate from a root it does not hold finds no issuer by name and reports an unknown
/// issuer, instead of trying another root of the same name and reporting a bad signature.
fn key_tag(key: &KeyPair) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.public_key_raw());
    digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem { what, reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(Error::Empty { what });
    }
    Ok(certs)
}

impl Authority {
    /// Creates a new self-signed root for `trust_domain`.
    pub fn new_root(trust_domain: &str, lifetime: Duration) -> Result<Self, Error> {
        let key = KeyPair::generate()?;
        let cn = format!("weft root CA ({trust_domain}) {}", key_tag(&key));
        let cert = ca_params(&cn, trust_domain, lifetime, None)?.self_signed(&key)?;
        let der: CertificateDer<'static> = cert.into();
        Ok(Authority { cert: der.clone(), key, parents: vec![], root: der, trust_domain: trust_domain.to_string() })
    }

    /// Creates an intermediate CA under this one, e.g. one per cluster.
    pub fn new_intermediate(&self, name: &str, lifetime: Duration) -> Result<Self, Error> {
        let key = KeyPair::generate()?;
        let cn = format!("weft intermediate CA ({name}) {}", key_tag(&key));
        let params = ca_params(&cn, &self.trust_domain, lifetime, Some(0))?;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        let mut parents = vec![];
        if !self.is_root() {
            parents.push(self.cert.clone());
            parents.extend(self.parents.iter().cloned());
        }
        Ok(Authority {
            cert: cert.into(),
            key,
            parents,
            root: self.root.clone(),
            trust_domain: self.trust_domain.clone(),
        })
    }

    /// Loads a CA from files in Istio's plug-in model: this CA's certificate, its key, and the chain
    /// up to and including the root (the last certificate of `chain_pem` is taken as the root).
    pub fn from_pem(trust_domain: &str, cert_pem: &str, key_pem: &str, chain_pem: &str) -> Result<Self, Error> {
        let cert = parse_certs(cert_pem, "CA certificate")?.remove(0);
        let key = KeyPair::from_pem(key_pem).map_err(|e| Error::Pem { what: "CA key", reason: e.to_string() })?;
        let mut chain = if chain_pem.trim().is_empty() { vec![] } else { parse_certs(chain_pem, "CA chain")? };
        let root = chain.pop().unwrap_or_else(|| cert.clone());
        let ca = Authority { cert, key, parents: chain, root, trust_domain: trust_domain.to_string() };
        ca.issuer()?; // proves the certificate parses as an issuer
        Ok(ca)
    }

    fn is_root(&self) -> bool {
        self.cert == self.root
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, Error> {
        Ok(Issuer::from_ca_cert_der(&self.cert, &self.key)?)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// This CA's own certificate.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// This CA's certificate in PEM.
    pub fn cert_pem(&self) -> String {
        crate::bundle::to_pem(std::slice::from_ref(&self.cert))
    }

    /// This CA's private key in PEM, for writing a generated CA to the control plane's own data
    /// directory. Never send it anywhere else.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The root certificate that anchors this CA.
    pub fn root(&self) -> &CertificateDer<'static> {
        &self.root
    }

    /// A trust bundle holding this CA's root.
    pub fn bundle(&self) -> TrustBundle {
        TrustBundle::new(vec![self.root.clone()])
    }

    /// Signs a leaf certificate for `authorised` from a DER-encoded CSR. The identity placed in the
    /// certificate is always `authorised`; a CSR that asks for any other URI is refused. The leaf
    /// never outlives the CAs above it: its lifetime is cut at the earliest of their expiries
    /// (a leaf that outlived its intermediate would fail verification before its renewal time).
    /// Returns the chain to present: leaf first, then the intermediates (not the root).
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        authorised: &SpiffeId,
        lifetime: Duration,
    ) -> Result<Vec<CertificateDer<'static>>, Error> {
        let now = OffsetDateTime::now_utc();
        let ca_expiry = self.expires_at()?;
        if ca_expiry <= now {
            return Err(Error::CaExpired { expired: ca_expiry.to_string() });
        }
        self.sign_csr_between(csr_der, authorised, now - BACKDATE, (now + lifetime).min(ca_expiry))
    }

    fn check_not_reserved(authorised: &SpiffeId) -> Result<(), Error> {
        if crate::control::is_reserved(authorised) {
            return Err(Error::Reserved { id: authorised.uri() });
        }
        Ok(())
    }

    /// A CA signs only for its own trust domain (its root is bound to it in every bundle).
    fn check_own_domain(&self, authorised: &SpiffeId) -> Result<(), Error> {
        if authorised.trust_domain() != self.trust_domain {
            return Err(Error::OutsideTrustDomain { id: authorised.uri(), trust_domain: self.trust_domain.clone() });
        }
        Ok(())
    }

    /// When the first of this CA and the CAs above it expires.
    pub fn expires_at(&self) -> Result<OffsetDateTime, Error> {
        let mut earliest: Option<OffsetDateTime> = None;
        for der in std::iter::once(&self.cert).chain(&self.parents).chain(std::iter::once(&self.root)) {
            let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| Error::BadCert(e.to_string()))?;
            let t = cert.validity().not_after.to_datetime();
            earliest = Some(earliest.map_or(t, |e| e.min(t)));
        }
        earliest.ok_or(Error::Empty { what: "CA" })
    }

    /// As [`Authority::sign_csr`], with an explicit validity window (tests of expiry use a window
    /// in the past).
    pub fn sign_csr_between(
        &self,
        csr_der: &[u8],
        authorised: &SpiffeId,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Vec<CertificateDer<'static>>, Error> {
        Self::check_not_reserved(authorised)?;
        self.check_own_domain(authorised)?;
        self.sign_leaf(csr_der, authorised, not_before, not_after, None)
    }

    /// Signs a leaf; `control_plane` adds the marker only the control plane's certificate carries
    /// (the DNS SAN [`crate::control::CONTROL_SERVER_NAME`]) and its other names (IP addresses or
    /// DNS names); workload leaves carry the URI SAN alone.
    fn sign_leaf(
        &self,
        csr_der: &[u8],
        authorised: &SpiffeId,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        control_plane: Option<&[String]>,
    ) -> Result<Vec<CertificateDer<'static>>, Error> {
        let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))?;
        for san in &csr.params.subject_alt_names {
            if let SanType::URI(uri) = san {
                if uri.as_str() != authorised.uri() {
                    return Err(Error::IdentityMismatch {
                        requested: uri.as_str().to_string(),
                        authorised: authorised.uri(),
                    });
                }
            }
        }
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "weft");
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(authorised.uri().try_into()?)];
        if let Some(names) = control_plane {
            params.subject_alt_names.push(SanType::DnsName(crate::control::CONTROL_SERVER_NAME.try_into()?));
            for name in names.iter().filter(|n| n.as_str() != crate::control::CONTROL_SERVER_NAME) {
                let san =
                    match name.parse::<std::net::IpAddr>() {
                        Ok(ip) => SanType::IpAddress(ip),
                        Err(_) => SanType::DnsName(name.as_str().try_into().map_err(|_| {
                            Error::BadCert(format!("{name:?} is neither an IP address nor a DNS name"))
                        })?),
                    };
                if !params.subject_alt_names.contains(&san) {
                    params.subject_alt_names.push(san);
                }
            }
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = not_before;
        params.not_after = not_after;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&csr.public_key, &self.issuer()?)?;
        let mut chain = vec![cert.into()];
        if !self.is_root() {
            chain.push(self.cert.clone());
            chain.extend(self.parents.iter().cloned());
        }
        Ok(chain)
    }

    /// Convenience for tests and single-process tools: generates a key *in the calling process*,
    /// makes a CSR, signs it, and returns the ready leaf.
    pub fn issue(&self, id: &SpiffeId, lifetime: Duration) -> Result<crate::Leaf, Error> {
        let key = LeafKey::generate(id)?;
        let chain = self.sign_csr(&key.csr_der()?, id, lifetime)?;
        key.into_leaf(chain)
    }

    /// The control plane's own serving certificate, for `spiffe://<td>/ns/weft-system/sa/control`
    /// with the DNS SAN `control.weft` that no workload certificate carries (and that
    /// [`crate::control`]'s verifier requires): key made here (in the control plane's process),
    /// and the root appended to the chain so that a proxy holding only the root's SHA-256 (from
    /// its token) can verify it.
    pub fn issue_control_plane(&self, lifetime: Duration) -> Result<crate::Leaf, Error> {
        self.issue_control_plane_named(lifetime, &[])
    }

    /// [`Authority::issue_control_plane`] that also names `names` (each an IP address, or else a
    /// DNS name), so that HTTPS clients of the control plane's API can verify it by the name they
    /// dial (`localhost`, its listen IP, `--api-san` extras).
    pub fn issue_control_plane_named(&self, lifetime: Duration, names: &[String]) -> Result<crate::Leaf, Error> {
        let id = crate::control::control_identity(&self.trust_domain)?;
        let key = LeafKey::generate(&id)?;
        let now = OffsetDateTime::now_utc();
        let ca_expiry = self.expires_at()?;
        if ca_expiry <= now {
            return Err(Error::CaExpired { expired: ca_expiry.to_string() });
        }
        let mut chain =
            self.sign_leaf(&key.csr_der()?, &id, now - BACKDATE, (now + lifetime).min(ca_expiry), Some(names))?;
        if !self.is_root() {
            chain.push(self.root.clone());
        }
        key.into_leaf(chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_only_the_authorised_identity() {
        let root = Authority::new_root("td", DEFAULT_CA_LIFETIME).unwrap();
        let inter = root.new_intermediate("east", DEFAULT_CA_LIFETIME).unwrap();
        let a = SpiffeId::workload("td", "ns", "a").unwrap();
        let b = SpiffeId::workload("td", "ns", "b").unwrap();
        let key = LeafKey::generate(&a).unwrap();
        let err = inter.sign_csr(&key.csr_der().unwrap(), &b, DEFAULT_LEAF_LIFETIME).unwrap_err();
        assert!(matches!(err, Error::IdentityMismatch { .. }), "{err}");
        let chain = inter.sign_csr(&key.csr_der().unwrap(), &a, DEFAULT_LEAF_LIFETIME).unwrap();
        assert_eq!(chain.len(), 2, "leaf + intermediate");
        let leaf = key.into_leaf(chain).unwrap();
        assert_eq!(leaf.id(), &a);
        let remaining = leaf.not_after().duration_since(std::time::SystemTime::now()).unwrap();
        assert!(remaining > Duration::from_secs(23 * 3600) && remaining <= DEFAULT_LEAF_LIFETIME);
    }

    #[test]
    fn a_leaf_never_outlives_its_intermediate() {
        let root = Authority::new_root("td", DEFAULT_CA_LIFETIME).unwrap();
        let inter = root.new_intermediate("east", Duration::from_secs(3600)).unwrap();
        let a = SpiffeId::workload("td", "ns", "a").unwrap();
        let leaf = inter.issue(&a, DEFAULT_LEAF_LIFETIME).unwrap();
        let inter_end = crate::tls::not_after(&inter.cert).unwrap();
        assert!(leaf.not_after() <= inter_end, "cut at the intermediate's expiry");
        assert!(leaf.remaining() > Duration::from_secs(3000));
    }

    #[test]
    fn never_signs_the_control_planes_namespace_for_a_caller() {
        let root = Authority::new_root("td", DEFAULT_CA_LIFETIME).unwrap();
        let inter = root.new_intermediate("east", DEFAULT_CA_LIFETIME).unwrap();
        let cp = crate::control::control_identity("td").unwrap();
        let err = inter.issue(&cp, DEFAULT_LEAF_LIFETIME).unwrap_err();
        assert!(matches!(err, Error::Reserved { .. }), "{err}");
        let other = SpiffeId::workload("td", "weft-system", "anything").unwrap();
        let foreign = SpiffeId::workload("other.td", "ns", "a").unwrap();
        assert!(matches!(inter.issue(&foreign, DEFAULT_LEAF_LIFETIME), Err(Error::OutsideTrustDomain { .. })));
        assert!(matches!(inter.issue(&other, DEFAULT_LEAF_LIFETIME), Err(Error::Reserved { .. })));
        let leaf = inter.issue_control_plane(DEFAULT_LEAF_LIFETIME).unwrap();
        assert_eq!(leaf.id(), &cp);
        assert_eq!(leaf.chain().len(), 3, "leaf, intermediate, root");
    }

    #[test]
    fn rejects_garbage_csr() {
        let root = Authority::new_root("td", DEFAULT_CA_LIFETIME).unwrap();
        let a = SpiffeId::workload("td", "ns", "a").unwrap();
        assert!(root.sign_csr(b"not a csr", &a, DEFAULT_LEAF_LIFETIME).is_err());
    }

    #[test]
    fn plug_in_ca_round_trips_through_pem() {
        let root = Authority::new_root("td", DEFAULT_CA_LIFETIME).unwrap();
        let inter = root.new_intermediate("east", DEFAULT_CA_LIFETIME).unwrap();
        let loaded = Authority::from_pem("td", &inter.cert_pem(), &inter.key_pem(), &root.cert_pem()).unwrap();
        assert_eq!(loaded.root(), root.root());
        let a = SpiffeId::workload("td", "ns", "a").unwrap();
        let leaf = loaded.issue(&a, DEFAULT_LEAF_LIFETIME).unwrap();
        assert_eq!(leaf.chain().len(), 2);
        assert!(Authority::from_pem("td", "garbage", &inter.key_pem(), "").is_err());
    }
}
