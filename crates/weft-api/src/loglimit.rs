//! Rate limits for log lines that a remote party can trigger at will (a port scan, a client
//! retrying a bad certificate, a proxy reconnecting with a config the control plane refuses, an
//! app that is down): at most one line per kind and source per interval. The next line of that
//! kind and source says how many were left out (`suppressed=N`), and [`flush_limited!`](crate::flush_limited) (called
//! every interval by the owner's own task) writes one line for counts no later line would report,
//! so no count is lost. The proxy and the control plane share this; each names its own kinds.
//! The lines are written by macros ([`warn_limited!`](crate::warn_limited),
//! [`flush_limited!`](crate::flush_limited)), so they carry the caller's target.
//!
//! ```text
//! event ─► (kind, source IP) seen within every? ── no ─► warn!(…, suppressed = n)
//!                                               └─ yes ─► n += 1 ─► flush: "n more … not logged"
//! ```

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One line per kind and source per this, unless the owner picks another interval.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(10);
/// Sources tracked at once: past this, events of sources not tracked share one entry (source
/// `0.0.0.0`), so a scan from many addresses cannot grow the table.
pub const MAX_SOURCES: usize = 4096;

/// What went wrong, as the `kind` field of a log line. Each crate has its own enum of kinds.
pub trait LogKind: Copy + Eq + Hash {
    /// The `kind` field's value (and the name the flush line uses).
    fn as_str(self) -> &'static str;
    /// Lines of this kind are written at info, not warn (connections anyone can open, such as a
    /// scanner's): the flush line of its count is too.
    fn quiet(self) -> bool {
        false
    }
}

struct Entry {
    last: Instant,
    suppressed: u64,
}

/// The rate limits of one process part (a proxy, a control plane).
pub struct LogLimits<K> {
    every: Duration,
    state: Mutex<HashMap<(K, IpAddr), Entry>>,
}

impl<K: LogKind> Default for LogLimits<K> {
    fn default() -> Self {
        LogLimits::new(DEFAULT_EVERY)
    }
}

impl<K: LogKind> LogLimits<K> {
    pub fn new(every: Duration) -> Self {
        LogLimits { every, state: Mutex::default() }
    }

    /// The interval: one line per kind and source per this.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// Whether a line of `kind` from `src` may be written at `now`: `Some(n)`, with `n` the
    /// lines left out since the last one; `None` (and counted) within `every` of the last.
    pub fn check(&self, kind: K, src: IpAddr, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = (kind, src);
        if !state.contains_key(&key) && state.len() >= MAX_SOURCES {
            let every = self.every;
            state.retain(|_, e| e.suppressed > 0 || now.saturating_duration_since(e.last) < every);
            if state.len() >= MAX_SOURCES {
                key = (kind, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            }
        }
        match state.get_mut(&key) {
            Some(e) if now.saturating_duration_since(e.last) < self.every => {
                e.suppressed += 1;
                None
            }
            Some(e) => {
                e.last = now;
                Some(std::mem::take(&mut e.suppressed))
            }
            None => {
                state.insert(key, Entry { last: now, suppressed: 0 });
                Some(0)
            }
        }
    }

    /// The counts left out more than `every` ago that no line has reported yet, taken (and
    /// entries with nothing to report that old, dropped).
    pub fn take_due(&self, now: Instant) -> Vec<(K, IpAddr, u64)> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut due = vec![];
        state.retain(|&(kind, src), e| {
            if now.saturating_duration_since(e.last) < self.every {
                return true;
            }
            if e.suppressed > 0 {
                due.push((kind, src, e.suppressed));
            }
            false
        });
        due
    }
}

/// Writes one line per count [`LogLimits::take_due`] returns for `$limits` (a [`LogLimits`]),
/// as of now: `N more <kind> lines from <src> were not logged`, at warn (info for a
/// [`LogKind::quiet`] kind). A macro so the lines carry the caller's target (`weft_proxy::…`,
/// `weft_control::…`), which `RUST_LOG` filters by. The owner calls it every interval.
#[macro_export]
macro_rules! flush_limited {
    ($limits:expr) => {{
        let limits = &$limits;
        let every = limits.every();
        for (kind, src, n) in limits.take_due(::std::time::Instant::now()) {
            let k = $crate::loglimit::LogKind::as_str(kind);
            if $crate::loglimit::LogKind::quiet(kind) {
                $crate::loglimit::__tracing::info!(kind = k, %src, suppressed = n,
                    "{n} more {k} lines from {src} were not logged (at most one per {every:?} per source)");
            } else {
                $crate::loglimit::__tracing::warn!(kind = k, %src, suppressed = n,
                    "{n} more {k} lines from {src} were not logged (at most one per {every:?} per source)");
            }
        }
    }};
}

/// Writes `$($line)*` at warn unless the rate limit of `$kind` from `$src` in `$limits` (a
/// [`LogLimits`]) holds it back; the line carries `kind` and `suppressed` (how many were left out
/// before it).
#[macro_export]
macro_rules! warn_limited {
    ($limits:expr, $kind:expr, $src:expr, $($line:tt)*) => {{
        let kind = $kind;
        if let Some(suppressed) = $limits.check(kind, $src, ::std::time::Instant::now()) {
            $crate::loglimit::__tracing::warn!(kind = $crate::loglimit::LogKind::as_str(kind), suppressed, $($line)*);
        }
    }};
}

#[doc(hidden)]
pub use tracing as __tracing;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    enum Kind {
        Handshake,
        HeaderRead,
    }
    impl LogKind for Kind {
        fn as_str(self) -> &'static str {
            match self {
                Kind::Handshake => "handshake",
                Kind::HeaderRead => "header-read",
            }
        }
    }

    #[test]
    fn one_line_per_kind_and_source_per_interval_and_counts_are_kept() {
        let limits = LogLimits::new(Duration::from_secs(10));
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let t0 = Instant::now();
        assert_eq!(limits.check(Kind::Handshake, a, t0), Some(0));
        for i in 1..=199 {
            assert_eq!(limits.check(Kind::Handshake, a, t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(limits.check(Kind::Handshake, b, t0), Some(0), "another source has its own limit");
        assert_eq!(limits.check(Kind::HeaderRead, a, t0), Some(0), "another kind has its own limit");
        assert!(limits.take_due(t0 + Duration::from_secs(5)).is_empty(), "nothing is due within the interval");
        let due = limits.take_due(t0 + Duration::from_secs(10));
        assert_eq!(due, vec![(Kind::Handshake, a, 199)], "the scan's count is reported once");
        assert!(limits.take_due(t0 + Duration::from_secs(30)).is_empty());
        assert_eq!(limits.check(Kind::Handshake, a, t0 + Duration::from_secs(31)), Some(0));
        assert_eq!(limits.check(Kind::Handshake, a, t0 + Duration::from_secs(32)), None);
        assert_eq!(limits.check(Kind::Handshake, a, t0 + Duration::from_secs(41)), Some(1), "the next line counts");
    }

    #[test]
    fn many_sources_share_one_entry_past_the_table_size() {
        let limits = LogLimits::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let written = (0..MAX_SOURCES as u32 + 1000)
            .filter(|i| limits.check(Kind::Handshake, IpAddr::from((i + 1).to_be_bytes()), t0).is_some())
            .count();
        assert_eq!(written, MAX_SOURCES + 1, "one line each for the tracked sources, one for the rest");
        assert!(limits.state.lock().unwrap().len() <= MAX_SOURCES + 1);
    }
}
