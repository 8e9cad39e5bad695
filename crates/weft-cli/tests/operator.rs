//! What an operator sees from the `weft` binary itself: error lines (each cause once, no
//! `error: error:`), help that lists only the flags a command takes, a missing token explained,
//! output into a closed pipe, the apply size limit, and logs without colour codes off a terminal.
//! Every test runs the real binary; the ones that need a control plane start `weft control`.

use std::path::PathBuf;
use std::process::{Command, Output};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("weft-operator-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `weft <args>` with only `env` (plus PATH) in its environment, so that no WEFT_* variable of the
/// machine running the tests leaks in.
fn weft(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(WEFT)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the shape of an error line: `error: ` once, at the start, and `needle` exactly once.
#[track_caller]
fn assert_error_once(out: &Output, needle: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected a failure: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "`error:` more than once: {err}");
    assert_eq!(err.matches(needle).count(), 1, "{needle:?} not exactly once: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn control_help_lists_only_its_own_flags() {
    let help = String::from_utf8(weft(&["control", "--help"], &[]).stdout).unwrap();
    assert!(help.contains("--data-dir"), "{help}");
    assert!(!help.contains("--server") && !help.contains("--token"), "{help}");
    // The verbs that call the API do take them.
    let help = String::from_utf8(weft(&["get", "--help"], &[]).stdout).unwrap();
    assert!(help.contains("--server") && help.contains("--token") && help.contains("--data-dir"), "{help}");
    // And `weft control` refuses them rather than ignoring them.
    let out = weft(&["control", "--token", "x"], &[]);
    assert!(!out.status.success() && stderr(&out).contains("--token"), "{}", stderr(&out));
}

#[test]
fn a_missing_admin_token_says_where_the_cli_looked() {
    let dir = TempDir::new("notoken");
    let elsewhere = dir.0.join("elsewhere");
    let home = dir.0.to_str().unwrap();
    let server = format!("127.0.0.1:{}", free_port());

    // The default: $HOME/.weft.
    let out = weft(&["get", "workloads", "--server", &server], &[("HOME", home)]);
    let looked = dir.0.join(".weft").join("admin.token");
    assert_error_once(&out, looked.to_str().unwrap());
    let err = stderr(&out);
    for fix in ["--data-dir", "WEFT_DATA_DIR", "--token", "WEFT_TOKEN"] {
        assert!(err.contains(fix), "{fix} missing: {err}");
    }

    // Pointed elsewhere with the flag or the variable: that is where it looked.
    let looked = elsewhere.join("admin.token");
    let out = weft(&["get", "workloads", "--server", &server, "--data-dir", elsewhere.to_str().unwrap()], &[]);
    assert!(stderr(&out).contains(looked.to_str().unwrap()), "{}", stderr(&out));
    let out = weft(&["get", "workloads", "--server", &server], &[("WEFT_DATA_DIR", elsewhere.to_str().unwrap())]);
    assert!(stderr(&out).contains(looked.to_str().unwrap()), "{}", stderr(&out));
}
