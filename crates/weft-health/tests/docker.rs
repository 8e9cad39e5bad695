//! Docker checks.
//!
//! No Docker engine can run on the machines these tests run on, so the client is tested against
//! a STAND-IN: a fake Docker Engine API served by hyper on a unix socket in the test, answering the
//! three endpoints a docker check uses (create exec, start exec, inspect exec) the way the engine
//! documents them (201 + `{"Id"}`, a multiplexed output stream, `{"ExitCode","Running"}`, and
//! `{"message"}` errors). It proves the client speaks that protocol; it does not prove a real engine
//! agrees.

mod support;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use support::*;
use tokio::net::UnixListener;
use weft_api::kinds::{CheckSpec, DockerCheck};
use weft_health::{probe, Monitor, ProbeContext, Status};

/// What the fake engine knows: the execs created (id → command) and how often each was inspected.
#[derive(Default)]
struct Engine {
    execs: Mutex<HashMap<String, Vec<String>>>,
    inspections: Mutex<HashMap<String, usize>>,
    next: AtomicUsize,
    requests: Mutex<Vec<String>>,
}

/// A socket path unique to this test process and call.
fn socket_path(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "weft-health-{}-{tag}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Serves the fake engine on a fresh unix socket; the only running container is `web`.
/// The command's last argument is its exit code; its output is `ran <args>`.
async fn fake_engine() -> (Arc<Engine>, PathBuf) {
    let path = socket_path("engine");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let engine = Arc::new(Engine::default());
    let e = engine.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let e = e.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let e = e.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(&e, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    (engine, path)
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, "application/json".parse().unwrap());
    r
}

async fn answer(e: &Engine, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    e.requests.lock().unwrap().push(format!("{method} {path}"));
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (Method::POST, ["containers", container, "exec"]) => {
            if *container != "web" {
                return reply(StatusCode::NOT_FOUND, json!({ "message": format!("No such container: {container}") }));
            }
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["AttachStdout"], true, "{v}");
            assert_eq!(v["AttachStderr"], true, "{v}");
            let cmd: Vec<String> = serde_json::from_value(v["Cmd"].clone()).unwrap();
            let id = format!("e{}", e.next.fetch_add(1, Ordering::Relaxed));
            e.execs.lock().unwrap().insert(id.clone(), cmd);
            reply(StatusCode::CREATED, json!({ "Id": id }))
        }
        (Method::POST, ["exec", id, "start"]) => {
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["Detach"], false, "{v}");
            let Some(cmd) = e.execs.lock().unwrap().get(*id).cloned() else {
                return reply(StatusCode::NOT_FOUND, json!({ "message": "No such exec instance" }));
            };
            // The multiplexed stream: stdout frame, then a stderr frame.
            let mut stream = Vec::new();
            for (fd, text) in [(1u8, format!("ran {}\n", cmd.join(" "))), (2, "to stderr\n".into())] {
                stream.extend_from_slice(&[fd, 0, 0, 0]);
                stream.extend_from_slice(&(text.len() as u32).to_be_bytes());
                stream.extend_from_slice(text.as_bytes());
            }
            let mut r = Response::new(Full::new(Bytes::from(stream)));
            r.headers_mut()
                .insert(http::header::CONTENT_TYPE, "application/vnd.docker.multiplexed-stream".parse().unwrap());
            r
        }
        (Method::GET, ["exec", id, "json"]) => {
            let Some(cmd) = e.execs.lock().unwrap().get(*id).cloned() else {
                return reply(StatusCode::NOT_FOUND, json!({ "message": "No such exec instance" }));
            };
            let mut seen = e.inspections.lock().unwrap();
            let n = seen.entry(id.to_string()).or_default();
            *n += 1;
            // The first inspection still says running, as the engine may right after the stream ends.
            if *n == 1 {
                return reply(StatusCode::OK, json!({ "Running": true, "ExitCode": null }));
            }
            let code: i64 = cmd.last().and_then(|c| c.parse().ok()).unwrap_or(0);
            reply(StatusCode::OK, json!({ "Running": false, "ExitCode": code }))
        }
        _ => reply(StatusCode::NOT_FOUND, json!({ "message": "page not found" })),
    }
}

fn docker(socket: &std::path::Path, container: &str, args: &[&str]) -> CheckSpec {
    CheckSpec {
        docker: Some(DockerCheck {
            container: container.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            socket: socket.to_string_lossy().into_owned(),
        }),
        ..check("docker")
    }
}

#[tokio::test]
async fn docker_exec_exit_codes_against_a_stand_in_engine() {
    let (engine, socket) = fake_engine().await;
    let ctx = ProbeContext::new("default/web-1");

    let r = probe(&docker(&socket, "web", &["/bin/check", "0"]), &ctx).await;
    assert_eq!(r.status, Status::Passing, "{}", r.output);
    assert!(r.output.contains("ran /bin/check 0"), "{}", r.output);
    assert!(r.output.contains("to stderr"), "{}", r.output);
    assert_eq!(
        *engine.requests.lock().unwrap(),
        ["POST /containers/web/exec", "POST /exec/e0/start", "GET /exec/e0/json", "GET /exec/e0/json"]
    );

    let r = probe(&docker(&socket, "web", &["/bin/check", "1"]), &ctx).await;
    assert_eq!(r.status, Status::Warning, "{}", r.output);
    let r = probe(&docker(&socket, "web", &["/bin/check", "2"]), &ctx).await;
    assert_eq!(r.status, Status::Critical, "{}", r.output);
    assert!(r.output.contains("exit code 2"), "{}", r.output);

    let r = probe(&docker(&socket, "db", &["/bin/check", "0"]), &ctx).await;
    assert_eq!(r.status, Status::Critical, "{}", r.output);
    assert!(r.output.contains("No such container: db"), "{}", r.output);

    // Names that cannot be a container never reach the engine.
    let before = engine.requests.lock().unwrap().len();
    for bad in ["", "../etc", "web?x=1", "a b"] {
        let r = probe(&docker(&socket, bad, &["true"]), &ctx).await;
        assert_eq!(r.status, Status::Critical, "{bad:?}: {}", r.output);
    }
    let r = probe(&docker(&socket, "web", &[]), &ctx).await;
    assert_eq!(r.status, Status::Critical, "{}", r.output);
    assert_eq!(engine.requests.lock().unwrap().len(), before);

    let _ = std::fs::remove_file(&socket);
}

#[tokio::test]
async fn docker_check_runs_in_the_monitor() {
    let (_engine, socket) = fake_engine().await;
    let m = Monitor::with_script_checks(true);
    let mut spec = docker(&socket, "web", &["/bin/check", "0"]);
    spec.interval = ms(200);
    m.set_checks("default/web-1", vec![spec]);
    until_status(&m, "default/web-1", Status::Passing).await;
    let _ = std::fs::remove_file(&socket);
}

#[tokio::test]
async fn docker_without_an_engine_is_critical_and_says_one_is_needed() {
    let missing = socket_path("missing");
    let r = probe(&docker(&missing, "web", &["/bin/check"]), &ProbeContext::new("default/web-1")).await;
    assert_eq!(r.status, Status::Critical, "{}", r.output);
    assert!(r.output.contains("needs a running Docker engine"), "{}", r.output);

    let tcp = CheckSpec {
        docker: Some(DockerCheck {
            container: "web".into(),
            args: vec!["true".into()],
            socket: "tcp://127.0.0.1:2375".into(),
        }),
        ..check("docker")
    };
    let r = probe(&tcp, &ProbeContext::new("default/web-1")).await;
    assert_eq!(r.status, Status::Critical, "{}", r.output);
    assert!(r.output.contains("only a unix socket"), "{}", r.output);
}
