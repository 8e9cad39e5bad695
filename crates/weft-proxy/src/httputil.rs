//! HTTP helpers shared by inbound and outbound: hop-by-hop headers (RFC 9110 §7.6.1), the one
//! place errors become responses, and upgrade (WebSocket, CONNECT) tunnelling.

use crate::drain::ConnGuard;
use crate::error::ProxyError;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// Set by the destination sidecar: the caller's verified SPIFFE ID. Any copy arriving from
/// elsewhere is removed first, so the app can trust it.
pub const PEER_IDENTITY: HeaderName = HeaderName::from_static("x-weft-peer-identity");
/// Removes every field an app could read as [`PEER_IDENTITY`]: the name in any case, and with `_`
/// for any `-` (`x_weft_peer_identity`), which CGI-style frameworks (WSGI, Rack, PHP) fold into
/// the same variable. Names in a `HeaderMap` are already lowercase.
pub fn strip_peer_identity(headers: &mut HeaderMap) {
    fn reads_as_identity(name: &HeaderName) -> bool {
        const WANT: &[u8] = b"x-weft-peer-identity";
        let (n, want) = (name.as_str().as_bytes(), WANT);
        n.len() == want.len() && n.iter().zip(want).all(|(a, b)| a == b || (*a == b'_' && *b == b'-'))
    }
    if !headers.keys().any(reads_as_identity) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|n| reads_as_identity(n)).cloned().collect();
    for n in names {
        headers.remove(n);
    }
}

/// A request body whose trailers (HTTP/1 chunked trailers, HTTP/2 trailers) lose every field
/// that reads as [`PEER_IDENTITY`], so that a caller cannot add one after the headers.
pub fn strip_identity_trailers(body: Body) -> Body {
    body.map_frame(|frame| match frame.into_trailers() {
        Ok(mut trailers) => {
            strip_peer_identity(&mut trailers);
            http_body::Frame::trailers(trailers)
        }
        Err(frame) => frame,
    })
    .boxed()
}

/// Between proxies: the HTTP version the calling app spoke, so the destination speaks it to its
/// app (absent: HTTP/2).
pub const ORIG_PROTO: HeaderName = HeaderName::from_static("x-weft-orig-proto");
/// The one value of [`ORIG_PROTO`].
pub const ORIG_PROTO_HTTP1: &str = "HTTP/1.1";
/// Set on responses the proxy itself generated, naming the reason.
pub const PROXY_ERROR: HeaderName = HeaderName::from_static("x-weft-error");
/// On a 503 for circuit breaking: which limit (`max-requests`, `max-pending-requests`,
/// `max-connections`, `max-retries`).
pub const OVERFLOW: HeaderName = HeaderName::from_static("x-weft-overflow");

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

pub fn boxed(b: Incoming) -> Body {
    b.map_err(BoxError::from).boxed()
}

pub fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into()).map_err(|never| match never {}).boxed()
}

/// Removes hop-by-hop headers: those named by `Connection`, and the fixed list of RFC 9110.
/// `TE: trailers` survives (gRPC needs it).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages have none: one pass over the names instead of a hashed lookup per name.
    let hop_by_hop = [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::TE,
        KEEP_ALIVE,
        PROXY_CONNECTION,
    ];
    if !headers.keys().any(|n| hop_by_hop.contains(n)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        if n != header::TE {
            headers.remove(&n);
        }
    }
    for n in [header::CONNECTION, header::TRANSFER_ENCODING, header::UPGRADE, header::PROXY_AUTHENTICATE] {
        headers.remove(n);
    }
    // Named constants, not strings: `remove("keep-alive")` parses the name on every call.
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case("trailers"));
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Checks the request's `Host` against its target, and makes them one (RFC 9110 §7.2):
/// - more than one `Host` header: refused (RFC 9112 §3.2 requires a 400);
/// - a `Host` that is not an authority (other than empty): refused;
/// - HTTP/1 in absolute form (`GET http://a/ HTTP/1.1`): the target's authority wins and `Host`
///   is replaced by it (RFC 9112 §3.2.2), so everyone downstream reads the same host;
/// - HTTP/2 whose `host` names another authority than `:authority`: refused (RFC 9113 §8.3.1:
///   malformed), rather than guessing which one the app will read.
///
/// Hosts compare without case and without the target's userinfo.
pub fn check_host<B>(req: &mut Request<B>) -> Result<(), ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let Some(host) = hosts.next() else { return Ok(()) };
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header".into()));
    }
    let target = req.uri().authority().map(|a| {
        let a = a.as_str();
        a.rfind('@').map_or(a, |at| &a[at + 1..])
    });
    // The usual case on the hop (`:authority` and `host` both sent) and in absolute form: the
    // target was parsed as an authority already, so a `Host` equal to it is one too.
    if target.is_some_and(|t| t.as_bytes().eq_ignore_ascii_case(host.as_bytes())) {
        return Ok(());
    }
    if !host.is_empty() && !is_host(host.as_bytes()) {
        return Err(ProxyError::BadRequest("the Host header is not a valid authority".into()));
    }
    let Some(target) = target else { return Ok(()) };
    if req.version() == http::Version::HTTP_2 {
        return Err(ProxyError::BadRequest(":authority and the host header name different hosts".into()));
    }
    let target = HeaderValue::from_str(target).map_err(|_| ProxyError::BadRequest("bad request target".into()))?;
    req.headers_mut().insert(header::HOST, target);
    Ok(())
}

/// Whether `b` is a `Host` value, `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2):
/// a reg-name (unreserved, sub-delims, `%` escapes) or a bracketed IP literal, then digits after
/// a colon. Checked in place on every request that carries no target authority, so without the
/// copy `http::uri::Authority` parsing makes.
pub fn is_host(b: &[u8]) -> bool {
    let (host, port, table) = if b.first() == Some(&b'[') {
        match b.iter().position(|&c| c == b']') {
            Some(end) if end > 1 => (&b[1..end], &b[end + 1..], &IP_LITERAL),
            _ => return false,
        }
    } else {
        let colon = b.iter().position(|&c| c == b':').unwrap_or(b.len());
        (&b[..colon], &b[colon..], &REG_NAME)
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    port_ok && host.iter().all(|&c| table[c as usize])
}

/// Bytes of a reg-name (RFC 3986 §3.2.2: unreserved, sub-delims and `%` of pct-encoded).
static REG_NAME: [bool; 256] = byte_set(b"-._~%!$&'()*+,;=");
/// Bytes inside an IP literal's brackets (IPv6, IPvFuture).
static IP_LITERAL: [bool; 256] = byte_set(b":.-_~!$&'()*+,;=");

/// Letters, digits and `extra`.
const fn byte_set(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = (c as u8).is_ascii_alphanumeric();
        c += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

/// A request body from a client whose first error is kept in `failed`: a body the client
/// framed wrongly (a malformed chunk size) fails the request on the client's side, and
/// [`blame_client`] then answers 400, not 502.
pub fn watch_errors(body: Incoming, failed: std::sync::Arc<std::sync::OnceLock<String>>) -> Body {
    body.map_err(move |e| {
        let _ = failed.set(e.to_string());
        BoxError::from(e)
    })
    .boxed()
}

/// A failure answered by a proxy (`x-weft-error`) while the client's own request body was
/// malformed (see [`watch_errors`]) is the client's: `400 bad-request`.
pub fn blame_client(resp: Response<Body>, failed: &std::sync::OnceLock<String>) -> Response<Body> {
    match failed.get() {
        Some(e) if resp.headers().contains_key(PROXY_ERROR) => {
            rescue(&ProxyError::BadRequest(format!("malformed request body: {e}")))
        }
        _ => resp,
    }
}

/// An `Upgrade` to HTTP itself (`h2c`, `HTTP/2.0`, ...): after the switch the app would read
/// further requests from the raw stream, with headers no sidecar looked at.
pub fn upgrades_to_http<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().split('/').next().unwrap_or_default())
        .any(|name| name.eq_ignore_ascii_case("h2c") || name.eq_ignore_ascii_case("http"))
}

/// A request that switches protocols (WebSocket, h2c) or tunnels (CONNECT).
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.method() == http::Method::CONNECT || req.headers().contains_key(header::UPGRADE)
}

/// The response for a proxy-side failure.
pub fn rescue(err: &ProxyError) -> Response<Body> {
    let status = err.status();
    tracing::debug!(%err, %status, "proxy error response");
    let mut resp = Response::new(full(format!("weft-proxy: {err}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if let Ok(v) = HeaderValue::from_str(err.kind()) {
        resp.headers_mut().insert(PROXY_ERROR, v);
    }
    if let ProxyError::Overflow(limit) = err {
        resp.headers_mut().insert(OVERFLOW, HeaderValue::from_static(limit.as_str()));
    }
    resp
}

/// A tunnel's bytes on the caller's side: hyper's upgraded HTTP/1.1 connection, or the DATA
/// frames of an HTTP/2 CONNECT stream ([`crate::h2body::Tunnel`]).
pub trait TunnelIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> TunnelIo for T {}

/// The caller's side of a tunnel, ready once the response that opens it (101, or 2xx to
/// CONNECT) has gone out; an error if it never does.
pub type Downstream = Pin<Box<dyn Future<Output = io::Result<Box<dyn TunnelIo>>> + Send>>;

/// The caller's side of an HTTP/1.1 upgrade or CONNECT taken by hyper's server.
pub fn hyper_downstream(req: &mut Request<Incoming>) -> Downstream {
    let on = hyper::upgrade::on(req);
    Box::pin(async move {
        let upgraded = on.await.map_err(io::Error::other)?;
        Ok(Box::new(TokioIo::new(upgraded)) as Box<dyn TunnelIo>)
    })
}

/// Sends an upgrade request over a fresh HTTP/1.1 connection on `io` and, when the server agrees
/// (101, or 2xx to CONNECT), joins the upgraded upstream to `downstream` byte for byte.
pub async fn forward_upgrade<IO>(
    mut req: Request<Body>,
    downstream: Downstream,
    io: IO,
    guard: ConnGuard,
) -> Result<Response<Body>, ProxyError>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, Body>(TokioIo::new(io))
        .await
        .map_err(|e| ProxyError::Upstream(e.into()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upgrade connection ended");
        }
    });
    *req.version_mut() = http::Version::HTTP_11;
    // HTTP/1.1 needs `Host`; an HTTP/2 CONNECT names its target in `:authority` only.
    if !req.headers().contains_key(header::HOST) {
        if let Some(v) = req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    let mut resp = sender.send_request(req).await.map_err(|e| ProxyError::Upstream(e.into()))?;
    let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS || resp.status().is_success();
    if switched {
        let upstream = hyper::upgrade::on(&mut resp);
        // The tunnel holds a drain guard: a draining proxy waits for it like any connection.
        tokio::spawn(async move {
            let _guard = guard;
            match tokio::try_join!(downstream, async { upstream.await.map_err(io::Error::other) }) {
                Ok((mut down, up)) => {
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut TokioIo::new(up)).await;
                }
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        });
    }
    Ok(resp.map(boxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_values_are_checked_in_place() {
        for good in ["api", "api.default.svc:8080", "127.0.0.1:80", "[::1]:443", "[fe80::1]", "a-b_c~d%20", "api:"] {
            assert!(is_host(good.as_bytes()), "{good}");
        }
        for bad in ["a b", "user@api", "api:80:80", "api:x", "[::1", "[]", "api/x", "a?b", "a#b", "\"x\""] {
            assert!(!is_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn every_spelling_of_the_identity_header_is_stripped() {
        let mut h = HeaderMap::new();
        for name in ["x-weft-peer-identity", "x_weft_peer_identity", "x-weft_peer-identity", "X_WEFT_PEER_IDENTITY"] {
            h.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_static("forged"));
        }
        h.insert("x-weft-peer-identityx", HeaderValue::from_static("kept"));
        h.insert("x-weft-peer", HeaderValue::from_static("kept"));
        strip_peer_identity(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
    }

    #[test]
    fn te_trailers_survives_among_other_codings() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("deflate;q=0.5, Trailers"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h[header::TE], "trailers");
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h);
        assert!(h.get(header::TE).is_none());
    }

    #[test]
    fn strips_hop_by_hop_but_keeps_te_trailers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h[header::TE], "trailers");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn each_hop_by_hop_header_goes_also_alone() {
        for name in
            ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "proxy-authenticate", "te"]
        {
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("gzip"));
            h.insert("x-kept", HeaderValue::from_static("yes"));
            strip_hop_by_hop(&mut h);
            assert_eq!(h.keys().map(|n| n.as_str()).collect::<Vec<_>>(), ["x-kept"], "{name}");
        }
    }
}
