//! The cluster's CA and the Identity gRPC service that signs proxies' CSRs.
//!
//! At first start the control plane creates a root and an intermediate for its cluster in
//! `<data-dir>/ca/` (keys 0600). Or, Istio's plug-in model: give it the intermediate's certificate
//! and key and the chain up to the root, and it signs with those.
//!
//! Only the intermediate signs. The root's key (`ca/root-key.pem`) is needed only to make a new
//! intermediate, so it can be kept offline: without it the control plane runs as before, with
//! the root's certificate (`ca/root.pem`) as the trust anchor ([`RootKey::Offline`]).

use crate::signer::{sign_external, Selected, SignError};
use crate::tokens::{write_private, Grant, TokenError, Tokens};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};
use weft_api::ca::CSR_IDENTITY_METADATA;
use weft_api::pb;
use weft_identity::{Authority, SpiffeId, DEFAULT_CA_LIFETIME};

/// Istio-style plug-in CA files.
#[derive(Clone, Debug)]
pub struct PluginCa {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// From the intermediate's issuer up to and including the root.
    pub chain: PathBuf,
}

/// Where the root's private key is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootKey {
    /// In the data directory: move it offline once the intermediate exists (docs/operations.md).
    OnHost(PathBuf),
    /// Not in the data directory: only the intermediate's key is on this host.
    Offline,
    /// A plug-in CA: weft never had the root's key.
    PlugIn,
}

impl std::fmt::Display for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootKey::OnHost(p) => write!(f, "on this host ({}); keep it offline: docs/operations.md", p.display()),
            RootKey::Offline => write!(f, "offline (only the intermediate's key is on this host)"),
            RootKey::PlugIn => write!(f, "not on this host (plug-in CA)"),
        }
    }
}

/// Where the root key of the CA in `dir` is (see [`RootKey`]).
pub fn root_key(dir: &Path, plugin: Option<&PluginCa>) -> RootKey {
    let path = dir.join("ca").join("root-key.pem");
    match (plugin, path.exists()) {
        (Some(_), _) => RootKey::PlugIn,
        (None, true) => RootKey::OnHost(path),
        (None, false) => RootKey::Offline,
    }
}

/// The intermediate must chain to the root it is loaded with: checked by issuing (and then
/// dropping) a certificate, as proxies would verify one.
fn check_chain(ca: &Authority, path: &Path) -> Result<(), CaError> {
    let bad = |source| CaError::Bad { path: path.display().to_string(), source };
    let probe = SpiffeId::workload(ca.trust_domain(), "weft-ca-check", "probe").map_err(bad)?;
    ca.issue(&probe, Duration::from_secs(60)).and_then(|leaf| leaf.verify_chain(&ca.bundle())).map_err(bad)
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("CA file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("CA in {path}: {source}")]
    Bad { path: String, source: weft_identity::Error },
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Io { path: path.display().to_string(), source })
}

/// Loads the CA (plug-in files, or the one in `dir/ca`), creating a root + intermediate there on
/// first start.
pub fn load_or_create(
    dir: &Path,
    trust_domain: &str,
    cluster: &str,
    plugin: Option<&PluginCa>,
) -> Result<Authority, CaError> {
    if let Some(p) = plugin {
        let bad = |source| CaError::Bad { path: p.cert.display().to_string(), source };
        let ca = Authority::from_pem(trust_domain, &read(&p.cert)?, &read(&p.key)?, &read(&p.chain)?).map_err(bad)?;
        check_chain(&ca, &p.chain)?;
        return Ok(ca);
    }
    let ca_dir = dir.join("ca");
    let (cert, key, chain) =
        (ca_dir.join("intermediate.pem"), ca_dir.join("intermediate-key.pem"), ca_dir.join("root.pem"));
    if cert.exists() {
        // The root's key is not read: the intermediate alone signs, and root.pem anchors it.
        let bad = |source| CaError::Bad { path: ca_dir.display().to_string(), source };
        let ca = Authority::from_pem(trust_domain, &read(&cert)?, &read(&key)?, &read(&chain)?).map_err(bad)?;
        check_chain(&ca, &chain)?;
        return Ok(ca);
    }
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| CaError::Io { path, source }
    };
    let bad = |source| CaError::Bad { path: ca_dir.display().to_string(), source };
    std::fs::create_dir_all(&ca_dir).map_err(io(&ca_dir))?;
    let root = Authority::new_root(trust_domain, DEFAULT_CA_LIFETIME * 10).map_err(bad)?;
    let inter = root.new_intermediate(cluster, DEFAULT_CA_LIFETIME).map_err(bad)?;
    write_private(&ca_dir.join("root-key.pem"), root.key_pem().as_bytes()).map_err(io(&ca_dir))?;
    std::fs::write(&chain, root.cert_pem()).map_err(io(&chain))?;
    write_private(&key, inter.key_pem().as_bytes()).map_err(io(&key))?;
    // The certificate last: its presence marks a complete CA.
    std::fs::write(&cert, inter.cert_pem()).map_err(io(&cert))?;
    tracing::info!(dir = %ca_dir.display(), %trust_domain, %cluster, "created a root and an intermediate CA");
    Ok(inter)
}

pub(crate) fn token_status(e: TokenError) -> Status {
    match e {
        TokenError::Missing | TokenError::Invalid | TokenError::Expired | TokenError::Revoked | TokenError::Unknown => {
            Status::unauthenticated(e.to_string())
        }
        TokenError::Forbidden(_) => Status::permission_denied(e.to_string()),
    }
}

/// The bootstrap identity a gRPC request's token names.
pub(crate) fn bootstrap_identity<T>(tokens: &Tokens, trust_domain: &str, req: &Request<T>) -> Result<SpiffeId, Status> {
    let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
    match tokens.verify_header(header).map_err(token_status)? {
        Grant::Bootstrap { namespace, service_account } => {
            SpiffeId::workload(trust_domain, &namespace, &service_account)
                .map_err(|e| Status::invalid_argument(e.to_string()))
        }
        _ => {
            Err(Status::permission_denied("a proxy needs a bootstrap token: `weft token create --identity <ns>/<sa>`"))
        }
    }
}

fn identity_status(e: weft_identity::Error) -> Status {
    match e {
        weft_identity::Error::IdentityMismatch { .. }
        | weft_identity::Error::Reserved { .. }
        | weft_identity::Error::OutsideTrustDomain { .. } => Status::permission_denied(e.to_string()),
        other => Status::invalid_argument(format!("cannot sign this CSR: {other}")),
    }
}

/// An external CA copies the identity from the CSR: a proxy that sent an unnamed CSR is told which
/// identity to name (metadata [`CSR_IDENTITY_METADATA`]) and sends a new CSR for its own key.
fn needs_named_csr(id: &SpiffeId) -> Status {
    let mut status = Status::failed_precondition(format!(
        "this mesh's CA is external and signs only CSRs that name the identity: send a CSR with the URI SAN {}",
        id.uri()
    ));
    if let Ok(v) = id.uri().parse() {
        status.metadata_mut().insert(CSR_IDENTITY_METADATA, v);
    }
    status
}

pub struct IdentityService {
    /// Signs with [`crate::rotation::CaState::signer`]; the bundle sent is every root trusted now.
    pub ca: Arc<crate::rotation::CaState>,
    pub tokens: Arc<Tokens>,
    pub leaf_lifetime: Duration,
}

#[tonic::async_trait]
impl pb::identity_server::Identity for IdentityService {
    async fn sign(&self, req: Request<pb::SignRequest>) -> Result<Response<pb::SignResponse>, Status> {
        let signer = self.ca.signer();
        let id = bootstrap_identity(&self.tokens, signer.trust_domain(), &req)?;
        let csr = &req.get_ref().csr_der;
        let chain = match self.ca.selected() {
            Selected::Builtin => signer.sign_csr(csr, &id, self.leaf_lifetime).map_err(identity_status)?,
            Selected::Failed { spec, error } => {
                return Err(Status::unavailable(format!("MeshConfig ca.kind {} cannot sign yet: {error}", spec.kind)))
            }
            Selected::External(ext) => {
                match sign_external(&ext, csr, &id, signer.trust_domain(), self.leaf_lifetime).await {
                    Ok(Some(chain)) => chain,
                    Ok(None) => return Err(needs_named_csr(&id)),
                    Err(SignError::Identity(e)) => return Err(identity_status(e)),
                    Err(e) => {
                        tracing::warn!(identity = %id, kind = %ext.spec.kind, error = %e, "the external CA did not sign");
                        return Err(Status::unavailable(format!("MeshConfig ca.kind {}: {e}", ext.spec.kind)));
                    }
                }
            }
        };
        let expires = chain.first().and_then(|c| weft_identity::tls::describe(c).ok()).map(|(_, t)| t);
        let peer = crate::grpc_tls::peer_of(&req);
        tracing::info!(identity = %id, expires = %expires.as_deref().unwrap_or("unknown"), %peer, "signed a workload certificate");
        Ok(Response::new(pb::SignResponse {
            chain_der: chain.iter().map(|c| c.to_vec()).collect(),
            bundle_der: self.ca.roots(),
            bundles: vec![pb::TrustDomainBundle {
                trust_domain: signer.trust_domain().to_string(),
                roots_der: self.ca.roots(),
            }],
        }))
    }
}
