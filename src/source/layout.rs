//! What a source is made of, as every kind of source describes it: its files in scan order,
//! their row groups, and the share of them one process reads. A leaf: the other files of
//! `source/` build on these types, and this file imports none of them.

use std::path::PathBuf;

use crate::error::Error;

/// One input file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceFile {
    /// Absolute or pipeline-relative path used to open it.
    #[serde(skip)]
    pub path: PathBuf,
    /// Path relative to the source root: what keys and the manifest use, so moving the dataset
    /// keeps its keys.
    pub relative: String,
    pub bytes: u64,
    /// Partition values from `key=value` directories, outermost first.
    #[serde(skip)]
    pub partitions: Vec<(String, String)>,
}

/// One row group: `rows` rows of file `file` (its `index`-th group) from its row `first_row`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowGroup {
    pub file: usize,
    pub index: usize,
    pub first_row: u64,
    pub rows: u64,
}

/// This process's share: documents whose ordinal (in scan order) is `rank` modulo `world_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    pub rank: u64,
    pub world_size: u64,
}

impl Shard {
    pub const WHOLE: Shard = Shard { rank: 0, world_size: 1 };
}

/// The error for a file whose footer or row groups cannot be read as Parquet.
pub fn not_parquet(f: &SourceFile, e: impl std::error::Error + 'static) -> Error {
    if let Some(g) = crate::error::GaveUp::find(&e) {
        return g.clone().into();
    }
    Error::data_hint(
        format!("`{}` is not a readable Parquet file: {e}", f.path.display()),
        "the file may be truncated or of another format; remove it, or set `source.format` to match the files",
    )
}

/// The error for a file that failed while being read: damaged pages, a changed file, a failed
/// disk. Errors that already name the file, or are not about its bytes, pass unchanged.
pub fn read_failed(path: &str, e: impl Into<Error>) -> Error {
    match e.into() {
        e @ Error::Data { .. } if e.to_string().contains(path) => e,
        e @ (Error::Internal(_) | Error::Env { .. } | Error::Stopped { .. } | Error::Spec(_)) => e,
        e if e.to_string().contains("non-UTF-8") => Error::data_hint(
            format!("cannot read `{path}`: {e}"),
            "the text holds bytes that are not UTF-8: fix the data, or leave those rows out in `source.sql`",
        ),
        e => Error::data_hint(
            format!("cannot read `{path}`: {e}"),
            "the file is damaged, or changed while it was read: restore or remove it, then run again (an export keeps its finished parts for `--resume`)",
        ),
    }
}
