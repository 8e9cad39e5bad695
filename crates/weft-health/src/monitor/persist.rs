//! Saving check state so that a restart resumes it: the last status, output and time of every
//! check, its threshold counts, since when it has been critical, and a TTL check's deadline.
//!
//! ```text
//!   probe results ──► record() ── status changed ────────► dirty, urgent ──► writer task: all dirty
//!                             └─ output/counts changed ──► dirty ─────────►  checks in one
//!                                                         (urgent: at once; else ≤ 1 write/s)
//!   ttl_update() ── changed, or last save ≥ 1 s ago ──► written before it returns
//!                └─ otherwise ──────────────────────► dirty
//!   Monitor::with_store ──► load() ──► restored; set_checks takes a check's record if its spec
//!                                     is the one saved (a changed definition starts fresh)
//! ```
//!
//! Writes take the *current* state of each dirty check under [`Persistence::writing`], so they
//! land in the order their state was taken: a slow write never overwrites a newer one.

use super::Counts;
use crate::{CheckResult, Status};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio::time::Instant;
use weft_api::kinds::CheckSpec;

/// Where check state is kept (the control plane's store). Keys are check ids
/// (`<namespace>/<workload>/<check name>`); values are opaque to the store.
pub trait CheckStateStore: Send + Sync + 'static {
    /// Every saved record.
    fn load(&self) -> Result<Vec<(String, Vec<u8>)>, String>;
    /// Writes (`Some`) and removes (`None`) records in one durable transaction.
    fn save(&self, changes: &[(String, Option<Vec<u8>>)]) -> Result<(), String>;
}

/// Repeated TTL reports that change nothing are written at most this often per check (the saved
/// deadline may then be up to this much earlier than the real one).
pub const TTL_SAVE_EVERY: Duration = Duration::from_secs(1);
/// After a write, the writer task waits this long before the next, unless a status changes:
/// output-only changes that come faster are written together.
pub(crate) const WRITE_GAP: Duration = Duration::from_secs(1);

/// One check's saved state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Saved {
    /// The check's definition: a record restores only into the same definition.
    pub spec: serde_json::Value,
    pub status: SavedStatus,
    pub output: String,
    /// Unix milliseconds of the result.
    pub at_ms: u64,
    #[serde(default)]
    pub successes: u32,
    #[serde(default)]
    pub failures: u32,
    /// Unix milliseconds since when the check has been critical.
    #[serde(default)]
    pub critical_since_ms: Option<u64>,
    /// TTL checks: unix milliseconds when the TTL runs out (none: never reported).
    #[serde(default)]
    pub ttl_deadline_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SavedStatus {
    Passing,
    Warning,
    Critical,
}

impl From<Status> for SavedStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Passing => SavedStatus::Passing,
            Status::Warning => SavedStatus::Warning,
            Status::Critical => SavedStatus::Critical,
        }
    }
}

impl From<SavedStatus> for Status {
    fn from(s: SavedStatus) -> Self {
        match s {
            SavedStatus::Passing => Status::Passing,
            SavedStatus::Warning => Status::Warning,
            SavedStatus::Critical => Status::Critical,
        }
    }
}

/// What a restored record gives a check.
pub(crate) struct Restored {
    pub result: CheckResult,
    pub counts: Counts,
    pub critical_since: Option<Instant>,
    /// TTL checks: when the TTL runs out (may be past).
    pub ttl_deadline: Option<Instant>,
}

impl Saved {
    pub(crate) fn of(
        spec: &CheckSpec,
        result: &CheckResult,
        counts: Counts,
        critical_since: Option<Instant>,
        ttl_deadline: Option<Instant>,
    ) -> Saved {
        Saved {
            spec: spec_value(spec),
            status: result.status.into(),
            output: result.output.clone(),
            at_ms: wall_ms(result.at),
            successes: counts.successes,
            failures: counts.failures,
            critical_since_ms: critical_since.map(instant_ms),
            ttl_deadline_ms: ttl_deadline.map(instant_ms),
        }
    }

    pub(crate) fn restore(&self) -> Restored {
        Restored {
            result: CheckResult {
                status: self.status.into(),
                output: self.output.clone(),
                at: UNIX_EPOCH.checked_add(Duration::from_millis(self.at_ms)).unwrap_or(UNIX_EPOCH),
            },
            counts: Counts { successes: self.successes, failures: self.failures },
            critical_since: self.critical_since_ms.map(ms_instant),
            ttl_deadline: self.ttl_deadline_ms.map(ms_instant),
        }
    }
}

pub(crate) fn spec_value(spec: &CheckSpec) -> serde_json::Value {
    serde_json::to_value(spec).unwrap_or(serde_json::Value::Null)
}

fn wall_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A monotonic instant as wall-clock milliseconds (it has to outlive the process).
fn instant_ms(i: Instant) -> u64 {
    let (now, wall) = (Instant::now(), wall_ms(SystemTime::now()));
    if i <= now {
        wall.saturating_sub((now - i).as_millis() as u64)
    } else {
        wall.saturating_add((i - now).as_millis() as u64)
    }
}

/// Wall-clock milliseconds as a monotonic instant of this process.
fn ms_instant(ms: u64) -> Instant {
    let (now, wall) = (Instant::now(), wall_ms(SystemTime::now()));
    if ms <= wall {
        now.checked_sub(Duration::from_millis(wall - ms)).unwrap_or(now)
    } else {
        // A damaged record must not panic: an unrepresentable time counts as now.
        now.checked_add(Duration::from_millis(ms - wall)).unwrap_or(now)
    }
}

/// A check's key: its workload and name. The id on disk is `<workload>/<name>`.
pub(crate) type CheckKey = (String, String);

pub(crate) fn id_of(key: &CheckKey) -> String {
    format!("{}/{}", key.0, key.1)
}

pub(crate) struct Persistence {
    pub store: Arc<dyn CheckStateStore>,
    /// Records read at start that no `set_checks` has taken yet, by check id.
    restored: Mutex<HashMap<String, Saved>>,
    /// Held from taking state to the end of its write.
    writing: Mutex<()>,
    dirty: Mutex<BTreeSet<CheckKey>>,
    /// Some check is dirty.
    pub wake: Notify,
    /// A status changed, a check started fresh or went: the writer skips its wait.
    pub urgent: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Persistence {
    /// Reads every saved record; one that does not read is dropped (and removed at the first
    /// write), with a warning.
    pub(crate) fn open(store: Arc<dyn CheckStateStore>) -> Persistence {
        let mut restored = HashMap::new();
        let mut unreadable = Vec::new();
        match store.load() {
            Ok(rows) => {
                for (id, bytes) in rows {
                    match serde_json::from_slice::<Saved>(&bytes) {
                        Ok(saved) => {
                            restored.insert(id, saved);
                        }
                        Err(e) => {
                            tracing::warn!(check = %id, error = %e, "saved health-check state does not read; the check starts fresh");
                            unreadable.push(id);
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read saved health-check state; every check starts fresh"),
        }
        if !restored.is_empty() {
            tracing::info!(checks = restored.len(), "read saved health-check state");
        }
        let p = Persistence {
            store,
            restored: Mutex::new(restored),
            writing: Mutex::new(()),
            dirty: Mutex::default(),
            wake: Notify::new(),
            urgent: Notify::new(),
        };
        if !unreadable.is_empty() {
            let removes: Vec<(String, Option<Vec<u8>>)> = unreadable.into_iter().map(|id| (id, None)).collect();
            if let Err(e) = p.store.save(&removes) {
                tracing::warn!(error = %e, "cannot remove unreadable health-check state");
            }
        }
        p
    }

    /// The saved record of this check, if its definition is still `spec`. Taken: it restores once.
    pub(crate) fn take(&self, key: &CheckKey, spec: &CheckSpec) -> Option<Saved> {
        let saved = lock(&self.restored).remove(&id_of(key))?;
        if saved.spec == spec_value(spec) {
            Some(saved)
        } else {
            tracing::info!(check = %id_of(key), "health check definition changed while the control plane was down; it starts fresh");
            None
        }
    }

    /// Saved records no check has taken (their workloads are gone): removed at the next write.
    pub(crate) fn forget_unclaimed(&self) {
        let ids: Vec<String> = lock(&self.restored).drain().map(|(id, _)| id).collect();
        if ids.is_empty() {
            return;
        }
        let removes: Vec<(String, Option<Vec<u8>>)> = ids.into_iter().map(|id| (id, None)).collect();
        let _w = lock(&self.writing);
        if let Err(e) = blocking_io(|| self.store.save(&removes)) {
            tracing::warn!(error = %e, "cannot remove saved state of checks that are gone");
        }
    }

    /// Marks checks dirty; `urgent` ones are written without waiting out [`WRITE_GAP`].
    pub(crate) fn mark(&self, keys: impl IntoIterator<Item = CheckKey>, urgent: bool) {
        let mut dirty = lock(&self.dirty);
        let before = dirty.len();
        dirty.extend(keys);
        if dirty.len() != before || urgent {
            self.wake.notify_one();
        }
        if urgent {
            self.urgent.notify_one();
        }
    }

    /// Writes the current state of every dirty check (`current` reads it; `None`: the check is
    /// gone), in one transaction.
    pub(crate) fn flush(&self, current: impl Fn(&[CheckKey]) -> Vec<Option<Saved>>) {
        let _w = lock(&self.writing);
        let keys: Vec<CheckKey> = std::mem::take(&mut *lock(&self.dirty)).into_iter().collect();
        if keys.is_empty() {
            return;
        }
        let changes: Vec<(String, Option<Vec<u8>>)> = keys
            .iter()
            .zip(current(&keys))
            .map(|(key, saved)| (id_of(key), saved.and_then(|s| serde_json::to_vec(&s).ok())))
            .collect();
        if let Err(e) = self.store.save(&changes) {
            tracing::warn!(error = %e, checks = keys.len(), "cannot save health-check state; will retry with the next change");
            lock(&self.dirty).extend(keys);
        }
    }

    /// Writes one check's state now, under the write lock the caller holds (see
    /// [`Persistence::writing`]).
    pub(crate) fn write_now(&self, key: &CheckKey, saved: &Saved) -> Result<(), String> {
        let bytes = serde_json::to_vec(saved).map_err(|e| e.to_string())?;
        blocking_io(|| self.store.save(&[(id_of(key), Some(bytes))]))
    }

    pub(crate) fn writing(&self) -> MutexGuard<'_, ()> {
        lock(&self.writing)
    }
}

/// Runs disk I/O from a caller that may be on a runtime worker: on a multi-thread runtime the
/// worker hands its other tasks off first; elsewhere it simply blocks.
pub(crate) fn blocking_io<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}
