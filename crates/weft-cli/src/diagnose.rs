//! `weft diagnose`: the control plane's `GET /v1/diagnose` (Linkerd's `check` and Istio's
//! `analyze` in one), one line per finding with its fix. Exits non-zero when a finding fails
//! (warnings do not), or when the control plane cannot be reached — itself a finding.

use crate::client::Conn;
use anyhow::bail;
use serde_json::Value;

#[derive(clap::Args)]
pub struct DiagnoseArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// `text` (a line per finding, the fix under it) or `json` (the API's answer as it is).
    #[arg(short = 'o', long, default_value = "text")]
    pub output: String,
    /// Also print the checks that passed (text output).
    #[arg(long)]
    pub all: bool,
}

pub async fn run(args: DiagnoseArgs) -> anyhow::Result<()> {
    if args.output != "text" && args.output != "json" {
        bail!("--output {:?}: expected `text` or `json`", args.output);
    }
    let v = match args.conn.call("GET", "/v1/diagnose", String::new()).await {
        Ok(v) => v,
        Err(e) => {
            let f = serde_json::json!({
                "check": "control-plane",
                "status": "fail",
                "message": format!("the control plane's API did not answer: {e:#}"),
                "fix": "start `weft control` (or `weft up`), or point --server/WEFT_SERVER and --token/WEFT_TOKEN at it",
            });
            print(&args, &serde_json::json!({ "findings": [f] }))?;
            bail!("1 check failed");
        }
    };
    print(&args, &v)?;
    let findings = v["findings"].as_array().cloned().unwrap_or_default();
    let failed = findings.iter().filter(|f| f["status"] == "fail").count();
    if failed > 0 {
        bail!("{failed} check(s) failed");
    }
    Ok(())
}

fn print(args: &DiagnoseArgs, v: &Value) -> anyhow::Result<()> {
    if args.output == "json" {
        outln!("{}", serde_json::to_string_pretty(v)?)?;
        return Ok(());
    }
    let findings = v["findings"].as_array().cloned().unwrap_or_default();
    let (mut warned, mut failed, mut passed) = (0, 0, 0);
    for f in &findings {
        let status = f["status"].as_str().unwrap_or("?");
        match status {
            "ok" => passed += 1,
            "warn" => warned += 1,
            _ => failed += 1,
        }
        if status == "ok" && !args.all {
            continue;
        }
        outln!("{}", line(f))?;
        if let Some(fix) = f["fix"].as_str().filter(|s| !s.is_empty()) {
            outln!("      fix: {fix}")?;
        }
    }
    outln!("{passed} ok, {warned} warning(s), {failed} failure(s)")?;
    Ok(())
}

/// `√ [certificates] message`, `! [...]` for a warning, `× [...]` for a failure.
fn line(f: &Value) -> String {
    let mark = match f["status"].as_str() {
        Some("ok") => "√",
        Some("warn") => "!",
        _ => "×",
    };
    format!("{mark} [{}] {}", f["check"].as_str().unwrap_or("?"), f["message"].as_str().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_mark_each_status() {
        let f = |s: &str| serde_json::json!({"check": "dns", "status": s, "message": "m", "fix": ""});
        assert_eq!(line(&f("ok")), "√ [dns] m");
        assert_eq!(line(&f("warn")), "! [dns] m");
        assert_eq!(line(&f("fail")), "× [dns] m");
    }
}
