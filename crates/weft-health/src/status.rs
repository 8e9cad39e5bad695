//! The result of a check and the errors of the [`crate::Monitor`] API.

use std::fmt;
use std::time::SystemTime;

/// A check's (or a workload's) health, ordered from best to worst so that the worst of several
/// is their `max()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Passing,
    Warning,
    Critical,
}

impl Status {
    /// The Consul spelling: `passing`, `warning`, `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passing => "passing",
            Status::Warning => "warning",
            Status::Critical => "critical",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most characters of a check's output that a log line shows.
pub const SHORT_OUTPUT: usize = 120;

/// One outcome of a check: its status, a human-readable explanation, and when it was recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    pub status: Status,
    /// What the probe saw (response status and body, script output, the error), at most
    /// [`crate::OUTPUT_MAX`] bytes of it.
    pub output: String,
    pub at: SystemTime,
}

impl CheckResult {
    pub fn new(status: Status, output: impl Into<String>) -> Self {
        CheckResult { status, output: output.into(), at: SystemTime::now() }
    }

    pub fn passing(output: impl Into<String>) -> Self {
        Self::new(Status::Passing, output)
    }

    pub fn warning(output: impl Into<String>) -> Self {
        Self::new(Status::Warning, output)
    }

    pub fn critical(output: impl Into<String>) -> Self {
        Self::new(Status::Critical, output)
    }

    /// The output's first line, cut at [`SHORT_OUTPUT`] characters: what a log line shows.
    pub fn short_output(&self) -> String {
        let line = self.output.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default();
        let mut short: String = line.chars().take(SHORT_OUTPUT).collect();
        if short.len() < line.len() || self.output.trim().len() > line.len() {
            short.push('…');
        }
        short
    }
}

/// Errors of [`crate::Monitor::ttl_update`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HealthError {
    #[error("no check {0:?}: check ids are \"<workload>/<check name>\", e.g. \"default/api-1/ready\"")]
    NotFound(String),
    #[error("check {0:?} is not a TTL check: only checks with `ttl` take pass/warn/fail updates")]
    NotTtl(String),
}
