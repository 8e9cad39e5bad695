//! Request mirroring: a copy of the request goes to another service, fire and forget.
//!
//! The copy is sent from a task of its own; the caller's request never waits for it, and the
//! mirror's answer (or failure, or silence) is dropped. Copies in flight per mirror are bounded
//! ([`MAX_IN_FLIGHT`]): past that, copies are skipped (counted), so a mirror that hangs costs
//! at most that many tasks.
//!
//! A request body, of a known length or streamed (chunked, HTTP/2 without `content-length`), is
//! teed as it streams to the real backend ([`Tee`]): each chunk the real request reads is also
//! kept (a reference-counted `Bytes`, no copy of the data) up to [`MAX_MIRRORED_BODY`]; when the
//! body has ended, the copies leave with the whole body. The real request never waits for the
//! mirror: nothing is read ahead for it, and a chunk costs the tee one `Vec` push. Past the limit,
//! or when the caller's body fails or is not read to its end, the copies are abandoned (never a
//! truncated body) and counted in `weft_route_mirror_abandoned`.
//!
//! ```text
//! caller body ─► Tee ─► real backend (as it streams)
//!                 └─ chunks kept (≤ MAX_MIRRORED_BODY) ─► at the end: one task per mirror copy
//! ```

use super::{Rule, GOLDEN};
use crate::httputil::Body;
use bytes::Bytes;
use http::Request;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weft_api::route::RequestMirror;

/// Largest request body copied, whether its length is known or it is streamed. A body known to be
/// longer is not copied (`mirror_skipped`); a streamed one that grows past this is abandoned
/// (`mirror_abandoned`).
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

    /// Takes a slot for a copy to this mirror: `None` (and counted as skipped) when the mirror
    /// already has [`MAX_IN_FLIGHT`] copies in flight or its service is unknown.
    fn reserve(&self, ctx: &crate::Ctx, labels: &super::RouteLabels) -> Option<Target> {
        let skipped = || ctx.route_metrics.mirror_skipped.get_or_create(labels).inc();
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            skipped();
            return None;
        }
        let slot = Slot(self.in_flight.clone());
        let Some(service) = ctx.routes.load().service_by_key(&self.key).cloned() else {
            skipped();
            return None;
        };
        Some(Target { service, port: self.port, slot })
    }
}

/// One place in a mirror's count of copies in flight, given back on drop.
#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where one copy goes.
#[derive(Debug)]
struct Target {
    service: Arc<crate::routes::Service>,
    port: Option<u16>,
    slot: Slot,
}

/// The copies of one request, waiting for its body.
struct Copies {
    ctx: Arc<crate::Ctx>,
    labels: super::RouteLabels,
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
    targets: Vec<Target>,
}

impl Copies {
    /// Sends each copy with `body` (and the caller's `trailers`), from a task of its own.
    fn send(self, body: Bytes, trailers: Option<http::HeaderMap>) {
        let Copies { ctx, labels, method, uri, version, headers, targets } = self;
        for t in targets {
            // A body of a known length (sent with `content-length`), unless there are trailers.
            let copy_body = match &trailers {
                None => crate::httputil::full(body.clone()),
                Some(t) => {
                    let frames = [http_body::Frame::data(body.clone()), http_body::Frame::trailers(t.clone())];
                    let frames = futures_util::stream::iter(frames.map(Ok::<_, crate::httputil::BoxError>));
                    http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(frames))
                }
            };
            let mut copy = Request::new(copy_body);
            *copy.method_mut() = method.clone();
            *copy.uri_mut() = uri.clone();
            *copy.version_mut() = version;
            *copy.headers_mut() = headers.clone();
            ctx.route_metrics.mirrored.get_or_create(&labels).inc();
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let Target { service, port, slot } = t;
                let _ =
                    tokio::time::timeout(MIRROR_TIMEOUT, crate::outbound::send_copy(&ctx, service, port, copy)).await;
                drop(slot);
            });
        }
    }

    /// Gives up the copies (their slots go back), counted in `mirror_abandoned`.
    fn abandon(self) {
        let n = self.targets.len() as u64;
        self.ctx.route_metrics.mirror_abandoned.get_or_create(&self.labels).inc_by(n);
    }
}

/// The caller's body on its way to the real backend, its chunks kept for the mirror copies up to
/// [`MAX_MIRRORED_BODY`]; the copies leave when it ends (see the module's doc).
pub struct Tee {
    inner: Body,
    /// `None` once the copies have left or were abandoned.
    copies: Option<Copies>,
    chunks: Vec<Bytes>,
    len: u64,
    trailers: Option<http::HeaderMap>,
}

impl Tee {
    fn finish(&mut self) {
        if let Some(c) = self.copies.take() {
            let body = match self.chunks.len() {
                1 => self.chunks.pop().unwrap_or_default(),
                _ => Bytes::from(std::mem::take(&mut self.chunks).concat()),
            };
            c.send(body, self.trailers.take());
        }
    }

    fn abandon(&mut self) {
        self.chunks = Vec::new();
        if let Some(c) = self.copies.take() {
            c.abandon();
        }
    }
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = crate::httputil::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if this.copies.is_none() {
            return polled;
        }
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.len += data.len() as u64;
                    if this.len > MAX_MIRRORED_BODY {
                        this.abandon();
                        return polled;
                    }
                    if !data.is_empty() {
                        this.chunks.push(data.clone());
                    }
                } else if let Some(t) = frame.trailers_ref() {
                    this.trailers = Some(t.clone());
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(Some(Err(_))) => this.abandon(),
            Poll::Ready(None) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tee {
    /// The real request went without reading the body to its end (its backend failed, or
    /// answered early): the copies are abandoned, never sent with part of the body.
    fn drop(&mut self) {
        self.abandon();
    }
}

/// The mirror copies of one request of `rule` (a rule with mirrors only): for each mirror that
/// takes this request, a copy from a task of its own, sent at once for a request without a body,
/// else when the body has streamed through to the real backend (`req`'s body becomes a [`Tee`]).
/// A body known to be longer than [`MAX_MIRRORED_BODY`] is not copied.
pub async fn copies(
    ctx: &Arc<crate::Ctx>,
    rule: &Rule,
    req: &mut Request<Body>,
) -> Result<(), Box<http::Response<Body>>> {
    let chosen: Vec<&Mirror> = rule.filters.mirrors.iter().filter(|m| m.chosen()).collect();
    if chosen.is_empty() {
        return Ok(());
    }
    let labels = super::RouteLabels { route: rule.route.clone(), rule: rule.rule.clone() };
    let empty = http_body::Body::is_end_stream(req.body());
    if !empty {
        // The body's own size, else its `content-length` (HTTP/2 bodies do not say theirs).
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if http_body::Body::size_hint(req.body()).exact().or(declared).is_some_and(|n| n > MAX_MIRRORED_BODY) {
            ctx.route_metrics.mirror_skipped.get_or_create(&labels).inc_by(chosen.len() as u64);
            return Ok(());
        }
    }
    let targets: Vec<Target> = chosen.iter().filter_map(|m| m.reserve(ctx, &labels)).collect();
    if targets.is_empty() {
        return Ok(());
    }
    let copies = Copies {
        ctx: ctx.clone(),
        labels,
        method: req.method().clone(),
        uri: req.uri().clone(),
        version: req.version(),
        headers: req.headers().clone(),
        targets,
    };
    if empty {
        copies.send(Bytes::new(), None);
        return Ok(());
    }
    let inner = std::mem::replace(req.body_mut(), crate::httputil::full(""));
    let tee = Tee { inner, copies: Some(copies), chunks: Vec::new(), len: 0, trailers: None };
    *req.body_mut() = http_body_util::BodyExt::boxed(tee);
    Ok(())
}
