//! Test support for weft, compiled once and shared by every crate's tests:
//! - [`Pki`]: a real root + intermediate CA and workload certificates, in memory or as files
//! - [`eventually`]: poll a condition with a deadline (tests never sleep to wait)
//! - [`http_echo`], [`tcp_echo`]: the demo apps on `127.0.0.1:0`
//! - [`https1_request`]: one HTTP/1.1 request over TLS (the control plane's API is on TLS)
//! - [`Tap`]: a TCP relay that records the bytes it carries, to prove what is on the wire
//! - [`netns`]: network namespaces with veth links, for tests that need a real network (root)

pub mod dashboards;
pub mod netns;
pub mod otlp;
pub mod python;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_identity::{Authority, CertStore, Leaf, SpiffeId, TrustBundle, DEFAULT_CA_LIFETIME, DEFAULT_LEAF_LIFETIME};

pub const TRUST_DOMAIN: &str = "cluster.local";

/// Logs for tests, once; `RUST_LOG` picks the level.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// Polls `check` until it returns `Some`, or panics with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A mesh PKI: root → intermediate → workload leaves.
pub struct Pki {
    pub root: Authority,
    pub intermediate: Authority,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    pub fn new() -> Self {
        let root = Authority::new_root(TRUST_DOMAIN, DEFAULT_CA_LIFETIME).expect("root");
        let intermediate = root.new_intermediate("test", DEFAULT_CA_LIFETIME).expect("intermediate");
        Pki { root, intermediate }
    }

    pub fn id(ns: &str, sa: &str) -> SpiffeId {
        SpiffeId::workload(TRUST_DOMAIN, ns, sa).expect("id")
    }

    pub fn leaf(&self, ns: &str, sa: &str) -> Leaf {
        self.intermediate.issue(&Self::id(ns, sa), DEFAULT_LEAF_LIFETIME).expect("leaf")
    }

    pub fn bundle(&self) -> TrustBundle {
        self.root.bundle()
    }

    pub fn store(&self, ns: &str, sa: &str) -> CertStore {
        CertStore::new(self.leaf(ns, sa), self.bundle()).expect("store")
    }

    /// Writes `<sa>.pem`, `<sa>-key.pem` and `bundle.pem` into `dir` (key generated here, for
    /// tests of the file-based identity); returns the three paths.
    pub fn write_files(&self, dir: &Path, ns: &str, sa: &str) -> (String, String, String) {
        let key = weft_identity::LeafKey::generate(&Self::id(ns, sa)).expect("key");
        let key_pem = key_pem_of(&key);
        let chain = self
            .intermediate
            .sign_csr(&key.csr_der().expect("csr"), &Self::id(ns, sa), DEFAULT_LEAF_LIFETIME)
            .expect("sign");
        let chain_pem = TrustBundle::new(chain).to_pem();
        let p = |f: String| dir.join(f).to_string_lossy().into_owned();
        let (c, k, b) = (p(format!("{sa}.pem")), p(format!("{sa}-key.pem")), p("bundle.pem".into()));
        std::fs::write(&c, chain_pem).expect("write cert");
        std::fs::write(&k, key_pem).expect("write key");
        std::fs::write(&b, self.bundle().to_pem()).expect("write bundle");
        (c, k, b)
    }
}

fn key_pem_of(key: &weft_identity::LeafKey) -> String {
    key.private_key_pem()
}

/// Starts the demo HTTP echo (HTTP/1.1 + HTTP/2) on 127.0.0.1:0.
pub async fn http_echo(name: &str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let name = name.to_string();
    tokio::spawn(async move { weft_demo::serve_http_echo(l, &name).await });
    addr
}

/// Starts the demo TCP echo on 127.0.0.1:0.
pub async fn tcp_echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(weft_demo::serve_tcp_echo(l));
    addr
}

/// A plain HTTP/1.1 request on a fresh connection; returns status, headers and body.
pub async fn http1_request(addr: SocketAddr, req: http::Request<Full<Bytes>>) -> anyhow::Result<http::Response<Bytes>> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    let (parts, body) = resp.into_parts();
    Ok(http::Response::from_parts(parts, body.collect().await?.to_bytes()))
}

/// [`http1_request`] over TLS with `tls` (e.g. `ControlPlane::api_client_config`), the server
/// verified as `server_name` (an IP address or DNS name its certificate carries).
pub async fn https1_request(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    server_name: &str,
    req: http::Request<Full<Bytes>>,
) -> anyhow::Result<http::Response<Bytes>> {
    let stream = TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from(server_name.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(tls).connect(name, stream).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    let (parts, body) = resp.into_parts();
    Ok(http::Response::from_parts(parts, body.collect().await?.to_bytes()))
}

/// A request to an HTTP API at `addr`: over TLS verified by its IP address with `tls`, or in
/// plaintext without.
pub async fn api_request(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    req: http::Request<Full<Bytes>>,
) -> anyhow::Result<http::Response<Bytes>> {
    match tls {
        Some(tls) => https1_request(addr, tls, &addr.ip().to_string(), req).await,
        None => http1_request(addr, req).await,
    }
}

/// `GET path` over HTTP/1.1.
pub async fn http1_get(addr: SocketAddr, path: &str) -> anyhow::Result<http::Response<Bytes>> {
    let req = http::Request::get(path).header("host", "test").body(Full::new(Bytes::new()))?;
    http1_request(addr, req).await
}

/// An HTTP/2 (prior knowledge) client connection.
pub async fn http2_client(addr: SocketAddr) -> anyhow::Result<hyper::client::conn::http2::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// A TCP relay that records every byte it carries in both directions.
#[derive(Clone)]
pub struct Tap {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Tap {
    /// Listens on 127.0.0.1:0 and relays each connection to `to`.
    pub async fn start(to: SocketAddr) -> Tap {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let tap = Tap { addr: l.local_addr().expect("addr"), seen: Arc::default() };
        let seen = tap.seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((down, _)) = l.accept().await else {
                    continue;
                };
                let Ok(up) = TcpStream::connect(to).await else {
                    continue;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let (mut dr, mut dw) = down.into_split();
                    let (mut ur, mut uw) = up.into_split();
                    let s1 = seen.clone();
                    let a = async move {
                        let mut b = [0u8; 8192];
                        while let Ok(n) = dr.read(&mut b).await {
                            if n == 0 || uw.write_all(&b[..n]).await.is_err() {
                                break;
                            }
                            s1.lock().unwrap().extend_from_slice(&b[..n]);
                        }
                        let _ = uw.shutdown().await;
                    };
                    let b = async move {
                        let mut b = [0u8; 8192];
                        while let Ok(n) = ur.read(&mut b).await {
                            if n == 0 || dw.write_all(&b[..n]).await.is_err() {
                                break;
                            }
                            seen.lock().unwrap().extend_from_slice(&b[..n]);
                        }
                        let _ = dw.shutdown().await;
                    };
                    tokio::join!(a, b);
                });
            }
        });
        tap
    }

    pub fn seen(&self) -> Vec<u8> {
        self.seen.lock().unwrap().clone()
    }

    pub fn saw(&self, needle: &[u8]) -> bool {
        self.seen().windows(needle.len()).any(|w| w == needle)
    }
}
