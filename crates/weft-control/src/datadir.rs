//! The data directory holds the CA keys, the token key and the admin token: only its owner may
//! read it. At every start it is made 0700, and what weft keeps in it (its subdirectories 0700,
//! their files 0600) is brought to those modes too, fixing data directories made by older
//! versions. Only weft's own entries are touched, never anything else in the directory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The entries weft keeps in the data directory: files, and directories whose files are weft's.
const FILES: &[&str] = &["token.key", "admin.token"];
const DIRS: &[&str] = &["ca", "store"];

fn set(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot make {} mode {mode:o}: {e}", path.display())))
}

/// Makes `dir` 0700 (creating it if needed).
pub fn create_private(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    set(dir, 0o700)
}

/// Brings weft's entries in `dir` to 0700 (directories) and 0600 (files).
pub fn secure(dir: &Path) -> std::io::Result<()> {
    set(dir, 0o700)?;
    for f in FILES {
        let p = dir.join(f);
        if p.is_file() {
            set(&p, 0o600)?;
        }
    }
    for d in DIRS {
        let p = dir.join(d);
        if !p.is_dir() {
            continue;
        }
        set(&p, 0o700)?;
        for entry in std::fs::read_dir(&p)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                set(&entry.path(), 0o600)?;
            }
        }
    }
    Ok(())
}
