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
    /// the proxy that uses it runs.
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
    },
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
        TlsCmd::CertCreate { ca_dir, namespace, service_account, out, lifetime } => {
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
            std::fs::write(out.join("bundle.pem"), ca.bundle().to_pem())?;
            println!("==> {id}: {} and {}", cert.display(), key_path.display());
            Ok(())
        }
    }
}
