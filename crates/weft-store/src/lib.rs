//! The control plane's embedded, crash-safe resource store.
//!
//! It holds the declarative resources (MeshConfig, Service, Workload of [`weft_api::resource`])
//! in one [redb](https://www.redb.org) file, `<dir>/weft.redb`, and serves reads from a copy in
//! memory:
//!
//! ```text
//!   apply / delete ──► writer lock ──► check versions and references ──► redb commit (fsync)
//!                                                                          │
//!   get / list / snapshot ◄── RwLock<State> ◄── short write lock ◄─────────┘
//!   subscribe ◄── watch<u64> ◄── new revision
//! ```
//!
//! - **Revisions.** Every committed change gets the next store revision (one per transaction,
//!   persisted), and every resource it writes gets `metadata.resourceVersion` = that revision.
//!   A write that carries a `resourceVersion` succeeds only if it is still the stored one
//!   (optimistic concurrency); without one it overwrites.
//! - **All or nothing.** A write is checked as a whole: every resource, the versions, and the
//!   cross-resource rules ([`weft_api::resource::check_references`]) over the state it would
//!   leave. If any check fails nothing is written.
//! - **Durability.** When [`Store::apply`] or [`Store::delete`] returns `Ok`, the change is on
//!   disk (redb commit with immediate durability and two-phase commit). After a crash, even a
//!   `kill -9` or power loss in the middle of a commit, the store reopens with every
//!   acknowledged change and each transaction either wholly present or wholly absent.
//! - **Damage.** A stored value that no longer reads (hand-edited, or from an older schema) does
//!   not stop [`Store::open`]: it is logged and listed by [`Store::quarantined`]; re-applying or
//!   deleting that resource clears it. A file that is not a redb database, or is locked by
//!   another process, fails `open` with a [`StoreError::Storage`] naming the file.
//!
//! - **Health state.** Beside the resources, a `health` table keeps each health check's last
//!   state as opaque bytes (weft-health's records), so that a restart resumes it:
//!   [`Store::check_states`], [`Store::save_check_states`]. Those writes are durable too, but use
//!   no revision and wake no subscriber: they are not resources.
//!
//! Operations block on disk I/O; from async code, call `apply` and `delete` in
//! `tokio::task::spawn_blocking`.
#![forbid(unsafe_code)]

mod codec;
mod error;
mod redb_backend;

pub use error::StoreError;
pub use redb_backend::FILE_NAME;

use codec::storage_key;
use redb_backend::Backend;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, Weak};
use tokio::sync::watch;
use weft_api::resource::{check_references, Key, Kind, Resource};
use weft_api::ConfigError;

/// A handle to an open store. Clones share it; the file closes when the last one is dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    state: RwLock<State>,
    /// Held by a write from its checks to its commit, so that it commits against the state it
    /// checked.
    writer: Mutex<()>,
    revisions: watch::Sender<u64>,
}

struct State {
    revision: u64,
    resources: BTreeMap<Key, Resource>,
    /// Database key -> why its value did not read.
    quarantined: BTreeMap<String, String>,
}

/// The store's revision and every resource, taken together.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub revision: u64,
    pub resources: BTreeMap<Key, Resource>,
}

/// What [`Store::apply`] did with one resource, and its resourceVersion after the write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    Created(Key, u64),
    Configured(Key, u64),
    Unchanged(Key, u64),
}

impl Applied {
    pub fn key(&self) -> &Key {
        match self {
            Applied::Created(k, _) | Applied::Configured(k, _) | Applied::Unchanged(k, _) => k,
        }
    }

    /// The resource's resourceVersion after the write.
    pub fn version(&self) -> u64 {
        match self {
            Applied::Created(_, v) | Applied::Configured(_, v) | Applied::Unchanged(_, v) => *v,
        }
    }
}

/// As `kubectl apply` prints it: `Service default/api created`.
impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Applied::Created(..) => "created",
            Applied::Configured(..) => "configured",
            Applied::Unchanged(..) => "unchanged",
        };
        write!(f, "{} {what}", self.key())
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.inner.backend.path()).field("revision", &self.revision()).finish()
    }
}

impl Store {
    /// How many handles share this store (this one included); the database closes with the last.
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// A handle that does not keep the store open (for writers that must not outlive it).
    pub fn downgrade(&self) -> WeakStore {
        WeakStore(Arc::downgrade(&self.inner))
    }

    /// Every saved health-check state: (check id, bytes), sorted by id.
    pub fn check_states(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.backend.health()
    }

    /// Saves (`Some`) and removes (`None`) health-check states in one durable transaction: on
    /// disk when this returns `Ok`. It does not change the revision.
    pub fn save_check_states(&self, changes: &[(String, Option<Vec<u8>>)]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.inner.backend.commit_health(changes)
    }
}

/// A [`Store`] handle that does not keep it open; see [`Store::downgrade`].
#[derive(Clone, Debug)]
pub struct WeakStore(Weak<Inner>);

impl WeakStore {
    /// The store, if some [`Store`] handle still holds it open.
    pub fn upgrade(&self) -> Option<Store> {
        self.0.upgrade().map(|inner| Store { inner })
    }
}

impl Store {
    /// Opens the store in `dir`, creating the directory and `weft.redb` if needed, and loads it.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let (backend, loaded) = Backend::open(dir)?;
        let mut state = State { revision: loaded.revision, resources: BTreeMap::new(), quarantined: BTreeMap::new() };
        for (key, value) in loaded.entries {
            match codec::decode(&key, &value) {
                Ok((resource, version)) => {
                    // Versions never exceed the revision; if a damaged file says otherwise,
                    // the next revision must still be newer than every version handed out.
                    state.revision = state.revision.max(version);
                    state.resources.insert(resource.key(), resource);
                }
                Err(error) => {
                    tracing::warn!(
                        key,
                        %error,
                        path = %backend.path().display(),
                        "a stored resource does not read and is quarantined; re-apply or delete it"
                    );
                    state.quarantined.insert(key, error);
                }
            }
        }
        if let Err(error) = check_references(state.resources.values()) {
            tracing::warn!(%error, "the stored resources break a cross-resource rule; fix it with the next apply");
        }
        tracing::info!(
            path = %backend.path().display(),
            revision = state.revision,
            resources = state.resources.len(),
            quarantined = state.quarantined.len(),
            "opened the resource store"
        );
        let (revisions, _) = watch::channel(state.revision);
        Ok(Store { inner: Arc::new(Inner { backend, state: RwLock::new(state), writer: Mutex::new(()), revisions }) })
    }

    /// Creates or updates `resources` in one transaction: all of them or none.
    ///
    /// Fails with [`StoreError::Conflict`] if a resource carries a `resourceVersion` that is not
    /// the stored one (or it does not exist), with [`StoreError::Invalid`] if a resource is
    /// invalid, listed twice, or the resulting state breaks a cross-resource rule. Resources whose
    /// labels and spec are already stored are `Unchanged` and keep their version; the others get
    /// the new revision. If nothing changes, no revision is used.
    pub fn apply(&self, resources: Vec<Resource>) -> Result<Vec<Applied>, StoreError> {
        // Check each resource outside the locks, in the form it will be read back.
        let mut incoming = Vec::with_capacity(resources.len());
        let mut seen = HashSet::new();
        for resource in resources {
            let resource = codec::normalize(resource)?;
            let key = resource.key();
            if !seen.insert(key.clone()) {
                return Err(ConfigError::invalid(
                    format!("{key}: metadata.name"),
                    "is listed twice in one write; keep one of them",
                )
                .into());
            }
            incoming.push(resource);
        }

        let _writer = self.inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let state = self.read();
        let mut results = Vec::with_capacity(incoming.len());
        let mut writes = Vec::new();
        for resource in incoming {
            let key = resource.key();
            let stored = state.resources.get(&key);
            let current = stored.and_then(codec::version_of);
            if let Some(expected) = &resource.metadata().resource_version {
                if current.map(|v| v.to_string()).as_ref() != Some(expected) {
                    return Err(StoreError::Conflict { key, expected: expected.clone(), current });
                }
            }
            let mut resource = resource;
            // Set by the store alone: kept from the stored resource, or set below on creation.
            resource.metadata_mut().creation_revision = stored.and_then(|s| s.metadata().creation_revision);
            match stored {
                Some(stored) if same_content(stored, &resource) => {
                    results.push(Applied::Unchanged(key, current.unwrap_or(0)));
                }
                Some(_) => {
                    results.push(Applied::Configured(key, 0));
                    writes.push(resource);
                }
                None => {
                    results.push(Applied::Created(key, 0));
                    writes.push(resource);
                }
            }
        }
        if writes.is_empty() {
            return Ok(results);
        }

        let written: HashSet<Key> = writes.iter().map(Resource::key).collect();
        let after: Vec<&Resource> =
            state.resources.iter().filter(|(key, _)| !written.contains(*key)).map(|(_, r)| r).chain(&writes).collect();
        check_references(after.iter().copied())?;
        weft_api::ext_authz::check_custom_providers(&writes, after.iter().copied())?;
        if written.iter().any(|k| k.kind == Kind::MeshConfig) {
            warn_policies_without_provider(&after);
        }

        let revision = next_revision(&state)?;
        drop(state); // Only writers change it, and this one holds the writer lock.
        let mut puts = Vec::with_capacity(writes.len());
        for resource in &mut writes {
            resource.metadata_mut().resource_version = Some(revision.to_string());
            let created = &mut resource.metadata_mut().creation_revision;
            created.get_or_insert(revision);
            let value = codec::encode(resource)
                .map_err(|e| StoreError::Storage(format!("cannot encode {}: {e}", resource.key())))?;
            puts.push((storage_key(&resource.key()), value));
        }
        self.inner.backend.commit(revision, &puts, &[])?;

        {
            let mut state = self.inner.state.write().unwrap_or_else(PoisonError::into_inner);
            for resource in writes {
                state.quarantined.remove(&storage_key(&resource.key()));
                state.resources.insert(resource.key(), resource);
            }
            state.revision = revision;
        }
        for result in &mut results {
            if let Applied::Created(_, v) | Applied::Configured(_, v) = result {
                *v = revision;
            }
        }
        self.inner.revisions.send_replace(revision);
        tracing::debug!(revision, written = puts.len(), "applied");
        Ok(results)
    }

    pub fn get(&self, key: &Key) -> Result<Option<Resource>, StoreError> {
        Ok(self.read().resources.get(key).cloned())
    }

    /// The resources of `kind` (all kinds if `None`) in `namespace` (all if `None`), sorted by
    /// key.
    pub fn list(&self, kind: Option<Kind>, namespace: Option<&str>) -> Result<Vec<Resource>, StoreError> {
        Ok(self
            .read()
            .resources
            .iter()
            .filter(|(key, _)| kind.is_none_or(|k| key.kind == k))
            .filter(|(key, _)| namespace.is_none_or(|ns| key.namespace == ns))
            .map(|(_, r)| r.clone())
            .collect())
    }

    /// Deletes `keys` in one transaction, all or none, and returns the new revision.
    ///
    /// Fails with [`StoreError::NotFound`] if a key does not exist, and with
    /// [`StoreError::Invalid`] if a remaining resource still uses one (a Workload of a deleted
    /// Service). Quarantined entries can be deleted by their key.
    pub fn delete(&self, keys: &[Key]) -> Result<u64, StoreError> {
        let keys: BTreeSet<&Key> = keys.iter().collect();
        let _writer = self.inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let state = self.read();
        for key in &keys {
            if !state.resources.contains_key(*key) && !state.quarantined.contains_key(&storage_key(key)) {
                return Err(StoreError::NotFound((*key).clone()));
            }
        }
        if keys.is_empty() {
            return Ok(state.revision);
        }
        let remaining: Vec<&Resource> =
            state.resources.iter().filter(|(key, _)| !keys.contains(key)).map(|(_, r)| r).collect();
        check_not_in_use(&keys, &remaining)?;
        check_references(remaining.iter().copied())?;
        if keys.iter().any(|k| k.kind == Kind::MeshConfig) {
            warn_policies_without_provider(&remaining);
        }

        let revision = next_revision(&state)?;
        drop(state);
        let deletes: Vec<String> = keys.iter().map(|k| storage_key(k)).collect();
        self.inner.backend.commit(revision, &[], &deletes)?;
        {
            let mut state = self.inner.state.write().unwrap_or_else(PoisonError::into_inner);
            for (key, stored) in keys.iter().zip(&deletes) {
                state.resources.remove(*key);
                state.quarantined.remove(stored);
            }
            state.revision = revision;
        }
        self.inner.revisions.send_replace(revision);
        tracing::debug!(revision, deleted = deletes.len(), "deleted");
        Ok(revision)
    }

    /// The revision of the last committed change (0 for a new store).
    pub fn revision(&self) -> u64 {
        self.read().revision
    }

    /// The current revision and every resource, consistent with each other.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.read();
        Snapshot { revision: state.revision, resources: state.resources.clone() }
    }

    /// A receiver of the revision, updated after every committed change. Take a
    /// [`Store::snapshot`] when it changes; intermediate revisions may be skipped.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.revisions.subscribe()
    }

    /// Stored entries that did not read at open: (database key, why), sorted by key.
    pub fn quarantined(&self) -> Vec<(String, String)> {
        self.read().quarantined.iter().map(|(k, e)| (k.clone(), e.clone())).collect()
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the state is still whole,
        // since every change to it is made after the commit and cannot fail.
        self.inner.state.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether `new` has the labels and spec already stored (its version is not compared).
fn same_content(stored: &Resource, new: &Resource) -> bool {
    let mut new = new.clone();
    new.metadata_mut().resource_version = stored.metadata().resource_version.clone();
    &new == stored
}

fn next_revision(state: &State) -> Result<u64, StoreError> {
    state.revision.checked_add(1).ok_or_else(|| {
        StoreError::Storage("the store revision is at its maximum; the file is damaged or tampered with".into())
    })
}

/// A MeshConfig write may remove an extension provider that CUSTOM AuthorizationPolicies still
/// name: allowed (those policies then deny what they match), but said, naming them.
fn warn_policies_without_provider(after: &[&Resource]) {
    let orphans = weft_api::ext_authz::policies_without_provider(after.iter().copied());
    if !orphans.is_empty() {
        let policies: Vec<String> =
            orphans.iter().map(|(key, provider)| format!("{key} (provider {provider:?})")).collect();
        tracing::warn!(
            policies = %policies.join(", "),
            "CUSTOM AuthorizationPolicies name an extension provider MeshConfig no longer declares; they deny the requests they match until it is declared again or they are changed"
        );
    }
}

/// A deletion must not leave a Workload naming a deleted Service, or a check aliasing a deleted
/// Workload. `check_references` would catch it too; this names both sides for the operator.
fn check_not_in_use(deleted: &BTreeSet<&Key>, remaining: &[&Resource]) -> Result<(), ConfigError> {
    for r in remaining {
        let Resource::Workload(w) = r else { continue };
        let aliases = w.spec.checks.iter().enumerate().filter_map(|(i, c)| {
            let alias = c.alias.as_deref()?;
            Some((Kind::Workload, alias, format!("spec.checks[{i}].alias")))
        });
        let service = (Kind::Service, w.spec.service.as_str(), "spec.service".into());
        for (kind, name, field) in std::iter::once(service).chain(aliases) {
            let used = Key { kind, namespace: w.metadata.namespace.clone(), name: name.to_string() };
            if deleted.contains(&used) {
                return Err(ConfigError::invalid(
                    used.to_string(),
                    format!(
                        "cannot be deleted: {} still uses it ({field}); delete that too, or \
                         change it first",
                        r.key()
                    ),
                ));
            }
        }
    }
    Ok(())
}
