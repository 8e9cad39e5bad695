//! The on-disk side: one redb file, `weft.redb`, with three tables.
//!
//! ```text
//!   resources: "Kind/namespace/name" -> JSON of the Object
//!   meta:      "revision"            -> u64, the revision of the last commit
//!   health:    "<ns>/<workload>/<check>" -> a health check's last state (weft-health's record)
//! ```
//!
//! Every change is one write transaction with immediate durability and two-phase commit: when
//! `commit` returns the data is on disk, and a crash at any point leaves either the previous
//! commit or this one.

use crate::error::{Op, StoreError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

const RESOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("resources");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const HEALTH: TableDefinition<&str, &[u8]> = TableDefinition::new("health");
const REVISION: &str = "revision";

/// The database file inside the data directory.
pub const FILE_NAME: &str = "weft.redb";
/// redb's page cache. The store keeps its own copy of every resource in memory, so the cache
/// only has to cover writes; redb's default (1 GiB) is far more than that needs.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

pub(crate) struct Backend {
    db: Database,
    path: PathBuf,
}

/// What the file held at open: the revision and the raw entries, decoded by the caller.
pub(crate) struct Loaded {
    pub revision: u64,
    pub entries: Vec<(String, Vec<u8>)>,
}

impl Backend {
    /// Creates the directory and the file if needed, checks the file's integrity and reads it.
    pub(crate) fn open(dir: &Path) -> Result<(Backend, Loaded), StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Storage(format!(
                "cannot create the data directory {}: {e}; check the path and that this user \
                 may write there",
                dir.display()
            ))
        })?;
        let path = dir.join(FILE_NAME);
        // With the integrity check on, redb reports a damaged file as an error. The catch is a
        // second line: a file altered outside redb must give the operator an error naming the
        // file, never a crash of the control plane.
        let opened = catch_unwind(AssertUnwindSafe(|| open_and_load(&path)));
        match opened {
            Ok(Ok((db, loaded))) => Ok((Backend { db, path }, loaded)),
            Ok(Err(e)) => Err(StoreError::storage(Op::Open, &path, e)),
            Err(_) => Err(StoreError::storage(
                Op::Load,
                &path,
                redb::Error::Corrupted("redb failed while reading the file".into()),
            )),
        }
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `puts`, removes `deletes` and records `revision`, all in one durable transaction.
    pub(crate) fn commit(
        &self,
        revision: u64,
        puts: &[(String, Vec<u8>)],
        deletes: &[String],
    ) -> Result<(), StoreError> {
        self.try_commit(revision, puts, deletes).map_err(|e| StoreError::storage(Op::Commit, &self.path, e))
    }

    fn try_commit(&self, revision: u64, puts: &[(String, Vec<u8>)], deletes: &[String]) -> Result<(), redb::Error> {
        let mut txn = self.db.begin_write()?;
        txn.set_two_phase_commit(true);
        {
            let mut table = txn.open_table(RESOURCES)?;
            for (key, value) in puts {
                table.insert(key.as_str(), value.as_slice())?;
            }
            for key in deletes {
                table.remove(key.as_str())?;
            }
            let mut meta = txn.open_table(META)?;
            meta.insert(REVISION, revision)?;
        }
        // Dropping the transaction on an error above aborts it.
        txn.commit()?;
        Ok(())
    }

    /// Every row of the health table.
    pub(crate) fn health(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.try_health().map_err(|e| StoreError::storage(Op::Load, &self.path, e))
    }

    fn try_health(&self) -> Result<Vec<(String, Vec<u8>)>, redb::Error> {
        let txn = self.db.begin_read()?;
        let mut rows = Vec::new();
        match txn.open_table(HEALTH) {
            Ok(table) => {
                for row in table.iter()? {
                    let (key, value) = row?;
                    rows.push((key.value().to_string(), value.value().to_vec()));
                }
            }
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(rows)
    }

    /// Writes (`Some`) and removes (`None`) health rows in one durable transaction; the revision
    /// is not touched.
    pub(crate) fn commit_health(&self, changes: &[(String, Option<Vec<u8>>)]) -> Result<(), StoreError> {
        self.try_commit_health(changes).map_err(|e| StoreError::storage(Op::Commit, &self.path, e))
    }

    fn try_commit_health(&self, changes: &[(String, Option<Vec<u8>>)]) -> Result<(), redb::Error> {
        let mut txn = self.db.begin_write()?;
        txn.set_two_phase_commit(true);
        {
            let mut table = txn.open_table(HEALTH)?;
            for (key, value) in changes {
                match value {
                    Some(v) => table.insert(key.as_str(), v.as_slice())?,
                    None => table.remove(key.as_str())?,
                };
            }
        }
        txn.commit()?;
        Ok(())
    }
}

fn open_and_load(path: &Path) -> Result<(Database, Loaded), redb::Error> {
    let db = redb::Builder::new().set_cache_size(CACHE_BYTES).set_check_integrity_on_open(true).create(path)?;
    let txn = db.begin_read()?;
    let revision = match txn.open_table(META) {
        Ok(meta) => meta.get(REVISION)?.map(|v| v.value()).unwrap_or(0),
        Err(TableError::TableDoesNotExist(_)) => 0,
        Err(e) => return Err(e.into()),
    };
    let mut entries = Vec::new();
    match txn.open_table(RESOURCES) {
        Ok(table) => {
            for row in table.iter()? {
                let (key, value) = row?;
                entries.push((key.value().to_string(), value.value().to_vec()));
            }
        }
        Err(TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    drop(txn);
    Ok((db, Loaded { revision, entries }))
}
