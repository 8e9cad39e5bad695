//! Opaque TCP from a peer proxy (ALPN `weft-tcp`) to the local app, on the server side.
//!
//! ```text
//! weft-tcp ─► port declared http1/http2? ── yes ─► refused (`tcp-on-http-port`)
//!                 │ no (auto, tcp)
//!                 ▼
//!   connect app; app ─► caller flows at once (server-speaks-first protocols)
//!   caller's first bytes ─► HTTP (detect::classify_any_method)? ── yes ─► refused (`http-over-tcp`)
//!                 │ no
//!                 ▼
//!               splice both ways
//! ```
//!
//! Why: the app trusts `x-weft-peer-identity` because the server sidecar sets it on every HTTP
//! request and drops any copy from outside. Bytes spliced raw would reach an HTTP app with
//! whatever headers the caller wrote, so HTTP never takes this path. A peer's ALPN is the
//! caller's word, not a fact: the port's declared protocol and the bytes themselves decide.

use crate::detect::{classify_any_method, Detected, MAX_DETECT};
use crate::metrics::{Direction, Peer, Proto};
use crate::Ctx;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use weft_api::proxy::Protocol;

/// Serves one `weft-tcp` connection from a peer to the app port `app` (declared `protocol`).
pub(crate) async fn serve<T>(ctx: Arc<Ctx>, mut tls: T, app: SocketAddr, protocol: Protocol, label: Peer)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    if matches!(protocol, Protocol::Http1 | Protocol::Http2) {
        ctx.metrics.protocol_error(Direction::inbound, "tcp-on-http-port");
        tracing::info!(src = %label.src.0, port = app.port(), "inbound: opaque TCP refused on a port declared HTTP");
        return;
    }
    ctx.metrics.detected.get_or_create(&Proto { direction: Direction::inbound, protocol: "tcp" }).inc();
    let src = label.src.clone();
    let mut log = ctx.access_log.tcp(Direction::inbound, &label.src, &ctx.id_label, Some(app));
    let mut guard = ctx.metrics.tcp_conn(label);
    let mut up = match crate::net::tcp_connect(app, ctx.mark(), ctx.cfg.timeouts.connect.into()).await {
        Ok(up) => up,
        Err(e) => {
            tracing::warn!(error = %e, "inbound: local app not reachable");
            if let Some(l) = &mut log {
                l.failed("UF", "app");
            }
            return;
        }
    };
    let (rest, rx, tx) = match first_bytes(&mut tls, &mut up).await {
        Ok(First::Http(d)) => {
            ctx.metrics.protocol_error(Direction::inbound, "http-over-tcp");
            if let Some(l) = &mut log {
                l.failed("DPE", "http-over-tcp");
            }
            tracing::info!(src = %src.0, port = app.port(), detected = d.as_str(),
                "inbound: HTTP over opaque TCP refused; HTTP must be carried as HTTP (ALPN h2)");
            return;
        }
        Ok(First::Opaque { rest, sent, relayed }) => (rest, sent, relayed),
        Err(_) => return,
    };
    if up.write_all(&rest).await.is_err() {
        return;
    }
    if let Ok((rx_rest, tx_rest)) = tokio::io::copy_bidirectional(&mut tls, &mut up).await {
        (guard.rx, guard.tx) = (rx + rest.len() as u64 + rx_rest, tx + tx_rest);
    }
    if let Some(l) = &mut log {
        l.bytes(guard.rx, guard.tx);
    }
}

enum First {
    /// The caller's bytes are HTTP (what it was classified as).
    Http(Detected),
    /// Not HTTP: the bytes read but not yet written to the app, how many were written already,
    /// and how many went from the app to the caller meanwhile.
    Opaque { rest: Vec<u8>, sent: u64, relayed: u64 },
}

/// Reads the caller's first bytes until [`classify_any_method`] decides (or [`MAX_DETECT`] bytes of a
/// possible request line: HTTP), relaying what the app sends meanwhile. No deadline: the caller
/// of a server-speaks-first protocol may stay silent as long as it likes, and whatever it sends
/// first is still looked at.
///
/// While undecided, what the caller sent is passed on at once (a text protocol's first word may
/// wait for an answer): undecided bytes never hold a whole request line (an HTTP/1 request line
/// is decided at its line feed, the HTTP/2 preface at its end), so no HTTP server can have acted
/// on them when the connection is closed for being HTTP.
async fn first_bytes<C, A>(caller: &mut C, app: &mut A) -> std::io::Result<First>
where
    C: AsyncRead + AsyncWrite + Unpin,
    A: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let (mut from_caller, mut from_app) = ([0u8; 1024], vec![0u8; 16 * 1024]);
    let (mut sent, mut relayed, mut app_done) = (0usize, 0u64, false);
    loop {
        tokio::select! {
            n = caller.read(&mut from_caller) => {
                let n = n?;
                if n == 0 {
                    // The caller ended before sending a whole request line: nothing an HTTP
                    // server would take as a request.
                    return Ok(First::Opaque { rest: buf.split_off(sent), sent: sent as u64, relayed });
                }
                buf.extend_from_slice(&from_caller[..n]);
                match classify_any_method(&buf) {
                    Some(d @ (Detected::Http1 | Detected::Http2)) => return Ok(First::Http(d)),
                    Some(Detected::Tcp | Detected::Tls) => {
                        return Ok(First::Opaque { rest: buf.split_off(sent), sent: sent as u64, relayed })
                    }
                    None if buf.len() >= MAX_DETECT => return Ok(First::Http(Detected::Http1)),
                    None => {
                        app.write_all(&buf[sent..]).await?;
                        app.flush().await?;
                        sent = buf.len();
                    }
                }
            }
            n = app.read(&mut from_app), if !app_done => {
                let n = n?;
                if n == 0 {
                    app_done = true;
                    caller.shutdown().await?;
                } else {
                    caller.write_all(&from_app[..n]).await?;
                    caller.flush().await?;
                    relayed += n as u64;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn first(sent: &[u8]) -> First {
        let (mut caller, mut caller_far) = tokio::io::duplex(64 * 1024);
        let (mut app, _app_far) = tokio::io::duplex(64 * 1024);
        caller_far.write_all(sent).await.unwrap();
        first_bytes(&mut caller, &mut app).await.unwrap()
    }

    #[tokio::test]
    async fn http_is_refused_and_other_bytes_pass() {
        for sent in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\r\nGET /",
            b"\nPROPFIND / HTTP/1.1\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert!(matches!(first(sent).await, First::Http(_)), "{sent:?}");
        }
        assert!(matches!(first(&[0x16, 3, 1]).await, First::Opaque { .. }));
        assert!(matches!(first(&[b'\n'; MAX_DETECT]).await, First::Http(_)));
    }

    /// A text protocol's first word, with no line end yet, reaches the app at once (it may wait
    /// for an answer); a request line is refused at its line feed, which never reaches the app.
    #[tokio::test]
    async fn a_partial_first_line_is_passed_on_until_it_proves_to_be_http() {
        for (then, http) in [(&b" and more\r\n"[..], false), (b" / HTTP/1.1\r\nx: y\r\n\r\n", true)] {
            let (mut caller, mut caller_far) = tokio::io::duplex(64 * 1024);
            let (mut app, mut app_far) = tokio::io::duplex(64 * 1024);
            let task = tokio::spawn(async move { first_bytes(&mut caller, &mut app).await.unwrap() });
            caller_far.write_all(b"PROPFIND").await.unwrap();
            let mut word = [0u8; 8];
            app_far.read_exact(&mut word).await.unwrap();
            assert_eq!(&word, b"PROPFIND");
            caller_far.write_all(then).await.unwrap();
            match task.await.unwrap() {
                First::Opaque { rest, sent: 8, .. } => assert!(!http && rest == then),
                First::Opaque { .. } => panic!("wrong split"),
                First::Http(_) => assert!(http),
            }
        }
    }

    /// The app speaks first; the caller's bytes, whenever they come, are still looked at.
    #[tokio::test]
    async fn app_greeting_flows_while_the_caller_is_silent() {
        for (sent, http) in [(&b"\x00binary"[..], false), (b"GET / HTTP/1.1\r\n", true)] {
            let (mut caller, mut caller_far) = tokio::io::duplex(64 * 1024);
            let (mut app, mut app_far) = tokio::io::duplex(64 * 1024);
            let task = tokio::spawn(async move { first_bytes(&mut caller, &mut app).await.unwrap() });
            app_far.write_all(b"220 hello\r\n").await.unwrap();
            let mut greeting = [0u8; 11];
            caller_far.read_exact(&mut greeting).await.unwrap();
            assert_eq!(&greeting, b"220 hello\r\n");
            caller_far.write_all(sent).await.unwrap();
            match task.await.unwrap() {
                First::Opaque { rest, sent: 0, relayed } => assert!(!http && rest == sent && relayed == 11),
                First::Opaque { .. } => panic!("sent early"),
                First::Http(_) => assert!(http),
            }
        }
    }
}
