//! `pretext export` as one library call: the destination resolved and locked, refused when it
//! holds something else, the plan built (a trained tokenizer saved with the export), the
//! examples exported, and a report of what was written and read.

use std::path::PathBuf;

use super::export::{export, ExportOptions, ExportReport, OutputState, Target};
use crate::error::Result;
use crate::ground::human;
use crate::plan::{export_destination, BuildOptions, Plan};
use crate::spec::Pipeline;

/// What to export, beyond the pipeline file: the command line's choices.
#[derive(Debug, Clone, Default)]
pub struct ExportRequest {
    /// `--out`: the destination (a directory or an `s3://`, `gs://`, `az://` prefix); default
    /// `export.path`, else `out/<name>`.
    pub out: Option<PathBuf>,
    /// `--resume`: continue an interrupted export (a finished one is left as it is).
    pub resume: bool,
    /// `--allow-new-data`: resume although the source data changed.
    pub allow_new_data: bool,
    /// Draw a progress bar on stderr.
    pub progress_bar: bool,
}

/// Exports `pipeline` as `request` says, on the current tokio runtime. The destination is
/// locked against a second export for the whole call; a failure keeps the finished parts for
/// `--resume` (and says so on stderr).
pub async fn run(pipeline: Pipeline, request: &ExportRequest) -> Result<ExportReport> {
    let (dir, storage_options) = export_destination(&pipeline, request.out.clone());
    let target = Target::new(&dir, &storage_options, &pipeline.spec.export.retry)?;
    // Held from before the destination is checked (a tokenizer may be trained into it) to the end.
    let _lock = target.lock()?;
    // Refuse a bad output before reading any data; fetch what a resumed export reuses.
    let state = target.state(request.resume).await?;
    if state == OutputState::Interrupted {
        target.progress().await?;
    }
    let build = BuildOptions {
        tokenizer_dir: Some(target.tokenizer_dir()),
        reuse_tokenizer: request.resume,
        ..Default::default()
    };
    let plan = Plan::build(pipeline, &build).await?;
    let opts = ExportOptions {
        target,
        resume: request.resume,
        allow_new_data: request.allow_new_data,
        progress_bar: request.progress_bar,
        locked: true,
    };
    export(plan, &opts).await
}

impl ExportReport {
    /// The lines `pretext export` prints on stderr when it ends.
    pub fn summary(&self) -> Vec<String> {
        if self.already_complete {
            return vec![format!("`{}` already holds this finished export; nothing to do", self.dir)];
        }
        let mut lines = Vec::new();
        if self.rows == 0 {
            lines.push(format!(
                "the source produced no examples; wrote an empty export (manifest only) to `{}`",
                self.dir
            ));
        }
        let secs = self.seconds.max(1e-9);
        let padding = self.padding.map(|p| format!(", {:.1}% padding", p * 100.0)).unwrap_or_default();
        let resumed = if self.resumed_parts > 0 { format!(" ({} resumed)", self.resumed_parts) } else { String::new() };
        let read = &self.read;
        if self.text {
            lines.push(format!(
                "exported {} rows, {} tokens{padding} in {} part(s){resumed} to `{}` in {:.1}s ({} tokens/s); {} documents read, {} null/blank texts skipped",
                self.rows,
                self.tokens,
                self.parts,
                self.dir,
                self.seconds,
                human(self.tokens as f64 / secs),
                read.documents,
                read.skipped_texts
            ));
        } else {
            // Images and table rows: no tokens, and images skipped for being null or undecodable.
            let (nulls, bad) = (read.null_images, read.undecodable_images);
            lines.push(format!(
                "exported {} rows in {} part(s){resumed} to `{}` in {:.1}s ({} rows/s); {} rows read{}",
                self.rows,
                self.parts,
                self.dir,
                self.seconds,
                human(self.rows as f64 / secs),
                read.rows_read,
                if nulls + bad > 0 {
                    format!(", {nulls} null and {bad} undecodable image(s) skipped (named in `_manifest.json`)")
                } else {
                    String::new()
                }
            ));
        }
        if !self.per_source.is_empty() {
            let total = self.per_source.iter().map(|(_, n)| n).sum::<u64>().max(1);
            let each: Vec<String> = self
                .per_source
                .iter()
                .map(|(name, n)| format!("{name} {n} ({:.1}%)", *n as f64 * 100.0 / total as f64))
                .collect();
            lines.push(format!("examples per source: {}", each.join(", ")));
        }
        lines
    }
}
