//! Login and logout: a form taking an API token, or a one-time code (`/login?code=...`) made by
//! `weft up` / `weft dashboard`; both open a session and set its cookie.

use super::{html, session, Ctx, C, COOKIE};
use crate::api::{ApiError, ApiState};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    code: Option<String>,
    next: Option<String>,
}

/// The login form's fields (`application/x-www-form-urlencoded`): `token`, `next`.
fn form_field(body: &str, name: &str) -> Option<String> {
    let uri: axum::http::Uri = format!("/?{}", body.trim()).parse().ok()?;
    crate::api::query_pairs(&uri).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// Where to go after logging in: a path on this dashboard only (not `//host`, not a URL).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

/// The token's role if it may use the dashboard (any token that may read the API).
pub(crate) fn check_token(st: &ApiState, token: &str) -> Result<String, String> {
    let mut h = HeaderMap::new();
    let v = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
        .map_err(|_| "that is not a weft token (it has characters a token never has)".to_string())?;
    h.insert(header::AUTHORIZATION, v);
    crate::api::require_read(st, &h).map_err(|ApiError(_, msg)| msg)?;
    let role = crate::api::grant(st, &h).map(|g| g.role().to_string()).map_err(|ApiError(_, m)| m)?;
    Ok(role)
}

fn login_page(ctx: &Ctx, next: &str, error: Option<&str>) -> Response {
    let err = error.map(|e| format!("<p class=\"error\" id=\"login-error\">{}</p>", html::esc(e))).unwrap_or_default();
    let body = format!(
        r#"<section class="login">
<h1>weft dashboard</h1>
<p>Cluster <b>{cluster}</b> ({td}). Log in with an API token: an admin or operator token may act, a read token only sees.
<code>weft up</code> prints a one-time login URL; <code>weft dashboard</code> makes another.</p>
{err}
<form method="post" action="/login">
<input type="hidden" name="next" value="{next}">
<label>Token <input type="password" name="token" autocomplete="off" required autofocus></label>
<button type="submit">Log in</button>
</form>
</section>"#,
        cluster = html::esc(&ctx.cluster),
        td = html::esc(&ctx.trust_domain),
        next = html::esc(next),
    );
    let status = if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    (status, html::Page::new("Log in", "", None, &ctx.cluster, "").render(body)).into_response()
}

fn with_session(ctx: &Ctx, token: String, role: String, to: &str) -> Response {
    let id = ctx.dash.sessions.open(token, role);
    // `Secure` over HTTPS (off loopback); a browser keeps it to https:// then.
    let secure = if ctx.dash.is_tls() { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        session::SESSION_LIFETIME.as_secs()
    );
    let mut resp = Redirect::to(to).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `GET /login`: the form, or with `?code=` a one-time login.
pub(crate) async fn page(State(ctx): C, Query(q): Query<LoginQuery>) -> Response {
    let next = safe_next(q.next.as_deref());
    let Some(code) = q.code else { return login_page(&ctx, &next, None) };
    match ctx.dash.sessions.redeem(&code) {
        Some(token) => match check_token(&ctx.state, &token) {
            Ok(role) => with_session(&ctx, token, role, &next),
            Err(e) => login_page(&ctx, &next, Some(&format!("the login link's token no longer works: {e}"))),
        },
        None => login_page(
            &ctx,
            &next,
            Some("this login link was used already or has expired (they last 10 minutes, once); run `weft dashboard` for another, or log in with a token"),
        ),
    }
}

/// `POST /login` (form): checks the token as the API would and opens a session.
pub(crate) async fn submit(State(ctx): C, body: String) -> Response {
    let next = safe_next(form_field(&body, "next").as_deref());
    let Some(token) = form_field(&body, "token").filter(|t| !t.trim().is_empty()) else {
        return login_page(
            &ctx,
            &next,
            Some("token: empty; paste an API token (the admin token is in <data-dir>/admin.token)"),
        );
    };
    match check_token(&ctx.state, &token) {
        Ok(role) => with_session(&ctx, token.trim().to_string(), role, &next),
        Err(e) => login_page(&ctx, &next, Some(&format!("token refused: {e}"))),
    }
}

/// `POST /logout`: ends the session and clears the cookie.
pub(crate) async fn logout(State(ctx): C, headers: HeaderMap) -> Response {
    if let Some(id) = super::session_id(&headers) {
        ctx.dash.sessions.close(&id);
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("weft_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    resp
}

/// `POST /v1/dashboard/login` (API, any token that may read): `{"url": "http://.../login?code=..."}`.
pub(crate) async fn api_login_url(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    crate::api::require_read(&st, &headers)?;
    let Some(dash) = &st.dashboard else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "this control plane runs no dashboard: start it with `weft control --dashboard`".into(),
        ));
    };
    // The token as the caller sent it (the header forms `grant` accepts).
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' ').map(|(_, t)| t.trim().to_string()))
        .or_else(|| headers.get(crate::api::CONSUL_TOKEN).and_then(|v| v.to_str().ok()).map(|t| t.trim().to_string()))
        .unwrap_or_default();
    Ok(Json(
        json!({ "url": dash.login_url(&token), "dashboard": dash.url(), "expires_in_seconds": session::CODE_LIFETIME.as_secs() }),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn next_stays_on_the_dashboard() {
        assert_eq!(super::safe_next(Some("/services?x=1")), "/services?x=1");
        assert_eq!(super::safe_next(Some("//evil.example/")), "/");
        assert_eq!(super::safe_next(Some("https://evil.example/")), "/");
        assert_eq!(super::safe_next(Some("/\\evil")), "/");
        assert_eq!(super::safe_next(None), "/");
    }
}
