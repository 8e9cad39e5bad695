//! What one peer, client or connection can make the proxy hold in memory (`limits` in the
//! config): body bytes waiting to go out on HTTP/2 streams, per connection and in total, and the
//! request headers held by open streams, per connection and in total. Bodies wait for room
//! (backpressure); a stream whose headers do not fit is refused with `503 overloaded`.
//!
//! ```text
//! pipe ─charge(chunk)─► ConnBudget ─► Budget (proxy total, the weft_http2_buffered_bytes gauge)
//!   │   waits while the connection or the proxy is full (backpressure: the body is not read)
//!   └─send_data(Charged chunk) ─► h2 send queue ─► codec ─► socket
//!                                   chunk dropped (written out, or the stream reset) ─► release
//! ```
//!
//! Why charge the chunk itself: `h2` queues a stream's DATA until the peer's window and the
//! socket take it, and says nothing about what it holds. A peer that advertises huge windows and
//! never reads would make it hold `max_send_buffer_size` per stream on every stream. The chunk
//! handed to `h2` is a [`Bytes`] whose owner releases its charge when `h2` drops it: after the
//! last byte is written into the connection, or when the stream or connection goes away.
//!
//! Receive side: what a peer may send is bounded by the windows the proxy advertises (the stream
//! window is `stream_buffer_bytes`; see [`crate::h2body`] for the connection window).

use crate::metrics::{Metrics, Refused};
use bytes::Bytes;
use http::Request;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;
use weft_api::proxy::Limits;

/// The proxy-wide budget. One per proxy; every HTTP/2 connection takes a [`ConnBudget`] from it.
pub struct Budget {
    pub limits: Limits,
    /// Body bytes queued to send now, proxy-wide.
    used: Gauge,
    /// Request header bytes held by open streams now, proxy-wide.
    headers: Gauge,
    waits: Counter,
    refused: Family<Refused, Counter>,
}

impl Budget {
    pub fn new(limits: Limits, metrics: &Metrics) -> Arc<Budget> {
        Arc::new(Budget {
            limits,
            used: metrics.http2_buffered.clone(),
            headers: metrics.http2_held_headers.clone(),
            waits: metrics.http2_buffer_waits.clone(),
            refused: metrics.http2_streams_refused.clone(),
        })
    }

    /// A budget whose metrics are not exported (for parts used without a proxy).
    pub fn unregistered(limits: Limits) -> Arc<Budget> {
        Budget::new(limits, &Metrics::new(&mut prometheus_client::registry::Registry::default()))
    }

    /// A budget for one new HTTP/2 connection.
    pub fn connection(self: &Arc<Self>) -> Arc<ConnBudget> {
        Arc::new(ConnBudget {
            proxy: self.clone(),
            body: AtomicUsize::new(0),
            headers: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            released: Notify::new(),
        })
    }

    fn add(&self, n: usize) -> usize {
        self.used.inc_by(n as i64).max(0) as usize
    }

    fn sub(&self, n: usize) {
        self.used.dec_by(n as i64);
    }
}

/// One HTTP/2 connection's share of the [`Budget`].
pub struct ConnBudget {
    proxy: Arc<Budget>,
    /// Body bytes handed to `h2` on this connection and not yet written or dropped.
    body: AtomicUsize,
    /// Request header bytes held by this connection's open streams (served connections).
    headers: AtomicUsize,
    /// Pipes waiting for `body` to shrink: only then does a release wake anyone.
    waiters: AtomicUsize,
    released: Notify,
}

/// Why a new stream was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overload {
    /// The connection's open streams hold `connection_header_bytes` of request headers.
    Headers,
    /// The proxy's open streams hold `proxy_buffer_bytes` of request headers.
    Proxy,
}

impl Overload {
    pub fn as_str(self) -> &'static str {
        match self {
            Overload::Headers => "connection-headers",
            Overload::Proxy => "proxy-headers",
        }
    }
}

impl ConnBudget {
    /// Charges `n` body bytes if the connection and the proxy have room for them. A connection
    /// with nothing queued may always queue one chunk (at most one stream's buffer), so that
    /// connections stalled by their peers cannot starve one whose peer reads.
    fn try_charge(&self, n: usize) -> bool {
        let limits = &self.proxy.limits;
        let before = self.body.fetch_add(n, Ordering::SeqCst);
        if before == 0 {
            self.proxy.add(n);
            return true;
        }
        if before + n > limits.connection_buffer_bytes {
            self.body.fetch_sub(n, Ordering::SeqCst);
            return false;
        }
        if self.proxy.add(n) + n > limits.proxy_buffer_bytes {
            self.proxy.sub(n);
            self.body.fetch_sub(n, Ordering::SeqCst);
            return false;
        }
        true
    }

    fn release(&self, n: usize) {
        self.body.fetch_sub(n, Ordering::SeqCst);
        self.proxy.sub(n);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.released.notify_waiters();
        }
    }

    /// `chunk` charged to this connection if there is room now; else `chunk` back.
    pub fn try_charge_now(self: &Arc<Self>, chunk: Bytes) -> Result<Bytes, Bytes> {
        if chunk.is_empty() {
            return Ok(chunk);
        }
        if self.try_charge(chunk.len()) {
            Ok(Bytes::from_owner(Charged { data: chunk, budget: self.clone() }))
        } else {
            Err(chunk)
        }
    }

    /// `chunk`, charged to this connection: waits while there is no room (the caller then stops
    /// reading the body it sends, which is the backpressure). The charge is released when the
    /// returned bytes are dropped, which `h2` does once they are written or the stream is gone.
    pub async fn charge(self: &Arc<Self>, chunk: Bytes) -> Bytes {
        let n = chunk.len();
        if n == 0 {
            return chunk;
        }
        if !self.try_charge(n) {
            self.proxy.waits.inc();
            self.waiters.fetch_add(1, Ordering::SeqCst);
            loop {
                let notified = self.released.notified();
                tokio::pin!(notified);
                // Registered before the check, so a release in between is not missed.
                notified.as_mut().enable();
                if self.try_charge(n) {
                    break;
                }
                notified.await;
            }
            self.waiters.fetch_sub(1, Ordering::SeqCst);
        }
        Bytes::from_owner(Charged { data: chunk, budget: self.clone() })
    }

    /// Admits a new stream's request headers, held until the returned guard drops; refused when
    /// the connection's streams or the proxy's hold too many header bytes. A connection with no
    /// stream open is always admitted one. Queued body bytes do not refuse streams: they wait.
    /// `n` is the request's [`header_bytes`], which the caller has measured already.
    pub fn admit(&self, n: usize) -> Result<HeldHeaders<'_>, Overload> {
        let limits = &self.proxy.limits;
        let before = self.headers.fetch_add(n, Ordering::Relaxed);
        let refused = if before == 0 {
            None
        } else if before + n > limits.connection_header_bytes {
            Some(Overload::Headers)
        } else if self.proxy.headers.inc_by(n as i64).max(0) as usize + n > limits.proxy_buffer_bytes {
            self.proxy.headers.dec_by(n as i64);
            Some(Overload::Proxy)
        } else {
            return Ok(HeldHeaders { budget: self, n });
        };
        match refused {
            None => {
                self.proxy.headers.inc_by(n as i64);
                Ok(HeldHeaders { budget: self, n })
            }
            Some(why) => {
                self.headers.fetch_sub(n, Ordering::Relaxed);
                self.proxy.refused.get_or_create(&Refused { reason: why.as_str() }).inc();
                Err(why)
            }
        }
    }
}

/// A stream's request headers, counted against its connection and the proxy while it is open.
pub struct HeldHeaders<'a> {
    budget: &'a ConnBudget,
    n: usize,
}

impl Drop for HeldHeaders<'_> {
    fn drop(&mut self) {
        self.budget.headers.fetch_sub(self.n, Ordering::Relaxed);
        self.budget.proxy.headers.dec_by(self.n as i64);
    }
}

/// The size of a request head as HPACK counts it (RFC 7541 §4.1: name, value and 32 bytes per
/// field), with the pseudo-header fields.
pub(crate) fn header_bytes<B>(req: &Request<B>) -> usize {
    let fields: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 32).sum();
    let uri = req.uri();
    let pseudo = req.method().as_str().len()
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(1, |p| p.as_str().len())
        + 4 * 32
        + 5;
    fields + pseudo
}

/// A chunk handed to `h2`, charged to its connection until `h2` drops it.
struct Charged {
    data: Bytes,
    budget: Arc<ConnBudget>,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Charged {
    fn drop(&mut self) {
        self.budget.release(self.data.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn budget(stream: usize, conn: usize, proxy: usize, headers: usize) -> Arc<Budget> {
        let limits = Limits {
            stream_buffer_bytes: stream,
            connection_buffer_bytes: conn,
            proxy_buffer_bytes: proxy,
            connection_header_bytes: headers,
            ..Limits::default()
        };
        let mut reg = prometheus_client::registry::Registry::default();
        Budget::new(limits, &Metrics::new(&mut reg))
    }

    fn used(b: &Budget) -> i64 {
        b.used.get()
    }

    #[tokio::test]
    async fn a_chunk_is_charged_until_dropped_and_a_full_connection_waits() {
        let b = budget(100, 200, 300, 1000);
        let c = b.connection();
        let one = c.charge(Bytes::from(vec![0u8; 150])).await;
        assert_eq!(&one[..3], &[0, 0, 0], "the same bytes");
        assert_eq!(used(&b), 150);
        // 150 + 100 > 200: waits until `one` is dropped.
        let mut second = Box::pin(c.charge(Bytes::from(vec![1u8; 100])));
        assert!(second.as_mut().now_or_never().is_none());
        assert_eq!(b.waits.get(), 1);
        drop(one);
        let two = second.await;
        assert_eq!(used(&b), 100);
        // Slices and clones keep the charge until the last one goes, as h2's frames do.
        let part = two.slice(10..20);
        drop(two);
        assert_eq!(used(&b), 100);
        drop(part);
        assert_eq!(used(&b), 0);
    }

    #[tokio::test]
    async fn the_proxy_total_is_shared_but_an_idle_connection_may_always_send_one_chunk() {
        let b = budget(100, 200, 300, 1000);
        let (c1, c2, c3) = (b.connection(), b.connection(), b.connection());
        let _a = (c1.charge(Bytes::from(vec![0; 100])).await, c1.charge(Bytes::from(vec![0; 100])).await);
        let _b = c2.charge(Bytes::from(vec![0; 100])).await;
        assert_eq!(used(&b), 300);
        // c2 already holds some, and the proxy is full: it waits.
        let mut more = Box::pin(c2.charge(Bytes::from(vec![0; 50])));
        assert!(more.as_mut().now_or_never().is_none());
        // c3 holds nothing: one chunk goes.
        let _c = c3.charge(Bytes::from(vec![0; 100])).await;
        assert_eq!(used(&b), 400);
    }

    #[test]
    fn headers_are_admitted_up_to_the_connection_bound_and_released_with_the_stream() {
        let b = budget(100, 200, 100_000, 1000);
        let c = b.connection();
        let req = |len: usize| Request::get("http://a/").header("x", "v".repeat(len)).body(()).unwrap();
        let first = c.admit(header_bytes(&req(2000))).expect("a connection with no stream open is always admitted one");
        assert_eq!(c.admit(header_bytes(&req(10))).err(), Some(Overload::Headers));
        assert!(b.headers.get() > 2000);
        drop(first);
        assert_eq!(b.headers.get(), 0);
        let _a = c.admit(header_bytes(&req(300))).unwrap();
        let _b = c.admit(header_bytes(&req(300))).unwrap();
        assert_eq!(c.admit(header_bytes(&req(300))).err(), Some(Overload::Headers));
        let refused = b.refused.get_or_create(&Refused { reason: "connection-headers" }).get();
        assert_eq!(refused, 2);
    }
}
