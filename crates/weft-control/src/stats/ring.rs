//! One series' history: fixed arrays of 10 s points (last 10 min) and 1 min points (last hour),
//! indexed by time slot, so a series costs the same memory however long it lives.

/// Latency buckets kept per point: a proxy's histogram bounds plus +Inf (the proxy's
/// `weft_http_response_latency_seconds` has 18 bounds), folded into the last one beyond this.
pub const BUCKETS: usize = 19;
/// 10 s points kept: 10 minutes.
pub const FINE_POINTS: usize = 60;
pub const FINE_SECONDS: u64 = 10;
/// 1 min points kept: an hour.
pub const COARSE_POINTS: usize = 60;
pub const COARSE_SECONDS: u64 = 60;

/// Counts of one time slot (differences between reports, not cumulative values).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Point {
    /// The slot (`unix / slot seconds`) these counts belong to; a stale slot reads as empty.
    /// (u32: 10 s slots last until the year 3331.)
    pub slot: u32,
    pub requests: u32,
    pub failures: u32,
    /// Cumulative counts per latency bucket (bucket `i` holds every request at or under bound `i`).
    pub buckets: [u32; BUCKETS],
}

impl Point {
    fn add(&mut self, d: &Delta) {
        self.requests = self.requests.saturating_add(d.requests);
        self.failures = self.failures.saturating_add(d.failures);
        for (b, n) in self.buckets.iter_mut().zip(d.buckets.iter()) {
            *b = b.saturating_add(*n);
        }
    }
}

/// What one report added to a series.
#[derive(Clone, Copy, Debug, Default)]
pub struct Delta {
    pub requests: u32,
    pub failures: u32,
    pub buckets: [u32; BUCKETS],
}

/// Cumulative counters as last reported, to take the next report's difference from.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cumulative {
    pub requests: u64,
    pub failures: u64,
    pub buckets: [u64; BUCKETS],
}

impl Cumulative {
    /// From a report's counters; buckets beyond [`BUCKETS`] fold into the last one (+Inf).
    pub fn new(requests: u64, failures: u64, buckets: &[u64]) -> Self {
        let mut b = [0u64; BUCKETS];
        for (i, n) in buckets.iter().enumerate() {
            b[i.min(BUCKETS - 1)] = *n;
        }
        // A shorter histogram: the buckets past its end hold everything (+Inf).
        if let Some(last) = buckets.len().checked_sub(1).filter(|l| *l < BUCKETS - 1) {
            let all = b[last];
            b[last + 1..].iter_mut().for_each(|x| *x = all);
        }
        Cumulative { requests, failures, buckets: b }
    }

    /// What happened since `before`; a counter that went down (the proxy restarted) counts
    /// from zero.
    pub fn since(&self, before: &Cumulative) -> Delta {
        let reset = self.requests < before.requests;
        let d = |now: u64, was: u64| -> u32 {
            let n = if reset || now < was { now } else { now - was };
            n.min(u64::from(u32::MAX)) as u32
        };
        let mut buckets = [0u32; BUCKETS];
        for (i, b) in buckets.iter_mut().enumerate() {
            *b = d(self.buckets[i], before.buckets[i]);
        }
        Delta { requests: d(self.requests, before.requests), failures: d(self.failures, before.failures), buckets }
    }
}

/// A series' history.
#[derive(Clone, Debug)]
pub struct Ring {
    fine: [Point; FINE_POINTS],
    coarse: [Point; COARSE_POINTS],
}

impl Default for Ring {
    fn default() -> Self {
        Ring { fine: [Point::default(); FINE_POINTS], coarse: [Point::default(); COARSE_POINTS] }
    }
}

fn put(points: &mut [Point], slot: u64, d: &Delta) {
    let slot = slot as u32;
    let p = &mut points[(slot as usize) % points.len()];
    if p.slot != slot {
        *p = Point { slot, ..Point::default() };
    }
    p.add(d);
}

impl Ring {
    /// Adds `d` at time `unix` (seconds).
    pub fn add(&mut self, unix: u64, d: &Delta) {
        if d.requests == 0 && d.failures == 0 {
            return;
        }
        put(&mut self.fine, unix / FINE_SECONDS, d);
        put(&mut self.coarse, unix / COARSE_SECONDS, d);
    }

    /// The sum of the points of the last `window` seconds up to `now` (10 s points for windows
    /// up to 10 min, 1 min points beyond).
    pub fn sum(&self, now: u64, window: u64) -> Point {
        let (points, secs): (&[Point], u64) = if window <= FINE_SECONDS * FINE_POINTS as u64 {
            (&self.fine, FINE_SECONDS)
        } else {
            (&self.coarse, COARSE_SECONDS)
        };
        let last = now / secs;
        let n = window.div_ceil(secs).min(points.len() as u64);
        let first = (last + 1).saturating_sub(n);
        let mut out = Point::default();
        for p in points.iter().filter(|p| u64::from(p.slot) >= first && u64::from(p.slot) <= last && p.requests > 0) {
            out.add(&Delta { requests: p.requests, failures: p.failures, buckets: p.buckets });
        }
        out
    }

    /// The 1 min point of minute slot `slot`, empty if none.
    pub fn minute(&self, slot: u64) -> Point {
        let p = self.coarse[(slot % COARSE_POINTS as u64) as usize];
        if u64::from(p.slot) == slot {
            p
        } else {
            Point { slot: slot as u32, ..Point::default() }
        }
    }

    /// The latest second anything was added (0: never).
    pub fn last_unix(&self) -> u64 {
        self.coarse
            .iter()
            .filter(|p| p.requests > 0)
            .map(|p| u64::from(p.slot) * COARSE_SECONDS + COARSE_SECONDS)
            .max()
            .unwrap_or(0)
    }
}

/// The latency (seconds) under which a fraction `q` of the requests counted in `buckets` were
/// answered, interpolated within its bucket as Prometheus' `histogram_quantile` does; `None`
/// with no requests. Past the last finite bound, the last bound.
pub fn quantile(q: f64, bounds: &[f64], buckets: &[u64; BUCKETS]) -> Option<f64> {
    let n = bounds.len().min(BUCKETS - 1);
    let total = buckets[n] as f64;
    if total == 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for (i, bound) in bounds.iter().take(n).enumerate() {
        let c = buckets[i] as f64;
        if c >= rank {
            let (lb, lc) = lower;
            let within = if c > lc { (rank - lc) / (c - lc) } else { 1.0 };
            return Some(lb + (bound - lb) * within);
        }
        lower = (*bound, c);
    }
    bounds.get(n.saturating_sub(1)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(requests: u32) -> Delta {
        Delta { requests, failures: 0, buckets: [requests; BUCKETS] }
    }

    #[test]
    fn sums_only_the_slots_inside_the_window() {
        let mut r = Ring::default();
        let t = 1_800_000_000;
        r.add(t - 700, &delta(100)); // outside 10 min, inside the hour
        r.add(t - 45, &delta(3));
        r.add(t - 5, &delta(4));
        assert_eq!(r.sum(t, 60).requests, 7);
        assert_eq!(r.sum(t - 1, 10).requests, 4);
        assert_eq!(r.sum(t, 3600).requests, 107);
        // A slot reused after it aged out starts empty.
        r.add(t + 600, &delta(1));
        assert_eq!(r.sum(t + 600, 10).requests, 1);
    }

    #[test]
    fn differences_survive_a_proxy_restart() {
        let a = Cumulative::new(10, 1, &[5, 10]);
        let b = Cumulative::new(15, 1, &[8, 15]);
        let d = b.since(&a);
        assert_eq!((d.requests, d.failures, d.buckets[0], d.buckets[1], d.buckets[BUCKETS - 1]), (5, 0, 3, 5, 5));
        let restarted = Cumulative::new(2, 0, &[2, 2]);
        assert_eq!(restarted.since(&b).requests, 2);
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let bounds = [0.001, 0.002, 0.004];
        let mut b = [0u64; BUCKETS];
        b[..4].copy_from_slice(&[0, 50, 100, 100]);
        for x in b.iter_mut().skip(4) {
            *x = 100;
        }
        let p50 = quantile(0.5, &bounds, &b).unwrap();
        assert!((p50 - 0.002).abs() < 1e-9, "{p50}");
        let p99 = quantile(0.99, &bounds, &b).unwrap();
        assert!(p99 > 0.002 && p99 <= 0.004, "{p99}");
        assert_eq!(quantile(0.5, &bounds, &[0; BUCKETS]), None);
    }
}
