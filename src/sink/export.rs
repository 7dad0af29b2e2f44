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
#[cfg(any(test, feature = "internals"))]
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use futures::StreamExt;
use serde_json::json;

use super::manifest::{describe_schema, hf_metadata, Part, Progress};
use super::parts::{tokens_in, Writer};
use super::progress::Meter;
pub use super::target::{OutputState, Target};
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::stream::StreamCursor;

/// What an export did.
#[derive(Debug, Clone, Default)]
pub struct ExportReport {
    /// The destination, as written by the user.
    pub dir: String,
    /// Examples written.
    pub rows: u64,
    /// Token positions written (0 for image and table tasks).
    pub tokens: u64,
    pub parts: usize,
    /// Parts a resumed export found finished.
    pub resumed_parts: usize,
    pub seconds: f64,
    /// The destination already held this finished export: nothing was done.
    pub already_complete: bool,
    /// What was read, summed over the sources (`_manifest.json` has them per source).
    pub(crate) read: ReadCounts,
    /// Whether the task reads text (else images or table rows).
    pub(crate) text: bool,
    /// The share of token positions that are padding (text tasks).
    pub(crate) padding: Option<f64>,
    /// A mixture: the examples written from each source, in the order written.
    pub(crate) per_source: Vec<(String, u64)>,
}

/// What the sources read, summed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReadCounts {
    pub rows_read: u64,
    pub documents: u64,
    /// Rows skipped for a null or blank text.
    pub skipped_texts: u64,
    pub null_images: u64,
    pub undecodable_images: u64,
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
    #[cfg(any(test, feature = "internals"))]
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
    let mut export = serde_json::to_value(&plan.export).unwrap_or_default();
    if let Some(o) = export.as_object_mut() {
        o.remove("path");
        o.remove("storage_options");
        o.remove("retry");
    }
    let mut v = json!({
        "pipeline": format!("{:016x}", plan.content_hash()),
        "export": export,
        "tokenizer": plan.tokenizer.file_hash,
        "shard": [plan.shard.rank, plan.shard.world_size],
        "format": crate::sink::FORMAT_VERSION,
        "stream": crate::plan::STREAM_VERSION,
    });
    if with_data {
        v["data"] = plan.data_identity();
    }
    crate::ground::identity::json_hash_hex(&v)
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
    let hash = format!("{:016x}", plan.content_hash());
    let fingerprint = fingerprint(&plan);
    let settings = settings_fingerprint(&plan);
    let data = plan.data_identity();
    let resolved = plan.resolved_json();
    if plan.sources.len() > 1 && plan.stop == crate::spec::MixtureStop::Cycle {
        return Err(Error::Spec(crate::spec::SpecErrors(vec![plan.error_at(
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
            return Ok(ExportReport { dir: target.name(), already_complete: true, ..Default::default() });
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
                    let mut changed: Vec<String> =
                        crate::ground::identity::changed_paths(&progress.pipeline, &resolved)
                            .iter()
                            .map(|p| format!("`{p}`"))
                            .collect();
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
        "name": plan.name,
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
        read: read_counts(&plan),
        text: plan.input == crate::spec::TaskInput::Text,
        padding: padding_share(&plan, rows, tokens),
        per_source: per_source(&plan),
        already_complete: false,
    })
}

fn read_counts(plan: &Plan) -> ReadCounts {
    let sum = |key: &str| plan.sources.iter().map(|s| s.stats.snapshot()[key].as_u64().unwrap_or(0)).sum::<u64>();
    ReadCounts {
        rows_read: sum("rows_read"),
        documents: sum("documents"),
        skipped_texts: sum("skipped_null_text") + sum("skipped_blank_text"),
        null_images: sum("skipped_null_image"),
        undecodable_images: sum("skipped_undecodable_image"),
    }
}

fn per_source(plan: &Plan) -> Vec<(String, u64)> {
    if plan.sources.len() < 2 {
        return Vec::new();
    }
    let counts = plan.mix_counts.examples.iter().map(|c| c.load(std::sync::atomic::Ordering::Relaxed));
    plan.sources.iter().map(|s| s.name.clone().unwrap_or_else(|| "?".into())).zip(counts).collect()
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
    let spec = &plan.export;
    let task_schema = plan.output_schema();
    let mut metadata: HashMap<String, String> = task_schema.metadata().clone();
    metadata.insert("huggingface".into(), hf_metadata(&task_schema));
    let schema: SchemaRef = Arc::new(Schema::new_with_metadata(task_schema.fields().clone(), metadata));
    let mut skip: u64 = progress.parts.iter().map(|p| p.rows).sum();
    let finished = progress.parts.len();
    let mut writer =
        Writer::new(opts.target.clone(), schema.clone(), spec, plan.seq_len, progress).map_err(|e| (e, finished))?;
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
            if let Some(signal) = crate::ground::stop::requested() {
                let what = match writer.progress.parts.len() {
                    0 => "no part was finished, so nothing was kept".to_string(),
                    n => format!("{n} finished part(s) are kept; continue the export with `--resume`"),
                };
                return Err(crate::ground::stop::stopped(signal, what));
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
