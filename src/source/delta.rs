//! Delta Lake tables: the `deltalake` crate replays the transaction log of the chosen version
//! (the newest, `version: N` or `as_of: <timestamp>`) and lists its data files with their
//! partition values; the files are then scanned like any Parquet source (one at a time, sorted by
//! path), so keys and order are as deterministic as for plain files and the table version read
//! is recorded wherever the data's identity matters (export fingerprint and manifest, training
//! checkpoints).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use arrow::datatypes::SchemaRef;
use deltalake_core::logstore::{default_logstore, logstore_factories, LogStore, LogStoreFactory, StorageConfig};
use deltalake_core::{DeltaResult, DeltaTableBuilder, DeltaTableError};
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use url::Url;

use super::layout::SourceFile;
use super::store::Remote;
use crate::error::{Error, Result};
use crate::spec::SourceSpec;

/// Partition values that are null are spelled this way in `SourceFile::partitions`, as in
/// hive-style directories.
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// The version of a Delta table that a run reads.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub version: u64,
    /// The table's schema, partition columns included (their types type the partition values).
    pub schema: SchemaRef,
    pub files: Vec<SourceFile>,
}

/// Where the table lives.
pub enum Location<'a> {
    Local(&'a Path),
    /// `prefix`: the table's key prefix in the bucket.
    Remote {
        remote: &'a Remote,
        url: &'a str,
        prefix: &'a StorePath,
    },
}

/// Delta's own log store, read-only here, for object-store schemes deltalake has no factory
/// for (we hand it the store we built; it only reads the log).
#[derive(Debug)]
struct ReadLog;

impl LogStoreFactory for ReadLog {
    fn with_options(
        &self,
        prefixed_store: deltalake_core::logstore::ObjectStoreRef,
        root_store: deltalake_core::logstore::ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(prefixed_store, root_store, location, options))
    }
}

fn register_factories() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let registry = logstore_factories();
        for scheme in ["s3", "s3a", "gs", "gcs", "az", "azure", "abfs", "abfss"] {
            let url = Url::parse(&format!("{scheme}://")).expect("static scheme");
            if !registry.contains_key(&url) {
                registry.insert(url, Arc::new(ReadLog));
            }
        }
    });
}

/// Whether a local directory is a Delta table.
pub fn is_table(dir: &Path) -> bool {
    dir.join("_delta_log").is_dir()
}

/// The commit versions present in the log (`_delta_log/NNNNNNNNNNNNNNNNNNNN.json`), sorted.
async fn versions(at: &Location<'_>) -> Vec<u64> {
    let names: Vec<String> = match at {
        Location::Local(dir) => std::fs::read_dir(dir.join("_delta_log"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().to_string()).collect())
            .unwrap_or_default(),
        Location::Remote { remote, prefix, .. } => remote
            .store
            .list(Some(&StorePath::clone(prefix).join("_delta_log")))
            .try_collect::<Vec<_>>()
            .await
            .map(|v| v.into_iter().filter_map(|m| m.location.filename().map(str::to_string)).collect())
            .unwrap_or_default(),
    };
    let mut v: Vec<u64> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".json"))
        .filter(|n| n.len() == 20)
        .filter_map(|n| n.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

fn span(versions: &[u64]) -> String {
    match (versions.first(), versions.last()) {
        (Some(a), Some(b)) if a == b => format!("only version {a}"),
        (Some(a), Some(b)) => format!("versions {a} to {b}"),
        _ => "no commits".into(),
    }
}

/// Loads the snapshot `spec` asks for.
pub async fn load(at: Location<'_>, spec: &SourceSpec) -> Result<Snapshot> {
    register_factories();
    let (name, url) = match &at {
        Location::Local(dir) => {
            let abs = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, "open", e))?;
            let url = Url::from_directory_path(&abs)
                .map_err(|_| Error::data(format!("`{}` cannot be written as a file URL", abs.display())))?;
            (dir.display().to_string(), url)
        }
        Location::Remote { url, .. } => {
            let u = Url::parse(&format!("{}/", url.trim_end_matches('/'))).map_err(Error::internal)?;
            (url.to_string(), u)
        }
    };
    let available = versions(&at).await;
    if available.is_empty() {
        return Err(Error::data_hint(
            format!("`{name}` is not a Delta table: `_delta_log/` holds no commits"),
            "point `source.path` at the table's root directory (the one holding `_delta_log/`), or set `format` to the files' format",
        ));
    }
    let mut builder = DeltaTableBuilder::from_url(url.clone()).map_err(|e| delta_error(e, &name))?;
    if let Location::Remote { remote, .. } = &at {
        builder = builder.with_storage_backend(remote.store.clone(), url.clone());
    }
    if let Some(v) = spec.version {
        if !available.contains(&v) {
            return Err(Error::data_hint(
                format!("Delta table `{name}` has no version {v}: its log holds {}", span(&available)),
                "choose one of those in `source.version`, or remove it to read the newest",
            ));
        }
        builder = builder.with_version(v);
    }
    if let Some(t) = &spec.as_of {
        builder = builder.with_datestring(t).map_err(|e| delta_error(e, &name))?;
    }
    let table = builder.load().await.map_err(|e| match (&spec.as_of, &e) {
        (Some(t), DeltaTableError::InvalidDateTimeString { .. } | DeltaTableError::Generic(_)) => Error::data_hint(
            format!("Delta table `{name}` has no version committed at or before {t} ({})", span(&available)),
            "choose a later `source.as_of`, or read a version by number with `source.version`",
        ),
        _ => delta_error(e, &name),
    })?;
    let state = table.snapshot().map_err(|e| delta_error(e, &name))?;
    let version = state.version() as u64;
    if let Some(t) = &spec.as_of {
        // deltalake falls back to the first version for a time before it: refuse that instead.
        let wanted = chrono::DateTime::parse_from_rfc3339(t).map(|d| d.timestamp_millis()).unwrap_or(i64::MAX);
        if state.version_timestamp(state.version()).is_some_and(|committed| committed > wanted) {
            return Err(Error::data_hint(
                format!("Delta table `{name}` has no version committed at or before {t} ({})", span(&available)),
                "choose a later `source.as_of`, or read a version by number with `source.version`",
            ));
        }
    }
    if let Some(mode) = state.table_config().column_mapping_mode {
        // The kernel's enum is not re-exported; `None` is its only mode without renaming.
        if format!("{mode:?}") != "None" {
            return Err(Error::data_hint(
                format!("Delta table `{name}` uses column mapping ({mode:?}): its Parquet files name columns differently from the table"),
                "rewrite the table without column mapping, or export it to plain Parquet first",
            ));
        }
    }
    let schema = state.snapshot().arrow_schema();
    let mut files = Vec::new();
    for view in state.log_data().iter() {
        let rel = view.path().to_string();
        if view.deletion_vector_descriptor().is_some() {
            return Err(Error::data_hint(
                format!("Delta table `{name}` version {version}: file `{rel}` has a deletion vector (rows deleted in place), which pretext does not apply"),
                "purge the deletion vectors (`REORG TABLE … APPLY (PURGE)`) or read a version from before the deletes",
            ));
        }
        let values = view.partition_values_map();
        let mut partitions: Vec<(String, String)> = Vec::new();
        for field in schema.fields() {
            if let Some(v) = values.get(field.name()) {
                partitions.push((field.name().clone(), v.clone().unwrap_or_else(|| NULL_PARTITION.to_string())));
            }
        }
        let path = match &at {
            _ if rel.contains("://") => PathBuf::from(&rel),
            Location::Local(dir) => dir.join(&rel),
            Location::Remote { url, .. } => PathBuf::from(format!("{}/{rel}", url.trim_end_matches('/'))),
        };
        files.push(SourceFile { path, relative: rel, bytes: view.size().max(0) as u64, partitions });
    }
    // Path order, not log-replay order: the same version always scans the same way.
    files.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok(Snapshot { version, schema, files })
}

fn delta_error(e: DeltaTableError, name: &str) -> Error {
    Error::data_hint(
        format!("Delta table `{name}`: {e}"),
        "check that `source.path` is the table's root and that the log is readable",
    )
}
