//! The web dashboard: served by the control plane on its own port (`weft control --dashboard`,
//! on in `weft up`), embedded in the binary and working offline (no CDN, no Node.js): pages are
//! rendered here as HTML, charts and the topology are SVG drawn here, and one small script
//! (`assets/dash.js`) refreshes pages, runs the tap and sends admin actions.
//!
//! ```text
//!  browser ──► dashboard port (loopback) ──► session cookie? ──no──► /login (token or one-time code)
//!                                                  │ yes: the session's token
//!            pages (server-rendered) ──┐           ▼
//!            /api/v1/... (page JS) ────┴──► api::router(state) in-process, `Authorization: Bearer <token>`
//! ```
//!
//! Every piece of data comes from the HTTP API, called in-process with the session's token, so
//! the API's roles decide what a session sees (read tokens) and may do (admin/operator tokens:
//! removing a link, deleting a resource), and every action lands in the audit log under the
//! token's name. On a loopback address it serves plain HTTP; elsewhere HTTPS with the API's own
//! certificate (so only when the API is on TLS), with `Secure` cookies.

mod forward;
mod html;
mod login;
mod pages;
mod pages_more;
pub mod session;
mod svg;

use crate::api::ApiState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The dashboard's default address in `weft control --dashboard` without a value.
pub const DEFAULT_DASHBOARD: &str = "127.0.0.1:15090";
/// The session cookie's name.
pub const COOKIE: &str = "weft_session";

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error(
        "--dashboard {0}: off a loopback address the dashboard is served over HTTPS with the API's certificate, and the API runs with --api-plaintext; drop --api-plaintext, or use a loopback address (--dashboard 127.0.0.1:15090) and an SSH tunnel"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot listen for the dashboard on {addr}: {source} (is another control plane running? pick another --dashboard port)")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// The dashboard's address and its sessions; the API's `POST /v1/dashboard/login` and `weft up`
/// make one-time login URLs with it.
pub struct Dashboard {
    addr: SocketAddr,
    /// Served over HTTPS (off loopback), with `Secure` cookies.
    tls: bool,
    pub sessions: session::Sessions,
}

impl Dashboard {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it is served over HTTPS (off loopback) rather than plain HTTP (on loopback).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// `http://<addr>/`, or `https://` off loopback.
    pub fn url(&self) -> String {
        format!("{}://{}/", if self.tls { "https" } else { "http" }, self.addr)
    }

    /// A URL that logs the browser in once as `token` (valid for [`session::CODE_LIFETIME`]).
    pub fn login_url(&self, token: &str) -> String {
        format!("{}login?code={}", self.url(), self.sessions.code_for(token))
    }
}

/// On a loopback address the dashboard serves plain HTTP; elsewhere HTTPS with the API's
/// certificate, so only when the API is on TLS (`api_tls`). Refuses the rest.
pub fn check_addr(addr: SocketAddr, api_tls: bool) -> Result<(), DashboardError> {
    match addr.ip().is_loopback() || api_tls {
        true => Ok(()),
        false => Err(DashboardError::NotLoopback(addr)),
    }
}

/// Binds the dashboard's listener ([`check_addr`] first).
pub async fn bind(addr: SocketAddr, api_tls: bool) -> Result<(TcpListener, Arc<Dashboard>), DashboardError> {
    check_addr(addr, api_tls)?;
    let l = TcpListener::bind(addr).await.map_err(|source| DashboardError::Bind { addr, source })?;
    let addr = l.local_addr().map_err(|source| DashboardError::Bind { addr, source })?;
    let tls = !addr.ip().is_loopback();
    Ok((l, Arc::new(Dashboard { addr, tls, sessions: Default::default() })))
}

/// What every handler of the dashboard holds.
pub(crate) struct Ctx {
    pub dash: Arc<Dashboard>,
    pub api: Router,
    /// This control plane's cluster name and trust domain (shown in the header).
    pub cluster: String,
    pub trust_domain: String,
    pub state: Arc<ApiState>,
}

pub(crate) type C = State<Arc<Ctx>>;

/// The dashboard's router over the API of `state`.
pub fn router(dash: Arc<Dashboard>, state: Arc<ApiState>) -> Router {
    let ctx = Arc::new(Ctx {
        dash,
        api: crate::api::router(state.clone()),
        cluster: state.mesh.cluster.name.clone(),
        trust_domain: state.mesh.trust_domain.clone(),
        state,
    });
    let private = Router::new()
        .route("/", get(pages::overview))
        .route("/services", get(pages::services))
        .route("/services/{namespace}/{name}", get(pages_more::service))
        .route("/topology", get(pages::topology))
        .route("/proxies", get(pages_more::proxies))
        .route("/proxies/{id}", get(pages_more::proxy))
        .route("/tap", get(pages_more::tap))
        .route(
            "/assets/dash.js",
            get(|| async { asset("text/javascript; charset=utf-8", include_str!("assets/dash.js")) }),
        )
        .route("/assets/dash.css", get(|| async { asset("text/css; charset=utf-8", include_str!("assets/dash.css")) }))
        .route("/api/{*rest}", axum::routing::any(forward::forward))
        .route("/logout", axum::routing::post(login::logout))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), require_session));
    Router::new()
        .route("/login", get(login::page).post(login::submit))
        .merge(private)
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(ctx)
}

/// Serves the dashboard until `stop`, with the API server's limits; over TLS with `tls`.
pub async fn serve(
    listener: TcpListener,
    dash: Arc<Dashboard>,
    state: Arc<ApiState>,
    limits: crate::http_serve::Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    crate::http_serve::serve(listener, router(dash, state), limits, tls, stop).await
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn not_found(req: Request) -> Response {
    let path = req.uri().path().to_string();
    let session = req.extensions().get::<session::Session>().cloned();
    let body = format!(
        "<h1>Not found</h1><p>No page at <code>{}</code>. <a href=\"/\">Back to the overview</a>.</p>",
        html::esc(&path)
    );
    (StatusCode::NOT_FOUND, html::Page::new("Not found", "", session.as_ref(), "", "").render(body)).into_response()
}

/// The session's cookie value in a request.
pub(crate) fn session_id(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// Everything but `/login` needs a live session: pages redirect to the login page, `/api/...`
/// answers 401.
async fn require_session(State(ctx): C, mut req: Request, next: Next) -> Response {
    let id = session_id(req.headers());
    let mut session = id.as_deref().and_then(|id| ctx.dash.sessions.get(id));
    // The token may have been revoked or expired since: the session ends with it.
    if let (Some(s), Some(id)) = (&session, &id) {
        if login::check_token(&ctx.state, &s.token).is_err() {
            ctx.dash.sessions.close(id);
            session = None;
        }
    }
    match session {
        Some(s) => {
            req.extensions_mut().insert(s);
            next.run(req).await
        }
        None if req.uri().path().starts_with("/api/") => (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": "no dashboard session: log in at /login"})),
        )
            .into_response(),
        None => {
            let next_path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
            Redirect::to(&format!("/login?next={}", html::url_encode(next_path))).into_response()
        }
    }
}

/// Headers on every answer: no framing, no sniffing, scripts only from here, nothing cached.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// `POST /v1/dashboard/login` on the API: a one-time URL that logs a browser into the dashboard
/// as the caller's token (so it grants nothing the caller does not have). 404 when the control
/// plane runs no dashboard.
pub fn api_routes() -> Router<Arc<ApiState>> {
    Router::new().route("/v1/dashboard/login", axum::routing::post(login::api_login_url))
}
