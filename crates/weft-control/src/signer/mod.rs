//! Who signs workload certificates: weft's own CA or an external one, behind one trait, chosen
//! by MeshConfig `ca` (`weft_api::ca::CaSpec`).
//!
//! ```text
//!  proxy ──CSR──► Identity.Sign ──► token → authorised SPIFFE ID
//!                                   │
//!                                   ├─ builtin: Authority::sign_csr (checks the CSR itself)
//!                                   └─ external: check_csr ─► Signer::sign (AWS PCA | cfssl | Vault)
//!                                                           ─► check_issued (key, URI SAN, chain)
//! ```
//!
//! [`run`] follows the catalog's MeshConfig: for an external kind it builds the [`Signer`], asks
//! the CA for its chain, and installs it in [`crate::rotation::CaState`] (its root joins the trust
//! bundle beside weft's own roots, and becomes the signing root, so proxies renew at once). Until
//! that succeeds, signing answers UNAVAILABLE with the reason (proxies retry); it is retried with
//! backoff. The private key never leaves the proxy: only its CSR is forwarded.

mod aws;
mod cfssl;
pub mod http;
mod vault;

use crate::rotation::CaState;
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use weft_api::ca::{CaKind, CaSpec};
use weft_identity::SpiffeId;

pub use aws::{sigv4_authorization, AwsCredentials};

/// Environment variables `weft control` reads the external CAs' secrets from (never from the
/// MeshConfig, which every API reader sees).
pub const ENV_AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const ENV_AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub const ENV_AWS_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
pub const ENV_VAULT_TOKEN: &str = "VAULT_TOKEN";
/// cfssl's shared auth key (hex, as in cfssl's config `auth_keys`): sign through `authsign`.
pub const ENV_CFSSL_AUTH_KEY: &str = "WEFT_CFSSL_AUTH_KEY";

/// First and longest wait before asking an unreachable CA for its chain again.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The secrets external CAs need, held by the control plane process only.
#[derive(Clone, Default)]
pub struct CaCredentials {
    pub aws: Option<AwsCredentials>,
    pub vault_token: Option<String>,
    pub cfssl_auth_key: Option<Vec<u8>>,
}

impl std::fmt::Debug for CaCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaCredentials")
            .field("aws", &self.aws.as_ref().map(|a| &a.access_key_id))
            .field("vault_token", &self.vault_token.as_ref().map(|_| "<set>"))
            .field("cfssl_auth_key", &self.cfssl_auth_key.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl CaCredentials {
    /// From the process environment (`weft control`); tests fill the struct directly.
    pub fn from_env() -> Result<CaCredentials, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let aws = match (var(ENV_AWS_ACCESS_KEY_ID), var(ENV_AWS_SECRET_ACCESS_KEY)) {
            (Some(access_key_id), Some(secret_access_key)) => {
                Some(AwsCredentials { access_key_id, secret_access_key, session_token: var(ENV_AWS_SESSION_TOKEN) })
            }
            _ => None,
        };
        let cfssl_auth_key = match var(ENV_CFSSL_AUTH_KEY) {
            Some(h) => {
                Some(unhex(&h).ok_or_else(|| format!("{ENV_CFSSL_AUTH_KEY} must be hex (cfssl's auth_keys form)"))?)
            }
            None => None,
        };
        Ok(CaCredentials { aws, vault_token: var(ENV_VAULT_TOKEN), cfssl_auth_key })
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Why an external CA did not sign.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the external CA at {endpoint} is unreachable: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("the external CA refused (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the external CA's answer is not usable: {0}")]
    Answer(String),
    #[error("MeshConfig ca.kind is {kind} but {missing} is not set in the control plane's environment")]
    NoCredentials { kind: CaKind, missing: &'static str },
    #[error("{0}")]
    Identity(#[from] weft_identity::Error),
}

/// The request a signer gets: already checked ([`weft_identity::external::check_csr`]).
pub struct SignRequest<'a> {
    pub csr_der: &'a [u8],
    pub id: &'a SpiffeId,
    pub lifetime: Duration,
}

/// One certificate authority that signs workload CSRs.
#[tonic::async_trait]
pub trait Signer: Send + Sync {
    fn kind(&self) -> CaKind;
    /// The CA's chain: its signing certificate and those above it, including its root.
    async fn ca_chain(&self) -> Result<Vec<CertificateDer<'static>>, SignError>;
    /// Signs the CSR for `req.id`: the leaf first, then any intermediates the CA returns.
    async fn sign(&self, req: &SignRequest<'_>) -> Result<Vec<CertificateDer<'static>>, SignError>;
}

/// An external CA ready to sign: its signer and its chain, split into roots and intermediates.
pub struct External {
    pub spec: CaSpec,
    pub signer: Arc<dyn Signer>,
    pub roots: Vec<CertificateDer<'static>>,
    pub intermediates: Vec<CertificateDer<'static>>,
}

/// What MeshConfig `ca` selects now, as [`run`] has installed it.
#[derive(Clone)]
pub enum Selected {
    Builtin,
    External(Arc<External>),
    /// An external CA that is not usable yet (unreachable, no root, no credentials).
    Failed {
        spec: Box<CaSpec>,
        error: String,
    },
}

/// The signer for an external `spec`.
pub fn from_spec(spec: &CaSpec, creds: &CaCredentials) -> Result<Arc<dyn Signer>, SignError> {
    let timeout = spec.timeout();
    Ok(match spec.kind {
        CaKind::Builtin => unreachable_builtin(),
        CaKind::AwsPca => {
            let p = spec.aws_pca.as_ref().ok_or_else(|| SignError::Answer("ca.awsPca missing".into()))?;
            let creds = creds.aws.clone().ok_or(SignError::NoCredentials {
                kind: spec.kind,
                missing: "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            })?;
            Arc::new(aws::AwsPca::new(p, creds, timeout).map_err(SignError::Answer)?)
        }
        CaKind::Cfssl => {
            let c = spec.cfssl.as_ref().ok_or_else(|| SignError::Answer("ca.cfssl missing".into()))?;
            Arc::new(cfssl::Cfssl::new(c, creds.cfssl_auth_key.clone(), timeout).map_err(SignError::Answer)?)
        }
        CaKind::Vault => {
            let v = spec.vault.as_ref().ok_or_else(|| SignError::Answer("ca.vault missing".into()))?;
            let token = creds
                .vault_token
                .clone()
                .ok_or(SignError::NoCredentials { kind: spec.kind, missing: ENV_VAULT_TOKEN })?;
            Arc::new(vault::Vault::new(v, token, timeout).map_err(SignError::Answer)?)
        }
    })
}

fn unreachable_builtin() -> ! {
    unreachable!("the builtin CA is not built by from_spec; callers check CaKind::Builtin first")
}

/// Builds the signer of `spec` and fetches its chain.
pub async fn connect(spec: &CaSpec, creds: &CaCredentials) -> Result<External, SignError> {
    let signer = from_spec(spec, creds)?;
    let chain = signer.ca_chain().await?;
    let (roots, intermediates) = weft_identity::external::split_chain(chain, &format!("the {} CA", spec.kind))?;
    Ok(External { spec: spec.clone(), signer, roots, intermediates })
}

/// Signs through an external CA with the checks around it (see [`weft_identity::external`]).
/// `Ok(None)`: the CSR names no identity; the caller must ask the proxy for one that names `id`.
pub async fn sign_external(
    ext: &External,
    csr_der: &[u8],
    id: &SpiffeId,
    trust_domain: &str,
    lifetime: Duration,
) -> Result<Option<Vec<CertificateDer<'static>>>, SignError> {
    if !weft_identity::external::check_csr(csr_der, id, trust_domain)? {
        return Ok(None);
    }
    let chain = ext.signer.sign(&SignRequest { csr_der, id, lifetime }).await?;
    // A wrong answer is the CA's fault, not the caller's: UNAVAILABLE, and the proxy retries.
    weft_identity::external::check_issued(chain, csr_der, id, &ext.roots, &ext.intermediates)
        .map(Some)
        .map_err(|e| SignError::Answer(e.to_string()))
}

/// Follows MeshConfig `ca` in the catalog and installs the selected CA in `ca` until `stop`.
pub async fn run(
    ca: Arc<CaState>,
    mut catalog: watch::Receiver<Arc<crate::catalog::Catalog>>,
    creds: CaCredentials,
    mut stop: watch::Receiver<bool>,
) {
    let mut applied: Option<CaSpec> = None;
    let mut retry = RETRY_FIRST;
    loop {
        let want = catalog.borrow_and_update().mesh.ca.clone();
        let mut wait = None;
        if applied.as_ref() != Some(&want) {
            if want.kind == CaKind::Builtin {
                ca.select(Selected::Builtin);
                tracing::info!("workload certificates are signed by weft's own CA");
                applied = Some(want);
            } else {
                match connect(&want, &creds).await {
                    Ok(ext) => {
                        let root = ext.roots.first().map(|r| crate::rotation::fingerprint(r)).unwrap_or_default();
                        tracing::info!(kind = %want.kind, root_sha256 = %root, "workload certificates are signed by an external CA");
                        ca.select(Selected::External(Arc::new(ext)));
                        applied = Some(want);
                        retry = RETRY_FIRST;
                    }
                    Err(e) => {
                        tracing::warn!(kind = %want.kind, error = %e, retry_in = ?retry, "cannot use the external CA yet");
                        ca.select(Selected::Failed { spec: Box::new(want), error: e.to_string() });
                        wait = Some(retry);
                        retry = (retry * 2).min(RETRY_MAX);
                    }
                }
            }
        }
        let sleep = async {
            match wait {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = catalog.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
            _ = sleep => {}
        }
    }
}
