//! `pretext export`: the example stream → `part-NNNNN.parquet` files of `rows_per_file` rows,
//! each written under a hidden temporary name and renamed when complete; `_progress.json` after
//! every part; `_manifest.json` last. `--resume` regenerates the (deterministic) stream, skips
//! the rows of the finished parts and writes the rest, giving byte-identical parts.

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

/// Checks the output directory before anything is built. Returns the parts already finished
/// (when resuming) or `None` when the export is already complete.
pub fn prepare_dir(
    dir: &Path,
    resume: bool,
    pipeline_hash: &str,
    pipeline: &serde_json::Value,
) -> Result<Option<Vec<Part>>> {
    if dir.is_file() {
        return Err(Error::env_hint(
            format!("the output `{}` is a file, not a directory", dir.display()),
            "choose another `export.path` or `--out DIR`",
        ));
    }
    if !dir.exists() {
        return Ok(Some(Vec::new()));
    }
    let finished = dir.join(MANIFEST).is_file();
    let progress = Progress::read(dir)?;
    if resume {
        if finished {
            return Ok(None);
        }
        let Some(progress) = progress else {
            let hint = "an export that never finished a part has nothing to resume: run without `--resume`";
            if dir_has_data(dir)? {
                return Err(Error::env_hint(
                    format!("`{}` holds no `{PROGRESS}`: it is not an interrupted pretext export", dir.display()),
                    hint,
                ));
            }
            return Ok(Some(Vec::new()));
        };
        if progress.pipeline_hash != pipeline_hash {
            let diff = diff_fields(&progress.pipeline, pipeline);
            return Err(Error::env_hint(
                format!("`{}` was exported by a different pipeline (changed: {})", dir.display(), diff.join(", ")),
                "resume with the same pipeline and overrides, or export to a new directory",
            ));
        }
        for p in &progress.parts {
            let path = dir.join(&p.file);
            let len = std::fs::metadata(&path).map(|m| m.len()).ok();
            if len != Some(p.bytes) {
                return Err(Error::env_hint(
                    format!("part `{}` listed in `{PROGRESS}` is missing or changed", path.display()),
                    "delete the output directory and export again",
                ));
            }
        }
        remove_temporaries(dir)?;
        return Ok(Some(progress.parts));
    }
    if finished {
        return Err(Error::env_hint(
            format!("`{}` already holds a finished export", dir.display()),
            "delete it, or export to another directory with `--out DIR`",
        ));
    }
    if progress.is_some() {
        return Err(Error::env_hint(
            format!("`{}` holds an interrupted export", dir.display()),
            "continue it with `--resume`, or delete the directory",
        ));
    }
    if dir_has_data(dir)? {
        return Err(Error::env_hint(
            format!("the output directory `{}` is not empty", dir.display()),
            "export into a new or empty directory (`--out DIR`)",
        ));
    }
    Ok(Some(Vec::new()))
}

fn dir_has_data(dir: &Path) -> Result<bool> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "list", e))?;
    Ok(entries.filter_map(|e| e.ok()).any(|e| {
        let n = e.file_name().to_string_lossy().to_string();
        !n.starts_with('.') && n != "tokenizer.json"
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

fn tokens_in(batch: &RecordBatch) -> u64 {
    match batch.column_by_name("attention_mask").and_then(|c| c.as_fixed_size_list_opt()) {
        Some(l) => l.values().as_primitive::<Int32Type>().values().iter().map(|&v| v as u64).sum(),
        None => 0,
    }
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
        part.writer.close().map_err(|e| Error::env(format!("finishing `{}`: {e}", part.tmp.display())))?;
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

/// Runs the plan's stream into Parquet parts and a manifest.
pub async fn export(plan: Arc<Plan>, opts: &ExportOptions) -> Result<ExportReport> {
    let started = Instant::now();
    let dir = opts.dir.clone();
    let hash = format!("{:016x}", plan.pipeline.content_hash());
    let resolved = plan.pipeline.resolved_json();
    let Some(done_parts) = prepare_dir(&dir, opts.resume, &hash, &resolved)? else {
        return Ok(ExportReport {
            dir,
            rows: 0,
            tokens: 0,
            parts: 0,
            resumed_parts: 0,
            seconds: 0.0,
            already_complete: true,
        });
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, "create directory", e))?;
    let spec = &plan.pipeline.spec.export;
    let task_schema = plan.task.output_schema();
    let mut metadata: HashMap<String, String> = task_schema.metadata().clone();
    metadata.insert("huggingface".into(), hf_metadata(&task_schema));
    let schema: SchemaRef = Arc::new(Schema::new_with_metadata(task_schema.fields().clone(), metadata));
    let compression = match spec.compression {
        Compression::Zstd => PqCompression::ZSTD(ZstdLevel::try_new(spec.zstd_level).map_err(Error::internal)?),
        Compression::Snappy => PqCompression::SNAPPY,
        Compression::Lz4 => PqCompression::LZ4_RAW,
        Compression::None => PqCompression::UNCOMPRESSED,
    };
    let props = WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(spec.row_group_rows as usize))
        .set_created_by(format!("pretext {}", env!("CARGO_PKG_VERSION")))
        .build();
    let resumed_parts = done_parts.len();
    let mut skip: u64 = done_parts.iter().map(|p| p.rows).sum();
    let mut writer = Writer {
        dir: dir.clone(),
        schema: schema.clone(),
        props,
        rows_per_file: spec.rows_per_file,
        chunk: (spec.row_group_rows as usize).min(spec.rows_per_file as usize).max(1),
        current: None,
        pending: Vec::new(),
        pending_rows: 0,
        progress: Progress { pipeline_hash: hash.clone(), pipeline: resolved.clone(), parts: done_parts },
    };
    writer.progress.write(&dir)?;
    let meter = Meter::new(opts.progress_bar, "exporting");
    let mut stream = plan.stream();
    let result: Result<()> = async {
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let mut batch = RecordBatch::try_new(schema.clone(), batch.columns().to_vec())?;
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
    if let Err(e) = result {
        meter.abandon();
        if let Some(p) = writer.current.take() {
            let _ = std::fs::remove_file(&p.tmp);
        }
        return Err(e);
    }
    meter.finish();
    let parts = writer.progress.parts.clone();
    let rows: u64 = parts.iter().map(|p| p.rows).sum();
    let tokens: u64 = parts.iter().map(|p| p.tokens).sum();
    let tok = &plan.tokenizer;
    let manifest = json!({
        "pretext_version": env!("CARGO_PKG_VERSION"),
        "name": plan.pipeline.spec.name,
        "pipeline_hash": hash,
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
        "schema": describe_schema(&schema),
        "rows": rows,
        "tokens": tokens,
        "parts": parts,
    });
    let bytes = serde_json::to_vec_pretty(&manifest).map_err(Error::internal)?;
    write_atomic(&dir.join(MANIFEST), &bytes)?;
    let _ = std::fs::remove_file(dir.join(PROGRESS));
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
