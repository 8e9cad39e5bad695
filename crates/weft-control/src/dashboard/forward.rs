//! Calls into the HTTP API in-process, as the session's token: `/api/v1/...` from page scripts
//! (answers streamed through, so the tap's NDJSON flows as it comes), and JSON reads for the
//! server-rendered pages.

use super::{session::Session, Ctx, C};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use http_body_util::BodyExt;
use serde_json::Value;

/// The header a page script sends with every change (not GET): a cross-site form cannot set it.
pub const ACT_HEADER: &str = "x-weft-dashboard";

/// Sends one request to the API router as `token`.
pub(crate) async fn call(api: &Router, token: &str, mut req: Request) -> Response {
    let h = req.headers_mut();
    h.remove(header::COOKIE);
    h.remove(crate::api::CONSUL_TOKEN);
    match HeaderValue::from_str(&format!("Bearer {token}")) {
        Ok(v) => {
            h.insert(header::AUTHORIZATION, v);
        }
        Err(_) => return (StatusCode::UNAUTHORIZED, "the session's token is not a header value").into_response(),
    }
    let mut svc = api.clone();
    use tower_service::Service;
    if let Err(e) = std::future::poll_fn(|cx| Service::<Request>::poll_ready(&mut svc, cx)).await {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("API: {e}")).into_response();
    }
    match svc.call(req).await {
        Ok(r) => r,
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("API: {e}")).into_response(),
    }
}

/// `ANY /api/v1/...` → `/v1/...` with the session's token. Changes need [`ACT_HEADER`].
pub(crate) async fn forward(State(ctx): C, Extension(s): Extension<Session>, req: Request) -> Response {
    let Some(rest) = req.uri().path().strip_prefix("/api") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !rest.starts_with("/v1/") {
        return (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({"error": "only /api/v1/... reaches the API"})))
            .into_response();
    }
    if req.method() != Method::GET && req.method() != Method::HEAD && !req.headers().contains_key(ACT_HEADER) {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({"error": format!("a change through the dashboard needs the {ACT_HEADER} header (sent by its pages)")})),
        )
            .into_response();
    }
    let path_q = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    let (mut parts, body) = req.into_parts();
    parts.uri = match path_q.parse() {
        Ok(u) => u,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    parts.headers.remove(ACT_HEADER);
    // A fresh request to the API: the dashboard's own route parameters and session stay here.
    parts.extensions = Default::default();
    call(&ctx.api, &s.token, Request::from_parts(parts, body)).await
}

/// What a read of the API gave a page.
pub(crate) enum Got {
    Json(Value),
    /// 404/501: the endpoint (or the thing) is not there; pages show "no data yet".
    Missing,
    /// 401/403: the session's token may not read this.
    Denied(String),
    Failed(String),
}

impl Got {
    pub fn json(&self) -> Option<&Value> {
        match self {
            Got::Json(v) => Some(v),
            _ => None,
        }
    }
}

/// `GET path` as the session's token, parsed as JSON.
pub(crate) async fn get_json(ctx: &Ctx, s: &Session, path: &str) -> Got {
    let req = match Request::get(path).body(Body::empty()) {
        Ok(r) => r,
        Err(e) => return Got::Failed(e.to_string()),
    };
    let resp = call(&ctx.api, &s.token, req).await;
    let status = resp.status();
    let bytes = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Got::Failed(e.to_string()),
    };
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let msg =
        || v.get("error").and_then(|e| e.as_str()).map(str::to_string).unwrap_or_else(|| format!("HTTP {status}"));
    match status {
        s if s.is_success() => Got::Json(v),
        StatusCode::NOT_FOUND | StatusCode::NOT_IMPLEMENTED => Got::Missing,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Got::Denied(msg()),
        _ => Got::Failed(msg()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    /// A streamed answer (the tap's NDJSON) comes through as it is written, not when it ends.
    #[tokio::test]
    async fn answers_stream_through() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(Some(rx)));
        let api = Router::new().route(
            "/v1/stream",
            get(move |h: axum::http::HeaderMap| {
                let rx = rx.lock().unwrap().take().unwrap();
                async move {
                    assert_eq!(h[header::AUTHORIZATION], "Bearer tok");
                    assert!(h.get(header::COOKIE).is_none());
                    let stream =
                        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
                    Body::from_stream(stream)
                }
            }),
        );
        let req = Request::get("/v1/stream").header(header::COOKIE, "weft_session=x").body(Body::empty()).unwrap();
        let resp = call(&api, "tok", req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        tx.send(Ok(bytes::Bytes::from_static(b"{\"n\":1}\n"))).await.unwrap();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"{\"n\":1}\n");
        drop(tx);
        assert!(body.frame().await.is_none());
    }
}
