//! Per-endpoint load for the load-aware balancers: requests in flight (LeastRequest) and a
//! peak-sensitive moving average of latency (PeakEWMA, as Linkerd's and Finagle's).
//!
//! The average jumps up to any latency above it at once (a slow endpoint is avoided after one
//! slow answer), and otherwise decays towards each new latency with a 10 s time constant; read
//! for a pick, it also decays towards 0 with time, so an endpoint avoided for being slow is tried
//! again later. Atomics only: concurrent updates may lose one another's sample, never block.
//! The state lives in the endpoint's [`crate::outlier::Health`], so it outlives routing tables.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// How fast the average forgets (Linkerd's default decay).
pub const DECAY_NS: f64 = 10e9;
/// The latency assumed of an endpoint not yet measured (Linkerd's default RTT estimate).
pub const DEFAULT_RTT_NS: f64 = 30e6;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process's first call (never 0).
pub fn now_ns() -> u64 {
    ns_at(Instant::now())
}

fn ns_at(t: Instant) -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    t.saturating_duration_since(epoch).as_nanos() as u64 + 1
}

#[derive(Debug, Default)]
pub struct Load {
    in_flight: AtomicU32,
    /// f64 bits of the average in ns; 0: not measured yet.
    ewma: AtomicU64,
    /// When it was last updated (ns on [`now_ns`]).
    stamp: AtomicU64,
}

impl Load {
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// The average latency at `now`, decayed since its last sample; the default when unmeasured.
    pub fn rtt(&self, now: u64) -> f64 {
        let bits = self.ewma.load(Relaxed);
        if bits == 0 {
            return DEFAULT_RTT_NS;
        }
        let elapsed = now.saturating_sub(self.stamp.load(Relaxed)) as f64;
        f64::from_bits(bits) * (-elapsed / DECAY_NS).exp()
    }

    /// PeakEWMA's cost: latency × (requests in flight + 1). An endpoint not measured yet costs
    /// nothing while idle, so a new endpoint is tried at once (as Finagle's starts at 0), and
    /// the default latency per request in flight, so a burst does not all go to it.
    pub fn cost(&self, now: u64) -> f64 {
        if self.ewma.load(Relaxed) == 0 {
            return DEFAULT_RTT_NS * f64::from(self.in_flight());
        }
        self.rtt(now) * f64::from(self.in_flight() + 1)
    }

    /// Records one response's latency.
    pub fn observe(&self, rtt_ns: f64, now: u64) {
        let prev = self.ewma.load(Relaxed);
        let next = if prev == 0 || rtt_ns > f64::from_bits(prev) {
            rtt_ns
        } else {
            let elapsed = now.saturating_sub(self.stamp.load(Relaxed)) as f64;
            let w = (-elapsed / DECAY_NS).exp();
            f64::from_bits(prev) * w + rtt_ns * (1.0 - w)
        };
        self.ewma.store(next.max(1.0).to_bits(), Relaxed);
        self.stamp.store(now, Relaxed);
    }

    /// Counts a request in flight until the guard drops; then records its latency.
    pub fn start(health: &Arc<crate::outlier::Health>) -> InFlight {
        health.load.in_flight.fetch_add(1, Relaxed);
        InFlight { health: health.clone(), started: Instant::now() }
    }
}

/// One request in flight to an endpoint (see [`Load::start`]).
pub struct InFlight {
    health: Arc<crate::outlier::Health>,
    started: Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let load = &self.health.load;
        load.in_flight.fetch_sub(1, Relaxed);
        let now = Instant::now();
        load.observe(now.saturating_duration_since(self.started).as_nanos() as f64, ns_at(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_average_takes_peaks_at_once_and_decays() {
        let l = Load::default();
        assert_eq!(l.rtt(1), DEFAULT_RTT_NS, "unmeasured: the default");
        assert_eq!(l.cost(1), 0.0, "unmeasured and idle: free, so a new endpoint is tried");
        l.observe(1e6, 1);
        assert_eq!(l.rtt(1), 1e6);
        l.observe(100e6, 2);
        assert_eq!(l.rtt(2), 100e6, "a peak is taken at once");
        l.observe(1e6, 2 + 10_000_000_000);
        let after = l.rtt(2 + 10_000_000_000);
        // One time constant later: 100e6 × e⁻¹ + 1e6 × (1 − e⁻¹) ≈ 37.4e6.
        assert!((37e6..38e6).contains(&after), "{after}");
        assert!(l.rtt(2 + 60_000_000_000) < after / 100.0, "unsampled, it decays towards 0");
        assert_eq!(l.cost(2 + 10_000_000_000), after, "cost with nothing in flight is the latency");
    }
}
