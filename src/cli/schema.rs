use std::path::Path;

use crate::error::{Error, Result};

/// Prints the pipeline JSON Schema, or writes it and the task output schemas into `dir`.
pub fn run(write: bool, dir: &Path) -> Result<i32> {
    let files = crate::schemas::generated();
    if !write {
        println!("{}", files[0].1);
        return Ok(0);
    }
    for (name, text) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, "create directory", e))?;
        }
        std::fs::write(&path, text).map_err(|e| Error::io(&path, "write", e))?;
        eprintln!("wrote `{}`", path.display());
    }
    Ok(0)
}
