//! Real TLS 1.3 handshakes over in-memory pipes: who is accepted, who is refused, and what each
//! side learns about the other.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use weft_identity::{control, tls, Authority, CertStore, SpiffeId, DEFAULT_CA_LIFETIME, DEFAULT_LEAF_LIFETIME};

fn id(sa: &str) -> SpiffeId {
    SpiffeId::workload("cluster.local", "default", sa).unwrap()
}

fn mesh() -> (Authority, Authority) {
    let root = Authority::new_root("cluster.local", DEFAULT_CA_LIFETIME).unwrap();
    let inter = root.new_intermediate("east", DEFAULT_CA_LIFETIME).unwrap();
    (root, inter)
}

/// Runs one handshake + one byte each way; returns (server's view of client, client's view of server).
async fn handshake(client: &CertStore, server: &CertStore) -> Result<(SpiffeId, SpiffeId), String> {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(server, &[b"h2"]).unwrap()));
    let connector = TlsConnector::from(Arc::new(tls::client_config(client, &[b"h2"]).unwrap()));
    let srv = tokio::spawn(async move {
        let mut t = acceptor.accept(s).await.map_err(|e| e.to_string())?;
        let peer = tls::peer_identity(t.get_ref().1.peer_certificates()).ok_or("no peer id")?;
        let mut b = [0u8; 1];
        t.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        t.write_all(b"!").await.map_err(|e| e.to_string())?;
        t.flush().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(peer)
    });
    let name = rustls_pki_types::ServerName::try_from("8080.api.default.east.weft").unwrap();
    let cli = async {
        let mut t = connector.connect(name, c).await.map_err(|e| e.to_string())?;
        let peer = tls::peer_identity(t.get_ref().1.peer_certificates()).ok_or("no peer id")?;
        t.write_all(b"?").await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        t.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(peer)
    };
    let cli = tokio::time::timeout(Duration::from_secs(10), cli).await.map_err(|_| "timeout".to_string())?;
    let srv = srv.await.map_err(|e| e.to_string())?;
    Ok((srv?, cli?))
}

#[tokio::test]
async fn same_mesh_mutual_identities() {
    let (root, inter) = mesh();
    let web = CertStore::new(inter.issue(&id("web"), DEFAULT_LEAF_LIFETIME).unwrap(), root.bundle()).unwrap();
    let api = CertStore::new(inter.issue(&id("api"), DEFAULT_LEAF_LIFETIME).unwrap(), root.bundle()).unwrap();
    let (server_saw, client_saw) = handshake(&web, &api).await.unwrap();
    assert_eq!(server_saw, id("web"));
    assert_eq!(client_saw, id("api"));
}

#[tokio::test]
async fn foreign_root_refused_until_bundles_are_federated() {
    let (root_a, inter_a) = mesh();
    let (root_b, inter_b) = mesh();
    let web = CertStore::new(inter_a.issue(&id("web"), DEFAULT_LEAF_LIFETIME).unwrap(), root_a.bundle()).unwrap();
    let api = CertStore::new(inter_b.issue(&id("api"), DEFAULT_LEAF_LIFETIME).unwrap(), root_b.bundle()).unwrap();
    assert!(handshake(&web, &api).await.is_err(), "independent roots do not trust each other");
    // Federation (or root rotation): each side's bundle holds both roots.
    let both = root_a.bundle().merged(&root_b.bundle());
    web.set_bundle(both.clone()).unwrap();
    api.set_bundle(both).unwrap();
    let (server_saw, client_saw) = handshake(&web, &api).await.unwrap();
    assert_eq!((server_saw, client_saw), (id("web"), id("api")));
}

/// Two roots made the same way (same trust domain, as two `weft tls ca-create` runs make them) have
/// different subjects, so a leaf of one shown to a verifier that trusts only the other is reported
/// as an unknown issuer (nothing in the bundle has its issuer's name), not a bad signature (a root
/// of the same name whose key did not sign it), which sent operators looking for corruption.
#[tokio::test]
async fn a_leaf_of_another_root_is_an_unknown_issuer() {
    let (root_a, inter_a) = mesh();
    let (root_b, inter_b) = mesh();
    let subject = |a: &Authority| weft_identity::tls::describe(a.cert()).unwrap().0;
    assert_ne!(subject(&root_a), subject(&root_b), "each root has its own subject");
    assert_ne!(subject(&inter_a), subject(&inter_b), "each intermediate has its own subject");
    // The client trusts both roots (so the server's certificate passes); the server trusts only
    // B's root and is shown a leaf of A's.
    let web = CertStore::new(
        inter_a.issue(&id("web"), DEFAULT_LEAF_LIFETIME).unwrap(),
        root_a.bundle().merged(&root_b.bundle()),
    )
    .unwrap();
    let api = CertStore::new(inter_b.issue(&id("api"), DEFAULT_LEAF_LIFETIME).unwrap(), root_b.bundle()).unwrap();
    let err = handshake(&web, &api).await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(!err.contains("BadSignature"), "{err}");
}

/// Federation (`weft link`): a peer of another trust domain is accepted only when the bundle holds
/// a root bound to *that* domain, and is verified against those roots only.
#[tokio::test]
async fn other_trust_domain_accepted_only_under_its_own_root() {
    let (root, inter) = mesh();
    let other_root = Authority::new_root("other.domain", DEFAULT_CA_LIFETIME).unwrap();
    let other = SpiffeId::workload("other.domain", "default", "web").unwrap();
    let web = CertStore::new(other_root.issue(&other, DEFAULT_LEAF_LIFETIME).unwrap(), other_root.bundle()).unwrap();
    let api = CertStore::new(inter.issue(&id("api"), DEFAULT_LEAF_LIFETIME).unwrap(), root.bundle()).unwrap();
    // Without the other domain's root: refused, naming the domain.
    let err = handshake(&web, &api).await.unwrap_err();
    assert!(err.contains("outside trust domain") || err.contains("closed") || err.contains("alert"), "{err}");
    // Each side trusts the other's root, bound to the other's domain: accepted both ways.
    let both = root.bundle().merged(&other_root.bundle());
    web.set_bundle(both.clone()).unwrap();
    api.set_bundle(both.clone()).unwrap();
    let (server_saw, client_saw) = handshake(&web, &api).await.unwrap();
    assert_eq!((server_saw, client_saw), (other, id("api")));
}

/// A CA whose root names no trust domain (no URI SAN), as other CAs make them.
fn plain_ca(trust_domain: &str) -> Authority {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = p.self_signed(&key).unwrap();
    Authority::from_pem(trust_domain, &cert.pem(), &key.serialize_pem(), "").unwrap()
}

#[tokio::test]
async fn a_root_of_another_trust_domain_cannot_mint_ours() {
    let (root, inter) = mesh();
    let api = CertStore::new(inter.issue(&id("api"), DEFAULT_LEAF_LIFETIME).unwrap(), root.bundle()).unwrap();
    // Another mesh's root, labelled as such in the bundle file, and a leaf it minted for *our*
    // trust domain.
    let other = plain_ca("cluster.local");
    let evil = CertStore::new(other.issue(&id("admin"), DEFAULT_LEAF_LIFETIME).unwrap(), other.bundle()).unwrap();
    let pem = format!("{}{} other.mesh\n{}", root.bundle().to_pem(), weft_identity::PEM_LABEL, other.cert_pem());
    let federated = weft_identity::TrustBundle::from_pem(&pem).unwrap();
    assert_eq!(federated.roots().len(), 2);
    api.set_bundle(federated).unwrap();
    // Refused on both sides of the handshake.
    let err = handshake(&evil, &api).await.unwrap_err();
    assert!(err.contains("UnknownIssuer") || err.contains("alert") || err.contains("closed"), "{err}");
    evil.set_bundle(evil.bundle().merged(&root.bundle())).unwrap();
    let err = handshake(&api, &evil).await.unwrap_err();
    assert!(err.contains("UnknownIssuer") || err.contains("alert") || err.contains("closed"), "{err}");
    // The same root unlabelled vouches for the local trust domain (rotation): accepted.
    api.set_bundle(root.bundle().merged(&other.bundle())).unwrap();
    handshake(&evil, &api).await.unwrap();
}

#[test]
fn a_store_refuses_a_leaf_its_bundle_does_not_trust() {
    let (_, inter) = mesh();
    let (stranger_root, _) = mesh();
    let err =
        CertStore::new(inter.issue(&id("web"), DEFAULT_LEAF_LIFETIME).unwrap(), stranger_root.bundle()).unwrap_err();
    assert!(err.to_string().contains("does not chain to the trust bundle"), "{err}");
}

#[tokio::test]
async fn expired_leaf_refused_and_rotation_fixes_it() {
    let (root, inter) = mesh();
    let key = weft_identity::LeafKey::generate(&id("web")).unwrap();
    let now = weft_identity::time::OffsetDateTime::now_utc();
    let chain = inter
        .sign_csr_between(
            &key.csr_der().unwrap(),
            &id("web"),
            now - Duration::from_secs(7200),
            now - Duration::from_secs(60),
        )
        .unwrap();
    let web = CertStore::new(key.into_leaf(chain).unwrap(), root.bundle()).unwrap();
    let api = CertStore::new(inter.issue(&id("api"), DEFAULT_LEAF_LIFETIME).unwrap(), root.bundle()).unwrap();
    let err = handshake(&web, &api).await.unwrap_err();
    assert!(err.to_lowercase().contains("expired") || err.contains("closed") || err.contains("alert"), "{err}");
    web.set_leaf(inter.issue(&id("web"), DEFAULT_LEAF_LIFETIME).unwrap()).unwrap();
    handshake(&web, &api).await.unwrap();
}

/// A proxy reaching its control plane: server identity `.../ns/weft-system/sa/control`, no client
/// certificate, trust from the root (file) or from the root's SHA-256 (the token's pin).
async fn control_handshake(server: &CertStore, trust: control::ControlTrust) -> Result<(), String> {
    control_handshake_in(server, trust, "cluster.local").await
}

/// As [`control_handshake`], for a proxy that expects the control plane of `trust_domain`.
async fn control_handshake_in(
    server: &CertStore,
    trust: control::ControlTrust,
    trust_domain: &str,
) -> Result<(), String> {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(Arc::new(control::server_config(server).unwrap()));
    let connector = TlsConnector::from(Arc::new(control::client_config(trust, trust_domain, None).unwrap()));
    let srv = tokio::spawn(async move {
        let mut t = acceptor.accept(s).await.map_err(|e| e.to_string())?;
        t.write_all(b"!").await.map_err(|e| e.to_string())?;
        t.flush().await.map_err(|e| e.to_string())
    });
    let name = rustls_pki_types::ServerName::try_from("control.weft").unwrap();
    let mut t = connector.connect(name, c).await.map_err(|e| e.to_string())?;
    let mut b = [0u8; 1];
    t.read_exact(&mut b).await.map_err(|e| e.to_string())?;
    let _ = srv.await;
    Ok(())
}

#[tokio::test]
async fn control_plane_is_verified_by_root_or_by_pin() {
    use control::ControlTrust::{Pin, Roots};
    let (root, inter) = mesh();
    let cp = CertStore::new(inter.issue_control_plane(DEFAULT_LEAF_LIFETIME).unwrap(), root.bundle()).unwrap();
    let pin = control::sha256(root.root());
    control_handshake(&cp, Roots(root.bundle())).await.unwrap();
    control_handshake(&cp, Pin(pin)).await.unwrap();

    // Another mesh's root, or its pin: refused.
    let (other, _) = mesh();
    let err = control_handshake(&cp, Pin(control::sha256(other.root()))).await.unwrap_err();
    assert!(err.contains("not the one the token names"), "{err}");
    assert!(control_handshake(&cp, Roots(other.bundle())).await.is_err());

    // A workload of the same mesh posing as the control plane: refused.
    let imposter = CertStore::new(leaf_with_chain(&inter, &id("web"), true), root.bundle()).unwrap();
    let err = control_handshake(&imposter, Pin(pin)).await.unwrap_err();
    assert!(err.contains("not a weft control plane"), "{err}");
}

/// A leaf for `id` signed by `ca` the way a workload's is (URI SAN only), with the root appended
/// when `with_root`: what a workload could hold if the CA signed anything it was asked for.
fn leaf_with_chain(ca: &Authority, id: &SpiffeId, with_root: bool) -> weft_identity::Leaf {
    let issuer_key = rcgen::KeyPair::from_pem(&ca.key_pem()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(ca.cert(), issuer_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(id.uri().try_into().unwrap())];
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let cert = params.signed_by(&key, &issuer).unwrap();
    let mut chain = vec![cert.der().clone(), ca.cert().clone()];
    if with_root {
        chain.push(ca.root().clone());
    }
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    weft_identity::Leaf::new(chain, key).unwrap()
}

#[tokio::test]
async fn a_workload_certificate_never_passes_for_the_control_plane() {
    use control::ControlTrust::{Pin, Roots};
    let (root, inter) = mesh();
    let pin = control::sha256(root.root());
    let cp_id = control::control_identity("cluster.local").unwrap();

    // The CA refuses to sign the control plane's identity (or any in its namespace) for a caller.
    let err = inter.issue(&cp_id, DEFAULT_LEAF_LIFETIME).unwrap_err();
    assert!(err.to_string().contains("reserved for the control plane"), "{err}");

    // A certificate for the control identity signed like a workload's (no control-plane marker):
    // refused by root and by pin.
    let forged = CertStore::new(leaf_with_chain(&inter, &cp_id, true), root.bundle()).unwrap();
    for trust in [Pin(pin), Roots(root.bundle())] {
        let err = control_handshake(&forged, trust).await.unwrap_err();
        assert!(err.contains("lacks the DNS name control.weft"), "{err}");
    }

    // The expected trust domain is the proxy's, not the server's: the real control plane of
    // another trust domain whose root the proxy also trusts is refused.
    let other_root = Authority::new_root("other.mesh", DEFAULT_CA_LIFETIME).unwrap();
    let other_cp = other_root.new_intermediate("x", DEFAULT_CA_LIFETIME).unwrap();
    let other =
        CertStore::new(other_cp.issue_control_plane(DEFAULT_LEAF_LIFETIME).unwrap(), other_root.bundle()).unwrap();
    let both = root.bundle().merged(&other_root.bundle());
    let err = control_handshake(&other, Roots(both)).await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "only cluster.local's roots vouch for its control plane: {err}");
    control_handshake_in(&other, Roots(other_root.bundle()), "other.mesh").await.unwrap();
    // Even with a root bound to no trust domain, the identity is checked against the expected one.
    let plain = plain_ca("other.mesh");
    let other = CertStore::new(plain.issue_control_plane(DEFAULT_LEAF_LIFETIME).unwrap(), plain.bundle()).unwrap();
    let err = control_handshake(&other, Roots(root.bundle().merged(&plain.bundle()))).await.unwrap_err();
    assert!(err.contains("not a weft control plane"), "{err}");
}
