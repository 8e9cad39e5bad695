//! `http`: GET the URL on a fresh HTTP/1.1 connection (no keep-alive, as Consul); 2xx is passing,
//! 429 warning, anything else critical. The output carries the status line and the start of the
//! body.

use super::{error_chain, output_text, OUTPUT_MAX, USER_AGENT};
use crate::CheckResult;
use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub(super) async fn probe(url: &str) -> CheckResult {
    match get(url).await {
        Ok((status, body)) => {
            let output = format!("HTTP GET {url}: {status} Output: {body}");
            if status.is_success() {
                CheckResult::passing(output)
            } else if status == StatusCode::TOO_MANY_REQUESTS {
                CheckResult::warning(output)
            } else {
                CheckResult::critical(output)
            }
        }
        Err(why) => CheckResult::critical(format!("HTTP GET {url}: {why}")),
    }
}

/// The status and the first [`OUTPUT_MAX`] bytes of the body; the error as text.
async fn get(url: &str) -> Result<(StatusCode, String), String> {
    let uri: Uri = url.parse().map_err(|e| format!("invalid URL: {e}; write it as http://host:port/path"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err("https:// is not supported by weft-health yet (no TLS client is built \
                 in); probe a plain-HTTP port, or use a tcp check"
                .into())
        }
        _ => return Err("the URL must start with http://".into()),
    }
    let Some(authority) = uri.authority() else {
        return Err("the URL has no host; write it as http://host:port/path".into());
    };
    // `[::1]` in a URL is `::1` to the resolver.
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host, port)).await.map_err(|e| format!("connect to {host}:{port}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| error_chain(&e))?;
    // Aborted when the probe returns or is dropped by its timeout.
    let _conn = AbortOnDrop(tokio::spawn(conn));

    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = Request::get(path)
        .header(header::HOST, authority.as_str())
        .header(header::USER_AGENT, USER_AGENT)
        .header(header::ACCEPT, "text/plain, text/*, */*")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("invalid request: {e}"))?;
    let resp = sender.send_request(req).await.map_err(|e| error_chain(&e))?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut seen = Vec::new();
    while seen.len() < OUTPUT_MAX {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    seen.extend_from_slice(data);
                }
            }
            // The status is the verdict; a body cut short does not change it.
            Some(Err(_)) | None => break,
        }
    }
    Ok((status, output_text(&seen)))
}

/// Aborts a spawned task when dropped.
pub(super) struct AbortOnDrop<T>(pub(super) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
