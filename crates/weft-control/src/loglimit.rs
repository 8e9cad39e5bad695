//! Rate limits for log lines that a remote party can trigger at will (a port scan, a client
//! retrying with a bad certificate): at most one line of a kind per interval. The next line that
//! is written carries how many were left out since the previous one, so the count is never lost.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the control plane's refusal lines may be written, per kind.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(10);

/// One kind of log line, limited to one per `every`.
pub struct LogLimit {
    every: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    pub fn new(every: Duration) -> Self {
        LogLimit { every, state: Mutex::default() }
    }

    /// Whether a line may be written at `now`: `Some(n)`, with `n` the lines left out since the
    /// last one written; `None` (and counted) when the last one was written less than `every` ago.
    pub fn check(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match s.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                s.suppressed += 1;
                None
            }
            _ => {
                s.last = Some(now);
                Some(std::mem::take(&mut s.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_next_counts_the_rest() {
        let limit = LogLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.check(t0), Some(0), "the first line is written");
        for i in 1..=500 {
            assert_eq!(limit.check(t0 + Duration::from_millis(i)), None, "a burst is left out");
        }
        assert_eq!(limit.check(t0 + Duration::from_secs(10)), Some(500), "the next line counts what was left out");
        assert_eq!(limit.check(t0 + Duration::from_secs(11)), None);
        assert_eq!(limit.check(t0 + Duration::from_secs(25)), Some(1));
        assert_eq!(limit.check(t0 + Duration::from_secs(60)), Some(0));
    }
}
