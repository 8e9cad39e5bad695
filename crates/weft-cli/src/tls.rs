//! `weft tls`: a mesh CA and workload certificates as files, for running proxies from files
//! (`weft-proxy run`) and for the benchmarks. Shaped like `consul tls ca create` / `cert create`.

use anyhow::{bail, Context};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use weft_identity::{Authority, LeafKey, SpiffeId, TrustBundle, DEFAULT_CA_LIFETIME, DEFAULT_LEAF_LIFETIME};

#[derive(Subcommand)]
pub enum TlsCmd {
    /// Create a root CA: writes <dir>/ca.pem and <dir>/ca-key.pem (mode 0600).
    CaCreate {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        /// Overwrite an existing CA.
        #[arg(long)]
        force: bool,
    },
    /// Create a workload certificate signed by the CA in --ca-dir: writes <out>/<sa>.pem (chain),
    /// <out>/<sa>-key.pem (0600) and <out>/bundle.pem. The key is made here, on the host where
    /// the proxy that uses it runs. An existing <out>/bundle.pem that holds other roots (a
    /// combined bundle for federation or rotation) is kept, with this CA's root added if missing.
    CertCreate {
        #[arg(long, default_value = ".")]
        ca_dir: PathBuf,
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Service account: the workload's name in its SPIFFE ID.
        #[arg(long)]
        service_account: String,
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Lifetime, e.g. 24h, 90m.
        #[arg(long, default_value = "24h")]
        lifetime: weft_api::Duration,
        /// Replace an existing <out>/bundle.pem with this CA's root alone, even when it holds
        /// other roots.
        #[arg(long)]
        force: bool,
    },
}

/// What [`write_bundle`] did to `<out>/bundle.pem`.
#[derive(Debug, PartialEq, Eq)]
enum BundleWrite {
    /// Written with this CA's root alone (it was absent, held only this root, or `--force`).
    Written,
    /// Kept as it was: it already holds this CA's root and `others` more.
    Kept { others: usize },
    /// This CA's root was appended to the `others` roots it held.
    Added { others: usize },
}

/// Writes this CA's bundle to `path` without dropping roots someone put there: a hand-made
/// bundle holding other roots (another cluster's, or an old root during rotation) is kept, and
/// this CA's root is appended if it is missing. `force` replaces the file whatever it holds. A
/// file that is not a trust bundle is refused (never overwritten) unless `force`.
fn write_bundle(path: &Path, ca: &Authority, force: bool) -> anyhow::Result<BundleWrite> {
    let ours = ca.bundle();
    let existing = match std::fs::read_to_string(path) {
        Ok(text) if !force => text,
        _ => {
            std::fs::write(path, ours.to_pem()).with_context(|| format!("cannot write {}", path.display()))?;
            return Ok(BundleWrite::Written);
        }
    };
    let held = TrustBundle::from_pem(&existing).map_err(|e| {
        anyhow::anyhow!(
            "{} exists but is not a trust bundle ({e}); fix it, or pass --force to replace it with this CA's root",
            path.display()
        )
    })?;
    let root = ca.root();
    let others = held.roots().iter().filter(|r| *r != root).count();
    if others == 0 {
        std::fs::write(path, ours.to_pem()).with_context(|| format!("cannot write {}", path.display()))?;
        return Ok(BundleWrite::Written);
    }
    if held.roots().contains(root) {
        return Ok(BundleWrite::Kept { others });
    }
    let mut text = existing;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&ours.to_pem());
    TrustBundle::from_pem(&text).with_context(|| format!("adding this CA's root to {}", path.display()))?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(BundleWrite::Added { others })
}

pub(crate) fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

pub fn run(cmd: TlsCmd) -> anyhow::Result<()> {
    match cmd {
        TlsCmd::CaCreate { dir, trust_domain, force } => {
            std::fs::create_dir_all(&dir)?;
            let (cert, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
            if cert.exists() && !force {
                bail!(
                    "{} exists; pass --force to replace the CA (every workload certificate will need reissuing)",
                    cert.display()
                );
            }
            let ca = Authority::new_root(&trust_domain, DEFAULT_CA_LIFETIME)?;
            std::fs::write(&cert, ca.cert_pem())?;
            write_private(&key, &ca.key_pem())?;
            std::fs::write(dir.join("trust-domain"), &trust_domain)?;
            println!("==> CA for trust domain {trust_domain}: {} and {}", cert.display(), key.display());
            Ok(())
        }
        TlsCmd::CertCreate { ca_dir, namespace, service_account, out, lifetime, force } => {
            let read = |f: &str| {
                std::fs::read_to_string(ca_dir.join(f)).with_context(|| {
                    format!(
                        "cannot read {} (run `weft tls ca-create --dir {}` first)",
                        ca_dir.join(f).display(),
                        ca_dir.display()
                    )
                })
            };
            let td = read("trust-domain").unwrap_or_else(|_| "cluster.local".into());
            let ca = Authority::from_pem(td.trim(), &read("ca.pem")?, &read("ca-key.pem")?, "")?;
            let id = SpiffeId::workload(ca.trust_domain(), &namespace, &service_account)?;
            let key = LeafKey::generate(&id)?;
            let lifetime: std::time::Duration = lifetime.into();
            let chain =
                ca.sign_csr(&key.csr_der()?, &id, if lifetime.is_zero() { DEFAULT_LEAF_LIFETIME } else { lifetime })?;
            std::fs::create_dir_all(&out)?;
            let cert = out.join(format!("{service_account}.pem"));
            let key_path = out.join(format!("{service_account}-key.pem"));
            std::fs::write(&cert, TrustBundle::new(chain).to_pem())?;
            write_private(&key_path, &key.private_key_pem())?;
            let bundle = out.join("bundle.pem");
            match write_bundle(&bundle, &ca, force)? {
                BundleWrite::Written => {}
                BundleWrite::Kept { others } => println!(
                    "==> kept {}: it holds this CA's root and {others} other root(s); pass --force to replace it \
                     with this CA's root alone",
                    bundle.display()
                ),
                BundleWrite::Added { others } => println!(
                    "==> added this CA's root to {}, which held {others} other root(s) (kept); pass --force to \
                     replace it with this CA's root alone",
                    bundle.display()
                ),
            }
            println!("==> {id}: {} and {}", cert.display(), key_path.display());
            Ok(())
        }
    }
}
