//! Turning `source.path` into a sorted list of files (the scan order), with hive-style
//! `key=value` directory names as partition values, and checking each file's format up front.

use std::path::{Path, PathBuf};

use object_store::path::Path as StorePath;

use super::delta;
use super::layout::{not_parquet, SourceFile};
use super::store::{self, Remote};
use crate::error::{Error, Result};
use crate::spec::{Format, Member, Pipeline};

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
        Format::Delta => PARQUET,
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

/// What `source.path` holds: its files in scan order and how to read them.
pub struct Listing {
    /// The directory (or `scheme://bucket/prefix`) that file names are relative to.
    pub root: PathBuf,
    pub files: Vec<SourceFile>,
    pub format: Format,
    /// The bucket, for object-store paths.
    pub remote: Option<Remote>,
    /// The table version read, for Delta tables.
    pub delta: Option<delta::Snapshot>,
}

fn path_error(pipeline: &Pipeline, member: &Member, msg: String, hint: &str) -> Error {
    Error::Spec(crate::spec::SpecErrors(vec![pipeline.error_at(&member.key("path"), msg, Some(hint.to_string()))]))
}

/// Lists the files of the source in scan order (sorted by relative path) and settles the format.
pub async fn list(pipeline: &Pipeline, member: &Member) -> Result<Listing> {
    let spec = &member.spec;
    if super::store::is_remote(&spec.path) {
        return list_remote(pipeline, member).await;
    }
    let full = pipeline.resolve_path(&spec.path);
    let is_glob = spec.path.contains(['*', '?', '[']);
    let delta = spec.format == Some(Format::Delta) || (spec.format.is_none() && !is_glob && delta::is_table(&full));
    if delta {
        if is_glob || !full.is_dir() {
            return Err(path_error(
                pipeline,
                member,
                format!("`{}` is not a directory holding a Delta table", spec.path),
                "point `source.path` at the table's root directory (the one holding `_delta_log/`)",
            ));
        }
        let mut snapshot = delta::load(delta::Location::Local(&full), spec).await?;
        let files = std::mem::take(&mut snapshot.files);
        return Ok(Listing { root: full, files, format: Format::Delta, remote: None, delta: Some(snapshot) });
    }
    let (root, paths) = if is_glob {
        let pattern = full.to_string_lossy().to_string();
        let entries = glob::glob(&pattern).map_err(|e| {
            path_error(
                pipeline,
                member,
                format!("invalid glob `{}`: {e}", spec.path),
                "use `*`, `**` and `?`, e.g. `data/**/*.parquet`",
            )
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
        return Err(path_error(
            pipeline,
            member,
            format!("`{}` does not exist (resolved to `{}`)", spec.path, full.display()),
            "paths are relative to the pipeline file; give a file, a directory or a glob",
        ));
    };
    let sized = paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            (p, bytes)
        })
        .collect();
    let (files, format) = settle(pipeline, member, &root, sized, !is_glob && full.is_dir())?;
    Ok(Listing { root, files, format, remote: None, delta: None })
}

/// Objects under an `s3://` (`gs://`, `az://`) path, a glob of them, or a Delta table there.
async fn list_remote(pipeline: &Pipeline, member: &Member) -> Result<Listing> {
    let spec = &member.spec;
    let (remote, key) = store::connect(&spec.path, &spec.storage_options, &spec.retry, &member.at.join("."))?;
    let key_text = key.as_ref().to_string();
    let wildcard = key_text.find(['*', '?', '[']);
    // List from the directory above the first wildcard (or the whole prefix).
    let list_from = match wildcard {
        Some(i) => key_text[..i].rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default(),
        None => key_text.clone(),
    };
    let list_from = StorePath::from(list_from);
    let objects = store::list(&remote, &list_from, &spec.path).await?;
    let table_log = if key_text.is_empty() { "_delta_log/".to_string() } else { format!("{key_text}/_delta_log/") };
    let has_log = objects.iter().any(|o| o.location.as_ref().starts_with(&table_log));
    let url_root = remote.url_of(&list_from);
    if spec.format == Some(Format::Delta) || (spec.format.is_none() && wildcard.is_none() && has_log) {
        if wildcard.is_some() || !has_log {
            return Err(path_error(
                pipeline,
                member,
                format!("`{}` holds no Delta table (no `_delta_log/` under it)", spec.path),
                "point `source.path` at the table's root (the prefix holding `_delta_log/`)",
            ));
        }
        let mut snapshot = delta::load(
            delta::Location::Remote { remote: &remote, url: spec.path.trim_end_matches('/'), prefix: &key },
            spec,
        )
        .await?;
        let files = std::mem::take(&mut snapshot.files);
        return Ok(Listing {
            root: PathBuf::from(url_root),
            files,
            format: Format::Delta,
            remote: Some(remote),
            delta: Some(snapshot),
        });
    }
    let pattern = match wildcard {
        Some(_) => Some(glob::Pattern::new(&key_text).map_err(|e| {
            path_error(
                pipeline,
                member,
                format!("invalid glob `{}`: {e}", spec.path),
                "use `*`, `**` and `?`, e.g. `s3://bucket/data/**/*.parquet`",
            )
        })?),
        None => None,
    };
    let options = glob::MatchOptions { require_literal_separator: true, ..Default::default() };
    // A single object named by the path is that file; otherwise the path is a prefix.
    let single = wildcard.is_none() && objects.iter().any(|o| o.location == key);
    let root_key = if single {
        key_text.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default()
    } else {
        list_from.as_ref().to_string()
    };
    let mut sized = Vec::new();
    for o in &objects {
        let loc = o.location.as_ref();
        if single && o.location != key {
            continue;
        }
        if pattern.as_ref().is_some_and(|p| !p.matches_with(loc, options)) {
            continue;
        }
        let rel = loc.strip_prefix(root_key.as_str()).unwrap_or(loc).trim_start_matches('/');
        if !single && wildcard.is_none() && !key_text.is_empty() && !loc.starts_with(&format!("{key_text}/")) {
            continue;
        }
        if rel.split('/').any(hidden) {
            continue;
        }
        sized.push((PathBuf::from(remote.url_of(&o.location)), o.size));
    }
    if sized.is_empty() && objects.is_empty() {
        return Err(path_error(
            pipeline,
            member,
            format!("nothing exists under `{}`", spec.path),
            "check the bucket and the prefix (keys are case-sensitive)",
        ));
    }
    let root = PathBuf::from(remote.url_of(&StorePath::from(root_key)));
    let (files, format) = settle(pipeline, member, &root, sized, !single && wildcard.is_none())?;
    Ok(Listing { root, files, format, remote: Some(remote), delta: None })
}

/// Settles the format of the listed files (from `source.format` or their extensions), keeps the
/// files of that format when a directory was listed, and names each file relative to `root`.
fn settle(
    pipeline: &Pipeline,
    member: &Member,
    root: &Path,
    mut paths: Vec<(PathBuf, u64)>,
    directory: bool,
) -> Result<(Vec<SourceFile>, Format)> {
    let spec = &member.spec;
    let format = match spec.format {
        Some(f) => f,
        None => {
            let mut found: Vec<Format> = paths.iter().filter_map(|(p, _)| format_of(p)).collect();
            found.dedup();
            let mut kinds = found.clone();
            kinds.sort_by_key(|f| format!("{f:?}"));
            kinds.dedup();
            if kinds.len() > 1 {
                let names: Vec<String> = kinds.iter().map(|f| format!("{f:?}").to_lowercase()).collect();
                return Err(path_error(
                    pipeline,
                    member,
                    format!("`{}` holds files of several formats ({})", spec.path, names.join(", ")),
                    "set `source.format` to the one to read, or point `source.path` at those files only",
                ));
            }
            match found.first() {
                Some(f) => *f,
                None if paths.is_empty() => Format::Parquet,
                None => {
                    return Err(path_error(
                        pipeline,
                        member,
                        format!("cannot tell the format of `{}` from its file names", spec.path),
                        "add `format: parquet` (or arrow, csv, jsonl, delta) to `source`",
                    ))
                }
            }
        }
    };
    if directory {
        // In a directory, read the files of the chosen format (others, like READMEs, are not data).
        let exts = extensions(format);
        let with_ext: Vec<(PathBuf, u64)> = paths
            .iter()
            .filter(|(p, _)| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| exts.contains(&e.to_ascii_lowercase().as_str()))
            })
            .cloned()
            .collect();
        if !with_ext.is_empty() || spec.format.is_none() {
            paths = with_ext;
        }
    }
    if paths.is_empty() {
        return Err(path_error(
            pipeline,
            member,
            format!("`{}` matches no {format:?} files", spec.path)
                .to_lowercase()
                .replace("parquet files", "Parquet files"),
            "check the path and the extension; hidden files (`.x`, `_x`) are skipped",
        ));
    }
    let files = paths
        .into_iter()
        .map(|(p, bytes)| {
            let relative = p.strip_prefix(root).unwrap_or(&p).to_string_lossy().replace('\\', "/");
            let partitions = relative
                .split('/')
                .rev()
                .skip(1)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .filter_map(|d| d.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                .collect();
            SourceFile { path: p, relative, bytes, partitions }
        })
        .collect();
    Ok((files, format))
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
    // Object-store files are checked when their schemas are read (`Source::open`).
    for f in files.iter().filter(|f| !super::store::is_remote(&f.path.to_string_lossy())) {
        let file = std::fs::File::open(&f.path).map_err(|e| Error::io(&f.path, "open", e))?;
        if let Err(e) = parquet::file::reader::SerializedFileReader::new(file) {
            return Err(not_parquet(f, e));
        }
    }
    Ok(())
}
