//! A real OTLP/gRPC trace receiver for tracing tests: `otlp_receiver.py`, OpenTelemetry's own
//! `TraceService/Export` from PyPI's `opentelemetry-proto` (its generated messages and grpcio
//! stubs), so what weft sends is read by OpenTelemetry's definition of OTLP, not weft's. It runs
//! as a child process on a port the kernel picks; every span it receives is kept as one JSON
//! line (ids in hex, attributes and resource as objects).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The releases the receiver was written against.
pub const PACKAGES: &[&str] = &["grpcio==1.85.4", "opentelemetry-proto==1.45.2"];

/// The receiver's script (also run by `bench/observe.sh`).
pub const SCRIPT: &str = include_str!("otlp_receiver.py");

/// The receiver process: ends when its stdin closes (dropped), killed if it does not.
pub struct Receiver {
    child: Child,
    /// Its OTLP/gRPC port on 127.0.0.1.
    pub port: u16,
    spans: Arc<Mutex<Vec<String>>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    /// Starts a receiver with the venv `<target tmp>/otlp-venv` (made on first use); `None`, with
    /// the reason printed, when PyPI cannot be reached (the caller skips).
    pub fn start(target_tmpdir: &Path) -> Option<Receiver> {
        let python = match crate::python::venv(
            target_tmpdir,
            "otlp-venv",
            PACKAGES,
            "grpc, opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc",
            "the tracing tests",
        ) {
            Ok(p) => p,
            Err(why) => {
                eprintln!("SKIPPED: grpcio and opentelemetry-proto could not be installed from PyPI: {why}");
                return None;
            }
        };
        let script = target_tmpdir.join(format!("otlp_receiver-{}.py", std::process::id()));
        std::fs::File::create(&script)
            .and_then(|mut f| f.write_all(SCRIPT.as_bytes()))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", script.display()));
        let mut child = Command::new(python)
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the OTLP receiver");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let spans = Arc::new(Mutex::new(vec![]));
        let sink = spans.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(json) = line.strip_prefix("SPAN ") {
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push(json.to_string());
                } else if let Some(port) = line.strip_prefix("OTLP ") {
                    let _ = tx.send(port.parse::<u16>().expect("a port"));
                }
            }
        });
        let port = rx.recv_timeout(Duration::from_secs(60)).expect("the receiver printed its port");
        let _ = std::fs::remove_file(&script);
        Some(Receiver { child, port, spans })
    }

    /// Every span received so far, one JSON object each, in the order received.
    pub fn spans(&self) -> Vec<String> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
