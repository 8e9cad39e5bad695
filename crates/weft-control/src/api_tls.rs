//! TLS on the HTTP API: which names its certificate carries, when plaintext is allowed, and the
//! answer a plaintext client gets from the TLS listener.
//!
//! ```text
//!  accept ─► first byte 0x16 (TLS record)? ─yes─► TLS handshake (serving cert) ─► HTTP/1.1 API
//!                                          └─no, "GET …"─► 400 "this API serves HTTPS", close
//! ```
//!
//! The API presents the control plane's serving certificate, the one the gRPC listener presents
//! ([`crate::grpc_tls`]): issued at each start by weft's own CA from a key made in this process
//! and kept in memory only, renewed at half-life and after `weft ca rotate`, with the
//! intermediate and root in its chain. Besides its SPIFFE ID and `control.weft` it names
//! `localhost`, the API's listen IP (127.0.0.1 and ::1 too when that is a wildcard) and every
//! `--api-san`. With an external CA selected (MeshConfig `ca`), the API's certificate still comes
//! from weft's own CA, so clients trust the root of `weft ca --pem` (`<data-dir>/ca/root.pem`).
//!
//! Plaintext is served only with `--api-plaintext`, and only on a loopback address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Where weft's own CA keeps its root certificate, under the data directory: what API clients on
/// the control plane's host trust by default.
pub const ROOT_FILE: &str = "ca/root.pem";

/// Names every API certificate carries.
pub const DEFAULT_NAMES: [&str; 2] = ["localhost", weft_identity::control::CONTROL_SERVER_NAME];

/// How the API is served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiTls {
    /// Serve plaintext HTTP instead of TLS (`--api-plaintext`; loopback only).
    pub plaintext: bool,
    /// Extra names for the certificate (`--api-san`): DNS names or IP addresses.
    pub sans: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiTlsError {
    #[error("--api-plaintext serves the HTTP API without TLS, so it is allowed only on a loopback address, and the API listens on {0}; drop --api-plaintext (clients then use https:// and the root of `weft ca --pem`) or listen on 127.0.0.1 / [::1] with --api")]
    PlaintextNotLoopback(SocketAddr),
    #[error("--api-san {0:?}: not a DNS name (letters, digits, '-', dot-separated labels of 1-63, optionally starting with \"*.\") nor an IP address; give a name clients dial, e.g. --api-san cp.example.com or --api-san 10.0.0.5")]
    BadName(String),
}

impl ApiTls {
    /// Checked at start: plaintext only on loopback, and every `--api-san` a usable name.
    pub fn validate(&self, listen: SocketAddr) -> Result<(), ApiTlsError> {
        if self.plaintext && !listen.ip().is_loopback() {
            return Err(ApiTlsError::PlaintextNotLoopback(listen));
        }
        for name in &self.sans {
            check_name(name)?;
        }
        Ok(())
    }

    /// The names of the serving certificate: [`DEFAULT_NAMES`], the listen IP (loopback addresses
    /// too when it is a wildcard), then `--api-san`.
    pub fn names(&self, listen: SocketAddr) -> Vec<String> {
        let mut out: Vec<String> = DEFAULT_NAMES.iter().map(|s| s.to_string()).collect();
        let ip = listen.ip();
        if ip.is_unspecified() {
            out.push(Ipv4Addr::LOCALHOST.to_string());
            out.push(Ipv6Addr::LOCALHOST.to_string());
        } else {
            out.push(ip.to_string());
        }
        out.extend(self.sans.iter().cloned());
        let mut seen = std::collections::HashSet::new();
        out.retain(|n| seen.insert(n.to_ascii_lowercase()));
        out
    }
}

/// A DNS name (optionally a `*.` wildcard) or an IP address.
pub fn check_name(name: &str) -> Result<(), ApiTlsError> {
    if name.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let bad = || ApiTlsError::BadName(name.to_string());
    let rest = name.strip_prefix("*.").unwrap_or(name);
    if rest.is_empty() || rest.len() > 253 {
        return Err(bad());
    }
    for label in rest.trim_end_matches('.').split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

/// Whether the first byte a client sent starts a TLS record (a ClientHello is a handshake
/// record, type 22).
pub fn is_tls_record(first: u8) -> bool {
    first == 0x16
}

/// What a plaintext HTTP client gets from the TLS listener instead of an API answer (a whole
/// HTTP/1.1 response, so the client shows the reason rather than a reset).
pub fn plaintext_refusal() -> Vec<u8> {
    let body = serde_json::json!({
        "error": "this control plane serves its HTTP API over TLS only, and this client spoke plaintext HTTP: \
                  use https:// (curl --cacert ROOT, the root from `weft ca --pem`), or weft --server https://HOST:PORT \
                  with --ca-file / WEFT_CA_FILE"
    })
    .to_string();
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_is_refused_off_loopback() {
        let plain = ApiTls { plaintext: true, sans: vec![] };
        assert!(plain.validate("127.0.0.1:15080".parse().unwrap()).is_ok());
        assert!(plain.validate("[::1]:15080".parse().unwrap()).is_ok());
        for addr in ["0.0.0.0:15080", "10.0.0.5:15080", "[::]:15080"] {
            let e = plain.validate(addr.parse().unwrap()).unwrap_err().to_string();
            assert!(e.contains("--api-plaintext") && e.contains(addr), "{e}");
        }
        assert!(ApiTls::default().validate("0.0.0.0:15080".parse().unwrap()).is_ok(), "TLS anywhere");
    }

    #[test]
    fn names_cover_the_listen_address_and_extras() {
        let tls = ApiTls { plaintext: false, sans: vec!["cp.example.com".into(), "localhost".into()] };
        assert_eq!(
            tls.names("0.0.0.0:1".parse().unwrap()),
            ["localhost", "control.weft", "127.0.0.1", "::1", "cp.example.com"]
        );
        assert_eq!(
            tls.names("10.0.0.5:1".parse().unwrap()),
            ["localhost", "control.weft", "10.0.0.5", "cp.example.com"]
        );
    }

    #[test]
    fn a_bad_api_san_is_named() {
        for bad in ["", "a b", "-x.com", "x..com", "é.com", "*."] {
            let e = ApiTls { plaintext: false, sans: vec![bad.into()] }
                .validate("127.0.0.1:1".parse().unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains("--api-san"), "{e}");
        }
        for good in ["cp.example.com", "*.example.com", "10.1.2.3", "fd00::1", "cp"] {
            check_name(good).unwrap();
        }
    }

    #[test]
    fn the_refusal_is_one_complete_http_response() {
        let text = String::from_utf8(plaintext_refusal()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head} / {}", body.len());
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }
}
