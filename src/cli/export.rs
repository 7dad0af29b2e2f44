use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::plan::{BuildOptions, Plan};
use crate::sink::export::{export, prepare_dir, ExportOptions};
use crate::sink::progress::human;

/// Exports the pipeline's examples; prints a summary line on stderr.
pub fn run(file: &Path, out: Option<PathBuf>, resume: bool, quiet: bool, sets: &[String]) -> Result<i32> {
    let pipeline = crate::spec::load(file, sets)?;
    let dir = out.unwrap_or_else(|| match &pipeline.spec.export.path {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from("out").join(&pipeline.spec.name),
    });
    // Refuse a bad output directory before reading any data.
    prepare_dir(&dir, resume)?;
    let rt = super::runtime()?;
    rt.block_on(async {
        let build = BuildOptions { tokenizer_dir: Some(dir.clone()), reuse_tokenizer: resume, check_only: false };
        let plan = Plan::build(pipeline, &build).await?;
        let opts = ExportOptions { dir, resume, progress_bar: !quiet && std::io::stderr().is_terminal() };
        let report = export(plan.clone(), &opts).await?;
        if report.already_complete {
            eprintln!("`{}` already holds this finished export; nothing to do", report.dir.display());
            return Ok(0);
        }
        let stats = plan.source.stats.snapshot();
        let skipped = stats["skipped_null_text"].as_u64().unwrap_or(0) + stats["skipped_blank_text"].as_u64().unwrap_or(0);
        if report.rows == 0 {
            eprintln!("the source produced no examples; wrote an empty export (manifest only) to `{}`", report.dir.display());
        }
        let secs = report.seconds.max(1e-9);
        let padding = crate::sink::export::padding_share(&plan, report.rows, report.tokens)
            .map(|p| format!(", {:.1}% padding", p * 100.0))
            .unwrap_or_default();
        eprintln!(
            "exported {} rows, {} tokens{padding} in {} part(s){} to `{}` in {:.1}s ({} tokens/s); {} documents read, {} null/blank texts skipped",
            report.rows,
            report.tokens,
            report.parts,
            if report.resumed_parts > 0 { format!(" ({} resumed)", report.resumed_parts) } else { String::new() },
            report.dir.display(),
            report.seconds,
            human(report.tokens as f64 / secs),
            stats["documents"],
            skipped
        );
        Ok(0)
    })
}
