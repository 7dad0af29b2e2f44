use std::path::PathBuf;

use crate::error::Result;
use crate::plan::{BuildOptions, Plan};

/// Checks each file (spec, then files, columns, SQL and tokenizer); prints `ok` lines on stdout
/// (with `verbose`, each resolved pipeline after its line) and problems on stderr. Exit code 1
/// when any file has a problem.
pub fn run(files: &[PathBuf], sets: &[String], verbose: bool) -> Result<i32> {
    let rt = super::runtime()?;
    let mut failed = 0;
    for file in files {
        let result = crate::spec::load(file, sets)
            .and_then(|p| rt.block_on(Plan::build(p, &BuildOptions { check_only: true, ..Default::default() })));
        match result {
            Ok(plan) => {
                let reads = match (plan.input, plan.source.image_kind) {
                    (crate::spec::TaskInput::Text, _) => format!("tokenizer {}", plan.tokenizer.description),
                    (crate::spec::TaskInput::Image, Some(crate::source::ImageKind::Encoded)) => "encoded images".into(),
                    (crate::spec::TaskInput::Image, _) => "pixel-array images".into(),
                    (crate::spec::TaskInput::Table, _) => {
                        format!("{} feature columns", plan.task_spec.table_columns().len())
                    }
                };
                println!(
                    "ok: {} ({}, {} {} file(s), {reads})",
                    file.display(),
                    plan.task_name(),
                    plan.source.files.len(),
                    format!("{:?}", plan.source.format).to_lowercase(),
                );
                if verbose {
                    let resolved =
                        serde_json::to_string_pretty(&plan.resolved_json()).map_err(crate::error::Error::internal)?;
                    println!("{resolved}");
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("{e}");
            }
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}
