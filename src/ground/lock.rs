//! Exclusive locks on output directories (an export's destination, a training run): two
//! processes writing one directory would interleave their files, so the second is refused.
//!
//! The lock is `flock` on a file beside the directory (`.NAME.pretext-lock` in its parent), so
//! it is never among the files a reader lists in the directory, and the kernel releases it when
//! the process ends however it ends: a SIGKILL leaves no stale lock to clean up. The file holds
//! the owner's pid, for the message the next process gets.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A held lock on a directory; released (and its file removed) on drop.
#[derive(Debug)]
pub struct DirLock {
    file: File,
    path: PathBuf,
}

/// The lock file of `dir`: beside it, or inside it when it has no parent (a root, `.`).
pub fn lock_path(dir: &Path) -> PathBuf {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    match (dir.parent(), dir.file_name()) {
        (Some(parent), Some(name)) => parent.join(format!(".{}.pretext-lock", name.to_string_lossy())),
        _ => dir.join(".pretext-lock"),
    }
}

impl DirLock {
    /// Locks `dir` for `what` (e.g. "`pretext export`"), or says who holds it and `hint`.
    pub fn acquire(dir: &Path, what: &str, hint: &str) -> Result<DirLock> {
        let path = lock_path(dir);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, "create directory", e))?;
        }
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| Error::io(&path, "open the lock file", e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    let owner = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse::<u32>().ok())
                        .map(|pid| format!(" (pid {pid})"))
                        .unwrap_or_default();
                    return Err(Error::env_hint(
                        format!(
                            "`{}` is in use by another {what}{owner}; its lock is `{}`",
                            dir.display(),
                            path.display()
                        ),
                        hint,
                    ));
                }
                Err(TryLockError::Error(e)) => return Err(Error::io(&path, "lock", e)),
            }
            // A holder that finished removes the file; one opened just before that is locked
            // but no longer the lock anybody else sees, so start again on the current file.
            if !same_file(&file, &path) {
                continue;
            }
            file.set_len(0)
                .and_then(|_| writeln!(file, "{}", std::process::id()))
                .map_err(|e| Error::io(&path, "write", e))?;
            return Ok(DirLock { file, path });
        }
    }
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &File, path: &Path) -> bool {
    path.exists()
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Removed while still held, then unlocked as the file closes.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        let first = DirLock::acquire(&dir, "`pretext export`", "wait").unwrap();
        let path = lock_path(&dir);
        assert_eq!(path, tmp.path().join(".out.pretext-lock"));
        assert!(!dir.exists(), "the lock lives beside the directory, not in it");
        let e = DirLock::acquire(&dir, "`pretext export`", "wait").unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        assert!(e.contains("in use by another `pretext export`"), "{e}");
        drop(first);
        assert!(!path.exists());
        let again = DirLock::acquire(&dir, "`pretext export`", "wait").unwrap();
        drop(again);
    }
}
