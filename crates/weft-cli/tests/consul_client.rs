//! A real Consul client library, unchanged, against a real `weft control` process: py-consul
//! from PyPI runs `tests/consul/test_py_consul.py` (registration, agent/catalog/health reads,
//! TTL updates, blocking queries, tag filters, with and without a token).
//!
//! py-consul is installed into a venv under `target/` on first run (`python3 -m venv`, then
//! `pip install py-consul`); the test skips, saying so, only when PyPI cannot be reached.
//! `scripts/test.sh` installs python3 and its venv module when they are missing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
/// The py-consul release the script was written against.
const PY_CONSUL: &str = "py-consul==1.8.0";

/// A child process killed (SIGKILL) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's python with py-consul, made on first use; `Err` with the reason when PyPI cannot
/// be reached.
fn python_with_py_consul() -> Result<PathBuf, String> {
    weft_testkit::python::venv(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "py-consul-venv",
        &[PY_CONSUL],
        "consul",
        "the py-consul test",
    )
}

/// `weft control` on ports the kernel picks; returns it with its HTTP API address and admin token.
fn control(dir: &Path) -> (Proc, String, String) {
    let mut child = Command::new(WEFT)
        .args(["control", "--data-dir", dir.to_str().unwrap(), "--grpc", "127.0.0.1:0", "--api", "127.0.0.1:0"])
        .args(["--dns", "off"])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut api = None;
    let mut lines = vec![];
    loop {
        let mut l = String::new();
        if reader.read_line(&mut l).unwrap() == 0 {
            panic!("weft control exited before it was ready: {lines:?}");
        }
        let l = l.trim().to_string();
        if l == "ready" {
            break;
        }
        if let Some(rest) = l.strip_prefix("HTTP API") {
            api = rest.trim().strip_prefix("https://").and_then(|r| r.split_whitespace().next()).map(String::from);
        }
        lines.push(l);
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in reader.lines() {});
    let api = api.unwrap_or_else(|| panic!("no HTTP API address in {lines:?}"));
    let token = std::fs::read_to_string(dir.join("admin.token")).unwrap().trim().to_string();
    (Proc(child), api, token)
}

#[test]
fn py_consul_works_unchanged_with_and_without_a_token() {
    let python = match python_with_py_consul() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED: PyPI cannot be reached, so py-consul cannot be installed:\n{why}");
            return;
        }
    };
    let dir = std::env::temp_dir().join(format!("weft-py-consul-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (_control, api, token) = control(&dir);
    let (host, port) = api.rsplit_once(':').unwrap();
    let out = Command::new(python)
        .arg(repo().join("tests/consul/test_py_consul.py"))
        .env("WEFT_HOST", host)
        .env("WEFT_PORT", port)
        .env("WEFT_TOKEN", &token)
        // The API is on TLS: py-consul verifies it against the control plane's root.
        .env("WEFT_CA_FILE", dir.join("ca/root.pem"))
        // py-consul prefers these over its arguments.
        .env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("CONSUL_HTTP_ADDR")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "py-consul against weft failed:\n{text}");
    assert!(text.contains(" passed, 0 failed"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
