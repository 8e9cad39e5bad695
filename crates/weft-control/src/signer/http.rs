//! The one HTTP/1.1 request an external CA call needs: JSON in, JSON out, over plain TCP (a local
//! test server) or TLS verified against the host's CA file (`/etc/ssl/certs/ca-certificates.crt`,
//! or `SSL_CERT_FILE`), bounded by a deadline and a body size.

use super::SignError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use std::time::Duration;

/// The largest answer read from a CA (a certificate chain is a few KB).
const MAX_BODY: usize = 1024 * 1024;
/// The system's CA bundle (Debian's ca-certificates), for `https://` endpoints.
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Overrides [`SYSTEM_CA_FILE`] (the variable OpenSSL reads too).
pub const ENV_SSL_CERT_FILE: &str = "SSL_CERT_FILE";

/// A parsed `http(s)://host[:port]` endpoint.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// What the `Host` header (and SigV4) says: `host` or `host:port` when the port is not the default.
    pub authority: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(r), _) => (true, r),
            (_, Some(r)) => (false, r),
            _ => return Err(format!("{url:?} must start with http:// or https://")),
        };
        let authority = rest.trim_end_matches('/').to_string();
        let default = if tls { 443 } else { 80 };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                (h.trim_matches(['[', ']']).to_string(), p.parse().map_err(|_| format!("{url:?}: bad port {p:?}"))?)
            }
            _ => (authority.clone(), default),
        };
        if host.is_empty() {
            return Err(format!("{url:?} names no host"));
        }
        Ok(Endpoint { tls, host, port, authority })
    }
}

/// One request: `(status, body)`, or why it could not be made within `timeout`.
pub async fn request(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), SignError> {
    let unreachable = |reason: String| SignError::Unreachable { endpoint: endpoint.authority.clone(), reason };
    let call = async {
        let tcp = tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| unreachable(format!("connect: {e}")))?;
        let mut req = http::Request::builder().method(method).uri(path).header("host", &endpoint.authority);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| unreachable(e.to_string()))?;
        let resp = if endpoint.tls {
            let config = tls_config().map_err(unreachable)?;
            let name = ServerName::try_from(endpoint.host.clone()).map_err(|e| unreachable(e.to_string()))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| unreachable(format!("TLS: {e}")))?;
            send(TokioIo::new(stream), req).await
        } else {
            send(TokioIo::new(tcp), req).await
        }
        .map_err(unreachable)?;
        Ok(resp)
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(unreachable(format!("no answer within {timeout:?} (MeshConfig ca.timeout)"))),
    }
}

async fn send<S>(io: TokioIo<S>, req: http::Request<Full<Bytes>>) -> Result<(u16, Vec<u8>), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, body.to_vec()))
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let path = std::env::var(ENV_SSL_CERT_FILE).unwrap_or_else(|_| SYSTEM_CA_FILE.into());
    let pem = std::fs::read(&path).map_err(|e| format!("reading the CA file {path} ({ENV_SSL_CERT_FILE}): {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| format!("{path}: {e}"))?;
        let _ = roots.add(c);
    }
    let config = rustls::ClientConfig::builder_with_provider(weft_identity::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// PEM text of one DER object (`CERTIFICATE REQUEST`, `CERTIFICATE`).
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Every certificate in PEM text, in order.
pub fn certs_from_pem(text: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, SignError> {
    CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SignError::Answer(format!("{what}: bad PEM: {e}")))
}
