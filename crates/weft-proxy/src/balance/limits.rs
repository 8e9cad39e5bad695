//! Circuit breaking per backend: counters per service (shared by every routing table, in
//! [`crate::outlier::ServiceHealth`]) checked against the BackendPolicy's `connectionLimits`. A
//! request over a limit is not forwarded: it is answered 503 at once with
//! `x-weft-overflow: <limit>` and counted in `weft_overflow_total{service,limit}`.
//!
//! A service with no limits costs one branch per request: no counter is touched.

use crate::outlier::ServiceHealth;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use weft_api::backend_policy::ConnectionLimits;

/// Which limit; its name is the `x-weft-overflow` header's value and the metric's label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Connections,
    PendingRequests,
    Requests,
    Retries,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Connections => "max-connections",
            Limit::PendingRequests => "max-pending-requests",
            Limit::Requests => "max-requests",
            Limit::Retries => "max-retries",
        }
    }
}

/// What is in use now, per service.
#[derive(Debug, Default)]
pub struct Counters {
    connections: AtomicU32,
    pending: AtomicU32,
    requests: AtomicU32,
    retries: AtomicU32,
}

impl Counters {
    fn of(&self, l: Limit) -> &AtomicU32 {
        match l {
            Limit::Connections => &self.connections,
            Limit::PendingRequests => &self.pending,
            Limit::Requests => &self.requests,
            Limit::Retries => &self.retries,
        }
    }

    pub fn in_use(&self, l: Limit) -> u32 {
        self.of(l).load(Relaxed)
    }
}

/// The limits of one service; `u32::MAX`: none.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    max: [u32; 4],
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max: [u32::MAX; 4] }
    }
}

fn index(l: Limit) -> usize {
    match l {
        Limit::Connections => 0,
        Limit::PendingRequests => 1,
        Limit::Requests => 2,
        Limit::Retries => 3,
    }
}

impl Limits {
    pub fn from_config(c: Option<&ConnectionLimits>) -> Self {
        let Some(c) = c else { return Limits::default() };
        let m = |v: Option<u32>| v.unwrap_or(u32::MAX);
        Limits { max: [m(c.max_connections), m(c.max_pending_requests), m(c.max_requests), m(c.max_retries)] }
    }

    pub fn max(&self, l: Limit) -> Option<u32> {
        Some(self.max[index(l)]).filter(|m| *m != u32::MAX)
    }

    /// Takes one unit of `l`: `Ok(None)` when there is no such limit (nothing counted),
    /// `Ok(Some(permit))` while under it, `Err(l)` at it.
    pub fn acquire(&self, shared: &Arc<ServiceHealth>, l: Limit) -> Result<Option<Permit>, Limit> {
        let max = self.max[index(l)];
        if max == u32::MAX {
            return Ok(None);
        }
        let c = shared.limits.of(l);
        if c.fetch_add(1, Relaxed) >= max {
            c.fetch_sub(1, Relaxed);
            return Err(l);
        }
        Ok(Some(Permit { shared: shared.clone(), limit: l }))
    }
}

/// One unit of a limit in use, given back on drop.
#[derive(Debug)]
pub struct Permit {
    shared: Arc<ServiceHealth>,
    limit: Limit,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared.limits.of(self.limit).fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_admits_up_to_its_value_and_frees_on_drop() {
        let shared = Arc::new(ServiceHealth::default());
        let limits = Limits::from_config(Some(&ConnectionLimits { max_requests: Some(3), ..Default::default() }));
        assert!(limits.acquire(&shared, Limit::Retries).unwrap().is_none(), "no limit: nothing counted");
        let held: Vec<_> = (0..3).map(|_| limits.acquire(&shared, Limit::Requests).unwrap().unwrap()).collect();
        for _ in 0..5 {
            assert_eq!(limits.acquire(&shared, Limit::Requests).unwrap_err(), Limit::Requests, "at the limit");
        }
        assert_eq!(shared.limits.in_use(Limit::Requests), 3, "a refusal takes nothing");
        drop(held);
        assert_eq!(shared.limits.in_use(Limit::Requests), 0);
        assert!(limits.acquire(&shared, Limit::Requests).unwrap().is_some(), "freed: admitted again");
    }
}
