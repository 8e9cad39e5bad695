//! What an operator sees from the `weft` binary itself: error lines (each cause once, no
//! `error: error:`), help that lists only the flags a command takes, a missing token explained,
//! output into a closed pipe, the apply size limit, and logs without colour codes off a terminal.
//! Every test runs the real binary; the ones that need a control plane start `weft control`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// A child process killed (SIGKILL) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
/// Log lines before it (`weft control` logs at info: `2026-01-02T03:04:05.678Z  INFO ...`) are
/// not part of the error.
#[track_caller]
fn assert_error_once(out: &Output, needle: &str) {
    let is_log = |l: &str| l.as_bytes().first().is_some_and(u8::is_ascii_digit) && l.get(10..11) == Some("T");
    let err: String = stderr(out).lines().filter(|l| !is_log(l)).map(|l| format!("{l}\n")).collect();
    assert!(!out.status.success(), "expected a failure: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "`error:` more than once: {err}");
    assert_eq!(err.matches(needle).count(), 1, "{needle:?} not exactly once: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A control plane on free ports in `dir`, started and ready.
struct Control {
    _proc: Proc,
    api: String,
    dir: PathBuf,
}

impl Control {
    fn start(dir: &Path, env: &[(&str, &str)], stderr: Stdio) -> Control {
        let api = format!("127.0.0.1:{}", free_port());
        let grpc = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(WEFT)
            .args(["control", "--data-dir", dir.to_str().unwrap(), "--grpc", &grpc, "--api", &api, "--dns", "off"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut seen = vec![];
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 {
                panic!("weft control exited before it was ready: {seen:?}");
            }
            if line.trim_end() == "ready" {
                break;
            }
            seen.push(line);
        }
        std::thread::spawn(move || for _ in reader.lines() {});
        Control { _proc: Proc(child), api, dir: dir.to_path_buf() }
    }

    /// `weft <args>` against this control plane, the token found through `--data-dir`.
    fn weft(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--server", &self.api, "--data-dir", self.dir.to_str().unwrap()]);
        weft(&all, &[])
    }
}

fn workloads_yaml(n: usize) -> String {
    let mut text = String::from("apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api }\n");
    for i in 0..n {
        text.push_str(&format!(
            "---\napiVersion: weft.io/v1alpha1\nkind: Workload\nmetadata: {{ name: api-{i} }}\nspec: {{ service: api, address: 10.1.{}.{}, port: 8080 }}\n",
            i / 250,
            i % 250 + 1
        ));
    }
    text
}

#[test]
fn a_port_in_use_is_reported_once() {
    let dir = TempDir::new("bind");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api = taken.local_addr().unwrap().to_string();
    let grpc = format!("127.0.0.1:{}", free_port());
    let out =
        weft(&["control", "--data-dir", dir.0.to_str().unwrap(), "--grpc", &grpc, "--api", &api, "--dns", "off"], &[]);
    assert_error_once(&out, "Address already in use");
    assert!(stderr(&out).contains(&api), "{}", stderr(&out));
}

#[test]
fn an_invalid_proxy_config_is_reported_once() {
    let dir = TempDir::new("typo");
    let config = dir.0.join("typo.yaml");
    std::fs::write(&config, "admin:\n  listen: \"127.0.0.1:0\"\ninbound:\n  lisen: \"127.0.0.1:0\"\n").unwrap();
    let out = weft(&["proxy", "validate", "--config", config.to_str().unwrap()], &[]);
    assert_error_once(&out, "typo.yaml");
    assert!(stderr(&out).contains("lisen"), "{}", stderr(&out));
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

#[test]
fn an_apply_error_reads_once() {
    let dir = TempDir::new("apply-error");
    let cp = Control::start(&dir.0, &[], Stdio::null());
    // A YAML error from the API: one `error:`, the line named, no source snippet.
    let bad = dir.0.join("bad.yaml");
    std::fs::write(&bad, "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: { name: api\n").unwrap();
    let out = cp.weft(&["apply", "-f", bad.to_str().unwrap()]);
    assert_error_once(&out, "unclosed bracket");
    assert!(stderr(&out).contains("line 3"), "{}", stderr(&out));
}

#[test]
fn applying_more_than_1024_documents_is_a_clear_error() {
    let dir = TempDir::new("apply-limit");
    let cp = Control::start(&dir.0, &[], Stdio::null());
    // Past the limit: a sentence with the count, the limit and the fix; nothing written.
    let many = dir.0.join("many.yaml");
    std::fs::write(&many, workloads_yaml(1_024)).unwrap();
    let out = cp.weft(&["apply", "-f", many.to_str().unwrap()]);
    assert_error_once(&out, "1025");
    let err = stderr(&out);
    assert!(err.contains("1024") && err.contains("split"), "{err}");
    assert!(!err.contains("budget") && !err.contains("Documents {"), "{err}");
    let out = cp.weft(&["get", "services"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("No Service resources"), "{out:?}");

    // At the limit, it applies.
    std::fs::write(&many, workloads_yaml(1_023)).unwrap();
    let out = cp.weft(&["apply", "-f", many.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn output_into_a_closed_pipe_stops_quietly() {
    let dir = TempDir::new("pipe");
    let cp = Control::start(&dir.0, &[], Stdio::null());
    let many = dir.0.join("many.yaml");
    std::fs::write(&many, workloads_yaml(600)).unwrap();
    let out = cp.weft(&["apply", "-f", many.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    // `weft get ... | head -1`: far more output than a pipe holds; the reader leaves after one
    // line, and the CLI stops without a word and with success.
    let mut get = Command::new(WEFT)
        .args(["get", "workloads", "-o", "json", "--server", &cp.api, "--data-dir", dir.0.to_str().unwrap()])
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(get.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert_eq!(first.trim(), "[");
    let mut err = String::new();
    get.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = get.wait().unwrap();
    assert!(err.is_empty(), "nothing on stderr: {err}");
    assert!(status.success(), "{status:?}");
}

#[test]
fn logs_into_a_file_have_no_colour_codes() {
    let dir = TempDir::new("colour");
    let log = dir.0.join("control.log");
    let file = std::fs::File::create(&log).unwrap();
    let cp = Control::start(&dir.0.join("data"), &[("RUST_LOG", "info")], Stdio::from(file));
    drop(cp);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("INFO"), "the control plane logged at info: {text}");
    assert!(!text.contains('\u{1b}'), "ANSI escape codes in a log file: {text:?}");
}

/// On a terminal (`script` gives the command one), logs are coloured unless NO_COLOR is set.
#[test]
fn logs_on_a_terminal_are_coloured_unless_no_color() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: `script` (util-linux) is not installed");
        return;
    }
    let run = |no_color: Option<&str>| {
        let dir = TempDir::new(&format!("tty-{}", no_color.is_some()));
        let typescript = dir.0.join("typescript");
        // `weft proxy validate` on a missing file logs nothing; `weft control` with a taken port
        // logs its start at info before failing, on the terminal.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let command = format!(
            "{WEFT} control --data-dir {} --grpc 127.0.0.1:{} --api {} --dns off",
            dir.0.join("data").display(),
            free_port(),
            taken.local_addr().unwrap()
        );
        let mut script = Command::new("script");
        script
            .args(["-q", "-e", "-c", &command, typescript.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(v) = no_color {
            script.env("NO_COLOR", v);
        }
        script.status().unwrap();
        std::fs::read_to_string(&typescript).unwrap_or_default()
    };
    let coloured = run(None);
    assert!(coloured.contains("INFO"), "{coloured}");
    assert!(coloured.contains('\u{1b}'), "colour on a terminal: {coloured:?}");
    let plain = run(Some("1"));
    assert!(plain.contains("INFO"), "{plain}");
    assert!(!plain.contains('\u{1b}'), "NO_COLOR: {plain:?}");
}
