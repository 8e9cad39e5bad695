//! [`Monitor`]: runs every workload's checks on their own tasks and keeps per-check and
//! per-workload status.
//!
//! ```text
//!   set_checks("default/api-1", [http, ttl, alias])
//!     ├── task: probe(http) every interval ─┐
//!     ├── task: TTL timer ◄── ttl_update ───┼──► record() ── one short write lock ──► State
//!     └── task: alias, woken by changes ────┘                 (thresholds, aggregate)
//!                        ▲                                          │ status changed
//!                        └──────────── watch<u64> generation ◄──────┘──► subscribe()
//! ```
//!
//! Tasks hold a weak reference: dropping the last `Monitor` handle drops the state, which aborts
//! every task. A task's writes carry the *epoch* of the `set_checks` call that started it, so a
//! task replaced while it was mid-probe cannot write into its successor's state.
//!
//! With a [`CheckStateStore`] ([`Monitor::with_store`]) the state of every check is saved and a
//! new monitor on the same store resumes it ([`persist`]).

mod persist;
mod thresholds;

pub use persist::{CheckStateStore, TTL_SAVE_EVERY};

use crate::probe::{output_text, probe, resolve_alias, ProbeContext};
use crate::{CheckResult, HealthError, Status};
use persist::{CheckKey, Persistence, Saved};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;
use thresholds::Counts;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use weft_api::kinds::{CheckSpec, ProbeKind};

/// The shortest interval a check runs at, whatever its spec says (the API validates the same).
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// A handle on the health of every registered workload; clones share the same state.
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

struct Inner {
    state: RwLock<State>,
    /// Bumped whenever a workload's aggregate status changes, or a workload comes or goes.
    changes: watch::Sender<u64>,
    epochs: AtomicU64,
    /// Whether script and Docker checks may run (they run commands on this host).
    script_checks: bool,
    /// Where check state is saved, if anywhere.
    persist: Option<Arc<Persistence>>,
}

/// The output of a script or Docker check while they are not allowed.
pub const SCRIPT_CHECKS_OFF: &str = "not run: script and Docker checks are off on this control plane (they run commands on its host); start `weft control --enable-script-checks` to run them";

#[derive(Default)]
struct State {
    workloads: HashMap<String, Workload>,
}

struct Workload {
    epoch: u64,
    checks: Vec<Check>,
    /// The worst of `checks`; `Passing` when there are none.
    status: Status,
    tasks: Vec<AbortHandle>,
}

impl Drop for Workload {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct Check {
    spec: Arc<CheckSpec>,
    result: CheckResult,
    counts: Counts,
    /// Since when the check has shown `Critical`, for `deregister_critical_after`.
    critical_since: Option<Instant>,
    /// TTL checks: each update restarts the TTL timer.
    ttl: Option<watch::Sender<()>>,
    /// TTL checks: when the TTL runs out; `None` until the first report.
    ttl_deadline: Option<Instant>,
    /// TTL checks: when a report was last written to the store by `ttl_update`.
    saved_at: Option<Instant>,
}

/// How a result is applied: probes go through the thresholds; TTL reports and alias mirrors apply
/// as they are (as in Consul).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Apply {
    Thresholds,
    Direct,
}

impl Check {
    /// What is saved of this check.
    fn saved(&self) -> Saved {
        Saved::of(&self.spec, &self.result, self.counts, self.critical_since, self.ttl_deadline)
    }

    /// What a restart must keep, for deciding whether a result changed anything worth saving.
    fn lasting(&self) -> (Status, &str, Counts) {
        (self.result.status, &self.result.output, self.counts)
    }

    fn apply(&mut self, workload: &str, mut result: CheckResult, how: Apply) {
        let before = self.result.status;
        if how == Apply::Thresholds {
            let (shows, note) =
                self.counts.next(before, result.status, self.spec.success_threshold, self.spec.failure_threshold);
            result.status = shows;
            if let Some(note) = note {
                result.output = format!("{} ({note})", result.output);
            }
        }
        match (before, result.status) {
            (Status::Critical, Status::Critical) => {}
            (_, Status::Critical) => self.critical_since = Some(Instant::now()),
            _ => self.critical_since = None,
        }
        if before != result.status {
            tracing::info!(%workload, check = %self.spec.name, from = %before, to = %result.status, output = ?result.short_output(), "health check changed");
        }
        self.result = result;
    }
}

fn aggregate(checks: &[Check]) -> Status {
    checks.iter().map(|c| c.result.status).max().unwrap_or(Status::Passing)
}

impl Default for Monitor {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor").field("workloads", &self.read().workloads.len()).finish()
    }
}

impl Monitor {
    /// A monitor that never runs script or Docker checks: they stay `Critical`, saying so.
    pub fn new() -> Self {
        Self::with_script_checks(false)
    }

    /// A monitor that runs script and Docker checks only when `enabled` (Consul's
    /// `enable_script_checks`); otherwise they stay `Critical` with [`SCRIPT_CHECKS_OFF`].
    pub fn with_script_checks(enabled: bool) -> Self {
        Self::build(enabled, None)
    }

    /// A monitor that saves the state of every check in `store` and resumes what it holds: a
    /// check whose definition is the one saved starts from its saved status, output, threshold
    /// counts and (TTL checks) deadline, instead of critical. A TTL whose deadline passed is
    /// critical at once. Saved state of checks that [`forget_unclaimed`](Self::forget_unclaimed)
    /// finds unclaimed is removed.
    ///
    /// Reads `store` now. Must be called within a Tokio runtime (it starts the writer task).
    pub fn with_store(script_checks: bool, store: Arc<dyn CheckStateStore>) -> Self {
        let persist = Arc::new(Persistence::open(store));
        let m = Self::build(script_checks, Some(persist.clone()));
        let weak = Arc::downgrade(&m.inner);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(write_loop(weak, persist));
            }
            Err(_) => tracing::warn!("Monitor::with_store outside a Tokio runtime: only TTL reports are saved"),
        }
        m
    }

    fn build(script_checks: bool, persist: Option<Arc<Persistence>>) -> Self {
        Monitor {
            inner: Arc::new(Inner {
                state: RwLock::default(),
                changes: watch::Sender::new(0),
                epochs: AtomicU64::new(0),
                script_checks,
                persist,
            }),
        }
    }

    /// Removes saved state that no `set_checks` has taken since the monitor was made (checks of
    /// workloads that are gone). Call once, after the first `set_checks` of every workload.
    pub fn forget_unclaimed(&self) {
        if let Some(p) = &self.inner.persist {
            p.forget_unclaimed();
        }
    }

    /// Writes now every change not yet saved (the writer task does this on its own, at most once a
    /// second). Blocks on disk I/O.
    pub fn flush(&self) {
        persist::blocking_io(|| flush(&self.inner));
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.inner.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.inner.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.inner.changes.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Starts the checks of `workload` (an id such as `default/api-1`), replacing and stopping any
    /// it had. Every check starts `Critical` (Consul's default) until its first
    /// `success_threshold` passes; TTL checks until the workload first reports. With a store
    /// ([`with_store`](Self::with_store)), a check saved with the same definition before the
    /// monitor was made resumes its saved state instead (once).
    ///
    /// Must be called within a Tokio runtime; outside one, the checks are recorded as `Critical`
    /// saying so, and never run.
    pub fn set_checks(&self, workload: &str, checks: Vec<CheckSpec>) {
        let epoch = self.inner.epochs.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let persist = self.inner.persist.as_deref();
        let mut entries = Vec::with_capacity(checks.len());
        let mut starts = Vec::with_capacity(checks.len());
        let mut fresh: Vec<CheckKey> = Vec::new();
        for spec in checks {
            let spec = Arc::new(spec);
            let kind = spec.probe();
            let (ttl_tx, ttl_rx) = match kind {
                Some(ProbeKind::Ttl) => {
                    let (tx, rx) = watch::channel(());
                    (Some(tx), Some(rx))
                }
                _ => (None, None),
            };
            let refused = matches!(kind, Some(ProbeKind::Script | ProbeKind::Docker)) && !self.inner.script_checks;
            let output = match kind {
                _ if refused => SCRIPT_CHECKS_OFF,
                Some(ProbeKind::Ttl) => "TTL check: no update received yet",
                _ => "not run yet",
            };
            let key: CheckKey = (workload.to_string(), spec.name.clone());
            let restored = persist.filter(|_| !refused).and_then(|p| p.take(&key, &spec)).map(|s| s.restore());
            let mut check = Check {
                spec: spec.clone(),
                result: CheckResult::critical(output),
                counts: Counts::default(),
                critical_since: Some(now),
                ttl: ttl_tx,
                ttl_deadline: None,
                saved_at: None,
            };
            let start = match restored {
                Some(r) => {
                    check.result = r.result;
                    check.counts = r.counts;
                    check.critical_since = r.critical_since;
                    // Never later than a report made now would set (a clock set back, a damaged
                    // record).
                    let ttl = Duration::from(spec.ttl.unwrap_or_default());
                    check.ttl_deadline = r.ttl_deadline.map(|d| d.min(now + ttl));
                    let expired = check.ttl_deadline.filter(|d| *d <= now);
                    let ttl_start = match (expired, check.ttl_deadline) {
                        (Some(_), _) => TtlStart::Expired,
                        (None, Some(d)) => TtlStart::Until(d),
                        (None, None) => TtlStart::Fresh,
                    };
                    if let Some(deadline) = expired.filter(|_| check.result.status != Status::Critical) {
                        let ttl = spec.ttl.unwrap_or_default();
                        check.apply(
                            workload,
                            CheckResult::critical(format!(
                                "TTL expired: no update in {ttl} (its deadline passed while the control plane was down)"
                            )),
                            Apply::Direct,
                        );
                        // Critical since the deadline, for deregisterCriticalAfter.
                        check.critical_since = Some(deadline);
                        fresh.push(key);
                    }
                    Start { restored: true, ttl: ttl_start }
                }
                None => {
                    fresh.push(key);
                    Start { restored: false, ttl: TtlStart::Fresh }
                }
            };
            entries.push(check);
            // A refused check gets no task: it stays critical, saying why.
            starts.push((!refused).then_some((spec, ttl_rx, start)));
        }
        let runtime = tokio::runtime::Handle::try_current();
        let mut w = Workload { epoch, status: aggregate(&entries), checks: entries, tasks: Vec::new() };
        let has_checks = !w.checks.is_empty();
        let workload: Arc<str> = workload.into();
        let replaced = {
            let mut state = self.write();
            match &runtime {
                Ok(rt) => {
                    // Spawned under the lock: a task's first write waits for the entry to exist.
                    for (index, start) in starts.into_iter().enumerate() {
                        let Some((spec, ttl_rx, start)) = start else { continue };
                        let slot =
                            Slot { monitor: Arc::downgrade(&self.inner), workload: workload.clone(), epoch, index };
                        w.tasks.push(rt.spawn(run(slot, spec, ttl_rx, start)).abort_handle());
                    }
                }
                Err(_) => {
                    for c in &mut w.checks {
                        c.result = CheckResult::critical(
                            "not running: Monitor::set_checks was called outside a Tokio runtime",
                        );
                    }
                }
            }
            state.workloads.insert(workload.to_string(), w)
        };
        if let Some(p) = persist {
            // Checks that start fresh, and the replaced ones (gone, or now fresh), are saved again.
            let old = replaced.iter().flat_map(|w| &w.checks).map(|c| (workload.to_string(), c.spec.name.clone()));
            p.mark(fresh.into_iter().chain(old), true);
        }
        // A workload without checks, before and after, changes nothing a watcher reads (it is
        // routable whatever its status): no bump, so registering one does not rebuild the catalog
        // a second time.
        let observable = has_checks || replaced.as_ref().is_some_and(|r| !r.checks.is_empty());
        // Dropping the old entry aborts its tasks; outside the lock.
        drop(replaced);
        if observable {
            self.bump();
        }
    }

    /// Stops and forgets the checks of `workload` (and their saved state).
    pub fn remove(&self, workload: &str) {
        let removed = self.write().workloads.remove(workload);
        if let Some(w) = removed {
            if let Some(p) = &self.inner.persist {
                p.mark(w.checks.iter().map(|c| (workload.to_string(), c.spec.name.clone())), true);
            }
            let observable = !w.checks.is_empty();
            drop(w);
            if observable {
                self.bump();
            }
        }
    }

    /// A TTL check's report, as Consul's `/v1/agent/check/pass|warn|fail/<check-id>`, where
    /// `check_id` is `<workload>/<check name>` (e.g. `default/api-1/heartbeat`). The status applies
    /// at once and the TTL timer restarts.
    ///
    /// With a store, a report that changes the status or output is saved before this returns (as
    /// Consul's agent does), and repeated identical reports at most once per [`TTL_SAVE_EVERY`]
    /// (the others are saved by the writer task); this blocks on disk I/O.
    pub fn ttl_update(&self, check_id: &str, status: Status, output: &str) -> Result<(), HealthError> {
        let persist = self.inner.persist.as_deref();
        // Taken before the state lock, held until the write: writes land in report order.
        let writing = persist.map(Persistence::writing);
        let (changed, save) = {
            let mut state = self.write();
            let found = check_id.match_indices('/').find_map(|(i, _)| {
                let (workload, name) = (&check_id[..i], &check_id[i + 1..]);
                let w = state.workloads.get(workload)?;
                let index = w.checks.iter().position(|c| c.spec.name == name)?;
                Some((workload, index))
            });
            let Some((workload, index)) = found else {
                return Err(HealthError::NotFound(check_id.to_string()));
            };
            let Some(w) = state.workloads.get_mut(workload) else {
                return Err(HealthError::NotFound(check_id.to_string()));
            };
            let Some(check) = w.checks.get_mut(index) else {
                return Err(HealthError::NotFound(check_id.to_string()));
            };
            let Some(timer) = &check.ttl else {
                return Err(HealthError::NotTtl(check_id.to_string()));
            };
            timer.send_replace(());
            let output = output_text(output.as_bytes());
            let before = (check.result.status, check.result.output.clone());
            check.apply(workload, CheckResult::new(status, output), Apply::Direct);
            let now = Instant::now();
            check.ttl_deadline = Some(now + Duration::from(check.spec.ttl.unwrap_or_default()));
            let key: CheckKey = (workload.to_string(), check.spec.name.clone());
            let save = match persist {
                Some(p) => {
                    let differs = before != (check.result.status, check.result.output.clone());
                    let due = check.saved_at.is_none_or(|t| now.duration_since(t) >= TTL_SAVE_EVERY);
                    if differs || due {
                        check.saved_at = Some(now);
                        Some((key, check.saved()))
                    } else {
                        p.mark([key], false);
                        None
                    }
                }
                None => None,
            };
            let now = aggregate(&w.checks);
            (std::mem::replace(&mut w.status, now) != now, save)
        };
        if let (Some(p), Some((key, saved))) = (persist, save) {
            if let Err(e) = p.write_now(&key, &saved) {
                tracing::warn!(check = %check_id, error = %e, "cannot save the TTL report; will retry with the next change");
                p.mark([key], false);
            }
        }
        drop(writing);
        if changed {
            self.bump();
        }
        Ok(())
    }

    /// The worst status of the workload's checks (`Passing` if it has none); `None` if the
    /// workload is not registered.
    pub fn workload_status(&self, workload: &str) -> Option<Status> {
        self.read().workloads.get(workload).map(|w| w.status)
    }

    /// Every registered workload and its status, sorted by id.
    pub fn workloads(&self) -> Vec<(String, Status)> {
        let mut all: Vec<_> = self.read().workloads.iter().map(|(id, w)| (id.clone(), w.status)).collect();
        all.sort();
        all
    }

    /// The latest result of each of the workload's checks, by check name, in the order they
    /// were given; empty if the workload is not registered.
    pub fn checks(&self, workload: &str) -> Vec<(String, CheckResult)> {
        self.read()
            .workloads
            .get(workload)
            .map(|w| w.checks.iter().map(|c| (c.spec.name.clone(), c.result.clone())).collect())
            .unwrap_or_default()
    }

    /// A generation counter that increases whenever a workload's aggregate status changes, or a
    /// workload is set or removed. Await `changed()`, then read what you need with
    /// [`workload_status`](Self::workload_status) or [`workloads`](Self::workloads); a watch
    /// never lags, and several changes may arrive as one.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Workloads with a check that has `deregister_critical_after` and has been `Critical` at
    /// least that long (counted from registration when it never passed), sorted. The caller
    /// deregisters them; the monitor keeps running their checks until [`remove`](Self::remove).
    pub fn expired(&self) -> Vec<String> {
        let now = Instant::now();
        let mut out: Vec<String> = self
            .read()
            .workloads
            .iter()
            .filter(|(_, w)| {
                w.checks.iter().any(|c| match (c.spec.deregister_critical_after, c.critical_since) {
                    (Some(after), Some(since)) => now.duration_since(since) >= after.into(),
                    _ => false,
                })
            })
            .map(|(id, _)| id.clone())
            .collect();
        out.sort();
        out
    }

    /// Applies a task's result; `false` when the task should stop (its workload was replaced or
    /// removed).
    fn record(&self, slot: &Slot, result: CheckResult, how: Apply) -> bool {
        let changed = {
            let mut state = self.write();
            let Some(w) = state.workloads.get_mut(&*slot.workload) else {
                return false;
            };
            if w.epoch != slot.epoch {
                return false;
            }
            let Some(check) = w.checks.get_mut(slot.index) else {
                return false;
            };
            let before = (check.result.status, check.result.output.clone(), check.counts);
            check.apply(&slot.workload, result, how);
            if let Some(p) = &self.inner.persist {
                let (status, output, counts) = check.lasting();
                if before != (status, output.to_string(), counts) {
                    p.mark([(slot.workload.to_string(), check.spec.name.clone())], before.0 != status);
                }
            }
            let now = aggregate(&w.checks);
            let before = std::mem::replace(&mut w.status, now);
            if before != now {
                tracing::info!(workload = %slot.workload, from = %before, to = %now, "workload health changed");
            }
            before != now
        };
        if changed {
            self.bump();
        }
        true
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(p) = &self.persist {
            // What is not saved yet, then let the writer task see that the monitor is gone.
            flush(self);
            p.wake.notify_one();
            p.urgent.notify_one();
        }
        // The workloads' own Drop aborts their tasks.
        self.state.get_mut().unwrap_or_else(PoisonError::into_inner).workloads.clear();
    }
}

/// Writes the current state of every dirty check.
fn flush(inner: &Inner) {
    let Some(p) = &inner.persist else { return };
    p.flush(|keys| {
        let state = inner.state.read().unwrap_or_else(PoisonError::into_inner);
        keys.iter()
            .map(|(workload, name)| {
                let w = state.workloads.get(workload)?;
                w.checks.iter().find(|c| &c.spec.name == name).map(Check::saved)
            })
            .collect()
    });
}

/// Saves dirty checks: at once after a quiet spell or when a status changed, otherwise at most
/// once per [`persist::WRITE_GAP`]. Ends when the monitor is dropped.
async fn write_loop(monitor: Weak<Inner>, p: Arc<Persistence>) {
    loop {
        p.wake.notified().await;
        let Some(inner) = monitor.upgrade() else { return };
        let m = Monitor { inner };
        if tokio::task::spawn_blocking(move || m.flush()).await.is_err() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(persist::WRITE_GAP) => {}
            () = p.urgent.notified() => {}
        }
    }
}

/// Where a task writes: its monitor (weakly), workload, epoch and check index.
struct Slot {
    monitor: Weak<Inner>,
    workload: Arc<str>,
    epoch: u64,
    index: usize,
}

impl Slot {
    fn monitor(&self) -> Option<Monitor> {
        self.monitor.upgrade().map(|inner| Monitor { inner })
    }

    fn record(&self, result: CheckResult, how: Apply) -> bool {
        self.monitor().is_some_and(|m| m.record(self, result, how))
    }
}

fn every(spec: &CheckSpec) -> Duration {
    Duration::from(spec.interval()).max(MIN_INTERVAL)
}

/// How a check's task starts.
#[derive(Clone, Copy)]
struct Start {
    /// The check resumed saved state.
    restored: bool,
    ttl: TtlStart,
}

/// Where a TTL check's timer starts.
#[derive(Clone, Copy)]
enum TtlStart {
    /// A whole TTL from now.
    Fresh,
    /// Resumed: its saved deadline.
    Until(Instant),
    /// Resumed with its deadline passed: critical already; it waits for a report.
    Expired,
}

/// One check's task.
async fn run(slot: Slot, spec: Arc<CheckSpec>, ttl: Option<watch::Receiver<()>>, start: Start) {
    match (spec.probe(), ttl) {
        (Some(ProbeKind::Ttl), Some(updates)) => run_ttl(slot, &spec, updates, start.ttl).await,
        (Some(ProbeKind::Alias), _) => run_alias(slot, &spec, start.restored).await,
        _ => run_probe(slot, &spec).await,
    }
}

async fn run_probe(slot: Slot, spec: &CheckSpec) {
    let ctx = ProbeContext::new(&*slot.workload);
    loop {
        let result = probe(spec, &ctx).await;
        if !slot.record(result, Apply::Thresholds) {
            return;
        }
        tokio::time::sleep(every(spec)).await;
    }
}

/// Critical when no update came for the TTL; each update restarts the timer. A resumed check
/// first runs only to its saved deadline (if that passed, it is critical already and waits for a
/// report).
async fn run_ttl(slot: Slot, spec: &CheckSpec, mut updates: watch::Receiver<()>, start: TtlStart) {
    let ttl: Duration = spec.ttl.unwrap_or_default().into();
    let mut deadline = match start {
        TtlStart::Fresh => None,
        TtlStart::Until(d) => Some(d),
        TtlStart::Expired => {
            if updates.changed().await.is_err() {
                return;
            }
            None
        }
    };
    loop {
        let until = deadline.take().unwrap_or_else(|| Instant::now() + ttl);
        match tokio::time::timeout_at(until, updates.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return,
            Err(_) => {
                let expired =
                    CheckResult::critical(format!("TTL expired: no update in {}", spec.ttl.unwrap_or_default()));
                if !slot.record(expired, Apply::Direct) || updates.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Re-evaluated whenever any workload's status changes, and on the interval. A resumed check
/// keeps its saved status until its target is registered (at start, workloads are set one by
/// one), or the interval passes.
async fn run_alias(slot: Slot, spec: &CheckSpec, mut resumed: bool) {
    let Some(mut changes) = slot.monitor().map(|m| m.subscribe()) else {
        return;
    };
    let target = resolve_alias(&slot.workload, spec.alias.as_deref().unwrap_or_default());
    tracing::debug!(workload = %slot.workload, %target, "alias check started");
    loop {
        changes.borrow_and_update();
        let Some(monitor) = slot.monitor() else {
            return;
        };
        let waiting = std::mem::take(&mut resumed) && monitor.workload_status(&target).is_none();
        let ctx = ProbeContext::new(&*slot.workload).with_monitor(monitor);
        let result = probe(spec, &ctx).await;
        drop(ctx);
        if !waiting && !slot.record(result, Apply::Direct) {
            return;
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(every(spec)) => {}
        }
    }
}
