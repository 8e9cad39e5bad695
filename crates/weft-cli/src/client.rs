//! The CLI's client for the control plane's HTTP API, over TLS. Server, token and CA come from
//! flags, then `WEFT_SERVER` / `WEFT_TOKEN` / `WEFT_CA_FILE`, then the defaults (127.0.0.1:15080,
//! and the admin token and root CA that `weft control` keeps in its data directory).
//!
//! ```text
//!  --server https://HOST:PORT | HOST:PORT ─► TLS, verified against --ca-file (default <data-dir>/ca/root.pem)
//!  --server http://HOST:PORT              ─► plaintext (only a control plane run with --api-plaintext answers)
//! ```

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

/// How long to wait for the control plane to accept a connection: a lost SYN is retried by the
/// kernel for two minutes, which is no answer a user waits for.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

pub const DEFAULT_SERVER: &str = "127.0.0.1:15080";

/// Where `weft control` keeps its root CA's certificate, under its data directory.
pub const ROOT_FILE: &str = weft_control::api_tls::ROOT_FILE;

/// `export WEFT_SERVER=… WEFT_TOKEN=… WEFT_CA_FILE=…`, what `weft up` prints so that the CLI in
/// another shell reaches its control plane.
pub fn export_line(server: &str, token: &str, ca_file: &std::path::Path) -> String {
    format!("export WEFT_SERVER={server} WEFT_TOKEN={token} WEFT_CA_FILE={}", ca_file.display())
}

/// [`export_line`] for a control plane running in this process.
pub fn export_cp(cp: &weft_control::ControlPlane) -> String {
    export_line(&cp.api_url(), &cp.admin_token, &cp.api_ca_file)
}

/// A [`Conn`] to a control plane running in this process, as its admin.
pub fn conn_cp(cp: &weft_control::ControlPlane) -> Conn {
    Conn { ca_file: Some(cp.api_ca_file.clone()), ..Conn::new(cp.api_url(), Some(cp.admin_token.clone())) }
}

/// The default data directory of `weft control`: `$WEFT_DATA_DIR`, else `$HOME/.weft`.
pub fn default_data_dir() -> PathBuf {
    if let Ok(d) = std::env::var("WEFT_DATA_DIR") {
        return PathBuf::from(d);
    }
    std::env::var("HOME").map(|h| PathBuf::from(h).join(".weft")).unwrap_or_else(|_| PathBuf::from(".weft"))
}

#[derive(clap::Args, Clone, Debug)]
pub struct Conn {
    /// Control plane HTTP API: `https://HOST:PORT` or `HOST:PORT` (TLS, the default), or
    /// `http://HOST:PORT` for a control plane run with --api-plaintext (loopback only).
    #[arg(long, global = true, env = "WEFT_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// API token (default: the admin token in the control plane's data directory on this host).
    #[arg(long, global = true, env = "WEFT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data directory of a `weft control` on this host, whose admin token and root CA to use when
    /// there is no --token / --ca-file (default: ~/.weft).
    #[arg(long, global = true, env = "WEFT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The root CA (PEM) that the API's certificate must chain to: what `weft ca --pem` prints
    /// (default: ca/root.pem in --data-dir).
    #[arg(long, global = true, env = "WEFT_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

/// Where `--server` points, and how to talk to it.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    tls: bool,
    /// `host:port` as given (brackets kept for IPv6).
    addr: String,
    /// The host alone, as the certificate must name it.
    host: String,
}

fn target(server: &str) -> anyhow::Result<Target> {
    let (tls, rest) = if let Some(r) = server.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = server.strip_prefix("http://") {
        (false, r)
    } else if server.contains("://") {
        bail!("--server {server:?}: use https://HOST:PORT (or HOST:PORT), or http://HOST:PORT for a plaintext API")
    } else {
        (true, server)
    };
    let addr = rest.trim_end_matches('/').to_string();
    let host = match addr.rsplit_once(':') {
        Some((h, port)) if !h.is_empty() && port.parse::<u16>().is_ok() => {
            h.trim_start_matches('[').trim_end_matches(']').to_string()
        }
        _ => bail!("--server {server:?}: expected HOST:PORT, e.g. https://127.0.0.1:15080"),
    };
    Ok(Target { tls, addr, host })
}

/// Any byte stream hyper can speak HTTP/1.1 on.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

impl Conn {
    /// A connection to `server` with this token, the CA found as usual.
    pub fn new(server: impl Into<String>, token: Option<String>) -> Conn {
        Conn { server: server.into(), token, data_dir: None, ca_file: None }
    }

    /// [`export_line`] for this connection (its token and CA file set).
    pub fn export_line(&self) -> String {
        let ca = self.ca_file.clone().unwrap_or_else(|| self.data_dir_and_source().0.join(ROOT_FILE));
        export_line(&self.server, self.token.as_deref().unwrap_or_default(), &ca)
    }

    fn data_dir_and_source(&self) -> (PathBuf, &'static str) {
        match &self.data_dir {
            Some(dir) => (dir.clone(), "--data-dir / WEFT_DATA_DIR"),
            None => (default_data_dir(), "the default data directory"),
        }
    }

    fn token(&self) -> anyhow::Result<String> {
        if let Some(t) = &self.token {
            return Ok(t.clone());
        }
        let (dir, from) = self.data_dir_and_source();
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

    /// The roots the API's certificate must chain to, and where they were read from.
    fn roots(&self) -> anyhow::Result<(Vec<rustls_pki_types::CertificateDer<'static>>, String)> {
        let (path, from) = match &self.ca_file {
            Some(f) => (f.clone(), "--ca-file / WEFT_CA_FILE".to_string()),
            None => {
                let (dir, from) = self.data_dir_and_source();
                (dir.join(ROOT_FILE), format!("{ROOT_FILE} in {from}"))
            }
        };
        // A weft data directory's root during a root rotation: the new root waits in
        // `ca/next/root.pem` until the rotation finishes, and the API switches to it just before
        // the files move, so trust it too.
        let next = rotation_root(&path).and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t + "\n" + &next,
            // Between the moves of a finishing rotation, only `next/` holds a root.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !next.is_empty() => next,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "no root CA to verify the control plane's API with: {} ({from}) does not exist. Pass --ca-file FILE \
                 or set WEFT_CA_FILE=FILE, FILE holding the root that `weft ca --pem` prints on the control \
                 plane's host (it is <data-dir>/{ROOT_FILE} there); or --data-dir DIR for a control plane on this host",
                path.display()
            ),
            Err(e) => {
                bail!("cannot read the root CA {} ({from}): {e}; pass --ca-file or set WEFT_CA_FILE", path.display())
            }
        };
        let roots = weft_identity::https::certs_from_pem(&text, "the root CA file").with_context(|| {
            format!("{} ({from}): expected the PEM that `weft ca --pem` prints (pass --ca-file)", path.display())
        })?;
        Ok((roots, format!("{} ({from})", path.display())))
    }

    /// Connects to the API (TLS unless `http://`), with every failure explained. A certificate
    /// of an unknown root is tried once more with the CA files read again: a root rotation
    /// finishing on the control plane's host swaps the server's certificate and the files within
    /// a moment of each other.
    async fn connect(&self, t: &Target) -> anyhow::Result<Box<dyn Io>> {
        match self.connect_once(t).await {
            Err(Attempt::UnknownRoot(_)) => self.connect_once(t).await.map_err(Attempt::into_error),
            r => r.map_err(Attempt::into_error),
        }
    }

    async fn connect_once(&self, t: &Target) -> Result<Box<dyn Io>, Attempt> {
        // Read before connecting: a missing CA file is the user's to fix, whatever the network does.
        let roots = if t.tls { Some(self.roots()?) } else { None };
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&t.addr));
        let addr = &t.addr;
        let tcp = match connect.await {
            Ok(s) => s.with_context(|| {
                format!("cannot reach the control plane at {addr} (is `weft control` running? set --server)")
            })?,
            Err(_) => {
                return Err(anyhow::anyhow!(
                    "no answer from the control plane at {addr} within {}s (is the address reachable from here? set --server)",
                    CONNECT_TIMEOUT.as_secs()
                )
                .into())
            }
        };
        let Some((roots, ca_from)) = roots else {
            return Ok(Box::new(tcp));
        };
        let cfg = weft_identity::https::client_config(&roots).with_context(|| format!("the root CA {ca_from}"))?;
        let name = rustls_pki_types::ServerName::try_from(t.host.clone())
            .with_context(|| format!("--server {:?}: {:?} is not a host name or IP address", self.server, t.host))?;
        let handshake = tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp);
        match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(Ok(tls)) => Ok(Box::new(tls)),
            Ok(Err(e)) if unknown_root(&e) => Err(Attempt::UnknownRoot(tls_error(&e, t, &ca_from))),
            Ok(Err(e)) => Err(tls_error(&e, t, &ca_from).into()),
            Err(_) => Err(anyhow::anyhow!(
                "the control plane at {addr} did not complete the TLS handshake within {}s",
                CONNECT_TIMEOUT.as_secs()
            )
            .into()),
        }
    }

    /// Sends one request to the API; returns the answer with its body still to read (for
    /// streaming callers). [`Conn::call`] is the JSON form.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: String,
    ) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
        let t = target(&self.server)?;
        let token = self.token()?;
        let io = self.connect(&t).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &t.addr)
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from(body)))?;
        sender.send_request(req).await.with_context(|| format!("the control plane at {} closed the connection", t.addr))
    }

    /// Calls the API; returns the JSON body of a 2xx answer, or the API's error message.
    pub async fn call(&self, method: &str, path: &str, body: String) -> anyhow::Result<Value> {
        let resp = self.request(method, path, body).await?;
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
        let resp = self.request("GET", path, String::new()).await?;
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

/// Why a connection attempt failed: an unknown root is worth one more try (see [`Conn::connect`]).
enum Attempt {
    UnknownRoot(anyhow::Error),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Attempt {
    fn from(e: anyhow::Error) -> Self {
        Attempt::Other(e)
    }
}

impl Attempt {
    fn into_error(self) -> anyhow::Error {
        match self {
            Attempt::UnknownRoot(e) | Attempt::Other(e) => e,
        }
    }
}

/// `<dir>/ca/next/root.pem` for `<dir>/ca/root.pem` (a weft data directory's root file).
fn rotation_root(path: &std::path::Path) -> Option<PathBuf> {
    let ca = path.parent().filter(|p| p.file_name() == Some("ca".as_ref()))?;
    (path.file_name() == Some("root.pem".as_ref())).then(|| ca.join("next").join("root.pem"))
}

fn unknown_root(e: &std::io::Error) -> bool {
    use rustls::{CertificateError, Error as TlsError};
    matches!(
        e.get_ref().and_then(|r| r.downcast_ref::<TlsError>()),
        Some(TlsError::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature))
    )
}

/// A failed TLS handshake, said in the user's terms: which side is wrong and the flag that fixes it.
fn tls_error(e: &std::io::Error, t: &Target, ca_from: &str) -> anyhow::Error {
    use rustls::{CertificateError, Error as TlsError};
    let addr = &t.addr;
    let plaintext = || {
        anyhow::anyhow!(
            "the control plane at {addr} answered in plaintext, not TLS (it runs with --api-plaintext): use \
             --server http://{addr}, or restart it without --api-plaintext ({e})"
        )
    };
    match e.get_ref().and_then(|r| r.downcast_ref::<TlsError>()) {
        Some(TlsError::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature)) => {
            anyhow::anyhow!(
                "the control plane's certificate at {addr} does not chain to the root CA in {ca_from}: pass \
                 --ca-file FILE or set WEFT_CA_FILE=FILE with the root that `weft ca --pem` prints for this \
                 control plane ({e})"
            )
        }
        Some(TlsError::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => anyhow::anyhow!(
            "the control plane's certificate does not name {:?}, the host in --server: dial a name it carries \
             (localhost, its --api address) or restart `weft control` with --api-san {} ({e})",
            t.host,
            t.host
        ),
        Some(TlsError::InvalidMessage(_)) => plaintext(),
        _ if e.kind() == std::io::ErrorKind::UnexpectedEof => plaintext(),
        _ => anyhow::anyhow!("TLS handshake with the control plane at {addr} failed: {e}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_forms() {
        let t = target("127.0.0.1:15080").unwrap();
        assert_eq!(t, Target { tls: true, addr: "127.0.0.1:15080".into(), host: "127.0.0.1".into() });
        assert!(target("https://cp.example.com:443/").unwrap().tls);
        assert_eq!(target("https://cp.example.com:443/").unwrap().host, "cp.example.com");
        let plain = target("http://[::1]:15080").unwrap();
        assert_eq!((plain.tls, plain.addr.as_str(), plain.host.as_str()), (false, "[::1]:15080", "::1"));
        for bad in ["ftp://x:1", "https://x", "x:notaport", ":15080"] {
            assert!(target(bad).unwrap_err().to_string().contains("--server"), "{bad}");
        }
    }

    #[test]
    fn a_data_directorys_root_brings_the_rotations_new_root() {
        let dir = std::env::temp_dir().join(format!("weft-client-roots-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("ca/next")).unwrap();
        let root = |td| weft_identity::Authority::new_root(td, weft_identity::DEFAULT_CA_LIFETIME).unwrap().cert_pem();
        std::fs::write(dir.join("ca/root.pem"), root("a")).unwrap();
        let conn = Conn { data_dir: Some(dir.clone()), ..Conn::new("127.0.0.1:1", None) };
        assert_eq!(conn.roots().unwrap().0.len(), 1);
        std::fs::write(dir.join("ca/next/root.pem"), root("a")).unwrap();
        assert_eq!(conn.roots().unwrap().0.len(), 2, "old and new during a rotation");
        std::fs::remove_file(dir.join("ca/root.pem")).unwrap();
        assert_eq!(conn.roots().unwrap().0.len(), 1, "between the moves of a finishing rotation");
        let other = Conn { ca_file: Some(dir.join("ca/next/root.pem")), ..conn };
        assert_eq!(other.roots().unwrap().0.len(), 1, "any other file is read alone");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_ca_file_names_the_flags() {
        let c = Conn { ca_file: Some("/nonexistent/root.pem".into()), ..Conn::new("127.0.0.1:1", Some("t".into())) };
        let e = c.roots().unwrap_err().to_string();
        assert!(e.contains("--ca-file") && e.contains("WEFT_CA_FILE") && e.contains("weft ca --pem"), "{e}");
    }
}
