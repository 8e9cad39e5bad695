//! Warnings that a remote party can trigger at will (a port scan, a client retrying a bad
//! certificate, an app that is down) are rate limited: at most one line per kind and source per
//! [`EVERY`]. The next line of that kind and source says how many were left out
//! (`suppressed=N`), and [`LogLimits::flush`] (every [`EVERY`], from the proxy's own task) writes
//! one line for counts no later line would report, so no count is lost.
//!
//! ```text
//! event ─► (kind, source IP) seen within EVERY? ── no ─► warn!(…, suppressed = n)
//!                                               └─ yes ─► n += 1 ─► flush: "n more … not logged"
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One line per kind and source per this.
pub const EVERY: Duration = Duration::from_secs(10);
/// Sources tracked at once: past this, events of sources not tracked share one entry (source
/// `0.0.0.0`), so a scan from many addresses cannot grow the table.
const MAX_SOURCES: usize = 4096;

/// What went wrong, as the `kind` of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An inbound TLS handshake that failed or timed out.
    Handshake,
    /// A request the proxy answered 502.
    BadGateway,
    /// The server sidecar could not connect to its app.
    AppRefused,
    /// A client that did not send its request head (HTTP/1) or preface (HTTP/2) within
    /// `timeouts.header_read`.
    HeaderRead,
    /// A listener stopped accepting at `limits.max_connections`.
    ConnectionLimit,
    /// The gateway refused a connection, for this reason (its metric label).
    GatewayRefusal(&'static str),
    /// Outlier detection ejected an endpoint (source: the endpoint's proxy host).
    Ejection,
    /// Plaintext refused by an inbound port whose mTLS mode is STRICT.
    Plaintext,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Handshake => "handshake",
            Kind::BadGateway => "bad-gateway",
            Kind::AppRefused => "app-refused",
            Kind::HeaderRead => "header-read-timeout",
            Kind::ConnectionLimit => "connection-limit",
            Kind::GatewayRefusal(reason) => reason,
            Kind::Ejection => "ejection",
            Kind::Plaintext => "plaintext",
        }
    }
}

struct Entry {
    last: Instant,
    suppressed: u64,
}

/// The rate limits of one proxy.
pub struct LogLimits {
    every: Duration,
    state: Mutex<HashMap<(Kind, IpAddr), Entry>>,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits::new(EVERY)
    }
}

impl LogLimits {
    pub fn new(every: Duration) -> Self {
        LogLimits { every, state: Mutex::default() }
    }

    /// Whether a line of `kind` from `src` may be written at `now`: `Some(n)`, with `n` the
    /// lines left out since the last one; `None` (and counted) within `every` of the last.
    pub fn check(&self, kind: Kind, src: IpAddr, now: Instant) -> Option<u64> {
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
    pub fn take_due(&self, now: Instant) -> Vec<(Kind, IpAddr, u64)> {
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

    /// Writes one line per count [`LogLimits::take_due`] returns.
    pub fn flush(&self, now: Instant) {
        for (kind, src, n) in self.take_due(now) {
            tracing::warn!(
                kind = kind.as_str(),
                %src,
                suppressed = n,
                "{n} more {} lines from {src} were not logged (at most one per {:?} per source)",
                kind.as_str(),
                self.every
            );
        }
    }
}

/// Writes `$($line)*` at warn unless the rate limit of `$kind` from `$src` holds it back; the
/// line carries `kind` and `suppressed` (how many were left out before it).
macro_rules! warn_limited {
    ($limits:expr, $kind:expr, $src:expr, $($line:tt)*) => {{
        let kind: $crate::loglimit::Kind = $kind;
        if let Some(suppressed) = $limits.check(kind, $src, std::time::Instant::now()) {
            tracing::warn!(kind = kind.as_str(), suppressed, $($line)*);
        }
    }};
}
pub(crate) use warn_limited;

#[cfg(test)]
mod tests {
    use super::*;

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
