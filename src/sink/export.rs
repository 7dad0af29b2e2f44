//! `pretext export`: the example stream → `part-NNNNN.parquet` files of `rows_per_file` rows.
//!
//! While an export runs, everything lives in the hidden `.pretext-partial/` inside the output
//! directory: parts are written under a temporary name, synced and renamed when complete, and
//! `_progress.json` lists the finished ones. At the end the parts move into the output directory
//! and `_manifest.json` is written last, so a reader listing the directory sees either nothing or
//! the whole dataset. `--resume` checks the fingerprint (pipeline, export settings, tokenizer,
//! source files, shard) and every finished part's hash, regenerates the deterministic stream,
//! skips the rows of the finished parts and writes the rest: the bytes equal an uninterrupted run.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Schema, SchemaRef};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde_json::json;

use super::manifest::{describe_schema, hf_metadata, Part, Progress, MANIFEST, PROGRESS};
use super::progress::Meter;
use crate::error::{Error, Result};
use crate::plan::{write_atomic, Plan};
use crate::spec::Compression;

/// What an export did.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub dir: PathBuf,
    pub rows: u64,
    pub tokens: u64,
    pub parts: usize,
    pub resumed_parts: usize,
    pub seconds: f64,
    pub already_complete: bool,
}

/// Options from the command line.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub dir: PathBuf,
    pub resume: bool,
    pub progress_bar: bool,
}

fn part_name(i: usize) -> String {
    format!("part-{i:05}.parquet")
}

/// The hidden directory holding an export in progress.
pub const STAGING: &str = ".pretext-partial";

/// What the output directory holds before an export starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputState {
    /// Nothing yet; `created` when the directory does not exist (removed again on failure).
    Fresh { created: bool },
    /// An interrupted export to continue (`--resume`).
    Interrupted,
    /// A finished export (`--resume` on it is a no-op once its fingerprint matches).
    Finished,
}

/// Checks the output directory before anything is built: refuses a file, a finished or
/// interrupted export without `--resume`, and a non-empty directory.
pub fn prepare_dir(dir: &Path, resume: bool) -> Result<OutputState> {
    if dir.is_file() {
        return Err(Error::env_hint(
            format!("the output `{}` is a file, not a directory", dir.display()),
            "choose another `export.path` or `--out DIR`",
        ));
    }
    if !dir.exists() {
        return Ok(OutputState::Fresh { created: true });
    }
    let finished = dir.join(MANIFEST).is_file();
    let interrupted = dir.join(STAGING).join(PROGRESS).is_file();
    match (finished, interrupted, resume) {
        (true, _, true) => Ok(OutputState::Finished),
        (true, _, false) => Err(Error::env_hint(
            format!("`{}` already holds a finished export", dir.display()),
            "delete it, or export to another directory with `--out DIR`",
        )),
        (false, true, true) => Ok(OutputState::Interrupted),
        (false, true, false) => Err(Error::env_hint(
            format!("`{}` holds an interrupted export", dir.display()),
            "continue it with `--resume`, or delete the directory",
        )),
        (false, false, _) if dir_has_data(dir)? => Err(Error::env_hint(
            format!("the output directory `{}` is not empty", dir.display()),
            "export into a new or empty directory (`--out DIR`)",
        )),
        (false, false, _) => Ok(OutputState::Fresh { created: false }),
    }
}

fn dir_has_data(dir: &Path) -> Result<bool> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "list", e))?;
    Ok(entries.filter_map(|e| e.ok()).any(|e| {
        let n = e.file_name().to_string_lossy().to_string();
        n != STAGING && n != "tokenizer.json" && !(n.starts_with('.') && n.ends_with(".tmp"))
    }))
}

fn remove_temporaries(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, "list", e))?.filter_map(|e| e.ok()) {
        let n = e.file_name().to_string_lossy().to_string();
        if n.starts_with('.') && n.ends_with(".tmp") {
            std::fs::remove_file(e.path()).map_err(|err| Error::io(&e.path(), "remove", err))?;
        }
    }
    Ok(())
}

/// Everything that decides the exported bytes, hashed: the pipeline's content, the export
/// settings (not the path), the tokenizer file, the source files and sizes, and the shard.
pub fn fingerprint(plan: &Plan) -> String {
    let mut export = serde_json::to_value(&plan.pipeline.spec.export).unwrap_or_default();
    if let Some(o) = export.as_object_mut() {
        o.remove("path");
    }
    let files: Vec<_> = plan.source.files.iter().map(|f| json!([f.relative, f.bytes])).collect();
    let v = json!({
        "pipeline": format!("{:016x}", plan.pipeline.content_hash()),
        "export": export,
        "tokenizer": plan.tokenizer.file_hash,
        "files": files,
        "shard": [plan.shard.rank, plan.shard.world_size],
        "format": crate::sink::FORMAT_VERSION,
    });
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(crate::spec::canonical_json(&v).as_bytes()))
}

/// Checks the finished parts of an interrupted export against their recorded hashes; each may
/// be in the staging directory or, if a crash hit the final moves, already in `dir`.
fn verify_parts(dir: &Path, staging: &Path, parts: &[Part]) -> Result<()> {
    for p in parts {
        let path = [staging.join(&p.file), dir.join(&p.file)].into_iter().find(|c| c.is_file());
        let ok = path.as_ref().and_then(|path| std::fs::read(path).ok()).is_some_and(|bytes| {
            bytes.len() as u64 == p.bytes && format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)) == p.xxh3
        });
        if !ok {
            return Err(Error::env_hint(
                format!("part `{}` of the interrupted export in `{}` is missing or changed", p.file, dir.display()),
                "delete the output directory and export again",
            ));
        }
    }
    Ok(())
}

/// Top-level fields whose values differ between two resolved pipelines (dotted paths).
fn diff_fields(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    fn walk(a: &serde_json::Value, b: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        match (a.as_object(), b.as_object()) {
            (Some(x), Some(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    walk(
                        x.get(k).unwrap_or(&serde_json::Value::Null),
                        y.get(k).unwrap_or(&serde_json::Value::Null),
                        &p,
                        out,
                    );
                }
            }
            _ if a != b => out.push(format!("`{path}`")),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(a, b, "", &mut out);
    if out.is_empty() {
        out.push("the pipeline hash".into());
    }
    out
}

/// Real (non-padding) input tokens: the sum of the `attention_mask*` columns, or every
/// `input_ids` value when the task has no attention mask (span corruption).
fn tokens_in(batch: &RecordBatch) -> u64 {
    let mut total = 0;
    let mut found = false;
    for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
        if field.name().starts_with("attention_mask") {
            if let Some(l) = col.as_fixed_size_list_opt() {
                found = true;
                total += l.values().as_primitive::<Int32Type>().values().iter().map(|&v| v as u64).sum::<u64>();
            }
        }
    }
    if !found {
        if let Some(l) = batch.column_by_name("input_ids").and_then(|c| c.as_fixed_size_list_opt()) {
            total = l.values().len() as u64;
        }
    }
    total
}

struct PartWriter {
    index: usize,
    tmp: PathBuf,
    writer: ArrowWriter<File>,
    rows: u64,
    tokens: u64,
}

struct Writer {
    dir: PathBuf,
    schema: SchemaRef,
    props: WriterProperties,
    rows_per_file: u64,
    chunk: usize,
    current: Option<PartWriter>,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    progress: Progress,
}

impl Writer {
    fn open_part(&mut self) -> Result<()> {
        let index = self.progress.parts.len();
        let tmp = self.dir.join(format!(".{}.tmp", part_name(index)));
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, "create", e))?;
        let writer = ArrowWriter::try_new(file, self.schema.clone(), Some(self.props.clone()))
            .map_err(|e| Error::internal(format!("parquet writer: {e}")))?;
        self.current = Some(PartWriter { index, tmp, writer, rows: 0, tokens: 0 });
        Ok(())
    }

    /// Buffers rows and writes them in chunks that start at fixed offsets inside the part, so a
    /// resumed export calls the Parquet writer with the same slices as an uninterrupted one.
    fn push(&mut self, mut batch: RecordBatch) -> Result<()> {
        while batch.num_rows() > 0 {
            if self.current.is_none() {
                self.open_part()?;
            }
            let part_rows = self.current.as_ref().map(|p| p.rows).unwrap_or(0);
            // A chunk is `chunk` rows, or what is left of the part: offsets inside a part are fixed.
            let target = self.chunk.min((self.rows_per_file - part_rows) as usize);
            let take = (target - self.pending_rows).min(batch.num_rows());
            self.pending.push(batch.slice(0, take));
            self.pending_rows += take;
            batch = batch.slice(take, batch.num_rows() - take);
            if self.pending_rows == target {
                self.flush_chunk()?;
                if self.current.as_ref().is_some_and(|p| p.rows == self.rows_per_file) {
                    self.close_part()?;
                }
            }
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> Result<()> {
        if self.pending_rows == 0 {
            return Ok(());
        }
        let chunk = arrow::compute::concat_batches(&self.schema, &self.pending)?;
        self.pending.clear();
        self.pending_rows = 0;
        let part = self.current.as_mut().ok_or_else(|| Error::internal("chunk without a part"))?;
        part.writer.write(&chunk).map_err(|e| Error::env(format!("writing `{}`: {e}", part.tmp.display())))?;
        part.rows += chunk.num_rows() as u64;
        part.tokens += tokens_in(&chunk);
        Ok(())
    }

    fn close_part(&mut self) -> Result<()> {
        self.flush_chunk()?;
        let Some(part) = self.current.take() else { return Ok(()) };
        let file =
            part.writer.into_inner().map_err(|e| Error::env(format!("finishing `{}`: {e}", part.tmp.display())))?;
        file.sync_all().map_err(|e| Error::io(&part.tmp, "sync", e))?;
        let name = part_name(part.index);
        let bytes = std::fs::read(&part.tmp).map_err(|e| Error::io(&part.tmp, "read back", e))?;
        let fin = self.dir.join(&name);
        std::fs::rename(&part.tmp, &fin).map_err(|e| Error::io(&fin, "rename into", e))?;
        self.progress.parts.push(Part {
            file: name,
            rows: part.rows,
            tokens: part.tokens,
            bytes: bytes.len() as u64,
            xxh3: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)),
        });
        self.progress.write(&self.dir)
    }
}

/// Share of `input_ids` positions that are padding, for tasks with one attention mask.
pub fn padding_share(plan: &Plan, rows: u64, tokens: u64) -> Option<f64> {
    let schema = plan.task.output_schema();
    let single = schema.fields().iter().filter(|f| f.name().starts_with("attention_mask")).count() == 1;
    let capacity = rows * plan.seq_len as u64;
    (single && capacity > 0).then(|| 1.0 - tokens as f64 / capacity as f64)
}

/// Runs the plan's stream into Parquet parts and a manifest.
pub async fn export(plan: Arc<Plan>, opts: &ExportOptions) -> Result<ExportReport> {
    let started = Instant::now();
    let dir = opts.dir.clone();
    let staging = dir.join(STAGING);
    let hash = format!("{:016x}", plan.pipeline.content_hash());
    let fingerprint = fingerprint(&plan);
    let resolved = plan.pipeline.resolved_json();
    let state = prepare_dir(&dir, opts.resume)?;
    let done_parts = match state {
        OutputState::Finished => {
            let m: serde_json::Value = std::fs::read(dir.join(MANIFEST))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            if m["fingerprint"].as_str() != Some(fingerprint.as_str()) {
                return Err(Error::env_hint(
                    format!("`{}` holds a finished export of a different pipeline or data", dir.display()),
                    "export to another directory with `--out DIR`",
                ));
            }
            return Ok(ExportReport {
                dir,
                rows: 0,
                tokens: 0,
                parts: 0,
                resumed_parts: 0,
                seconds: 0.0,
                already_complete: true,
            });
        }
        OutputState::Interrupted => {
            let progress = Progress::read(&staging)?.ok_or_else(|| Error::internal("progress file vanished"))?;
            if progress.fingerprint != fingerprint {
                let mut changed = diff_fields(&progress.pipeline, &resolved);
                if progress.pipeline == resolved {
                    changed = vec!["the source files, the tokenizer file or the shard".into()];
                }
                return Err(Error::env_hint(
                    format!(
                        "`{}` was exported by a different pipeline (changed: {})",
                        dir.display(),
                        changed.join(", ")
                    ),
                    "resume with the same pipeline, overrides and data, or export to a new directory",
                ));
            }
            verify_parts(&dir, &staging, &progress.parts)?;
            remove_temporaries(&staging)?;
            progress.parts
        }
        OutputState::Fresh { .. } => Vec::new(),
    };
    std::fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, "create directory", e))?;
    let resumed_parts = done_parts.len();
    let progress = Progress {
        pipeline_hash: hash.clone(),
        fingerprint: fingerprint.clone(),
        pipeline: resolved.clone(),
        parts: done_parts,
    };
    let result = write_parts(&plan, opts, &staging, progress).await;
    let parts = match result {
        Ok(parts) => parts,
        Err((e, finished)) => {
            if finished == 0 {
                // Nothing worth resuming: leave the directory as it was.
                let _ = std::fs::remove_dir_all(&staging);
                if state == (OutputState::Fresh { created: true }) {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            } else {
                eprintln!(
                    "note: {finished} finished part(s) are kept in `{}`: fix the problem and run again with `--resume`",
                    staging.display()
                );
            }
            return Err(e);
        }
    };
    // Publish: parts move out of staging, then the manifest, then staging goes away.
    for p in &parts {
        let from = staging.join(&p.file);
        if from.is_file() {
            let to = dir.join(&p.file);
            std::fs::rename(&from, &to).map_err(|e| Error::io(&to, "rename into", e))?;
        }
    }
    let rows: u64 = parts.iter().map(|p| p.rows).sum();
    let tokens: u64 = parts.iter().map(|p| p.tokens).sum();
    let tok = &plan.tokenizer;
    let manifest = json!({
        "pretext_version": env!("CARGO_PKG_VERSION"),
        "name": plan.pipeline.spec.name,
        "pipeline_hash": hash,
        "fingerprint": fingerprint,
        "seed": plan.seed,
        "pipeline": resolved,
        "shard": {"rank": plan.shard.rank, "world_size": plan.shard.world_size},
        "tokenizer": {
            "kind": tok.description,
            "file": plan.tokenizer_file.as_ref().map(|p| p.display().to_string()),
            "xxh3": tok.file_hash,
            "vocab_size": tok.vocab_size,
            "special_tokens": tok.specials,
        },
        "source": {
            "root": plan.source.root.display().to_string(),
            "format": format!("{:?}", plan.source.format).to_lowercase(),
            "files": plan.source.files,
            "stats": plan.source.stats.snapshot(),
        },
        "schema": describe_schema(&plan.task.output_schema()),
        "rows": rows,
        "tokens": tokens,
        "padding_share": padding_share(&plan, rows, tokens),
        "parts": parts,
    });
    let bytes = serde_json::to_vec_pretty(&manifest).map_err(Error::internal)?;
    write_atomic(&dir.join(MANIFEST), &bytes)?;
    std::fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, "remove", e))?;
    Ok(ExportReport {
        dir,
        rows,
        tokens,
        parts: parts.len(),
        resumed_parts,
        seconds: started.elapsed().as_secs_f64(),
        already_complete: false,
    })
}

/// Streams examples into parts inside `staging`; returns every finished part, or the error and
/// how many parts are finished (resumable).
async fn write_parts(
    plan: &Arc<Plan>,
    opts: &ExportOptions,
    staging: &Path,
    progress: Progress,
) -> std::result::Result<Vec<Part>, (Error, usize)> {
    let spec = &plan.pipeline.spec.export;
    let task_schema = plan.task.output_schema();
    let mut metadata: HashMap<String, String> = task_schema.metadata().clone();
    metadata.insert("huggingface".into(), hf_metadata(&task_schema));
    let schema: SchemaRef = Arc::new(Schema::new_with_metadata(task_schema.fields().clone(), metadata));
    let level = ZstdLevel::try_new(spec.zstd_level).map_err(|e| (Error::internal(e), progress.parts.len()))?;
    let compression = match spec.compression {
        Compression::Zstd => PqCompression::ZSTD(level),
        Compression::Snappy => PqCompression::SNAPPY,
        Compression::Lz4 => PqCompression::LZ4_RAW,
        Compression::None => PqCompression::UNCOMPRESSED,
    };
    let props = WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(spec.row_group_rows as usize))
        .set_created_by(format!("pretext {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut skip: u64 = progress.parts.iter().map(|p| p.rows).sum();
    // Chunks of at most ~4M values keep memory bounded for long rows.
    let width = plan.seq_len.max(1);
    let chunk = (spec.row_group_rows as usize).min(spec.rows_per_file as usize).min((1 << 22) / width).max(1);
    let mut writer = Writer {
        dir: staging.to_path_buf(),
        schema: schema.clone(),
        props,
        rows_per_file: spec.rows_per_file,
        chunk,
        current: None,
        pending: Vec::new(),
        pending_rows: 0,
        progress,
    };
    let meter = Meter::new(opts.progress_bar, "exporting");
    let mut stream = plan.stream();
    let result: Result<()> = async {
        writer.progress.write(staging)?;
        while let Some(batch) = stream.next().await {
            let mut batch = RecordBatch::try_new(schema.clone(), batch?.columns().to_vec())?;
            if skip > 0 {
                let s = skip.min(batch.num_rows() as u64) as usize;
                skip -= s as u64;
                batch = batch.slice(s, batch.num_rows() - s);
            }
            if batch.num_rows() == 0 {
                continue;
            }
            meter.add(batch.num_rows() as u64, tokens_in(&batch));
            writer.push(batch)?;
        }
        writer.close_part()
    }
    .await;
    match result {
        Ok(()) => {
            meter.finish();
            Ok(writer.progress.parts)
        }
        Err(e) => {
            meter.abandon();
            if let Some(p) = writer.current.take() {
                let _ = std::fs::remove_file(&p.tmp);
            }
            Err((e, writer.progress.parts.len()))
        }
    }
}
