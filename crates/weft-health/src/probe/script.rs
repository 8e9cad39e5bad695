//! `script`: run a command (no shell unless the command is one); exit 0 is passing, 1 warning,
//! anything else critical. The process is killed when the check's timeout drops this future.

use super::{exit_status, or_none, output_text};
use crate::CheckResult;
use std::process::Stdio;

pub(super) async fn probe(argv: &[String]) -> CheckResult {
    let Some((program, args)) = argv.split_first().filter(|(p, _)| !p.is_empty()) else {
        return CheckResult::critical("script check has no command; give e.g. [\"/bin/check\"]");
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => return CheckResult::critical(format!("script {program:?} did not start: {e}")),
    };
    let out = match child.wait_with_output().await {
        Ok(out) => out,
        Err(e) => return CheckResult::critical(format!("script {program:?}: {e}")),
    };
    let mut text = out.stdout;
    text.extend_from_slice(&out.stderr);
    let code = out.status.code();
    let how = match code {
        Some(c) => format!("exit code {c}"),
        None => format!("ended by {}", out.status),
    };
    CheckResult::new(
        exit_status(code.map(i64::from)),
        format!("script {program:?}: {how}; output: {}", or_none(&output_text(&text))),
    )
}
