//! The importing side of links: one task per `Link` resource holds a `Federation.Export` stream
//! to the peer's control plane (TLS verified against the peer's root from the credential, as the
//! peer trust domain's control identity with the `control.weft` marker; the link secret as the
//! bearer token) and feeds each snapshot into [`Federation`]. When the peer has east-west
//! gateways (`LinkSpec.gateways`), the stream is opened through one of them (the next one after
//! each failure) with the reserved SNI `control.weft-system.<cluster>.weft`, which the gateway
//! forwards, still encrypted, to its control plane; the TLS session and its checks are the same
//! end to end. A dropped stream is retried with
//! backoff and starts again with a full snapshot; what was imported stays until then. Removing
//! the Link withdraws everything it imported.
//!
//! The last snapshot of each link is kept in `<data-dir>/links/<cluster>.snapshot` (0600, written
//! to a temporary file and renamed), and loaded at start, so a restarted control plane routes to
//! the peer's endpoints before the peer answers.

use super::{unix_now, Federation};
use crate::catalog::{CatalogService, Instance, PeerNetwork};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Endpoint;
use weft_api::kinds::LinkSpec;
use weft_api::pb;
use weft_api::resource::{Kind, Resource};
use weft_identity::control::ControlTrust;
use weft_identity::TrustBundle;
use weft_store::Store;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The largest link snapshot accepted: each is a full snapshot of the peer's exported services,
/// which passes tonic's default of 4 MiB at about 50,000 endpoints. The peer is verified as its
/// cluster's control plane.
const MAX_SNAPSHOT_BYTES: usize = 256 << 20;

/// This cluster, as it presents itself to the peers it links to, and where it keeps the last
/// snapshot of each link.
#[derive(Clone)]
pub struct Local {
    pub cluster: String,
    pub trust_domain: String,
    /// `<data-dir>/links`.
    pub dir: std::path::PathBuf,
    /// This cluster's CA: its roots go to the peer in every ExportRequest (a change reconnects).
    pub ca: Arc<crate::rotation::CaState>,
    /// This cluster's proxies: the link tells the peer once they all trust its roots (`Trusts`).
    pub proxies: crate::discovery::Proxies,
}

impl Local {
    fn snapshot_path(&self, cluster: &str) -> std::path::PathBuf {
        self.dir.join(format!("{cluster}.snapshot"))
    }

    /// Saves a link's last snapshot, encoded (off the async threads: it syncs to disk).
    async fn save(&self, cluster: &str, bytes: Vec<u8>) {
        let (dir, path) = (self.dir.clone(), self.snapshot_path(cluster));
        let r = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            crate::datadir::create_private(&dir)?;
            let tmp = path.with_extension("snapshot.tmp");
            crate::tokens::write_private(&tmp, &bytes)?;
            std::fs::rename(&tmp, &path)
        })
        .await;
        if let Ok(Err(e)) | Err(e) = r.map_err(std::io::Error::other) {
            tracing::warn!(%cluster, error = %e, "cannot save the link's snapshot; a restart re-imports when the peer answers");
        }
    }

    /// The saved snapshot of a link, if any and readable.
    fn load(&self, cluster: &str) -> Option<pb::ExportSnapshot> {
        use prost::Message;
        let bytes = std::fs::read(self.snapshot_path(cluster)).ok()?;
        pb::ExportSnapshot::decode(bytes.as_slice())
            .inspect_err(|e| tracing::warn!(%cluster, error = %e, "the link's saved snapshot is unreadable; ignored"))
            .ok()
    }

    fn forget(&self, cluster: &str) {
        let _ = std::fs::remove_file(self.snapshot_path(cluster));
    }
}

/// Loads the saved snapshot of every stored Link into `federation` (before the first catalog is
/// built, so proxies get the imports from their first update after a restart).
pub fn restore(store: &Store, federation: &Federation, local: &Local) {
    for r in store.list(Some(Kind::Link), None).unwrap_or_default() {
        let Resource::Link(l) = r else { continue };
        let name = &l.metadata.name;
        let Some(saved) = local.load(name) else { continue };
        match convert(name, &l.spec, &local.cluster, saved) {
            Ok(Converted { trust_domain, roots, services, network, remotes }) => {
                federation.import(name, &trust_domain, roots, services, network, remotes);
                federation.set_status(name, |s| s.state = "restored");
                tracing::info!(cluster = %name, "link: restored its last snapshot until the peer answers");
            }
            Err(e) => tracing::warn!(cluster = %name, error = %e, "link: saved snapshot ignored"),
        }
    }
}

/// Follows the store's Link resources: a task per link, restarted when its spec changes, stopped
/// (and its imports withdrawn) when it is removed.
pub fn run(store: Store, federation: Arc<Federation>, local: Local, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut rev = store.subscribe();
        // Aborted when dropped, so a stopped (or aborted) control plane leaves no link behind.
        let mut tasks: HashMap<String, (LinkSpec, AbortOnDrop)> = HashMap::new();
        loop {
            let links: BTreeMap<String, LinkSpec> = store
                .list(Some(Kind::Link), None)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|r| match r {
                    Resource::Link(l) => Some((l.metadata.name, l.spec)),
                    _ => None,
                })
                .collect();
            tasks.retain(|name, (spec, task)| {
                let keep = links.get(name) == Some(spec);
                if !keep {
                    task.0.abort();
                    // A changed Link (e.g. its stream secret stored) reconnects and its next
                    // snapshot replaces the imports; a removed one is withdrawn now.
                    if !links.contains_key(name) {
                        federation.withdraw(name);
                        local.forget(name);
                        tracing::info!(cluster = %name, "link removed: its services are withdrawn");
                    }
                }
                keep
            });
            for (name, spec) in links {
                if let std::collections::hash_map::Entry::Vacant(slot) = tasks.entry(name.clone()) {
                    let task =
                        tokio::spawn(follow(name, spec.clone(), federation.clone(), local.clone(), store.clone()));
                    slot.insert((spec, AbortOnDrop(task)));
                }
            }
            tokio::select! {
                r = rev.changed() => if r.is_err() { break },
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        drop(tasks);
    })
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The roots a link trusts for the peer's control plane: those the peer sent in its latest
/// snapshot over the verified link (both during its root rotation, `weft ca rotate`, then only the
/// new one), else, before any snapshot, the credential's. Once the peer has sent its roots the
/// credential's no longer counts: a root the peer retired is not trusted by the link any more.
pub fn link_roots(spec: &LinkSpec, sent: Vec<Vec<u8>>) -> Result<TrustBundle, String> {
    let stored = TrustBundle::from_pem(&spec.root_pem).map_err(|e| format!("the link's root: {e}"))?;
    let sent = sent.into_iter().map(|r| (Some(spec.trust_domain.clone()), r.into()));
    Ok(match TrustBundle::labelled(sent.collect()) {
        Ok(b) if !b.roots().is_empty() => b,
        _ => stored,
    })
}

/// Why a session ends when this cluster's roots change (a root rotation): it reconnects at once.
const ROOTS_CHANGED: &str = "this cluster's roots changed (root rotation): reconnecting to send them to the peer";

/// Why a session ends when a delta does not apply on top of what the link holds: it reconnects
/// at once, and the new stream starts with a full snapshot.
const RESYNC: &str = "resync";

/// How often at most a link's held snapshot is saved to disk while deltas arrive: the save (an
/// encode and an fsync of the whole export) is off the path of an update, and a burst of deltas
/// is saved once.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// What a link holds of its peer's export, in wire form: the base a delta applies to
/// (`version`, of the current stream; 0: none yet), and what is saved to disk.
#[derive(Default)]
struct Held {
    version: u64,
    /// The latest message without its services.
    header: pb::ExportSnapshot,
    services: BTreeMap<(String, String), pb::Service>,
}

impl Held {
    /// The held export as one full snapshot, encoded (as an older version saved it).
    fn encode(&self) -> Vec<u8> {
        use prost::Message;
        let mut header = self.header.clone();
        (header.delta, header.base_version, header.removed_services) = (false, 0, vec![]);
        header.stream_secret.clear();
        let mut buf = header.encode_to_vec();
        for svc in self.services.values() {
            prost::encoding::message::encode(4, svc, &mut buf);
        }
        buf
    }

    /// Applies a message (`header`, its services and removed services taken out) to what is
    /// held. A delta applies only on top of exactly the version it was made against: otherwise
    /// nothing changes and the error (starting with [`RESYNC`]) ends the session.
    fn apply(
        &mut self,
        header: &pb::ExportSnapshot,
        services: Vec<pb::Service>,
        removed: &[pb::ServiceRef],
    ) -> Result<(), String> {
        if header.delta {
            if self.version == 0 || self.version != header.base_version {
                return Err(format!(
                    "{RESYNC}: the peer sent a delta against version {} of the stream, but this link holds {}",
                    header.base_version, self.version
                ));
            }
            for r in removed {
                self.services.remove(&(r.namespace.clone(), r.name.clone()));
            }
        } else {
            self.services.clear();
        }
        for svc in services {
            self.services.insert((svc.namespace.clone(), svc.name.clone()), svc);
        }
        self.version = header.version;
        self.header = header.clone();
        Ok(())
    }
}

/// Saves the link's held snapshot whenever it changes (`dirty`), at most every [`SAVE_EVERY`].
async fn saver(name: String, local: Local, held: Arc<std::sync::Mutex<Held>>, mut dirty: watch::Receiver<u64>) {
    while dirty.changed().await.is_ok() {
        let bytes = held.lock().unwrap_or_else(|p| p.into_inner()).encode();
        local.save(&name, bytes).await;
        tokio::time::sleep(SAVE_EVERY).await;
    }
}

async fn follow(name: String, spec: LinkSpec, federation: Arc<Federation>, local: Local, store: Store) {
    let mut backoff = Duration::from_millis(100);
    let addresses = spec.dial_addresses();
    let mut attempt = 0usize;
    let held = Arc::new(std::sync::Mutex::new(Held::default()));
    let (dirty, dirty_rx) = watch::channel(0u64);
    let _saver = AbortOnDrop(tokio::spawn(saver(name.clone(), local.clone(), held.clone(), dirty_rx)));
    let link = Link {
        name: &name,
        spec: &spec,
        federation: &federation,
        local: &local,
        store: &store,
        held: &held,
        dirty: &dirty,
    };
    loop {
        let got_snapshot = std::sync::atomic::AtomicBool::new(false);
        let address = &addresses[attempt % addresses.len()];
        let err = session(&link, address, &got_snapshot).await;
        let got_snapshot = got_snapshot.load(std::sync::atomic::Ordering::Relaxed);
        if err == ROOTS_CHANGED {
            // A deliberate reconnect: the link stays up (a root rotation waits for it), at once.
            tracing::info!(cluster = %name, "reconnecting the link to send this cluster's new roots");
            continue;
        }
        if err.starts_with(RESYNC) && got_snapshot {
            // The imports stay as they are until the new stream's full snapshot replaces them.
            tracing::info!(cluster = %name, reason = %err, "reconnecting the link for a full snapshot");
            federation.count_resync(&name);
            continue;
        }
        if got_snapshot {
            backoff = Duration::from_millis(100);
        }
        // The next try goes to the next gateway (when the peer has several).
        attempt = attempt.wrapping_add(1);
        tracing::warn!(cluster = %name, %address, error = %err, retry_in = ?backoff, "link to cluster failing");
        federation.set_status(&name, |s| {
            s.state = "failing";
            s.error = Some(err);
        });
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One link, as its sessions see it.
struct Link<'a> {
    name: &'a str,
    spec: &'a LinkSpec,
    federation: &'a Federation,
    local: &'a Local,
    store: &'a Store,
    held: &'a std::sync::Mutex<Held>,
    /// Bumped when `held` changed: [`saver`] saves it.
    dirty: &'a watch::Sender<u64>,
}

/// One stream, opened at `address` (the peer's control plane, or one of its gateways): returns
/// why it ended.
async fn session(link: &Link<'_>, address: &str, got_snapshot: &std::sync::atomic::AtomicBool) -> String {
    let Link { name, spec, federation, local, store, .. } = *link;
    // A new stream starts with a full snapshot: nothing is held of it yet.
    link.held.lock().unwrap_or_else(|p| p.into_inner()).version = 0;
    let run = async {
        let addr: SocketAddr = address.parse().map_err(|_| format!("address {address:?} is not ip:port"))?;
        let via = if spec.gateways.is_empty() {
            format!("at {addr}")
        } else {
            format!("through its east-west gateway {addr}")
        };
        let labelled = link_roots(spec, federation.peer_roots(name))?;
        let tls = weft_identity::control::client_config(ControlTrust::Roots(labelled), &spec.trust_domain, None)
            .map_err(|e| e.to_string())?;
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .connect_with_connector(Connector {
                addr,
                sni: weft_api::link::control_sni(name),
                tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
                cluster: name.to_string(),
            })
            .await
            .map_err(|e| format!("cannot reach the peer control plane {via}: {}", source_chain(&e)))?;
        let mut client =
            pb::federation_client::FederationClient::new(channel).max_decoding_message_size(MAX_SNAPSHOT_BYTES);
        let mut ca_changes = crate::registry::Source::subscribe(local.ca.as_ref());
        let sent_roots = local.ca.roots();
        let mut req = tonic::Request::new(pb::ExportRequest {
            cluster: local.cluster.clone(),
            bundle: Some(pb::TrustDomainBundle {
                trust_domain: local.trust_domain.clone(),
                roots_der: sent_roots.clone(),
            }),
            accepts_delta: true,
        });
        let bearer =
            format!("Bearer {}", spec.secret).parse().map_err(|_| "the link secret is malformed".to_string())?;
        req.metadata_mut().insert("authorization", bearer);
        let refused = |s: tonic::Status| {
            // The peer no longer shares with us (revoked, or the secret refused): withdraw.
            if matches!(s.code(), tonic::Code::PermissionDenied | tonic::Code::Unauthenticated) {
                federation.withdraw(name);
                local.forget(name);
            }
            format!("the peer refused the link: {}", s.message())
        };
        let mut stream = client.export(req).await.map_err(refused)?.into_inner();
        // The peer's roots this session last confirmed (or is confirming) to it.
        let (mut confirmed, mut _confirming): (Option<Vec<Vec<u8>>>, Option<AbortOnDrop>) = (None, None);
        loop {
            let next = tokio::select! {
                m = stream.message() => m,
                // This cluster's roots changed (a root rotation): reconnect to send them.
                _ = ca_changes.changed() => {
                    if local.ca.roots() == sent_roots {
                        continue;
                    }
                    return Err(ROOTS_CHANGED.to_string());
                }
            };
            let mut snap = match next {
                Ok(Some(s)) => s,
                Ok(None) => return Err("the peer closed the link stream".to_string()),
                Err(s) if matches!(s.code(), tonic::Code::PermissionDenied | tonic::Code::Unauthenticated) => {
                    return Err(refused(s))
                }
                Err(s) => return Err(format!("link stream: {}", s.message())),
            };
            let started = std::time::Instant::now();
            let stream_secret = std::mem::take(&mut snap.stream_secret);
            let services = std::mem::take(&mut snap.services);
            let removed = std::mem::take(&mut snap.removed_services);
            let header = convert_header(name, spec, &local.cluster, &snap)?;
            if confirmed.as_ref() != Some(&header.roots) {
                confirmed = Some(header.roots.clone());
                let task = confirm_trust(client.clone(), local.clone(), spec.secret.clone(), header.roots.clone());
                _confirming = Some(AbortOnDrop(tokio::spawn(task)));
            }
            let mut dropped = header.dropped;
            let converted: Vec<CatalogService> = services
                .iter()
                .filter_map(|s| convert_service(name, spec, &header.remotes, s.clone(), &mut dropped))
                .collect();
            if dropped > 0 {
                tracing::warn!(cluster = %name, dropped, "link snapshot: dropped services or endpoints that are not the peer's own");
            }
            link.held.lock().unwrap_or_else(|p| p.into_inner()).apply(&snap, services, &removed)?;
            let trusted = snap.trusted_importer_roots.iter().map(|r| r.iter().map(|b| format!("{b:02x}")).collect());
            let Header { trust_domain, roots, network, remotes, .. } = header;
            if snap.delta {
                let removed: Vec<(String, String)> = removed.into_iter().map(|r| (r.namespace, r.name)).collect();
                let peer = super::Peer { trust_domain: &trust_domain, roots, network, remotes };
                federation.import_delta(name, peer, converted, &removed);
            } else {
                federation.import(name, &trust_domain, roots, converted, network, remotes);
            }
            federation.count_update(name, snap.delta);
            federation.set_peer_trusts(name, trusted.collect());
            link.dirty.send_modify(|v| *v += 1);
            if !stream_secret.is_empty() && stream_secret != spec.secret {
                // The credential's expiring secret is exchanged for this link's long-lived one;
                // storing it restarts this task with it.
                keep_stream_secret(store, name, stream_secret).await?;
            }
            got_snapshot.store(true, std::sync::atomic::Ordering::Relaxed);
            let (delta, took_us) = (snap.delta, started.elapsed().as_micros() as u64);
            tracing::debug!(cluster = %name, at = unix_now(), delta, took_us, "link message imported");
        }
    };
    match run.await {
        Ok(()) => "ended".to_string(),
        Err(e) => e,
    }
}

/// Tells the peer (`Trusts`) once every connected proxy of this cluster trusts `roots` (the
/// peer's, from its latest snapshot): during the peer's root rotation it signs with its new root
/// only after that.
async fn confirm_trust(
    mut client: pb::federation_client::FederationClient<tonic::transport::Channel>,
    local: Local,
    secret: String,
    roots: Vec<Vec<u8>>,
) {
    let want: Vec<String> = roots.iter().map(|r| crate::rotation::fingerprint(r)).collect();
    loop {
        let proxies = local.proxies.list();
        if proxies.iter().all(|p| p.status == "SYNCED" && want.iter().all(|w| p.roots.contains(w))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let roots_sha256 = roots.iter().map(|r| weft_identity::control::sha256(r).to_vec()).collect();
    let mut req = tonic::Request::new(pb::TrustsRequest { cluster: local.cluster.clone(), roots_sha256 });
    if let Ok(bearer) = format!("Bearer {secret}").parse() {
        req.metadata_mut().insert("authorization", bearer);
    }
    match client.trusts(req).await {
        Ok(_) => tracing::debug!("told the peer which of its roots this cluster's proxies trust"),
        // An older peer has no Trusts: it does not rotate through links either.
        Err(s) => tracing::debug!(error = %s.message(), "cannot tell the peer which of its roots are trusted"),
    }
}

/// Stores the link's long-lived secret in its Link (all or nothing, like any write).
async fn keep_stream_secret(store: &Store, name: &str, secret: String) -> Result<(), String> {
    let (store, name) = (store.clone(), name.to_string());
    tokio::task::spawn_blocking(move || {
        // Compare-and-swap: a concurrent change of the Link's other fields (its namespaces) is kept.
        let found = crate::links::update_link(&store, &name, |spec| spec.secret = secret.clone())
            .map_err(|e| format!("cannot store the link's secret: {e}"))?;
        if !found {
            return Ok(()); // removed meanwhile
        }
        tracing::info!(cluster = %name, "link established: its long-lived secret is stored");
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut s = e.source();
    while let Some(c) = s {
        // A cause that its wrapper's text already ends with (hyper's connect error shows its
        // cause) is said once.
        let text = c.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        s = c.source();
    }
    out
}

/// A snapshot in catalog form.
struct Converted {
    trust_domain: String,
    /// DER.
    roots: Vec<Vec<u8>>,
    services: Vec<CatalogService>,
    /// The peer's network and gateways: the snapshot's, or the link's when the snapshot names no
    /// gateway (an older peer).
    network: PeerNetwork,
    /// The peer's remote clusters (primary-remote), by name, with their networks and gateways.
    remotes: BTreeMap<String, PeerNetwork>,
}

/// What a failed TLS handshake with the peer control plane `cluster` means: a connection closed
/// before the server answered is, through a gateway, the gateway refusing the control-plane SNI;
/// a certificate that does not verify is another root than the link trusts (or another cluster).
pub(crate) fn tls_error(e: &std::io::Error, cluster: &str) -> String {
    let bad_certificate = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
    if bad_certificate {
        format!("TLS with the peer control plane: its certificate does not verify against the root this link trusts for cluster {cluster:?} ({e}): it has a root this link never got over a verified link (its CA was made anew, or it rotated its root while this link was down), or this address is another cluster's; run `weft link create` on cluster {cluster:?}, then here `weft link remove {cluster}` and `weft link apply` the new credential")
    } else if matches!(e.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset) {
        format!("TLS with the peer control plane: the connection was closed before the handshake ended ({e}); a gateway closes it when it does not route the control-plane SNI (not that cluster's gateway, no control plane configured) or cannot reach its control plane: see the gateway's log")
    } else {
        format!("TLS with the peer control plane: {e}")
    }
}

/// A snapshot in catalog form, checked: it must come from the linked cluster, and every endpoint
/// must belong to it (its cluster, or one of the remote clusters it serves, and an identity of
/// its trust domain); others are dropped. A remote cluster named like this cluster (`local`) or
/// the peer itself is ignored.
fn convert(name: &str, spec: &LinkSpec, local: &str, mut snap: pb::ExportSnapshot) -> Result<Converted, String> {
    let services = std::mem::take(&mut snap.services);
    let header = convert_header(name, spec, local, &snap)?;
    let mut dropped = header.dropped;
    let services =
        services.into_iter().filter_map(|s| convert_service(name, spec, &header.remotes, s, &mut dropped)).collect();
    if dropped > 0 {
        tracing::warn!(cluster = %name, dropped, "link snapshot: dropped services or endpoints that are not the peer's own");
    }
    let Header { trust_domain, roots, network, remotes, .. } = header;
    Ok(Converted { trust_domain, roots, services, network, remotes })
}

/// What a snapshot (full or delta) says besides its services, checked as [`convert`] says.
struct Header {
    trust_domain: String,
    roots: Vec<Vec<u8>>,
    network: PeerNetwork,
    remotes: BTreeMap<String, PeerNetwork>,
    /// Gateways and remote clusters dropped (malformed or not the peer's to name).
    dropped: usize,
}

fn convert_header(name: &str, spec: &LinkSpec, local: &str, snap: &pb::ExportSnapshot) -> Result<Header, String> {
    if snap.cluster != name {
        return Err(format!(
            "the peer at {} says it is cluster {:?}, but this link is to {name:?}: the credential was made on another cluster",
            spec.address, snap.cluster
        ));
    }
    let bundle = snap.bundle.clone().unwrap_or_default();
    if bundle.trust_domain != spec.trust_domain || bundle.roots_der.is_empty() {
        return Err(format!(
            "the peer sent roots for trust domain {:?}, but the link is to trust domain {:?}",
            bundle.trust_domain, spec.trust_domain
        ));
    }
    let mut dropped = 0usize;
    let gateways = if snap.gateways.is_empty() { &spec.gateways } else { &snap.gateways };
    let network = PeerNetwork {
        network: if snap.network.is_empty() { spec.network.clone() } else { snap.network.clone() },
        gateways: gateways
            .iter()
            .filter_map(|g| g.parse::<SocketAddr>().inspect_err(|_| dropped += 1).ok())
            .take(weft_api::kinds::MAX_GATEWAYS)
            .collect(),
    };
    let mut remotes = BTreeMap::new();
    for r in &snap.remote_clusters {
        if !weft_api::valid_name(&r.name) || r.name == name || r.name == local {
            dropped += 1;
            continue;
        }
        let gateways = r.gateways.iter().filter_map(|g| g.parse::<SocketAddr>().ok());
        let n = PeerNetwork {
            network: r.network.clone(),
            gateways: gateways.take(weft_api::kinds::MAX_GATEWAYS).collect(),
        };
        remotes.insert(r.name.clone(), n);
    }
    Ok(Header { trust_domain: bundle.trust_domain, roots: bundle.roots_der, network, remotes, dropped })
}

/// One service of a snapshot in catalog form (`None`: not imported: a malformed name, counted
/// in `dropped`, or a namespace the link does not import), without the endpoints that are not
/// the peer's own (counted in `dropped`).
fn convert_service(
    name: &str,
    spec: &LinkSpec,
    remotes: &BTreeMap<String, PeerNetwork>,
    s: pb::Service,
    dropped: &mut usize,
) -> Option<CatalogService> {
    if !weft_api::valid_name(&s.name) || !weft_api::valid_name(&s.namespace) {
        *dropped += 1;
        return None;
    }
    if !spec.imports_namespace(&s.namespace) {
        return None; // the link imports other namespaces only (`LinkSpec.namespaces`)
    }
    let prefix = format!("spiffe://{}/", spec.trust_domain);
    let ports = s
        .ports
        .iter()
        .filter_map(|p| {
            let proto = serde_json::from_value(serde_json::Value::String(p.protocol.clone())).unwrap_or_default();
            u16::try_from(p.port).ok().filter(|p| *p != 0).map(|n| (n, proto))
        })
        .collect();
    let mut instances = vec![];
    for e in s.endpoints {
        let (Ok(address), Ok(sidecar)) = (e.address.parse::<SocketAddr>(), e.proxy.parse::<SocketAddr>()) else {
            *dropped += 1;
            continue;
        };
        if (e.cluster != name && !remotes.contains_key(&e.cluster)) || !e.identity.starts_with(&prefix) {
            *dropped += 1;
            continue;
        }
        instances.push(Instance {
            // A DNS-safe name (DNS and the Consul reads use it as the node name).
            name: format!("{name}-{}", address.to_string().replace(['.', ':', '[', ']'], "-")),
            address,
            sidecar,
            identity: e.identity,
            cluster: e.cluster,
            network: e.network,
            locality: e.locality,
            labels: Default::default(),
            tags: e.tags,
            healthy: true,
            visibility: None,
            weight: e.weight.clamp(1, weft_api::proxy::MAX_ENDPOINT_WEIGHT),
            mtls: Default::default(),
        });
    }
    instances.sort_by(|a, b| a.name.cmp(&b.name));
    Some(CatalogService {
        name: s.name,
        namespace: s.namespace,
        ports,
        connect_ports: s.ports.iter().filter(|p| p.allow_connect).filter_map(|p| u16::try_from(p.port).ok()).collect(),
        tags: vec![],
        export: false,
        cluster_local: false,
        failover: vec![],
        cluster_weights: Default::default(),
        outlier_detection: None,
        backend_policy: None,
        resilience: None,
        instances,
        clusters: vec![name.to_string()],
    })
}

/// A Federation client to the peer `name`'s control plane at `address` (one of
/// `spec.dial_addresses()`), verified as the link stream verifies it; for one-shot calls
/// (`Federation.Stats`, see `crate::stats::federation`).
pub(crate) async fn federation_client(
    name: &str,
    spec: &LinkSpec,
    peer_roots: Vec<Vec<u8>>,
    address: &str,
) -> Result<pb::federation_client::FederationClient<tonic::transport::Channel>, String> {
    let addr: SocketAddr = address.parse().map_err(|_| format!("address {address:?} is not ip:port"))?;
    let labelled = link_roots(spec, peer_roots)?;
    let tls = weft_identity::control::client_config(ControlTrust::Roots(labelled), &spec.trust_domain, None)
        .map_err(|e| e.to_string())?;
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_with_connector(Connector {
            addr,
            sni: weft_api::link::control_sni(name),
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            cluster: name.to_string(),
        })
        .await
        .map_err(|e| format!("cannot reach the peer control plane at {addr}: {}", source_chain(&e)))?;
    Ok(pb::federation_client::FederationClient::new(channel))
}

#[derive(Clone)]
struct Connector {
    addr: SocketAddr,
    /// The reserved SNI of the peer's control plane (what its gateway routes on; a control
    /// plane dialled directly ignores it).
    sni: String,
    tls: tokio_rustls::TlsConnector,
    /// The peer cluster's name (for errors).
    cluster: String,
}

type Io = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl tower_service::Service<http::Uri> for Connector {
    type Response = Io;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let Connector { addr, sni, tls, cluster } = self.clone();
        Box::pin(async move {
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| "connect timed out")??;
            let name = rustls::pki_types::ServerName::try_from(sni)?;
            match tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(name, tcp)).await {
                Ok(Ok(s)) => Ok(hyper_util::rt::TokioIo::new(s)),
                Ok(Err(e)) => Err(tls_error(&e, &cluster).into()),
                Err(_) => Err("TLS with the peer control plane: timed out".into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_identity::Authority;

    /// After the peer's root rotation its snapshots carry only the new root: the link then trusts
    /// only that, not the credential's (retired) root as well.
    #[test]
    fn the_peers_sent_roots_replace_the_credentials_root() {
        let day = Duration::from_secs(86_400);
        let (old, new) =
            (Authority::new_root("west.example", day).unwrap(), Authority::new_root("west.example", day).unwrap());
        let spec = LinkSpec {
            cluster: "west".into(),
            trust_domain: "west.example".into(),
            address: "127.0.0.1:1".into(),
            root_pem: old.cert_pem(),
            secret: "x".into(),
            expires_unix: 1,
            network: String::new(),
            gateways: vec![],
            namespaces: vec![],
        };
        // Before any snapshot: the credential's root.
        assert_eq!(link_roots(&spec, vec![]).unwrap().roots(), std::slice::from_ref(old.root()));
        // During the peer's rotation (both roots sent), then after it (only the new one).
        let both = link_roots(&spec, vec![old.root().to_vec(), new.root().to_vec()]).unwrap();
        assert_eq!(both.roots(), [old.root().clone(), new.root().clone()]);
        assert_eq!(link_roots(&spec, vec![new.root().to_vec()]).unwrap().roots(), std::slice::from_ref(new.root()));
    }

    fn svc(name: &str, endpoints: &[&str]) -> pb::Service {
        pb::Service {
            name: name.into(),
            namespace: "default".into(),
            endpoints: endpoints
                .iter()
                .map(|a| pb::Endpoint { address: a.to_string(), ..Default::default() })
                .collect(),
            ..Default::default()
        }
    }

    fn msg(version: u64, delta: Option<u64>) -> pb::ExportSnapshot {
        pb::ExportSnapshot {
            version,
            delta: delta.is_some(),
            base_version: delta.unwrap_or_default(),
            cluster: "west".into(),
            ..Default::default()
        }
    }

    /// A delta applies only on top of the version it was made against: one against a version
    /// the link missed (or on a stream that sent no full snapshot yet) changes nothing and asks
    /// for a resync; a full snapshot always applies and replaces everything.
    #[test]
    fn a_delta_against_a_missed_version_forces_a_resync() {
        let mut held = Held::default();
        let first = held.apply(&msg(1, Some(0)), vec![svc("api", &["10.0.0.1:80"])], &[]);
        assert!(first.unwrap_err().starts_with(RESYNC), "a stream starts with a full snapshot");
        held.apply(&msg(1, None), vec![svc("api", &["10.0.0.1:80"]), svc("web", &["10.0.0.2:80"])], &[]).unwrap();
        let gone = pb::ServiceRef { namespace: "default".into(), name: "web".into() };
        held.apply(&msg(2, Some(1)), vec![svc("api", &["10.0.0.1:80", "10.0.0.3:80"])], &[gone]).unwrap();
        assert_eq!(held.services.len(), 1);
        assert_eq!(held.services[&("default".to_string(), "api".to_string())].endpoints.len(), 2);
        // Version 3 was missed: the delta of version 4 (against 3) does not apply.
        let err = held.apply(&msg(4, Some(3)), vec![svc("db", &[])], &[]).unwrap_err();
        assert!(err.starts_with(RESYNC), "{err}");
        assert_eq!((held.version, held.services.len()), (2, 1), "nothing applied");
        // What is saved is one full snapshot of what is held.
        use prost::Message;
        let saved = pb::ExportSnapshot::decode(held.encode().as_slice()).unwrap();
        assert!(!saved.delta && saved.removed_services.is_empty());
        assert_eq!(saved.services, vec![svc("api", &["10.0.0.1:80", "10.0.0.3:80"])]);
        held.apply(&msg(1, None), vec![svc("db", &[])], &[]).unwrap();
        assert_eq!(held.services.keys().map(|k| k.1.as_str()).collect::<Vec<_>>(), ["db"], "a full snapshot replaces");
    }
}
