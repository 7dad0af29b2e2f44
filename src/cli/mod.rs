//! The command line: one file per command.

mod export;
internal_mod!(export_model);
mod plot;
mod preview;
pub use preview::preview_text;
mod probe;
mod saved;
mod schema;
mod train;
mod validate;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::error::Result;

/// pretext: self-supervised pretraining data from data-lake tables, from one YAML pipeline.
#[derive(Debug, Parser)]
#[command(name = "pretext", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check pipeline files: every problem at once, with file:line:column and a hint.
    Validate {
        /// Pipeline files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Override a field: `--set stream.batch_size=64` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Also print each pipeline as resolved: every default filled in (object-store retry
        /// budgets among them), credentials redacted, as JSON.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Print the first examples, decoded, with masked tokens visible.
    Preview {
        file: PathBuf,
        /// How many examples.
        #[arg(short = 'n', long, default_value_t = 3)]
        n: usize,
        /// Image tasks: also write a PNG contact sheet of the examples (views, masked patches).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Write the examples as a Parquet dataset with a manifest.
    Export {
        file: PathBuf,
        /// Output directory (default: `export.path`, else `out/<name>`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue an interrupted export in the same directory.
        #[arg(long)]
        resume: bool,
        /// With `--resume`: continue although the source data changed (e.g. a new Delta version).
        #[arg(long, requires = "resume")]
        allow_new_data: bool,
        /// Do not draw a progress bar.
        #[arg(long)]
        quiet: bool,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Train a model on the pipeline's examples as they are made; checkpoints and exact resume.
    Train {
        file: PathBuf,
        /// Run directory (default: `train.checkpoint.dir`, else `runs/<name>`).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Continue from the newest checkpoint in the run directory.
        #[arg(long)]
        resume: bool,
        /// With `--resume`: continue although the source data changed (e.g. a new Delta version).
        #[arg(long, requires = "resume")]
        allow_new_data: bool,
        /// No progress bar or log lines.
        #[arg(long)]
        quiet: bool,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Draw a run's loss and throughput (`<run>/metrics.png` and `.svg`).
    Plot {
        /// The run directory (`runs/<name>`).
        run_dir: PathBuf,
    },
    /// Fit a linear classifier on a run's frozen encoder and report its held-out accuracy (image
    /// and table tasks).
    Probe {
        /// The run directory (`runs/<name>`).
        run_dir: PathBuf,
        /// The column of integer class ids (default: the pipeline's `source.label_column`).
        #[arg(long)]
        label_column: Option<String>,
        /// Embed at most this many rows per side of the split.
        #[arg(long, default_value_t = 50_000)]
        max_rows: usize,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Write a run's text model as a HuggingFace `transformers` model directory (config.json,
    /// model.safetensors, tokenizer): BERT for mlm and contrastive_text, GPT-2 for causal.
    ExportModel {
        /// The run directory (`runs/<name>`).
        run_dir: PathBuf,
        /// The directory to write (created if missing).
        #[arg(long)]
        to: PathBuf,
        /// The checkpoint of this step (default: the newest).
        #[arg(long)]
        step: Option<u64>,
    },
    /// Print the JSON Schema of pipeline files, or write it (and the task output schemas).
    Schema {
        /// Write `pipeline.schema.json` and `tasks/*.json` into the schemas directory.
        #[arg(long)]
        write: bool,
        /// Where `--write` writes.
        #[arg(long, default_value = "schemas")]
        dir: PathBuf,
    },
}

/// Runs a parsed command; the `Ok` value is the process exit code.
/// Runs a parsed command; the exit code on success.
fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Validate { files, sets, verbose } => validate::run(&files, &sets, verbose),
        Command::Preview { file, n, out, sets } => preview::run(&file, n, out.as_deref(), &sets),
        Command::Export { file, out, resume, allow_new_data, quiet, sets } => {
            export::run(&file, out, resume, allow_new_data, quiet, &sets)
        }
        Command::Train { file, run_dir, resume, allow_new_data, quiet, sets } => {
            train::run(&file, run_dir, resume, allow_new_data, quiet, &sets)
        }
        Command::Plot { run_dir } => plot::run(&run_dir),
        Command::Probe { run_dir, label_column, max_rows, sets } => {
            probe::run(&run_dir, label_column.as_deref(), max_rows, &sets)
        }
        Command::ExportModel { run_dir, to, step } => export_model::run(&run_dir, &to, step),
        Command::Schema { write, dir } => schema::run(write, &dir),
    }
}

/// The tokio runtime the data plane runs on.
/// The `pretext` command: parses `args` (the program's name first), runs the command, prints
/// any error on stderr and returns the exit code (0 success, 1 a problem the user can fix, 2 a
/// bug, 128 + the signal's number after a graceful stop). Usage errors and `--help` exit the
/// process as clap does.
pub fn main<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    // A second call in one process (a Python session) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PRETEXT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::env::var_os("NO_COLOR").is_none())
        .try_init();
    let cli = Cli::parse_from(args);
    match run(cli) {
        Ok(code) => code,
        Err(e @ (crate::Error::Spec(_) | crate::Error::Stopped { .. })) => {
            eprintln!("{e}");
            e.exit_code()
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// The multi-threaded tokio runtime a command runs its pipeline on.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::Error::env(format!("cannot start the async runtime: {e}")))
}
