//! A request to a service with a policy, at the caller's proxy: fault, request timeout, tries
//! (each with its per-try and connect timeouts, through [`crate::outbound::forward_with`], which
//! still moves a request that could not be sent to another endpoint at once), retries on the
//! policy's conditions within its budget with jittered exponential backoff, and the idle timeout
//! of the response body.
//!
//! Only a request that can be sent again is retried: a method the policy allows (by default the
//! idempotent ones, RFC 9110 §9.2.2) and a body of at most `maxBodyBytes`. A body of known
//! length is buffered before the first try; one of unknown length (chunked, HTTP/2 and gRPC
//! streams) is sent as it comes while a copy is kept ([`Tee`]), so a streaming call is never held
//! back, and it can be sent again only if it had ended, within `maxBodyBytes`, when the failed
//! answer came. A larger body is streamed once, never retried.
//!
//! gRPC (gRFC A6): a gRPC call (`content-type: application/grpc...`, always POST) is retried on
//! the policy's `grpcStatusCodes` whatever `methods` says; its other conditions (5xx, reset...)
//! need POST in `methods`. The gRPC status counts only in a trailers-only response (`grpc-status`
//! in the response head, as Envoy and gRFC A6 read it): a call whose head came without one is
//! committed, its head forwarded at once, and a status in its trailers is never retried.

use super::budget::Budget;
use super::fault::Injected;
use super::Policy;
use crate::error::ProxyError;
use crate::httputil::{self as h, Body, BoxError};
use crate::outbound::Target;
use crate::routes::Endpoint;
use crate::Ctx;
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use weft_api::resilience::{Retry, RetryOn};

pub struct Rule {
    attempts: u32,
    on_5xx: bool,
    on_gateway: bool,
    on_connect: bool,
    on_reset: bool,
    status_codes: Vec<u16>,
    grpc_codes: Vec<u8>,
    base: Duration,
    max: Duration,
    budget: Budget,
    max_body: u64,
    /// Empty: the idempotent methods.
    methods: Vec<Method>,
}

/// How a try ended, for `retryOn`.
#[derive(Debug, PartialEq)]
enum Outcome {
    Status(u16),
    Grpc(u8),
    /// No connection to any endpoint (nothing was sent).
    ConnectFailure,
    /// The stream or connection broke before the response.
    Reset,
    PerTryTimeout,
    /// Not retried whatever the policy says (local overload, bad request...).
    Final,
}

impl Rule {
    pub fn new(r: &Retry) -> Self {
        let on = |c| r.retry_on.contains(&c);
        let backoff = r.backoff.clone().unwrap_or_default();
        Rule {
            attempts: r.attempts,
            on_5xx: on(RetryOn::Status5xx),
            on_gateway: on(RetryOn::GatewayError),
            on_connect: on(RetryOn::ConnectFailure),
            on_reset: on(RetryOn::Reset),
            status_codes: r.status_codes.clone(),
            grpc_codes: r.grpc_status_codes.iter().map(|c| c.0).collect(),
            base: backoff.base.into(),
            max: backoff.max.into(),
            budget: Budget::new(&r.budget.clone().unwrap_or_default()),
            max_body: r.max_body_bytes,
            methods: r.methods.iter().filter_map(|m| Method::from_bytes(m.as_bytes()).ok()).collect(),
        }
    }

    fn allows(&self, m: &Method) -> bool {
        if self.methods.is_empty() {
            matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
        } else {
            self.methods.contains(m)
        }
    }

    fn retries(&self, o: &Outcome) -> bool {
        match *o {
            Outcome::Status(s) => {
                (self.on_5xx && s >= 500)
                    || (self.on_gateway && matches!(s, 502..=504))
                    || self.status_codes.contains(&s)
            }
            Outcome::Grpc(c) => self.grpc_codes.contains(&c),
            Outcome::ConnectFailure => self.on_connect || self.on_5xx || self.on_gateway,
            Outcome::Reset => self.on_reset || self.on_5xx || self.on_gateway,
            Outcome::PerTryTimeout => self.on_5xx || self.on_gateway,
            Outcome::Final => false,
        }
    }

    /// The wait before retry `n` (1-based): full jitter over `min(max, base × 2ⁿ⁻¹)`.
    fn backoff(&self, n: u32) -> Duration {
        let cap = self.base.saturating_mul(1u32 << (n - 1).min(20)).min(self.max);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(super::random() % (nanos + 1))
    }

    /// The request ready for its first try, and what is needed to send it again (`None`: it
    /// cannot be retried). A body of known length is read here; one of unknown length goes on
    /// at once through a [`Tee`] that keeps a copy up to `max_body` bytes.
    async fn prepare(&self, req: Request<Body>) -> (Request<Body>, Option<Replay>) {
        let allowed = self.allows(req.method());
        let grpc_only = !allowed && !self.grpc_codes.is_empty() && crate::route::is_grpc(&req);
        let hint = req.body().size_hint();
        if !(allowed || grpc_only) || hint.lower() > self.max_body {
            return (req, None);
        }
        if hint.exact().is_none() {
            let (parts, body) = req.into_parts();
            let copy = Arc::new(std::sync::Mutex::new(Copy::default()));
            let tee = Tee { inner: body, copy: copy.clone(), max: self.max_body };
            let replay = Replay { head: head_copy(&parts), body: ReplayBody::Tee(copy), grpc_only };
            return (Request::from_parts(parts, BodyExt::boxed(tee)), Some(replay));
        }
        let (parts, mut body) = req.into_parts();
        let mut chunks: Vec<Bytes> = vec![];
        let mut len = 0u64;
        let rest = loop {
            match body.frame().await {
                None => break None,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        len += data.len() as u64;
                        chunks.push(data);
                        if len > self.max_body {
                            break Some(Ok(body));
                        }
                    }
                    // Trailers: sent as they are, and the request is not retried.
                    Err(frame) => break Some(Err(frame)),
                },
                Some(Err(e)) => return (Request::from_parts(parts, error_body(chunks, e)), None),
            }
        };
        match rest {
            None => {
                let bytes = concat(chunks);
                let replay = Replay { head: head_copy(&parts), body: ReplayBody::Whole(bytes.clone()), grpc_only };
                (Request::from_parts(parts, h::full(bytes)), Some(replay))
            }
            Some(rest) => (Request::from_parts(parts, chained(chunks, rest)), None),
        }
    }
}

fn concat(chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().unwrap_or_default(),
        _ => chunks.concat().into(),
    }
}

/// The chunks read so far, then the rest of the body (or the trailers frame that stopped it).
fn chained(chunks: Vec<Bytes>, rest: Result<Body, Frame<Bytes>>) -> Body {
    use futures_util::StreamExt;
    let head = futures_util::stream::iter(chunks.into_iter().map(|c| Ok::<_, BoxError>(Frame::data(c))));
    match rest {
        Ok(body) => BodyExt::boxed(http_body_util::StreamBody::new(head.chain(http_body_util::BodyStream::new(body)))),
        Err(trailers) => {
            BodyExt::boxed(http_body_util::StreamBody::new(head.chain(futures_util::stream::iter([Ok(trailers)]))))
        }
    }
}

/// The chunks read, then the error the body failed with.
fn error_body(chunks: Vec<Bytes>, e: BoxError) -> Body {
    use futures_util::StreamExt;
    let head = futures_util::stream::iter(chunks.into_iter().map(|c| Ok::<_, BoxError>(Frame::data(c))));
    BodyExt::boxed(http_body_util::StreamBody::new(head.chain(futures_util::stream::iter([Err(e)]))))
}

/// What a retry sends: the request head as the app sent it (before the outbound rewrite) and
/// its whole body.
struct Replay {
    head: http::request::Parts,
    body: ReplayBody,
    /// A gRPC call whose method the policy does not list: retried on its gRPC statuses only.
    grpc_only: bool,
}

enum ReplayBody {
    /// Read before the first try.
    Whole(Bytes),
    /// Copied as the first try sent it.
    Tee(Arc<std::sync::Mutex<Copy>>),
}

/// The copy a [`Tee`] keeps.
#[derive(Default)]
struct Copy {
    chunks: Vec<Bytes>,
    len: u64,
    state: CopyState,
}

#[derive(Default, PartialEq, Debug)]
enum CopyState {
    #[default]
    Reading,
    /// The body ended within the limit: the copy is all of it.
    Complete,
    /// Over the limit, trailers, or an error: it cannot be sent again.
    Unreplayable,
}

impl Copy {
    fn end(&mut self) {
        if self.state == CopyState::Reading {
            self.state = CopyState::Complete;
        }
    }
}

/// A request body passed on frame by frame as the try sends it, copied on the way (one
/// uncontended lock per frame). The copy is complete once the body has ended, which happens
/// before the try's request can end upstream, so before any answer to a whole request.
struct Tee {
    inner: Body,
    copy: Arc<std::sync::Mutex<Copy>>,
    max: u64,
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let mut c = this.copy.lock().unwrap_or_else(|p| p.into_inner());
        match &polled {
            Poll::Pending => {}
            Poll::Ready(None) => c.end(),
            Poll::Ready(Some(Err(_))) => c.state = CopyState::Unreplayable,
            Poll::Ready(Some(Ok(frame))) if c.state == CopyState::Reading => match frame.data_ref() {
                Some(data) => {
                    c.len += data.len() as u64;
                    if c.len > this.max {
                        c.state = CopyState::Unreplayable;
                        c.chunks = Vec::new();
                    } else {
                        c.chunks.push(data.clone());
                        if this.inner.is_end_stream() {
                            c.end();
                        }
                    }
                }
                None => c.state = CopyState::Unreplayable,
            },
            Poll::Ready(Some(Ok(_))) => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.copy.lock().unwrap_or_else(|p| p.into_inner()).end();
        }
        end
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn head_copy(parts: &http::request::Parts) -> http::request::Parts {
    let mut head = Request::new(());
    *head.method_mut() = parts.method.clone();
    *head.uri_mut() = parts.uri.clone();
    *head.version_mut() = parts.version;
    *head.headers_mut() = parts.headers.clone();
    head.into_parts().0
}

impl Replay {
    /// The request again; `None` when its body cannot be sent again (a tee'd body that had not
    /// ended, or was over the limit).
    fn request(&self) -> Option<Request<Body>> {
        let body = match &self.body {
            ReplayBody::Whole(b) => b.clone(),
            ReplayBody::Tee(copy) => {
                let c = copy.lock().unwrap_or_else(|p| p.into_inner());
                if c.state != CopyState::Complete {
                    return None;
                }
                concat(c.chunks.clone())
            }
        };
        Some(Request::from_parts(head_copy(&self.head), h::full(body)))
    }

    /// Whether outcome `o` of this request is retried under `rule`.
    fn retries(&self, rule: &Rule, o: &Outcome) -> bool {
        rule.retries(o) && (!self.grpc_only || matches!(o, Outcome::Grpc(_)))
    }
}

fn outcome(result: &Result<Response<Body>, ProxyError>) -> Outcome {
    match result {
        Ok(resp) => {
            // A trailers-only gRPC response carries its status in the headers.
            match resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()?.parse::<u8>().ok()) {
                Some(code) if code != 0 => Outcome::Grpc(code),
                _ => Outcome::Status(resp.status().as_u16()),
            }
        }
        Err(e) => match e {
            ProxyError::NoEndpoint(_)
            | ProxyError::Connect { .. }
            | ProxyError::ConnectTimeout(_)
            | ProxyError::Tls { .. }
            | ProxyError::WrongIdentity { .. } => Outcome::ConnectFailure,
            ProxyError::Upstream(_) | ProxyError::PeerUnresponsive(_) => Outcome::Reset,
            ProxyError::PerTryTimeout(_) => Outcome::PerTryTimeout,
            _ => Outcome::Final,
        },
    }
}

/// Sends a request to a service with a policy (see the module's comment). Returns the endpoint
/// that answered (or last failed) and the result, as [`crate::outbound::forward_with`] does.
pub async fn forward(
    ctx: &Ctx,
    target: &Target,
    p: &Policy,
    ep: Arc<Endpoint>,
    req: Request<Body>,
    started: Instant,
) -> (Arc<Endpoint>, Result<Response<Body>, ProxyError>) {
    let mut abort = None;
    let mut delayed = false;
    if let Some(rule) = p.faults.iter().find(|f| f.matches(&req)) {
        match rule.roll() {
            Injected::None => {}
            Injected::Delay(d, then) => {
                p.counters.delays.inc();
                tokio::time::sleep(d).await;
                delayed = true;
                abort = then;
            }
            Injected::Abort(resp) => abort = Some(resp),
        }
    }
    if let Some(mut resp) = abort {
        p.counters.aborts.inc();
        if delayed {
            crate::accesslog::flag(&ctx.access_log, &mut resp, "DI");
        }
        return (ep, Ok(resp));
    }
    let first = ep.clone();
    let run = tries(ctx, target, p, ep, req, started);
    let (ep, result) = match p.request_timeout {
        None => run.await,
        Some(limit) => match tokio::time::timeout(limit.saturating_sub(started.elapsed()), run).await {
            Ok(done) => done,
            Err(_) => {
                p.counters.request_timeouts.inc();
                (first, Err(ProxyError::RequestTimeout(limit)))
            }
        },
    };
    let result = match (delayed, result) {
        (true, Ok(mut resp)) => {
            crate::accesslog::flag(&ctx.access_log, &mut resp, "DI");
            Ok(resp)
        }
        (_, result) => result,
    };
    let result = match (p.idle_timeout, result) {
        (Some(idle), Ok(resp)) => {
            let counter = p.counters.idle_timeouts.clone();
            Ok(resp.map(|body| IdleBody::new(body, idle, counter).boxed()))
        }
        (_, result) => result,
    };
    (ep, result)
}

async fn tries(
    ctx: &Ctx,
    target: &Target,
    p: &Policy,
    mut ep: Arc<Endpoint>,
    req: Request<Body>,
    started: Instant,
) -> (Arc<Endpoint>, Result<Response<Body>, ProxyError>) {
    let (mut next, replay) = match &p.retry {
        Some(rule) => {
            rule.budget.deposit();
            let (req, replay) = rule.prepare(req).await;
            (Some(req), replay)
        }
        None => (Some(req), None),
    };
    let mut tried: Vec<Arc<Endpoint>> = vec![];
    let mut n = 0;
    // Held while a retry is under way (until the next retry or the answer).
    let mut _retry_permit = None;
    loop {
        let Some(req) = next.take() else { unreachable!("each try has its request") };
        let attempt = crate::outbound::forward_with(ctx, target, ep.clone(), req, started, p.connect_timeout);
        let (used, result) = match p.per_try_timeout {
            None => attempt.await,
            Some(limit) => match tokio::time::timeout(limit, attempt).await {
                Ok(done) => done,
                Err(_) => {
                    p.counters.per_try_timeouts.inc();
                    (ep.clone(), Err(ProxyError::PerTryTimeout(limit)))
                }
            },
        };
        let (Some(rule), Some(replay)) = (&p.retry, &replay) else { return (used, result) };
        let retriable = replay.retries(rule, &outcome(&result));
        if n >= rule.attempts || !retriable {
            // The last try failed as one that would be retried: the retry limit (URX).
            let mut result = result;
            if let (true, true, Ok(resp)) = (retriable, n >= rule.attempts, &mut result) {
                crate::accesslog::flag(&ctx.access_log, resp, "URX");
            }
            return (used, result);
        }
        // A streamed body that had not ended (or outgrew the limit) cannot be sent again.
        let Some(again) = replay.request() else { return (used, result) };
        if !rule.budget.withdraw() {
            p.counters.budget_exhausted.inc();
            return (used, result);
        }
        // Circuit breaking: at most the BackendPolicy's `maxRetries` retries of this service at
        // once; past it the failed answer stands (as Envoy's retry overflow), counted.
        _retry_permit = match target.service.balance.acquire(crate::balance::limits::Limit::Retries) {
            Ok(permit) => permit,
            Err(limit) => {
                crate::outbound::overflowed(ctx, &target.service, limit);
                return (used, result);
            }
        };
        n += 1;
        next = Some(again);
        p.counters.retries.inc();
        // The failed response's body is dropped unread: its stream is reset.
        drop(result);
        tracing::debug!(service = target.service.key(), retry = n, "retrying");
        tokio::time::sleep(rule.backoff(n)).await;
        tried.push(used);
        // Another endpoint when there is one (the pinned one for a pinned target).
        ep = match target.other_endpoint(&tried) {
            Some(next) => next,
            None => match target.endpoint(Instant::now(), None) {
                Ok(next) => next,
                Err(e) => return (ep, Err(e)),
            },
        };
    }
}

/// A response body cut when no data comes for `idle` (`timeouts.idle`).
struct IdleBody {
    inner: Body,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    counter: prometheus_client::metrics::counter::Counter,
}

impl IdleBody {
    fn new(inner: Body, idle: Duration, counter: prometheus_client::metrics::counter::Counter) -> Self {
        IdleBody { inner, idle, timer: Box::pin(tokio::time::sleep(idle)), counter }
    }
}

impl http_body::Body for IdleBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(next);
                Poll::Ready(frame)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.counter.inc();
                    Poll::Ready(Some(Err(format!("no response data for {:?} (timeouts.idle)", this.idle).into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

use std::future::Future as _;

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> Rule {
        Rule::new(&serde_json::from_str(json).unwrap())
    }

    #[test]
    fn retry_on_conditions() {
        let r = rule(r#"{"retryOn":["gateway-error"],"statusCodes":[409],"grpcStatusCodes":["unavailable"]}"#);
        assert!(r.retries(&Outcome::Status(503)) && r.retries(&Outcome::Status(409)));
        assert!(!r.retries(&Outcome::Status(500)) && !r.retries(&Outcome::Status(200)));
        assert!(r.retries(&Outcome::Grpc(14)) && !r.retries(&Outcome::Grpc(13)));
        assert!(r.retries(&Outcome::ConnectFailure) && r.retries(&Outcome::PerTryTimeout));
        assert!(!r.retries(&Outcome::Final));
        let c = rule(r#"{"retryOn":["connect-failure"]}"#);
        assert!(
            c.retries(&Outcome::ConnectFailure) && !c.retries(&Outcome::Reset) && !c.retries(&Outcome::Status(503))
        );
    }

    #[test]
    fn backoff_is_jittered_under_its_cap() {
        let r = rule(r#"{"backoff":{"base":"10ms","max":"40ms"}}"#);
        for n in 1..8 {
            let cap = Duration::from_millis((10u64 << (n - 1)).min(40));
            assert!((0..100).map(|_| r.backoff(n)).all(|d| d <= cap), "retry {n}");
        }
        assert!((0..100).map(|_| r.backoff(3)).collect::<std::collections::HashSet<_>>().len() > 10, "jitter");
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_body_idle_past_its_timeout_is_cut() {
        let counter = prometheus_client::metrics::counter::Counter::default();
        let chunks = futures_util::stream::iter([Ok::<_, BoxError>(Frame::data(Bytes::from("a")))]);
        let stalls = BodyExt::boxed(http_body_util::StreamBody::new(futures_util::StreamExt::chain(
            chunks,
            futures_util::stream::pending(),
        )));
        let mut body = IdleBody::new(stalls, Duration::from_secs(5), counter.clone());
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "a");
        let t = tokio::time::Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("timeouts.idle"), "{err}");
        assert_eq!(t.elapsed(), Duration::from_secs(5));
        assert_eq!(counter.get(), 1);
    }

    #[tokio::test]
    async fn only_allowed_methods_and_small_bodies_are_kept_for_replay() {
        let r = rule(r#"{"maxBodyBytes":4}"#);
        let req = |m: &str, body: &'static str| Request::builder().method(m).uri("/").body(h::full(body)).unwrap();
        assert!(r.prepare(req("GET", "")).await.1.is_some());
        assert!(r.prepare(req("POST", "")).await.1.is_none(), "not idempotent");
        let (sent, replay) = r.prepare(req("PUT", "abcd")).await;
        assert!(matches!(replay.unwrap().body, ReplayBody::Whole(b) if b == "abcd"));
        assert_eq!(sent.into_body().collect().await.unwrap().to_bytes(), "abcd");
        // Over the limit by its declared length: not read at all.
        assert!(r.prepare(req("PUT", "abcde")).await.1.is_none());
        // No length: streamed as it comes, copied; over the limit, it cannot be sent again.
        let stream = |chunks: &'static [&'static str]| {
            http_body_util::StreamBody::new(futures_util::stream::iter(
                chunks.iter().map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from(*c)))),
            ))
            .boxed()
        };
        let (sent, replay) =
            r.prepare(Request::builder().method("PUT").body(stream(&["ab", "cd", "ef"])).unwrap()).await;
        let replay = replay.expect("a streamed body is copied as it goes");
        assert!(replay.request().is_none(), "not ended yet");
        assert_eq!(sent.into_body().collect().await.unwrap().to_bytes(), "abcdef");
        assert!(replay.request().is_none(), "over the limit");
        let (sent, replay) = r.prepare(Request::builder().method("PUT").body(stream(&["ab", "cd"])).unwrap()).await;
        assert_eq!(sent.into_body().collect().await.unwrap().to_bytes(), "abcd");
        let again = replay.unwrap().request().expect("ended within the limit");
        assert_eq!(again.into_body().collect().await.unwrap().to_bytes(), "abcd");
        let post = rule(r#"{"methods":["POST"]}"#);
        assert!(post.prepare(req("POST", "x")).await.1.is_some());
        assert!(post.prepare(req("GET", "")).await.1.is_none(), "the list replaces the default");
        // gRPC (POST): retried on the listed gRPC statuses only, whatever `methods` says.
        let g = rule(r#"{"retryOn":["5xx"],"grpcStatusCodes":["unavailable"]}"#);
        let call =
            || Request::builder().method("POST").header("content-type", "application/grpc").body(h::full("x")).unwrap();
        let replay = g.prepare(call()).await.1.expect("a gRPC call is kept for its gRPC statuses");
        assert!(replay.retries(&g, &Outcome::Grpc(14)));
        assert!(!replay.retries(&g, &Outcome::Grpc(13)) && !replay.retries(&g, &Outcome::Status(503)));
        assert!(rule(r#"{"retryOn":["5xx"]}"#).prepare(call()).await.1.is_none(), "no gRPC status listed");
    }
}
