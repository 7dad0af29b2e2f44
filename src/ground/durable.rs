//! Durable writes: a file's bytes reach the disk before its name does, and a rename is durable
//! before anything that relies on it (deleting an older checkpoint, publishing a manifest).
//! Every writer of a file that must survive a crash whole goes through here.

use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` and syncs them to the disk.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, "create", e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, "write", e))?;
    f.sync_all().map_err(|e| Error::io(path, "sync", e))
}

/// Writes `bytes` to a hidden temporary file beside `path` (`.NAME.tmp`), syncs it, renames it
/// into place and syncs the directory: after a crash `path` holds the old bytes or the new ones.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create directory", e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    write_synced(&tmp, bytes)?;
    rename(&tmp, path)?;
    sync_dir(dir)
}

/// Renames `from` to `to`; the error names the destination.
pub fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| Error::io(to, "rename into", e))
}

/// Syncs a file already written (its bytes, before a rename publishes it).
pub fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(|e| Error::io(path, "sync", e))
}

/// Makes a directory's entries (renames, deletions) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, "sync", e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("sub").join("state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }
}
