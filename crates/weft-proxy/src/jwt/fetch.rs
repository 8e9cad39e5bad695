//! One HTTP(S) GET of a JSON document: an issuer's JWKS or its OpenID Connect discovery document.
//! HTTPS trusts the host's CA bundle (`/etc/ssl/certs/ca-certificates.crt`, or the file named by
//! `SSL_CERT_FILE`). Bounded in time and size; redirects are not followed.

use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpStream;

/// How long one fetch may take, connect to last byte.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest document read.
pub const MAX_DOCUMENT: usize = 1 << 20;
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// GETs `url` and reads its body as JSON; the error says what failed, for a log line.
pub async fn get_json(url: &str) -> Result<serde_json::Value, String> {
    match tokio::time::timeout(FETCH_TIMEOUT, get(url)).await {
        Ok(r) => r,
        Err(_) => Err(format!("GET {url}: no answer within {FETCH_TIMEOUT:?}")),
    }
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

async fn get(url: &str) -> Result<serde_json::Value, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("{url:?}: only http:// and https:// are fetched")),
    };
    let host = uri.host().ok_or_else(|| format!("{url:?} has no host"))?.to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let tcp = TcpStream::connect((bare.as_str(), port)).await.map_err(|e| format!("connect to {host}:{port}: {e}"))?;
    let io: Box<dyn Io> = if https {
        let name = rustls_pki_types::ServerName::try_from(bare.clone()).map_err(|e| format!("{host}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(client_config()?)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS to {host}:{port}: {e}"))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(&host);
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, "weft-proxy")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| format!("GET {url}: {e}"))?;
    if resp.status() != http::StatusCode::OK {
        return Err(format!("GET {url}: status {}", resp.status()));
    }
    let body = Limited::new(resp.into_body(), MAX_DOCUMENT)
        .collect()
        .await
        .map_err(|e| format!("GET {url}: reading the body: {e}"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))
}

/// The client TLS config, built once from the host's CA bundle.
fn client_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            use rustls_pki_types::pem::PemObject;
            let file = std::env::var("SSL_CERT_FILE").unwrap_or_else(|_| CA_BUNDLE.to_string());
            let mut roots = rustls::RootCertStore::empty();
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(&file)
                .map_err(|e| format!("reading CA bundle {file}: {e}"))?;
            for c in certs.flatten() {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(format!("no CA certificate in {file}: https JWKS cannot be verified"));
            }
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(cfg))
        })
        .clone()
}
