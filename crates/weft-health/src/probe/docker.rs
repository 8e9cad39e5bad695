//! `docker`: run a command inside a container through the Docker Engine API on its unix socket,
//! and map the exit code as a script check (0 passing, 1 warning, other critical):
//!
//! ```text
//!   POST /containers/{container}/exec   {"Cmd": args, "AttachStdout": true, ...}  → 201 {"Id"}
//!   POST /exec/{id}/start               {"Detach": false, "Tty": false}           → 200 output stream
//!   GET  /exec/{id}/json                                                          → {"ExitCode"}
//! ```
//!
//! Each call uses its own connection (`start` takes its connection over for the output stream).

use super::http::AbortOnDrop;
use super::{error_chain, exit_status, or_none, output_text, OUTPUT_MAX};
use crate::CheckResult;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::net::UnixStream;
use weft_api::kinds::DockerCheck;

/// How much of an exec's output stream is kept before demultiplexing.
const STREAM_KEEP: usize = 64 * 1024;
/// How much of an API answer is read.
const ANSWER_KEEP: usize = 1024 * 1024;

pub(super) async fn probe(check: &DockerCheck) -> CheckResult {
    match exec(check).await {
        Ok((code, output)) => CheckResult::new(
            exit_status(Some(code)),
            format!("docker exec in {}: exit code {code}; output: {}", check.container, or_none(&output)),
        ),
        Err(why) => CheckResult::critical(format!("docker exec in {}: {why}", check.container)),
    }
}

/// The exit code and output of the command; the error as text.
async fn exec(check: &DockerCheck) -> Result<(i64, String), String> {
    let socket = socket_path(&check.socket)?;
    let container = &check.container;
    if container.is_empty() || !container.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
        return Err(format!("{container:?} is not a container name or id (letters, digits, '_', '.', '-')"));
    }
    if check.args.is_empty() {
        return Err("no command: give `args`, e.g. [\"/bin/check\"]".into());
    }

    let create = json!({
        "AttachStdin": false,
        "AttachStdout": true,
        "AttachStderr": true,
        "Tty": false,
        "Cmd": check.args,
    });
    let (status, body) =
        call(socket, Method::POST, &format!("/containers/{container}/exec"), Some(&create), ANSWER_KEEP).await?;
    if status != StatusCode::CREATED && status != StatusCode::OK {
        return Err(api_error("create exec", status, &body));
    }
    let id = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("Id")?.as_str().map(str::to_string))
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .ok_or_else(|| format!("create exec: no exec id in the answer: {}", output_text(&body)))?;

    let start = json!({ "Detach": false, "Tty": false });
    let (status, stream) = call(socket, Method::POST, &format!("/exec/{id}/start"), Some(&start), STREAM_KEEP).await?;
    if status != StatusCode::OK {
        return Err(api_error("start exec", status, &stream));
    }
    let output = output_text(&demux(&stream));

    // The stream ends when the command does; the engine may take a moment to record its exit.
    loop {
        let (status, body) = call(socket, Method::GET, &format!("/exec/{id}/json"), None, ANSWER_KEEP).await?;
        if status != StatusCode::OK {
            return Err(api_error("inspect exec", status, &body));
        }
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("inspect exec: not JSON ({e}): {}", output_text(&body)))?;
        let running = v.get("Running").and_then(Value::as_bool).unwrap_or(false);
        match v.get("ExitCode").and_then(Value::as_i64) {
            Some(code) if !running => return Ok((code, output)),
            // The check's timeout bounds this wait.
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// `/var/run/docker.sock` or `unix:///var/run/docker.sock`.
fn socket_path(socket: &str) -> Result<&str, String> {
    let path = socket.strip_prefix("unix://").unwrap_or(socket);
    if path.contains("://") || path.is_empty() {
        return Err(format!("socket {socket:?}: only a unix socket path is supported, e.g. /var/run/docker.sock"));
    }
    Ok(path)
}

/// One request on a fresh connection to the engine; the status and up to `keep` bytes of the
/// body (the rest is read and dropped, so the call returns when the engine is done).
async fn call(
    socket: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
    keep: usize,
) -> Result<(StatusCode, Vec<u8>), String> {
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        format!(
            "cannot reach the Docker Engine API at unix://{socket}: {e}; a docker check needs a \
             running Docker engine on this host"
        )
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("Docker Engine API: {}", error_chain(&e)))?;
    let _conn = AbortOnDrop(tokio::spawn(conn));
    let mut req = Request::builder().method(method.clone()).uri(path).header(header::HOST, "docker");
    let bytes = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    let req = req.body(Full::new(bytes)).map_err(|e| format!("invalid Docker API request {method} {path}: {e}"))?;
    let resp = sender.send_request(req).await.map_err(|e| format!("{method} {path}: {}", error_chain(&e)))?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut seen = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("{method} {path}: {}", error_chain(&e)))?;
        if let Some(data) = frame.data_ref() {
            let room = keep.saturating_sub(seen.len());
            seen.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    Ok((status, seen))
}

/// The engine's `{"message": ...}` error, or the body as text.
fn api_error(step: &str, status: StatusCode, body: &[u8]) -> String {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_string))
        .unwrap_or_else(|| output_text(body));
    format!("{step}: {status}: {message}")
}

/// Joins the payloads of a multiplexed stream (8-byte headers: stream, 0, 0, 0, length
/// big-endian). A stream that is not multiplexed (a TTY exec) is returned as it is.
fn demux(stream: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let header_ok = rest.len() >= 8 && rest[0] <= 2 && rest[1..4] == [0, 0, 0];
        if !header_ok {
            return if out.is_empty() { stream.to_vec() } else { out };
        }
        let len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let payload = &rest[8..];
        let take = len.min(payload.len());
        out.extend_from_slice(&payload[..take]);
        rest = &payload[take..];
        if out.len() >= OUTPUT_MAX {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demux_joins_frames_and_passes_raw_streams() {
        let mut s = vec![1, 0, 0, 0, 0, 0, 0, 3];
        s.extend_from_slice(b"ok\n");
        s.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 4]);
        s.extend_from_slice(b"err\n");
        assert_eq!(demux(&s), b"ok\nerr\n");
        assert_eq!(demux(b"plain tty output"), b"plain tty output");
        // A frame cut short keeps what arrived; no panic on any input.
        assert_eq!(demux(&[1, 0, 0, 0, 0, 0, 0, 9, b'a']), b"a");
        assert_eq!(demux(&[1, 0, 0]), [1, 0, 0]);
    }

    #[test]
    fn socket_paths() {
        assert_eq!(socket_path("/var/run/docker.sock"), Ok("/var/run/docker.sock"));
        assert_eq!(socket_path("unix:///run/d.sock"), Ok("/run/d.sock"));
        assert!(socket_path("tcp://1.2.3.4:2375").is_err());
        assert!(socket_path("").is_err());
    }
}
