//! [`probe`]: run one check once, bounded by its timeout. Each probe kind lives in its own file;
//! this one dispatches, applies the timeout and holds what the kinds share.

mod docker;
mod grpc;
mod h2ping;
mod http;
mod script;

use crate::{CheckResult, Monitor, Status};
use std::fmt::Write as _;
use std::time::Duration;
use weft_api::kinds::{CheckSpec, ProbeKind};

/// At most this many bytes of a probe's output (response body, script output) are kept, as in
/// Consul (`check_output_max_size`, 4 KiB).
pub const OUTPUT_MAX: usize = 4096;

/// The `User-Agent` of HTTP checks.
pub const USER_AGENT: &str = concat!("weft-health/", env!("CARGO_PKG_VERSION"));

/// What a probe may need beyond its spec: the workload it belongs to and, for alias checks, the
/// [`Monitor`] that knows other workloads' status.
#[derive(Clone, Debug, Default)]
pub struct ProbeContext {
    workload: String,
    monitor: Option<Monitor>,
}

impl ProbeContext {
    /// `workload` is the id of the workload the check belongs to, e.g. `default/api-1`.
    pub fn new(workload: impl Into<String>) -> Self {
        ProbeContext { workload: workload.into(), monitor: None }
    }

    /// Alias checks read the status of the workload they mirror from `monitor`.
    pub fn with_monitor(mut self, monitor: Monitor) -> Self {
        self.monitor = Some(monitor);
        self
    }

    pub fn workload(&self) -> &str {
        &self.workload
    }
}

/// The lowercase name of a probe kind, as written in a check spec.
pub fn kind_name(kind: ProbeKind) -> &'static str {
    match kind {
        ProbeKind::Http => "http",
        ProbeKind::Tcp => "tcp",
        ProbeKind::Grpc => "grpc",
        ProbeKind::H2Ping => "h2ping",
        ProbeKind::Script => "script",
        ProbeKind::Ttl => "ttl",
        ProbeKind::Alias => "alias",
        ProbeKind::Docker => "docker",
    }
}

/// Runs one probe of `spec` once, bounded by `spec.timeout()`. Never fails: every problem (a bad
/// URL, a refused connection, a timeout) is a `Critical` result whose output says why.
///
/// TTL checks are not probed (the workload reports them through [`Monitor::ttl_update`]); probing
/// one gives `Critical` saying so.
pub async fn probe(spec: &CheckSpec, ctx: &ProbeContext) -> CheckResult {
    let Some(kind) = spec.probe() else {
        return CheckResult::critical(format!(
            "check {:?} is invalid: set exactly one of http, tcp, grpc, h2ping, script, ttl, alias, docker",
            spec.name
        ));
    };
    let timeout: Duration = spec.timeout().into();
    let run = async {
        match kind {
            ProbeKind::Http => http::probe(spec.http.as_deref().unwrap_or_default()).await,
            ProbeKind::Tcp => match spec.tcp {
                Some(addr) => tcp(addr).await,
                None => unreachable_probe(),
            },
            ProbeKind::Grpc => match spec.grpc {
                Some(addr) => grpc::probe(addr, spec.grpc_service.as_deref().unwrap_or("")).await,
                None => unreachable_probe(),
            },
            ProbeKind::H2Ping => match spec.h2ping {
                Some(addr) => h2ping::probe(addr).await,
                None => unreachable_probe(),
            },
            ProbeKind::Script => script::probe(spec.script.as_deref().unwrap_or_default()).await,
            ProbeKind::Docker => match &spec.docker {
                Some(d) => docker::probe(d).await,
                None => unreachable_probe(),
            },
            ProbeKind::Alias => alias(spec.alias.as_deref().unwrap_or_default(), ctx),
            ProbeKind::Ttl => {
                CheckResult::critical("TTL checks are reported by the workload (pass/warn/fail), not probed")
            }
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(result) => result,
        Err(_) => {
            let what = match kind {
                ProbeKind::Script => "; the process was killed",
                _ => "",
            };
            CheckResult::critical(format!("{} check timed out after {}{what}", kind_name(kind), spec.timeout()))
        }
    }
}

/// `spec.probe()` said the field is set; kept total rather than `unwrap()`.
fn unreachable_probe() -> CheckResult {
    CheckResult::critical("internal error: the probe's field is not set")
}

async fn tcp(addr: std::net::SocketAddr) -> CheckResult {
    match tokio::net::TcpStream::connect(addr).await {
        Ok(_) => CheckResult::passing(format!("TCP connect {addr}: Success")),
        Err(e) => CheckResult::critical(format!("TCP connect {addr}: {e}")),
    }
}

/// The id of the workload an alias names: resolved in the namespace of `workload`
/// (`default/api-1` + `db-1` → `default/db-1`). A name with a `/` is taken as a full id.
pub fn resolve_alias(workload: &str, alias: &str) -> String {
    if alias.contains('/') {
        return alias.to_string();
    }
    match workload.rsplit_once('/') {
        Some((ns, _)) => format!("{ns}/{alias}"),
        None => alias.to_string(),
    }
}

fn alias(alias: &str, ctx: &ProbeContext) -> CheckResult {
    let target = resolve_alias(&ctx.workload, alias);
    let Some(monitor) = &ctx.monitor else {
        return CheckResult::critical(format!(
            "alias of {target}: alias checks read status from a Monitor, and none was given"
        ));
    };
    match monitor.workload_status(&target) {
        Some(status) => CheckResult::new(status, format!("alias of {target}: {status}")),
        None => CheckResult::critical(format!("alias of {target}: no such workload is registered")),
    }
}

/// The status of a process's exit code, as Consul maps script checks: 0 passing, 1 warning,
/// anything else (or none: killed by a signal) critical.
pub(crate) fn exit_status(code: Option<i64>) -> Status {
    match code {
        Some(0) => Status::Passing,
        Some(1) => Status::Warning,
        _ => Status::Critical,
    }
}

/// An error with its chain of causes: `transport error: connection refused`.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            let _ = write!(out, ": {text}");
        }
        source = s.source();
    }
    out
}

/// `text`, or `(none)` when it is empty.
pub(crate) fn or_none(text: &str) -> &str {
    if text.is_empty() {
        "(none)"
    } else {
        text
    }
}

/// Up to [`OUTPUT_MAX`] bytes of `bytes` as text (lossy UTF-8, cut at a character boundary).
pub(crate) fn output_text(bytes: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(&bytes[..bytes.len().min(OUTPUT_MAX)]).into_owned();
    if text.len() > OUTPUT_MAX {
        let mut cut = OUTPUT_MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text.trim_end().to_string()
}
