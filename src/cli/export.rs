use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::sink::run::{run as export, ExportRequest};

/// Exports the pipeline's examples; prints a summary on stderr.
pub fn run(
    file: &Path,
    out: Option<PathBuf>,
    resume: bool,
    allow_new_data: bool,
    quiet: bool,
    sets: &[String],
) -> Result<i32> {
    let pipeline = crate::spec::load(file, sets)?;
    let rt = super::runtime()?;
    crate::ground::stop::listen(&rt)?;
    let request =
        ExportRequest { out, resume, allow_new_data, progress_bar: !quiet && std::io::stderr().is_terminal() };
    let report = rt.block_on(export(pipeline, &request))?;
    for line in report.summary() {
        eprintln!("{line}");
    }
    Ok(0)
}
