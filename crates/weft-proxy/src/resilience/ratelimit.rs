//! Local rate limiting: a token bucket per target (or per caller identity) at the target's own
//! proxies. `max_tokens` requests at once; `tokens_per_fill` more every `fill_interval`, filled
//! lazily when a request comes. A request finding the bucket empty is answered 429.

use crate::httputil::{self as h, Body};
use http::{HeaderValue, Response, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use weft_api::resilience::{RateLimit, MAX_RATE_LIMIT_CALLERS};

struct Bucket {
    tokens: u64,
    /// When the last fill was counted.
    filled: Instant,
}

pub struct Limiter {
    max: u64,
    per_fill: u64,
    interval: Duration,
    per_caller: bool,
    /// One bucket, or (per caller) the bucket shared by callers past [`MAX_RATE_LIMIT_CALLERS`].
    shared: Mutex<Bucket>,
    callers: Mutex<HashMap<Arc<str>, Bucket>>,
}

impl Bucket {
    fn full(max: u64, now: Instant) -> Self {
        Bucket { tokens: max, filled: now }
    }

    fn take(&mut self, l: &Limiter, now: Instant) -> bool {
        let fills = (now.saturating_duration_since(self.filled).as_nanos() / l.interval.as_nanos().max(1)) as u64;
        if fills > 0 {
            self.tokens = self.tokens.saturating_add(fills.saturating_mul(l.per_fill)).min(l.max);
            self.filled += l.interval * u32::try_from(fills).unwrap_or(u32::MAX);
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

impl Limiter {
    pub fn new(r: &RateLimit) -> Self {
        let now = Instant::now();
        let max = u64::from(r.max_tokens);
        Limiter {
            max,
            per_fill: u64::from(r.tokens_per_fill()),
            interval: r.fill_interval.into(),
            per_caller: r.per_caller,
            shared: Mutex::new(Bucket::full(max, now)),
            callers: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for a request from `caller` (its SPIFFE ID); `false`: refuse it.
    pub fn admit(&self, caller: &Arc<str>) -> bool {
        let now = Instant::now();
        if self.per_caller {
            let mut callers = self.callers.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(b) = callers.get_mut(caller) {
                return b.take(self, now);
            }
            if callers.len() < MAX_RATE_LIMIT_CALLERS {
                let mut b = Bucket::full(self.max, now);
                let ok = b.take(self, now);
                callers.insert(caller.clone(), b);
                return ok;
            }
        }
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).take(self, now)
    }
}

/// The 429 answer, with `retry-after` (seconds until the next fill, at least 1) and
/// `x-weft-error: rate-limited`.
pub fn too_many(l: &Limiter) -> Response<Body> {
    let mut resp = Response::new(h::full("weft-proxy: rate limited (ResiliencePolicy rateLimit); retry later\n"));
    *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let after = l.interval.as_secs().max(1);
    let headers = resp.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(h::PROXY_ERROR, HeaderValue::from_static("rate-limited"));
    if let Ok(v) = HeaderValue::from_str(&after.to_string()) {
        headers.insert(http::header::RETRY_AFTER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_empties_and_fills() {
        let l = Limiter::new(&RateLimit {
            max_tokens: 3,
            tokens_per_fill: Some(1),
            fill_interval: weft_api::Duration::from_secs(1),
            per_caller: true,
        });
        let (a, b): (Arc<str>, Arc<str>) = ("spiffe://t/ns/a/sa/a".into(), "spiffe://t/ns/b/sa/b".into());
        assert_eq!((0..5).filter(|_| l.admit(&a)).count(), 3);
        assert!(l.admit(&b), "another caller has its own bucket");
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(l.admit(&a));
        assert!(!l.admit(&a), "one fill of one token");
    }
}
