//! Turning `source.path` into a sorted list of files (the scan order), with hive-style
//! `key=value` directory names as partition values, and checking each file's format up front.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::spec::{Format, Pipeline};

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

const PARQUET: &[&str] = &["parquet", "pq", "parq"];
const ARROW: &[&str] = &["arrow", "ipc", "feather", "arrows"];
const CSV: &[&str] = &["csv"];
const JSONL: &[&str] = &["jsonl", "ndjson", "json"];

fn extensions(format: Format) -> &'static [&'static str] {
    match format {
        Format::Parquet | Format::Pretext => PARQUET,
        Format::Arrow => ARROW,
        Format::Csv => CSV,
        Format::Jsonl => JSONL,
    }
}

/// The format a file extension implies.
pub fn format_of(path: &Path) -> Option<Format> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    [Format::Parquet, Format::Arrow, Format::Csv, Format::Jsonl]
        .into_iter()
        .find(|f| extensions(*f).contains(&ext.as_str()))
}

fn hidden(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        if hidden(&name.to_string_lossy()) {
            continue;
        }
        let p = e.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// Lists the files of the source in scan order (sorted by relative path) and settles the format.
pub fn list(pipeline: &Pipeline) -> Result<(PathBuf, Vec<SourceFile>, Format)> {
    let spec = &pipeline.spec.source;
    let path_err = |msg: String, hint: &str| {
        Error::Spec(crate::spec::SpecErrors(vec![pipeline.error_at(&["source", "path"], msg, Some(hint.to_string()))]))
    };
    let full = pipeline.resolve_path(&spec.path);
    let is_glob = spec.path.contains(['*', '?', '[']);
    let (root, mut paths) = if is_glob {
        let pattern = full.to_string_lossy().to_string();
        let entries = glob::glob(&pattern).map_err(|e| {
            path_err(format!("invalid glob `{}`: {e}", spec.path), "use `*`, `**` and `?`, e.g. `data/**/*.parquet`")
        })?;
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok()).filter(|p| p.is_file()).collect();
        paths.sort();
        let root = glob_root(&full);
        (root, paths)
    } else if full.is_dir() {
        let mut paths = Vec::new();
        walk(&full, &mut paths).map_err(|e| Error::io(&full, "list", e))?;
        (full.clone(), paths)
    } else if full.is_file() {
        (full.parent().map(Path::to_path_buf).unwrap_or_default(), vec![full.clone()])
    } else {
        return Err(path_err(
            format!("`{}` does not exist (resolved to `{}`)", spec.path, full.display()),
            "paths are relative to the pipeline file; give a file, a directory or a glob",
        ));
    };
    let format = match spec.format {
        Some(f) => f,
        None => {
            let mut found: Vec<Format> = paths.iter().filter_map(|p| format_of(p)).collect();
            found.dedup();
            let mut kinds = found.clone();
            kinds.sort_by_key(|f| format!("{f:?}"));
            kinds.dedup();
            if kinds.len() > 1 {
                let names: Vec<String> = kinds.iter().map(|f| format!("{f:?}").to_lowercase()).collect();
                return Err(path_err(
                    format!("`{}` holds files of several formats ({})", spec.path, names.join(", ")),
                    "set `source.format` to the one to read, or point `source.path` at those files only",
                ));
            }
            match found.first() {
                Some(f) => *f,
                None if paths.is_empty() => Format::Parquet,
                None => {
                    return Err(path_err(
                        format!("cannot tell the format of `{}` from its file names", spec.path),
                        "add `format: parquet` (or arrow, csv, jsonl) to `source`",
                    ))
                }
            }
        }
    };
    if !is_glob && full.is_dir() {
        // In a directory, read the files of the chosen format (others, like READMEs, are not data).
        let exts = extensions(format);
        let with_ext: Vec<PathBuf> = paths
            .iter()
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| exts.contains(&e.to_ascii_lowercase().as_str()))
            })
            .cloned()
            .collect();
        if !with_ext.is_empty() || spec.format.is_none() {
            paths = with_ext;
        }
    }
    if paths.is_empty() {
        return Err(path_err(
            format!("`{}` matches no {format:?} files", spec.path)
                .to_lowercase()
                .replace("parquet files", "Parquet files"),
            "check the path and the extension; hidden files (`.x`, `_x`) are skipped",
        ));
    }
    let files = paths
        .into_iter()
        .map(|p| {
            let relative = p.strip_prefix(&root).unwrap_or(&p).to_string_lossy().replace('\\', "/");
            let partitions = relative
                .split('/')
                .rev()
                .skip(1)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .filter_map(|d| d.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                .collect();
            let bytes = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            SourceFile { path: p, relative, bytes, partitions }
        })
        .collect();
    Ok((root, files, format))
}

/// The directory part of a glob before its first wildcard.
fn glob_root(pattern: &Path) -> PathBuf {
    let mut root = PathBuf::new();
    for c in pattern.components() {
        if c.as_os_str().to_string_lossy().contains(['*', '?', '[']) {
            break;
        }
        root.push(c);
    }
    if root.is_file() {
        root.pop();
    }
    root
}

/// Opens every Parquet footer so a file that is not Parquet, or is truncated, is reported
/// before any output is written.
pub fn check_parquet_footers(files: &[SourceFile]) -> Result<()> {
    for f in files {
        let file = std::fs::File::open(&f.path).map_err(|e| Error::io(&f.path, "open", e))?;
        if let Err(e) = parquet::file::reader::SerializedFileReader::new(file) {
            return Err(Error::data_hint(
                format!("`{}` is not a readable Parquet file: {e}", f.path.display()),
                "the file may be truncated or of another format; remove it, or set `source.format` to match the files",
            ));
        }
    }
    Ok(())
}
