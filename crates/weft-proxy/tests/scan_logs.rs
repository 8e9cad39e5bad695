//! The proxy's warnings that a remote party can trigger are rate limited per kind and source:
//! a scan of bad handshakes yields a bounded number of log lines, and the count of those left
//! out is reported. Runs the real `weft-proxy` binary and reads its stderr.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use weft_testkit::{eventually, Pki};

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");

/// Kills the child proxy when the test ends, passing or not.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_scan_of_bad_handshakes_logs_a_bounded_number_of_lines_with_the_count() {
    let dir = std::env::temp_dir().join(format!("weft-scan-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pki = Pki::new();
    let (c, k, b) = pki.write_files(&dir, "default", "api");
    let app = weft_testkit::http_echo("api").await;
    let cfg = dir.join("p.yaml");
    std::fs::write(
        &cfg,
        format!(
            "identity: {{ cert: {c}, key: {k}, bundle: {b} }}\nadmin: {{ listen: '127.0.0.1:0' }}\ninbound: {{ listen: '127.0.0.1:0', ports: [{{ port: {} }}] }}\n",
            app.port()
        ),
    )
    .unwrap();
    let mut child = Child(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr: Arc<Mutex<Vec<String>>> = Arc::default();
    let lines = stderr.clone();
    let err = child.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    let mut inbound = None;
    for line in BufReader::new(child.0.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(a) = line.strip_prefix("inbound ") {
            inbound = Some(a.parse::<std::net::SocketAddr>().unwrap());
        }
        if line == "ready" {
            break;
        }
    }
    let inbound = inbound.expect("inbound address printed");

    // 200 connections that look like TLS and are not: each handshake fails.
    for _ in 0..200 {
        let mut s = TcpStream::connect(inbound).await.unwrap();
        s.write_all(b"\x16\x03\x01\x00\x05garbage-not-a-client-hello").await.unwrap();
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read(&mut s, &mut buf)).await;
    }
    let failed = |l: &&String| l.contains("inbound TLS handshake failed");
    // The count of the lines left out is written once the interval (10 s) has passed.
    let report = eventually("the suppressed count is logged", Duration::from_secs(60), || {
        let stderr = stderr.clone();
        async move {
            let lines = stderr.lock().unwrap();
            lines.iter().find(|l| l.contains("more handshake lines from 127.0.0.1 were not logged")).cloned()
        }
    })
    .await;
    let lines = stderr.lock().unwrap().clone();
    let written = lines.iter().filter(failed).count();
    assert!(written >= 1, "the first failure is logged: {lines:#?}");
    assert!(written <= 3, "a scan of 200 must not write 200 lines: {written} written");
    assert!(lines.iter().filter(failed).all(|l| l.contains("WARN")), "{lines:#?}");
    let suppressed: u64 = report
        .split("suppressed=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a suppressed= count in {report}"));
    let counted: u64 = lines
        .iter()
        .filter(failed)
        .filter_map(|l| l.split("suppressed=").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(written as u64 + suppressed + counted, 200, "every failure is written or counted: {lines:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}
