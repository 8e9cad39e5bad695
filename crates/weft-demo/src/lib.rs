//! Demo workloads: what `weft up` runs behind its sidecars, what the tests and benchmarks use as
//! the app. Real servers on real sockets.
//!
//! HTTP echo (HTTP/1.1 and HTTP/2 on one port):
//! - `GET /anything` → JSON: app name, app version (`app_version`, also the `x-app-version`
//!   response header, when the app was given one: the demo's api-v1 and api-v2), method, path,
//!   HTTP version, the caller's
//!   `x-weft-peer-identity`, request body length, and every header or trailer that a framework
//!   could read as that header (`identity_like`: any case, `_` for `-`, as CGI-style servers fold
//!   them)
//! - `GET /bytes/<n>` → `n` bytes (benchmarks)
//! - `GET /status/<code>` → that status
//! - `GET /delay/<ms>` → answers after `ms` milliseconds
//! - `POST /stream` → streams each request body chunk back as it arrives, then trailers
//!   (`grpc-status: 0`, `x-echo-chunks: <n>`), as a bidirectional gRPC stream does
//! - `Upgrade:` any → `101 Switching Protocols`, then echoes raw bytes (WebSocket-style)
//! - `CONNECT host:port` → `200`, then echoes raw bytes (a tunnel)
#![forbid(unsafe_code)]

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub type Body = BoxBody<Bytes, hyper::Error>;

/// Header the destination sidecar sets to the caller's verified SPIFFE ID.
pub const PEER_IDENTITY: &str = "x-weft-peer-identity";

/// Response header naming the version of the app that answered (`weft demo-app --app-version`).
pub const APP_VERSION: &str = "x-app-version";

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn with_status(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r
}

/// Accepts the next connection; on errors such as running out of file descriptors it backs off
/// briefly instead of spinning.
async fn accept(listener: &TcpListener) -> tokio::net::TcpStream {
    loop {
        match listener.accept().await {
            Ok((s, _)) => return s,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

/// Serves the HTTP echo on `listener` until the task is dropped. `name` appears in every answer.
pub async fn serve_http_echo(listener: TcpListener, name: &str) {
    serve_http_echo_version(listener, name, None).await
}

/// [`serve_http_echo`] as one version of a service: `version` (e.g. `v2`) is in every answer, as
/// `app_version` in the JSON and as the `x-app-version` header, so a caller sees which version of
/// a split answered.
pub async fn serve_http_echo_version(listener: TcpListener, name: &str, version: Option<&str>) {
    serve_http_echo_failing(listener, name, version, 0).await
}

/// [`serve_http_echo_version`] that answers every `fail_every`-th request (counted over all
/// connections; 0: never) with `503`, for retry demos and benchmarks (a 1 % failure rate is
/// `fail_every` 100).
pub async fn serve_http_echo_failing(listener: TcpListener, name: &str, version: Option<&str>, fail_every: u64) {
    let name: Arc<str> = name.into();
    let version: Option<HeaderValue> = version.and_then(|v| HeaderValue::from_str(v).ok());
    let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
    loop {
        let stream = accept(&listener).await;
        let _ = stream.set_nodelay(true);
        let (name, version, served) = (name.clone(), version.clone(), served.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let (name, version) = (name.clone(), version.clone());
                let n = served.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                async move {
                    if fail_every > 0 && n % fail_every == 0 {
                        return Ok(with_status(StatusCode::SERVICE_UNAVAILABLE, "failed on purpose (--fail-every)\n"));
                    }
                    let mut resp = handle(&name, version.as_ref(), req).await;
                    if let Some(v) = version {
                        resp.headers_mut().insert(APP_VERSION, v);
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(name: &str, app_version: Option<&HeaderValue>, mut req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if req.headers().contains_key(header::UPGRADE) || req.method() == http::Method::CONNECT {
        return upgrade_echo(&mut req);
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().unwrap_or(0).min(16 << 20);
        return with_status(StatusCode::OK, vec![b'x'; n]);
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let status =
            code.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::BAD_REQUEST);
        return with_status(status, format!("{status}\n"));
    }
    if let Some(ms) = path.strip_prefix("/delay/") {
        let ms: u64 = ms.parse().unwrap_or(0).min(60_000);
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    if path == "/stream" {
        return stream_echo(req);
    }
    let method = req.method().to_string();
    let version = format!("{:?}", req.version());
    let peer = header_str(req.headers(), PEER_IDENTITY);
    let host = header_str(req.headers(), "host").or_else(|| req.uri().authority().map(|a| a.to_string()));
    let forged_count = req.headers().get_all(PEER_IDENTITY).iter().count();
    let mut identity_like = identity_like_in(req.headers(), "header");
    let h = req.headers();
    let trace = (header_str(h, "traceparent"), header_str(h, "b3"), header_str(h, "x-b3-spanid"));
    let body = match req.into_body().collect().await {
        Ok(b) => {
            if let Some(t) = b.trailers() {
                identity_like.extend(identity_like_in(t, "trailer"));
            }
            b.to_bytes()
        }
        Err(e) => return with_status(StatusCode::BAD_REQUEST, format!("body: {e}\n")),
    };
    let mut json = serde_json::json!({
        "app": name, "method": method, "path": path, "version": version, "host": host,
        "peer_identity": peer, "peer_identity_headers": forged_count, "identity_like": identity_like,
        "body_len": body.len(),
        // Trace context as the app got it (docs/observability.md, "Tracing").
        "traceparent": trace.0, "b3": trace.1, "x_b3_spanid": trace.2,
        "body": String::from_utf8_lossy(&body[..body.len().min(4096)]),
    });
    if let Some(v) = app_version.and_then(|v| v.to_str().ok()) {
        json["app_version"] = v.into();
    }
    let mut r = with_status(StatusCode::OK, json.to_string());
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `"<where> <name>: <value>"` for every field that reads as `x-weft-peer-identity` once case and
/// `_`/`-` are folded.
fn identity_like_in(h: &HeaderMap, place: &str) -> Vec<String> {
    h.iter()
        .filter(|(n, _)| n.as_str().replace('_', "-").eq_ignore_ascii_case(PEER_IDENTITY))
        .map(|(n, v)| format!("{place} {n}: {}", String::from_utf8_lossy(v.as_bytes())))
        .collect()
}

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn upgrade_echo(req: &mut Request<Incoming>) -> Response<Body> {
    let proto = req.headers().get(header::UPGRADE).cloned().unwrap_or(HeaderValue::from_static("websocket"));
    let is_connect = req.method() == http::Method::CONNECT;
    let on = hyper::upgrade::on(req);
    tokio::spawn(async move {
        if let Ok(up) = on.await {
            let mut io = TokioIo::new(up);
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    });
    if is_connect {
        // A tunnel: 200, then the echo.
        return with_status(StatusCode::OK, Bytes::new());
    }
    let mut r = with_status(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    r.headers_mut().insert(header::UPGRADE, proto);
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    r
}

fn stream_echo(req: Request<Incoming>) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, hyper::Error>>(16);
    tokio::spawn(async move {
        let mut body = req.into_body();
        let mut chunks = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(data) = f.into_data() {
                        if data.is_empty() {
                            continue;
                        }
                        chunks += 1;
                        if tx.send(Ok(Frame::data(data))).await.is_err() {
                            return;
                        }
                    }
                }
                Err(_) => return,
            }
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        if let Ok(v) = HeaderValue::from_str(&chunks.to_string()) {
            trailers.insert("x-echo-chunks", v);
        }
        let _ = tx.send(Ok(Frame::trailers(trailers))).await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    r
}

/// TCP echo: echoes bytes as they arrive; when the client half-closes, writes `bye\n` and closes.
pub async fn serve_tcp_echo(listener: TcpListener) {
    loop {
        let mut stream = accept(&listener).await;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) => {
                        let _ = stream.write_all(b"bye\n").await;
                        let _ = stream.shutdown().await;
                        return;
                    }
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
    }
}

/// The demo frontend: `GET /` calls `upstream` (`host:port`, through its sidecar) and answers with
/// what the backend said, so one request shows the whole mesh path. A name in `upstream` is
/// resolved by the system resolver and sent as the `Host`.
pub async fn serve_frontend(listener: TcpListener, name: &str, upstream: &str) {
    use hyper_util::client::legacy::Client;
    let client: Client<_, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(hyper_util::client::legacy::connect::HttpConnector::new());
    let name: Arc<str> = name.into();
    let upstream: Arc<str> = upstream.into();
    loop {
        let stream = accept(&listener).await;
        let (client, name, upstream) = (client.clone(), name.clone(), upstream.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (client, name, upstream) = (client.clone(), name.clone(), upstream.clone());
                async move {
                    let uri = format!("http://{upstream}{}", req.uri().path());
                    let call = Request::get(uri).body(Full::new(Bytes::new()));
                    let answer = match call {
                        Ok(call) => match client.request(call).await {
                            Ok(resp) => {
                                let status = resp.status().as_u16();
                                let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                let backend: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
                                    serde_json::Value::String(String::from_utf8_lossy(&body).into())
                                });
                                serde_json::json!({ "app": &*name, "upstream_status": status, "upstream": backend })
                            }
                            Err(e) => serde_json::json!({ "app": &*name, "error": e.to_string() }),
                        },
                        Err(e) => serde_json::json!({ "app": &*name, "error": e.to_string() }),
                    };
                    let mut r = with_status(StatusCode::OK, answer.to_string());
                    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn status_of(addr: std::net::SocketAddr) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /bytes/1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out.lines().next().unwrap_or("").to_string()
    }

    #[tokio::test]
    async fn fail_every_answers_every_nth_request_503() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { super::serve_http_echo_failing(l, "t", None, 3).await });
        let mut got = vec![];
        for _ in 0..6 {
            got.push(status_of(addr).await);
        }
        let failed: Vec<usize> = (0..6).filter(|i| got[*i].contains(" 503 ")).collect();
        assert_eq!(failed, vec![2, 5], "{got:?}");
    }
}
