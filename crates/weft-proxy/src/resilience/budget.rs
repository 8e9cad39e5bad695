//! The retry budget (Finagle's `RetryBudget`, Linkerd's): over a sliding window of whole seconds,
//! retries may be at most `ratio` × requests + `min_per_second` × the window's seconds. Each
//! second has its own slot of atomic counters; a slot is reused (zeroed) when its second comes
//! round again. Counts are approximate under races (two requests crossing a second boundary);
//! the bound is what matters: retries never multiply the load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

struct Slot {
    /// The second (since `start`) this slot counts, plus one (0: never used).
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

pub struct Budget {
    start: Instant,
    slots: Box<[Slot]>,
    ratio: f64,
    /// `min_per_second` × window seconds.
    floor: f64,
}

impl Budget {
    pub fn new(b: &weft_api::resilience::Budget) -> Self {
        let secs = b.window.0.as_secs().max(1);
        let slots = (0..secs)
            .map(|_| Slot { second: AtomicU64::new(0), requests: AtomicU64::new(0), retries: AtomicU64::new(0) })
            .collect();
        Budget { start: Instant::now(), slots, ratio: b.ratio, floor: f64::from(b.min_per_second) * secs as f64 }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_secs() + 1
    }

    /// The slot of second `now`, zeroed if it last counted an older second.
    fn slot(&self, now: u64) -> &Slot {
        let slot = &self.slots[(now % self.slots.len() as u64) as usize];
        let seen = slot.second.load(Ordering::Acquire);
        if seen != now && slot.second.compare_exchange(seen, now, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            slot.requests.store(0, Ordering::Release);
            slot.retries.store(0, Ordering::Release);
        }
        slot
    }

    /// Counts a request (its first try).
    pub fn deposit(&self) {
        self.slot(self.now()).requests.fetch_add(1, Ordering::AcqRel);
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn withdraw(&self) -> bool {
        let now = self.now();
        let current = self.slot(now);
        let oldest = now.saturating_sub(self.slots.len() as u64 - 1);
        let (mut requests, mut retries) = (0u64, 0u64);
        for s in self.slots.iter() {
            let second = s.second.load(Ordering::Acquire);
            if second >= oldest && second <= now && second != 0 {
                requests += s.requests.load(Ordering::Acquire);
                retries += s.retries.load(Ordering::Acquire);
            }
        }
        if (retries as f64) < self.ratio * requests as f64 + self.floor {
            current.retries.fetch_add(1, Ordering::AcqRel);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_ratio_plus_floor() {
        let b = Budget::new(&weft_api::resilience::Budget {
            ratio: 0.2,
            min_per_second: 1,
            window: weft_api::Duration::from_secs(10),
        });
        let mut granted = 0;
        for _ in 0..1000 {
            b.deposit();
            if b.withdraw() {
                granted += 1;
            }
        }
        // 20 % of 1000 plus 1/s over 10 s (the test runs within one window).
        assert!((200..=210).contains(&granted), "{granted}");
        let none = Budget::new(&weft_api::resilience::Budget {
            ratio: 0.0,
            min_per_second: 0,
            window: weft_api::Duration::from_secs(1),
        });
        none.deposit();
        assert!(!none.withdraw());
    }
}
