//! Root rotation with an overlap (`weft ca rotate`): the CA's roots change while every proxy, of
//! this cluster and of linked clusters, keeps trusting every certificate in use.
//!
//! ```text
//!  idle ──rotate──► trust-both ──every proxy acked old+new──► sign-new ──overlap over and every
//!  (old)            bundle old+new, sign with old             bundle old+new,     proxy's leaf is
//!                                                             sign with new,      from the new root
//!                                                             proxies renew now        │
//!  idle (new) ◄────────────────── finish: serve with the new root, bundle new only ◄───┘
//! ```
//!
//! The roots and the signing root reach proxies through the catalog ([`CaView`], this is one of
//! the registry's sources): discovery pushes them to this cluster's proxies, and the Export stream
//! sends them to every cluster that imports from this one. State lives in `<data-dir>/ca/`:
//! `rotation.json` (the phase) and `next/` (the new root and intermediate), so a restart resumes
//! the phase it was in; on finish the old CA moves to `ca/retired-<unix>/` and `next/` becomes the
//! CA. The new root is made here (the old root's key is not needed: a root signs itself), its
//! key written to `ca/next/root-key.pem` like the first root's (move it offline afterwards).

use crate::ca::{self, CaError, PluginCa};
use crate::catalog::{CaView, Imported};
use crate::discovery::ProxyStatus;
use crate::federation::Federation;
use crate::signer::Selected;
use crate::tokens::write_private;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use weft_api::resource::Resource;
use weft_identity::{Authority, CertStore, TrustBundle, DEFAULT_CA_LIFETIME};

/// How often the phase's condition is checked.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// Where a rotation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Both roots trusted everywhere; new certificates still come from the old intermediate.
    TrustBoth,
    /// Both roots trusted; new certificates come from the new intermediate and proxies renew.
    SignNew,
    /// The old root is being dropped (files moved); only seen after a crash mid-finish.
    Finishing,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::TrustBoth => "trust-both",
            Phase::SignNew => "sign-new",
            Phase::Finishing => "finishing",
        })
    }
}

/// `ca/rotation.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Saved {
    phase: Phase,
    started_unix: u64,
    overlap_seconds: u64,
    signing_since_unix: Option<u64>,
}

struct Rotation {
    saved: Saved,
    new: Arc<Authority>,
}

struct Inner {
    current: Arc<Authority>,
    rotation: Option<Rotation>,
    /// What the rotation waits for now (shown by `weft ca`).
    waiting_for: String,
    /// MeshConfig `ca` as installed by [`crate::signer::run`].
    selected: Selected,
    /// The names the serving certificate carries besides its identity ([`crate::api_tls`]).
    serving_names: Vec<String>,
}

/// Why a rotation cannot start or stop.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("a root rotation is already in progress (phase {phase}, started {started_unix} Unix time): wait until it finishes (`weft ca rotate --status`), or abort it with `weft ca rotate --abort` while it is in phase trust-both")]
    InProgress { phase: Phase, started_unix: u64 },
    #[error("this control plane runs a plug-in CA (`--ca-cert`/`--ca-key`/`--ca-chain`): its root belongs to whoever issued it; replace the plug-in files instead")]
    PlugIn,
    #[error("no root rotation is in progress: nothing to abort")]
    NotRotating,
    #[error("the rotation is in phase {0}: certificates of the new root are already in use, so it can no longer be aborted; let it finish")]
    TooLate(Phase),
    #[error("{0}")]
    Ca(#[from] CaError),
}

/// The cluster's CA, including a root rotation in progress. Cheap to share (`Arc`).
pub struct CaState {
    dir: PathBuf,
    cluster: String,
    plugin: bool,
    inner: Mutex<Inner>,
    tx: watch::Sender<u64>,
}

fn unix_now() -> u64 {
    crate::federation::unix_now()
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io { path: path.display().to_string(), source }
}

/// Hex SHA-256 of a certificate (how proxy-status and the API name roots).
pub fn fingerprint(der: &[u8]) -> String {
    weft_identity::control::sha256(der).iter().map(|b| format!("{b:02x}")).collect()
}

impl CaState {
    /// Loads the CA of `data_dir` (see [`ca::load_or_create`]) and the rotation in progress, if
    /// any; a finish interrupted by a crash is completed first.
    pub fn open(
        data_dir: &Path,
        trust_domain: &str,
        cluster: &str,
        plugin: Option<&PluginCa>,
    ) -> Result<Arc<CaState>, CaError> {
        let dir = data_dir.join("ca");
        let saved = read_saved(&dir)?;
        if plugin.is_none() {
            if let Some(s) = saved.as_ref().filter(|s| s.phase == Phase::Finishing) {
                finish_files(&dir, s)?;
            }
        }
        let current = Arc::new(ca::load_or_create(data_dir, trust_domain, cluster, plugin)?);
        let mut rotation = None;
        if let Some(saved) = read_saved(&dir)?.filter(|_| plugin.is_none()) {
            let next = dir.join("next");
            let read = |f: &str| std::fs::read_to_string(next.join(f)).map_err(io_err(&next));
            let bad = |source| CaError::Bad { path: next.display().to_string(), source };
            let new = Authority::from_pem(
                trust_domain,
                &read("intermediate.pem")?,
                &read("intermediate-key.pem")?,
                &read("root.pem")?,
            )
            .map_err(bad)?;
            tracing::info!(phase = %saved.phase, "resuming the root rotation in progress");
            rotation = Some(Rotation { saved, new: Arc::new(new) });
        }
        Ok(Arc::new(CaState {
            dir,
            cluster: cluster.to_string(),
            plugin: plugin.is_some(),
            inner: Mutex::new(Inner {
                current,
                rotation,
                waiting_for: String::new(),
                selected: Selected::Builtin,
                serving_names: vec![],
            }),
            tx: watch::channel(0).0,
        }))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn changed(&self) {
        self.tx.send_modify(|v| *v += 1);
    }

    /// The names (IP addresses, DNS names) the control plane's serving certificate carries besides
    /// its identity; every renewal keeps them.
    pub fn serving_names(&self) -> Vec<String> {
        self.with(|i| i.serving_names.clone())
    }

    pub fn set_serving_names(&self, names: Vec<String>) {
        self.with(|i| i.serving_names = names);
    }

    /// The CA that signs proxies' certificates now.
    pub fn signer(&self) -> Arc<Authority> {
        self.with(|i| match &i.rotation {
            Some(r) if r.saved.phase != Phase::TrustBoth => r.new.clone(),
            _ => i.current.clone(),
        })
    }

    /// The CA of the control plane's own serving certificate: the old one until the rotation
    /// finishes (bootstrap tokens pin its root).
    pub fn serving_ca(&self) -> Arc<Authority> {
        self.with(|i| i.current.clone())
    }

    /// Every root of this mesh trusted now (DER): the current one, the new one while rotating, and
    /// an external CA's roots while MeshConfig `ca` selects one (weft's own stay trusted, so
    /// switching CAs breaks no connection while proxies renew).
    pub fn roots(&self) -> Vec<Vec<u8>> {
        self.with(|i| {
            let mut out = vec![i.current.root().to_vec()];
            if let Some(r) = &i.rotation {
                out.push(r.new.root().to_vec());
            }
            if let Selected::External(e) = &i.selected {
                out.extend(e.roots.iter().map(|r| r.to_vec()).filter(|r| !out.contains(r)).collect::<Vec<_>>());
            }
            out
        })
    }

    pub fn view(&self) -> CaView {
        let signing_root = match self.selected() {
            Selected::External(e) => e.roots.first().map(|r| weft_identity::control::sha256(r).to_vec()),
            _ => None,
        };
        CaView {
            roots: self.roots(),
            signing_root: signing_root.unwrap_or_else(|| weft_identity::control::sha256(self.signer().root()).to_vec()),
        }
    }

    /// What MeshConfig `ca` selects now ([`crate::signer::run`] installs it).
    pub fn selected(&self) -> Selected {
        self.with(|i| i.selected.clone())
    }

    /// Installs the CA MeshConfig `ca` selects; proxies get its roots through the catalog.
    pub fn select(&self, selected: Selected) {
        self.with(|i| i.selected = selected);
        self.changed();
    }

    /// The phase of the rotation in progress.
    pub fn phase(&self) -> Option<Phase> {
        self.with(|i| i.rotation.as_ref().map(|r| r.saved.phase))
    }

    /// One consistent view for `GET /v1/ca`: the serving CA, the signing CA, every root trusted
    /// and the rotation's status, all read at once (a rotation may finish between two reads).
    pub fn snapshot(&self) -> (Arc<Authority>, Arc<Authority>, Vec<Vec<u8>>, serde_json::Value) {
        self.with(|i| {
            let signer = match &i.rotation {
                Some(r) if r.saved.phase != Phase::TrustBoth => r.new.clone(),
                _ => i.current.clone(),
            };
            let mut roots = vec![i.current.root().to_vec()];
            roots.extend(i.rotation.as_ref().map(|r| r.new.root().to_vec()));
            (i.current.clone(), signer, roots, Self::status_of(i))
        })
    }

    /// What `GET /v1/ca` says about the rotation.
    pub fn status(&self) -> serde_json::Value {
        self.with(|i| Self::status_of(i))
    }

    fn status_of(i: &Inner) -> serde_json::Value {
        match &i.rotation {
            None => serde_json::Value::Null,
            Some(r) => serde_json::json!({
                "phase": r.saved.phase.to_string(),
                "started_unix": r.saved.started_unix,
                "overlap_seconds": r.saved.overlap_seconds,
                "signing_since_unix": r.saved.signing_since_unix,
                "old_root_sha256": fingerprint(i.current.root()),
                "new_root_sha256": fingerprint(r.new.root()),
                "waiting_for": i.waiting_for,
            }),
        }
    }

    /// Starts a rotation: a new root and intermediate (files in `ca/next/`), phase trust-both.
    pub fn start(&self, overlap: Duration) -> Result<(), RotateError> {
        if self.plugin {
            return Err(RotateError::PlugIn);
        }
        if let Some((phase, started_unix)) =
            self.with(|i| i.rotation.as_ref().map(|r| (r.saved.phase, r.saved.started_unix)))
        {
            return Err(RotateError::InProgress { phase, started_unix });
        }
        let current = self.serving_ca();
        let td = current.trust_domain().to_string();
        let next = self.dir.join("next");
        let bad = |source| CaError::Bad { path: next.display().to_string(), source };
        let root = Authority::new_root(&td, DEFAULT_CA_LIFETIME * 10).map_err(bad)?;
        let inter = root.new_intermediate(&self.cluster, DEFAULT_CA_LIFETIME).map_err(bad)?;
        let _ = std::fs::remove_dir_all(&next);
        crate::datadir::create_private(&next).map_err(io_err(&next))?;
        write_private(&next.join("root-key.pem"), root.key_pem().as_bytes()).map_err(io_err(&next))?;
        std::fs::write(next.join("root.pem"), root.cert_pem()).map_err(io_err(&next))?;
        write_private(&next.join("intermediate-key.pem"), inter.key_pem().as_bytes()).map_err(io_err(&next))?;
        std::fs::write(next.join("intermediate.pem"), inter.cert_pem()).map_err(io_err(&next))?;
        let saved = Saved {
            phase: Phase::TrustBoth,
            started_unix: unix_now(),
            overlap_seconds: overlap.as_secs(),
            signing_since_unix: None,
        };
        write_saved(&self.dir, Some(&saved))?;
        tracing::info!(new_root = %fingerprint(inter.root()), overlap_s = overlap.as_secs(), "root rotation started: phase trust-both (both roots trusted, signing with the old one)");
        self.with(|i| i.rotation = Some(Rotation { saved, new: Arc::new(inter) }));
        self.changed();
        Ok(())
    }

    /// Aborts a rotation still in phase trust-both: the new root leaves every bundle.
    pub fn abort(&self) -> Result<(), RotateError> {
        match self.phase() {
            None => return Err(RotateError::NotRotating),
            Some(Phase::TrustBoth) => {}
            Some(p) => return Err(RotateError::TooLate(p)),
        }
        write_saved(&self.dir, None)?;
        let _ = std::fs::remove_dir_all(self.dir.join("next"));
        self.with(|i| i.rotation = None);
        tracing::info!("root rotation aborted: the new root leaves every bundle");
        self.changed();
        Ok(())
    }

    fn set_phase(&self, phase: Phase) -> Result<(), CaError> {
        let saved = self.with(|i| {
            i.waiting_for.clear();
            i.rotation.as_mut().map(|r| {
                r.saved.phase = phase;
                if phase == Phase::SignNew {
                    r.saved.signing_since_unix = Some(unix_now());
                }
                r.saved.clone()
            })
        });
        if let Some(s) = &saved {
            write_saved(&self.dir, Some(s))?;
        }
        self.changed();
        Ok(())
    }

    /// The old root leaves: files moved (`ca/retired-<unix>/`), the new CA is the CA.
    fn finish(&self) -> Result<(), CaError> {
        self.set_phase(Phase::Finishing)?;
        let saved = self.with(|i| i.rotation.as_ref().map(|r| r.saved.clone()));
        if let Some(s) = saved {
            finish_files(&self.dir, &s)?;
        }
        self.with(|i| {
            if let Some(r) = i.rotation.take() {
                i.current = r.new;
            }
        });
        self.changed();
        Ok(())
    }

    /// What the rotation waits for now, given the connected proxies and the clusters importing
    /// from this one (`None`: nothing, advance).
    fn waiting_for(&self, proxies: &[ProxyStatus], federation: &Federation, now: u64) -> Option<String> {
        let (phase, new, saved) =
            self.with(|i| i.rotation.as_ref().map(|r| (r.saved.phase, fingerprint(r.new.root()), r.saved.clone())))?;
        match phase {
            Phase::TrustBoth => {
                let behind: Vec<&str> = proxies
                    .iter()
                    .filter(|p| p.status != "SYNCED" || !p.roots.contains(&new))
                    .map(|p| p.proxy_id.as_str())
                    .collect();
                if !behind.is_empty() {
                    return Some(format!("proxies without the new root yet: {}", behind.join(", ")));
                }
                let mut clusters = federation.importers_lacking(&new);
                clusters.extend(federation.links_lacking(&new));
                (!clusters.is_empty())
                    .then(|| format!("linked clusters whose proxies lack the new root yet: {}", clusters.join(", ")))
            }
            Phase::SignNew => {
                let since = saved.signing_since_unix.unwrap_or(saved.started_unix);
                let end = since.saturating_add(saved.overlap_seconds);
                if now < end {
                    return Some(format!("the overlap, until {end} Unix time"));
                }
                let old: Vec<&str> =
                    proxies.iter().filter(|p| p.leaf_root != new).map(|p| p.proxy_id.as_str()).collect();
                (!old.is_empty())
                    .then(|| format!("proxies still using a certificate of the old root: {}", old.join(", ")))
            }
            Phase::Finishing => None,
        }
    }
}

impl crate::registry::Source for CaState {
    fn name(&self) -> &'static str {
        "ca"
    }
    fn resources(&self) -> Vec<Resource> {
        vec![]
    }
    fn has_resources(&self) -> bool {
        false
    }
    fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
    fn imported(&self) -> Option<Imported> {
        Some(Imported { ca: Some(self.view()), ..Default::default() })
    }
}

fn read_saved(dir: &Path) -> Result<Option<Saved>, CaError> {
    let path = dir.join("rotation.json");
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| CaError::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Writes (or, with `None`, removes) `ca/rotation.json`, atomically.
fn write_saved(dir: &Path, saved: Option<&Saved>) -> Result<(), CaError> {
    let path = dir.join("rotation.json");
    match saved {
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&path)(e)),
            _ => Ok(()),
        },
        Some(s) => {
            let tmp = dir.join("rotation.json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(s).unwrap_or_default()).map_err(io_err(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(io_err(&path))
        }
    }
}

/// Moves the old CA's files to `retired-<started>/` and `next/`'s into place; each step is
/// skipped when already done, so a crash anywhere is completed by the next start.
fn finish_files(dir: &Path, saved: &Saved) -> Result<(), CaError> {
    let retired = dir.join(format!("retired-{}", saved.started_unix));
    let next = dir.join("next");
    crate::datadir::create_private(&retired).map_err(io_err(&retired))?;
    let files = ["intermediate.pem", "intermediate-key.pem", "root.pem", "root-key.pem"];
    if next.join("intermediate.pem").exists() {
        for f in files {
            let (from, to) = (dir.join(f), retired.join(f));
            // While `next/<f>` is there, `<f>` is still the old one (the new ones move in after).
            if from.exists() && next.join(f).exists() {
                std::fs::rename(&from, &to).map_err(io_err(&from))?;
            }
        }
        // The certificate last, as on first start: its presence marks a complete CA.
        for f in ["root-key.pem", "root.pem", "intermediate-key.pem", "intermediate.pem"] {
            let (from, to) = (next.join(f), dir.join(f));
            if from.exists() {
                std::fs::rename(&from, &to).map_err(io_err(&from))?;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&next);
    write_saved(dir, None)?;
    tracing::info!(retired = %retired.display(), "root rotation finished: the old root is no longer trusted");
    Ok(())
}

/// Drives the rotation: keeps the serving certificate's bundle (which checks the client
/// certificates proxies present) equal to the roots, advances the phase when its condition
/// holds, and on finish serves with the new root and pins it in new bootstrap tokens.
pub async fn run(
    ca: Arc<CaState>,
    proxies: crate::discovery::Proxies,
    federation: Arc<Federation>,
    tokens: Arc<crate::tokens::Tokens>,
    serving: CertStore,
    mut stop: watch::Receiver<bool>,
) {
    let mut changes = ca.tx.subscribe();
    let mut said = String::new();
    loop {
        let roots = TrustBundle::new(ca.roots().into_iter().map(Into::into).collect());
        if serving.bundle().roots() != roots.roots() {
            if let Err(e) = serving.set_bundle(roots) {
                tracing::warn!(error = %e, "cannot update the control plane's trust bundle");
            }
        }
        if ca.phase().is_some() {
            match ca.waiting_for(&proxies.list(), &federation, unix_now()) {
                Some(w) => {
                    ca.with(|i| i.waiting_for.clone_from(&w));
                    if w != said {
                        tracing::info!(phase = ?ca.phase(), waiting_for = %w, "root rotation");
                        said = w;
                    }
                }
                None => advance(&ca, &tokens, &serving),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            r = changes.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

fn advance(ca: &CaState, tokens: &crate::tokens::Tokens, serving: &CertStore) {
    let result = match ca.phase() {
        Some(Phase::TrustBoth) => {
            tracing::info!("root rotation: every proxy trusts the new root; phase sign-new (signing with the new root, proxies renew)");
            ca.set_phase(Phase::SignNew)
        }
        Some(Phase::SignNew | Phase::Finishing) => {
            let new = ca.signer();
            // Serve with the new root first (proxies trust both), then drop the old one.
            let bundle = TrustBundle::new(vec![new.root().clone()]);
            match crate::grpc_tls::issue(&new, &ca.serving_names()).and_then(|l| serving.replace(l, Some(bundle))) {
                Ok(()) => {
                    tokens.set_ca(&weft_identity::control::sha256(new.root()), new.trust_domain());
                    ca.finish()
                }
                Err(e) => {
                    tracing::error!(error = %e, "root rotation: cannot switch the serving certificate; retrying");
                    Ok(())
                }
            }
        }
        None => Ok(()),
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "root rotation: cannot save its state; retrying");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("weft-rotation-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_crash_mid_finish_is_completed_at_the_next_start() {
        let d = dir("finish");
        let ca = CaState::open(&d, "td.example", "east", None).unwrap();
        let old = fingerprint(ca.serving_ca().root());
        ca.start(Duration::from_secs(0)).unwrap();
        ca.set_phase(Phase::SignNew).unwrap();
        let new = fingerprint(ca.signer().root());
        // The crash: phase saved as finishing, the old files already moved away, the new ones not.
        ca.set_phase(Phase::Finishing).unwrap();
        let saved = read_saved(&d.join("ca")).unwrap().unwrap();
        let retired = d.join("ca").join(format!("retired-{}", saved.started_unix));
        std::fs::create_dir_all(&retired).unwrap();
        for f in ["intermediate.pem", "intermediate-key.pem", "root.pem", "root-key.pem"] {
            std::fs::rename(d.join("ca").join(f), retired.join(f)).unwrap();
        }
        drop(ca);
        let ca = CaState::open(&d, "td.example", "east", None).unwrap();
        assert_eq!(ca.phase(), None, "the finish was completed");
        assert_eq!(fingerprint(ca.serving_ca().root()), new, "the new root is the CA's");
        assert_eq!(ca.roots().len(), 1);
        assert!(retired.join("root.pem").exists() && !d.join("ca/next").exists());
        assert_ne!(old, new);
    }

    #[test]
    fn abort_only_before_anything_is_signed_by_the_new_root() {
        let d = dir("abort");
        let ca = CaState::open(&d, "td.example", "east", None).unwrap();
        let old = fingerprint(ca.serving_ca().root());
        assert!(matches!(ca.abort(), Err(RotateError::NotRotating)));
        ca.start(Duration::from_secs(60)).unwrap();
        assert_eq!(ca.roots().len(), 2);
        assert_eq!(fingerprint(ca.signer().root()), old, "trust-both still signs with the old root");
        assert!(matches!(ca.start(Duration::from_secs(60)), Err(RotateError::InProgress { .. })));
        ca.abort().unwrap();
        assert_eq!(ca.roots().len(), 1);
        assert!(!d.join("ca/rotation.json").exists() && !d.join("ca/next").exists());
        ca.start(Duration::from_secs(60)).unwrap();
        ca.set_phase(Phase::SignNew).unwrap();
        assert_ne!(fingerprint(ca.signer().root()), old, "sign-new signs with the new root");
        let err = ca.abort().unwrap_err().to_string();
        assert!(err.contains("can no longer be aborted"), "{err}");
    }
}
