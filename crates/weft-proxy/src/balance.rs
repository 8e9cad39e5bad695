//! Which endpoint of a service a request goes to: tiers of endpoints by priority (locality, or the
//! service's `failover` order, or one tier split by `cluster_weights`), the next tier used only as
//! far as the healthy share of the ones before it falls short, and round robin inside a tier.
//! Health comes from [`crate::outlier`].
//!
//! ```text
//! Routes build ─► layout(own cluster + locality, policy) ─► tiers [ [group(weight, endpoints)] ]
//! pick(now) ─► nothing ejected? ── yes ─► first tier: round robin (weighted between groups)
//!                               └─ no ──► spill: tier t gets min(left, 1.4 × healthy_t/total_t),
//!                                         normalised; round robin over its endpoints not ejected
//! ```
//!
//! The common path (nothing ejected) is one `fetch_add`, one atomic load and a modulo: no lock,
//! no allocation. The layout is computed once per routing table, not per request.
//!
//! Default tiers (no policy), by the proxy's own cluster and locality (`region/zone/...`):
//! 0: same cluster, and same region and zone (or either locality unknown); 1: same cluster in
//! another zone, or another cluster in the same region; 2: the rest.

use crate::outlier::{Clock, Ejection, Outcome, ServiceHealth, Settings, Store};
use crate::routes::Endpoint;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;
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
        let described = serde_json::json!({
            "own": { "cluster": env.cluster, "locality": env.locality },
            "failover": policy.failover,
            "cluster_weights": policy.cluster_weights,
            "outlier_detection": outlier,
        });
        Balancer {
            described,
            tiers: layout((env.cluster, env.locality), &places, policy),
            next: AtomicUsize::new(0),
            shared,
            settings: Settings::from(&outlier),
            clock: env.store.clock,
        }
    }

    /// A balancer over `eps`, a subset of this one's endpoints (a mirror: one cluster's), that
    /// shares this one's health, clock and outlier settings, so an ejection seen through either
    /// applies to both. Plain round robin by zone within the subset (no failover or weights: a
    /// mirror names one cluster).
    pub fn subset(&self, eps: &[Arc<Endpoint>], own: (&str, &str)) -> Self {
        let places: Vec<(&str, &str)> = eps.iter().map(|e| (e.cluster.as_str(), e.locality.as_str())).collect();
        Balancer {
            described: serde_json::json!({ "own": { "cluster": own.0, "locality": own.1 }, "subset_of": self.described }),
            tiers: layout(own, &places, Policy::default()),
            next: AtomicUsize::new(0),
            shared: self.shared.clone(),
            settings: self.settings,
            clock: self.clock,
        }
    }

    /// The endpoint for the next request at `now`; `None` when the policy leaves no endpoint.
    pub fn pick<'a>(&self, eps: &'a [Arc<Endpoint>], now: Instant) -> Option<&'a Arc<Endpoint>> {
        let first = self.tiers.first()?;
        let n = self.next.fetch_add(1, Relaxed);
        let now_ms = self.clock.ms(now);
        if self.shared.max_until.load(Relaxed) <= now_ms {
            return eps.get(Self::steady(first, n));
        }
        eps.get(self.pick_around_ejections(eps, n, now_ms))
    }

    /// Round robin over the tier (weighted between its groups), ignoring health.
    fn steady(t: &Tier, n: usize) -> usize {
        let group = match t.groups.as_slice() {
            [g] => g,
            groups => {
                let mut r = scaled(n, t.total_weight);
                groups
                    .iter()
                    .find(|g| {
                        let hit = r < g.weight;
                        r = r.saturating_sub(g.weight);
                        hit
                    })
                    .unwrap_or(&groups[groups.len() - 1])
            }
        };
        group.members[n % group.members.len()]
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
    fn pick_around_ejections(&self, eps: &[Arc<Endpoint>], n: usize, now_ms: u64) -> usize {
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
            return Self::steady(&self.tiers[0], n);
        }
        let mut r = fraction(n) * sum;
        let mut left = 1.0;
        let mut chosen = None;
        for t in &self.tiers {
            let a = take(avail(t), &mut left);
            if a > 0.0 {
                chosen = Some((t, (r / a).min(1.0)));
                if r < a {
                    break;
                }
                r -= a;
            }
        }
        let Some((tier, u)) = chosen else { return Self::steady(&self.tiers[0], n) };
        // Between groups: weight × availability.
        let eff = |g: &Group| {
            let (h, total) = Self::counts(eps, &g.members, now_ms);
            g.weight as f64 * availability(h, total)
        };
        let total: f64 = tier.groups.iter().map(eff).sum();
        let mut r = u * total;
        let mut group = &tier.groups[0];
        for g in &tier.groups {
            let e = eff(g);
            if e > 0.0 {
                group = g;
                if r < e {
                    break;
                }
                r -= e;
            }
        }
        // Round robin inside the group, skipping ejected endpoints.
        let m = &group.members;
        (0..m.len())
            .map(|k| m[(n + k) % m.len()])
            .find(|&i| !eps[i].health.is_ejected(now_ms))
            .unwrap_or(m[n % m.len()])
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
    /// The clock is read only when a threshold is reached.
    pub fn report(&self, eps: &[Arc<Endpoint>], ep: &Endpoint, outcome: Outcome) -> Option<Ejection> {
        if matches!(outcome, Outcome::ConnectFailure | Outcome::GatewayError) {
            self.shared.last_broken.fetch_max(self.clock.ms(Instant::now()), Relaxed);
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
        v["tiers"] = tiers.into();
        v["ejected"] = ejected.into();
        v
    }
}

#[cfg(test)]
mod tests;
