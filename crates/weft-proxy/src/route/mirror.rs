//! Request mirroring: a copy of the request's head goes to another service, fire and forget.
//!
//! The copy is sent from a task of its own; the caller's request never waits for it, and the
//! mirror's answer (or failure, or silence) is dropped. Copies in flight per mirror are bounded
//! ([`MAX_IN_FLIGHT`]): past that, copies are skipped (counted), so a mirror that hangs costs
//! at most that many tasks. Only requests without a body are copied (a streamed body would have
//! to be held for the mirror); others are skipped and counted in `weft_route_mirror_skipped`.

use super::{Rule, GOLDEN};
use crate::httputil::Body;
use bytes::Bytes;
use http::Request;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weft_api::route::RequestMirror;

/// Largest request body copied: a body of a known length (`content-length`) up to this is read
/// before the request goes on, and sent to the backend and each mirror. Longer bodies, and bodies
/// of unknown length (chunked, most gRPC streams), are not copied (`mirror_skipped`).
pub const MAX_MIRRORED_BODY: u64 = 64 * 1024;

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

    /// Sends a copy of `req` (its head and `body`), from a task of its own.
    fn copy(&self, ctx: &Arc<crate::Ctx>, rule: &Rule, req: &Request<Body>, body: Bytes) {
        let labels = super::RouteLabels { route: rule.route.clone(), rule: rule.rule.clone() };
        let skipped = || ctx.route_metrics.mirror_skipped.get_or_create(&labels).inc();
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            skipped();
            return;
        }
        let mut copy = Request::new(crate::httputil::full(body));
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

/// The mirror copies of one request of `rule` (a rule with mirrors only): for each mirror that
/// takes this request, a copy from a task of its own. `Err`: the caller's body failed while it
/// was read for the copies (the answer to give).
pub async fn copies(
    ctx: &Arc<crate::Ctx>,
    rule: &Rule,
    req: &mut Request<Body>,
) -> Result<(), Box<http::Response<Body>>> {
    let chosen: Vec<&Mirror> = rule.filters.mirrors.iter().filter(|m| m.chosen()).collect();
    if chosen.is_empty() {
        return Ok(());
    }
    let body = if http_body::Body::is_end_stream(req.body()) {
        Bytes::new()
    } else {
        // The body's own size, else its `content-length` (HTTP/2 bodies do not say theirs).
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match http_body::Body::size_hint(req.body()).exact().or(declared) {
            Some(n) if n <= MAX_MIRRORED_BODY => {
                let taken = std::mem::replace(req.body_mut(), crate::httputil::full(""));
                match http_body_util::BodyExt::collect(taken).await {
                    Ok(c) => {
                        let bytes = c.to_bytes();
                        *req.body_mut() = crate::httputil::full(bytes.clone());
                        bytes
                    }
                    Err(e) => {
                        let text = format!("reading the request body failed: {e}");
                        return Err(Box::new(super::local(http::StatusCode::BAD_REQUEST, "bad-request", text)));
                    }
                }
            }
            _ => {
                let labels = super::RouteLabels { route: rule.route.clone(), rule: rule.rule.clone() };
                ctx.route_metrics.mirror_skipped.get_or_create(&labels).inc_by(chosen.len() as u64);
                return Ok(());
            }
        }
    };
    for m in chosen {
        m.copy(ctx, rule, req, body.clone());
    }
    Ok(())
}
