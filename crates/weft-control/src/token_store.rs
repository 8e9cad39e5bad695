//! The record of every API and bootstrap token this control plane issued, kept in
//! `<data-dir>/tokens.json` (0600): the token's SHA-256 (never the token), its id, name, role,
//! namespaces, creation time, expiry and revocation. A token verifies only while its record exists
//! and is not revoked (`Tokens::verify`), so `weft token revoke` takes effect on the next call.
//!
//! Link secrets are not recorded here: a link has its own revocation (`weft link revoke`, see
//! `federation`).

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// One issued token, as stored and as `GET /v1/tokens` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// Random, unique; what `weft token revoke` names (as does `name`).
    pub id: String,
    pub name: String,
    /// admin, operator, read, writer or bootstrap.
    pub role: String,
    /// Writers: the namespaces they may write. Bootstrap tokens: the identity's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Bootstrap tokens: `<namespace>/<service-account>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Hex SHA-256 of the whole token.
    pub sha256: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; absent: no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// Unix seconds of the revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("no token with id or name {0:?}: `weft token list` shows them")]
    NotFound(String),
    #[error("{0:?} names {1} tokens: revoke one by its id (`weft token list` shows them)")]
    Ambiguous(String, usize),
    #[error("saving the token list: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Default, Serialize, Deserialize)]
struct File {
    tokens: Vec<TokenRecord>,
}

/// The records, indexed by the token's SHA-256.
pub struct TokenStore {
    path: PathBuf,
    by_hash: RwLock<HashMap<String, TokenRecord>>,
}

pub fn sha256_hex(token: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.trim().as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl TokenStore {
    /// Loads `dir/tokens.json`; none yet: an empty list. A file that does not parse is an error
    /// (starting with an empty list would silently invalidate every token).
    pub fn open(dir: &Path) -> std::io::Result<TokenStore> {
        let path = dir.join("tokens.json");
        let file: File = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{}: {e}; fix it or restore it from a backup (deleting it invalidates every token issued so far)",
                        path.display()
                    ),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        };
        let by_hash = file.tokens.into_iter().map(|r| (r.sha256.clone(), r)).collect();
        Ok(TokenStore { path, by_hash: RwLock::new(by_hash) })
    }

    pub fn lookup(&self, token: &str) -> Option<TokenRecord> {
        self.read().get(&sha256_hex(token)).cloned()
    }

    pub fn insert(&self, record: TokenRecord) -> std::io::Result<()> {
        let mut m = self.by_hash.write().unwrap_or_else(|p| p.into_inner());
        m.insert(record.sha256.clone(), record);
        self.save(&m)
    }

    /// Every record, oldest first.
    pub fn list(&self) -> Vec<TokenRecord> {
        let mut v: Vec<_> = self.read().values().cloned().collect();
        v.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        v
    }

    /// Revokes the token with this id, or the one token with this name; returns its record.
    pub fn revoke(&self, id_or_name: &str, now: u64) -> Result<TokenRecord, RevokeError> {
        let mut m = self.by_hash.write().unwrap_or_else(|p| p.into_inner());
        let by_id: Vec<String> = m.values().filter(|r| r.id == id_or_name).map(|r| r.sha256.clone()).collect();
        let hits = if by_id.is_empty() {
            m.values().filter(|r| r.name == id_or_name).map(|r| r.sha256.clone()).collect()
        } else {
            by_id
        };
        let hash = match hits.as_slice() {
            [] => return Err(RevokeError::NotFound(id_or_name.to_string())),
            [h] => h.clone(),
            more => return Err(RevokeError::Ambiguous(id_or_name.to_string(), more.len())),
        };
        let r = m.get_mut(&hash).ok_or_else(|| RevokeError::NotFound(id_or_name.to_string()))?;
        r.revoked.get_or_insert(now);
        let out = r.clone();
        self.save(&m)?;
        Ok(out)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, TokenRecord>> {
        self.by_hash.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the whole list to a temporary file and renames it over the old one, so that a crash
    /// leaves either list, never half of one.
    fn save(&self, m: &HashMap<String, TokenRecord>) -> std::io::Result<()> {
        let mut tokens: Vec<_> = m.values().cloned().collect();
        tokens.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        let data = serde_json::to_vec_pretty(&File { tokens }).map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        crate::tokens::write_private(&tmp, &data)?;
        std::fs::rename(&tmp, &self.path)
    }
}
