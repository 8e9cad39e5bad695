//! Python packages from PyPI for tests that run a real counterpart (py-consul, grpcio, moto):
//! one venv per name under the target directory, made on first use. One test process installs;
//! the others (nextest runs each test in its own process) wait for it rather than download the
//! same packages at once. A half-made venv is never used: it is built aside and renamed into
//! place.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Words in pip's output that mean PyPI cannot be reached (a machine without the registry):
/// the caller skips with the reason instead of failing.
const UNREACHABLE: &[&str] = &[
    "Temporary failure in name resolution",
    "Failed to establish a new connection",
    "Network is unreachable",
    "Connection refused",
    "ConnectTimeoutError",
    "Max retries exceeded",
    "No matching distribution found",
    "Could not fetch URL",
];

/// The python of venv `<dir>/<name>` with `packages` installed, checked by running `import
/// <imports>`. `Err` with pip's output when PyPI cannot be reached; panics (naming the fix) on
/// any other failure. `what` names the test in messages.
pub fn venv(dir: &Path, name: &str, packages: &[&str], imports: &str, what: &str) -> Result<PathBuf, String> {
    let venv = dir.join(name);
    let python = venv.join("bin/python");
    let has = |py: &Path| {
        Command::new(py)
            .args(["-c", &format!("import {imports}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has(&python) {
        return Ok(python);
    }
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    // A lock left by a killed run is taken over after ten minutes.
    let lock = venv.with_extension("lock");
    let deadline = Instant::now() + Duration::from_secs(900);
    while std::fs::create_dir(&lock).is_err() {
        if has(&python) {
            return Ok(python);
        }
        let stale = std::fs::metadata(&lock)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(600));
        if stale {
            let _ = std::fs::remove_dir(&lock);
        }
        assert!(Instant::now() < deadline, "another test has held {} for 15 minutes", lock.display());
        std::thread::sleep(Duration::from_millis(200));
    }
    struct Unlock(PathBuf);
    impl Drop for Unlock {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _unlock = Unlock(lock);
    if has(&python) {
        return Ok(python);
    }
    let partial = venv.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    let out = Command::new("python3").args(["-m", "venv"]).arg(&partial).output().unwrap_or_else(|e| {
        panic!("python3 is needed for {what} ({e}); scripts/test.sh installs it (apt-get install python3 python3-venv)")
    });
    assert!(
        out.status.success(),
        "python3 -m venv failed (scripts/test.sh installs python3-venv): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(partial.join("bin/python"))
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .args(packages)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the venv's pip: {e}"));
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&partial);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if UNREACHABLE.iter().any(|w| text.contains(w)) {
            return Err(text);
        }
        panic!("pip install {packages:?} failed: {text}");
    }
    let _ = std::fs::remove_dir_all(&venv);
    std::fs::rename(&partial, &venv).unwrap_or_else(|e| panic!("cannot move the venv into {}: {e}", venv.display()));
    assert!(has(&python), "{packages:?} installed but `import {imports}` fails");
    Ok(python)
}
