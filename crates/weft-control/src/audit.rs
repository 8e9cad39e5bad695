//! The audit log: every write to the HTTP API (any method but GET, HEAD and OPTIONS), allowed or
//! refused, with the caller's token name and role, appended as one JSON line to
//! `<data-dir>/audit.log` (0600) and kept in memory (the last [`KEEP`]) for `GET /v1/audit`.
//!
//! ```text
//!   request ──► audit::layer ──► handler ──► response
//!                   │ (after)
//!                   └──► Entry { time, token, role, method, path, status, detail } ──► file + ring
//! ```

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// How many entries `GET /v1/audit` can return (the file keeps them all).
pub const KEEP: usize = 1000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Unix milliseconds.
    pub time_ms: u64,
    /// The token's name; `(none)` without a token, `(invalid)` for one that did not verify.
    pub token: String,
    /// The token's id (absent without a valid one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// The token's role (admin, operator, writer, read, bootstrap, link, link-stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub method: String,
    /// The path, without the query string (which may carry a token).
    pub path: String,
    pub status: u16,
    /// What the write did or why it was refused, when the handler says (e.g. the resources
    /// applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A handler's note for the audit entry of its request, put in the response's extensions.
#[derive(Clone, Debug)]
pub struct Note(pub String);

pub struct Audit {
    file: Mutex<std::fs::File>,
    recent: Mutex<VecDeque<Entry>>,
}

impl Audit {
    /// Opens (creating, 0600) `dir/audit.log` for appending, and reads back its last [`KEEP`]
    /// entries (lines that do not parse are skipped: a crash may have cut the last one).
    pub fn open(dir: &Path) -> std::io::Result<Audit> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let path = dir.join("audit.log");
        let mut recent = VecDeque::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines() {
                if let Ok(e) = serde_json::from_str::<Entry>(line) {
                    if recent.len() == KEEP {
                        recent.pop_front();
                    }
                    recent.push_back(e);
                }
            }
        }
        let file = std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(&path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(Audit { file: Mutex::new(file), recent: Mutex::new(recent) })
    }

    /// Appends one entry; a failing disk is logged (the write itself has happened).
    pub fn record(&self, e: Entry) {
        let mut line = serde_json::to_vec(&e).unwrap_or_default();
        line.push(b'\n');
        if let Err(err) = self.file.lock().unwrap_or_else(|p| p.into_inner()).write_all(&line) {
            tracing::error!(error = %err, entry = ?e, "cannot append to the audit log");
        }
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() == KEEP {
            r.pop_front();
        }
        r.push_back(e);
    }

    /// The last `limit` entries, oldest first.
    pub fn recent(&self, limit: usize) -> Vec<Entry> {
        let r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        r.iter().skip(r.len().saturating_sub(limit)).cloned().collect()
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
