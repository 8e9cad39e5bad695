//! The CLI's client for the control plane's HTTP API. Server and token come from flags, then
//! `WEFT_SERVER` / `WEFT_TOKEN`, then the defaults (127.0.0.1:15080 and the admin token that
//! `weft control` wrote in its data directory).

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::path::PathBuf;

/// How long to wait for the control plane to accept a connection: a lost SYN is retried by the
/// kernel for two minutes, which is no answer a user waits for.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

pub const DEFAULT_SERVER: &str = "127.0.0.1:15080";

/// The default data directory of `weft control`: `$WEFT_DATA_DIR`, else `$HOME/.weft`.
pub fn default_data_dir() -> PathBuf {
    if let Ok(d) = std::env::var("WEFT_DATA_DIR") {
        return PathBuf::from(d);
    }
    std::env::var("HOME").map(|h| PathBuf::from(h).join(".weft")).unwrap_or_else(|_| PathBuf::from(".weft"))
}

#[derive(clap::Args, Clone, Debug)]
pub struct Conn {
    /// Control plane HTTP API address.
    #[arg(long, global = true, env = "WEFT_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// API token (default: the admin token in the control plane's data directory on this host).
    #[arg(long, global = true, env = "WEFT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data directory of a `weft control` on this host, whose admin token to use when there is
    /// no --token (default: ~/.weft).
    #[arg(long, global = true, env = "WEFT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl Conn {
    fn token(&self) -> anyhow::Result<String> {
        if let Some(t) = &self.token {
            return Ok(t.clone());
        }
        let (dir, from) = match &self.data_dir {
            Some(dir) => (dir.clone(), "--data-dir / WEFT_DATA_DIR"),
            None => (default_data_dir(), "the default data directory"),
        };
        let path = dir.join("admin.token");
        match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
            Ok(_) => bail!("the admin token file {} ({from}) is empty; pass --token or set WEFT_TOKEN", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "no API token: looked for the admin token in {} ({from}) and found none. `weft control` writes \
                 admin.token into its data directory: if it runs with --data-dir DIR, pass --data-dir DIR or set \
                 WEFT_DATA_DIR=DIR; on another host, pass --token or set WEFT_TOKEN (see `weft token create`)",
                path.display()
            ),
            Err(e) => bail!(
                "cannot read the admin token {} ({from}): {e}; pass --token or set WEFT_TOKEN, or --data-dir for \
                 another data directory",
                path.display()
            ),
        }
    }

    /// Calls the API; returns the JSON body of a 2xx answer, or the API's error message.
    pub async fn call(&self, method: &str, path: &str, body: String) -> anyhow::Result<Value> {
        let addr = self.server.trim_start_matches("http://").trim_end_matches('/').to_string();
        let token = self.token()?;
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&addr));
        let stream = match connect.await {
            Ok(s) => s.with_context(|| {
                format!("cannot reach the control plane at {addr} (is `weft control` running? set --server)")
            })?,
            Err(_) => bail!(
                "no answer from the control plane at {addr} within {}s (is the address reachable from here? set --server)",
                CONNECT_TIMEOUT.as_secs()
            ),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &addr)
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from(body)))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let v: Value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        if !status.is_success() {
            let msg = v.get("error").and_then(|e| e.as_str()).map(str::to_string).unwrap_or_else(|| v.to_string());
            bail!("{msg} (HTTP {})", status.as_u16());
        }
        Ok(v)
    }
}

impl Conn {
    /// Calls `GET path` and hands each line of the answer (NDJSON, `GET /v1/tap`) to `on_line`
    /// as it arrives, until the answer ends or `on_line` returns `false` (which closes the
    /// connection: the server ends what it streams). An error answer is returned as [`Conn::call`]
    /// returns it.
    pub async fn stream_lines(
        &self,
        path: &str,
        mut on_line: impl FnMut(&str) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let addr = self.server.trim_start_matches("http://").trim_end_matches('/').to_string();
        let token = self.token()?;
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&addr)).await {
            Ok(s) => s.with_context(|| {
                format!("cannot reach the control plane at {addr} (is `weft control` running? set --server)")
            })?,
            Err(_) => {
                bail!("no answer from the control plane at {addr} within {}s (set --server)", CONNECT_TIMEOUT.as_secs())
            }
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method("GET")
            .uri(path)
            .header("host", &addr)
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body.collect().await?.to_bytes();
            let v: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
            let msg = v.get("error").and_then(|e| e.as_str()).map(str::to_string).unwrap_or_else(|| v.to_string());
            bail!("{msg} (HTTP {})", status.as_u16());
        }
        let mut buf: Vec<u8> = vec![];
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame?.data_ref() {
                buf.extend_from_slice(data);
            }
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                let text = String::from_utf8_lossy(&line[..i]);
                if !text.trim().is_empty() && !on_line(&text)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// Prints rows as aligned columns.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.len());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        crate::outln!("{}", parts.join("   ").trim_end())
    };
    line(header.iter().map(|s| s.to_string()).collect())?;
    for r in rows {
        line(r)?;
    }
    Ok(())
}
