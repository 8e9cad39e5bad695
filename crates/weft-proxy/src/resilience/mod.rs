//! Resilience: what a `ResiliencePolicy` (docs/traffic.md, "Resilience") makes a proxy do.
//!
//! ```text
//! caller's proxy (outbound, per request to a service with a policy):
//!   fault (delay, abort) ─► request timeout ┬─ try (per-try timeout, connect timeout) ─► outbound::forward_with
//!                                           └─ retry? (retryOn, method, body buffered, budget) ─► backoff ─► try
//!   response body ─► idle timeout
//! target's own proxy (inbound, per request):
//!   token bucket (per target, or per caller identity) ─► 429 rate-limited | app
//! ```
//!
//! A service without a policy costs one `Option` check per request (`Service::resilience`) and
//! an inbound request one relaxed atomic load (`State::inbound_on`): no lock, no allocation.
//! Policies are compiled once per update; an unchanged policy keeps its compiled state (its
//! retry budget's counts, its token buckets) across updates ([`State::compile`]).

mod budget;
mod fault;
mod ratelimit;
mod retry;

pub use retry::forward;

use crate::metrics::Name;
use arc_swap::ArcSwapOption;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weft_api::resilience::Resilience;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    pub service: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    pub service: Name,
    /// `delay` or `abort`.
    pub fault: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TimeoutLabels {
    pub service: Name,
    /// `request`, `per-try` or `idle`.
    pub timeout: &'static str,
}

/// `weft_retries_total`, `weft_retry_budget_exhausted_total`, `weft_faults_injected_total`,
/// `weft_rate_limited_total`, `weft_request_timeouts_total`, each by `service` (`name.namespace`).
#[derive(Clone, Default)]
pub struct Metrics {
    pub retries: Family<ServiceLabel, Counter>,
    pub budget_exhausted: Family<ServiceLabel, Counter>,
    pub faults: Family<FaultLabels, Counter>,
    pub rate_limited: Family<ServiceLabel, Counter>,
    pub timeouts: Family<TimeoutLabels, Counter>,
}

impl Metrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = Metrics::default();
        let r = reg.sub_registry_with_prefix("weft");
        r.register("retries", "Retries sent (tries after the first), by service", m.retries.clone());
        r.register(
            "retry_budget_exhausted",
            "Retries not sent because the service's retry budget was spent, by service",
            m.budget_exhausted.clone(),
        );
        r.register("faults_injected", "Faults injected by a ResiliencePolicy, by service and fault", m.faults.clone());
        r.register("rate_limited", "Requests answered 429 by a local rate limit, by service", m.rate_limited.clone());
        r.register(
            "request_timeouts",
            "Requests or tries cut by a policy's timeout, by service and timeout",
            m.timeouts.clone(),
        );
        m
    }
}

/// The counters of one policy, resolved once at compile time (no family lookup per request).
struct Counters {
    retries: Counter,
    budget_exhausted: Counter,
    delays: Counter,
    aborts: Counter,
    rate_limited: Counter,
    request_timeouts: Counter,
    per_try_timeouts: Counter,
    idle_timeouts: Counter,
}

impl Counters {
    fn new(m: &Metrics, service: &Name) -> Self {
        // One `get_or_create` per statement: its guard lives to the end of the statement, and
        // a second one on the same family in that statement would wait for it forever.
        let s = ServiceLabel { service: service.clone() };
        let retries = m.retries.get_or_create(&s).clone();
        let budget_exhausted = m.budget_exhausted.get_or_create(&s).clone();
        let rate_limited = m.rate_limited.get_or_create(&s).clone();
        let fault = |fault| m.faults.get_or_create(&FaultLabels { service: service.clone(), fault }).clone();
        let delays = fault("delay");
        let aborts = fault("abort");
        let timeout = |timeout| m.timeouts.get_or_create(&TimeoutLabels { service: service.clone(), timeout }).clone();
        let request_timeouts = timeout("request");
        let per_try_timeouts = timeout("per-try");
        let idle_timeouts = timeout("idle");
        Counters {
            retries,
            budget_exhausted,
            delays,
            aborts,
            rate_limited,
            request_timeouts,
            per_try_timeouts,
            idle_timeouts,
        }
    }
}

/// One service's policy, compiled.
pub struct Policy {
    /// As given (for `/config_dump`, and to tell an unchanged policy on the next update).
    pub spec: Resilience,
    retry: Option<retry::Rule>,
    request_timeout: Option<Duration>,
    per_try_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    faults: Vec<fault::Rule>,
    limiter: Option<ratelimit::Limiter>,
    counters: Counters,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy").field("spec", &self.spec).finish_non_exhaustive()
    }
}

impl Policy {
    /// Compiles a validated `spec` for the service labelled `service`.
    pub fn compile(spec: &Resilience, service: &Name, metrics: &Metrics) -> Policy {
        let t = spec.timeouts.clone().unwrap_or_default();
        let d = |d: Option<weft_api::Duration>| d.map(Duration::from);
        Policy {
            retry: spec.retry.as_ref().map(retry::Rule::new),
            request_timeout: d(t.request),
            per_try_timeout: d(t.per_try),
            idle_timeout: d(t.idle),
            connect_timeout: d(t.connect),
            faults: spec.faults.iter().map(fault::Rule::new).collect(),
            limiter: spec.rate_limit.as_ref().map(ratelimit::Limiter::new),
            counters: Counters::new(metrics, service),
            spec: spec.clone(),
        }
    }

    /// What `/config_dump` shows.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.spec).unwrap_or_default()
    }
}

/// The proxy's resilience state: metrics, the compiled policies (kept across updates while
/// unchanged) and the inbound rate limit of the service this proxy fronts.
#[derive(Default)]
pub struct State {
    pub metrics: Metrics,
    /// By service key (`name.namespace`).
    compiled: Mutex<HashMap<String, Arc<Policy>>>,
    inbound: ArcSwapOption<Policy>,
    /// Whether `inbound` is set: what an inbound request reads when there is no rate limit.
    inbound_on: AtomicBool,
}

impl State {
    pub fn new(metrics: Metrics) -> Self {
        State { metrics, ..Default::default() }
    }

    /// The compiled policies for one update: `wanted` is (service key, spec) for every service
    /// with a policy. A policy whose spec has not changed is the same object as before (its
    /// budget and buckets carry on); the others are compiled now.
    pub fn compile<'a>(
        &self,
        wanted: impl IntoIterator<Item = (String, &'a Resilience)>,
    ) -> HashMap<String, Arc<Policy>> {
        let mut cache = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        let out: HashMap<_, _> =
            wanted.into_iter().map(|(key, spec)| (key.clone(), self.kept_or_compiled(&cache, key, spec))).collect();
        *cache = out.clone();
        out
    }

    /// [`State::compile`] for an incremental update: the policies of the services it changed
    /// (`wanted`), compiled or kept as there; the others' stay in the cache as they are (the
    /// next full update drops those no service names any more).
    pub fn compile_more<'a>(
        &self,
        wanted: impl IntoIterator<Item = (String, &'a Resilience)>,
    ) -> HashMap<String, Arc<Policy>> {
        let mut cache = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = HashMap::new();
        for (key, spec) in wanted {
            let policy = self.kept_or_compiled(&cache, key.clone(), spec);
            cache.insert(key.clone(), policy.clone());
            out.insert(key, policy);
        }
        out
    }

    /// The cached policy of `key` while its spec is unchanged (its budget and buckets carry on),
    /// else a new one.
    fn kept_or_compiled(&self, cache: &HashMap<String, Arc<Policy>>, key: String, spec: &Resilience) -> Arc<Policy> {
        match cache.get(&key) {
            Some(p) if p.spec == *spec => p.clone(),
            _ => Arc::new(Policy::compile(spec, &Name::new(&key), &self.metrics)),
        }
    }

    /// Installs the rate limit of `service`, the service this proxy fronts (`None`: no limit);
    /// an unchanged one keeps its buckets.
    pub fn update_inbound(&self, spec: Option<&Resilience>, service: &str) {
        let policy = spec.filter(|s| s.rate_limit.is_some()).map(|spec| match self.inbound.load_full() {
            Some(p) if p.spec == *spec => p,
            _ => Arc::new(Policy::compile(spec, &Name::new(service), &self.metrics)),
        });
        self.inbound_on.store(policy.is_some(), Ordering::Release);
        self.inbound.store(policy);
    }

    /// The inbound rate limit's policy, if any (for `/config_dump`).
    pub fn inbound(&self) -> Option<Arc<Policy>> {
        self.inbound.load_full()
    }
}

/// The inbound rate limit: `Some(429 response)` when the request from `caller` finds the
/// bucket empty. One relaxed load when the proxy has no limit.
#[inline]
pub fn limit_inbound(state: &State, caller: &Name) -> Option<http::Response<crate::httputil::Body>> {
    if !state.inbound_on.load(Ordering::Relaxed) {
        return None;
    }
    let policy = state.inbound.load();
    let policy = policy.as_ref()?;
    let limiter = policy.limiter.as_ref()?;
    if limiter.admit(&caller.0) {
        return None;
    }
    policy.counters.rate_limited.inc();
    Some(ratelimit::too_many(limiter))
}

/// A random number (SplitMix64 over a per-thread counter seeded from the OS's hash keys): for
/// fault percentages and backoff jitter. Not for secrets.
pub(crate) fn random() -> u64 {
    use std::cell::Cell;
    use std::hash::{BuildHasher, RandomState};
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()));
    }
    STATE.with(|s| {
        let mut z = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// Whether an event of probability `percent` (0-100) happens this time.
pub(crate) fn chance(percent: f64) -> bool {
    if percent >= 100.0 {
        return true;
    }
    if percent <= 0.0 {
        return false;
    }
    // 53 random bits as a fraction in [0, 1).
    ((random() >> 11) as f64 / (1u64 << 53) as f64) * 100.0 < percent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chance_holds_its_rate() {
        let n = 200_000;
        let hits = (0..n).filter(|_| chance(10.0)).count() as f64 / n as f64;
        // sd of the share is sqrt(0.1 * 0.9 / 200000) = 0.00067: 0.005 is over 7 sd.
        assert!((hits - 0.1).abs() < 0.005, "{hits}");
        assert!(!(0..1000).any(|_| chance(0.0)));
        assert!((0..1000).all(|_| chance(100.0)));
    }

    #[test]
    fn an_unchanged_policy_keeps_its_state_across_updates() {
        let state = State::default();
        let spec: Resilience = serde_json::from_str(r#"{"retry":{"attempts":2}}"#).unwrap();
        let a = state.compile([("api.shop".to_string(), &spec)]);
        let b = state.compile([("api.shop".to_string(), &spec)]);
        assert!(Arc::ptr_eq(&a["api.shop"], &b["api.shop"]));
        let other: Resilience = serde_json::from_str(r#"{"retry":{"attempts":3}}"#).unwrap();
        let c = state.compile([("api.shop".to_string(), &other)]);
        assert!(!Arc::ptr_eq(&a["api.shop"], &c["api.shop"]));
    }
}
