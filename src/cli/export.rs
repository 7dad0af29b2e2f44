use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::plan::{BuildOptions, Plan};
use crate::sink::export::{export, ExportOptions, Target};
use crate::sink::progress::human;

/// Exports the pipeline's examples; prints a summary line on stderr.
pub fn run(
    file: &Path,
    out: Option<PathBuf>,
    resume: bool,
    allow_new_data: bool,
    quiet: bool,
    sets: &[String],
) -> Result<i32> {
    let pipeline = crate::spec::load(file, sets)?;
    let dir = out.unwrap_or_else(|| match &pipeline.spec.export.path {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from("out").join(&pipeline.spec.name),
    });
    let target = Target::new(&dir, &pipeline.spec.export.storage_options)?;
    // Held from before the destination is checked (a tokenizer may be trained into it) to the end.
    let _lock = target.lock()?;
    let rt = super::runtime()?;
    crate::stop::listen(&rt)?;
    rt.block_on(async {
        // Refuse a bad output before reading any data; fetch what a resumed export reuses.
        let state = target.state(resume).await?;
        if state == crate::sink::export::OutputState::Interrupted {
            target.progress().await?;
        }
        let build =
            BuildOptions { tokenizer_dir: Some(target.tokenizer_dir()), reuse_tokenizer: resume, check_only: false };
        let plan = Plan::build(pipeline, &build).await?;
        let opts =
            ExportOptions {
            target,
            resume,
            allow_new_data,
            progress_bar: !quiet && std::io::stderr().is_terminal(),
            locked: true,
        };
        let report = export(plan.clone(), &opts).await?;
        if report.already_complete {
            eprintln!("`{}` already holds this finished export; nothing to do", report.dir);
            return Ok(0);
        }
        let sum = |key: &str| plan.sources.iter().map(|s| s.stats.snapshot()[key].as_u64().unwrap_or(0)).sum::<u64>();
        let skipped = sum("skipped_null_text") + sum("skipped_blank_text");
        let documents = sum("documents");
        if report.rows == 0 {
            eprintln!("the source produced no examples; wrote an empty export (manifest only) to `{}`", report.dir);
        }
        let secs = report.seconds.max(1e-9);
        let padding = crate::sink::export::padding_share(&plan, report.rows, report.tokens)
            .map(|p| format!(", {:.1}% padding", p * 100.0))
            .unwrap_or_default();
        let resumed =
            if report.resumed_parts > 0 { format!(" ({} resumed)", report.resumed_parts) } else { String::new() };
        if plan.sources.iter().all(|s| s.input == crate::spec::TaskInput::Text) {
            eprintln!(
                "exported {} rows, {} tokens{padding} in {} part(s){resumed} to `{}` in {:.1}s ({} tokens/s); {} documents read, {} null/blank texts skipped",
                report.rows,
                report.tokens,
                report.parts,
                report.dir,
                report.seconds,
                human(report.tokens as f64 / secs),
                documents,
                skipped
            );
        } else {
            // Images and table rows: no tokens, and images skipped for being null or undecodable.
            let (nulls, bad) = (sum("skipped_null_image"), sum("skipped_undecodable_image"));
            eprintln!(
                "exported {} rows in {} part(s){resumed} to `{}` in {:.1}s ({} rows/s); {} rows read{}",
                report.rows,
                report.parts,
                report.dir,
                report.seconds,
                human(report.rows as f64 / secs),
                sum("rows_read"),
                if nulls + bad > 0 {
                    format!(", {nulls} null and {bad} undecodable image(s) skipped (named in `_manifest.json`)")
                } else {
                    String::new()
                }
            );
        }
        if plan.sources.len() > 1 {
            let counts: Vec<u64> =
                plan.mix_counts.examples.iter().map(|c| c.load(std::sync::atomic::Ordering::Relaxed)).collect();
            let total = counts.iter().sum::<u64>().max(1);
            let each: Vec<String> = plan
                .sources
                .iter()
                .zip(&counts)
                .map(|(s, n)| format!("{} {n} ({:.1}%)", s.name.as_deref().unwrap_or("?"), *n as f64 * 100.0 / total as f64))
                .collect();
            eprintln!("examples per source: {}", each.join(", "));
        }
        Ok(0)
    })
}
