//! A deliberately plain client, as an unmodified app would be: one TCP connection, HTTP/1.1 by
//! hand. Used by `weft up`'s demo traffic and by `weft demo-call`.

use anyhow::Context;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(10);

/// `GET path`; returns the status line and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(String, String)> {
    http_get_host(addr, path, None).await
}

/// [`http_get`] with this `Host` header (default: `addr`).
pub async fn http_get_host(addr: SocketAddr, path: &str, host: Option<&str>) -> anyhow::Result<(String, String)> {
    let mut s = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr)).await.context("connect timed out")??;
    let host = host.map_or_else(|| addr.to_string(), str::to_string);
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut buf)).await.context("no answer within 10s")??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").context("not an HTTP response")?;
    let status = head.lines().next().unwrap_or_default().to_string();
    Ok((status, body.to_string()))
}

/// Sends `data`, half-closes, and returns everything the peer sent until it closed.
pub async fn tcp_exchange(addr: SocketAddr, data: &[u8]) -> anyhow::Result<String> {
    let mut s = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr)).await.context("connect timed out")??;
    s.write_all(data).await?;
    s.shutdown().await?;
    let mut buf = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut buf)).await.context("no answer within 10s")??;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
