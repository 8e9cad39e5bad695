//! What can go wrong with a store operation, each with the fix.

use std::fmt;
use std::path::Path;
use weft_api::resource::Key;
use weft_api::ConfigError;

/// An error from [`crate::Store`]. Nothing was written when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A resource, or the state the write would leave, breaks a rule. The message is the
    /// [`ConfigError`]'s: the resource, the field path and the fix.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// An optimistic-concurrency check failed: the resource changed (or was deleted) since the
    /// writer read it.
    #[error("{key}: {}", conflict_message(expected, *current))]
    Conflict {
        key: Key,
        /// The `metadata.resourceVersion` the write carried.
        expected: String,
        /// The stored version, or `None` if the resource does not exist.
        current: Option<u64>,
    },
    /// A resource to delete does not exist.
    #[error("{0} not found; list the resources to see what exists")]
    NotFound(Key),
    /// The data directory or database file could not be used. The message names the path and
    /// what to check.
    #[error("{0}")]
    Storage(String),
}

fn conflict_message(expected: &str, current: Option<u64>) -> String {
    match current {
        Some(v) => format!(
            "the write expected resourceVersion {expected:?} but the stored one is \"{v}\" \
             (it was changed since it was read); get it again and re-apply"
        ),
        None => format!(
            "the write expected resourceVersion {expected:?} but the resource does not exist \
             (it was deleted since it was read); get it again and re-apply, or drop \
             metadata.resourceVersion to create it"
        ),
    }
}

/// Which operation failed, for [`StoreError::Storage`] messages.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    Open,
    Load,
    Commit,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Open => "cannot open",
            Op::Load => "cannot read",
            Op::Commit => "cannot write to",
        })
    }
}

impl StoreError {
    /// A redb error, with the database path and a hint at the likely cause.
    pub(crate) fn storage(op: Op, path: &Path, err: redb::Error) -> StoreError {
        let path = path.display();
        let hint = match &err {
            redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
                "the database is locked: is another weft control plane using this directory?"
            }
            redb::Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                "it is not a weft store: move the file aside or use another data directory"
            }
            redb::Error::Io(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                "check that this user may read and write the data directory"
            }
            redb::Error::Io(_) | redb::Error::PreviousIo => {
                "check the disk (space, permissions, errors in the kernel log); \
                 a failed write leaves the last commit intact"
            }
            redb::Error::Corrupted(_) => {
                "the file is damaged: restore it from a backup, or move it aside to start empty"
            }
            redb::Error::UpgradeRequired(_) => {
                "the file was written by an older store format: upgrade it with redb's tools first"
            }
            redb::Error::TableTypeMismatch { .. } | redb::Error::TableIsMultimap(_) => {
                "the file is a redb database but not a weft store: use another data directory"
            }
            _ => "this is unexpected; please report it with the message",
        };
        let err = err.to_string();
        let err = err.trim_end_matches('.');
        StoreError::Storage(format!("{op} the weft store at {path}: {err}; {hint}"))
    }
}
