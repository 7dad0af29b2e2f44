use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::plan::{BuildOptions, Plan};
use crate::sink::progress::human;
use crate::train::{settings, train, TrainOptions};

/// Trains on the pipeline's stream; prints a summary on stderr.
pub fn run(
    file: &Path,
    run_dir: Option<PathBuf>,
    resume: bool,
    allow_new_data: bool,
    quiet: bool,
    sets: &[String],
) -> Result<i32> {
    let mut pipeline = crate::spec::load(file, sets)?;
    if let Some(rows) = pipeline.spec.train.as_ref().and_then(|t| t.batch_size) {
        pipeline.spec.stream.batch_size = rows;
    }
    let dir = run_dir.unwrap_or_else(|| match pipeline.spec.train.as_ref().and_then(|t| t.checkpoint.dir.clone()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from("runs").join(&pipeline.spec.name),
    });
    // Held from before the directory is checked (a tokenizer trained for the run is written
    // into it) to the end.
    let _lock = crate::lock::DirLock::acquire(
        &dir,
        "`pretext train`",
        "wait for that run to finish (or stop it and continue it with `--resume`), or train into another directory with `--run-dir DIR`",
    )?;
    // Before the plan is built: a tokenizer trained for this run is written into the directory.
    crate::train::checkpoint::check_run_dir(&dir, resume)?;
    crate::train::tune_allocator();
    let rt = super::runtime()?;
    crate::stop::listen(&rt)?;
    let build = BuildOptions { tokenizer_dir: Some(dir.clone()), reuse_tokenizer: resume, check_only: false };
    let plan = rt.block_on(Plan::build(pipeline, &build))?;
    let terminal = std::io::stderr().is_terminal();
    let opts = TrainOptions {
        run_dir: dir.clone(),
        resume,
        allow_new_data,
        progress_bar: !quiet && terminal,
        log_lines: !quiet && !terminal,
    };
    let report = train(&rt, plan.clone(), &opts)?;
    if report.steps == 0 {
        return Ok(0);
    }
    let cfg = settings(&plan);
    let loss = match (report.first_loss, report.last_loss) {
        (Some(a), Some(b)) => format!("loss {a:.4} → {b:.4}"),
        _ => String::new(),
    };
    let eval = report.eval_loss.map(|e| format!(", eval loss {e:.4}")).unwrap_or_default();
    eprintln!(
        "trained steps {}..{} of {} on {} in {:.1}s: {loss}{eval}; {} {}/s; waited for data {:.1}% of the time",
        report.start_step + 1,
        report.start_step + report.steps,
        cfg.steps,
        report.device,
        report.seconds,
        human(report.tokens as f64 / report.seconds.max(1e-9)),
        crate::train::unit(&plan.pipeline.spec.task),
        100.0 * report.data_wait_share()
    );
    if let Some(c) = &report.checkpoint {
        eprintln!("checkpoint: `{}`; metrics: `{}`", c.display(), dir.join("metrics.jsonl").display());
    }
    Ok(0)
}
