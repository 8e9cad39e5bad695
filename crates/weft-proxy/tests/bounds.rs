//! What a peer or a few slow callers can make a proxy hold, run as real attacks: a peer that
//! opens many HTTP/2 streams with huge windows and never reads, a peer that holds thousands of
//! streams with ~60 KB header lists, callers that never read large responses, and more held
//! requests than a pooled connection has stream slots. The attacked proxy is a real child process
//! where its memory is the question (its RSS is read from /proc), and a normal caller's requests
//! must keep completing meanwhile. Scaled to run in seconds on two shared cores.

mod support;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::StreamBody;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use support::*;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use weft_testkit::{eventually, http1_get, Pki};

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");
const MIB: usize = 1 << 20;

/// The app behind the attacked sidecar. `/endless`: a body that never ends (16 KiB chunks of one
/// static buffer, so the app itself holds nothing); `/hold`: never answers; anything else: `ok`.
async fn app() -> SocketAddr {
    app_counting().await.0
}

/// 16 KiB chunks of `/endless` produced so far (nextest runs each test in a process of its own).
static ENDLESS_CHUNKS: AtomicUsize = AtomicUsize::new(0);

/// [`app`], and how many `/hold` requests it has received.
async fn app_counting() -> (SocketAddr, Arc<AtomicUsize>) {
    static CHUNK: [u8; 16384] = [b'x'; 16384];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let holds = Arc::new(AtomicUsize::new(0));
    let counter = holds.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let holds = counter.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let holds = holds.clone();
                    async move {
                        type Frames = Pin<
                            Box<
                                dyn futures_util::Stream<Item = Result<http_body::Frame<Bytes>, std::io::Error>> + Send,
                            >,
                        >;
                        let body: Frames = match req.uri().path() {
                            "/endless" => Box::pin(futures_util::stream::repeat_with(|| {
                                ENDLESS_CHUNKS.fetch_add(1, Ordering::Relaxed);
                                Ok(http_body::Frame::data(Bytes::from_static(&CHUNK)))
                            })),
                            "/hold" => {
                                holds.fetch_add(1, Ordering::SeqCst);
                                std::future::pending::<()>().await;
                                unreachable!()
                            }
                            _ => Box::pin(futures_util::stream::once(async {
                                Ok(http_body::Frame::data(Bytes::from_static(b"ok")))
                            })),
                        };
                        Ok::<_, std::convert::Infallible>(Response::new(StreamBody::new(body)))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(tcp);
                let server = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                let _ = server.serve_connection(io, svc).await;
            });
        }
    });
    (addr, holds)
}

/// A server sidecar running as its own process, in front of `app`.
struct Sidecar {
    child: Child,
    admin: SocketAddr,
    inbound: SocketAddr,
    _dir: std::path::PathBuf,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sidecar {
    fn start(pki: &Pki, app: SocketAddr, limits: &str, name: &str) -> Sidecar {
        let dir = std::env::temp_dir().join(format!("weft-bounds-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (c, k, b) = pki.write_files(&dir, SERVER.0, SERVER.1);
        let cfg = dir.join("p.yaml");
        std::fs::write(
            &cfg,
            format!(
                "identity: {{ cert: {c}, key: {k}, bundle: {b} }}\nadmin: {{ listen: '127.0.0.1:0' }}\n\
                 inbound: {{ listen: '127.0.0.1:0', ports: [{{ port: {} }}] }}\n{limits}\n",
                app.port()
            ),
        )
        .unwrap();
        let mut child = Command::new(BIN)
            .args(["run", "--workers", "1", "--config"])
            .arg(&cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (mut admin, mut inbound) = (None, None);
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if let Some(a) = line.strip_prefix("admin ") {
                admin = a.parse().ok();
            }
            if let Some(a) = line.strip_prefix("inbound ") {
                inbound = a.parse().ok();
            }
            if line == "ready" {
                break;
            }
        }
        Sidecar { child, admin: admin.unwrap(), inbound: inbound.unwrap(), _dir: dir }
    }

    /// Resident memory of the sidecar process, from /proc.
    fn rss(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap();
        kb.trim().trim_end_matches("kB").trim().parse::<usize>().unwrap() * 1024
    }

    async fn metrics(&self) -> String {
        let m = http1_get(self.admin, "/metrics").await.unwrap();
        String::from_utf8_lossy(m.body()).into_owned()
    }
}

/// A TLS stream whose reads can be stopped for good: after `stall`, the peer's data stays in the
/// kernel and its sender sees a full window and a full socket, as with a peer that never reads.
struct Stallable<T> {
    inner: T,
    stalled: Arc<AtomicBool>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Stallable<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.stalled.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stallable<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An mTLS HTTP/2 connection to the sidecar as a mesh peer (`default/web`) that advertises the
/// largest windows HTTP/2 allows; reads stop when `stalled` is set.
async fn peer_connection(
    pki: &Pki,
    sidecar: &Sidecar,
    app_port: u16,
    stalled: Arc<AtomicBool>,
) -> h2::client::SendRequest<Bytes> {
    let cfg = weft_identity::tls::client_config(&pki.store(CLIENT.0, CLIENT.1), &[b"h2"]).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = rustls_pki_types::ServerName::try_from(format!("{app_port}.api.default.local.weft")).unwrap();
    let tls = connector.connect(name, TcpStream::connect(sidecar.inbound).await.unwrap()).await.unwrap();
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(i32::MAX as u32)
        .initial_connection_window_size(i32::MAX as u32)
        .max_concurrent_reset_streams(0)
        .handshake::<_, Bytes>(Stallable { inner: tls, stalled })
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// A normal caller through its own client sidecar (in this process): `n` requests, each must
/// complete with 200.
async fn normal_caller_completes(pki: &Pki, app: SocketAddr, sidecar: SocketAddr, n: usize) {
    let client = start_client(pki.store(CLIENT.0, CLIENT.1), app, app, sidecar, &api_id(), "").await;
    for i in 0..n {
        let resp = tokio::time::timeout(Duration::from_secs(60), http1_get(client.addrs.upstreams[0], "/ok"))
            .await
            .unwrap_or_else(|_| panic!("request {i} of a normal caller stalled during the attack"))
            .unwrap();
        assert_eq!(resp.status(), 200, "request {i}: {:?}", resp.headers());
    }
}

fn metric(text: &str, name: &str) -> f64 {
    support::metric(text, name)
}

/// Scaled-down limits, so the attacks fill them quickly.
const LIMITS: &str = "limits: { max_concurrent_streams: 128, stream_buffer_bytes: 65536, \
                      connection_buffer_bytes: 1048576, proxy_buffer_bytes: 4194304, connection_header_bytes: 1048576 }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_huge_windows_that_never_reads_cannot_take_the_sidecars_memory() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app = app().await;
    let sidecar = Sidecar::start(&pki, app, LIMITS, "windows");
    // Settle the allocator with a few ordinary requests, then take the baseline.
    normal_caller_completes(&pki, app, sidecar.inbound, 5).await;
    let baseline = sidecar.rss();

    // 6 connections × 100 streams of endless responses, read by no one. Unbounded, each stream
    // would cost the sidecar h2's default 400 KiB send buffer: about 240 MB here.
    let (conns, streams) = (6, 100);
    let stalled = Arc::new(AtomicBool::new(false));
    let (mut held, mut senders) = (Vec::new(), Vec::new());
    for _ in 0..conns {
        let send = peer_connection(&pki, &sidecar, app.port(), stalled.clone()).await;
        let mut send = send.ready().await.unwrap();
        let mut heads = Vec::new();
        for _ in 0..streams {
            // As a client sidecar sends an HTTP/1 caller's request: one app connection each.
            let req = Request::get(format!("http://api:{}/endless", app.port()))
                .header("x-weft-orig-proto", "HTTP/1.1")
                .body(())
                .unwrap();
            let (resp, _) = send.send_request(req, true).unwrap();
            heads.push(resp);
            send = send.ready().await.unwrap();
        }
        for resp in heads {
            let resp = resp.await.unwrap();
            assert_eq!(resp.status(), 200, "{:?}", resp.headers());
            held.push(resp);
        }
        senders.push(send);
    }
    stalled.store(true, Ordering::SeqCst);

    // The bound: 4 MiB of queued bodies for the proxy (plus one 64 KiB chunk per connection
    // whose buffer was empty), each connection at most 1 MiB. Allow for the per-stream state
    // the buffers do not count (h2 streams, one app connection each) and the allocator.
    let bound = 32 * MIB;
    let buffered = eventually("the attack fills the proxy's buffer", Duration::from_secs(60), || {
        let rss = sidecar.rss();
        assert!(
            rss < baseline + bound,
            "sidecar RSS grew by {} MiB (bound {} MiB)",
            (rss - baseline) / MIB,
            bound / MIB
        );
        async {
            let m = sidecar.metrics().await;
            let buffered = metric(&m, "weft_http2_buffered_bytes");
            (buffered >= 3.0 * MIB as f64 && metric(&m, "weft_http2_buffer_waits_total") >= 1.0).then_some(buffered)
        }
    })
    .await;
    assert!(buffered <= (4 * MIB + conns * 65536) as f64, "buffered {buffered} beyond the bound");
    // A normal caller on its own connection is still served, bodies and all.
    normal_caller_completes(&pki, app, sidecar.inbound, 20).await;
    let m = sidecar.metrics().await;
    assert!(metric(&m, "weft_http2_buffered_bytes") <= (4 * MIB + conns * 65536) as f64, "{m}");
    let rss = sidecar.rss();
    eprintln!("sidecar RSS grew by {} KiB; buffered {buffered}", (rss - baseline) / 1024);
    assert!(rss < baseline + bound, "sidecar RSS grew by {} MiB (bound {} MiB)", (rss - baseline) / MIB, bound / MIB);
    drop((held, senders));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_held_streams_with_60_kb_header_lists_are_bounded() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let (app, holds) = app_counting().await;
    let sidecar = Sidecar::start(&pki, app, LIMITS, "headers");
    normal_caller_completes(&pki, app, sidecar.inbound, 5).await;
    let baseline = sidecar.rss();

    // 12 connections × 120 streams that the app holds, each with 15 copies of one 4,000-byte
    // header: about 60 KB decoded, a few bytes on the wire once HPACK has indexed it. Unbounded,
    // the sidecar would hold them all (about 190 MB here).
    let (conns, streams) = (12, 120);
    let pad = "p".repeat(4000);
    let refused = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..conns {
        let send = peer_connection(&pki, &sidecar, app.port(), Arc::default()).await;
        let mut send = send.ready().await.unwrap();
        for _ in 0..streams {
            let mut req = Request::get(format!("http://api:{}/hold", app.port()))
                .header("x-weft-orig-proto", "HTTP/1.1")
                .body(())
                .unwrap();
            for _ in 0..15 {
                req.headers_mut().append("x-pad", pad.parse().unwrap());
            }
            let (resp, _) = send.send_request(req, true).unwrap();
            let refused = refused.clone();
            tokio::spawn(async move {
                if let Ok(resp) = resp.await {
                    assert_eq!(resp.status(), 503, "only refusals are answered: the app holds the rest");
                    assert_eq!(resp.headers()["x-weft-error"], "overloaded");
                    refused.fetch_add(1, Ordering::SeqCst);
                }
            });
            send = send.ready().await.unwrap();
        }
        senders.push(send);
    }

    // Bounds: 1 MiB of headers per connection, 4 MiB for the proxy (plus one stream per
    // connection). Each held stream also costs its decoded copy, an app connection and the
    // request written to it, which the count does not include: allow for that.
    let bound = 48 * MIB;
    let total = conns * streams;
    eventually("every stream held by the app or refused", Duration::from_secs(60), || {
        let rss = sidecar.rss();
        assert!(
            rss < baseline + bound,
            "sidecar RSS grew by {} MiB (bound {} MiB)",
            (rss - baseline) / MIB,
            bound / MIB
        );
        let done = holds.load(Ordering::SeqCst) + refused.load(Ordering::SeqCst);
        async move { (done == total).then_some(()) }
    })
    .await;
    let held = holds.load(Ordering::SeqCst);
    assert!(held <= 4 * MIB / 60_000 + conns, "{held} streams held");
    let m = sidecar.metrics().await;
    assert!(metric(&m, "weft_http2_held_header_bytes") <= (4 * MIB + conns * 64 * 1024) as f64, "{m}");
    assert_eq!(metric(&m, "weft_http2_streams_refused_total") as usize, total - held, "{m}");
    // A normal caller on its own connection is still served.
    normal_caller_completes(&pki, app, sidecar.inbound, 20).await;
    let rss = sidecar.rss();
    eprintln!("sidecar RSS grew by {} KiB with {held} streams held", (rss - baseline) / 1024);
    assert!(rss < baseline + bound, "sidecar RSS grew by {} MiB (bound {} MiB)", (rss - baseline) / MIB, bound / MIB);
    drop(senders);
}

/// Callers that never read, through a client sidecar: HTTP/1 with a 4 KiB receive buffer.
async fn slow_reader(addr: SocketAddr, path: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: api\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut tcp, req.as_bytes()).await.unwrap();
    tcp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_never_read_do_not_stall_the_others() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let app = app().await;
    let tcp = weft_testkit::tcp_echo().await;
    let server = start_server(&pki, app, tcp, "").await;
    let client =
        start_client(pki.store(CLIENT.0, CLIENT.1), app, app, server.addrs.inbound.unwrap(), &api_id(), "").await;
    let upstream = client.addrs.upstreams[0];
    assert_eq!(http1_get(upstream, "/ok").await.unwrap().status(), 200);
    // 10 HTTP/1 callers whose endless responses are never read. They share the pooled connection
    // with everyone else; each can hold its own stream's window, never the connection's.
    let mut slow = Vec::new();
    for _ in 0..10 {
        slow.push(slow_reader(upstream, "/endless").await);
    }
    // And 10 HTTP/2 callers that advertise a zero window.
    let (h2, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(TcpStream::connect(upstream).await.unwrap())
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut h2 = h2.ready().await.unwrap();
    let mut slow_h2 = Vec::new();
    for _ in 0..10 {
        let req = Request::get(format!("http://api:{}/endless", app.port())).body(()).unwrap();
        slow_h2.push(h2.send_request(req, true).unwrap().0);
        h2 = h2.ready().await.unwrap();
    }
    // Every one of them reached the server sidecar, and their responses flow until the windows
    // of their streams are full.
    eventually("slow callers' requests are in", Duration::from_secs(60), || async {
        let m =
            String::from_utf8_lossy(http1_get(server.addrs.admin.unwrap(), "/metrics").await.ok()?.body()).into_owned();
        (metric(&m, "weft_http_requests_total{direction=\"inbound\"") >= 21.0).then_some(())
    })
    .await;
    // And their responses have flowed: more than all 20 stream windows (5 MiB) could take.
    eventually("slow callers' responses flowed", Duration::from_secs(60), || {
        let produced = ENDLESS_CHUNKS.load(Ordering::Relaxed) * 16384;
        async move { (produced >= 8 * MIB).then_some(()) }
    })
    .await;
    for i in 0..20 {
        let resp = tokio::time::timeout(Duration::from_secs(60), http1_get(upstream, "/ok"))
            .await
            .unwrap_or_else(|_| panic!("request {i} stalled behind the slow callers"))
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    drop((slow, slow_h2, h2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_a_full_pooled_connection_go_out_on_another() {
    weft_testkit::init_tracing();
    let pki = Pki::new();
    let (app, holds) = app_counting().await;
    let limits = "limits: { max_concurrent_streams: 4 }";
    let tcp = weft_testkit::tcp_echo().await;
    let server = start_server(&pki, app, tcp, limits).await;
    // One pooled connection per peer, so that the held requests all land on it.
    // The client keeps its default limit (256): the server's SETTINGS say 4.
    let mut cfg = client_config(app, tcp.port(), server.addrs.inbound.unwrap(), &api_id(), "");
    cfg.outbound.as_mut().unwrap().connections_per_peer = Some(1);
    let client = weft_proxy::Proxy::start(cfg, pki.store(CLIENT.0, CLIENT.1)).await.unwrap();
    let upstream = client.addrs.upstreams[0];
    // 6 requests the app holds: more than one connection's 4 streams.
    // One after the other, as held requests pile up (a burst at the very start of a connection,
    // before the peer's SETTINGS arrive, may overshoot and queue).
    let mut held = Vec::new();
    for i in 1..=6 {
        held.push(tokio::spawn(http1_get(upstream, "/hold")));
        eventually("the app holds the request", Duration::from_secs(30), || {
            let n = holds.load(Ordering::SeqCst);
            async move { (n == i).then_some(()) }
        })
        .await;
    }
    for i in 0..10 {
        let resp = tokio::time::timeout(Duration::from_secs(30), http1_get(upstream, "/ok"))
            .await
            .unwrap_or_else(|_| panic!("request {i} queued behind the held ones"))
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let m = client.metrics_text();
    assert!(metric(&m, "weft_peer_connections_total") >= 2.0, "{m}");
    for h in held {
        h.abort();
    }
}
