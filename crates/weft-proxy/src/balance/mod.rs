//! Which endpoint of a service a request goes to: tiers of endpoints by priority (locality, or the
//! service's `failover` order, or one tier split by `cluster_weights`), the next tier used only as
//! far as the healthy share of the ones before it falls short, and inside a tier the service's
//! load balancer ([`algo`]: round robin by default; random, least request, ring hash, Maglev,
//! peak EWMA from its BackendPolicy), endpoint weights honoured by each. Health comes from
//! [`crate::outlier`]; circuit breaking from [`limits`].
//!
//! ```text
//! Routes build ─► layout(own cluster + locality, policy) ─► tiers [ [group(weight, endpoints)] ]
//! pick(now) ─► nothing ejected? ── yes ─► first tier: round robin (weighted between groups)
//!                               └─ no ──► spill: tier t gets min(left, 1.4 × healthy_t/total_t),
//!                                         normalised; round robin over its endpoints not ejected
//! ```
//!
//! The common path (round robin, nothing ejected) is one `fetch_add`, one atomic load and a
//! modulo: no lock, no allocation. The layout and each algorithm's tables (cumulative weights,
//! hash ring, Maglev table) are computed once per routing table, not per request.
//!
//! Default tiers (no policy), by the proxy's own cluster and locality (`region/zone/...`):
//! 0: same cluster, and same region and zone (or either locality unknown); 1: same cluster in
//! another zone, or another cluster in the same region; 2: the rest.

pub mod algo;
pub mod hash;
pub mod limits;
pub mod load;

use crate::outlier::{Clock, Ejection, Outcome, ServiceHealth, Settings, Store};
use crate::routes::Endpoint;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;
use weft_api::backend_policy::{Algorithm, BackendPolicy};
use weft_api::traffic::{OutlierDetection, OutlierOverrides, OVERPROVISIONING_FACTOR};

/// What a routing table is built with: where this proxy is, and how outliers are detected.
pub struct Env<'a> {
    pub cluster: &'a str,
    pub locality: &'a str,
    pub outlier: &'a OutlierDetection,
    pub store: &'a Store,
}

/// A service's own routing policy between clusters.
#[derive(Clone, Copy, Default)]
pub struct Policy<'a> {
    pub failover: &'a [String],
    pub cluster_weights: Option<&'a BTreeMap<String, u32>>,
    /// The service's own outlier settings over the proxy's.
    pub outlier: Option<&'a OutlierOverrides>,
    /// Its load balancer and connection limits.
    pub backend: Option<&'a BackendPolicy>,
}

#[derive(Debug, PartialEq)]
struct Group {
    weight: u64,
    members: Vec<usize>,
}

#[derive(Debug, PartialEq)]
struct Tier {
    groups: Vec<Group>,
    total_weight: u64,
}

/// One service's endpoint picker (see the module docs).
#[derive(Debug)]
pub struct Balancer {
    tiers: Vec<Tier>,
    /// What the layout was made from, for `/config_dump`.
    described: serde_json::Value,
    next: AtomicUsize,
    shared: Arc<ServiceHealth>,
    settings: Settings,
    clock: Clock,
    algo: Algorithm,
    /// Per tier, per group: the algorithm's tables.
    within: Vec<Vec<algo::Within>>,
    hash_on: Option<hash::HashOn>,
    limits: limits::Limits,
    sizes: (u32, u32),
}

fn region_zone(locality: &str) -> (&str, &str) {
    let mut it = locality.split('/');
    (it.next().unwrap_or(""), it.next().unwrap_or(""))
}

/// The tiers for endpoints at `(cluster, locality)`, seen from `own`; empty tiers and groups left
/// out.
fn layout(own: (&str, &str), eps: &[(&str, &str)], policy: Policy<'_>) -> Vec<Tier> {
    let one = |members: Vec<usize>| Tier { groups: vec![Group { weight: 1, members }], total_weight: 1 };
    let in_cluster = |c: &str| eps.iter().enumerate().filter(|(_, e)| e.0 == c).map(|(i, _)| i).collect::<Vec<_>>();
    let mut tiers = if let Some(weights) = policy.cluster_weights.filter(|w| !w.is_empty()) {
        let groups: Vec<Group> = weights
            .iter()
            .filter(|(_, w)| **w > 0)
            .map(|(c, w)| Group { weight: u64::from(*w), members: in_cluster(c) })
            .filter(|g| !g.members.is_empty())
            .collect();
        let total_weight = groups.iter().map(|g| g.weight).sum();
        vec![Tier { groups, total_weight }]
    } else if !policy.failover.is_empty() {
        let mut order = vec![own.0];
        order.extend(policy.failover.iter().map(String::as_str).filter(|c| *c != own.0));
        order.into_iter().map(|c| one(in_cluster(c))).collect()
    } else {
        let (region, zone) = region_zone(own.1);
        let mut by_priority: [Vec<usize>; 3] = Default::default();
        for (i, (cluster, locality)) in eps.iter().enumerate() {
            let (r, z) = region_zone(locality);
            let unknown = own.1.is_empty() || locality.is_empty();
            let p = if *cluster == own.0 {
                // In the own cluster, an unknown locality (ours or the endpoint's) is no reason to wait.
                if unknown || (r == region && z == zone) {
                    0
                } else {
                    1
                }
            } else if !region.is_empty() && r == region {
                1
            } else {
                2
            };
            by_priority[p].push(i);
        }
        by_priority.into_iter().map(one).collect()
    };
    tiers.retain(|t| t.groups.iter().any(|g| !g.members.is_empty()));
    tiers
}

/// A well-spread fraction of `u64::MAX` for the n-th pick (a Weyl sequence on the golden ratio):
/// consecutive picks cover [0, 1) evenly, with no RNG and no shared state beyond `next`.
fn spread(n: usize) -> u64 {
    (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// `spread(n)` scaled to `[0, total)`.
fn scaled(n: usize, total: u64) -> u64 {
    ((u128::from(spread(n)) * u128::from(total)) >> 64) as u64
}

/// A second even sequence (the R₂ constant, from the plastic number), independent of
/// [`spread`]: a weighted round robin picks the endpoint with it after `spread` picked the group.
pub(crate) fn spread2(n: usize) -> u64 {
    (n as u64).wrapping_mul(0xC13F_A9A9_02A6_328F)
}

fn fraction(n: usize) -> f64 {
    (spread(n) >> 11) as f64 / (1u64 << 53) as f64
}

/// The share of traffic a set of endpoints can take: `min(1, 1.4 × healthy / total)`.
pub fn availability(healthy: usize, total: usize) -> f64 {
    if total == 0 {
        return 0.0;
    }
    (OVERPROVISIONING_FACTOR * healthy as f64 / total as f64).min(1.0)
}

/// Each tier's share of traffic, from each tier's `(healthy, total)`: tier t takes
/// `min(what is left, availability_t)`, and the shares are normalised to sum to 1 when the tiers
/// together cannot take everything. All zero: no endpoint is healthy (the caller balances over
/// the first tier as if none were ejected).
pub fn loads(tiers: &[(usize, usize)]) -> Vec<f64> {
    let mut left = 1.0;
    let raw: Vec<f64> = tiers.iter().map(|&(h, t)| take(availability(h, t), &mut left)).collect();
    let sum = 1.0 - left;
    raw.into_iter().map(|l| if sum > 0.0 { l / sum } else { 0.0 }).collect()
}

fn take(avail: f64, left: &mut f64) -> f64 {
    let a = avail.min(*left).max(0.0);
    *left -= a;
    a
}

impl Balancer {
    pub fn new(eps: &[Arc<Endpoint>], policy: Policy<'_>, env: &Env<'_>, shared: Arc<ServiceHealth>) -> Self {
        let places: Vec<(&str, &str)> = eps.iter().map(|e| (e.cluster.as_str(), e.locality.as_str())).collect();
        let outlier = policy.outlier.map_or_else(|| env.outlier.clone(), |o| env.outlier.with(o));
        let lb = policy.backend.and_then(|b| b.load_balancer.as_ref());
        let algo = lb.map(|l| l.algorithm).unwrap_or_default();
        let described = serde_json::json!({
            "own": { "cluster": env.cluster, "locality": env.locality },
            "failover": policy.failover,
            "cluster_weights": policy.cluster_weights,
            "outlier_detection": outlier,
            "backend_policy": policy.backend,
        });
        let tiers = layout((env.cluster, env.locality), &places, policy);
        let sizes = algo::sizes(lb);
        Balancer {
            described,
            within: Self::tables(&tiers, algo, eps, sizes),
            tiers,
            next: AtomicUsize::new(0),
            shared,
            settings: Settings::from(&outlier),
            clock: env.store.clock,
            algo,
            hash_on: lb.and_then(|l| l.hash_on.as_ref()).and_then(hash::HashOn::from_config),
            limits: limits::Limits::from_config(policy.backend.and_then(|b| b.connection_limits.as_ref())),
            sizes,
        }
    }

    fn tables(tiers: &[Tier], algo: Algorithm, eps: &[Arc<Endpoint>], sizes: (u32, u32)) -> Vec<Vec<algo::Within>> {
        tiers
            .iter()
            .map(|t| t.groups.iter().map(|g| algo::Within::new(algo, &g.members, eps, sizes)).collect())
            .collect()
    }

    /// Where the request's hash key comes from (RingHash, Maglev); `None` for the others.
    pub fn hash_on(&self) -> Option<&hash::HashOn> {
        self.hash_on.as_ref()
    }

    /// Whether requests must be counted in flight per endpoint (LeastRequest, PeakEWMA).
    pub fn tracks_load(&self) -> bool {
        matches!(self.algo, Algorithm::LeastRequest | Algorithm::PeakEwma)
    }

    /// One unit of `limit` for a request or connection (see [`limits`]); `Err` at the limit.
    pub fn acquire(&self, limit: limits::Limit) -> Result<Option<limits::Permit>, limits::Limit> {
        self.limits.acquire(&self.shared, limit)
    }

    /// The limits in force and the use of each now, for `/config_dump`.
    fn describe_limits(&self) -> serde_json::Value {
        use limits::Limit::*;
        let v: serde_json::Map<String, serde_json::Value> = [Connections, PendingRequests, Requests, Retries]
            .into_iter()
            .filter_map(|l| {
                let max = self.limits.max(l)?;
                Some((
                    l.as_str().to_string(),
                    serde_json::json!({ "max": max, "in_use": self.shared.limits.in_use(l) }),
                ))
            })
            .collect();
        v.into()
    }

    /// A balancer over `eps`, a subset of this one's endpoints (a mirror: one cluster's), that
    /// shares this one's health, clock and outlier settings, so an ejection seen through either
    /// applies to both. By zone within the subset (no failover or cluster weights: a mirror names
    /// one cluster), with this one's load balancer, hash key and limits.
    pub fn subset(&self, eps: &[Arc<Endpoint>], own: (&str, &str)) -> Self {
        let places: Vec<(&str, &str)> = eps.iter().map(|e| (e.cluster.as_str(), e.locality.as_str())).collect();
        let tiers = layout(own, &places, Policy::default());
        Balancer {
            described: serde_json::json!({ "own": { "cluster": own.0, "locality": own.1 }, "subset_of": self.described }),
            within: Self::tables(&tiers, self.algo, eps, self.sizes),
            tiers,
            next: AtomicUsize::new(0),
            shared: self.shared.clone(),
            settings: self.settings,
            clock: self.clock,
            algo: self.algo,
            hash_on: self.hash_on.clone(),
            limits: self.limits,
            sizes: self.sizes,
        }
    }

    /// The endpoint for the next request at `now`; `None` when the policy leaves no endpoint.
    pub fn pick<'a>(&self, eps: &'a [Arc<Endpoint>], now: Instant) -> Option<&'a Arc<Endpoint>> {
        self.pick_keyed(eps, now, None)
    }

    /// [`Balancer::pick`] for a request whose hash key (RingHash, Maglev) is `key`.
    pub fn pick_keyed<'a>(
        &self,
        eps: &'a [Arc<Endpoint>],
        now: Instant,
        key: Option<u64>,
    ) -> Option<&'a Arc<Endpoint>> {
        let first = self.tiers.first()?;
        // A hashing balancer places a key the same way at every step (tier, group, endpoint).
        let n = match (self.algo, key) {
            (Algorithm::RingHash | Algorithm::Maglev, Some(k)) => k as usize,
            _ => self.next.fetch_add(1, Relaxed),
        };
        let now_ms = self.clock.ms(now);
        if self.shared.max_until.load(Relaxed) <= now_ms {
            return eps.get(self.steady(0, first, eps, n, key));
        }
        eps.get(self.pick_around_ejections(eps, n, key, now_ms))
    }

    /// The tier's pick (weighted between its groups), ignoring health.
    fn steady(&self, t_idx: usize, t: &Tier, eps: &[Arc<Endpoint>], n: usize, key: Option<u64>) -> usize {
        let (g_idx, group) = match t.groups.as_slice() {
            [g] => (0, g),
            groups => {
                let mut r = scaled(n, t.total_weight);
                groups
                    .iter()
                    .enumerate()
                    .find(|(_, g)| {
                        let hit = r < g.weight;
                        r = r.saturating_sub(g.weight);
                        hit
                    })
                    .unwrap_or((groups.len() - 1, &groups[groups.len() - 1]))
            }
        };
        if self.algo == Algorithm::RoundRobin && self.within[t_idx][g_idx].uniform() {
            return group.members[n % group.members.len()];
        }
        let pos = self.within[t_idx][g_idx].choose(self.algo, &group.members, eps, n, key, |_| false);
        group.members[pos]
    }

    fn counts(eps: &[Arc<Endpoint>], members: &[usize], now_ms: u64) -> (usize, usize) {
        let healthy = members.iter().filter(|&&i| !eps[i].health.is_ejected(now_ms)).count();
        (healthy, members.len())
    }

    fn tier_counts(eps: &[Arc<Endpoint>], t: &Tier, now_ms: u64) -> (usize, usize) {
        t.groups.iter().map(|g| Self::counts(eps, &g.members, now_ms)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }

    /// Some endpoint may be ejected: spill between tiers by their healthy share (see [`loads`]),
    /// computed without allocating.
    fn pick_around_ejections(&self, eps: &[Arc<Endpoint>], n: usize, key: Option<u64>, now_ms: u64) -> usize {
        let avail = |t: &Tier| {
            let (h, total) = Self::tier_counts(eps, t, now_ms);
            availability(h, total)
        };
        let mut left = 1.0;
        for t in &self.tiers {
            take(avail(t), &mut left);
        }
        let sum = 1.0 - left;
        if sum <= 0.0 {
            // Every endpoint is ejected: balance as if none were (Envoy's panic mode).
            return self.steady(0, &self.tiers[0], eps, n, key);
        }
        let mut r = fraction(n) * sum;
        let mut left = 1.0;
        let mut chosen = None;
        for (t_idx, t) in self.tiers.iter().enumerate() {
            let a = take(avail(t), &mut left);
            if a > 0.0 {
                chosen = Some((t_idx, t, (r / a).min(1.0)));
                if r < a {
                    break;
                }
                r -= a;
            }
        }
        let Some((t_idx, tier, u)) = chosen else { return self.steady(0, &self.tiers[0], eps, n, key) };
        // Between groups: weight × availability.
        let eff = |g: &Group| {
            let (h, total) = Self::counts(eps, &g.members, now_ms);
            g.weight as f64 * availability(h, total)
        };
        let total: f64 = tier.groups.iter().map(eff).sum();
        let mut r = u * total;
        let (mut g_idx, mut group) = (0, &tier.groups[0]);
        for (i, g) in tier.groups.iter().enumerate() {
            let e = eff(g);
            if e > 0.0 {
                (g_idx, group) = (i, g);
                if r < e {
                    break;
                }
                r -= e;
            }
        }
        // The algorithm inside the group, skipping ejected endpoints.
        let m = &group.members;
        let ejected = |pos: usize| eps[m[pos]].health.is_ejected(now_ms);
        m[self.within[t_idx][g_idx].choose(self.algo, m, eps, n, key, ejected)]
    }

    /// Another endpoint for a request whose connect to each of `tried` failed (nothing was
    /// sent): the balancer's next choice not yet tried, else any untried endpoint the policy
    /// allows, healthy ones first. `None`: every one was tried.
    pub fn pick_other<'a>(
        &self,
        eps: &'a [Arc<Endpoint>],
        tried: &[Arc<Endpoint>],
        now: Instant,
    ) -> Option<&'a Arc<Endpoint>> {
        let untried = |e: &Arc<Endpoint>| !tried.iter().any(|t| Arc::ptr_eq(t, e));
        for _ in 0..eps.len().min(8) {
            match self.pick(eps, now) {
                Some(e) if untried(e) => return Some(e),
                _ => {}
            }
        }
        let now_ms = self.clock.ms(now);
        let allowed =
            || self.tiers.iter().flat_map(|t| t.groups.iter()).flat_map(|g| g.members.iter()).map(|&i| &eps[i]);
        allowed().find(|e| untried(e) && !e.health.is_ejected(now_ms)).or_else(|| allowed().find(|e| untried(e)))
    }

    /// Whether a connection to an endpoint of this service failed or broke within
    /// [`crate::outlier::REPLAY_WINDOW_MS`] of `now` (one atomic load).
    pub fn recently_broken(&self, now: Instant) -> bool {
        let last = self.shared.last_broken.load(Relaxed);
        last != 0 && self.clock.ms(now) < last.saturating_add(crate::outlier::REPLAY_WINDOW_MS)
    }

    /// Counts what happened on `ep`; ejects it at a threshold, within the service's max percent.
    /// The clock is read only when a threshold is reached (or success-rate detection is on).
    pub fn report(&self, eps: &[Arc<Endpoint>], ep: &Endpoint, outcome: Outcome) -> Option<Ejection> {
        self.report_with(eps, ep, outcome, &mut |_, _| {})
    }

    /// [`Balancer::report`], and each endpoint ejected for its success rate (at the end of an
    /// interval, evaluated by the report that finds it due) handed to `ejected`.
    pub fn report_with(
        &self,
        eps: &[Arc<Endpoint>],
        ep: &Endpoint,
        outcome: Outcome,
        ejected: &mut dyn FnMut(&Endpoint, Ejection),
    ) -> Option<Ejection> {
        if matches!(outcome, Outcome::ConnectFailure | Outcome::GatewayError) {
            self.shared.last_broken.fetch_max(self.clock.ms(Instant::now()), Relaxed);
        }
        if let Some(sr) = &self.settings.success_rate {
            self.evaluate_success_rates(eps, sr, ejected);
        }
        let reason = ep.health.record(outcome, &self.settings)?;
        let now_ms = self.clock.ms(Instant::now());
        let ejected = eps.iter().filter(|e| e.health.is_ejected(now_ms)).count();
        if !self.settings.may_eject(ejected, eps.len().max(1)) {
            return None;
        }
        let (until, ejection) = ep.health.eject(now_ms, reason, &self.settings)?;
        self.shared.max_until.fetch_max(until, Relaxed);
        Some(ejection)
    }

    /// At the end of each `interval` (the first report after it claims it): ejects the
    /// success-rate outliers, within the max percent, and starts the next interval.
    fn evaluate_success_rates(
        &self,
        eps: &[Arc<Endpoint>],
        sr: &weft_api::traffic::SuccessRate,
        ejected: &mut dyn FnMut(&Endpoint, Ejection),
    ) {
        let now_ms = self.clock.ms(Instant::now());
        let due = self.shared.next_eval.load(Relaxed);
        if now_ms < due {
            return;
        }
        let next = now_ms + self.settings.interval_ms;
        if self.shared.next_eval.compare_exchange(due, next, Relaxed, Relaxed).is_err() {
            return;
        }
        let rates: Vec<(u32, u32)> = eps.iter().map(|e| e.health.take_rate()).collect();
        if due == 0 {
            return; // The first interval only starts now.
        }
        for i in crate::outlier::success_rate_outliers(&rates, sr) {
            let out = eps.iter().filter(|e| e.health.is_ejected(now_ms)).count();
            if !self.settings.may_eject(out, eps.len()) {
                break;
            }
            let reason = crate::outlier::REASON_SUCCESS_RATE;
            if let Some((until, e)) = eps[i].health.eject(now_ms, reason, &self.settings) {
                self.shared.max_until.fetch_max(until, Relaxed);
                ejected(&eps[i], e);
            }
        }
    }

    /// The policy, the tiers (endpoint addresses by group, with weights) and the endpoints
    /// ejected now with the milliseconds left, for `/config_dump`.
    pub fn describe(&self, eps: &[Arc<Endpoint>]) -> serde_json::Value {
        let now = self.clock.ms(Instant::now());
        let tiers: Vec<Vec<serde_json::Value>> = self
            .tiers
            .iter()
            .map(|t| {
                t.groups
                    .iter()
                    .map(|g| {
                        let members: Vec<String> = g.members.iter().map(|&i| eps[i].address.to_string()).collect();
                        serde_json::json!({ "weight": g.weight, "endpoints": members })
                    })
                    .collect()
            })
            .collect();
        let ejected: serde_json::Map<String, serde_json::Value> = eps
            .iter()
            .filter_map(|e| {
                let left = e.health.ejected_for(now)?;
                Some((e.address.to_string(), serde_json::json!({ "ms_left": left })))
            })
            .collect();
        let mut v = self.described.clone();
        v["load_balancer"] = serde_json::to_value(self.algo).unwrap_or_default();
        v["connection_limits"] = self.describe_limits();
        v["tiers"] = tiers.into();
        v["ejected"] = ejected.into();
        v
    }
}

#[cfg(test)]
mod tests;
