//! The algorithm that picks an endpoint within one group of a tier (the tiers, failover and
//! cluster weights of [`super`] chose the group). Every algorithm honours endpoint weights.
//!
//! ```text
//! RoundRobin   members[n % len], or the n-th well-spread point on the cumulative weights
//! Random       a thread-local xorshift draw on the cumulative weights
//! LeastRequest two weighted draws; the one with fewer requests in flight
//! PeakEWMA     two weighted draws; the lower ewma_rtt × (in_flight + 1)
//! RingHash     the first ring point at or after hash(key) (Ketama; points ∝ weight)
//! Maglev       table[hash(key) % M] (Maglev's permutation fill; turns ∝ weight)
//! ```
//!
//! Tables (cumulative weights, ring, Maglev table) are built when the routing table is, never
//! per request; a pick takes no lock and allocates nothing.

use super::hash::{hash64, random};
use crate::routes::Endpoint;
use std::sync::Arc;
use weft_api::backend_policy::{Algorithm, DEFAULT_MAGLEV_TABLE_SIZE, DEFAULT_RING_SIZE, MAX_RING_POINTS};

const EMPTY: u32 = u32::MAX;

/// One group's tables for the service's algorithm.
#[derive(Debug)]
pub(super) struct Within {
    /// Cumulative endpoint weights in member order; empty when every weight is the same.
    cum: Vec<u64>,
    total: u64,
    table: Table,
}

#[derive(Debug)]
enum Table {
    None,
    /// (point, member position), sorted by point.
    Ring(Vec<(u64, u32)>),
    /// Member position per slot.
    Maglev(Vec<u32>),
}

/// What identifies an endpoint on a ring or in a Maglev table: its address, so a key stays put
/// while the endpoint does, whatever else joins or leaves.
fn name(ep: &Endpoint) -> String {
    ep.address.to_string()
}

/// Ketama: each member gets `ring_size × weight` points, each the hash of `address_k` — a
/// number that does not depend on the other members, so one leaving moves only its own keys.
/// (Past [`MAX_RING_POINTS`] in all, the points per weight shrink to fit.)
fn ring(members: &[usize], eps: &[Arc<Endpoint>], ring_size: u32) -> Vec<(u64, u32)> {
    let total: u64 = members.iter().map(|&i| u64::from(eps[i].weight)).sum::<u64>().max(1);
    let per_weight = u64::from(ring_size).min(MAX_RING_POINTS / total).max(1);
    let mut points = Vec::new();
    for (pos, &i) in members.iter().enumerate() {
        let n = per_weight * u64::from(eps[i].weight);
        let base = name(&eps[i]);
        for k in 0..n {
            points.push((hash64(format!("{base}_{k}").as_bytes(), 0), pos as u32));
        }
    }
    points.sort_unstable();
    points
}

/// Maglev's lookup table (Eisenbud et al., NSDI 2016, algorithm in §3.4) of `size` slots (a
/// prime): each member walks its own permutation (offset, skip) and takes the next free slot
/// in turn; a member of weight w takes a turn w/max_w as often (Envoy's weighted variant).
pub(super) fn maglev(members: &[usize], eps: &[Arc<Endpoint>], size: u32) -> Vec<u32> {
    let m = u64::from(size);
    let mut table = vec![EMPTY; size as usize];
    if members.is_empty() {
        return table;
    }
    let perm: Vec<(u64, u64)> = members
        .iter()
        .map(|&i| {
            let n = name(&eps[i]);
            (hash64(n.as_bytes(), 1) % m, hash64(n.as_bytes(), 2) % (m - 1) + 1)
        })
        .collect();
    let weights: Vec<u64> = members.iter().map(|&i| u64::from(eps[i].weight)).collect();
    let max_w = weights.iter().copied().max().unwrap_or(1).max(1);
    let mut next = vec![0u64; members.len()];
    let mut credit = vec![0u64; members.len()];
    let mut filled = 0u64;
    while filled < m {
        for pos in 0..members.len() {
            credit[pos] += weights[pos];
            if credit[pos] < max_w {
                continue;
            }
            credit[pos] -= max_w;
            let (offset, skip) = perm[pos];
            loop {
                let c = ((offset + next[pos] * skip) % m) as usize;
                next[pos] += 1;
                if table[c] == EMPTY {
                    table[c] = pos as u32;
                    filled += 1;
                    break;
                }
            }
            if filled == m {
                break;
            }
        }
    }
    table
}

impl Within {
    pub(super) fn new(algo: Algorithm, members: &[usize], eps: &[Arc<Endpoint>], sizes: (u32, u32)) -> Self {
        let weights: Vec<u64> = members.iter().map(|&i| u64::from(eps[i].weight.max(1))).collect();
        let total = weights.iter().sum();
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        let cum = if uniform {
            vec![]
        } else {
            weights
                .iter()
                .scan(0u64, |acc, w| {
                    *acc += w;
                    Some(*acc)
                })
                .collect()
        };
        let table = match algo {
            Algorithm::RingHash => Table::Ring(ring(members, eps, sizes.0)),
            Algorithm::Maglev => Table::Maglev(maglev(members, eps, sizes.1)),
            _ => Table::None,
        };
        Within { cum, total, table }
    }

    /// Every member weighs the same (plain `n % len` round robin).
    pub(super) fn uniform(&self) -> bool {
        self.cum.is_empty()
    }

    /// A member position drawn in proportion to weight from `r` (uniform over u64).
    fn draw(&self, len: usize, r: u64) -> usize {
        if self.cum.is_empty() {
            return ((u128::from(r) * len as u128) >> 64) as usize;
        }
        let t = ((u128::from(r) * u128::from(self.total)) >> 64) as u64;
        self.cum.partition_point(|&c| c <= t).min(len - 1)
    }

    /// The member position for a pick: `n` is the round-robin counter (or the hash key, for the
    /// hashing algorithms), `key` the request's hash. `ejected(pos)`: skip where possible.
    pub(super) fn choose(
        &self,
        algo: Algorithm,
        members: &[usize],
        eps: &[Arc<Endpoint>],
        n: usize,
        key: Option<u64>,
        ejected: impl Fn(usize) -> bool,
    ) -> usize {
        let len = members.len();
        let pos = match (algo, &self.table, key) {
            (Algorithm::RingHash, Table::Ring(r), Some(k)) if !r.is_empty() => {
                let start = r.partition_point(|p| p.0 < k);
                return (0..r.len())
                    .map(|j| r[(start + j) % r.len()].1 as usize)
                    .find(|&p| !ejected(p))
                    .unwrap_or(r[start % r.len()].1 as usize);
            }
            (Algorithm::Maglev, Table::Maglev(t), Some(k)) if !t.is_empty() => {
                let start = (k % t.len() as u64) as usize;
                return (0..t.len())
                    .map(|j| t[(start + j) % t.len()] as usize)
                    .find(|&p| p < len && !ejected(p))
                    .unwrap_or(t[start] as usize % len);
            }
            (Algorithm::RoundRobin, _, _) => {
                if self.cum.is_empty() {
                    n % len
                } else {
                    self.draw(len, super::spread2(n))
                }
            }
            (Algorithm::LeastRequest | Algorithm::PeakEwma, _, _) if len > 1 => {
                let a = self.draw(len, random());
                let mut b = self.draw(len, random());
                if b == a {
                    b = (a + 1 + (random() as usize % (len - 1))) % len;
                }
                match (ejected(a), ejected(b)) {
                    (false, true) => a,
                    (true, false) => b,
                    _ => {
                        let (ea, eb) = (&eps[members[a]], &eps[members[b]]);
                        let now = super::load::now_ns();
                        let cost = |e: &Endpoint| match algo {
                            Algorithm::PeakEwma => e.health.load.cost(now),
                            _ => f64::from(e.health.load.in_flight()),
                        };
                        // Weights already made the candidates (a heavier endpoint is drawn more
                        // often); the load decides between them, a tie going to the first draw.
                        if cost(ea) <= cost(eb) {
                            a
                        } else {
                            b
                        }
                    }
                }
            }
            // Random, and the hashing algorithms for a request without the key.
            _ => self.draw(len, random()),
        };
        if !ejected(pos) {
            return pos;
        }
        (1..len).map(|k| (pos + k) % len).find(|&p| !ejected(p)).unwrap_or(pos)
    }
}

/// The table sizes a balancer builds with (ring, Maglev).
pub(super) fn sizes(lb: Option<&weft_api::backend_policy::LoadBalancer>) -> (u32, u32) {
    (
        lb.and_then(|l| l.ring_size).unwrap_or(DEFAULT_RING_SIZE),
        lb.and_then(|l| l.table_size).unwrap_or(DEFAULT_MAGLEV_TABLE_SIZE),
    )
}

#[cfg(test)]
mod tests;
