//! Client-side outlier detection: each endpoint (local or in another cluster) counts its
//! consecutive connect failures, consecutive 5xx and consecutive gateway errors (502/503/504,
//! or a request that failed after it was sent); and, when success-rate detection is on, its
//! requests and successes per `interval`, compared across the service's endpoints at the end of
//! each (an endpoint below `mean − stdevFactor/1000 × stdev` is an outlier). At a threshold it is ejected from load
//! balancing for `base_ejection_time × n` (n: its ejections in a row, capped at
//! `max_ejection_time`), unless that would eject more than `max_ejection_percent` of the service.
//! It comes back by itself when its time is up: ejection is a deadline, not a state to undo.
//!
//! ```text
//! response / connect ─► Health::record ─► threshold? ─► max % ok? ─► until = now + base × n
//!                                                                      └─► ServiceHealth.max_until
//! pick ─► now ≥ ServiceHealth.max_until? ── yes ─► nothing ejected: the steady pick (balance)
//!                                        └─ no ──► skip endpoints with until > now
//! ```
//!
//! State outlives routing tables: a [`Store`] hands each build of the routes the same [`Health`]
//! for the same endpoint, so a discovery update does not forgive an ejected endpoint. All of it
//! is atomics: recording a success is two relaxed loads.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use weft_api::traffic::OutlierDetection;

/// What a request or connection to an endpoint came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The mTLS connection was made (TCP, upgrades); says nothing about responses.
    Connected,
    /// Refused, timed out, TLS failed or wrong identity; or a pooled connection whose peer
    /// stopped answering (504 `peer-unresponsive`).
    ConnectFailure,
    /// A response (a 5xx counts as a failure; anything else as a success).
    Status(u16),
    /// The request failed after it was sent (502 `upstream`): a gateway error, counted as 5xx.
    GatewayError,
}

/// Why an endpoint was ejected (the `reason` label).
pub const REASON_CONNECT: &str = "consecutive-connect-failures";
pub const REASON_5XX: &str = "consecutive-5xx";
pub const REASON_GATEWAY: &str = "consecutive-gateway-errors";
pub const REASON_SUCCESS_RATE: &str = "success-rate";

/// An ejection just made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ejection {
    pub reason: &'static str,
    pub duration: Duration,
    /// The endpoint's ejections in a row, this one included.
    pub times: u32,
}

/// Milliseconds since the store's epoch; 0 never occurs as a time (it means "never ejected").
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    pub fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }
}

/// One endpoint's counters and ejection deadline.
#[derive(Debug, Default)]
pub struct Health {
    connect_failures: AtomicU32,
    errors_5xx: AtomicU32,
    /// Ejected while `now < until` (ms on the [`Clock`]); 0: never ejected.
    until: AtomicU64,
    /// Ejections in a row (the multiplier of the next ejection's length).
    times: AtomicU32,
    gateway_errors: AtomicU32,
    /// Requests and successes in the current success-rate interval (counted only when on).
    sr_total: AtomicU32,
    sr_ok: AtomicU32,
    /// Requests in flight and latency, for the load-aware balancers.
    pub load: crate::balance::load::Load,
}

impl Health {
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.until.load(Relaxed) > now_ms
    }

    /// Milliseconds of ejection left at `now_ms`; `None` when not ejected.
    pub fn ejected_for(&self, now_ms: u64) -> Option<u64> {
        let until = self.until.load(Relaxed);
        (until > now_ms).then(|| until - now_ms)
    }

    /// Counts `outcome`; `Some(reason)` when a threshold is reached now.
    pub fn record(&self, outcome: Outcome, s: &Settings) -> Option<&'static str> {
        let bump = |c: &AtomicU32, threshold: u32, reason| {
            let n = c.fetch_add(1, Relaxed).saturating_add(1);
            (threshold > 0 && n >= threshold).then_some(reason)
        };
        let reset = |c: &AtomicU32| {
            if c.load(Relaxed) != 0 {
                c.store(0, Relaxed);
            }
        };
        if s.success_rate.is_some() {
            let failed = match outcome {
                Outcome::Status(st) => Some(st >= 500),
                Outcome::GatewayError => Some(true),
                _ => None,
            };
            if let Some(failed) = failed {
                self.sr_total.fetch_add(1, Relaxed);
                if !failed {
                    self.sr_ok.fetch_add(1, Relaxed);
                }
            }
        }
        let gateway = matches!(outcome, Outcome::Status(502..=504) | Outcome::GatewayError);
        match outcome {
            Outcome::Connected => {
                reset(&self.connect_failures);
                None
            }
            Outcome::ConnectFailure => bump(&self.connect_failures, s.connect_failures, REASON_CONNECT),
            Outcome::Status(status) if status >= 500 => {
                reset(&self.connect_failures);
                let a = bump(&self.errors_5xx, s.errors_5xx, REASON_5XX);
                let b = if gateway {
                    bump(&self.gateway_errors, s.gateway_errors, REASON_GATEWAY)
                } else {
                    reset(&self.gateway_errors);
                    None
                };
                a.or(b)
            }
            Outcome::GatewayError => {
                let a = bump(&self.errors_5xx, s.errors_5xx, REASON_5XX);
                bump(&self.gateway_errors, s.gateway_errors, REASON_GATEWAY).or(a)
            }
            Outcome::Status(_) => {
                reset(&self.connect_failures);
                reset(&self.errors_5xx);
                reset(&self.gateway_errors);
                None
            }
        }
    }

    /// Ejects the endpoint from `now_ms` (the caller checked the service's max percent). The
    /// multiplier drops by one for each `base_ejection_time` the endpoint stayed in since its
    /// last ejection ended (Envoy's rule), then counts this one. `None`: already ejected.
    pub fn eject(&self, now_ms: u64, reason: &'static str, s: &Settings) -> Option<(u64, Ejection)> {
        let last = self.until.load(Relaxed);
        if last > now_ms {
            return None;
        }
        let rested = if last == 0 { u64::MAX } else { (now_ms - last) / s.base_ms.max(1) };
        let before = u64::from(self.times.load(Relaxed)).saturating_sub(rested);
        let times = before + 1;
        let ms = s.base_ms.saturating_mul(times).min(s.max_ms.max(s.base_ms));
        let until = now_ms.saturating_add(ms);
        // Two failures racing: one ejects.
        self.until.compare_exchange(last, until, Relaxed, Relaxed).ok()?;
        let times = u32::try_from(times).unwrap_or(u32::MAX);
        self.times.store(times, Relaxed);
        self.connect_failures.store(0, Relaxed);
        self.errors_5xx.store(0, Relaxed);
        self.gateway_errors.store(0, Relaxed);
        Some((until, Ejection { reason, duration: Duration::from_millis(ms), times }))
    }

    /// This interval's (requests, successes), and a new interval begun.
    pub fn take_rate(&self) -> (u32, u32) {
        (self.sr_total.swap(0, Relaxed), self.sr_ok.swap(0, Relaxed))
    }
}

/// Which of `rates` (an endpoint's requests and successes in one interval) are success-rate
/// outliers: among those with at least `request_volume` requests, when there are at least
/// `minimum_hosts` of them, those below `mean − stdev_factor/1000 × stdev` (Envoy's rule).
pub fn success_rate_outliers(rates: &[(u32, u32)], sr: &weft_api::traffic::SuccessRate) -> Vec<usize> {
    let counted: Vec<(usize, f64)> = rates
        .iter()
        .enumerate()
        .filter(|(_, (total, _))| *total >= sr.request_volume.max(1))
        .map(|(i, (total, ok))| (i, f64::from(*ok) / f64::from(*total)))
        .collect();
    if counted.len() < sr.minimum_hosts.max(1) as usize {
        return vec![];
    }
    let n = counted.len() as f64;
    let mean = counted.iter().map(|c| c.1).sum::<f64>() / n;
    let stdev = (counted.iter().map(|c| (c.1 - mean).powi(2)).sum::<f64>() / n).sqrt();
    let threshold = mean - f64::from(sr.stdev_factor) / 1000.0 * stdev;
    counted.into_iter().filter(|c| c.1 < threshold).map(|c| c.0).collect()
}

/// Per service: the latest deadline of any of its ejections, so a pick knows in one load that
/// nothing is ejected.
#[derive(Debug, Default)]
pub struct ServiceHealth {
    pub max_until: AtomicU64,
    /// When a connection to one of its endpoints last failed or broke (ms on the [`Clock`]; 0:
    /// never): for [`REPLAY_WINDOW_MS`] after it, requests keep a copy of their head so one that
    /// meets a dead pooled connection can go to another endpoint.
    pub last_broken: AtomicU64,
    /// When the next success-rate evaluation is due (ms on the [`Clock`]; 0: not started).
    pub next_eval: AtomicU64,
    /// Connections, pending requests, requests and retries in use (circuit breaking).
    pub limits: crate::balance::limits::Counters,
}

/// How long after a connection failure in a service its body-less idempotent requests can be
/// replayed (see `outbound::forward`). Outside it, nothing is copied: the common path stays as it
/// was.
pub const REPLAY_WINDOW_MS: u64 = 10_000;

/// [`OutlierDetection`] in the units the data path uses.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub connect_failures: u32,
    pub errors_5xx: u32,
    pub base_ms: u64,
    pub max_ms: u64,
    pub max_percent: u32,
    pub gateway_errors: u32,
    pub interval_ms: u64,
    pub success_rate: Option<weft_api::traffic::SuccessRate>,
}

impl From<&OutlierDetection> for Settings {
    fn from(o: &OutlierDetection) -> Self {
        let ms = |d: weft_api::Duration| std::time::Duration::from(d).as_millis() as u64;
        Settings {
            connect_failures: o.consecutive_connect_failures,
            errors_5xx: o.consecutive_5xx,
            base_ms: ms(o.base_ejection_time),
            max_ms: ms(o.max_ejection_time),
            max_percent: o.max_ejection_percent,
            gateway_errors: o.consecutive_gateway_errors,
            interval_ms: ms(o.interval).max(1),
            success_rate: o.success_rate,
        }
    }
}

impl Settings {
    /// Whether one more ejection keeps a service of `total` endpoints, `ejected` of them out now,
    /// within the max percent. One is always allowed when the percent is above 0 (as Envoy does),
    /// so a small service can still lose its one bad endpoint.
    pub fn may_eject(&self, ejected: usize, total: usize) -> bool {
        if self.max_percent == 0 {
            return false;
        }
        ejected == 0 || (ejected + 1) * 100 <= self.max_percent as usize * total
    }
}

type EndpointKey = (String, SocketAddr, SocketAddr);

/// Health that outlives routing tables, by service and by endpoint (service, address, proxy).
#[derive(Debug)]
pub struct Store {
    pub clock: Clock,
    services: Mutex<HashMap<String, Weak<ServiceHealth>>>,
    endpoints: Mutex<HashMap<EndpointKey, Weak<Health>>>,
}

impl Default for Store {
    fn default() -> Self {
        Store { clock: Clock { epoch: Instant::now() }, services: Mutex::default(), endpoints: Mutex::default() }
    }
}

impl Store {
    pub fn service(&self, key: &str) -> Arc<ServiceHealth> {
        let mut m = self.services.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = m.get(key).and_then(Weak::upgrade) {
            return h;
        }
        m.retain(|_, w| w.strong_count() > 0);
        let h = Arc::new(ServiceHealth::default());
        m.insert(key.to_string(), Arc::downgrade(&h));
        h
    }

    pub fn endpoint(&self, service: &str, address: SocketAddr, proxy: SocketAddr) -> Arc<Health> {
        let mut m = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let key = (service.to_string(), address, proxy);
        if let Some(h) = m.get(&key).and_then(Weak::upgrade) {
            return h;
        }
        if m.len() >= 64 && m.len().is_power_of_two() {
            m.retain(|_, w| w.strong_count() > 0);
        }
        let h = Arc::new(Health::default());
        m.insert(key, Arc::downgrade(&h));
        h
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EjectionLabels {
    pub service: crate::metrics::Name,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    pub service: crate::metrics::Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OverflowLabels {
    pub service: crate::metrics::Name,
    pub limit: &'static str,
}

/// `weft_outlier_ejections_total{service,reason}`, `weft_outlier_ejected{service}` and
/// `weft_overflow_total{service,limit}` (circuit breaking, see [`crate::balance::limits`]).
#[derive(Clone, Default)]
pub struct Metrics {
    pub ejections: Family<EjectionLabels, Counter>,
    pub overflows: Family<OverflowLabels, Counter>,
    /// Set when scraped (see [`Metrics::refresh`]): ejections end by time, with no event.
    pub ejected: Family<ServiceLabel, Gauge>,
}

impl Metrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = Metrics::default();
        reg.register(
            "weft_overflow",
            "Requests and connections refused at a BackendPolicy connection limit, by service and limit",
            m.overflows.clone(),
        );
        let r = reg.sub_registry_with_prefix("weft_outlier");
        r.register("ejections", "Endpoints ejected from load balancing, by service and reason", m.ejections.clone());
        r.register("ejected", "Endpoints ejected from load balancing now, by service", m.ejected.clone());
        m
    }

    /// Sets the gauge from the routing table in force.
    pub fn refresh(&self, routes: &crate::Routes, clock: &Clock) {
        let now = clock.ms(Instant::now());
        self.ejected.clear();
        for s in routes.services() {
            let n = s.endpoints.iter().filter(|e| e.health.is_ejected(now)).count();
            if n > 0 {
                self.ejected.get_or_create(&ServiceLabel { service: s.label.clone() }).set(n as i64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            connect_failures: 3,
            errors_5xx: 2,
            base_ms: 1000,
            max_ms: 2500,
            max_percent: 50,
            gateway_errors: 0,
            interval_ms: 10_000,
            success_rate: None,
        }
    }

    #[test]
    fn thresholds_count_consecutive_failures_only() {
        let (h, s) = (Health::default(), settings());
        assert_eq!(h.record(Outcome::ConnectFailure, &s), None);
        assert_eq!(h.record(Outcome::ConnectFailure, &s), None);
        assert_eq!(h.record(Outcome::Connected, &s), None, "a connect resets the connect count");
        assert_eq!(h.record(Outcome::ConnectFailure, &s), None);
        assert_eq!(h.record(Outcome::ConnectFailure, &s), None);
        assert_eq!(h.record(Outcome::ConnectFailure, &s), Some(REASON_CONNECT));
        assert_eq!(h.record(Outcome::Status(503), &s), None);
        assert_eq!(h.record(Outcome::Status(200), &s), None, "a success resets the 5xx count");
        assert_eq!(h.record(Outcome::Status(500), &s), None);
        assert_eq!(h.record(Outcome::GatewayError, &s), Some(REASON_5XX));
        let off = Settings { errors_5xx: 0, ..s };
        assert!((0..10).all(|_| h.record(Outcome::Status(500), &off).is_none()), "0 turns a detector off");
    }

    #[test]
    fn ejection_grows_with_each_one_is_capped_and_decays() {
        let (h, s) = (Health::default(), settings());
        let (until, e) = h.eject(10, REASON_5XX, &s).unwrap();
        assert_eq!((until, e.duration, e.times), (1010, Duration::from_millis(1000), 1));
        assert!(h.is_ejected(1009) && !h.is_ejected(1010), "back when its time is up");
        assert!(h.eject(500, REASON_5XX, &s).is_none(), "already ejected");
        let (_, e) = h.eject(1010, REASON_5XX, &s).unwrap();
        assert_eq!((e.duration, e.times), (Duration::from_millis(2000), 2), "second in a row: twice as long");
        let (until, e) = h.eject(3010, REASON_5XX, &s).unwrap();
        assert_eq!((e.duration, e.times), (Duration::from_millis(2500), 3), "capped at max_ejection_time");
        // Two base times in: the multiplier drops by two before counting this one.
        let (_, e) = h.eject(until + 2000, REASON_5XX, &s).unwrap();
        assert_eq!(e.times, 2);
    }

    #[test]
    fn max_percent_allows_at_least_one() {
        let s = settings();
        assert!(s.may_eject(0, 1), "one is always allowed");
        assert!(s.may_eject(1, 4) && !s.may_eject(2, 4), "50% of 4 is 2");
        assert!(!Settings { max_percent: 0, ..s }.may_eject(0, 4));
        let all = Settings { max_percent: 100, ..s };
        assert!(all.may_eject(3, 4) && !all.may_eject(4, 4));
    }

    #[test]
    fn gateway_errors_count_502_503_504_and_failed_sends_only() {
        let h = Health::default();
        let s = Settings { errors_5xx: 0, gateway_errors: 3, ..settings() };
        assert_eq!(h.record(Outcome::Status(502), &s), None);
        assert_eq!(h.record(Outcome::Status(500), &s), None, "a 500 is no gateway error: resets the count");
        assert_eq!(h.record(Outcome::Status(503), &s), None);
        assert_eq!(h.record(Outcome::GatewayError, &s), None);
        assert_eq!(h.record(Outcome::Status(504), &s), Some(REASON_GATEWAY), "the third in a row");
        assert_eq!(h.record(Outcome::Status(200), &s), None);
        assert_eq!(h.record(Outcome::Status(502), &s), None, "a success started the count again");
    }

    #[test]
    fn success_rate_outliers_are_below_mean_minus_k_stdev() {
        let sr = weft_api::traffic::SuccessRate { minimum_hosts: 3, request_volume: 10, stdev_factor: 1000 };
        // Four at 100% and one at 50%: mean 0.9, stdev 0.2, threshold 0.7.
        let rates = [(100, 100), (100, 100), (100, 100), (100, 100), (100, 50)];
        assert_eq!(success_rate_outliers(&rates, &sr), vec![4]);
        // The same, but the bad one under the request volume: not counted, nothing ejected.
        let rates = [(100, 100), (100, 100), (100, 100), (100, 100), (9, 0)];
        assert!(success_rate_outliers(&rates, &sr).is_empty());
        // Too few endpoints with enough requests to compare.
        assert!(success_rate_outliers(&[(100, 100), (100, 0)], &sr).is_empty());
        // All equally bad: no outlier (it is the service, not one endpoint).
        assert!(success_rate_outliers(&[(100, 10); 5], &sr).is_empty());
    }
}
