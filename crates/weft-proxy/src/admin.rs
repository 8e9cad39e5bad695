//! The admin port: `/live`, `/ready`, `/metrics` (Prometheus text), `/config_dump` (JSON, to
//! loopback callers only) and `/app-health/<port>/<path>` (a GET to the local app, for health
//! checks from outside the pod: with transparent interception the app port itself only takes
//! mTLS, as Istio's probe rewrite). Runs beside the data plane and keeps answering during drain
//! (`/ready` turns 503).

use crate::httputil::{full, Body};
use crate::Ctx;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpListener;

pub fn encode_metrics(ctx: &Ctx) -> String {
    ctx.outlier_metrics.refresh(&ctx.routes.load(), &ctx.outliers.clock);
    ctx.metrics.refresh_ca_expiry(&ctx.certs);
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &ctx.registry).is_err() {
        out.clear();
    }
    out
}

pub(crate) fn config_dump(ctx: &Ctx) -> serde_json::Value {
    let leaf = ctx.certs.leaf();
    let routes = ctx.routes.load();
    let mut services: Vec<_> = routes
        .services()
        .map(|s| {
            json!({
                "name": s.name, "namespace": s.namespace,
                "endpoints": s.endpoints.iter().map(|e| json!({
                    "address": e.address.to_string(), "proxy": e.proxy.to_string(),
                    "identity": e.identity.to_string(), "cluster": e.cluster, "network": e.network,
                    "locality": e.locality, "labels": e.labels,
                })).collect::<Vec<_>>(),
                "balance": s.balance.describe(&s.endpoints),
                "routes": s.route.as_ref().map(|t| t.describe()),
                "resilience": s.resilience.as_ref().map(|p| p.describe()),
            })
        })
        .collect();
    services.sort_by_key(|s| s["name"].as_str().unwrap_or_default().to_string());
    // Roots by their hex SHA-256 (as `GET /v1/ca` and `weft ca rotate` show them, without colons),
    // each with the trust domain it may sign for: what a root rotation is checked against.
    let bundle = ctx.certs.bundle();
    let local = leaf.id().trust_domain().to_string();
    let hex = |der: &[u8]| weft_identity::control::sha256(der).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let trust_bundle: Vec<_> = bundle
        .domains()
        .map(|(td, root)| json!({ "trust_domain": td.unwrap_or(&local), "sha256": hex(root) }))
        .collect();
    // The root (of this proxy's own trust domain) that its certificate chains to.
    let issuing_root = bundle
        .roots_for(&local, &local)
        .into_iter()
        .find(|r| leaf.verify_chain(&weft_identity::TrustBundle::new(vec![r.clone()])).is_ok());
    json!({
        "identity": leaf.id().to_string(),
        "certificate": {
            "expires_in_seconds": leaf.remaining().as_secs(),
            "not_after_unix": leaf.not_after().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "chain_length": leaf.chain().len(),
            "root_sha256": issuing_root.map(|r| hex(&r)),
        },
        "trust_bundle_roots": bundle.roots().len(),
        "trust_bundle": trust_bundle,
        "draining": ctx.drain.is_draining(),
        "open_connections": ctx.drain.open_connections(),
        "listeners": ctx.bound.get(),
        "config": ctx.cfg,
        "routes": services,
        // The rate limit of the service this proxy fronts (ResiliencePolicy `rateLimit`).
        "inbound_resilience": ctx.resilience.inbound().map(|p| p.describe()),
        "authorization": ctx.authz.describe(),
        "access_log": ctx.access_log.describe(),
        "inbound_ports_from_control_plane": routes.inbound_ports().iter()
            .map(|(port, proto)| json!({ "port": port, "protocol": proto }))
            .collect::<Vec<_>>(),
        // MeshConfig `extensionProviders`, as the control plane sent them (CUSTOM authorization).
        "extension_providers": ctx.ext_authz.specs(),
        // Tracing in force: the config file's `tracing`, else MeshConfig `tracing`.
        "tracing": ctx.tracing.spec(),
        // `<svc>.<ns>` or a mirror's `<svc>.<ns>@<cluster>`.
        "virtual_ips": routes.virtual_ips().iter()
            .map(|(ip, to)| json!({ "address": ip.to_string(), "routes_to": to }))
            .collect::<Vec<_>>(),
    })
}

fn text(status: StatusCode, body: String, ctype: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

/// `GET /app-health/<port>/<path>`: the app's answer to `GET /<path>` on one of its inbound ports,
/// as a status (the body is not relayed). 503 when the app cannot be reached or does not answer
/// within the connect timeout plus 5 s.
async fn app_health(ctx: &Ctx, rest: &str) -> Response<Body> {
    let (port, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(port) = port.parse::<u16>() else {
        return text(StatusCode::BAD_REQUEST, "use /app-health/<app port>/<path>\n".into(), "text/plain");
    };
    if ctx.app_port(port).is_none() {
        return text(
            StatusCode::NOT_FOUND,
            format!("{port} is not an inbound app port of this sidecar\n"),
            "text/plain",
        );
    }
    let addr = std::net::SocketAddr::new(ctx.app_host(), port);
    // Through the same app connection pools as proxied requests (HTTP/1.1).
    let probe = async {
        let req = Request::get(format!("/{path}"))
            .header(header::HOST, addr.to_string())
            .body(full(""))
            .map_err(|e| crate::error::ProxyError::App(e.to_string()))?;
        ctx.apps.send(port, crate::app::AppProto::Http1, req).await
    };
    let limit = std::time::Duration::from(ctx.cfg.timeouts.connect) + std::time::Duration::from_secs(5);
    match tokio::time::timeout(limit, probe).await {
        Ok(Ok(resp)) => text(resp.status(), format!("app {addr} answered {}\n", resp.status()), "text/plain"),
        Ok(Err(e)) => text(StatusCode::SERVICE_UNAVAILABLE, format!("app {addr}: {e}\n"), "text/plain"),
        Err(_) => {
            text(StatusCode::SERVICE_UNAVAILABLE, format!("app {addr}: no answer within {limit:?}\n"), "text/plain")
        }
    }
}

fn handle(ctx: &Ctx, req: &Request<Incoming>, local_caller: bool) -> Response<Body> {
    match req.uri().path() {
        "/live" => text(StatusCode::OK, "live\n".into(), "text/plain"),
        "/ready" => {
            if ctx.ready.load(Ordering::Acquire) && !ctx.drain.is_draining() {
                text(StatusCode::OK, "ready\n".into(), "text/plain")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into(), "text/plain")
            }
        }
        "/metrics" => {
            text(StatusCode::OK, encode_metrics(ctx), "application/openmetrics-text; version=1.0.0; charset=utf-8")
        }
        "/config_dump" | "/tap" if !local_caller => text(
            StatusCode::FORBIDDEN,
            format!("{} is only served to callers on this host (loopback)\n", req.uri().path()),
            "text/plain",
        ),
        "/config_dump" => {
            let body = serde_json::to_string_pretty(&config_dump(ctx)).unwrap_or_default();
            text(StatusCode::OK, body, "application/json")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "try /live /ready /metrics /config_dump /tap /app-health/<port>/<path>\n".into(),
            "text/plain",
        ),
    }
}

pub async fn serve(ctx: Arc<Ctx>, listener: TcpListener) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            // Out of file descriptors and the like: back off rather than spin.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let local_caller = peer.ip().is_loopback();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let ctx = ctx.clone();
                async move {
                    let resp = match req.uri().path().strip_prefix("/app-health/") {
                        Some(rest) => app_health(&ctx, rest).await,
                        // Live tap of this proxy alone (see `crate::tap::admin_tap`).
                        None if req.uri().path() == "/tap" && local_caller => {
                            crate::tap::admin_tap(ctx.clone(), req.uri().query())
                        }
                        None => handle(&ctx, &req, local_caller),
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
