//! `pretext export`: the example stream → `part-NNNNN.parquet` files of `rows_per_file` rows.
//!
//! While an export runs, everything lives in the hidden `.pretext-partial/` inside the output
//! directory: parts are written under a temporary name, synced and renamed when complete, and
//! `_progress.json` lists the finished ones. At the end the whole of it, with `_manifest.json`,
//! replaces the output directory by rename (see `target`), so a reader listing the directory sees
//! either nothing or the whole dataset. `--resume` checks the fingerprint (pipeline, export settings, tokenizer,
//! source files, shard) and every finished part's hash, regenerates the deterministic stream,
//! skips the rows of the finished parts and writes the rest: the bytes equal an uninterrupted run.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int32Type, Schema, SchemaRef};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::properties::EnabledStatistics;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use serde_json::json;

use super::manifest::{describe_schema, hf_metadata, Part, Progress, ResumePoint};
use super::progress::Meter;
pub use super::target::{OutputState, Target, STAGING};
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::spec::Compression;
use crate::stream::StreamCursor;

/// What an export did.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// The destination, as written by the user.
    pub dir: String,
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
    pub target: Target,
    pub resume: bool,
    /// `--allow-new-data`: resume although the source data changed (a new Delta version).
    pub allow_new_data: bool,
    pub progress_bar: bool,
    /// Whether the caller already holds the destination's lock ([`Target::lock`]); else
    /// [`export`] takes it.
    pub locked: bool,
}

impl ExportOptions {
    /// A fresh export into a local directory, with no progress bar.
    pub fn local(dir: impl Into<PathBuf>) -> ExportOptions {
        ExportOptions {
            target: Target::Local(dir.into()),
            resume: false,
            allow_new_data: false,
            progress_bar: false,
            locked: false,
        }
    }
}

fn part_name(i: usize) -> String {
    format!("part-{i:05}.parquet")
}

/// Everything that decides the exported bytes, hashed: the pipeline's content, the export
/// settings (not the path), the tokenizer file, the source files and sizes, and the shard.
pub fn fingerprint(plan: &Plan) -> String {
    fingerprint_of(plan, true)
}

/// [`fingerprint`] without the source data: what must match for `--allow-new-data`.
pub fn settings_fingerprint(plan: &Plan) -> String {
    fingerprint_of(plan, false)
}

fn fingerprint_of(plan: &Plan, with_data: bool) -> String {
    let mut export = serde_json::to_value(&plan.pipeline.spec.export).unwrap_or_default();
    if let Some(o) = export.as_object_mut() {
        o.remove("path");
        o.remove("storage_options");
    }
    let mut v = json!({
        "pipeline": format!("{:016x}", plan.pipeline.content_hash()),
        "export": export,
        "tokenizer": plan.tokenizer.file_hash,
        "shard": [plan.shard.rank, plan.shard.world_size],
        "format": crate::sink::FORMAT_VERSION,
        "stream": crate::stream::STREAM_VERSION,
    });
    if with_data {
        v["data"] = plan.data_identity();
    }
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(crate::spec::canonical_json(&v).as_bytes()))
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

/// A failed write of a part, with the I/O error under the Parquet writer's and what to do.
fn write_error(path: &std::path::Path, e: parquet::errors::ParquetError) -> Error {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Error::io(path, "write", std::io::Error::new(io.kind(), io.to_string()));
        }
        cause = c.source();
    }
    Error::env(format!("cannot write `{}`: {e}", path.display()))
}

struct PartWriter {
    index: usize,
    tmp: PathBuf,
    writer: ArrowWriter<Hashed>,
    rows: u64,
    tokens: u64,
    /// Rows per mixture member.
    sources: std::collections::BTreeMap<String, u64>,
}

/// A part file, hashed (xxh3-64) and counted as it is written, so closing it reads nothing back.
struct Hashed {
    file: File,
    hash: xxhash_rust::xxh3::Xxh3,
    bytes: u64,
}

impl Hashed {
    fn new(file: File) -> Self {
        Hashed { file, hash: xxhash_rust::xxh3::Xxh3::new(), bytes: 0 }
    }
}

impl std::io::Write for Hashed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

struct Writer {
    target: Target,
    /// Where the stream continues after the part being closed.
    resume: Option<ResumePoint>,
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
        let writer = ArrowWriter::try_new(Hashed::new(file), self.schema.clone(), Some(self.props.clone()))
            .map_err(|e| Error::internal(format!("parquet writer: {e}")))?;
        self.current = Some(PartWriter { index, tmp, writer, rows: 0, tokens: 0, sources: Default::default() });
        Ok(())
    }

    /// Buffers rows and writes them in chunks that start at fixed offsets inside the part, so a
    /// resumed export calls the Parquet writer with the same slices as an uninterrupted one.
    /// `before`: the stream cursor before this batch's first row, of which `skipped` rows were
    /// dropped before `batch`; a part that ends inside the batch records where to resume.
    async fn push(&mut self, mut batch: RecordBatch, before: &StreamCursor, skipped: u64) -> Result<()> {
        let mut consumed = skipped;
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
            consumed += take as u64;
            batch = batch.slice(take, batch.num_rows() - take);
            if self.pending_rows == target {
                self.flush_chunk()?;
                if self.current.as_ref().is_some_and(|p| p.rows == self.rows_per_file) {
                    self.resume = Some(ResumePoint { cursor: before.clone(), skip: consumed });
                    self.close_part().await?;
                }
            }
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> Result<()> {
        if self.pending_rows == 0 {
            return Ok(());
        }
        let chunk = match self.pending.as_slice() {
            [one] => one.clone(),
            _ => arrow::compute::concat_batches(&self.schema, &self.pending)?,
        };
        self.pending.clear();
        self.pending_rows = 0;
        let part = self.current.as_mut().ok_or_else(|| Error::internal("chunk without a part"))?;
        part.writer.write(&chunk).map_err(|e| write_error(&part.tmp, e))?;
        part.rows += chunk.num_rows() as u64;
        part.tokens += tokens_in(&chunk);
        if let Some(d) =
            chunk.column_by_name("source").and_then(|c| c.as_dictionary_opt::<arrow::datatypes::Int16Type>())
        {
            // Keys index this chunk's dictionary (concatenation may have merged several).
            let mut per_key = vec![0u64; d.values().len()];
            for &k in d.keys().values().iter() {
                per_key[k as usize] += 1;
            }
            let names = d.values().as_string::<i32>();
            for (k, n) in per_key.into_iter().enumerate().filter(|(_, n)| *n > 0) {
                *part.sources.entry(names.value(k).to_string()).or_default() += n;
            }
        }
        Ok(())
    }

    async fn close_part(&mut self) -> Result<()> {
        self.flush_chunk()?;
        let Some(part) = self.current.take() else { return Ok(()) };
        let file = part.writer.into_inner().map_err(|e| write_error(&part.tmp, e))?;
        file.file.sync_all().map_err(|e| Error::io(&part.tmp, "sync", e))?;
        let name = part_name(part.index);
        let done = Part {
            resume: self.resume.take(),
            file: name.clone(),
            rows: part.rows,
            tokens: part.tokens,
            sources: part.sources,
            bytes: file.bytes,
            xxh3: format!("{:016x}", file.hash.digest()),
        };
        self.target.store_part(&name, &part.tmp).await?;
        self.progress.parts.push(done);
        self.target.save_progress(&self.progress).await
    }
}

/// Share of `input_ids` positions that are padding, for tasks with one attention mask.
pub fn padding_share(plan: &Plan, rows: u64, tokens: u64) -> Option<f64> {
    let schema = plan.output_schema();
    let single = schema.fields().iter().filter(|f| f.name().starts_with("attention_mask")).count() == 1;
    let capacity = rows * plan.seq_len as u64;
    (single && capacity > 0).then(|| 1.0 - tokens as f64 / capacity as f64)
}

/// A mixture's members: name, weight, examples exported, what each read (`null` for one source).
fn mixture_summary(plan: &Plan, parts: &[Part]) -> serde_json::Value {
    if plan.sources.len() < 2 {
        return serde_json::Value::Null;
    }
    let rows: u64 = parts.iter().map(|p| p.rows).sum();
    plan.sources
        .iter()
        .zip(&plan.weights)
        .map(|(s, w)| {
            let name = s.name.clone().unwrap_or_default();
            let examples: u64 = parts.iter().map(|p| p.sources.get(&name).copied().unwrap_or(0)).sum();
            json!({
                "name": name,
                "weight": w,
                "examples": examples,
                "share": if rows > 0 { examples as f64 / rows as f64 } else { 0.0 },
                "root": s.root.display().to_string(),
                "format": format!("{:?}", s.format).to_lowercase(),
                "delta_version": s.delta.as_ref().map(|d| d.version),
                "files": s.files,
                "stats": s.stats.snapshot(),
            })
        })
        .collect()
}

/// Runs the plan's stream into Parquet parts and a manifest.
pub async fn export(plan: Arc<Plan>, opts: &ExportOptions) -> Result<ExportReport> {
    let started = Instant::now();
    let target = &opts.target;
    let hash = format!("{:016x}", plan.pipeline.content_hash());
    let fingerprint = fingerprint(&plan);
    let settings = settings_fingerprint(&plan);
    let data = plan.data_identity();
    let resolved = plan.pipeline.resolved_json();
    if plan.sources.len() > 1 && plan.stop == crate::spec::MixtureStop::Cycle {
        return Err(Error::Spec(crate::spec::SpecErrors(vec![plan.pipeline.error_at(
            &["mixture", "stop"],
            "`stop: cycle` never ends, so there is nothing to finish exporting",
            Some("export with `first_exhausted` or `all_exhausted`; `cycle` is for training".into()),
        )])));
    }
    let _lock = if opts.locked { None } else { Some(target.lock()?) };
    let state = target.state(opts.resume).await?;
    let done_parts = match state {
        OutputState::Finished => {
            let m = target.manifest().await?;
            if m["fingerprint"].as_str() != Some(fingerprint.as_str()) {
                return Err(Error::env_hint(
                    format!("`{}` holds a finished export of a different pipeline or data", target.name()),
                    "export to another directory with `--out DIR`",
                ));
            }
            return Ok(ExportReport {
                dir: target.name(),
                rows: 0,
                tokens: 0,
                parts: 0,
                resumed_parts: 0,
                seconds: 0.0,
                already_complete: true,
            });
        }
        OutputState::Interrupted => {
            let progress = target.progress().await?.ok_or_else(|| Error::internal("progress file vanished"))?;
            if progress.fingerprint != fingerprint {
                let same_settings = progress.settings_fingerprint == settings;
                if same_settings && opts.allow_new_data {
                    eprintln!(
                        "note: the source data changed ({}); continuing with the new data (`--allow-new-data`)",
                        crate::source::describe_data_change(&progress.data, &data)
                    );
                } else if same_settings {
                    return Err(Error::env_hint(
                        format!(
                            "the source data changed since the export in `{}` started: {}",
                            target.name(),
                            crate::source::describe_data_change(&progress.data, &data)
                        ),
                        "pass `--allow-new-data` to continue with the new data (finished parts keep the old), pin the data (`source.version` for Delta), or export to a new directory",
                    ));
                } else {
                    let mut changed = diff_fields(&progress.pipeline, &resolved);
                    if progress.pipeline == resolved {
                        changed = vec!["the tokenizer file, the shard, or the version of pretext that wrote it (how the stream is cut into windows)".into()];
                    }
                    return Err(Error::env_hint(
                        format!(
                            "`{}` was exported by a different pipeline (changed: {})",
                            target.name(),
                            changed.join(", ")
                        ),
                        "resume with the same pipeline, overrides and data, or export to a new directory",
                    ));
                }
            }
            target.verify_parts(&progress.parts).await?;
            progress.parts
        }
        OutputState::Fresh { .. } => Vec::new(),
    };
    target.prepare_work_dir()?;
    let resumed_parts = done_parts.len();
    let progress = Progress {
        pipeline_hash: hash.clone(),
        fingerprint: fingerprint.clone(),
        settings_fingerprint: settings.clone(),
        data: data.clone(),
        pipeline: resolved.clone(),
        parts: done_parts,
    };
    let result = write_parts(&plan, opts, progress).await;
    let parts = match result {
        Ok(parts) => parts,
        Err((e, finished)) => {
            if finished == 0 {
                // Nothing worth resuming: leave the destination as it was.
                target.discard(&state).await;
            } else if !matches!(e, Error::Stopped { .. }) {
                eprintln!(
                    "note: {finished} finished part(s) are kept in `{}`: fix the problem and run again with `--resume`",
                    target.staging_name()
                );
            }
            return Err(e);
        }
    };
    let rows: u64 = parts.iter().map(|p| p.rows).sum();
    let tokens: u64 = parts.iter().map(|p| p.tokens).sum();
    let tok = &plan.tokenizer;
    let manifest = json!({
        "pretext_version": env!("CARGO_PKG_VERSION"),
        "name": plan.pipeline.spec.name,
        "pipeline_hash": hash,
        "fingerprint": fingerprint,
        "settings_fingerprint": settings,
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
            "delta_version": plan.source.delta.as_ref().map(|d| d.version),
            "data": data,
            "files": plan.source.files,
            "stats": plan.source.stats.snapshot(),
        },
        "sources": mixture_summary(&plan, &parts),
        "schema": describe_schema(&plan.output_schema()),
        "rows": rows,
        "tokens": tokens,
        "padding_share": padding_share(&plan, rows, tokens),
        "parts": parts,
    });
    let bytes = serde_json::to_vec_pretty(&manifest).map_err(Error::internal)?;
    target.publish(&parts, &bytes).await?;
    Ok(ExportReport {
        dir: target.name(),
        rows,
        tokens,
        parts: parts.len(),
        resumed_parts,
        seconds: started.elapsed().as_secs_f64(),
        already_complete: false,
    })
}

/// Batches the example stream may run ahead of the writer.
const AHEAD: usize = 8;

/// Streams examples into parts inside `staging`; returns every finished part, or the error and
/// how many parts are finished (resumable).
async fn write_parts(
    plan: &Arc<Plan>,
    opts: &ExportOptions,
    progress: Progress,
) -> std::result::Result<Vec<Part>, (Error, usize)> {
    let spec = &plan.pipeline.spec.export;
    let task_schema = plan.output_schema();
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
    // Integer and float columns are written without dictionaries: on BERT MLM rows (30k-id
    // vocabulary) a dictionary made parts 4% larger and interning was a fifth of the writer's
    // time; zstd does better on the plain values. Text columns (`source`) keep theirs.
    let mut props = WriterProperties::builder().set_dictionary_enabled(false);
    for f in schema.fields() {
        if matches!(f.data_type(), DataType::Dictionary(..) | DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
        {
            props = props.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), true);
        }
    }
    // Min/max of token ids, labels and masks select nothing, and computing them per value was a
    // sixth of the writer's time: list columns go without; scalar ones (`example_key`) keep theirs.
    let parquet_schema = parquet::arrow::ArrowSchemaConverter::new()
        .convert(&schema)
        .map_err(|e| (Error::internal(format!("parquet schema: {e}")), progress.parts.len()))?;
    for leaf in parquet_schema.columns().iter().filter(|c| c.max_rep_level() > 0) {
        props = props.set_column_statistics_enabled(leaf.path().clone(), EnabledStatistics::None);
    }
    let props = props
        .set_compression(compression)
        .set_max_row_group_row_count(Some(spec.row_group_rows as usize))
        .set_created_by(format!("pretext {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut skip: u64 = progress.parts.iter().map(|p| p.rows).sum();
    // The writer is handed chunks of at most 256k values (2048 rows of 128): the Parquet writer
    // still makes row groups of `row_group_rows`, encoding as it goes, while the rows waiting
    // for a chunk, their concatenation and the writer's levels stay small. (With 4M-value
    // chunks these were the largest terms in peak memory.)
    let width = plan.seq_len.max(1);
    let chunk = (spec.row_group_rows as usize).min(spec.rows_per_file as usize).min((1 << 18) / width).max(1);
    let mut writer = Writer {
        target: opts.target.clone(),
        resume: None,
        dir: opts.target.work_dir(),
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
    // Resume from the stream position saved with the last finished part: one window is
    // regenerated, not the examples of the finished parts.
    let n = plan.sources.len();
    let mut from = StreamCursor::start(0, n);
    if let Some(r) = writer.progress.parts.last().and_then(|p| p.resume.clone()) {
        from = r.cursor;
        skip = r.skip;
    }
    let plan2 = plan.clone();
    let first = from.epoch;
    let stream = futures::stream::iter(first..plan.epochs)
        .map(move |e| {
            let c = if e == first { from.clone() } else { StreamCursor::start(e, n) };
            let before = c.clone();
            // Each batch with the cursor before it.
            plan2
                .pass_from(crate::source::Split::All, c)
                .scan(before, |prev, item| {
                    let out = item.map(|(b, after)| (b, std::mem::replace(prev, after)));
                    futures::future::ready(Some(out))
                })
                .boxed()
        })
        .flatten();
    // The stream runs in its own task, a few batches ahead: encoding a row group is long and
    // synchronous, and a stream polled only between writes would leave the workers idle.
    let (tx, mut rx) = tokio::sync::mpsc::channel(AHEAD);
    let producer = datafusion::common::runtime::SpawnedTask::spawn(async move {
        let mut stream = stream;
        while let Some(item) = stream.next().await {
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    let result: Result<()> = async {
        opts.target.save_progress(&writer.progress).await?;
        while let Some(item) = rx.recv().await {
            if let Some(signal) = crate::stop::requested() {
                let what = match writer.progress.parts.len() {
                    0 => "no part was finished, so nothing was kept".to_string(),
                    n => format!("{n} finished part(s) are kept; continue the export with `--resume`"),
                };
                return Err(crate::stop::stopped(signal, what));
            }
            let (batch, before) = item?;
            let mut batch = RecordBatch::try_new(schema.clone(), batch.columns().to_vec())?;
            let mut skipped = 0;
            if skip > 0 {
                let s = skip.min(batch.num_rows() as u64) as usize;
                skip -= s as u64;
                skipped = s;
                batch = batch.slice(s, batch.num_rows() - s);
            }
            if batch.num_rows() == 0 {
                continue;
            }
            meter.add(batch.num_rows() as u64, tokens_in(&batch));
            writer.push(batch, &before, skipped as u64).await?;
        }
        // The channel also closes when the stream's task dies: that must fail the export, not
        // end it early as if the stream were done.
        producer.join().await.map_err(|e| Error::internal(format!("the example stream stopped: {e}")))?;
        writer.close_part().await
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
