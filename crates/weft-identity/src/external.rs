//! Checks around a CA that weft does not run (AWS Private CA, cfssl, Vault): what may be sent to
//! it, and whether what it returned is what weft asked for.
//!
//! An external CA signs whatever its own policy admits, so the control plane decides the identity
//! before the call ([`check_csr`]: the CSR must name exactly the authorised SPIFFE ID) and checks
//! the answer after it ([`check_issued`]: the leaf certifies the CSR's key, names exactly that ID,
//! is no CA, lacks the control plane's marker, and chains to the CA's root). A CA that misbehaves
//! can only make signing fail, never hand a proxy another identity.

use crate::{Error, SpiffeId, TrustBundle};
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate, X509CertificationRequest};

fn csr_parts(csr_der: &[u8]) -> Result<(Vec<u8>, Vec<String>), Error> {
    let (_, csr) = X509CertificationRequest::from_der(csr_der).map_err(|e| Error::BadCert(format!("CSR: {e}")))?;
    let spki = csr.certification_request_info.subject_pki.raw.to_vec();
    let mut uris = vec![];
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                if let GeneralName::URI(u) = name {
                    uris.push(u.to_string());
                }
            }
        }
    }
    Ok((spki, uris))
}

/// Whether `csr_der` may go to an external CA for `authorised`: it parses, and its only URI SAN is `authorised` (`Ok(false)`: it names no identity, so the caller must send one
/// that does; most CAs copy the CSR's names). Reserved and foreign identities are refused. The
/// CSR's signature is the CA's to verify; [`check_issued`] then checks the leaf is for its key.
pub fn check_csr(csr_der: &[u8], authorised: &SpiffeId, trust_domain: &str) -> Result<bool, Error> {
    if crate::control::is_reserved(authorised) {
        return Err(Error::Reserved { id: authorised.uri() });
    }
    if authorised.trust_domain() != trust_domain {
        return Err(Error::OutsideTrustDomain { id: authorised.uri(), trust_domain: trust_domain.into() });
    }
    let (_, uris) = csr_parts(csr_der)?;
    match uris.as_slice() {
        [] => Ok(false),
        [one] if *one == authorised.uri() => Ok(true),
        _ => Err(Error::IdentityMismatch { requested: uris.join(","), authorised: authorised.uri() }),
    }
}

/// Checks a chain an external CA returned for `csr_der` (leaf first, then any intermediates) and
/// returns the chain to hand the proxy: the leaf and the intermediates up to (not including) a
/// root of `roots`, completed with `intermediates` (the CA's own chain) when the answer lacked them.
pub fn check_issued(
    chain: Vec<CertificateDer<'static>>,
    csr_der: &[u8],
    authorised: &SpiffeId,
    roots: &[CertificateDer<'static>],
    intermediates: &[CertificateDer<'static>],
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bad = |why: String| Error::BadCert(format!("the external CA returned a certificate that {why}"));
    let leaf = chain.first().ok_or(Error::Empty { what: "the external CA's answer" })?.clone();
    let (_, cert) = X509Certificate::from_der(&leaf).map_err(|e| bad(format!("does not parse: {e}")))?;
    let (spki, _) = csr_parts(csr_der)?;
    if cert.public_key().raw != spki.as_slice() {
        return Err(bad("certifies another key than the CSR's".into()));
    }
    if cert.basic_constraints().ok().flatten().is_some_and(|b| b.value.ca) {
        return Err(bad("is a CA certificate; sign workload CSRs as end-entity certificates".into()));
    }
    let mut uris = vec![];
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => uris.push(u.to_string()),
                GeneralName::DNSName(d) if d.eq_ignore_ascii_case(crate::control::CONTROL_SERVER_NAME) => {
                    return Err(bad(format!("carries the control plane's name {d}")));
                }
                _ => {}
            }
        }
    }
    if uris != [authorised.uri()] {
        return Err(bad(format!(
            "names {uris:?}, not exactly {}; the CA must copy the CSR's URI SAN (or add the one weft sends)",
            authorised.uri()
        )));
    }
    let is_root = |c: &CertificateDer<'_>| roots.iter().any(|r| r.as_ref() == c.as_ref());
    let mut out: Vec<CertificateDer<'static>> = vec![leaf];
    out.extend(chain.into_iter().skip(1).filter(|c| !is_root(c) && !is_self_signed(c)));
    if out.len() == 1 {
        out.extend(intermediates.iter().filter(|c| !is_root(c)).cloned());
    }
    let bundle = TrustBundle::labelled(
        roots.iter().map(|r| (Some(authorised.trust_domain().to_string()), r.clone())).collect(),
    )?;
    let parsed = rustls::server::ParsedCertificate::try_from(&out[0]).map_err(|e| bad(e.to_string()))?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &bundle.store_for(authorised.trust_domain(), authorised.trust_domain()),
        &out[1..],
        rustls_pki_types::UnixTime::now(),
        crate::provider().signature_verification_algorithms.all,
    )
    .map_err(|e| bad(format!("does not chain to the CA's root ({e})")))?;
    Ok(out)
}

/// Whether a certificate is self-issued (subject = issuer): the root at the end of a CA's chain.
pub fn is_self_signed(der: &CertificateDer<'_>) -> bool {
    X509Certificate::from_der(der).is_ok_and(|(_, c)| c.subject().as_raw() == c.issuer().as_raw())
}

/// Splits a CA's chain (its signing certificate first, any order tolerated) into the roots
/// (self-signed) and the rest; refuses a chain with no root, naming `source`.
pub fn split_chain(
    chain: Vec<CertificateDer<'static>>,
    source: &str,
) -> Result<(Vec<CertificateDer<'static>>, Vec<CertificateDer<'static>>), Error> {
    for c in &chain {
        X509Certificate::from_der(c)
            .map_err(|e| Error::BadCert(format!("{source}: a certificate does not parse: {e}")))?;
    }
    let (roots, rest): (Vec<_>, Vec<_>) = chain.into_iter().partition(is_self_signed);
    if roots.is_empty() {
        return Err(Error::BadCert(format!(
            "{source} returned no root (self-signed) certificate; give the CA its full chain up to the root"
        )));
    }
    Ok((roots, rest))
}
