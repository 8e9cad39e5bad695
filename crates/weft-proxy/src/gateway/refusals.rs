//! The gateway's refusal log: one line per reason per [`EVERY`], naming the SNI, so an operator
//! sees why a caller is refused without a flood when a caller retries in a loop. The lines held
//! back are counted and the count is given on the next line for that reason. Every refusal is
//! still counted in `weft_protocol_errors_total{direction="gateway",reason}`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one log line per refusal reason in this period.
pub const EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct RefusalLog {
    /// Per reason: when a line was last written, and how many refusals were not logged since.
    slots: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl RefusalLog {
    /// Whether a refusal for `reason` at `now` gets a log line: `Some(n)` with the number of
    /// refusals for that reason held back since the last line, or `None` (counted, not logged).
    pub fn admit(&self, reason: &'static str, now: Instant) -> Option<u64> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match slots.get_mut(reason) {
            Some((at, held)) if now.saturating_duration_since(*at) < EVERY => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let n = std::mem::take(held);
                *at = now;
                Some(n)
            }
            None => {
                slots.insert(reason, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_reason_per_period_with_the_count_held_back() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        assert_eq!(log.admit("wrong-cluster", t0), Some(0), "the first refusal is logged");
        for i in 1..=5 {
            assert_eq!(log.admit("wrong-cluster", t0 + Duration::from_secs(i)), None, "held back");
        }
        assert_eq!(log.admit("unknown-service", t0 + Duration::from_secs(2)), Some(0), "reasons are apart");
        assert_eq!(log.admit("wrong-cluster", t0 + EVERY), Some(5), "the next line says how many were held");
        assert_eq!(log.admit("wrong-cluster", t0 + EVERY + Duration::from_secs(1)), None);
        assert_eq!(log.admit("wrong-cluster", t0 + EVERY * 3), Some(1));
    }
}
