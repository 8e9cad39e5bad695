//! Request mirroring: a copy of the request's head goes to another service, fire and forget.
//!
//! The copy is sent from a task of its own; the caller's request never waits for it, and the
//! mirror's answer (or failure, or silence) is dropped. Copies in flight per mirror are bounded
//! ([`MAX_IN_FLIGHT`]): past that, copies are skipped (counted), so a mirror that hangs costs
//! at most that many tasks. Only requests without a body are copied (a streamed body would have
//! to be held for the mirror); others are skipped and counted in `weft_route_mirror_skipped`.

use super::{Rule, GOLDEN};
use crate::httputil::Body;
use http::Request;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weft_api::route::RequestMirror;

/// Most copies in flight to one mirror target of one rule.
pub const MAX_IN_FLIGHT: usize = 256;
/// A copy not answered by then is dropped.
pub const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Mirror {
    /// `name.namespace`.
    pub key: String,
    pub port: Option<u16>,
    /// Share of requests copied, per million.
    pub per_million: u32,
    next: AtomicU64,
    in_flight: Arc<AtomicUsize>,
}

impl Mirror {
    pub fn new(m: &RequestMirror, ns: &str) -> Mirror {
        Mirror {
            key: m.backend_ref.key(ns),
            port: m.backend_ref.port,
            per_million: m.per_million(),
            next: AtomicU64::new(0),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Whether this request is one of the share copied (evenly spread, no random numbers).
    pub(super) fn chosen(&self) -> bool {
        if self.per_million >= 1_000_000 {
            return true;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let x = ((u128::from(n.wrapping_mul(GOLDEN)) * 1_000_000) >> 64) as u32;
        x < self.per_million
    }

    /// Sends a copy of `req`'s head when this request is chosen.
    pub fn copy(&self, ctx: &Arc<crate::Ctx>, rule: &Rule, req: &Request<Body>) {
        if !self.chosen() {
            return;
        }
        let labels = super::RouteLabels { route: rule.route.clone(), rule: rule.rule.clone() };
        let skipped = || ctx.route_metrics.mirror_skipped.get_or_create(&labels).inc();
        if !http_body::Body::is_end_stream(req.body()) {
            skipped();
            return;
        }
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            skipped();
            return;
        }
        let mut copy = Request::new(crate::httputil::full(""));
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        let Some(service) = ctx.routes.load().service_by_key(&self.key).cloned() else {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            skipped();
            return;
        };
        ctx.route_metrics.mirrored.get_or_create(&labels).inc();
        let (ctx, in_flight, port) = (ctx.clone(), self.in_flight.clone(), self.port);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(MIRROR_TIMEOUT, crate::outbound::send_copy(&ctx, service, port, copy)).await;
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }
}
