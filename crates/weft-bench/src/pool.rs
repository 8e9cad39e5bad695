//! The weft client sidecar's pool of connections to its peer, read from the counters on its admin
//! port (`/metrics`) at both ends of a measured window: how many requests went out on a
//! connection that was already open. The issue asks for ≥ 99 % at steady state.

use serde::Serialize;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Requests sent on an already-open peer connection.
const REUSED: &str = "weft_peer_connection_reuses_total";
/// Peer connections opened (each for a request that found no open one).
const OPENED: &str = "weft_peer_connections_total";

/// The pool's counters, or their growth over a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PoolUse {
    pub reused: u64,
    pub opened: u64,
}

impl PoolUse {
    /// Share of requests that found an open connection; `None` when there were none.
    pub fn ratio(&self) -> Option<f64> {
        let all = self.reused + self.opened;
        (all > 0).then(|| self.reused as f64 / all as f64)
    }

    /// What the counters grew by since `before`.
    pub fn since(&self, before: &PoolUse) -> PoolUse {
        PoolUse { reused: self.reused.saturating_sub(before.reused), opened: self.opened.saturating_sub(before.opened) }
    }
}

/// Sums windows (rounds, modes). Through std's `Sum` for `Option`, a sum of `Option<PoolUse>`
/// is `None` if any window is, so a total never hides a window that was not read.
impl std::iter::Sum for PoolUse {
    fn sum<I: Iterator<Item = PoolUse>>(iter: I) -> PoolUse {
        iter.fold(PoolUse::default(), |a, p| PoolUse { reused: a.reused + p.reused, opened: a.opened + p.opened })
    }
}

/// [`read`] on tokio's blocking pool, so that the runtime driving the load is never held up;
/// `None` without an admin address (setups other than weft).
pub async fn read_async(admin: Option<SocketAddr>) -> Option<Result<PoolUse, String>> {
    let admin = admin?;
    Some(tokio::task::spawn_blocking(move || read(admin)).await.unwrap_or_else(|e| Err(format!("pool counters: {e}"))))
}

/// Reads the counters from a weft proxy's admin address.
pub fn read(admin: SocketAddr) -> Result<PoolUse, String> {
    let fetch = || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    };
    let text = fetch().map_err(|e| format!("GET http://{admin}/metrics: {e}"))?;
    parse(&text).map_err(|e| format!("http://{admin}/metrics: {e}"))
}

/// Finds the two counters in Prometheus text (a response's head before it is skipped over).
pub fn parse(text: &str) -> Result<PoolUse, String> {
    let value = |name: &str| -> Result<u64, String> {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .ok_or_else(|| format!("no {name} sample"))?;
        let v = line.split_whitespace().nth(1).ok_or_else(|| format!("{name} has no value"))?;
        let v: f64 = v.parse().map_err(|_| format!("{name} has a value that is not a number: {v:?}"))?;
        Ok(v as u64)
    };
    Ok(PoolUse { reused: value(REUSED)?, opened: value(OPENED)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_prometheus_text_and_differenced() {
        let text = "HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\n\
            # HELP weft_peer_connections mTLS HTTP/2 connections opened to peer proxies\n\
            # TYPE weft_peer_connections counter\n\
            weft_peer_connections_total 2\n\
            weft_peer_connection_reuses_total 1998\n\
            weft_peer_connections_totalx 99\n";
        let after = parse(text).unwrap();
        assert_eq!(after, PoolUse { reused: 1998, opened: 2 });
        assert_eq!(after.ratio(), Some(0.999));
        let window = after.since(&PoolUse { reused: 998, opened: 2 });
        assert_eq!(window, PoolUse { reused: 1000, opened: 0 });
        assert_eq!(window.ratio(), Some(1.0));
        assert_eq!(PoolUse::default().ratio(), None);
        let total: Option<PoolUse> = [Some(window), Some(after)].into_iter().sum();
        assert_eq!(total, Some(PoolUse { reused: 2998, opened: 2 }));
        let total: Option<PoolUse> = [Some(window), None].into_iter().sum();
        assert_eq!(total, None, "a window not read is not counted as zero");
        assert!(parse("weft_peer_connections_total 1\n").unwrap_err().contains(REUSED));
        assert!(parse("weft_peer_connections_total x\nweft_peer_connection_reuses_total 1")
            .unwrap_err()
            .contains("not a number"));
    }
}
