//! `h2ping`: open an HTTP/2 connection with prior knowledge (no TLS) and send one PING; an
//! answered PING is passing, anything else critical.

use super::error_chain;
use crate::CheckResult;
use std::net::SocketAddr;
use tokio::net::TcpStream;

pub(super) async fn probe(addr: SocketAddr) -> CheckResult {
    let fail = |why: String| CheckResult::critical(format!("HTTP/2 PING to {addr}: {why}"));
    let stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return fail(format!("connect: {e}")),
    };
    let (_send, mut conn) = match h2::client::handshake(stream).await {
        Ok(pair) => pair,
        Err(e) => return fail(format!("handshake: {}", error_chain(&e))),
    };
    let Some(mut ping_pong) = conn.ping_pong() else {
        return fail("the connection gave no PING handle".into());
    };
    let started = tokio::time::Instant::now();
    // The connection must be driven for the PING to go out and its answer to come in.
    tokio::select! {
        pong = ping_pong.ping(h2::Ping::opaque()) => match pong {
            Ok(_) => CheckResult::passing(format!(
                "HTTP/2 PING to {addr}: answered in {:?}",
                started.elapsed()
            )),
            Err(e) => fail(error_chain(&e)),
        },
        closed = &mut conn => match closed {
            Ok(()) => fail("the server closed the connection without answering".into()),
            Err(e) => fail(format!("not an HTTP/2 server? {}", error_chain(&e))),
        },
    }
}
