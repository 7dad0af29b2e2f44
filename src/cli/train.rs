use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::train::{run_pipeline, TrainRequest};

/// Trains on the pipeline's stream; prints a summary on stderr.
pub fn run(
    file: &Path,
    run_dir: Option<PathBuf>,
    resume: bool,
    allow_new_data: bool,
    quiet: bool,
    sets: &[String],
) -> Result<i32> {
    let pipeline = crate::spec::load(file, sets)?;
    let terminal = std::io::stderr().is_terminal();
    let request = TrainRequest {
        run_dir,
        resume,
        allow_new_data,
        progress_bar: !quiet && terminal,
        log_lines: !quiet && !terminal,
    };
    let rt = super::runtime()?;
    crate::ground::stop::listen(&rt)?;
    let report = run_pipeline(&rt, pipeline, &request)?;
    for line in report.summary() {
        eprintln!("{line}");
    }
    Ok(0)
}
