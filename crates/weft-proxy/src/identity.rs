//! The proxy's identity from files (cert chain, key, trust bundle), and hot reload: the files are
//! re-read every `identity.reload_interval`; a changed, valid pair is installed for new handshakes
//! while open connections keep theirs. A bad file is logged and the current identity kept.

use crate::Ctx;
use std::sync::Arc;
use std::time::UNIX_EPOCH;
use weft_api::proxy::IdentityFiles;
use weft_identity::{CertStore, Leaf, TrustBundle};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity.{field}: cannot read {path}: {source}")]
    Read { field: &'static str, path: String, source: std::io::Error },
    #[error("identity.{field} ({path}): {source}")]
    Parse { field: &'static str, path: String, source: weft_identity::Error },
}

struct Files {
    cert: String,
    key: String,
    bundle: String,
}

fn read(files: &IdentityFiles) -> Result<Files, IdentityError> {
    let r = |field, path: &String| {
        std::fs::read_to_string(path).map_err(|source| IdentityError::Read { field, path: path.clone(), source })
    };
    Ok(Files { cert: r("cert", &files.cert)?, key: r("key", &files.key)?, bundle: r("bundle", &files.bundle)? })
}

fn parse(paths: &IdentityFiles, f: &Files) -> Result<(Leaf, TrustBundle), IdentityError> {
    let leaf = Leaf::from_pem(&f.cert, &f.key).map_err(|source| IdentityError::Parse {
        field: "cert",
        path: paths.cert.clone(),
        source,
    })?;
    let bundle = TrustBundle::from_pem(&f.bundle).map_err(|source| IdentityError::Parse {
        field: "bundle",
        path: paths.bundle.clone(),
        source,
    })?;
    if leaf.remaining().is_zero() {
        tracing::warn!(id = %leaf.id(), path = %paths.cert, "workload certificate has expired: peers will refuse it");
    }
    Ok((leaf, bundle))
}

/// Loads the identity named by the config's `identity` section.
pub fn load_identity(files: &IdentityFiles) -> Result<CertStore, IdentityError> {
    let (leaf, bundle) = parse(files, &read(files)?)?;
    CertStore::new(leaf, bundle).map_err(|source| IdentityError::Parse {
        field: "bundle",
        path: files.bundle.clone(),
        source,
    })
}

pub(crate) fn expiry_secs(leaf: &Leaf) -> i64 {
    leaf.not_after().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Whether `leaf` and `bundle` are exactly what `certs` holds now.
fn in_force(certs: &CertStore, leaf: &Leaf, bundle: &TrustBundle) -> bool {
    certs.leaf().chain() == leaf.chain() && certs.bundle().domains().eq(bundle.domains())
}

pub(crate) async fn reload_loop(ctx: Arc<Ctx>) {
    let Some(paths) = ctx.cfg.identity.clone() else { return };
    // No text is taken as "already installed": the files may have changed between the load at
    // start and this task's first read, so the first set read is compared with what is in force.
    let mut last: Option<(String, String, String)> = None;
    let mut tick = tokio::time::interval(paths.reload_interval.into());
    loop {
        tick.tick().await;
        let files = match read(&paths) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "identity reload: keeping current certificate");
                continue;
            }
        };
        let key = (files.cert.clone(), files.key.clone(), files.bundle.clone());
        if last.as_ref() == Some(&key) {
            continue;
        }
        match parse(&paths, &files) {
            Ok((leaf, bundle)) if in_force(&ctx.certs, &leaf, &bundle) => last = Some(key),
            Ok((leaf, bundle)) => {
                // Both checked, then both swapped: never half a change.
                match ctx.certs.replace(leaf, Some(bundle)) {
                    Ok(()) => {
                        ctx.metrics.cert_rotations.inc();
                        ctx.metrics.cert_expiry.set(expiry_secs(&ctx.certs.leaf()));
                        last = Some(key);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "identity reload refused; keeping the current certificate");
                        // Report a bad pair once, not on every tick.
                        last = Some(key);
                    }
                }
            }
            // Files may be caught half-written; the next tick tries again.
            Err(e) => tracing::warn!(error = %e, "identity reload: keeping current certificate"),
        }
    }
}
