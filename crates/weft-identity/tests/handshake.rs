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

#[tokio::test]
async fn other_trust_domain_refused_even_under_a_trusted_root() {
    let (root, inter) = mesh();
    let other = SpiffeId::workload("other.domain", "default", "web").unwrap();
    let web = CertStore::new(inter.issue(&other, DEFAULT_LEAF_LIFETIME).unwrap(), root.bundle()).unwrap();
    let api = CertStore::new(inter.issue(&id("api"), DEFAULT_LEAF_LIFETIME).unwrap(), root.bundle()).unwrap();
    let err = handshake(&web, &api).await.unwrap_err();
    assert!(err.contains("outside trust domain") || err.contains("closed") || err.contains("alert"), "{err}");
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
    let (c, s) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(Arc::new(control::server_config(server).unwrap()));
    let connector = TlsConnector::from(Arc::new(control::client_config(trust).unwrap()));
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
    let cp_id = control::control_identity("cluster.local").unwrap();
    let cp = CertStore::new(inter.issue_with_root(&cp_id, DEFAULT_LEAF_LIFETIME).unwrap(), root.bundle()).unwrap();
    let pin = control::sha256(root.root());
    control_handshake(&cp, Roots(root.bundle())).await.unwrap();
    control_handshake(&cp, Pin(pin)).await.unwrap();

    // Another mesh's root, or its pin: refused.
    let (other, _) = mesh();
    let err = control_handshake(&cp, Pin(control::sha256(other.root()))).await.unwrap_err();
    assert!(err.contains("not the one the token names"), "{err}");
    assert!(control_handshake(&cp, Roots(other.bundle())).await.is_err());

    // A workload of the same mesh posing as the control plane: refused.
    let imposter =
        CertStore::new(inter.issue_with_root(&id("web"), DEFAULT_LEAF_LIFETIME).unwrap(), root.bundle()).unwrap();
    let err = control_handshake(&imposter, Pin(pin)).await.unwrap_err();
    assert!(err.contains("not a weft control plane"), "{err}");
}
